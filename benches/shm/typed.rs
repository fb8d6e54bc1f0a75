//! typed-shm through its public API, nothing else.

use typed_shm::SharedMemory;

/// A `SharedMemory<[u64; 8]>`: the 64-byte struct of the benchmarks.
pub struct TypedCell(pub SharedMemory<[u64; 8]>);

impl TypedCell {
    /// `SharedMemory::create(name, [0; 8])`.
    pub fn create(name: &str) -> TypedCell {
        TypedCell(SharedMemory::create(name, [0u64; 8]).expect("typed_shm create"))
    }

    /// `SharedMemory::attach(name)`.
    pub fn attach(name: &str) -> TypedCell {
        TypedCell(SharedMemory::<[u64; 8]>::attach(name).expect("typed_shm attach"))
    }

    /// Runs `f` on the data through a guard, mutably: the `&mut` goes
    /// through `DerefMut`, so the guard's drop is a commit (the sequence
    /// word made odd, then even, and the waiters woken if there are any),
    /// whether or not `f` writes.
    #[inline]
    pub fn with<R>(&self, f: impl FnOnce(&mut [u64; 8]) -> R) -> R {
        let mut guard = self
            .0
            .lock()
            .unwrap_or_else(|_| panic!("typed_shm lock poisoned"));
        f(&mut guard)
    }

    /// Runs `f` on the data through a guard, through `Deref` only: no
    /// commit.
    #[inline]
    pub fn read<R>(&self, f: impl FnOnce(&[u64; 8]) -> R) -> R {
        let guard = self
            .0
            .lock()
            .unwrap_or_else(|_| panic!("typed_shm lock poisoned"));
        f(&guard)
    }

    /// Under one guard: if `ready` holds for the data (read through
    /// `Deref`), runs `then` on it through `DerefMut`, a commit; returns
    /// whether it did. A check that fails commits nothing, as a user writes
    /// a turn check: `if guard[TURN] == me { guard[TURN] = next }`.
    #[inline]
    pub fn when(&self, ready: impl FnOnce(&[u64; 8]) -> bool, then: impl FnOnce(&mut [u64; 8])) -> bool {
        let mut guard = self
            .0
            .lock()
            .unwrap_or_else(|_| panic!("typed_shm lock poisoned"));
        let go = ready(&guard);
        if go {
            then(&mut guard);
        }
        go
    }

    /// Takes a guard and drops it: no `DerefMut`, so no commit.
    #[inline]
    pub fn lock_unlock(&self) {
        let guard = self
            .0
            .lock()
            .unwrap_or_else(|_| panic!("typed_shm lock poisoned"));
        drop(guard);
    }

    /// `shm.snapshot()`: a consistent copy without the lock.
    #[inline]
    pub fn snapshot(&self) -> [u64; 8] {
        self.0
            .snapshot()
            .unwrap_or_else(|_| panic!("typed_shm segment poisoned"))
    }

    /// `*shm.lock().unwrap()`: a copy under the lock (no commit).
    #[inline]
    pub fn lock_copy(&self) -> [u64; 8] {
        *self
            .0
            .lock()
            .unwrap_or_else(|_| panic!("typed_shm lock poisoned"))
    }

    /// The second side's start signal of `wait_pingpong`: one more start in
    /// the data (a commit); returns the version after that commit, learnt
    /// under the lock, before the first side, which commits only once it has
    /// seen the signal, can have committed.
    pub fn signal_start(&self) -> u64 {
        let mut guard = self
            .0
            .lock()
            .unwrap_or_else(|_| panic!("typed_shm lock poisoned"));
        // Nobody commits while this thread holds the lock; this guard's
        // commit is the next one.
        let before = self.0.version();
        guard[crate::subject::STARTED] += 1;
        drop(guard);
        before + 1
    }
}

/// A `SharedMemory<[u8]>` of a given length.
pub struct TypedBuf(pub SharedMemory<[u8]>);

impl TypedBuf {
    /// `SharedMemory::create_slice(name, len, 0)`.
    pub fn create(name: &str, len: usize) -> TypedBuf {
        TypedBuf(SharedMemory::create_slice(name, len, 0u8).expect("typed_shm create_slice"))
    }

    /// Locks, `copy_from_slice`, unlocks.
    #[inline]
    pub fn copy_in(&self, src: &[u8]) {
        let mut guard = self
            .0
            .lock()
            .unwrap_or_else(|_| panic!("typed_shm lock poisoned"));
        guard.copy_from_slice(src);
    }
}

/// A transactional `SharedMemory<[u64; 8]>`
/// (`options().transactional(true)`): a write guard works on a private copy
/// that its drop publishes.
pub struct TxnCell(pub TypedCell);

impl TxnCell {
    /// `SharedMemory::options().transactional(true).create(name, [0; 8])`.
    pub fn create(name: &str) -> TxnCell {
        let shm = SharedMemory::<[u64; 8]>::options()
            .transactional(true)
            .create(name, [0u64; 8])
            .expect("typed_shm create (transactional)");
        TxnCell(TypedCell(shm))
    }

    /// `SharedMemory::attach(name)`, which learns from the segment that it
    /// is transactional.
    pub fn attach(name: &str) -> TxnCell {
        let cell = TypedCell::attach(name);
        assert!(cell.0.is_transactional(), "{name} is transactional");
        TxnCell(cell)
    }
}

/// A transactional `SharedMemory<[u8]>` of a given length.
pub struct TxnBuf(pub TypedBuf);

impl TxnBuf {
    /// `SharedMemory::<[u8]>::options().transactional(true).create_slice(name, len, 0)`.
    pub fn create(name: &str, len: usize) -> TxnBuf {
        let shm = SharedMemory::<[u8]>::options()
            .transactional(true)
            .create_slice(name, len, 0u8)
            .expect("typed_shm create_slice (transactional)");
        TxnBuf(TypedBuf(shm))
    }
}

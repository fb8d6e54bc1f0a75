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

    /// Runs `f` on the data through a guard.
    #[inline]
    pub fn with<R>(&self, f: impl FnOnce(&mut [u64; 8]) -> R) -> R {
        let mut guard = self
            .0
            .lock()
            .unwrap_or_else(|_| panic!("typed_shm lock poisoned"));
        f(&mut guard)
    }

    /// Takes a guard and drops it.
    #[inline]
    pub fn lock_unlock(&self) {
        let guard = self
            .0
            .lock()
            .unwrap_or_else(|_| panic!("typed_shm lock poisoned"));
        drop(guard);
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

//! The floor plus what typed-shm's API contract makes every lock and unlock
//! do, written by hand over the [`Locked`] floor: the least that
//! `lock_unlock` and `small_write` can cost while the lock is glibc's robust
//! mutex, as the design fixes it.
//!
//! On top of `pthread_mutex_trylock` / `pthread_mutex_unlock`:
//!
//! - a per-thread token (a `thread_local!` word, non-zero once set), stored
//!   in a `holder` word after acquiring and cleared before unlocking: a
//!   thread that locks a lock it holds must get a panic, not a deadlock. The
//!   comparison with `holder` itself runs only when the lock is busy;
//! - the `poisoned` word read after acquiring (poison is sticky across
//!   processes, so a lock returns `PoisonError` until it is cleared);
//! - `std::thread::panicking()` at lock and at unlock: a guard dropped while
//!   its thread panics poisons the lock, unless it was taken during that
//!   panic (as `std::sync::Mutex`);
//! - a per-handle "inherited across `fork`" flag, checked by the lock and by
//!   the unlock: a forked child must neither lock through its parent's handle
//!   nor touch the parent's lock words when a guard is dropped;
//! - a per-handle "held" flag, set while locked: a handle whose lock its
//!   process holds must not be unmapped (the kernel could then not mark the
//!   lock owner-dead for the waiters);
//! - an unlock that fails aborts (a lock may be held: unwinding could hand
//!   the data to someone else);
//! - for a write, the sequence word: odd before the first store (relaxed,
//!   then a release fence), one commit further after (release), and the
//!   waiter count read after the unlock (its locked instruction orders the
//!   two on x86_64), with a `FUTEX_WAKE` only if it is not zero.
//!
//! [`TxnContract`] is the same for a commit to a transactional segment
//! (`txn_commit_64B`): the guard writes to a private copy in the handle, and
//! its drop, unless the thread panics, publishes the copy with 8-byte atomic
//! stores into the buffer that is not committed, between the sequence word
//! made odd and made even again (which names the new buffer), counts the
//! commit (release), and unlocks. A handle that made the last commit starts
//! from its copy as it is (one load of the count tells).
//!
//! The cold paths (a busy lock, a dead owner, poison, a relock) exist but are
//! not taken in the benchmarks. What typed-shm adds beyond this is its own
//! choice; what this adds to the floor is the contract's price.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};

use crate::floor::Locked;
use crate::subject::{Cell, Lock};

/// The holder's token, in a line of its own after the mutex's. Not in the
/// mutex's line (as typed-shm's header has it, with the mutex at offset
/// 384): the floor's mutex sits at offset 0 of the header page and the data
/// at offset 0 of the next page, so a word there shares its offset within
/// the page with a data word, and a load of it right after the data's stores
/// waits for them (4K aliasing): a load of the poison word at offset 56
/// took small_write from about 1.05× to 1.28× the floor.
const HOLDER: usize = 128;
/// The poison word, beside it.
const POISONED: usize = 136;
/// The sequence word, in a line of its own, at typed-shm's offset.
const SEQ: usize = 512;
/// The waiter count beside it.
const WAITERS: usize = 520;
/// A transactional segment's commit count, in the same line.
const COMMITS: usize = 528;
/// A transactional segment's buffers: the data page and the next one.
const STRIDE: usize = 4096;

thread_local! {
    /// This thread's token; 0 until the first lock.
    static TOKEN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// This thread's non-zero token.
#[inline(always)]
fn token() -> u64 {
    let t = TOKEN.get();
    if t != 0 { t } else { new_token() }
}

#[cold]
#[inline(never)]
fn new_token() -> u64 {
    // Any value unique among live threads: the address of this thread's
    // own slot (typed-shm draws a random one).
    let t = TOKEN.with(|c| std::ptr::from_ref(c) as u64);
    TOKEN.set(t);
    t
}

/// The [`Locked`] floor plus the contract's words and checks.
pub struct Contract {
    locked: Locked,
    inherited: AtomicBool,
    held: AtomicBool,
}

impl Contract {
    /// A handle over `locked`: not inherited, not held.
    fn over(locked: Locked) -> Contract {
        Contract {
            locked,
            inherited: AtomicBool::new(false),
            held: AtomicBool::new(false),
        }
    }

    /// The 64-bit word at `offset` of the header page.
    #[inline(always)]
    fn word64(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: AtomicU64::from_ptr requires a pointer that is 8-aligned,
        // valid for the lifetime of the reference and accessed only
        // atomically meanwhile:
        // - the header page is page aligned and both callers' offsets are
        //   multiples of 8, past the mutex (40 bytes) and within the page;
        // - it is mapped as long as `self.locked` (the borrow of `self`);
        // - every handle of this type accesses these words atomically, and
        //   nothing else uses these bytes of the header page.
        unsafe { AtomicU64::from_ptr(self.locked.header().wrapping_add(offset).cast()) }
    }

    /// The 32-bit word at `offset` of the header page.
    #[inline(always)]
    fn word32(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: as in `word64`, for 4-aligned offsets.
        unsafe { AtomicU32::from_ptr(self.locked.header().wrapping_add(offset).cast()) }
    }

    /// Locks; returns whether the thread was panicking then.
    #[inline(always)]
    fn lock(&self) -> bool {
        if self.inherited.load(Ordering::Relaxed) {
            inherited_lock();
        }
        let me = token();
        let rc = self.locked.mutex().try_lock();
        if rc != 0 {
            self.lock_slow(rc, me);
        }
        self.word64(HOLDER).store(me, Ordering::Relaxed);
        self.held.store(true, Ordering::Relaxed);
        if self.word32(POISONED).load(Ordering::Relaxed) != 0 {
            poisoned();
        }
        std::thread::panicking()
    }

    /// A busy lock: the relock check, then the blocking lock; or a dead
    /// owner to recover.
    #[cold]
    #[inline(never)]
    fn lock_slow(&self, rc: libc::c_int, me: u64) {
        let mut rc = rc;
        if rc == libc::EBUSY {
            assert_ne!(self.word64(HOLDER).load(Ordering::Relaxed), me, "relock");
            self.locked.mutex().lock();
            rc = 0;
        }
        if rc != 0 {
            self.locked.mutex().recover(rc);
            self.word32(POISONED).store(1, Ordering::Relaxed);
        }
    }

    /// Unlocks; `was_panicking` is what [`lock`](Self::lock) returned;
    /// `wrote` says whether this was a commit.
    #[inline(always)]
    fn unlock(&self, was_panicking: bool, wrote: bool) {
        if self.inherited.load(Ordering::Relaxed) {
            return;
        }
        if !was_panicking && std::thread::panicking() {
            self.word32(POISONED).store(1, Ordering::Relaxed);
        }
        if wrote {
            let seq = self.word64(SEQ);
            seq.store(seq.load(Ordering::Relaxed).wrapping_add(1), Ordering::Release);
        }
        self.release(wrote);
    }

    /// The end of every unlock: the holder's token and the held flag
    /// cleared, the mutex unlocked, and after a commit (`wake`) the waiters
    /// woken if the count says there are any.
    #[inline(always)]
    fn release(&self, wake: bool) {
        self.word64(HOLDER).store(0, Ordering::Relaxed);
        self.held.store(false, Ordering::Relaxed);
        if self.locked.mutex().unlock_rc() != 0 {
            std::process::abort();
        }
        if wake && self.word32(WAITERS).load(Ordering::Relaxed) != 0 {
            self.wake();
        }
    }

    #[cold]
    #[inline(never)]
    fn wake(&self) {
        // SAFETY: futex(2) FUTEX_WAKE reads no memory; the address is the
        // 4-aligned low half of the sequence word, in the live mapping.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.locked.header().wrapping_add(SEQ),
                libc::FUTEX_WAKE,
                i32::MAX,
            );
        }
    }
}

#[cold]
#[inline(never)]
fn inherited_lock() -> ! {
    panic!("a handle inherited across fork");
}

#[cold]
#[inline(never)]
fn poisoned() -> ! {
    panic!("poisoned");
}

impl Lock for Contract {
    /// Lock; the sequence word odd (relaxed store, then a release fence);
    /// `f`; unlock, which makes the word even, one commit further.
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut [u64; 8]) -> R) -> R {
        let was_panicking = self.lock();
        let seq = self.word64(SEQ);
        seq.store(seq.load(Ordering::Relaxed) | 1, Ordering::Relaxed);
        fence(Ordering::Release);
        // SAFETY: the data starts on a page boundary (aligned for u64) and is
        // 64 bytes (`Locked::create(name, 64)`); every bit pattern is a valid
        // `[u64; 8]`; the lock is held while the reference lives.
        let r = f(unsafe { &mut *self.locked.data().cast::<[u64; 8]>() });
        self.unlock(was_panicking, true);
        r
    }

    #[inline]
    fn lock_unlock(&self) {
        let was_panicking = self.lock();
        self.unlock(was_panicking, false);
    }
}

impl Cell for Contract {
    fn create(name: &str) -> Self {
        Contract::over(Locked::create(name, 64))
    }
    fn attach(name: &str) -> Self {
        Contract::over(Locked::attach(name))
    }
}

/// [`Contract`] for a transactional segment: two buffers, a private copy in
/// the handle, the publish with atomic stores (see the module docs).
pub struct TxnContract {
    inner: Contract,
    /// The guard's copy; used only by the lock's holder.
    private: UnsafeCell<[u64; 8]>,
    /// The commit count whose data `private` holds (this handle published
    /// it), or `u64::MAX`.
    holds: std::cell::Cell<u64>,
}

impl TxnContract {
    /// Word `i` (0..8) of buffer `b` (0 or 1) as an atomic.
    #[inline(always)]
    fn word(&self, b: usize, i: usize) -> &AtomicU64 {
        debug_assert!(b < 2 && i < 8);
        // SAFETY: AtomicU64::from_ptr requires a pointer that is 8-aligned,
        // valid for the lifetime of the reference and accessed only
        // atomically meanwhile: both buffers start on a page boundary of the
        // data (created with `STRIDE + 64` bytes), `i < 8` stays inside
        // their 64 bytes, the mapping lives as long as `self`, and handles
        // of this type access them only atomically.
        unsafe { AtomicU64::from_ptr(self.inner.locked.data().wrapping_add(b * STRIDE + i * 8).cast()) }
    }
}

impl Lock for TxnContract {
    /// Lock; `f` on the private copy (copied in from the committed buffer
    /// unless this handle made the last commit); unless panicking, the
    /// publish; unlock.
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut [u64; 8]) -> R) -> R {
        let c = &self.inner;
        // A transactional guard discards its copy on a panic: no poison, so
        // the panic state at lock is not needed.
        let _ = c.lock();
        let commits = c.word64(COMMITS);
        let seq = c.word64(SEQ);
        let s = seq.load(Ordering::Relaxed);
        let committed = usize::from((s >> 1) & 1 == 1);
        // SAFETY: the lock is held, and only the holder uses `private`; the
        // reference does not outlive this call.
        let private = unsafe { &mut *self.private.get() };
        if self.holds.get() != commits.load(Ordering::Relaxed) {
            for (i, w) in private.iter_mut().enumerate() {
                *w = self.word(committed, i).load(Ordering::Relaxed);
            }
        }
        let r = f(private);
        if c.inherited.load(Ordering::Relaxed) {
            return r;
        }
        let publish = !std::thread::panicking();
        if !publish {
            self.holds.set(u64::MAX);
        } else {
            seq.store(s | 1, Ordering::Relaxed);
            fence(Ordering::Release);
            for (i, w) in private.iter().enumerate() {
                self.word(committed ^ 1, i).store(*w, Ordering::Relaxed);
            }
            let n = commits.load(Ordering::Relaxed) + 1;
            commits.store(n, Ordering::Release);
            seq.store((s | 1) + 1, Ordering::Release);
            self.holds.set(n);
        }
        c.release(publish);
        r
    }

    #[inline]
    fn lock_unlock(&self) {
        self.inner.lock_unlock();
    }
}

impl TxnContract {
    /// A handle over `locked`, whose data holds the two buffers.
    fn over(locked: Locked) -> TxnContract {
        TxnContract {
            inner: Contract::over(locked),
            private: UnsafeCell::new([0; 8]),
            holds: std::cell::Cell::new(u64::MAX),
        }
    }
}

impl Cell for TxnContract {
    fn create(name: &str) -> Self {
        TxnContract::over(Locked::create(name, STRIDE + 64))
    }
    fn attach(name: &str) -> Self {
        TxnContract::over(Locked::attach(name))
    }
}

//! The segment's lock: a robust, process-shared pthread mutex plus the
//! header's sticky `poisoned` flag, with `std::sync`-style outcomes.
//!
//! Poisoning: a holder that died (`EOWNERDEAD`) or a write guard dropped while
//! its thread panics sets `poisoned`; every later acquisition, in any process,
//! reports it until `clear_poison` stores 0. The mutex itself is made
//! consistent at once, so it never becomes `ENOTRECOVERABLE`.
//!
//! Relocking: a thread that locks a segment it already holds would deadlock.
//! The mutex cannot tell (its owner's thread id is ambiguous when processes
//! in different PID namespaces share it), so the holder writes its thread's
//! random token ([`sys::lock_token`]) into the header next to the mutex, and
//! clears it before unlocking. A thread that finds its own token there
//! already holds the lock: `lock` and `lock_timeout` panic, `try_lock`
//! reports `WouldBlock`. The check costs one load from the cache line the
//! lock writes anyway, and works across handles of the same segment.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::sys::{self, Acquired, Owner, RawMutex};

#[cold]
#[inline(never)]
fn relock_panic() -> ! {
    panic!(
        "typed-shm: this thread already holds the lock of this segment \
         (a guard is still alive or was forgotten): locking it again would deadlock"
    )
}

/// The header words that go with the mutex.
pub(crate) struct LockWords<'a> {
    pub poisoned: &'a AtomicU32,
    pub holder: &'a AtomicU64,
}

impl LockWords<'_> {
    /// Whether the thread with token `me` holds the lock.
    #[inline]
    fn held_by(&self, me: u64) -> bool {
        self.holder.load(Ordering::Relaxed) == me
    }
}

/// How an acquisition ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Held, not poisoned.
    Locked,
    /// Held, poisoned.
    Poisoned,
    /// Not held: `try_lock` found it taken.
    WouldBlock,
    /// Not held: `lock_timeout` ran out.
    TimedOut,
}

/// The lock of one handle. The words it works on live in the header; the
/// caller passes them in (the header mapping is owned by the segment).
pub(crate) struct ShmMutex {
    raw: RawMutex,
    /// Whether a thread of this process holds the lock through this handle
    /// (set after acquiring, cleared before releasing). A handle whose lock is
    /// still held when it is dropped (a forgotten guard) must never unmap it.
    held: AtomicBool,
}

impl ShmMutex {
    pub(crate) fn new(raw: RawMutex) -> Self {
        ShmMutex {
            raw,
            held: AtomicBool::new(false),
        }
    }

    #[inline]
    fn outcome(&self, a: Acquired, w: &LockWords<'_>, me: u64) -> Outcome {
        match a {
            Acquired::Locked | Acquired::OwnerDied => {
                w.holder.store(me, Ordering::Relaxed);
                self.held.store(true, Ordering::Relaxed);
                if a == Acquired::OwnerDied {
                    w.poisoned.store(1, Ordering::Relaxed);
                    Outcome::Poisoned
                // The mutex orders this load after the previous holder's store.
                } else if w.poisoned.load(Ordering::Relaxed) != 0 {
                    Outcome::Poisoned
                } else {
                    Outcome::Locked
                }
            }
            Acquired::Busy => Outcome::WouldBlock,
            Acquired::TimedOut => Outcome::TimedOut,
        }
    }

    #[inline]
    pub(crate) fn lock(&self, w: &LockWords<'_>) -> Outcome {
        let me = sys::lock_token();
        if w.held_by(me) {
            relock_panic();
        }
        self.outcome(self.raw.lock(), w, me)
    }

    #[inline]
    pub(crate) fn try_lock(&self, w: &LockWords<'_>) -> Outcome {
        let me = sys::lock_token();
        if w.held_by(me) {
            return Outcome::WouldBlock;
        }
        self.outcome(self.raw.try_lock(), w, me)
    }

    pub(crate) fn lock_timeout(&self, timeout: Duration, w: &LockWords<'_>) -> Outcome {
        let me = sys::lock_token();
        if w.held_by(me) {
            relock_panic();
        }
        self.outcome(self.raw.lock_timeout(timeout), w, me)
    }

    /// Releases the lock, poisoning it first if `poison`.
    ///
    /// # Safety
    ///
    /// The calling thread must hold the lock (an `Outcome::Locked` or
    /// `Outcome::Poisoned` acquisition not yet released).
    #[allow(unsafe_code)]
    #[inline(always)]
    pub(crate) unsafe fn unlock(&self, poison: bool, w: &LockWords<'_>) {
        if poison {
            w.poisoned.store(1, Ordering::Relaxed);
        }
        w.holder.store(0, Ordering::Relaxed);
        self.held.store(false, Ordering::Relaxed);
        // SAFETY: this thread holds the mutex (this fn's contract).
        unsafe { self.raw.unlock() };
    }

    /// Whether a thread of this process may hold the lock through this
    /// handle. `held` alone can be stale: a thread that ended with the lock
    /// (a forgotten guard) no longer holds it once the kernel marked it
    /// owner-dead, or once another locker recovered it.
    pub(crate) fn is_held_here(&self) -> bool {
        self.held.load(Ordering::Relaxed) && self.raw.owner() == Owner::Thread
    }

    /// Whether the lock is poisoned: the sticky flag, or a holder that died
    /// and whose death no locker has seen yet.
    pub(crate) fn is_poisoned(&self, poisoned: &AtomicU32) -> bool {
        poisoned.load(Ordering::Relaxed) != 0 || self.raw.owner() == Owner::Died
    }
}

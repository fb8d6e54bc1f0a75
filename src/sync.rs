//! The segment's lock: a robust, process-shared pthread mutex plus the
//! header's sticky `poisoned` flag, with `std::sync`-style outcomes.
//!
//! Poisoning: a holder that died (`EOWNERDEAD`) or a write guard dropped while
//! its thread panics sets `poisoned`; every later acquisition, in any process,
//! reports it until `clear_poison` stores 0. The mutex itself is made
//! consistent at once, so it never becomes `ENOTRECOVERABLE`.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use crate::sys::{Acquired, RawMutex};

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

/// The lock of one handle. The `poisoned` flag lives in the header; the
/// caller passes it in (the header mapping is owned by the segment).
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

    fn outcome(&self, a: Acquired, poisoned: &AtomicU32) -> Outcome {
        match a {
            Acquired::Locked => {
                self.held.store(true, Ordering::Relaxed);
                // The mutex orders this load after the previous holder's store.
                if poisoned.load(Ordering::Relaxed) != 0 {
                    Outcome::Poisoned
                } else {
                    Outcome::Locked
                }
            }
            Acquired::OwnerDied => {
                self.held.store(true, Ordering::Relaxed);
                poisoned.store(1, Ordering::Relaxed);
                Outcome::Poisoned
            }
            Acquired::Busy => Outcome::WouldBlock,
            Acquired::TimedOut => Outcome::TimedOut,
        }
    }

    pub(crate) fn lock(&self, poisoned: &AtomicU32) -> Outcome {
        self.outcome(self.raw.lock(), poisoned)
    }

    pub(crate) fn try_lock(&self, poisoned: &AtomicU32) -> Outcome {
        self.outcome(self.raw.try_lock(), poisoned)
    }

    pub(crate) fn lock_timeout(&self, timeout: Duration, poisoned: &AtomicU32) -> Outcome {
        self.outcome(self.raw.lock_timeout(timeout), poisoned)
    }

    /// Releases the lock, poisoning it first if `poison`.
    ///
    /// # Safety
    ///
    /// The calling thread must hold the lock (an `Outcome::Locked` or
    /// `Outcome::Poisoned` acquisition not yet released).
    #[allow(unsafe_code)]
    pub(crate) unsafe fn unlock(&self, poison: bool, poisoned: &AtomicU32) {
        if poison {
            poisoned.store(1, Ordering::Relaxed);
        }
        self.held.store(false, Ordering::Relaxed);
        // SAFETY: this thread holds the mutex (this fn's contract).
        unsafe { self.raw.unlock() };
    }

    pub(crate) fn is_held_here(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }
}

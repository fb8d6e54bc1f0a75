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
//! in different PID namespaces share it), so each thread keeps the segments
//! it holds, and a relock panics (`lock`, `lock_timeout`) or reports
//! `WouldBlock` (`try_lock`).

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use crate::sys::{self, Acquired, Owner, RawMutex};

/// A segment's identity: the device and inode of its object.
pub(crate) type SegmentId = (u64, u64);

thread_local! {
    /// The segments whose lock this thread holds, with the fork generation
    /// they were taken in (a forked process holds none of its parent's).
    static HELD: RefCell<(u64, Vec<SegmentId>)> = const { RefCell::new((0, Vec::new())) };
}

/// Runs `f` on this thread's list of held segments, emptied first if it was
/// made before a `fork`. While the thread's locals are being destroyed (a
/// guard kept in another thread-local), the list is gone: `R::default()`.
fn with_held<R: Default>(f: impl FnOnce(&mut Vec<SegmentId>) -> R) -> R {
    HELD.try_with(|h| {
        let mut h = h.borrow_mut();
        let generation = sys::fork_generation();
        if h.0 != generation {
            *h = (generation, Vec::new());
        }
        f(&mut h.1)
    })
    .unwrap_or_default()
}

fn held_by_this_thread(id: SegmentId) -> bool {
    with_held(|h| h.contains(&id))
}

fn relock_panic() -> ! {
    panic!(
        "typed-shm: this thread already holds the lock of this segment \
         (a guard is still alive or was forgotten): locking it again would deadlock"
    )
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

/// The lock of one handle. The `poisoned` flag lives in the header; the
/// caller passes it in (the header mapping is owned by the segment).
pub(crate) struct ShmMutex {
    raw: RawMutex,
    id: SegmentId,
    /// Whether a thread of this process holds the lock through this handle
    /// (set after acquiring, cleared before releasing). A handle whose lock is
    /// still held when it is dropped (a forgotten guard) must never unmap it.
    held: AtomicBool,
}

impl ShmMutex {
    pub(crate) fn new(raw: RawMutex, id: SegmentId) -> Self {
        ShmMutex {
            raw,
            id,
            held: AtomicBool::new(false),
        }
    }

    fn outcome(&self, a: Acquired, poisoned: &AtomicU32) -> Outcome {
        if matches!(a, Acquired::Locked | Acquired::OwnerDied) {
            with_held(|h| h.push(self.id));
        }
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
        if held_by_this_thread(self.id) {
            relock_panic();
        }
        self.outcome(self.raw.lock(), poisoned)
    }

    pub(crate) fn try_lock(&self, poisoned: &AtomicU32) -> Outcome {
        if held_by_this_thread(self.id) {
            return Outcome::WouldBlock;
        }
        self.outcome(self.raw.try_lock(), poisoned)
    }

    pub(crate) fn lock_timeout(&self, timeout: Duration, poisoned: &AtomicU32) -> Outcome {
        if held_by_this_thread(self.id) {
            relock_panic();
        }
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
        with_held(|h| {
            if let Some(i) = h.iter().rposition(|&id| id == self.id) {
                h.swap_remove(i);
            }
        });
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

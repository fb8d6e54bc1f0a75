//! The segment's lock: a robust, process-shared pthread mutex plus the
//! header words that go with it (the holder's token and the sticky
//! `poisoned` flag), with `std::sync`-style outcomes. Like lock_api's
//! `Mutex` owns its raw lock, [`ShmMutex`] owns these words: every access to
//! them goes through it.
//!
//! Poisoning: a holder whose process died (`EOWNERDEAD`) or a write guard
//! dropped while its thread panics sets `poisoned`; every later acquisition,
//! in any process, reports it until `clear_poison` stores 0. The mutex itself
//! is made consistent at once, so it never becomes `ENOTRECOVERABLE`.
//!
//! Threads that end holding the lock: the kernel would mark the mutex
//! owner-dead and hand it to the next locker, while references from the
//! leaked guard may still be used by the threads that remain. So the lock is
//! never recovered while its process lives: every handle registers its holder
//! word with [`sys::watch_holder`], and a thread that ends while the word
//! holds its token aborts the process, naming the segment.
//!
//! Relocking: a thread that locks a segment it already holds would deadlock.
//! The mutex cannot tell (its owner's thread id is ambiguous across PID
//! namespaces), so the holder writes its thread's random token
//! ([`sys::lock_token`]) into the header next to the mutex, and clears it
//! before unlocking. A thread that finds its own token there already holds
//! the lock: `lock` and `lock_timeout` panic, `try_lock` reports
//! `WouldBlock`. The check costs one load from the cache line the lock writes
//! anyway, and works across handles of the same segment.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::header::LockSlots;
use crate::sys::{self, Acquired, Owner, RawMutex, WatchId};

#[cold]
#[inline(never)]
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

/// The lock of one handle, with the header words it owns.
pub(crate) struct ShmMutex {
    raw: RawMutex,
    holder: *const AtomicU64,
    poisoned: *const AtomicU32,
    /// Whether a thread of this process holds the lock through this handle
    /// (set after acquiring, cleared before releasing). A handle whose lock is
    /// still held when it is dropped (a forgotten guard) must never unmap it.
    /// On the heap, at an address the thread-end check can keep.
    held: Box<AtomicBool>,
    /// The registration of `holder` for the thread-end check.
    watch: Option<WatchId>,
    /// The `fork` generation of the handle (see [`sys::fork_generation`]):
    /// in a child process, the lock's words belong to the parent.
    fork_generation: u64,
}

impl ShmMutex {
    /// # Safety
    ///
    /// - `slots.mutex` must point to a mutex initialized by
    ///   [`RawMutex::init`] (in any process);
    /// - `slots.holder` and `slots.poisoned` must point to the header words
    ///   that go with it, aligned, and only ever accessed atomically;
    /// - all three must stay mapped for as long as the returned value lives.
    ///
    /// `fork_generation` is the generation the handle was made in.
    pub(crate) unsafe fn new(slots: LockSlots, key: &str, fork_generation: u64) -> Self {
        let held = Box::new(AtomicBool::new(false));
        // SAFETY: the holder word stays mapped until this value is dropped
        // (this fn's contract), and `held` lives on the heap as long as this
        // value; its `Drop` ends the registration first.
        let watch = unsafe { sys::watch_holder(slots.holder, &*held, key) };
        ShmMutex {
            // SAFETY: forwarded from this fn's contract.
            raw: unsafe { RawMutex::from_ptr(slots.mutex) },
            holder: slots.holder,
            poisoned: slots.poisoned,
            held,
            watch: Some(watch),
            fork_generation,
        }
    }

    /// Whether this lock's handle was inherited across `fork` (made in
    /// another process): its words are then not this process's to touch.
    #[inline(always)]
    pub(crate) fn is_inherited(&self) -> bool {
        self.fork_generation != sys::fork_generation_now()
    }

    #[inline(always)]
    fn holder(&self) -> &AtomicU64 {
        // SAFETY: dereferencing requires a pointer to a live `AtomicU64`:
        // `holder` points to an aligned word that stays mapped, and is only
        // accessed atomically, for as long as `self` lives (`new`'s contract).
        unsafe { &*self.holder }
    }

    #[inline(always)]
    fn poisoned(&self) -> &AtomicU32 {
        // SAFETY: as in `holder`, for the `AtomicU32` at `poisoned`.
        unsafe { &*self.poisoned }
    }

    #[inline]
    fn outcome(&self, a: Acquired, me: u64) -> Outcome {
        match a {
            Acquired::Locked | Acquired::OwnerDied => {
                self.holder().store(me, Ordering::Relaxed);
                self.held.store(true, Ordering::Relaxed);
                if a == Acquired::OwnerDied {
                    self.poisoned().store(1, Ordering::Relaxed);
                    Outcome::Poisoned
                // The mutex orders this load after the previous holder's store.
                } else if self.poisoned().load(Ordering::Relaxed) != 0 {
                    Outcome::Poisoned
                } else {
                    Outcome::Locked
                }
            }
            Acquired::Busy => Outcome::WouldBlock,
            Acquired::TimedOut => Outcome::TimedOut,
        }
    }

    /// Whether the thread with token `me` holds the lock.
    #[inline]
    fn held_by(&self, me: u64) -> bool {
        self.holder().load(Ordering::Relaxed) == me
    }

    #[inline]
    pub(crate) fn lock(&self) -> Outcome {
        let me = sys::lock_token();
        if self.held_by(me) {
            relock_panic();
        }
        self.outcome(self.raw.lock(), me)
    }

    #[inline]
    pub(crate) fn try_lock(&self) -> Outcome {
        let me = sys::lock_token();
        if self.held_by(me) {
            return Outcome::WouldBlock;
        }
        self.outcome(self.raw.try_lock(), me)
    }

    pub(crate) fn lock_timeout(&self, timeout: Duration) -> Outcome {
        let me = sys::lock_token();
        if self.held_by(me) {
            relock_panic();
        }
        self.outcome(self.raw.lock_timeout(timeout), me)
    }

    /// Releases the lock, poisoning it first if `poison`.
    ///
    /// # Safety
    ///
    /// The calling thread must hold the lock (an `Outcome::Locked` or
    /// `Outcome::Poisoned` acquisition not yet released).
    #[inline(always)]
    pub(crate) unsafe fn unlock(&self, poison: bool) {
        if poison {
            self.poisoned().store(1, Ordering::Relaxed);
        }
        self.holder().store(0, Ordering::Relaxed);
        self.held.store(false, Ordering::Relaxed);
        // SAFETY: this thread holds the mutex (this fn's contract).
        unsafe { self.raw.unlock() };
    }

    /// Whether a thread of this process may hold the lock through this
    /// handle. `held` alone can be stale after a recovery by another process
    /// (this process cannot lose the lock to a dead thread of its own: that
    /// aborts it).
    pub(crate) fn is_held_here(&self) -> bool {
        self.held.load(Ordering::Relaxed) && self.raw.owner() == Owner::Thread
    }

    /// Whether the lock is poisoned: the sticky flag, or a holder that died
    /// and whose death no locker has seen yet.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned().load(Ordering::Relaxed) != 0 || self.raw.owner() == Owner::Died
    }

    /// Clears the sticky poison flag, for every process.
    pub(crate) fn clear_poison(&self) {
        self.poisoned().store(0, Ordering::Relaxed);
    }
}

impl Drop for ShmMutex {
    fn drop(&mut self) {
        if let Some(watch) = self.watch.take() {
            sys::unwatch_holder(watch);
        }
    }
}

//! The robust, process-shared pthread mutex that lives in a segment's header.
#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::thread::abort_with;

/// The C type of the lock stored in the segment header.
pub(crate) type RawMutexStorage = libc::pthread_mutex_t;

/// `(size, alignment)` of `pthread_mutex_t`, recorded in the header's ABI stamp.
pub(crate) const MUTEX_SIZE: usize = std::mem::size_of::<libc::pthread_mutex_t>();
pub(crate) const MUTEX_ALIGN: usize = std::mem::align_of::<libc::pthread_mutex_t>();

/// Identifies the C library whose mutex layout the header embeds (1 = glibc).
pub(crate) const LIBC_FAMILY: u32 = 1;

/// The result of trying to take the robust mutex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// Locked, consistent.
    Locked,
    /// Locked, but the previous owner died holding it (`EOWNERDEAD`); the
    /// mutex has already been made consistent again.
    OwnerDied,
    /// `trylock`: held by someone else.
    Busy,
    /// Timed lock: not free before the deadline.
    TimedOut,
}

unsafe extern "C" {
    // glibc 2.30+; not (yet) declared by the libc crate. Same contract as
    // pthread_mutex_timedlock, with the clock named explicitly.
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clock: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// Who holds a robust mutex, according to its lock word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Nobody.
    Free,
    /// A live thread (of any process).
    Thread,
    /// Its owner ended without unlocking; the next locker gets `EOWNERDEAD`.
    Died,
}

/// A robust, process-shared pthread mutex that lives at a
/// fixed address in a shared mapping. It does not own the memory.
pub(crate) struct RawMutex {
    ptr: *mut libc::pthread_mutex_t,
}

impl RawMutex {
    /// Initializes a mutex in place.
    ///
    /// # Safety
    ///
    /// `ptr` must be valid for writes of a `pthread_mutex_t`, suitably
    /// aligned, not in use as a mutex by anyone, and stay mapped while any
    /// `RawMutex` built on it is used.
    pub(crate) unsafe fn init(ptr: *mut libc::pthread_mutex_t) -> io::Result<()> {
        let mut attr = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: pthread_mutexattr_init(3) initializes the object at the
        // given pointer; `attr` is writable storage for one attribute object.
        let rc = unsafe { libc::pthread_mutexattr_init(attr.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        let attr = attr.as_mut_ptr();
        let set = |rc: libc::c_int| {
            if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(rc))
            }
        };
        let result = (|| {
            // SAFETY: `attr` was initialized by pthread_mutexattr_init above.
            set(unsafe { libc::pthread_mutexattr_setpshared(attr, libc::PTHREAD_PROCESS_SHARED) })?;
            // SAFETY: as above.
            set(unsafe { libc::pthread_mutexattr_setrobust(attr, libc::PTHREAD_MUTEX_ROBUST) })?;
            // SAFETY: as above.
            // The normal type: glibc's error-checking type compares the
            // owner's thread id with the caller's, and thread ids repeat
            // across PID namespaces (a locker in another container would be
            // told it holds the lock already). Relocks are caught above
            // this type, per thread.
            set(unsafe { libc::pthread_mutexattr_settype(attr, libc::PTHREAD_MUTEX_NORMAL) })?;
            // SAFETY: `ptr` is valid, aligned and unused (this fn's contract);
            // `attr` is an initialized attribute object.
            set(unsafe { libc::pthread_mutex_init(ptr, attr) })
        })();
        // SAFETY: `attr` is initialized; destroying it does not affect mutexes
        // initialized with it (pthread_mutexattr_destroy(3)).
        unsafe { libc::pthread_mutexattr_destroy(attr) };
        result
    }

    /// # Safety
    ///
    /// `ptr` must point to a mutex initialized by [`RawMutex::init`] (in any
    /// process) that stays mapped for as long as the returned value is used.
    #[inline]
    pub(crate) unsafe fn from_ptr(ptr: *mut libc::pthread_mutex_t) -> Self {
        RawMutex { ptr }
    }

    #[inline(always)]
    fn acquired(&self, rc: libc::c_int, call: &'static str) -> Acquired {
        if rc == 0 {
            Acquired::Locked
        } else {
            self.acquired_slow(rc, call)
        }
    }

    #[cold]
    #[inline(never)]
    fn acquired_slow(&self, rc: libc::c_int, call: &'static str) -> Acquired {
        match rc {
            libc::EOWNERDEAD => {
                // Make it consistent at once: a robust mutex unlocked while
                // inconsistent becomes ENOTRECOVERABLE for everyone.
                // SAFETY: pthread_mutex_consistent(3) requires a robust mutex
                // that the caller holds after EOWNERDEAD; both hold here.
                let rc = unsafe { libc::pthread_mutex_consistent(self.ptr) };
                if rc != 0 {
                    // We hold a lock we cannot repair; unwinding would unlock
                    // it inconsistent (ENOTRECOVERABLE for everyone).
                    abort_with(&format!(
                        "typed-shm: pthread_mutex_consistent failed on a segment's lock that \
                         this thread holds ({}); aborting rather than leave the lock \
                         unrecoverable for every process",
                        io::Error::from_raw_os_error(rc)
                    ));
                }
                Acquired::OwnerDied
            }
            libc::EBUSY => Acquired::Busy,
            libc::ETIMEDOUT => Acquired::TimedOut,
            rc => panic!(
                "typed-shm: {call} on the segment's lock failed with error {rc} ({}); \
                 the segment's lock is unusable",
                io::Error::from_raw_os_error(rc)
            ),
        }
    }

    /// Takes the mutex if it is free (`Busy` if not). Callers that wait go
    /// on with [`lock_slow`](Self::lock_slow).
    #[inline(always)]
    pub(crate) fn try_lock(&self) -> Acquired {
        // SAFETY: `self.ptr` points to an initialized, mapped mutex
        // (from_ptr's contract); pthread_mutex_trylock(3) has no other
        // precondition.
        let rc = unsafe { libc::pthread_mutex_trylock(self.ptr) };
        self.acquired(rc, "pthread_mutex_trylock")
    }

    /// Before a waiter sleeps: watches the lock word for a short while and
    /// takes the lock as soon as it looks free. `None` if it stayed taken
    /// (or its owner died: [`lock_slow`](Self::lock_slow) takes over).
    ///
    /// A lock held for a few dozen nanoseconds — the common case for
    /// shared data — is then taken without the two system calls of a sleep
    /// (the waiter's `FUTEX_WAIT`, and the `FUTEX_WAKE` that the holder's
    /// unlock must make once a waiter has marked the word). The looks are
    /// plain loads of the word (the `try_lock` comes only when the word
    /// says free), and they grow apart — 1, 2, 4, 8, then 16
    /// [`spin_loop`](std::hint::spin_loop) hints — because each look pulls
    /// the cache line of the lock away from the holder, whose next store
    /// to it then waits: with a look every one or two hints, the
    /// two-process `contended` benchmark took 120–150 ns per increment,
    /// four times the 30–36 ns with these gaps. [`SPIN_LOOKS`] looks, 143
    /// hints in all: about 4 µs where a hint takes 27 ns (measured on the
    /// benchmark machine), then the waiter sleeps.
    #[inline]
    fn spin_try_lock(&self) -> Option<Acquired> {
        for look in 0..SPIN_LOOKS {
            for _ in 0..1u32 << look.min(4) {
                std::hint::spin_loop();
            }
            match self.owner() {
                Owner::Free => match self.try_lock() {
                    Acquired::Busy => {}
                    other => return Some(other),
                },
                Owner::Died => return None,
                Owner::Thread => {}
            }
        }
        None
    }

    /// Waits at most `timeout`, measured on `CLOCK_MONOTONIC` (immune to
    /// changes of the wall clock): a `try_lock`, then
    /// [`lock_slow`](Self::lock_slow).
    pub(crate) fn lock_timeout(&self, timeout: Duration) -> Acquired {
        let deadline = add_timespec(monotonic_now(), timeout);
        match self.try_lock() {
            Acquired::Busy => {}
            other => return other,
        }
        self.lock_slow(Some(deadline))
    }

    /// Blocks until the lock is taken or `deadline` (if any) passes; for
    /// callers whose `try_lock` found it busy. First a short spin (see
    /// [`spin_try_lock`](Self::spin_try_lock)), then the sleep. The sleep
    /// is made of bounded slices ([`WAIT_SLICE`]): when a holder dies,
    /// the kernel wakes one waiter, and if that waiter dies too before it
    /// takes the lock (killed at that instant), nobody wakes the others — a
    /// waiter that only slept would sleep forever. Each new slice looks at
    /// the lock word again and takes a lock whose owner died.
    #[cold]
    #[inline(never)]
    pub(crate) fn lock_slow(&self, deadline: Option<libc::timespec>) -> Acquired {
        // The spin may outlast a deadline less than its own few
        // microseconds away; that is below what a sleep could resolve
        // anyway.
        if let Some(acquired) = self.spin_try_lock() {
            return acquired;
        }
        loop {
            let slice_end = add_timespec(monotonic_now(), WAIT_SLICE);
            let until = match deadline {
                Some(d) if (d.tv_sec, d.tv_nsec) < (slice_end.tv_sec, slice_end.tv_nsec) => d,
                _ => slice_end,
            };
            // SAFETY: as in `lock`; `until` is a valid timespec (tv_nsec in
            // 0..1e9) on CLOCK_MONOTONIC, as pthread_mutex_clocklock(3)
            // requires.
            let rc = unsafe { pthread_mutex_clocklock(self.ptr, libc::CLOCK_MONOTONIC, &until) };
            match self.acquired(rc, "pthread_mutex_clocklock") {
                Acquired::TimedOut if deadline.is_none_or(|d| !is_past(d)) => continue,
                other => return other,
            }
        }
    }

    /// What the lock word says about the owner. glibc keeps the kernel's
    /// robust futex word as the first `int` of a robust `pthread_mutex_t`
    /// (the ABI stamp pins glibc): the owner's thread id, or 0, plus
    /// `FUTEX_OWNER_DIED`, which the kernel sets when an owner ends without
    /// unlocking (futex(2), "Robust futexes").
    #[inline]
    pub(crate) fn owner(&self) -> Owner {
        // SAFETY: AtomicU32::from_ptr requires a 4-aligned pointer valid for
        // the lifetime of the reference and only accessed atomically meanwhile:
        // the mutex is 8-aligned and mapped while `self` is used (from_ptr's
        // contract), and glibc and the kernel access the word only atomically.
        let word =
            unsafe { std::sync::atomic::AtomicU32::from_ptr(self.ptr.cast::<u32>()) }.load(Ordering::Acquire);
        if word & libc::FUTEX_OWNER_DIED != 0 {
            Owner::Died
        } else if word & libc::FUTEX_TID_MASK == 0 {
            Owner::Free
        } else {
            Owner::Thread
        }
    }

    /// # Safety
    ///
    /// The calling thread must hold the mutex.
    #[inline]
    pub(crate) unsafe fn unlock(&self) {
        // SAFETY: the mutex is initialized and mapped (from_ptr's contract)
        // and held by this thread (this fn's contract), as
        // pthread_mutex_unlock(3) requires.
        let rc = unsafe { libc::pthread_mutex_unlock(self.ptr) };
        if rc != 0 {
            unlock_failed(rc);
        }
    }
}

/// A failed unlock means the lock is not what this thread believes (it does
/// not own it, or its memory was overwritten): continuing, or unwinding
/// through code that assumes it is released, could hand the data to two
/// holders at once.
#[cold]
#[inline(never)]
fn unlock_failed(rc: libc::c_int) -> ! {
    abort_with(&format!(
        "typed-shm: pthread_mutex_unlock failed on a segment's lock ({}); the lock is not in \
         the state this process relies on: aborting",
        io::Error::from_raw_os_error(rc)
    ))
}

/// How many times [`RawMutex::spin_try_lock`] looks at the lock word.
const SPIN_LOOKS: u32 = 12;

/// How long one wait for the lock lasts at most before it looks at the lock
/// word again (see [`RawMutex::lock_slow`]).
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// `CLOCK_MONOTONIC` now.
fn monotonic_now() -> libc::timespec {
    let mut now = MaybeUninit::<libc::timespec>::uninit();
    // SAFETY: clock_gettime(2) requires a valid clock id and writable storage
    // for one timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, now.as_mut_ptr()) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    // SAFETY: clock_gettime returned 0, so it filled in the timespec.
    unsafe { now.assume_init() }
}

/// Whether `t` (on `CLOCK_MONOTONIC`) has passed.
fn is_past(t: libc::timespec) -> bool {
    let now = monotonic_now();
    (now.tv_sec, now.tv_nsec) >= (t.tv_sec, t.tv_nsec)
}

fn add_timespec(t: libc::timespec, d: Duration) -> libc::timespec {
    let mut sec = t
        .tv_sec
        .saturating_add(libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX));
    let mut nsec = t.tv_nsec + libc::c_long::from(d.subsec_nanos() as i32);
    if nsec >= 1_000_000_000 {
        nsec -= 1_000_000_000;
        sec = sec.saturating_add(1);
    }
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespec_addition_carries_nanoseconds() {
        let t = libc::timespec {
            tv_sec: 5,
            tv_nsec: 900_000_000,
        };
        let r = add_timespec(t, Duration::from_millis(250));
        assert_eq!((r.tv_sec, r.tv_nsec), (6, 150_000_000));
        let r = add_timespec(t, Duration::MAX);
        assert_eq!(r.tv_sec, libc::time_t::MAX);
        assert!(r.tv_nsec < 1_000_000_000);
    }
}

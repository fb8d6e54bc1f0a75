//! The floor of `wait_pingpong`: a raw ping-pong on a shared futex word,
//! written directly against `futex(2)`.
//!
//! One `u32` in the header page of a [`Locked`] floor is the change count,
//! the next one a waiter count. A side commits by incrementing the change
//! count and, if the waiter count says someone waits, calling `FUTEX_WAKE`
//! on it; a side waits for a change by loading it and, while it still holds
//! the value it saw, registering in the waiter count, looking once more and
//! calling `FUTEX_WAIT` on it. Both are shared futex operations (no
//! `FUTEX_PRIVATE_FLAG`: the word lives in a mapping that two processes
//! share), and the waiter blocks at once (no spinning first), as
//! `wait_for_change` does.
//!
//! That is the protocol `wait_for_change` and a commit follow, with nothing
//! else: two processes cannot hand a change to each other with less (a
//! commit with nobody waiting makes no system call in both). typed-shm adds
//! the lock around the commit, the sequence word (odd during the write, even
//! after), the poison checks of the waiter and its deadline. The mutex of
//! the [`Locked`] floor only serves the start handshake, outside the timed
//! part.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use crate::floor::Locked;
use crate::subject::{Cell, HUNG, Lock, Notify, STARTED};

/// Where the futex word lives in the header page: away from the mutex's
/// cache line, at the offset of typed-shm's sequence word.
const WORD: usize = 512;
/// Where the waiter count lives: in the futex word's cache line, at the
/// offset of typed-shm's.
const WAITERS: usize = 520;

/// The [`Locked`] floor plus a futex word.
pub struct FutexWord {
    locked: Locked,
}

impl FutexWord {
    /// The futex word.
    #[inline]
    fn word(&self) -> &AtomicU32 {
        // SAFETY: AtomicU32::from_ptr requires a pointer that is 4-aligned,
        // valid for the lifetime of the reference and accessed only
        // atomically meanwhile:
        // - the header page is page aligned and `WORD` a multiple of 4;
        // - it is mapped as long as `self.locked` (the borrow of `self`);
        // - every handle of this type uses the word atomically (and the
        //   kernel reads it atomically in FUTEX_WAIT); nothing else uses
        //   these bytes of the header page.
        unsafe { AtomicU32::from_ptr(self.locked.header().wrapping_add(WORD).cast()) }
    }

    /// The waiter count: the processes that may be blocked on the word.
    #[inline]
    fn waiters(&self) -> &AtomicU32 {
        // SAFETY: as in `word`, for the 4-aligned offset `WAITERS`, which
        // every handle of this type uses only atomically.
        unsafe { AtomicU32::from_ptr(self.locked.header().wrapping_add(WAITERS).cast()) }
    }

    /// `FUTEX_WAIT` (shared) on the word while it holds `seen`, for at most
    /// [`HUNG`]. Returns when woken, when the word no longer holds `seen`,
    /// or on a signal.
    ///
    /// # Panics
    ///
    /// If the wait timed out: the other side did not commit within
    /// [`HUNG`].
    #[inline]
    fn futex_wait(&self, seen: u32) {
        let timeout = libc::timespec {
            tv_sec: libc::time_t::try_from(HUNG.as_secs()).expect("HUNG fits time_t"),
            tv_nsec: 0,
        };
        // SAFETY: futex(2) FUTEX_WAIT reads the 4-aligned word at the first
        // argument (mapped while `self` lives, see `word`) and compares it
        // with `seen`; the timeout is a valid relative `timespec` (a local,
        // tv_nsec 0), readable for the call; the last two arguments are
        // ignored by FUTEX_WAIT.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.word().as_ptr(),
                libc::FUTEX_WAIT,
                seen,
                &raw const timeout,
                std::ptr::null::<u32>(),
                0u32,
            )
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            // EAGAIN: the word changed before the call; EINTR: a signal.
            // Both mean "look again".
            assert_ne!(
                err.raw_os_error(),
                Some(libc::ETIMEDOUT),
                "the other side did not commit in {HUNG:?}"
            );
        }
    }

    /// `FUTEX_WAKE` (shared) of one waiter on the word: one is all there
    /// is in a ping-pong.
    #[inline]
    fn futex_wake(&self) {
        // SAFETY: futex(2) FUTEX_WAKE takes the address of a 4-aligned word
        // (mapped while `self` lives, see `word`) and a count; it ignores
        // the timeout, second address and third value arguments, passed as
        // null and 0.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.word().as_ptr(),
                libc::FUTEX_WAKE,
                1i32,
                std::ptr::null::<libc::timespec>(),
                std::ptr::null::<u32>(),
                0u32,
            )
        };
    }
}

impl Notify for FutexWord {
    #[inline]
    fn version(&self) -> u64 {
        u64::from(self.word().load(Ordering::Acquire))
    }

    /// Increments the word, then wakes the other side if it waits. The
    /// waiter increments the count and then loads the word; this side
    /// increments the word and then loads the count: with both sequentially
    /// consistent, one of them sees the other's write.
    #[inline]
    fn commit(&self) {
        self.word().fetch_add(1, Ordering::SeqCst);
        if self.waiters().load(Ordering::SeqCst) != 0 {
            self.futex_wake();
        }
    }

    #[inline]
    fn wait_for_change(&self, since: u64) -> u64 {
        loop {
            let seen = self.word().load(Ordering::Acquire);
            if u64::from(seen) != since {
                return u64::from(seen);
            }
            self.waiters().fetch_add(1, Ordering::SeqCst);
            if self.word().load(Ordering::SeqCst) == seen {
                self.futex_wait(seen);
            }
            self.waiters().fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn signal_start(&self) -> u64 {
        // Read under the lock: the first side commits only once it has seen
        // the start signal, so the word cannot have moved yet.
        self.locked.with_cell(|d| {
            d[STARTED] += 1;
            self.version()
        })
    }
}

impl Lock for FutexWord {
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut [u64; 8]) -> R) -> R {
        self.locked.with_cell(f)
    }
    #[inline]
    fn lock_unlock(&self) {
        self.locked.lock_unlock();
    }
}

impl Cell for FutexWord {
    fn create(name: &str) -> Self {
        FutexWord {
            locked: Locked::create(name, 64),
        }
    }
    fn attach(name: &str) -> Self {
        FutexWord {
            locked: Locked::attach(name),
        }
    }
}

//! The floor of `snapshot_64B`: a hand-written seqlock over the
//! [`Locked`] floor, written directly against the mapping.
//!
//! A sequence word (`u64`) sits in the header page, next to the robust mutex,
//! and the 64 data bytes on the next page boundary, as in a typed-shm
//! segment. The writer (the lock holder) makes the word odd before it writes
//! and even again, one step further, after; the reader takes no lock and
//! writes nothing:
//!
//! 1. load the word (acquire); odd means a write is in progress: try again;
//! 2. load the 8 data words (`AtomicU64`, relaxed);
//! 3. an acquire fence, so that the data loads stay before
//! 4. a second load of the word: unchanged means the copy is one commit's.
//!
//! Nothing less makes a consistent lock-free copy, so this is the floor of
//! a snapshot: typed-shm adds the poison check, the retry policy (spin,
//! yield, then sleep; a dead writer detected through the lock word) and the
//! copy routine that serves every size. The reader here only spins.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering, fence};

use crate::floor::Locked;
use crate::subject::{Cell, Lock};

/// Where the sequence word lives in the header page: away from the mutex's
/// cache line, at the offset typed-shm's header uses.
const SEQ: usize = 512;

/// The [`Locked`] floor plus a sequence word.
pub struct SeqLocked {
    locked: Locked,
}

impl SeqLocked {
    /// The sequence word.
    #[inline]
    fn seq(&self) -> &AtomicU64 {
        // SAFETY: AtomicU64::from_ptr requires a pointer that is 8-aligned,
        // valid for the lifetime of the reference and accessed only
        // atomically meanwhile:
        // - the header page is page aligned and `SEQ` a multiple of 8;
        // - it is mapped as long as `self.locked` (the borrow of `self`);
        // - every handle of this type reads and writes the word atomically,
        //   and nothing else uses these bytes of the header page.
        unsafe { AtomicU64::from_ptr(self.locked.header().wrapping_add(SEQ).cast()) }
    }

    /// Data word `i` (0..8) as an atomic.
    #[inline]
    fn word(&self, i: usize) -> &AtomicU64 {
        debug_assert!(i < 8);
        // SAFETY: AtomicU64::from_ptr requires a pointer that is 8-aligned,
        // valid for the lifetime of the reference and, meanwhile, not
        // accessed non-atomically by this thread:
        // - the data starts on a page boundary, and `i < 8` keeps the word
        //   inside its 64 bytes;
        // - it is mapped as long as `self.locked`;
        // - the only non-atomic access is the writer's `&mut [u64; 8]`
        //   inside `with`, in another process (`snapshot_64B_with_writer`)
        //   or, in this process, never while a snapshot runs (the benchmark
        //   thread does one or the other).
        unsafe { AtomicU64::from_ptr(self.locked.data().wrapping_add(i * 8).cast()) }
    }

    /// A consistent copy of the 64 data bytes, without the lock: the
    /// seqlock read described in the module docs. Spins while a write is in
    /// progress.
    #[inline]
    pub fn snapshot(&self) -> [u64; 8] {
        loop {
            let before = self.seq().load(Ordering::Acquire);
            if before & 1 == 0 {
                let mut out = [0u64; 8];
                for (i, w) in out.iter_mut().enumerate() {
                    *w = self.word(i).load(Ordering::Relaxed);
                }
                fence(Ordering::Acquire);
                if self.seq().load(Ordering::Relaxed) == before {
                    return out;
                }
            }
            std::hint::spin_loop();
        }
    }
}

impl Lock for SeqLocked {
    /// The seqlock write: lock; the word odd (relaxed store, then a release
    /// fence, so that it is ordered before the data stores); `f`; the word
    /// even again (release store); unlock.
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut [u64; 8]) -> R) -> R {
        self.locked.with_cell(|d| {
            let s = self.seq().load(Ordering::Relaxed);
            self.seq().store(s | 1, Ordering::Relaxed);
            fence(Ordering::Release);
            let r = f(d);
            self.seq().store((s | 1).wrapping_add(1), Ordering::Release);
            r
        })
    }

    /// Reads under the lock, without touching the sequence word.
    #[inline]
    fn read<R>(&self, f: impl FnOnce(&[u64; 8]) -> R) -> R {
        self.locked.with_cell(|d| f(d))
    }

    #[inline]
    fn lock_unlock(&self) {
        self.locked.lock_unlock();
    }
}

impl Cell for SeqLocked {
    fn create(name: &str) -> Self {
        SeqLocked {
            locked: Locked::create(name, 64),
        }
    }
    fn attach(name: &str) -> Self {
        SeqLocked {
            locked: Locked::attach(name),
        }
    }
}

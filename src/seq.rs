//! Readers of the sequence word: consistent copies without the lock
//! (snapshots), the commit count (`version`), and waiting for a change.
//!
//! The protocol (a seqlock whose writer is the lock holder):
//!
//! - the word of a plain segment is `4 × commits + 2 × poisoned + writing`
//!   ([`COMMIT`], [`POISONED`], [`WRITING`]);
//! - a write guard sets `WRITING` (the word becomes odd) before its first
//!   write (`ShmMutex::begin_write`, on the first `DerefMut`) and, when
//!   dropped, stores the next commit's value with release ordering
//!   (`ShmMutex::unlock`), which keeps the poison bit;
//! - a reader loads the word with acquire ordering; if neither low bit is
//!   set, it copies the data with atomic loads, issues an acquire fence and
//!   loads the word again: the copy is consistent and clean if the word did
//!   not change. A poisoned word sends the reader to the slow path, which
//!   reports the poison with the copy. An odd word means a write is in
//!   progress: the reader retries, then sleeps — unless the lock word says
//!   its owner died, in which case the write will never end and the reader
//!   reports the poison with the data as it stands.
//!
//! Transactional segments keep a word of their own meaning (see
//! `ShmMutex::unlock_txn`); a quick read, which is for plain segments, never
//! sees it: a transactional handle's quick read looks at a constant word
//! that has `WRITING` set instead, and goes its own way.
//!
//! # What the memory model says
//!
//! The reader uses only atomic loads, so nothing it does is a data race by
//! itself. The writer, however, writes through a plain `&mut T`. When reader
//! and writer are threads of one process, a reader's atomic load that races
//! with the writer's non-atomic store is a data race in the Rust (C++20)
//! model, hence undefined behaviour on paper — whatever value the reader then
//! discards. Every seqlock in the wild that lets its writer use plain stores
//! has this flaw; the sound ones make the writer use atomic stores too. Here
//! the writer's `&mut T` is the point of the API, so the race remains, and
//! the design contains it as far as it can:
//!
//! - the reader never forms a reference to the shared data, and reads it only
//!   through `AtomicU64`/`AtomicU32`/`AtomicU16`/`AtomicU8` loads of aligned
//!   words (the data starts on a page boundary), so no load can tear below a
//!   word and no value it read is used unless the sequence check passes;
//! - a reader in another process is outside the model altogether: the
//!   compiler of each process sees only its own side;
//! - transactional segments remove the race: their writers work on a private
//!   copy and publish it with atomic stores.

#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering, fence};
use std::time::{Duration, Instant};

use crate::sync::{COMMIT, POISONED, ShmMutex, WRITING, self_wait_panic};
use crate::sys::{self, Owner};

/// How long one futex wait of `wait_for_change` lasts at most: a writer that
/// dies mid-write wakes nobody, so waiters look at the lock word this often.
const WAIT_SLICE: Duration = Duration::from_millis(20);
/// A reader that finds a write in progress sleeps at most this long between
/// two looks (so a dead writer is reported well within 100 ms).
const MAX_NAP: Duration = Duration::from_millis(1);

/// How a consistent read ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Read {
    /// A copy of one commit; the segment is not poisoned.
    Clean,
    /// The segment is poisoned; the copy is the data as it stands (a copy of
    /// one commit, unless a writer died in the middle of a write).
    Poisoned,
    /// No consistent copy before the deadline.
    TimedOut,
}

/// What a snapshot of a `T` does after a quick read that was not enough
/// (see [`ShmMutex::after_quick`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Another quick read may succeed now.
    Retry,
    /// The copy would be a poisoned one: the segment is poisoned, or its
    /// writer died in the middle of a write. [`ShmMutex::read`] takes it.
    Poisoned,
    /// The deadline passed.
    TimedOut,
}

/// Copies `len` bytes from shared memory at `src` to `dst` with atomic
/// loads of the widest aligned words.
///
/// # Safety
///
/// - `src` must be 8-aligned and valid for reads of `len` bytes for the
///   duration of the call, in a mapping that other threads and processes
///   access only through this library (atomically, or through `&mut` under
///   the lock: see the module docs);
/// - `dst` must be valid for writes of `len` bytes and not overlap `src`.
#[inline(always)]
unsafe fn copy_atomic(src: *const u8, dst: *mut u8, len: usize) {
    let mut i = 0;
    // Pairs of words are stored as one 16-byte store: a caller that moves the
    // copy on with 16-byte loads (as compilers do for larger values) then
    // reads it back from one store, which the processor can forward, instead
    // of stalling on a load that spans two 8-byte stores.
    #[cfg(target_arch = "x86_64")]
    while i + 16 <= len {
        use std::arch::x86_64::{_mm_set_epi64x, _mm_storeu_si128};
        // SAFETY: AtomicU64::from_ptr requires an 8-aligned pointer, valid
        // for the access, used only atomically meanwhile: `src` is 8-aligned
        // and `i` a multiple of 8 with `i + 16 <= len`, inside the mapping
        // (this fn's contract; on the atomic-only use, see the module docs).
        let lo =
            unsafe { AtomicU64::from_ptr(src.wrapping_add(i).cast_mut().cast()) }.load(Ordering::Relaxed);
        // SAFETY: as above, for the next word (`i + 8 + 8 <= len`).
        let hi =
            unsafe { AtomicU64::from_ptr(src.wrapping_add(i + 8).cast_mut().cast()) }.load(Ordering::Relaxed);
        // SAFETY: _mm_set_epi64x needs SSE2, part of every x86_64 target.
        let pair = unsafe { _mm_set_epi64x(hi as i64, lo as i64) };
        // SAFETY: _mm_storeu_si128 (SSE2, as above) requires `dst + i .. + 16`
        // valid for writes, with no alignment: within the `len` writable
        // bytes of `dst` (this fn's contract).
        unsafe { _mm_storeu_si128(dst.wrapping_add(i).cast(), pair) };
        i += 16;
    }
    while i + 8 <= len {
        // SAFETY: AtomicU64::from_ptr requires an 8-aligned pointer, valid
        // for the access, used only atomically meanwhile: `src` is 8-aligned
        // and `i` a multiple of 8 with `i + 8 <= len`, inside the mapping
        // (this fn's contract; on the atomic-only use, see the module docs).
        let v = unsafe { AtomicU64::from_ptr(src.wrapping_add(i).cast_mut().cast()) }.load(Ordering::Relaxed);
        // SAFETY: write_unaligned requires a pointer valid for writes of 8
        // bytes, with no alignment: `dst + i .. dst + i + 8` lies within the
        // `len` writable bytes of `dst` (this fn's contract).
        unsafe { dst.wrapping_add(i).cast::<u64>().write_unaligned(v) };
        i += 8;
    }
    // ShmSafe data is mostly whole words: then there is no tail.
    if len % 8 == 0 {
        return;
    }
    if i + 4 <= len {
        // SAFETY: as above, for 4 bytes: `src + i` is 4-aligned (`i` is a
        // multiple of 8) and `i + 4 <= len`.
        let v = unsafe { AtomicU32::from_ptr(src.wrapping_add(i).cast_mut().cast()) }.load(Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { dst.wrapping_add(i).cast::<u32>().write_unaligned(v) };
        i += 4;
    }
    if i + 2 <= len {
        // SAFETY: as above, for 2 bytes: `i` is a multiple of 4 here.
        let v = unsafe { AtomicU16::from_ptr(src.wrapping_add(i).cast_mut().cast()) }.load(Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { dst.wrapping_add(i).cast::<u16>().write_unaligned(v) };
        i += 2;
    }
    if i < len {
        // SAFETY: as above, for the last byte (`i < len`).
        let v = unsafe { AtomicU8::from_ptr(src.wrapping_add(i).cast_mut()) }.load(Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { dst.wrapping_add(i).write(v) };
    }
}

/// Loads the `T` at `src` with atomic loads of aligned words and returns it
/// by value. Built for values a snapshot returns: the words go straight into
/// the result, which the compiler can keep in registers, instead of through
/// a buffer in memory.
///
/// # Safety
///
/// `src` must be 8-aligned and valid for reads of `size_of::<T>()` bytes for
/// the duration of the call, in a mapping that other threads and processes
/// access only through this library (as for [`copy_atomic`]). Every bit
/// pattern must be a valid `T`, which `ShmSafe: Pod` guarantees.
#[inline(always)]
unsafe fn load_atomic<T: bytemuck::Pod>(src: *const u8) -> T {
    let len = size_of::<T>();
    let mut out = std::mem::MaybeUninit::<T>::uninit();
    let dst = out.as_mut_ptr().cast::<u8>();
    // SAFETY: copy_atomic requires an 8-aligned source of `len` readable
    // bytes that others access only atomically or through this library
    // (this fn's contract) and a destination with room for them (`out`).
    unsafe { copy_atomic(src, dst, len) };
    // SAFETY: assume_init requires every byte of `out` written, which
    // copy_atomic did (all `len` of them), and a valid `T`, which every bit
    // pattern is (`T: Pod`).
    unsafe { out.assume_init() }
}

/// Copies `len` bytes from private memory at `src` into shared memory at
/// `dst` with atomic stores of the widest aligned words: how a transactional
/// commit publishes, so that no byte of the segment is ever written
/// non-atomically while another process may read it.
///
/// # Safety
///
/// - `src` must be valid for reads of `len` bytes, not written meanwhile;
/// - `dst` must be 8-aligned and valid for writes of `len` bytes, in a
///   mapping that others access only atomically while this runs (readers of
///   a transactional segment never read the uncommitted buffer this writes,
///   and writers hold the lock).
#[inline]
pub(crate) unsafe fn copy_atomic_store(src: *const u8, dst: *mut u8, len: usize) {
    let mut i = 0;
    // Eight words per round: the loop's own work (count, compare, branch)
    // is paid once per 64 bytes instead of once per word.
    while i + 64 <= len {
        for k in (0..64).step_by(8) {
            // SAFETY: read_unaligned requires `src + i + k .. + 8` valid for
            // reads: within the `len` bytes of `src` (`i + 64 <= len`; this
            // fn's contract).
            let v = unsafe { src.wrapping_add(i + k).cast::<u64>().read_unaligned() };
            // SAFETY: AtomicU64::from_ptr requires an 8-aligned pointer valid
            // for the access and used only atomically meanwhile: `dst` is
            // 8-aligned, `i + k` a multiple of 8 with `i + k + 8 <= len`
            // (this fn's contract).
            unsafe { AtomicU64::from_ptr(dst.wrapping_add(i + k).cast()) }.store(v, Ordering::Relaxed);
        }
        i += 64;
    }
    // A whole number of rounds (any data whose size is a multiple of 64,
    // as a page is) ends here, without the tail's comparisons.
    if i == len {
        return;
    }
    while i + 8 <= len {
        // SAFETY: read_unaligned requires `src + i .. + 8` valid for reads:
        // within the `len` bytes of `src` (this fn's contract).
        let v = unsafe { src.wrapping_add(i).cast::<u64>().read_unaligned() };
        // SAFETY: AtomicU64::from_ptr requires an 8-aligned pointer valid for
        // the access and used only atomically meanwhile: `dst` is 8-aligned,
        // `i` a multiple of 8 with `i + 8 <= len` (this fn's contract).
        unsafe { AtomicU64::from_ptr(dst.wrapping_add(i).cast()) }.store(v, Ordering::Relaxed);
        i += 8;
    }
    if len % 8 == 0 {
        return;
    }
    if i + 4 <= len {
        // SAFETY: as above, for 4 bytes.
        let v = unsafe { src.wrapping_add(i).cast::<u32>().read_unaligned() };
        // SAFETY: as above, for a 4-aligned word (`i` is a multiple of 8).
        unsafe { AtomicU32::from_ptr(dst.wrapping_add(i).cast()) }.store(v, Ordering::Relaxed);
        i += 4;
    }
    if i + 2 <= len {
        // SAFETY: as above, for 2 bytes.
        let v = unsafe { src.wrapping_add(i).cast::<u16>().read_unaligned() };
        // SAFETY: as above, for a 2-aligned word.
        unsafe { AtomicU16::from_ptr(dst.wrapping_add(i).cast()) }.store(v, Ordering::Relaxed);
        i += 2;
    }
    if i < len {
        // SAFETY: as above, for the last byte.
        let v = unsafe { src.wrapping_add(i).read() };
        // SAFETY: as above, for one byte.
        unsafe { AtomicU8::from_ptr(dst.wrapping_add(i)) }.store(v, Ordering::Relaxed);
    }
}

/// Marks the path that calls it as unlikely, so that the compiler lays the
/// other one out straight (what `std::hint::cold_path` does from Rust 1.95,
/// newer than this crate's minimum): a call to an empty function that is
/// never inlined, paid only on the unlikely path.
#[cold]
#[inline(never)]
fn cold_path() {}

/// Waits a little before the next look at a write in progress: spins
/// first, then yields, then sleeps up to [`MAX_NAP`] (never past
/// `deadline`).
fn back_off(round: u32, deadline: Option<Instant>) {
    if round < 32 {
        std::hint::spin_loop();
    } else if round < 48 {
        std::thread::yield_now();
    } else {
        let nap = Duration::from_micros(1 << (round - 48).min(10)).min(MAX_NAP);
        let nap = deadline.map_or(nap, |d| nap.min(d.saturating_duration_since(Instant::now())));
        std::thread::sleep(nap);
    }
}

impl ShmMutex {
    /// Commits so far: the sequence word's count (a commit in progress is
    /// not counted yet), or, for a transactional segment, the
    /// commits its snapshots can see (its sequence word also moves when a
    /// dead writer's unfinished commit is abandoned, so it does not count).
    #[inline]
    pub(crate) fn version(&self) -> u64 {
        if self.is_transactional() {
            self.txn_version()
        } else {
            self.seq().load(Ordering::Acquire) / COMMIT
        }
    }

    /// The commits of a transactional segment that snapshots can see. A
    /// publish counts its commit (the commit count) just before it makes the
    /// word even; in between, and after a writer died there until the next
    /// locker completes its commit, the count is one ahead of the committed
    /// buffer. The count's parity always equals the committed buffer's bit
    /// once that buffer is committed (each commit flips both), so a parity
    /// that differs means one commit counted but not yet visible. Read
    /// between two equal loads of the word, the count is either the visible
    /// commits or one more (the next publish counts only after making the
    /// word odd).
    fn txn_version(&self) -> u64 {
        loop {
            let s = self.seq().load(Ordering::Acquire);
            let count = self.txn_commits().load(Ordering::Acquire);
            if self.seq().load(Ordering::Relaxed) == s {
                // Saturating: only a header written by something else than
                // this protocol breaks the parity rule at a count of 0.
                return count.saturating_sub(u64::from(count & 1 != (s >> 1) & 1));
            }
            std::hint::spin_loop();
        }
    }

    /// The common case of a snapshot of a `T`, inlined into the caller: one
    /// look at the sequence word, the copy, a second look. `None` when that
    /// was not enough for a clean copy: a write was in progress, a commit
    /// happened during the copy, or the segment is poisoned.
    ///
    /// The looks are at [`quick_seq`](ShmMutex::quick_seq): the sequence
    /// word of a plain segment, so the only test before the copy is the one
    /// a hand-written seqlock makes, and nothing is loaded but the word and
    /// the data. A transactional handle's quick word always says "not
    /// now", and its read (the committed buffer) is taken on that branch.
    ///
    /// # Safety
    ///
    /// As for [`load_atomic`]: `src` is this segment's data, 8-aligned and
    /// `size_of::<T>()` bytes, mapped while `self` lives.
    #[inline(always)]
    pub(crate) unsafe fn read_quick<T: bytemuck::Pod>(&self, src: *const u8) -> Option<T> {
        let seq = self.quick_seq();
        let before = seq.load(Ordering::Acquire);
        if before & (WRITING | POISONED) != 0 {
            // Laid out away from the copy: a plain segment's snapshot then
            // runs straight through, as a hand-written seqlock's does.
            cold_path();
            return if self.is_transactional() {
                self.read_quick_txn()
            } else {
                None
            };
        }
        // SAFETY: load_atomic requires an 8-aligned source of size_of::<T>()
        // readable bytes that others access only atomically or through this
        // library: the data (page aligned, `size_of::<T>()` bytes, mapped
        // while `self` lives; this fn's contract).
        let value = unsafe { load_atomic::<T>(src) };
        fence(Ordering::Acquire);
        (seq.load(Ordering::Relaxed) == before).then_some(value)
    }

    /// [`read_quick`](Self::read_quick) of a transactional segment: a copy of
    /// the committed buffer, `None` if commits overtook it. The buffer is
    /// written again only once the word reaches `committed + 3` (see
    /// [`read_txn`](Self::read_txn)), and the word never goes back.
    #[inline(always)]
    fn read_quick_txn<T: bytemuck::Pod>(&self) -> Option<T> {
        let seq = self.seq();
        let committed = seq.load(Ordering::Acquire) & !1;
        let (from, _) = self.txn_buffers(committed)?;
        // SAFETY: load_atomic requires an 8-aligned source of size_of::<T>()
        // readable bytes that others access only atomically: a buffer of the
        // segment (page aligned, `data_len` bytes, which is size_of::<T>()
        // for the handles that call this, mapped while `self` lives:
        // `ShmMutex::new`'s contract); writers only ever store into it
        // atomically.
        let value = unsafe { load_atomic::<T>(from) };
        fence(Ordering::Acquire);
        (seq.load(Ordering::Relaxed) < committed + 3).then_some(value)
    }

    /// After a [`read_quick`](Self::read_quick) that returned `None`: waits
    /// until another quick read may succeed, or finds that the copy would be
    /// a poisoned one, or that `deadline` passed (see [`Next`]). While a live
    /// writer is in the middle of a commit it spins, then yields, then
    /// sleeps, as [`read`](Self::read) does; `round` counts the failed
    /// attempts of one snapshot, so the waits grow with them.
    ///
    /// Out of line, and it returns no data: a snapshot's value then comes
    /// only from a quick read, so the caller keeps it in registers.
    ///
    /// # Panics
    ///
    /// If the write in progress is the calling thread's own (see
    /// [`self_wait_panic`]).
    #[cold]
    #[inline(never)]
    pub(crate) fn after_quick(&self, round: &mut u32, deadline: Option<Instant>) -> Next {
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Next::TimedOut;
            }
            back_off(*round, deadline);
            *round = round.saturating_add(1);
            // A transactional segment's committed buffer is never being
            // written: a quick read there failed only because commits
            // overtook it.
            if self.is_transactional() {
                return Next::Retry;
            }
            let s = self.seq().load(Ordering::Acquire);
            if s & POISONED != 0 {
                return Next::Poisoned;
            }
            // No commit in progress: read now (a wait here would let the
            // next commit start).
            if s & WRITING == 0 {
                return Next::Retry;
            }
            if self.owner() == Owner::Died {
                return Next::Poisoned;
            }
            if self.held_by_this_thread() {
                self_wait_panic("a snapshot");
            }
        }
    }

    /// Copies `len` bytes of the data at `src` into `dst`, consistently (all
    /// from one commit), without taking the lock and without writing to the
    /// segment.
    ///
    /// # Safety
    ///
    /// As for [`copy_atomic`]: `src` is this segment's data (8-aligned,
    /// `len` bytes, mapped while `self` lives), `dst` valid for writes of
    /// `len` bytes.
    #[inline]
    pub(crate) unsafe fn read(
        &self,
        src: *const u8,
        dst: *mut u8,
        len: usize,
        deadline: Option<Instant>,
    ) -> Read {
        // The common case, inlined: a plain segment, not poisoned, nothing
        // changed during the copy (see `read_quick`).
        let seq = self.quick_seq();
        let before = seq.load(Ordering::Acquire);
        if before & (WRITING | POISONED) == 0 {
            // SAFETY: copy_atomic requires an 8-aligned source of `len`
            // readable bytes (the data: page aligned, `len` bytes, mapped
            // while `self` lives) and `dst` (this fn's contract).
            unsafe { copy_atomic(src, dst, len) };
            fence(Ordering::Acquire);
            if seq.load(Ordering::Relaxed) == before {
                return Read::Clean;
            }
        }
        // SAFETY: forwarded from this fn's contract.
        unsafe { self.read_slow(src, dst, len, deadline) }
    }

    /// [`read`](Self::read) after its first attempt: retries, waits for a
    /// writer, reports poison; and transactional segments.
    ///
    /// # Safety
    ///
    /// As for [`read`](Self::read).
    #[cold]
    #[inline(never)]
    unsafe fn read_slow(&self, src: *const u8, dst: *mut u8, len: usize, deadline: Option<Instant>) -> Read {
        if self.is_transactional() {
            // SAFETY: forwarded from this fn's contract (`len` is the
            // segment's data length; the buffers are the segment's).
            return unsafe { self.read_txn(dst, len, deadline) };
        }
        let mut round = 0;
        loop {
            let before = self.seq().load(Ordering::Acquire);
            if before & WRITING == 0 {
                // SAFETY: forwarded from this fn's contract.
                unsafe { copy_atomic(src, dst, len) };
                // Keeps the data loads before the second look at the word.
                fence(Ordering::Acquire);
                if self.seq().load(Ordering::Relaxed) == before {
                    return if before & POISONED != 0 {
                        Read::Poisoned
                    } else {
                        Read::Clean
                    };
                }
            } else if self.owner() == Owner::Died {
                // The writer's process died mid-write: the word stays odd
                // until the next locker repairs it. The data as it stands.
                // SAFETY: forwarded from this fn's contract.
                unsafe { copy_atomic(src, dst, len) };
                return Read::Poisoned;
            } else if self.held_by_this_thread() {
                // The write in progress is this thread's own.
                self_wait_panic("a snapshot");
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Read::TimedOut;
            }
            back_off(round, deadline);
            round = round.saturating_add(1);
        }
    }

    /// [`read`](Self::read) for a transactional segment: copies the
    /// committed buffer, which writers never touch until two commits later.
    /// It retries only if that happened during the copy; it never waits for
    /// a writer.
    ///
    /// # Safety
    ///
    /// `dst` valid for writes of `len` bytes, `len` the segment's data length.
    unsafe fn read_txn(&self, dst: *mut u8, len: usize, deadline: Option<Instant>) -> Read {
        let mut round = 0;
        loop {
            let before = self.seq().load(Ordering::Acquire);
            // The last commit when the read began (an odd word is a publish in
            // progress into the other buffer).
            let committed = before & !1;
            let (src, _) = self.txn_buffers(committed).expect("a transactional segment");
            // SAFETY: copy_atomic requires an 8-aligned source of `len`
            // readable bytes (a page-aligned buffer of the segment, mapped
            // while `self` lives: `new`'s contract) and `dst` (this fn's).
            unsafe { copy_atomic(src, dst, len) };
            fence(Ordering::Acquire);
            // The next publish writes the other buffer; only the one after it
            // (which makes the word `committed + 3`) writes this one. The word
            // never goes back (an abandoned commit moves it on), so any later
            // write to this buffer shows as a word of at least that.
            // A transactional segment is never poisoned (see
            // `ShmMutex::after_owner_died`).
            if self.seq().load(Ordering::Relaxed) < committed + 3 {
                return Read::Clean;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Read::TimedOut;
            }
            back_off(round, deadline);
            round = round.saturating_add(1);
        }
    }

    /// Waits until the version differs from `since` (then returns it), the
    /// segment is poisoned (returns the version as it is), or `deadline`
    /// passes (returns `None`).
    pub(crate) fn wait_for_change(&self, since: u64, deadline: Option<Instant>) -> Option<u64> {
        loop {
            let seen = self.seq().load(Ordering::Acquire);
            let version = self.version();
            let dead_writer = !self.is_transactional() && seen & WRITING != 0 && self.owner() == Owner::Died;
            if version != since || self.is_poisoned() || dead_writer {
                return Some(version);
            }
            let slice = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    left.min(WAIT_SLICE)
                }
                None => WAIT_SLICE,
            };
            if self.held_by_this_thread() {
                self_wait_panic("a wait for a change");
            }
            // Register, then look again: a committer that stored the new word
            // before our increment is seen by the second load; one that
            // stores it after sees the count and wakes us.
            self.waiters().fetch_add(1, Ordering::SeqCst);
            if self.seq().load(Ordering::SeqCst) == seen {
                // SAFETY: futex::wait requires a 4-aligned address that stays
                // mapped during the call: the low half of the sequence word,
                // mapped while `self` lives.
                unsafe { sys::futex::wait(self.seq_futex(), seen as u32, slice) };
            }
            self.waiters().fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An 8-aligned buffer of `n` bytes plus guard bytes after it.
    fn aligned(n: usize, fill: u8) -> Vec<u64> {
        vec![u64::from_ne_bytes([fill; 8]); n / 8 + 2]
    }

    fn bytes(v: &[u64]) -> &[u8] {
        bytemuck::cast_slice(v)
    }

    /// Every length from 0 to 200 bytes, through both copies: each byte
    /// arrives, and no byte past the length is written (the tails of 4, 2
    /// and 1 bytes, the early ends for whole words and whole rounds).
    #[test]
    fn atomic_copies_move_exactly_len_bytes_for_every_length() {
        for len in 0..=200 {
            let src: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
            let mut shared = aligned(len, 0xEE);
            // SAFETY: copy_atomic_store requires `len` readable bytes at the
            // source (`src`) and an 8-aligned destination valid for `len`
            // bytes that nobody else accesses (this thread's own `shared`,
            // longer than `len`).
            unsafe { copy_atomic_store(src.as_ptr(), shared.as_mut_ptr().cast(), len) };
            assert_eq!(&bytes(&shared)[..len], &src[..], "len {len}: stored bytes");
            assert!(
                bytes(&shared)[len..].iter().all(|&b| b == 0xEE),
                "len {len}: a store past the end"
            );
            let mut out = vec![0xAAu8; len + 16];
            // SAFETY: copy_atomic requires an 8-aligned source of `len`
            // readable bytes accessed only atomically meanwhile (`shared`,
            // this thread's own) and a destination with room for them.
            unsafe { copy_atomic(shared.as_ptr().cast(), out.as_mut_ptr(), len) };
            assert_eq!(&out[..len], &src[..], "len {len}: loaded bytes");
            assert!(
                out[len..].iter().all(|&b| b == 0xAA),
                "len {len}: a load past the end"
            );
        }
    }
}

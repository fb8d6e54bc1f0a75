//! The segment's lock: a robust, process-shared pthread mutex plus the
//! header words that go with it (the holder's token and the sticky
//! `poisoned` flag), with `std::sync`-style outcomes. Like lock_api's
//! `Mutex` owns its raw lock, [`ShmMutex`] owns these words: every access to
//! them goes through it.
//!
//! Poisoning: a holder whose process died (`EOWNERDEAD`) or a write guard
//! dropped while its thread panics sets `poisoned`; every later acquisition,
//! in any process, reports it until `clear_poison` stores 0. Readers see
//! the poison in the sequence word instead (see [`POISONED`]). The mutex itself
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
//! `WouldBlock`. The check works across handles of the same segment, and
//! costs nothing while the lock is free: a thread that holds the mutex
//! finds it busy (a normal robust mutex's `trylock` fails with `EBUSY` for
//! its owner too), so `lock` looks at the token only on its way to waiting.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::header::InPlace;
use crate::sys::{self, Acquired, HandleFlags, Owner, RawMutex, WatchId};
use crate::txn::PrivateBuf;

#[cold]
#[inline(never)]
fn relock_panic() -> ! {
    panic!(
        "typed-shm: this thread already holds the lock of this segment \
         (a guard is still alive or was forgotten): locking it again would deadlock"
    )
}

/// A snapshot or a wait for a change by the thread that holds the lock:
/// the write it would wait for cannot end while the thread waits.
#[cold]
#[inline(never)]
pub(crate) fn self_wait_panic(what: &str) -> ! {
    panic!(
        "typed-shm: {what} by the thread that holds the lock of this segment (a guard is still \
         alive or was forgotten): the commit it would wait for cannot happen while it waits, so \
         waiting would never end; drop the guard first"
    )
}

/// The sequence word of a plain segment: a write in progress (a guard has
/// written, or its holder died while writing). The word is odd exactly then.
pub(crate) const WRITING: u64 = 1;
/// The sequence word of a plain segment: the segment is poisoned (a copy of
/// the sticky flag, for readers, so that a snapshot checks one word).
pub(crate) const POISONED: u64 = 2;
/// The sequence word of a plain segment: one commit. The word is
/// `COMMIT * commits + POISONED * poisoned + WRITING * writing`.
pub(crate) const COMMIT: u64 = 4;

/// What a transactional handle's quick read looks at instead of the sequence
/// word (see [`ShmMutex::quick_seq`]): a word that never changes and says "a
/// write is in progress", so that a quick read, which is for plain segments,
/// always gives way.
static NOT_PLAIN: AtomicU64 = AtomicU64::new(WRITING);

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
    /// The header, for the lock's words (one pointer: every word is at a
    /// constant offset from it).
    header: InPlace,
    /// Whether a thread of this process holds the lock through this handle
    /// (a handle whose lock is still held when it is dropped, by a
    /// forgotten guard, must never unmap it). On the heap, at an address
    /// that the thread-end check keeps.
    flags: Box<HandleFlags>,
    /// The fork generation the handle was made in: another one now means
    /// the handle was inherited across `fork` (in a child process, the
    /// lock's words belong to the parent).
    fork_generation: u64,
    /// [`fork_generation`](Self::fork_generation), or `u64::MAX` for a
    /// transactional segment: equal to the current generation exactly when
    /// the handle [`is_plain`](Self::is_plain), in one comparison.
    plain_generation: u64,
    /// The word a quick read looks at (see [`quick_seq`](Self::quick_seq)):
    /// the header's sequence word, or [`NOT_PLAIN`] for a transactional
    /// segment.
    quick_seq: *const AtomicU64,
    /// The registration of `holder` and `flags` with the thread-end check.
    watch: Option<WatchId>,
    /// Transactional segments: the two data buffers (each `data_len` bytes);
    /// the committed one is `buffers[(seq >> 1) & 1]`.
    buffers: Option<[*mut u8; 2]>,
    /// Bytes of data (one buffer).
    data_len: usize,
    /// Write handles of transactional segments: where a write guard works.
    private: Option<PrivateBuf>,
}

impl ShmMutex {
    /// # Safety
    ///
    /// - `header`'s mutex (`header.mutex()`) must have been initialized
    ///   by [`RawMutex::init`] (in any process);
    /// - `header` must stay mapped for as long as the returned value lives
    ///   (its other words are covered by `InPlace::new`'s contract).
    ///
    /// `fork_generation` is the generation the handle was made in (see
    /// [`sys::fork_generation`]).
    /// `buffers`, for a transactional segment, are its two data buffers of
    /// `data_len` bytes each, 8-aligned, mapped (read-write for a handle
    /// that writes) as long as the returned value lives, and accessed by
    /// every process only through this library.
    pub(crate) unsafe fn new(
        header: InPlace,
        key: &str,
        fork_generation: u64,
        buffers: Option<[*mut u8; 2]>,
        data_len: usize,
        private: Option<PrivateBuf>,
    ) -> Self {
        let flags = Box::new(HandleFlags::default());
        // SAFETY: the holder word stays mapped until this value is dropped
        // (this fn's contract), and `flags` lives on the heap as long as this
        // value; its `Drop` ends the registration first.
        let watch = unsafe { sys::watch_holder(header.holder(), &*flags, key) };
        ShmMutex {
            // SAFETY: forwarded from this fn's contract.
            raw: unsafe { RawMutex::from_ptr(header.mutex()) },
            header,
            flags,
            fork_generation,
            plain_generation: if buffers.is_some() {
                u64::MAX
            } else {
                fork_generation
            },
            quick_seq: if buffers.is_some() {
                &NOT_PLAIN
            } else {
                header.seq()
            },
            watch: Some(watch),
            buffers,
            data_len,
            private,
        }
    }

    /// A write handle's private buffer (transactional segments only).
    #[inline]
    pub(crate) fn private(&self) -> Option<&PrivateBuf> {
        self.private.as_ref()
    }

    /// Whether the segment is transactional.
    #[inline(always)]
    pub(crate) fn is_transactional(&self) -> bool {
        self.buffers.is_some()
    }

    /// Transactional segments: the committed buffer as of the sequence word
    /// `seq`, and the other one.
    #[inline]
    pub(crate) fn txn_buffers(&self, seq: u64) -> Option<(*mut u8, *mut u8)> {
        let [a, b] = self.buffers?;
        Some(if (seq >> 1) & 1 == 0 { (a, b) } else { (b, a) })
    }

    /// Whether this lock's handle was inherited across `fork` (made in
    /// another process): its words are then not this process's to touch.
    #[inline]
    pub(crate) fn is_inherited(&self) -> bool {
        sys::inherited_from(self.fork_generation)
    }

    /// Whether [`lock`](Self::lock), [`try_lock`](Self::try_lock) and the
    /// guard's drop may take their short path: the handle is neither
    /// inherited across `fork` nor of a transactional segment. Two loads
    /// that do not depend on each other (the handle's word and the process's
    /// fork generation).
    #[inline(always)]
    pub(crate) fn is_plain(&self) -> bool {
        self.plain_generation == sys::fork_generation_now()
    }

    #[inline(always)]
    fn holder(&self) -> &AtomicU64 {
        self.header.holder()
    }

    #[inline(always)]
    fn poisoned(&self) -> &AtomicU32 {
        self.header.poisoned()
    }

    /// The sequence word: twice the commits, plus 1 while a guard writes.
    #[inline(always)]
    pub(crate) fn seq(&self) -> &AtomicU64 {
        self.header.seq()
    }

    /// The word a snapshot's quick read looks at: the sequence word of a
    /// plain segment, or, for a transactional segment, a constant word with
    /// [`WRITING`] set (its own word means something else). The quick read
    /// then tests nothing but the word it copies between.
    #[inline(always)]
    pub(crate) fn quick_seq(&self) -> &AtomicU64 {
        // SAFETY: dereferencing requires a pointer to a live, aligned
        // AtomicU64: either the static NOT_PLAIN, or the header's sequence
        // word, which stays mapped while `self` lives (`new`'s contract;
        // `InPlace::seq` gives an aligned word accessed only atomically).
        unsafe { &*self.quick_seq }
    }

    /// Processes blocked in `wait_for_change` (a hint for committers).
    #[inline(always)]
    pub(crate) fn waiters(&self) -> &AtomicU32 {
        self.header.waiters()
    }

    /// Transactional segments: the commits so far (their version).
    #[inline(always)]
    pub(crate) fn txn_commits(&self) -> &AtomicU64 {
        self.header.txn_commits()
    }

    /// The holder's end of a write, a poisoning, or both, in the words of a
    /// plain segment: the sticky flag for lockers, and the sequence word for
    /// readers. If `wrote` (the word has [`WRITING`] set), the word moves on
    /// to the next commit ([`COMMIT`] more, `WRITING` clear, the poison bit
    /// as it was); if `poison`, [`POISONED`] is set in it too. Returns
    /// whether the word changed (then waiters are to be woken).
    ///
    /// Release: a reader that sees the new word sees every data write
    /// before it. Only the holder stores the word (plain segments; see
    /// [`clear_poison_held`](Self::clear_poison_held)), so a load and a store
    /// suffice.
    #[inline(always)]
    fn end_write(&self, wrote: bool, poison: bool) -> bool {
        if poison {
            self.poisoned().store(1, Ordering::Relaxed);
        }
        if !wrote && !poison {
            return false;
        }
        let seq = self.seq();
        let s = seq.load(Ordering::Relaxed);
        let mut next = if wrote {
            s.wrapping_add(COMMIT - WRITING)
        } else {
            s
        };
        if poison {
            next |= POISONED;
        }
        seq.store(next, Ordering::Release);
        true
    }

    /// The first acquisition after a holder's process died: poison, and if it
    /// died in the middle of a write (the sequence word is odd), count the
    /// data as it stands as a commit, so that readers stop waiting for a
    /// commit that will never come and report the poison instead.
    ///
    /// A transactional segment is not poisoned: its committed buffer was
    /// never written by the dead holder. If it died while publishing into
    /// the other buffer (the word is odd), the commit count says how far it
    /// got. Its parity always equals the committed buffer's bit (each
    /// commit flips both; nothing else changes either), and a publish
    /// counts its commit only after its copy is complete, just before the
    /// word becomes even. So a count whose parity differs from the buffer
    /// bit is a commit whose copy is whole and counted: it is completed (the
    /// word +1: even, the other buffer committed), so that the version
    /// never counts a commit nobody can see. Otherwise the commit is
    /// abandoned: the word moves on to the next value that names the same
    /// committed buffer (+3: bit 1, the buffer, unchanged; even again), so
    /// that it never goes back — a reader's check relies on that — and no
    /// commit is counted.
    #[cold]
    #[inline(never)]
    fn after_owner_died(&self) {
        let s = self.seq().load(Ordering::Relaxed);
        if self.is_transactional() {
            if s & 1 == 1 {
                // Acquire: the dead writer's copy, stored before its count
                // (release), is seen with the count.
                let commits = self.txn_commits().load(Ordering::Acquire);
                if commits & 1 != (s >> 1) & 1 {
                    self.seq().store(s + 1, Ordering::Release);
                    self.wake_waiters();
                } else {
                    self.seq().store(s + 3, Ordering::Release);
                }
            }
            return;
        }
        self.end_write(s & WRITING != 0, true);
        self.wake_waiters();
    }

    /// Marks the start of a write through a guard (the first `DerefMut`):
    /// the sequence word gets its [`WRITING`] bit (becomes odd) before any
    /// byte of the data changes.
    ///
    /// The release fence keeps the odd store before every later store
    /// (those of the data): a reader that sees a byte of the new data sees
    /// the odd word when it re-reads it after its acquire fence.
    #[inline]
    pub(crate) fn begin_write(&self) {
        let s = self.seq().load(Ordering::Relaxed);
        self.seq().store(s | WRITING, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Release);
    }

    /// Wakes the processes blocked in `wait_for_change`, if the count says
    /// there are any: a commit with nobody waiting makes no system call.
    #[inline]
    fn wake_waiters(&self) {
        // The waiter increments `waiters` and then re-reads `seq`; the
        // committer stores `seq` and then reads `waiters`: one of them must see
        // the other's write (a store→load pair on each side). On x86_64 the
        // mutex's unlock, a locked exchange, orders the committer's store
        // before this load already; elsewhere a full fence does.
        #[cfg(not(target_arch = "x86_64"))]
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.waiters().load(Ordering::Relaxed) != 0 {
            self.wake_all();
        }
    }

    #[cold]
    #[inline(never)]
    fn wake_all(&self) {
        // SAFETY: futex::wake_all requires a 4-aligned address in a live
        // mapping: the low half of the 8-aligned sequence word, mapped while
        // `self` lives (`new`'s contract).
        unsafe { sys::futex::wake_all(self.seq_futex()) };
    }

    /// The address of the sequence word's low 32 bits, the futex word that
    /// waiters sleep on. Only the kernel reads it as 32 bits; this process
    /// accesses the word only as a whole, atomically.
    #[inline]
    pub(crate) fn seq_futex(&self) -> *const u32 {
        self.header.seq_futex()
    }

    #[inline(always)]
    fn outcome(&self, a: Acquired, me: u64) -> Outcome {
        match a {
            Acquired::Locked => {
                // Addresses read once: after a store through one of them the
                // compiler would read them from `self` again.
                let (header, flags) = (self.header, &*self.flags);
                header.holder().store(me, Ordering::Relaxed);
                // The mutex orders this load after the previous holder's
                // store.
                let poisoned = header.poisoned().load(Ordering::Relaxed) != 0;
                flags.set_held(true);
                if poisoned {
                    Outcome::Poisoned
                } else {
                    Outcome::Locked
                }
            }
            Acquired::OwnerDied => self.took_from_dead_owner(me),
            Acquired::Busy => Outcome::WouldBlock,
            Acquired::TimedOut => Outcome::TimedOut,
        }
    }

    /// An acquisition that found the previous holder dead (`EOWNERDEAD`).
    #[cold]
    #[inline(never)]
    fn took_from_dead_owner(&self, me: u64) -> Outcome {
        self.holder().store(me, Ordering::Relaxed);
        self.flags.set_held(true);
        self.after_owner_died();
        if self.is_transactional() {
            Outcome::Locked
        } else {
            Outcome::Poisoned
        }
    }

    /// Whether the thread with token `me` holds the lock.
    #[inline]
    fn held_by(&self, me: u64) -> bool {
        self.holder().load(Ordering::Relaxed) == me
    }

    /// Whether the calling thread holds the lock (through any handle of the
    /// segment): then no other thread can commit until it lets go, so it
    /// must not wait for a commit. For the waiting paths only (a load of
    /// the holder word).
    pub(crate) fn held_by_this_thread(&self) -> bool {
        sys::existing_lock_token().is_some_and(|me| self.held_by(me))
    }

    /// Takes the lock, waiting as long as it takes.
    ///
    /// # Panics
    ///
    /// If the calling thread holds the lock already (through any handle of
    /// the segment): waiting would never end.
    #[inline(always)]
    pub(crate) fn lock(&self) -> Outcome {
        let me = sys::lock_token();
        let acquired = match self.raw.try_lock() {
            Acquired::Busy => self.wait(me),
            other => other,
        };
        self.outcome(acquired, me)
    }

    /// `lock` when the mutex is busy: the relock check, then the wait (a
    /// short spin first, see [`RawMutex::lock_slow`]).
    #[cold]
    #[inline(never)]
    fn wait(&self, me: u64) -> Acquired {
        // The holder's token is written after it acquires and cleared
        // before it releases, by the holding thread: it equals ours only
        // if this thread holds the lock (its own stores), whatever the
        // other threads do meanwhile.
        if self.held_by(me) {
            relock_panic();
        }
        self.raw.lock_slow(None)
    }

    /// Takes the lock if it is free. A relock by the holding thread finds
    /// the mutex busy, as any other locker does: `WouldBlock`.
    #[inline(always)]
    pub(crate) fn try_lock(&self) -> Outcome {
        let me = sys::lock_token();
        self.outcome(self.raw.try_lock(), me)
    }

    pub(crate) fn lock_timeout(&self, timeout: Duration) -> Outcome {
        let me = sys::lock_token();
        if self.held_by(me) {
            relock_panic();
        }
        self.outcome(self.raw.lock_timeout(timeout), me)
    }

    /// Releases the lock, poisoning it first if `poison`. If the guard
    /// `wrote` (it called [`begin_write`](Self::begin_write)), this is a
    /// commit: the sequence word loses its write mark and counts one commit
    /// more (see [`end_write`](Self::end_write)), and the waiters, if any,
    /// are woken after the unlock. Both are for plain segments: a
    /// transactional one comes here only from a guard that cannot write
    /// (neither flag set, so its words stay as they are); its commits go
    /// through [`unlock_txn`](Self::unlock_txn).
    ///
    /// # Safety
    ///
    /// The calling thread must hold the lock (an `Outcome::Locked` or
    /// `Outcome::Poisoned` acquisition not yet released).
    #[inline(always)]
    pub(crate) unsafe fn unlock(&self, poison: bool, wrote: bool) {
        let changed = self.end_write(wrote, poison);
        let (header, flags) = (self.header, &*self.flags);
        header.holder().store(0, Ordering::Relaxed);
        flags.set_held(false);
        // SAFETY: this thread holds the mutex (this fn's contract).
        unsafe { self.raw.unlock() };
        if changed {
            self.wake_waiters();
        }
    }

    /// Releases the lock for a guard's drop. The common case is inlined: a
    /// guard of a plain handle (see [`is_plain`](Self::is_plain)) that did
    /// not write, whose thread is not panicking, only clears the holder's
    /// token and the held flag and unlocks. Everything else takes one call
    /// out of line, [`release_other`](Self::release_other), so that the
    /// guard's drop stays small enough to be inlined into its caller.
    ///
    /// # Safety
    ///
    /// - Unless the handle was inherited across `fork`, the calling thread
    ///   must hold the lock (an acquisition not yet released);
    /// - `txn` only for a write guard of a transactional segment; then, if
    ///   `wrote`, the guard's writes must have gone to the handle's private
    ///   buffer.
    #[inline(always)]
    pub(crate) unsafe fn release(&self, txn: bool, poison_on_panic: bool, wrote: bool) {
        if !wrote && self.is_plain() && !std::thread::panicking() {
            // SAFETY: this thread holds the lock (this fn's contract; the
            // handle is not inherited).
            unsafe { self.unlock(false, false) };
        } else {
            // SAFETY: release_other has this fn's contract.
            unsafe { self.release_other(txn, poison_on_panic, wrote) };
        }
    }

    /// [`release`](Self::release) of every other guard: nothing if the
    /// handle was inherited across `fork` (the lock and its words are the
    /// parent's); for a write guard of a transactional segment (`txn`), a
    /// commit of the handle's private copy if it `wrote` and its thread is
    /// not panicking, else a rollback; for any other guard,
    /// [`unlock`](Self::unlock), a commit if it `wrote`, poisoning the lock
    /// if `poison_on_panic` and the thread is panicking.
    ///
    /// # Safety
    ///
    /// As for [`release`](Self::release).
    #[inline(never)]
    unsafe fn release_other(&self, txn: bool, poison_on_panic: bool, wrote: bool) {
        if !self.is_plain() {
            if self.is_inherited() {
                return;
            }
            if txn {
                let publish = wrote && !std::thread::panicking();
                let copy = self.private().filter(|_| publish);
                if let Some(buf) = copy {
                    // We hold the lock: the count moves only through us now.
                    buf.mark_committed(self.txn_commits().load(Ordering::Relaxed) + 1);
                }
                // SAFETY: unlock_txn requires that this thread holds the lock
                // and, when publishing, the guard's copy, `data_len()`
                // readable bytes outside the segment: the handle's private
                // buffer, where the guard wrote (this fn's contract).
                unsafe { self.unlock_txn(copy.map(|buf| buf.as_ptr().cast_const())) };
                return;
            }
        }
        let poison = poison_on_panic && std::thread::panicking();
        // SAFETY: this thread holds the lock (this fn's contract; the handle
        // is not inherited).
        unsafe { self.unlock(poison, wrote) };
    }

    /// Releases the lock of a transactional segment. With `publish` (the
    /// guard's private copy and its length), this is a commit: the copy is
    /// stored, with atomic stores, into the buffer that is not committed
    /// (which no reader reads), then the sequence word advances by one
    /// commit, which makes that buffer the committed one, and waiters are
    /// woken. Without, nothing in the segment changes.
    ///
    /// The word is odd while the copy is stored: a process that dies there
    /// leaves it odd, and the next locker moves it on (`after_owner_died`):
    /// to the same committed buffer, or — if the commit was already counted,
    /// its copy whole — to the new one, completing the commit.
    ///
    /// # Safety
    ///
    /// - The calling thread must hold the lock;
    /// - `publish`, if given, must point to `data_len()` readable bytes that
    ///   do not overlap the segment.
    #[inline]
    pub(crate) unsafe fn unlock_txn(&self, publish: Option<*const u8>) {
        if let Some(src) = publish {
            let s = self.seq().load(Ordering::Relaxed);
            let (_, target) = self.txn_buffers(s).expect("a transactional segment");
            self.seq().store(s | 1, Ordering::Relaxed);
            std::sync::atomic::fence(Ordering::Release);
            // SAFETY: copy_atomic_store requires `data_len()` readable bytes
            // at `src` (this fn's contract) and an 8-aligned destination of
            // as many bytes in the segment: the uncommitted buffer (page
            // aligned, `data_len()` bytes, mapped: `new`'s contract).
            unsafe { crate::seq::copy_atomic_store(src, target, self.data_len) };
            // Release: a locker that finds this process dead before the
            // word below and sees the count sees the whole copy (see
            // `after_owner_died`, which then completes the commit).
            let commits = self.txn_commits().load(Ordering::Relaxed);
            self.txn_commits().store(commits + 1, Ordering::Release);
            // Release: a reader that sees this value sees the buffer and the
            // commit count written before it.
            self.seq().store((s | 1) + 1, Ordering::Release);
        }
        self.holder().store(0, Ordering::Relaxed);
        self.flags.set_held(false);
        // SAFETY: this thread holds the mutex (this fn's contract).
        unsafe { self.raw.unlock() };
        if publish.is_some() {
            self.wake_waiters();
        }
    }

    /// What the lock word says about the holder (for readers that find a
    /// write in progress).
    pub(crate) fn owner(&self) -> Owner {
        self.raw.owner()
    }

    /// Whether a thread of this process may hold the lock through this
    /// handle. `held` alone can be stale after a recovery by another process
    /// (this process cannot lose the lock to a dead thread of its own: that
    /// aborts it).
    pub(crate) fn is_held_here(&self) -> bool {
        self.flags.held() && self.raw.owner() == Owner::Thread
    }

    /// Whether the lock is poisoned: the sticky flag, or a holder that died
    /// and whose death no locker has seen yet.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned().load(Ordering::Relaxed) != 0
            || (!self.is_transactional() && self.raw.owner() == Owner::Died)
    }

    /// Clears the poison, for every process: the sticky flag and, in a plain
    /// segment, the sequence word's [`POISONED`] bit.
    ///
    /// For callers that hold the lock (an acquisition not yet released,
    /// through any handle of the segment), or of a transactional segment
    /// (then only the sticky flag is stored, which needs no lock): a
    /// committer stores the word with a plain load and store, which would
    /// bring back a bit cleared meanwhile. Not a matter of memory safety
    /// (every access is atomic), but of a poison that would stay for readers
    /// after lockers saw it cleared. (Transactional segments are never
    /// poisoned; their word's bit 1 names the committed buffer and is left
    /// alone.)
    pub(crate) fn clear_poison_held(&self) {
        self.poisoned().store(0, Ordering::Relaxed);
        if !self.is_transactional() {
            let s = self.seq().load(Ordering::Relaxed);
            if s & POISONED != 0 {
                // Release, as a commit: readers that see the clean word see
                // the repairs made under the lock before it.
                self.seq().store(s & !POISONED, Ordering::Release);
                self.wake_waiters();
            }
        }
    }
}

impl Drop for ShmMutex {
    fn drop(&mut self) {
        if let Some(watch) = self.watch.take() {
            sys::unwatch_holder(watch);
        }
    }
}

//! What every benchmark subject offers, so that one generic loop measures the
//! same work on each of them. Everything is monomorphized and inlined: the
//! trait adds no indirection to what is measured.

use std::time::{Duration, Instant};

use crate::floor::{Locked, Segment};
use crate::peer::Peer;
use crate::typed::{TxnBuf, TxnCell, TypedBuf, TypedCell};

/// A lock around a `[u64; 8]` (64 bytes).
pub trait Lock {
    /// Runs `f` with the lock held.
    fn with<R>(&self, f: impl FnOnce(&mut [u64; 8]) -> R) -> R;
    /// Runs `f` with the lock held, for reading only: on subjects with a
    /// sequence word this is not a commit.
    #[inline]
    fn read<R>(&self, f: impl FnOnce(&[u64; 8]) -> R) -> R {
        self.with(|d| f(d))
    }
    /// Under one lock: if `ready` holds for the data, runs `then` on it;
    /// returns whether it did. On subjects with a sequence word, a check
    /// that fails is not a commit (only `then` writes).
    #[inline]
    fn when(&self, ready: impl FnOnce(&[u64; 8]) -> bool, then: impl FnOnce(&mut [u64; 8])) -> bool {
        self.with(|d| {
            let go = ready(d);
            if go {
                then(d);
            }
            go
        })
    }
    /// Locks and unlocks, nothing else.
    fn lock_unlock(&self);
}

/// A change count that one side bumps and the other blocks on.
pub trait Notify: Cell {
    /// The number of commits so far (the floor's count wraps after 2^32,
    /// which no run reaches).
    fn version(&self) -> u64;
    /// Commits one change, waking whoever waits for it.
    fn commit(&self);
    /// Blocks until the version differs from `since`; returns it.
    ///
    /// # Panics
    ///
    /// If nothing changes within [`HUNG`] (the other side died).
    fn wait_for_change(&self, since: u64) -> u64;
    /// The second side's start signal (as [`signal_start`]); returns the
    /// version after it, read under the lock, before the first side can
    /// commit.
    fn signal_start(&self) -> u64;
}

/// A lock-protected `[u64; 8]` that processes share by name.
pub trait Cell: Lock + Sized {
    /// Creates the object, data zeroed.
    fn create(name: &str) -> Self;
    /// Attaches to an object another handle created.
    fn attach(name: &str) -> Self;
}

/// A lock-protected byte buffer that processes share by name.
pub trait Buffer: Sized {
    /// Creates the object with `len` zeroed bytes.
    fn create(name: &str, len: usize) -> Self;
    /// Locks, copies `src` (as long as the buffer) in, unlocks.
    fn copy_in(&self, src: &[u8]);
}

impl Lock for TypedCell {
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut [u64; 8]) -> R) -> R {
        TypedCell::with(self, f)
    }
    #[inline]
    fn read<R>(&self, f: impl FnOnce(&[u64; 8]) -> R) -> R {
        TypedCell::read(self, f)
    }
    #[inline]
    fn when(&self, ready: impl FnOnce(&[u64; 8]) -> bool, then: impl FnOnce(&mut [u64; 8])) -> bool {
        TypedCell::when(self, ready, then)
    }
    #[inline]
    fn lock_unlock(&self) {
        TypedCell::lock_unlock(self)
    }
}

impl Cell for TypedCell {
    fn create(name: &str) -> Self {
        TypedCell::create(name)
    }
    fn attach(name: &str) -> Self {
        TypedCell::attach(name)
    }
}

impl Notify for TypedCell {
    #[inline]
    fn version(&self) -> u64 {
        self.0.version()
    }

    /// `*guard += 1` under the lock: a commit, which wakes the waiters.
    #[inline]
    fn commit(&self) {
        self.with(|d| d[COUNTER] += 1);
    }

    /// `wait_for_change_timeout(since, HUNG)`: the blocking wait, with the
    /// deadline every wait of the suite has (two clock reads per call).
    #[inline]
    fn wait_for_change(&self, since: u64) -> u64 {
        self.0
            .wait_for_change_timeout(since, HUNG)
            .unwrap_or_else(|e| panic!("the other side did not commit: {e}"))
    }

    fn signal_start(&self) -> u64 {
        TypedCell::signal_start(self)
    }
}

impl Lock for TxnCell {
    /// A transaction: the first `DerefMut` copies the committed data into the
    /// handle's private buffer, the drop publishes it (a commit).
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut [u64; 8]) -> R) -> R {
        self.0.with(f)
    }
    #[inline]
    fn read<R>(&self, f: impl FnOnce(&[u64; 8]) -> R) -> R {
        self.0.read(f)
    }
    #[inline]
    fn when(&self, ready: impl FnOnce(&[u64; 8]) -> bool, then: impl FnOnce(&mut [u64; 8])) -> bool {
        self.0.when(ready, then)
    }
    #[inline]
    fn lock_unlock(&self) {
        self.0.lock_unlock()
    }
}

impl Cell for TxnCell {
    fn create(name: &str) -> Self {
        TxnCell::create(name)
    }
    fn attach(name: &str) -> Self {
        TxnCell::attach(name)
    }
}

impl Lock for Locked {
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut [u64; 8]) -> R) -> R {
        self.with_cell(f)
    }
    #[inline]
    fn lock_unlock(&self) {
        Locked::lock_unlock(self)
    }
}

impl Cell for Locked {
    fn create(name: &str) -> Self {
        Locked::create(name, 64)
    }
    fn attach(name: &str) -> Self {
        Locked::attach(name)
    }
}

impl Lock for Peer {
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut [u64; 8]) -> R) -> R {
        self.with_cell(f)
    }
    #[inline]
    fn lock_unlock(&self) {
        Peer::lock_unlock(self)
    }
}

impl Cell for Peer {
    fn create(name: &str) -> Self {
        Peer::create(name, 64)
    }
    fn attach(name: &str) -> Self {
        Peer::attach(name)
    }
}

impl Buffer for TypedBuf {
    fn create(name: &str, len: usize) -> Self {
        TypedBuf::create(name, len)
    }
    #[inline]
    fn copy_in(&self, src: &[u8]) {
        TypedBuf::copy_in(self, src)
    }
}

impl Buffer for TxnBuf {
    fn create(name: &str, len: usize) -> Self {
        TxnBuf::create(name, len)
    }
    /// A transaction: lock, `copy_from_slice` through the guard (the first
    /// `DerefMut` copies the committed buffer into the private one), drop
    /// (the private buffer published into the segment with atomic stores).
    #[inline]
    fn copy_in(&self, src: &[u8]) {
        self.0.copy_in(src)
    }
}

impl Buffer for Locked {
    fn create(name: &str, len: usize) -> Self {
        Locked::create(name, len)
    }
    #[inline]
    fn copy_in(&self, src: &[u8]) {
        self.with_bytes(|d| d.copy_from_slice(src))
    }
}

impl Buffer for Peer {
    fn create(name: &str, len: usize) -> Self {
        Peer::create(name, len)
    }
    #[inline]
    fn copy_in(&self, src: &[u8]) {
        self.with_bytes(|d| d.copy_from_slice(src))
    }
}

/// Plain `memcpy` into a shared mapping of the same size, no lock: the
/// bandwidth a locked copy is compared with.
pub struct Memcpy(Segment);

impl Buffer for Memcpy {
    fn create(name: &str, len: usize) -> Self {
        Memcpy(Segment::create(name, len))
    }
    #[inline]
    fn copy_in(&self, src: &[u8]) {
        assert_eq!(src.len(), self.0.len());
        crate::floor::copy_into(&self.0, src);
    }
}

/// A `std::sync::Mutex` in this process: the in-process reference.
pub type StdCell = std::sync::Mutex<[u64; 8]>;

impl Lock for StdCell {
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut [u64; 8]) -> R) -> R {
        let mut g = self.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut g)
    }
    #[inline]
    fn lock_unlock(&self) {
        drop(self.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    }
}

/// Index of the counter that `contended` increments.
pub const COUNTER: usize = 0;
/// Index of the turn flag of `pingpong`.
pub const TURN: usize = 1;
/// Index of the number of turns the second side took in `pingpong`.
pub const TURNS: usize = 2;
/// Index of the number of runs the second side has started.
pub const STARTED: usize = 3;
/// Index of the number of runs the first side has stopped (the writer of
/// `snapshot_64B_with_writer` stops when it equals [`STARTED`]).
pub const STOPPED: usize = 4;
/// Indexes the writer of `snapshot_64B_with_writer` sets to [`COUNTER`]'s
/// value in every commit: a snapshot that mixed two commits would show it.
pub const COPIES: [usize; 3] = [5, 6, 7];

/// What the holding child of `txn_snapshot_64B_writer_held` writes through
/// its guard and never commits: a snapshot that showed it would have read
/// the writer's uncommitted data.
pub const HELD: [u64; 8] = [u64::MAX; 8];

/// How long a side may wait for the other before the run is declared hung.
pub const HUNG: Duration = Duration::from_secs(30);

/// The second side's start signal: it counts its runs in [`STARTED`], so
/// the first side can start its clock when both sides run, not when the
/// scheduler gets around to waking the second one.
pub fn signal_start<L: Lock>(l: &L) {
    l.with(|d| d[STARTED] += 1);
}

/// The first side waits for the second side's `run`th start signal. It
/// only reads (no commit), so the version the second side saw under the
/// lock when it signalled is still the version when this returns.
pub fn await_start<L: Lock>(l: &L, run: u64) {
    poll(|| l.read(|d| d[STARTED] >= run));
}

/// `n` increments of the shared counter, each under the lock.
#[inline(never)]
pub fn increment<L: Lock>(l: &L, n: u64) {
    for _ in 0..n {
        l.with(|d| d[COUNTER] += 1);
    }
}

/// Side 0 of `contended`: `n` increments, then wait until the other side's
/// `n` are in too (the counter starts at 0 for every run).
#[inline(never)]
pub fn increment_both<L: Lock>(l: &L, n: u64) {
    increment(l, n);
    wait_for(l, |d| d[COUNTER] >= 2 * n, |_| ());
}

/// `n` turns of side `me` (0 or 1) of the ping-pong: wait for the turn flag
/// to equal `me`, hand the turn to the other side (side 1 also counts its
/// turns), all under the lock. Side 0 then waits until side 1 has taken its
/// last turn, so `n` round trips are complete when it returns.
///
/// # Panics
///
/// If a turn does not come within 30 s (the other side died).
#[inline(never)]
pub fn pingpong<L: Lock>(l: &L, n: u64, me: u64) {
    let next = 1 - me;
    for _ in 0..n {
        wait_for(
            l,
            |d| d[TURN] == me,
            |d| {
                d[TURN] = next;
                if me == 1 {
                    d[TURNS] += 1;
                }
            },
        );
    }
    if me == 0 {
        wait_for(l, |d| d[TURN] == 0, |_| ());
    }
}

/// Waits until `ready` holds, then runs `then` under the same lock (see
/// [`Lock::when`]: a check that fails writes nothing). Spins
/// (the sides are pinned to different CPUs, so the other side runs while
/// this one spins); after about 4096 tries (well over 100 µs) it yields the
/// CPU on every try, so that a side that waits long leaves its CPU to others.
///
/// # Panics
///
/// If `ready` does not hold within 30 s (the other side died).
#[inline]
fn wait_for<L: Lock>(l: &L, ready: impl Fn(&[u64; 8]) -> bool, then: impl Fn(&mut [u64; 8])) {
    poll(|| l.when(&ready, &then));
}

/// Calls `done` until it returns `true`, spinning, then yielding, as
/// [`wait_for`] describes.
///
/// # Panics
///
/// If that takes 30 s.
#[inline]
fn poll(mut done: impl FnMut() -> bool) {
    let mut tries = 0u32;
    let mut since: Option<Instant> = None;
    while !done() {
        tries += 1;
        if tries < 4096 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
            if tries % 1024 == 0 {
                let start = *since.get_or_insert_with(Instant::now);
                assert!(start.elapsed() < HUNG, "the other side did not move in {HUNG:?}");
            }
        }
    }
}

/// The second side of `snapshot_64B_with_writer`: commits continuously
/// (each commit stores one more in [`COUNTER`] and its [`COPIES`]) until the
/// first side has stopped as many runs as this side started.
#[inline(never)]
pub fn write_until_stopped<L: Lock>(l: &L) {
    while l.with(|d| {
        if d[STOPPED] >= d[STARTED] {
            return false;
        }
        let k = d[COUNTER] + 1;
        d[COUNTER] = k;
        for i in COPIES {
            d[i] = k;
        }
        true
    }) {}
}

/// The first side of `snapshot_64B_with_writer`: `n` copies, each checked
/// for consistency (a mix of two commits would break the equality of
/// [`COUNTER`] and its copies), then the stop signal.
#[inline(never)]
pub fn copies_then_stop<L: Lock>(l: &L, n: u64, copy: impl Fn(&L) -> [u64; 8]) {
    for _ in 0..n {
        let d = std::hint::black_box(copy(l));
        assert!(COPIES.iter().all(|&i| d[i] == d[COUNTER]), "a torn copy: {d:?}");
    }
    l.with(|d| d[STOPPED] += 1);
}

/// `n` snapshots of a transactional segment whose committed word 0 is
/// `committed`, each checked (one word: the check stays small next to the
/// copy) to be the committed data, never a held writer's [`HELD`].
#[inline(never)]
pub fn txn_snapshots(c: &TxnCell, n: u64, committed: u64) {
    for _ in 0..n {
        let d = std::hint::black_box(c.0.snapshot());
        assert_eq!(d[0], committed, "a snapshot that is not the committed data");
    }
}

/// `n` round trips of `wait_pingpong`, side `me` (0 or 1), from version
/// `base` (the version when both sides run, which no one else changes): side
/// 0 commits and waits for side 1's commit; side 1 waits for side 0's and
/// commits. A round trip is two commits and two wake-ups.
///
/// # Panics
///
/// If a change other than the other side's one commit comes, or none within
/// 30 s.
#[inline(never)]
pub fn wait_pingpong<N: Notify>(c: &N, n: u64, base: u64, me: u64) {
    let mut v = base;
    for _ in 0..n {
        if me == 0 {
            c.commit();
            v = c.wait_for_change(v + 1);
        } else {
            let ping = c.wait_for_change(v);
            assert_eq!(ping, v + 1, "a change that is not the other side's commit");
            c.commit();
            v = ping + 1;
        }
    }
    assert_eq!(v, base + 2 * n, "lost or extra commits");
}

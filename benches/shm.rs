//! The benchmark suite: typed-shm against the floor (the same work written
//! directly against libc) and against its peers (`shared_memory` +
//! `raw_sync`, and an in-process `std::sync::Mutex`), all in the same run.
//!
//! Run it with `cargo bench --bench shm`; `scripts/bench-report` runs it in
//! a short mode and turns criterion's estimates into a table and a chart.
//!
//! Benchmark ids are `<benchmark>/<subject>`; the subjects are `typed_shm`,
//! `floor`, `shared_memory+raw_sync`, `std_mutex` and, for `big_copy_*`,
//! `memcpy` (plain `memcpy` into a shared mapping of the same size, no lock),
//! for `lifecycle` and `attach_detach`, `floor_protocol` (the floor plus
//! the system calls of the crash-safe lifetime protocol the design requires),
//! for `lock_unlock`, `small_write` and `txn_commit_64B`, `floor_contract`
//! (the floor plus what the API contract makes every lock and unlock, or
//! transactional commit, do),
//! for `snapshot_64B*`, `lock_copy` (typed-shm's copy under the lock, the
//! way to read without snapshots), for `txn_commit_*`, `typed_shm_plain`
//! (the same write in a segment that is not transactional, for context), and
//! for `txn_snapshot_64B_writer_held`, `no_writer` (the same snapshot while
//! nobody holds the lock), the baseline of that benchmark. In the `txn_*`
//! groups, `typed_shm` is a transactional segment.
//!
//! Each benchmark's floor is written by hand in this directory: `floor.rs`
//! (the lock), `contract.rs` (the lock and the contract's per-lock work),
//! `protocol.rs` (the lock and the lifetime protocol),
//! `seqlock.rs` (the snapshot) and `futex.rs` (the change notification).

#[path = "shm/child.rs"]
mod child;
#[path = "shm/contract.rs"]
mod contract;
#[path = "shm/floor.rs"]
mod floor;
#[path = "shm/futex.rs"]
mod futex;
#[path = "shm/instructions.rs"]
mod instructions;
#[path = "shm/names.rs"]
mod names;
#[path = "shm/peer.rs"]
mod peer;
#[path = "shm/pin.rs"]
mod pin;
#[path = "shm/protocol.rs"]
mod protocol;
#[path = "shm/seqlock.rs"]
mod seqlock;
#[path = "shm/subject.rs"]
mod subject;
#[path = "shm/typed.rs"]
mod typed;

use std::hint::black_box;
use std::time::Instant;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};

use crate::child::{Role, Subject, Worker};
use crate::contract::{Contract, TxnContract};
use crate::floor::Locked;
use crate::futex::FutexWord;
use crate::peer::Peer;
use crate::protocol::Protocol;
use crate::seqlock::SeqLocked;
use crate::subject::{Buffer, COUNTER, Cell, Lock, Memcpy, Notify, STARTED, STOPPED, StdCell, TURNS};
use crate::typed::{TxnBuf, TxnCell, TypedBuf, TypedCell};

type Group<'a> = BenchmarkGroup<'a, WallTime>;

const TYPED: &str = "typed_shm";
const FLOOR: &str = "floor";
const PEER: &str = "shared_memory+raw_sync";
const STD: &str = "std_mutex";
const MEMCPY: &str = "memcpy";
const PROTOCOL: &str = "floor_protocol";
const CONTRACT: &str = "floor_contract";
const LOCK_COPY: &str = "lock_copy";
const PLAIN: &str = "typed_shm_plain";
const NO_WRITER: &str = "no_writer";

fn main() {
    if child::run_if_child() || instructions::run_if_asked() {
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    lock_unlock(&mut c);
    small_write(&mut c);
    snapshot_64b(&mut c);
    snapshot_64b_with_writer(&mut c);
    big_copy(&mut c);
    txn_commit_64b(&mut c);
    txn_commit_1mib(&mut c);
    txn_snapshot_64b_writer_held(&mut c);
    contended(&mut c);
    pingpong(&mut c);
    wait_pingpong(&mut c);
    lifecycle(&mut c);
    attach_detach(&mut c);
    c.final_summary();
    names::check_clean();
}

/// The environment variable that reverses the order of the subjects in
/// every group (any value). Noise on a shared machine drifts over seconds;
/// running a second round in the other order keeps the drift from always
/// favouring the subject measured first.
const REVERSE: &str = "TYPED_SHM_BENCH_REVERSE";

/// Runs one benchmark per subject, in order or, with [`REVERSE`] set, in
/// reverse order.
fn in_order<'a>(g: &mut Group<'a>, subjects: &mut [&mut dyn FnMut(&mut Group<'a>)]) {
    if std::env::var_os(REVERSE).is_some() {
        subjects.reverse();
    }
    for subject in subjects {
        subject(g);
    }
}

/// Benchmarks `body` on one lazily created cell that lives for all of the
/// benchmark's samples.
fn on_cell<C: Cell>(g: &mut Group, id: &str, code: &str, body: impl Fn(&C)) {
    let name = names::name(code);
    let mut cell: Option<C> = None;
    g.bench_function(id, |b| {
        let cell = cell.get_or_insert_with(|| C::create(&name));
        b.iter(|| body(cell));
    });
}

fn lock_unlock(c: &mut Criterion) {
    let mut g = c.benchmark_group("lock_unlock");
    let m = StdCell::new([0; 8]);
    in_order(
        &mut g,
        &mut [
            &mut |g| on_cell::<TypedCell>(g, TYPED, "lu-t", |s| s.lock_unlock()),
            &mut |g| on_cell::<Locked>(g, FLOOR, "lu-f", |s| s.lock_unlock()),
            &mut |g| on_cell::<Contract>(g, CONTRACT, "lu-c", |s| s.lock_unlock()),
            &mut |g| on_cell::<Peer>(g, PEER, "lu-p", |s| s.lock_unlock()),
            &mut |g| {
                g.bench_function(STD, |b| b.iter(|| m.lock_unlock()));
            },
        ],
    );
    g.finish();
}

/// The 64-byte struct `small_write` and `txn_commit_64B` store.
const STRUCT: [u64; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

/// Locks, stores [`STRUCT`] (a local value: `black_box` keeps it from being
/// folded into constant stores) into the data, all 8 words, unlocks.
///
/// The same inlining for every subject: left to itself the compiler inlines
/// some subjects' `store` into the timing loop and calls others.
#[inline(always)]
fn store(l: &impl Lock) {
    let v = std::hint::black_box(STRUCT);
    l.with(|d| *d = v);
}

fn small_write(c: &mut Criterion) {
    // typed-shm's subject pays the sequence word: its store goes through
    // `DerefMut`, so it is a commit; a guard that is only dropped is not.
    {
        let cell = TypedCell::create(&names::name("sw-v"));
        store(&cell);
        cell.lock_unlock();
        assert_eq!(cell.0.version(), 1, "small_write commits, lock_unlock does not");
    }
    let mut g = c.benchmark_group("small_write");
    g.throughput(Throughput::Bytes(64));
    let m = StdCell::new([0; 8]);
    in_order(
        &mut g,
        &mut [
            &mut |g| on_cell::<TypedCell>(g, TYPED, "sw-t", store),
            &mut |g| on_cell::<Locked>(g, FLOOR, "sw-f", store),
            &mut |g| on_cell::<Contract>(g, CONTRACT, "sw-c", store),
            &mut |g| on_cell::<Peer>(g, PEER, "sw-p", store),
            &mut |g| {
                g.bench_function(STD, |b| b.iter(|| store(&m)));
            },
        ],
    );
    g.finish();
}

/// A consistent 64-byte copy of a segment nobody writes: typed-shm's
/// `snapshot()` against the hand-written seqlock read (`seqlock.rs`), and
/// typed-shm's copy under the lock, which a snapshot must beat.
fn snapshot_64b(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot_64B");
    g.throughput(Throughput::Bytes(64));
    in_order(
        &mut g,
        &mut [
            &mut |g| {
                on_cell::<TypedCell>(g, TYPED, "sn-t", |s| {
                    black_box(s.snapshot());
                })
            },
            &mut |g| {
                on_cell::<SeqLocked>(g, FLOOR, "sn-f", |s| {
                    black_box(s.snapshot());
                })
            },
            &mut |g| {
                on_cell::<TypedCell>(g, LOCK_COPY, "sn-l", |s| {
                    black_box(s.lock_copy());
                })
            },
        ],
    );
    g.finish();
}

/// The same copies while a second process, pinned to the other CPU, commits
/// as fast as it can (lock, 4 words written, unlock; the floor's writer
/// keeps the seqlock's sequence word as typed-shm's guard does). Every copy
/// is checked for consistency. The copies retry while a write is in
/// progress: typed-shm spins, then yields, then sleeps; the floor spins.
fn snapshot_64b_with_writer(c: &mut Criterion) {
    fn check<L: Lock>(l: &L, _: u64) {
        let stopped = l.read(|d| d[STOPPED] == d[STARTED]);
        assert!(stopped, "the writer stops when told to");
    }
    let mut g = c.benchmark_group("snapshot_64B_with_writer");
    g.throughput(Throughput::Bytes(64));
    let w = Role::Writer;
    in_order(
        &mut g,
        &mut [
            &mut |g| {
                let side = |c: &TypedCell, n| subject::copies_then_stop(c, n, TypedCell::snapshot);
                two_processes(g, TYPED, "snw-t", w, Subject::Typed, side, check);
            },
            &mut |g| {
                let side = |c: &SeqLocked, n| subject::copies_then_stop(c, n, SeqLocked::snapshot);
                two_processes(g, FLOOR, "snw-f", w, Subject::SeqFloor, side, check);
            },
            &mut |g| {
                let side = |c: &TypedCell, n| subject::copies_then_stop(c, n, TypedCell::lock_copy);
                two_processes(g, LOCK_COPY, "snw-l", w, Subject::Typed, side, check);
            },
        ],
    );
    g.finish();
}

fn big_copy(c: &mut Criterion) {
    for (label, code, len) in [
        ("4KiB", "b4k", 4 << 10),
        ("1MiB", "b1m", 1 << 20),
        ("64MiB", "b64m", 64 << 20),
    ] {
        let src: Vec<u8> = (0..len).map(|i: usize| (i % 251) as u8).collect();
        let mut g = c.benchmark_group(format!("big_copy_{label}"));
        g.throughput(Throughput::Bytes(len as u64));
        if len >= 64 << 20 {
            g.sample_size(10).sampling_mode(SamplingMode::Flat);
        }
        in_order(
            &mut g,
            &mut [
                &mut |g| on_buffer::<TypedBuf>(g, TYPED, &format!("{code}-t"), &src),
                &mut |g| on_buffer::<Locked>(g, FLOOR, &format!("{code}-f"), &src),
                &mut |g| on_buffer::<Memcpy>(g, MEMCPY, &format!("{code}-m"), &src),
                &mut |g| on_buffer::<Peer>(g, PEER, &format!("{code}-p"), &src),
                &mut |g| {
                    let m = std::sync::Mutex::new(vec![0u8; len]);
                    g.bench_function(STD, |b| {
                        b.iter(|| {
                            m.lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .copy_from_slice(&src);
                        });
                    });
                },
            ],
        );
        g.finish();
    }
}

/// A commit of 64 bytes in a transactional segment: lock, all 8 words
/// stored through `DerefMut` (the first `DerefMut` copies the committed
/// data into the handle's private buffer; the store goes there), drop (the
/// private copy published into the other buffer of the segment with atomic
/// stores, the commit count and sequence word advanced, unlock).
///
/// The floor (`Locked::with_cell`, floor.rs): the robust, process-shared
/// pthread mutex, a copy of the local 64-byte value into the shared page,
/// unlock. That is all that a 64-byte write visible to other processes under
/// a crash-safe lock needs, and what the non-transactional `small_write`
/// does; the transaction's private copy and publish come on top of it.
/// `typed_shm_plain` is the same store in a segment that is not
/// transactional (`small_write`'s subject), for context.
fn txn_commit_64b(c: &mut Criterion) {
    // typed-shm's subject commits (the store goes through `DerefMut`), and
    // the commit is what a snapshot then sees.
    {
        let cell = TxnCell::create(&names::name("tc-v"));
        store(&cell);
        cell.lock_unlock();
        assert_eq!(
            cell.0.0.version(),
            1,
            "a transactional store commits, lock_unlock does not"
        );
        assert_eq!(cell.0.snapshot(), STRUCT, "the commit is published");
    }
    let mut g = c.benchmark_group("txn_commit_64B");
    g.throughput(Throughput::Bytes(64));
    in_order(
        &mut g,
        &mut [
            &mut |g| on_cell::<TxnCell>(g, TYPED, "tc-t", store),
            &mut |g| on_cell::<Locked>(g, FLOOR, "tc-f", store),
            &mut |g| on_cell::<TxnContract>(g, CONTRACT, "tc-c", store),
            &mut |g| on_cell::<TypedCell>(g, PLAIN, "tc-p", store),
        ],
    );
    g.finish();
}

/// A commit of 1 MiB in a transactional `SharedMemory<[u8]>`: lock,
/// `copy_from_slice` of a 1 MiB source through the guard, drop. The commit
/// moves the data twice: source → private buffer (the caller's copy; the
/// first `DerefMut` copies nothing in, because the same handle made the last
/// commit and its private buffer holds it), private buffer → the segment's
/// other buffer (the publish, with 8-byte atomic stores).
///
/// The floor is plain `memcpy` of the source into a shared mapping of the
/// same size, no lock (`Memcpy`, as in `big_copy`): any write of 1 MiB that
/// other processes can see moves the bytes into shared memory at least once,
/// and nothing moves them faster. Also measured: the libc floor with its lock
/// (`floor`: lock, memcpy, unlock) and the same copy in a segment that is not
/// transactional (`typed_shm_plain`).
fn txn_commit_1mib(c: &mut Criterion) {
    let len = 1 << 20;
    let src: Vec<u8> = (0..len).map(|i: usize| (i % 251) as u8).collect();
    {
        let buf = TxnBuf::create(&names::name("tm-v"), len);
        buf.copy_in(&src);
        assert_eq!(buf.0.0.version(), 1, "one commit");
        assert!(
            buf.0.0.snapshot().expect("not poisoned") == src,
            "the commit is published"
        );
    }
    let mut g = c.benchmark_group("txn_commit_1MiB");
    g.throughput(Throughput::Bytes(len as u64));
    in_order(
        &mut g,
        &mut [
            &mut |g| on_buffer::<TxnBuf>(g, TYPED, "tm-t", &src),
            &mut |g| on_buffer::<Memcpy>(g, MEMCPY, "tm-m", &src),
            &mut |g| on_buffer::<Locked>(g, FLOOR, "tm-f", &src),
            &mut |g| on_buffer::<TypedBuf>(g, PLAIN, "tm-p", &src),
        ],
    );
    g.finish();
}

/// `snapshot()` of a transactional `[u64; 8]` while a second process holds
/// its write guard, written (its private copy) and not dropped, for the whole
/// measurement: a transactional snapshot copies the committed buffer and
/// never waits for a writer, so the held lock should cost it nothing.
///
/// The baseline (`no_writer`) is the same `snapshot()` of the same kind of
/// segment, the same checks, the same CPU, with nobody holding the lock:
/// what the snapshot costs when there is no writer to wait for, so the ratio
/// is exactly what a held writer adds. Every copy is checked to be the
/// committed data, never the holder's.
fn txn_snapshot_64b_writer_held(c: &mut Criterion) {
    let mut g = c.benchmark_group("txn_snapshot_64B_writer_held");
    g.throughput(Throughput::Bytes(64));
    in_order(
        &mut g,
        &mut [
            &mut |g| {
                held_writer(g, TYPED, "th-t", true);
            },
            &mut |g| {
                held_writer(g, NO_WRITER, "th-n", false);
            },
        ],
    );
    g.finish();
}

/// One subject of `txn_snapshot_64B_writer_held`: a transactional cell
/// holding [`STRUCT`] (one commit), this thread pinned to the first CPU and,
/// if `hold`, a child on the second that holds a written guard during every
/// timed run (checked: `try_lock` finds the lock taken).
fn held_writer(g: &mut Group, id: &str, code: &str, hold: bool) {
    let name = names::name(code);
    // The worker first, so it is dropped (detached) before the cell; the pin
    // last, so this thread runs anywhere again afterwards.
    let mut state: Option<(Option<Worker>, TxnCell, Option<pin::Pinned>)> = None;
    g.bench_function(id, |b| {
        let (worker, cell, _) = state.get_or_insert_with(|| {
            let cell = TxnCell::create(&name);
            store(&cell);
            let cpus = pin::two_cpus();
            let worker = hold.then(|| Worker::spawn(Role::Hold, Subject::Txn, &name, cpus.map(|c| c.1)));
            (worker, cell, cpus.map(|c| pin::pin(c.0)))
        });
        b.iter_custom(|n| {
            if let Some(w) = worker.as_mut() {
                w.start(n);
                w.await_held();
                let taken = matches!(cell.0.0.try_lock(), Err(typed_shm::TryLockError::WouldBlock));
                assert!(taken, "the child holds the lock");
            }
            let t = Instant::now();
            subject::txn_snapshots(cell, n, STRUCT[0]);
            let elapsed = t.elapsed();
            if let Some(w) = worker.as_mut() {
                w.release();
                w.finish();
            }
            elapsed
        });
    });
    if let Some((_, cell, _)) = &state {
        assert_eq!(cell.0.0.version(), 1, "the holder committed nothing");
        assert_eq!(cell.0.snapshot(), STRUCT, "the committed data is unchanged");
    }
}

/// Benchmarks copying `src` into one lazily created buffer of its length.
fn on_buffer<B: Buffer>(g: &mut Group, id: &str, code: &str, src: &[u8]) {
    let name = names::name(code);
    let mut buf: Option<B> = None;
    g.bench_function(id, |b| {
        let buf = buf.get_or_insert_with(|| B::create(&name, src.len()));
        b.iter(|| buf.copy_in(src));
    });
}

/// Benchmarks a two-process run: `side` does this side's `n` iterations
/// while the child does its own, and returns only when both are done (it
/// waits for the other side through the shared data); `check` verifies the
/// result afterwards. The clock starts when the child signals that it runs
/// (through the shared data, not the pipe), so neither process start-up nor
/// wake-up latency is measured.
fn two_processes<C: Cell>(
    g: &mut Group,
    id: &str,
    code: &str,
    role: Role,
    subject: Subject,
    side: impl Fn(&C, u64),
    check: impl Fn(&C, u64),
) {
    two_processes_on(g, id, code, role, subject, Cpus::Two, side, check);
}

/// Where the two sides of a two-process benchmark run.
#[derive(Clone, Copy)]
enum Cpus {
    /// Each on a CPU of its own (if the machine has two): the sides run at
    /// the same time.
    Two,
    /// Both on the first CPU: one side runs while the other is blocked or
    /// waits for the CPU, so every hand-over that waits goes through the
    /// scheduler.
    One,
}

/// [`two_processes`], with the sides on the CPUs `cpus` says.
#[allow(clippy::too_many_arguments)]
fn two_processes_on<C: Cell>(
    g: &mut Group,
    id: &str,
    code: &str,
    role: Role,
    subject: Subject,
    cpus: Cpus,
    side: impl Fn(&C, u64),
    check: impl Fn(&C, u64),
) {
    let name = names::name(code);
    // The worker comes first, so it is dropped (detached) before the cell;
    // the pin last, so this thread runs anywhere again afterwards.
    let mut state: Option<(Worker, C, Option<pin::Pinned>)> = None;
    let mut runs = 0;
    g.bench_function(id, |b| {
        let (worker, cell, _) = state.get_or_insert_with(|| {
            let cell = C::create(&name);
            let cpus = pin::two_cpus().map(|(first, second)| match cpus {
                Cpus::Two => (first, second),
                Cpus::One => (first, first),
            });
            let worker = Worker::spawn(role, subject, &name, cpus.map(|c| c.1));
            (worker, cell, cpus.map(|c| pin::pin(c.0)))
        });
        b.iter_custom(|n| {
            worker.start(n);
            runs += 1;
            subject::await_start(cell, runs);
            let t = Instant::now();
            side(cell, n);
            let elapsed = t.elapsed();
            worker.finish();
            check(cell, n);
            elapsed
        });
    });
}

/// Runs `side` in this thread and `other` in a second thread: the in-process
/// reference for the two-process benchmarks.
fn two_threads(
    g: &mut Group,
    side: impl Fn(&StdCell, u64) + Sync,
    other: impl Fn(&StdCell, u64) + Sync,
    check: impl Fn(&StdCell, u64),
) {
    let m = StdCell::new([0; 8]);
    let cpus = pin::two_cpus();
    let _pinned = cpus.map(|c| pin::pin(c.0));
    let mut runs = 0;
    g.bench_function(STD, |b| {
        b.iter_custom(|n| {
            runs += 1;
            let elapsed = std::thread::scope(|s| {
                s.spawn(|| {
                    let _pinned = cpus.map(|c| pin::pin(c.1));
                    subject::signal_start(&m);
                    other(&m, n);
                });
                subject::await_start(&m, runs);
                let t = Instant::now();
                side(&m, n);
                t.elapsed()
            });
            check(&m, n);
            elapsed
        });
    });
}

fn contended(c: &mut Criterion) {
    fn side(l: &impl Lock, n: u64) {
        subject::increment_both(l, n);
    }
    fn check(l: &impl Lock, n: u64) {
        // Both sides are done: the counter, zero after the previous check,
        // is exactly 2n.
        let total = l.with(|d| std::mem::take(&mut d[COUNTER]));
        assert_eq!(total, 2 * n, "lost or extra increments");
    }
    let mut g = c.benchmark_group("contended");
    in_order(
        &mut g,
        &mut [
            &mut |g| {
                let s = Subject::Typed;
                two_processes::<TypedCell>(g, TYPED, "ct-t", Role::Contended, s, side, check);
            },
            &mut |g| {
                let s = Subject::Floor;
                two_processes::<Locked>(g, FLOOR, "ct-f", Role::Contended, s, side, check);
            },
            &mut |g| {
                let s = Subject::Peer;
                two_processes::<Peer>(g, PEER, "ct-p", Role::Contended, s, side, check);
            },
            &mut |g| two_threads(g, side, subject::increment, check),
        ],
    );
    g.finish();
}

/// Two processes on two CPUs hand a turn to each other: each polls under the
/// lock until the turn is its own, then hands it over (`subject::pingpong`).
/// One iteration is a round trip. typed-shm reads the turn through `Deref`,
/// so a poll that finds the turn not its own commits nothing.
fn pingpong(c: &mut Criterion) {
    fn side(l: &impl Lock, n: u64) {
        subject::pingpong(l, n, 0);
    }
    fn check(l: &impl Lock, n: u64) {
        let turns = l.with(|d| std::mem::take(&mut d[TURNS]));
        assert_eq!(turns, n, "the other side took a wrong number of turns");
    }
    let mut g = c.benchmark_group("pingpong");
    in_order(
        &mut g,
        &mut [
            &mut |g| {
                let s = Subject::Typed;
                two_processes::<TypedCell>(g, TYPED, "pp-t", Role::Pingpong, s, side, check);
            },
            &mut |g| {
                let s = Subject::Floor;
                two_processes::<Locked>(g, FLOOR, "pp-f", Role::Pingpong, s, side, check);
            },
            &mut |g| {
                let s = Subject::Peer;
                two_processes::<Peer>(g, PEER, "pp-p", Role::Pingpong, s, side, check);
            },
            &mut |g| two_threads(g, side, |m, n| subject::pingpong(m, n, 1), check),
        ],
    );
    g.finish();
}

/// Change notification between two processes: each side waits until the
/// other commits, then commits. One iteration is a round trip: two commits
/// and two waits. typed-shm (`wait_for_change`, then `*guard += 1` under the
/// lock) against a raw shared-futex ping-pong of the same protocol
/// (`futex.rs`).
///
/// `wait_pingpong` pins the sides to two CPUs. A side whose wait starts
/// after the other's commit returns without blocking, and a commit wakes
/// only a side that blocked, so a run measures hand-overs that never block,
/// or blocked ones (a wake-up through the kernel), or a mix, as the timing
/// falls. `wait_pingpong_1cpu` pins both to one CPU: a side that waits
/// blocks (the other cannot commit while it runs), so every round trip is
/// two blocked waits, two wake-ups and two switches of the CPU.
fn wait_pingpong(c: &mut Criterion) {
    wait_pingpong_on(c, "wait_pingpong", Cpus::Two);
    wait_pingpong_on(c, "wait_pingpong_1cpu", Cpus::One);
}

/// The `wait_pingpong` group `group`, its sides on `cpus`.
fn wait_pingpong_on(c: &mut Criterion, group: &str, cpus: Cpus) {
    fn side<N: Notify>(c: &N, n: u64) {
        // Both sides run and nobody has committed since the second side's
        // start signal: this is the version it starts from too.
        let base = c.version();
        subject::wait_pingpong(c, n, base, 0);
    }
    fn check<N: Notify>(_: &N, _: u64) {
        // `wait_pingpong` itself checks that each commit was the other
        // side's, and that 2n were made.
    }
    let mut g = c.benchmark_group(group);
    let w = Role::WaitPingpong;
    in_order(
        &mut g,
        &mut [
            &mut |g| {
                let s = Subject::Typed;
                two_processes_on::<TypedCell>(g, TYPED, "wp-t", w, s, cpus, side, check);
            },
            &mut |g| {
                let s = Subject::FutexFloor;
                two_processes_on::<FutexWord>(g, FLOOR, "wp-f", w, s, cpus, side, check);
            },
        ],
    );
    g.finish();
}

fn lifecycle(c: &mut Criterion) {
    fn one<C: Cell>(g: &mut Group, id: &str, code: &str) {
        let name = names::name(code);
        g.bench_function(id, |b| {
            b.iter(|| {
                // `create` fails if the previous iteration left the object.
                let first = C::create(&name);
                let second = C::attach(&name);
                drop(second);
                drop(first);
            });
        });
        names::assert_gone(&name);
    }
    let mut g = c.benchmark_group("lifecycle");
    in_order(
        &mut g,
        &mut [
            &mut |g| one::<TypedCell>(g, TYPED, "lc-t"),
            &mut |g| one::<Locked>(g, FLOOR, "lc-f"),
            &mut |g| one::<Peer>(g, PEER, "lc-p"),
            &mut |g| one::<Protocol>(g, PROTOCOL, "lc-o"),
        ],
    );
    g.finish();
}

fn attach_detach(c: &mut Criterion) {
    fn one<C: Cell>(g: &mut Group, id: &str, code: &str) {
        let name = names::name(code);
        let mut owner: Option<C> = None;
        g.bench_function(id, |b| {
            owner.get_or_insert_with(|| C::create(&name));
            b.iter(|| drop(C::attach(&name)));
        });
    }
    let mut g = c.benchmark_group("attach_detach");
    in_order(
        &mut g,
        &mut [
            &mut |g| one::<TypedCell>(g, TYPED, "ad-t"),
            &mut |g| one::<Locked>(g, FLOOR, "ad-f"),
            &mut |g| one::<Peer>(g, PEER, "ad-p"),
            &mut |g| one::<Protocol>(g, PROTOCOL, "ad-o"),
        ],
    );
    g.finish();
}

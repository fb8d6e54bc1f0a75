//! Loops for counting instructions with callgrind (`scripts/instr-count`).
//!
//! With `TYPED_SHM_INSTR=<benchmark>/<subject>` (and
//! `TYPED_SHM_INSTR_ROUNDS=<n>`) the benchmark binary creates that
//! benchmark's object, runs the subject's body `n` times, and exits instead
//! of benchmarking. The script runs each workload for two round counts: the
//! difference of the two totals, divided by the difference of the counts, is
//! the instructions of one iteration, with every set-up cost cancelled out.
//! Unlike time on a shared machine, the count is the same from run to run.

use std::hint::black_box;

use crate::contract::{Contract, TxnContract};
use crate::floor::Locked;
use crate::names;
use crate::seqlock::SeqLocked;
use crate::subject::Cell;
use crate::typed::{TxnCell, TypedCell};

/// Selects the workload.
const WORKLOAD: &str = "TYPED_SHM_INSTR";
/// How many times to run it.
const ROUNDS: &str = "TYPED_SHM_INSTR_ROUNDS";

/// The workloads, as `<benchmark>/<subject>` (the ids of the benchmarks
/// whose bodies they run).
pub const WORKLOADS: [&str; 10] = [
    "lock_unlock/typed_shm",
    "lock_unlock/floor",
    "lock_unlock/floor_contract",
    "small_write/typed_shm",
    "small_write/floor",
    "small_write/floor_contract",
    "snapshot_64B/typed_shm",
    "snapshot_64B/floor",
    "txn_commit_64B/typed_shm",
    "txn_commit_64B/floor_contract",
];

/// Runs the workload the environment names, if it names one; returns
/// whether it did.
///
/// # Panics
///
/// On an unknown workload or a round count that is not a number.
pub fn run_if_asked() -> bool {
    let Ok(workload) = std::env::var(WORKLOAD) else {
        return false;
    };
    let rounds: u64 = std::env::var(ROUNDS).map_or(100_000, |v| v.parse().expect("a round count"));
    match workload.as_str() {
        "lock_unlock/typed_shm" => run::<TypedCell>(rounds, |c| c.lock_unlock()),
        "lock_unlock/floor" => run::<Locked>(rounds, |c| c.lock_unlock()),
        "lock_unlock/floor_contract" => run::<Contract>(rounds, crate::subject::Lock::lock_unlock),
        "small_write/typed_shm" => run::<TypedCell>(rounds, crate::store),
        "small_write/floor" => run::<Locked>(rounds, crate::store),
        "small_write/floor_contract" => run::<Contract>(rounds, crate::store),
        "snapshot_64B/typed_shm" => run::<TypedCell>(rounds, |c| {
            black_box(c.snapshot());
        }),
        "snapshot_64B/floor" => run::<SeqLocked>(rounds, |c| {
            black_box(c.snapshot());
        }),
        "txn_commit_64B/typed_shm" => run::<TxnCell>(rounds, crate::store),
        "txn_commit_64B/floor_contract" => run::<TxnContract>(rounds, crate::store),
        other => panic!("unknown workload {other:?}; known: {WORKLOADS:?}"),
    }
    names::check_clean();
    true
}

/// Creates the object and runs `body` on it `rounds` times, in a loop of its
/// own that the compiler cannot fold away.
#[inline(never)]
fn run<C: Cell>(rounds: u64, body: impl Fn(&C)) {
    let cell = C::create(&names::name("instr"));
    for _ in 0..rounds {
        body(black_box(&cell));
    }
}

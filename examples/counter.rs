//! N processes increment one shared counter M times each, under the segment's
//! lock; the parent checks the total and that the segment is gone afterwards.
//!
//! ```text
//! cargo run --release --example counter            # 4 processes × 100000
//! cargo run --release --example counter -- 8 1000  # 8 processes × 1000
//! ```

use std::process::{Command, ExitCode};
use std::time::Instant;

use typed_shm::{SharedMemory, ShmSafe};

/// What the processes share.
#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
struct Counter {
    /// Incremented by every worker.
    value: u64,
    /// Workers that finished.
    done: u64,
}

fn worker(key: &str, increments: u64) -> Result<(), typed_shm::Error> {
    let shm = SharedMemory::<Counter>::attach(key)?;
    for _ in 0..increments {
        let mut c = shm.lock().expect("no worker died while holding the lock");
        c.value += 1;
    }
    shm.lock().expect("not poisoned").done += 1;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        let increments = args[3].parse().expect("increments");
        return match worker(&args[2], increments) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("worker: {e}");
                ExitCode::FAILURE
            }
        };
    }

    let processes: u64 = args.get(1).map_or(4, |a| a.parse().expect("number of processes"));
    let increments: u64 = args
        .get(2)
        .map_or(100_000, |a| a.parse().expect("increments per process"));
    let key = format!("counter-example-{}", std::process::id());

    let shm = match SharedMemory::<Counter>::create(&key, Counter { value: 0, done: 0 }) {
        Ok(shm) => shm,
        Err(e) => {
            eprintln!("cannot create the segment: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "segment {:?} ({}), {} bytes; starting {processes} processes × {increments} increments",
        shm.key(),
        shm.native_key(),
        shm.size()
    );

    let exe = std::env::current_exe().expect("path of this program");
    let start = Instant::now();
    let children: Vec<_> = (0..processes)
        .map(|_| {
            Command::new(&exe)
                .args(["worker", &key, &increments.to_string()])
                .spawn()
                .expect("start a worker process")
        })
        .collect();
    let mut failed = 0;
    for mut child in children {
        if !child.wait().expect("wait for a worker").success() {
            failed += 1;
        }
    }
    let elapsed = start.elapsed();

    let (count, done) = {
        let c = shm.lock().expect("not poisoned");
        (c.value, c.done)
    };
    let expected = processes * increments;
    println!("final count: {count} (expected {expected}); workers done: {done}/{processes}");
    println!(
        "{:.1} ms, {:.0} ns per locked increment",
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_nanos() as f64 / expected.max(1) as f64
    );

    let path = format!("/dev/shm{}", shm.native_key());
    drop(shm);
    let gone = !std::path::Path::new(&path).exists();
    println!("segment removed after the last detach: {gone}");

    if count == expected && done == processes && failed == 0 && gone {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

//! How long listing takes with many segments present: creates N segments
//! (default 1000) in this process, then times `typed_shm::inspect::list()`
//! and, when it is built next to this example, the `tshm list --json`
//! binary. A timed example, not a test: run it with
//!
//! ```sh
//! cargo build --release -p typed-shm-cli --bin tshm --example list_many
//! target/release/examples/list_many 1000
//! ```

use std::process::Command;
use std::time::{Duration, Instant};

use typed_shm::SharedMemory;

#[allow(unsafe_code)]
fn raise_fd_limit(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) needs a valid resource and a pointer to one
    // writable `struct rlimit`: `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    lim.rlim_cur = lim.rlim_max.min(want.max(lim.rlim_cur));
    // SAFETY: setrlimit(2) needs a valid resource and a pointer to one
    // readable `struct rlimit`: `lim`, with the soft limit at most the hard.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
}

fn best_of(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() -> Result<(), typed_shm::Error> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    // One file descriptor per handle, and a few for the rest.
    raise_fd_limit(n as u64 + 64);
    let pid = std::process::id();
    let handles = (0..n)
        .map(|i| SharedMemory::<[u64; 4]>::create(&format!("many-{pid}-{i}"), [i as u64; 4]))
        .collect::<Result<Vec<_>, _>>()?;

    let mut found = 0;
    let lib = best_of(5, || {
        found = typed_shm::inspect::list()
            .expect("list")
            .iter()
            .filter(|s| s.key.starts_with(&format!("many-{pid}-")))
            .count();
    });
    assert_eq!(found, n);
    println!("inspect::list() with {n} segments: {lib:?} (best of 5)");

    let tshm = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.join("tshm")))
        .filter(|p| p.exists());
    match tshm {
        Some(tshm) => {
            let bin = best_of(5, || {
                let out = Command::new(&tshm)
                    .args(["list", "--json"])
                    .output()
                    .expect("run tshm");
                assert!(out.status.success());
            });
            println!("tshm list --json with {n} segments: {bin:?} (best of 5)");
        }
        None => println!("(build the tshm binary in the same profile to time it too)"),
    }
    drop(handles);
    Ok(())
}

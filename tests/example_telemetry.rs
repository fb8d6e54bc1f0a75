//! The `telemetry` example runs a producer and a consumer as two real
//! processes; this test runs it (cargo builds examples before tests) and
//! checks what the consumer printed.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn telemetry_example_consumer_sees_the_producers_commits() {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let example = dir.join("examples").join("telemetry");
    assert!(
        example.exists(),
        "{} was not built: run `cargo test --workspace`, which builds the examples",
        example.display()
    );
    let mut child = Command::new(&example).stdout(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the telemetry example did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(status.success(), "{status}\n{out}");
    assert!(out.contains("consumer: last sample 50"), "{out}");
    assert!(out.contains("segment removed: true"), "{out}");
    // At 100 Hz a consumer woken by each commit sees (nearly) every sample,
    // in order.
    let seqs: Vec<u64> = out
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(
        seqs.len() >= 40,
        "the consumer saw only {} of 50 samples:\n{out}",
        seqs.len()
    );
}

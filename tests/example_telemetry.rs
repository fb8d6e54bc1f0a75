//! The `telemetry` example runs a producer and a consumer as two real
//! processes; this test runs it (cargo builds examples before tests) and
//! checks what the consumer printed.

mod common;

use std::time::Duration;

#[test]
fn telemetry_example_consumer_sees_the_producers_commits() {
    let (status, out, _) = common::run_example("telemetry", &[], Duration::from_secs(60));
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

//! The `counter` example runs as several real processes and checks its own
//! result; this test runs it (cargo builds examples before tests).

mod common;

use std::time::Duration;

#[test]
fn counter_example_counts_exactly_and_leaves_nothing_behind() {
    let (status, out, pid) = common::run_example("counter", &["3", "2000"], Duration::from_secs(60));
    assert!(status.success(), "{status}\n{out}");
    assert!(
        out.contains("final count: 6000 (expected 6000); workers done: 3/3"),
        "{out}"
    );
    assert!(
        out.contains("segment removed after the last detach: true"),
        "{out}"
    );
    assert!(
        !std::path::Path::new(&format!("/dev/shm/tshm_counter-example-{pid}")).exists(),
        "the example left its segment behind"
    );
}

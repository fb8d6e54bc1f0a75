//! The `counter` example runs as several real processes and checks its own
//! result; this test runs it (cargo builds examples before tests).

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn counter_example_counts_exactly_and_leaves_nothing_behind() {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let example = dir.join("examples").join("counter");
    assert!(
        example.exists(),
        "{} was not built: run `cargo test --workspace`, which builds the examples",
        example.display()
    );

    let mut child = Command::new(&example)
        .args(["3", "2000"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the counter example did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(status.success(), "{status}\n{out}");
    assert!(
        out.contains("final count: 6000 (expected 6000); workers done: 3/3"),
        "{out}"
    );
    assert!(
        out.contains("segment removed after the last detach: true"),
        "{out}"
    );
    let pid = child.id();
    assert!(
        !std::path::Path::new(&format!("/dev/shm/tshm_counter-example-{pid}")).exists(),
        "the example left its segment behind"
    );
}

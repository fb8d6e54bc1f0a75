//! Support for multi-process tests: children are re-runs of the current test
//! binary (never `fork()` inside the test harness), every wait has a deadline,
//! and every segment a test names is removed when the test ends, even when it
//! fails.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// Environment variable that selects a child's role.
pub const ROLE_VAR: &str = "TSHM_TEST_ROLE";
/// Environment variable that carries the key to a child.
pub const KEY_VAR: &str = "TSHM_TEST_KEY";
/// Lines a child prints for its parent start with this marker (the test
/// harness prints its own lines too).
pub const MARK: &str = "@@ ";

/// A unique key for this process and test.
pub fn unique_key(test: &str) -> String {
    format!("t{}-{test}", std::process::id())
}

/// `/dev/shm/...` path of the segment named `key`.
pub fn shm_path(key: &str) -> String {
    format!("/dev/shm{}", typed_shm::native_key(key).expect("valid key"))
}

pub fn exists(key: &str) -> bool {
    std::fs::symlink_metadata(shm_path(key)).is_ok()
}

/// Removes the segments of the given keys when dropped (also on panic), and
/// checks at [`Keys::finish`] that the test left none behind.
pub struct Keys(Vec<String>);

impl Keys {
    pub fn new(keys: &[&str]) -> Self {
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        for k in &keys {
            let _ = std::fs::remove_file(shm_path(k));
        }
        Keys(keys)
    }

    /// Asserts that every key's segment is gone, waiting up to `timeout` for
    /// processes that are detaching.
    pub fn assert_gone_within(&self, timeout: Duration) {
        for k in &self.0 {
            let ok = wait_until(timeout, || !exists(k));
            assert!(ok, "segment {k:?} ({}) was left in /dev/shm", shm_path(k));
        }
    }

    pub fn finish(self) {
        self.assert_gone_within(Duration::from_secs(5));
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        for k in &self.0 {
            let _ = std::fs::remove_file(shm_path(k));
        }
    }
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A child process running one role of the current test binary.
pub struct Child {
    proc: std::process::Child,
    lines: Receiver<String>,
    role: String,
}

impl Child {
    /// Starts the test `entry` of the current test binary with `ROLE_VAR=role`
    /// and `KEY_VAR=key`, plus `env`.
    pub fn spawn(entry: &str, role: &str, key: &str, env: &[(&str, String)]) -> Child {
        let mut cmd = Command::new(std::env::current_exe().expect("test binary path"));
        cmd.args([entry, "--exact", "--nocapture", "--test-threads=1"])
            .env(ROLE_VAR, role)
            .env(KEY_VAR, key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut proc = cmd.spawn().expect("spawn child test process");
        let out = proc.stdout.take().expect("piped stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                // The harness may print "test name ... " on the same line.
                if let Some(at) = line.find(MARK) {
                    if tx.send(line[at + MARK.len()..].to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        Child {
            proc,
            lines: rx,
            role: role.to_string(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.proc.id() as i32
    }

    /// Waits for the next marked line from the child; panics after `timeout`.
    pub fn next_line(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => {
                panic!("child {:?} printed nothing within {timeout:?}", self.role)
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.proc.wait().ok();
                panic!(
                    "child {:?} ended ({status:?}) before printing its line",
                    self.role
                )
            }
        }
    }

    /// Waits for the marked line `expected`; panics on another line or timeout.
    pub fn expect(&mut self, expected: &str, timeout: Duration) {
        let got = self.next_line(timeout);
        assert_eq!(got, expected, "child {:?} said something else", self.role);
    }

    /// Sends one line to the child's stdin.
    pub fn send(&mut self, line: &str) {
        let stdin = self.proc.stdin.as_mut().expect("piped stdin");
        writeln!(stdin, "{line}").expect("write to child");
        stdin.flush().expect("flush to child");
    }

    /// Kills the child with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }

    /// Waits for the child to exit successfully within `timeout`; kills it
    /// and panics otherwise.
    pub fn wait_success(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.proc.try_wait().expect("try_wait") {
                assert!(status.success(), "child {:?} failed: {status}", self.role);
                return;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!("child {:?} did not finish within {timeout:?}", self.role);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.proc.try_wait() {
            self.kill();
        }
    }
}

/// In a child: the role and key, if this process is a child.
pub fn role() -> Option<(String, String)> {
    let role = std::env::var(ROLE_VAR).ok()?;
    let key = std::env::var(KEY_VAR).unwrap_or_default();
    // A child never outlives its purpose: exit if the parent forgets it.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(60));
        eprintln!("child watchdog: exiting after 60 s");
        std::process::exit(3);
    });
    Some((role, key))
}

/// In a child: tells the parent `line`.
pub fn say(line: &str) {
    // Start a fresh line: the harness may have printed "test name ... ".
    println!("\n{MARK}{line}");
    std::io::stdout().flush().expect("flush stdout");
}

/// In a child: waits for the next line from the parent.
pub fn hear() -> String {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("read from parent");
    line.trim_end().to_string()
}

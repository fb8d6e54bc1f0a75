//! Support for multi-process tests: children are re-runs of the current test
//! binary (never `fork()` inside the test harness), every wait has a deadline,
//! and every segment a test names is removed when the test ends, even when it
//! fails.
//!
//! There is one way to run a child role: the test that needs it starts with
//!
//! ```ignore
//! if let Some((role, key)) = common::role() {
//!     return child(&role, &key);
//! }
//! ```
//!
//! and spawns it with `Child::spawn(ENTRY, role, key, env)`, where `ENTRY` is
//! that test's own name. `Child::spawn` checks all three parts: the entry
//! must be the calling test itself, the child's harness must run exactly one
//! test (a renamed test makes it run none, which fails at once, saying so,
//! instead of a timeout later), and a child never spawns children through a
//! test that forgot to dispatch its role.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
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

/// A call running on a thread of its own (see [`start`]).
#[allow(dead_code)]
pub struct Pending<R> {
    what: String,
    result: Receiver<R>,
    done: Option<R>,
}

/// Starts `f` on a thread of its own. A call that should return but hangs
/// then fails its test ([`Pending::wait`] gives up after a timeout) instead
/// of hanging the suite; the stuck thread stays behind until the test
/// process ends. `f` must own what it uses: a handle of its own, for
/// example.
#[allow(dead_code)]
pub fn start<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> Pending<R> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    Pending {
        what: what.to_owned(),
        result: rx,
        done: None,
    }
}

#[allow(dead_code)]
impl<R> Pending<R> {
    /// Whether the call has returned.
    pub fn is_finished(&mut self) -> bool {
        if self.done.is_none() {
            self.done = self.result.try_recv().ok();
        }
        self.done.is_some()
    }

    /// The call's result.
    ///
    /// # Panics
    ///
    /// If it does not return within `timeout`, or panicked.
    pub fn wait(mut self, timeout: Duration) -> R {
        if let Some(r) = self.done.take() {
            return r;
        }
        match self.result.recv_timeout(timeout) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => panic!("{} did not return within {timeout:?}", self.what),
            Err(RecvTimeoutError::Disconnected) => panic!("{} panicked", self.what),
        }
    }
}

/// Runs `f` on a thread of its own and returns its result (see [`start`]).
///
/// # Panics
///
/// If `f` does not return within `timeout`, or panics.
#[allow(dead_code)]
pub fn within<R: Send + 'static>(timeout: Duration, what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    start(what, f).wait(timeout)
}

/// How long a child may take to start its test harness (a loaded machine
/// with other test binaries building and running).
const START: Duration = Duration::from_secs(30);

/// What the reader thread of a child's stdout passes on.
enum Out {
    /// The harness's "running N tests" line: how many tests the child runs.
    Running(usize),
    /// A marked line (without the marker).
    Line(String),
}

/// A child process running one role of the current test binary.
pub struct Child {
    proc: std::process::Child,
    lines: Receiver<Out>,
    role: String,
}

fn read_child_stdout(out: std::process::ChildStdout, tx: Sender<Out>) {
    let mut counted = false;
    for line in BufReader::new(out).lines().map_while(Result::ok) {
        let msg = if !counted && line.starts_with("running ") {
            let n = line.split(' ').nth(1).and_then(|n| n.parse().ok());
            match n {
                Some(n) => {
                    counted = true;
                    Out::Running(n)
                }
                None => continue,
            }
        } else if let Some(at) = line.find(MARK) {
            // The harness may print "test name ... " on the same line.
            Out::Line(line[at + MARK.len()..].to_string())
        } else {
            continue;
        };
        if tx.send(msg).is_err() {
            break;
        }
    }
}

impl Child {
    /// Starts the test `entry` of the current test binary with `ROLE_VAR=role`
    /// and `KEY_VAR=key`, plus `env`, and waits until its harness runs that
    /// one test.
    ///
    /// # Panics
    ///
    /// If `entry` is not the calling test (one style: a test spawns roles of
    /// itself), if this process is itself a child (the test did not dispatch
    /// its role first), or if the child's harness runs no test of that name.
    pub fn spawn(entry: &str, role: &str, key: &str, env: &[(&str, String)]) -> Child {
        assert!(
            std::env::var_os(ROLE_VAR).is_none(),
            "child role {:?} of {entry:?} tried to spawn a child: the test must start with \
             `if let Some((role, key)) = common::role() {{ ... return }}`",
            std::env::var(ROLE_VAR).unwrap_or_default()
        );
        if let Some(me) = std::thread::current().name()
            && me != "main"
        {
            assert_eq!(
                entry, me,
                "test {me:?} spawns role {role:?} through another test's entry {entry:?}: a \
                 test runs its children as roles of itself (pass its own name)"
            );
        }
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
        std::thread::spawn(move || read_child_stdout(out, tx));
        let mut child = Child {
            proc,
            lines: rx,
            role: role.to_string(),
        };
        match child.lines.recv_timeout(START) {
            Ok(Out::Running(1)) => child,
            Ok(Out::Running(n)) => panic!(
                "child role {role:?}: the test binary ran {n} tests named {entry:?} instead of \
                 one: no test has this exact name (was it renamed? ENTRY must be the test's \
                 own name)"
            ),
            Ok(Out::Line(l)) => panic!("child role {role:?} printed {l:?} before its harness started"),
            Err(RecvTimeoutError::Timeout) => {
                child.kill();
                panic!("child role {role:?} of {entry:?}: its test harness did not start within {START:?}")
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = child.proc.wait().ok();
                panic!("child role {role:?} of {entry:?} ended ({status:?}) before its harness started")
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.proc.id() as i32
    }

    /// Waits for the next marked line from the child; panics after `timeout`.
    pub fn next_line(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(Out::Line(l)) => l,
            Ok(Out::Running(_)) => unreachable!("the harness announces its tests once"),
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

    /// The next marked line within `timeout`, or `None` if none came (the
    /// caller says what that means).
    pub fn lines_within(&mut self, timeout: Duration) -> Option<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(Out::Line(l)) => Some(l),
            _ => None,
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
    // Wait until the watchdog runs: a thread that is still starting when
    // the child lowers a limit (RLIMIT_AS in the resource tests) fails to
    // set itself up and aborts the child.
    let (started, running) = channel();
    let lifetime = child_lifetime();
    std::thread::spawn(move || {
        let _ = started.send(());
        std::thread::sleep(lifetime);
        eprintln!("child watchdog: exiting after {lifetime:?}");
        std::process::exit(3);
    });
    running.recv().expect("the watchdog thread starts");
    Some((role, key))
}

/// How long a child may live: a minute, plus the length of a long run
/// asked for through the environment (the kill storm's `TSHM_STORM_SECS`,
/// the snapshot tests' `TSHM_SNAPSHOT_MS`), which children inherit: a
/// steady worker of a 90-second storm must not be ended by its watchdog.
fn child_lifetime() -> Duration {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let storm = var("TSHM_STORM_SECS").map_or(Duration::ZERO, Duration::from_secs);
    let snapshots = var("TSHM_SNAPSHOT_MS").map_or(Duration::ZERO, Duration::from_millis);
    Duration::from_secs(60) + storm + snapshots
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

// ---------------------------------------------------------------------------
// Additions for the fault, security and resource tests.

/// Whether `CI` is set to anything: then a test that cannot run its
/// privileged part fails instead of skipping it.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// The privileged parts this test binary skipped, reported at exit.
static SKIPPED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Writes straight to the standard error stream: the harness captures what
/// `eprintln!` prints in a passing test, and a skip must be seen.
pub fn tell(msg: &str) {
    let _ = std::io::stderr().write_all(msg.as_bytes());
}

extern "C" fn report_skips() {
    let skipped = SKIPPED.lock().unwrap_or_else(|p| p.into_inner());
    if !skipped.is_empty() {
        tell(&format!(
            "\nSKIPPED: {} test part(s) of this test binary did not run (with CI set they fail \
             instead):\n{}\n",
            skipped.len(),
            skipped
                .iter()
                .map(|s| format!("  SKIPPED {s}\n"))
                .collect::<String>()
        ));
    }
}

/// Records and prints a skipped part of a test; the binary's last lines,
/// after the harness's summary, count them again (an exit handler).
///
/// # Panics
///
/// When `CI` is set (to anything non-empty): there, a skip would hide a
/// test that must run.
#[allow(unsafe_code)]
pub fn skip(test: &str, why: &str) {
    assert!(
        !in_ci(),
        "{test}: {why}, and CI is set: this part must not be skipped in CI"
    );
    let mut skipped = SKIPPED.lock().unwrap_or_else(|p| p.into_inner());
    if skipped.is_empty() {
        // SAFETY: atexit(3) with a function that takes no arguments, does not
        // unwind (it only locks a mutex and writes to stderr) and lives as
        // long as the program.
        let rc = unsafe { libc::atexit(report_skips) };
        assert_eq!(rc, 0, "atexit");
    }
    skipped.push(format!("{test}: {why}"));
    tell(&format!("SKIPPED {test}: {why}\n"));
}

/// Whether this process runs as root. Tests that need root (switching uids,
/// mount and PID namespaces) call it before their privileged part and skip
/// that part when it is `false`, through [`skip`]: printed at once and
/// counted at the end of the binary's output — or a failure when `CI` is set
/// (`.ci/run` exports `CI=true`), where the suite runs as root and a skip
/// would hide a missing test.
#[allow(unsafe_code)]
pub fn require_root(test: &str, why: &str) -> bool {
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    skip(test, &format!("needs root ({why})"));
    false
}

impl Child {
    /// The next marked line if one is already there, without waiting.
    pub fn try_line(&mut self) -> Option<String> {
        match self.lines.try_recv() {
            Ok(Out::Line(l)) => Some(l),
            _ => None,
        }
    }

    /// Waits up to `timeout` for the child to end and returns how it ended;
    /// kills it and panics if it does not end in time.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.proc.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!("child {:?} did not end within {timeout:?}", self.role);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// How the child ended, if it has (without waiting).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.proc.try_wait().expect("try_wait")
    }

    /// Kills a child that must still be running with SIGKILL, and returns
    /// how it ended (the caller checks that the kill ended it).
    ///
    /// # Panics
    ///
    /// If the child had already ended by itself.
    pub fn kill_running(&mut self) -> std::process::ExitStatus {
        if let Some(status) = self.exited() {
            panic!("child {:?} ended before it was killed: {status}", self.role);
        }
        self.kill_and_reap()
    }

    /// Sends SIGKILL (also to a child that just ended, which it does not
    /// change) and returns how the child ended.
    pub fn kill_and_reap(&mut self) -> std::process::ExitStatus {
        self.proc.kill().expect("kill");
        self.proc.wait().expect("wait")
    }

    /// Sends `signal` to the child (without reaping it).
    #[allow(unsafe_code)]
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) has no memory preconditions; the pid is our own
        // child's, not yet reaped (reaping happens only through `self.proc`).
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", self.pid());
    }
}

/// The signal that ended a process, if a signal did.
pub fn killed_by(status: &std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.signal()
}

/// Names of the entries of `/dev/shm` (as this process sees it).
pub fn shm_entries() -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// Whether this process maps or holds open the file at `path`.
pub fn process_uses(path: &str) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mapped = maps
        .lines()
        .any(|l| l.ends_with(path) || l.contains(&format!("{path} ")));
    let open = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .any(|t| t.to_string_lossy().starts_with(path))
        })
        .unwrap_or(false);
    mapped || open
}

/// The calling thread's kernel id.
#[allow(unsafe_code)]
pub fn gettid() -> i32 {
    // SAFETY: gettid(2) takes no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// Whether the thread `tid` of process `pid` is asleep in a futex wait (a
/// blocked `pthread_mutex_lock`): per `/proc/PID/task/TID/wchan`, or, where
/// the kernel hides wait channels, per the thread's state and current
/// system call.
pub fn blocked_in_futex(pid: i32, tid: i32) -> bool {
    let task = format!("/proc/{pid}/task/{tid}");
    let wchan = std::fs::read_to_string(format!("{task}/wchan")).unwrap_or_default();
    if wchan.contains("futex") {
        return true;
    }
    if !wchan.is_empty() && wchan != "0" {
        return false;
    }
    let sleeping = std::fs::read_to_string(format!("{task}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('S'))
    });
    let in_futex = std::fs::read_to_string(format!("{task}/syscall"))
        .is_ok_and(|s| s.split(' ').next() == Some(&libc::SYS_futex.to_string()));
    sleeping && in_futex
}

/// Runs the example binary `name` (cargo builds examples before tests) with
/// `args` to its end, at most `timeout`; returns how it ended, what it
/// printed on standard output, and its pid. Kills it and panics if it does
/// not end.
pub fn run_example(name: &str, args: &[&str], timeout: Duration) -> (std::process::ExitStatus, String, u32) {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target dir");
    let example = dir.join("examples").join(name);
    assert!(
        example.exists(),
        "{} was not built: run `cargo test --workspace`, which builds the examples",
        example.display()
    );
    let mut child = Command::new(&example)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the example");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the {name} example did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().expect("piped stdout"), &mut out)
        .expect("read stdout");
    (status, out, child.id())
}

/// Reads `out` line by line on a thread of its own; the lines arrive on the
/// returned channel (which closes when `out` does).
pub fn lines_of(out: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// `CLOCK_MONOTONIC` in nanoseconds: comparable between processes (unlike
/// `Instant`).
#[allow(unsafe_code)]
pub fn monotonic_ns() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) with a valid clock and a valid pointer to a
    // timespec it writes.
    assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) }, 0);
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// Leaves a transactional segment as a writer killed in the middle of
/// publishing a commit would (SPEC.md §8), up to one instant: `payload` in
/// the buffer that is not committed, then — if `counted` — the commit count
/// one further, then the sequence word odd. The caller holds the lock (and
/// is then killed, as that writer was); the word must be even.
pub fn write_half_published_commit(key: &str, payload: &[u8], counted: bool) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(shm_path(key))
        .expect("the segment file");
    let word = |at: u64| {
        let mut b = [0u8; 8];
        file.read_exact_at(&mut b, at).expect("read the header");
        u64::from_ne_bytes(b)
    };
    // data_offset, data_len, the page size (a u32 of the ABI stamp), the
    // sequence word and the commit count.
    let (data_offset, data_len, page) = (word(40), word(48), word(32) & 0xffff_ffff);
    let (seq, commits) = (word(512), word(528));
    assert_eq!(seq & 1, 0, "a commit is already in progress");
    assert_eq!(payload.len() as u64, data_len, "one buffer's worth");
    let other = 1 - ((seq >> 1) & 1);
    let at = data_offset + other * data_len.next_multiple_of(page);
    file.write_all_at(payload, at).expect("write the other buffer");
    if counted {
        file.write_all_at(&(commits + 1).to_ne_bytes(), 528)
            .expect("write the count");
    }
    file.write_all_at(&(seq | 1).to_ne_bytes(), 512)
        .expect("write the word");
}

/// The child side of the tests of a writer killed in the middle of a
/// transactional publish: attaches to the segment `key` of `T`, takes its
/// lock, leaves the segment as such a writer would
/// ([`write_half_published_commit`] of `next`), says `crafted`, and waits
/// to be killed.
pub fn die_publishing<T: typed_shm::ShmSafe>(key: &str, next: &T, counted: bool) -> ! {
    let shm = typed_shm::SharedMemory::<T>::attach(key).expect("attach");
    let Ok(_guard) = shm.lock() else {
        panic!("a transactional segment is never poisoned")
    };
    write_half_published_commit(key, typed_shm::__private::bytemuck::bytes_of(next), counted);
    say("crafted");
    hear();
    unreachable!("the writer is killed")
}

/// The message of a caught panic: `panic!` with arguments carries a
/// `String`, with a literal only a `&str`.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Keeps the panics a child causes on purpose (their message contains
/// `expected`) off standard error, and prints every other.
pub fn quiet_panics_containing(expected: &'static str) {
    std::panic::set_hook(Box::new(move |info| {
        if !info.to_string().contains(expected) {
            eprintln!("{info}");
        }
    }));
}

/// Poisons the lock of `shm` the way a program does by accident: a thread
/// panics while it holds a write guard. Checks that it is poisoned then.
pub fn poison_by_panic<T: typed_shm::ShmSafe + Send + Sync>(shm: &typed_shm::SharedMemory<T>) {
    let panicked = std::thread::scope(|s| {
        s.spawn(|| {
            let _g = shm.lock().unwrap_or_else(typed_shm::PoisonError::into_inner);
            panic!("poisoning on purpose");
        })
        .join()
    });
    assert!(panicked.is_err(), "the holder's thread panicked");
    assert!(shm.is_poisoned(), "a panic under a write guard poisons");
}

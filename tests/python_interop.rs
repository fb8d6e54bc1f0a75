//! The Python package (`python/typed_shm`) against real segments of this
//! library: Python processes (`python/tests/interop.py`) attach to segments
//! that Rust creates, read, write, wait and die, and each side checks what
//! the other did. python3 is part of every supported machine: these tests
//! never skip.

mod common;

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use common::{Child, Keys, exists, hear, role, say, shm_path, unique_key};
use typed_shm::{ErrorKind, SharedMemory, ShmSafe, TryLockError};

#[derive(Clone, Copy, Debug, PartialEq, ShmSafe)]
#[repr(C)]
struct Inner {
    id: u16,
    kind: u8,
    level: i8,
    score: f32,
    hist: [u32; 3],
    delta: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, ShmSafe)]
#[repr(C)]
struct Sample {
    seq: u64,
    stamp: i64,
    mean: f64,
    count: usize,
    temps: [f32; 4],
    small: [u8; 8],
    half: [u16; 4],
    inner: Inner,
    grid: [[i16; 2]; 2],
    pair: [Inner; 2],
    tail: u32,
    code: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, ShmSafe)]
#[repr(C)]
struct Point {
    x: f64,
    y: f64,
}

fn inner(id: u16) -> Inner {
    Inner {
        id,
        kind: 200,
        level: -5,
        score: 20.6,
        hist: [1, u32::MAX, 3],
        delta: i32::MIN,
    }
}

fn sample() -> Sample {
    Sample {
        seq: u64::MAX,
        stamp: i64::MIN,
        mean: -1.0 / 3.0,
        count: 12345,
        temps: [0.1, -2.5, 1e30, 3.0],
        small: [0, 1, 2, 3, 4, 5, 6, 255],
        half: [0, 1, 65535, 7],
        inner: inner(9),
        grid: [[-1, 2], [i16::MIN, i16::MAX]],
        pair: [inner(1), inner(2)],
        tail: 77,
        code: -1,
    }
}

// Python literals of Rust values: floats in their shortest round-trip form,
// which is how the package (like `tshm show --json`) reads an f32.
fn py_list<T>(items: &[T], f: impl Fn(&T) -> String) -> String {
    format!("[{}]", items.iter().map(f).collect::<Vec<_>>().join(", "))
}

fn py_inner(i: &Inner) -> String {
    format!(
        "{{'id': {}, 'kind': {}, 'level': {}, 'score': {:?}, 'hist': {}, 'delta': {}}}",
        i.id,
        i.kind,
        i.level,
        i.score,
        py_list(&i.hist, |v| v.to_string()),
        i.delta
    )
}

fn py_sample(s: &Sample) -> String {
    format!(
        "{{'seq': {}, 'stamp': {}, 'mean': {:?}, 'count': {}, 'temps': {}, 'small': {}, \
         'half': {}, 'inner': {}, 'grid': {}, 'pair': {}, 'tail': {}, 'code': {}}}",
        s.seq,
        s.stamp,
        s.mean,
        s.count,
        py_list(&s.temps, |v| format!("{v:?}")),
        py_list(&s.small, |v| v.to_string()),
        py_list(&s.half, |v| v.to_string()),
        py_inner(&s.inner),
        py_list(&s.grid, |r| py_list(r, |v| v.to_string())),
        py_list(&s.pair, py_inner),
        s.tail,
        s.code
    )
}

fn py_points(p: &[Point]) -> String {
    py_list(p, |p| format!("{{'x': {:?}, 'y': {:?}}}", p.x, p.y))
}

/// A Python process running one command of `python/tests/interop.py`.
struct Py {
    proc: std::process::Child,
    lines: Receiver<String>,
    what: String,
}

impl Py {
    fn spawn(args: &[&str]) -> Py {
        let root = env!("CARGO_MANIFEST_DIR");
        let mut proc = Command::new("python3")
            .arg("-u")
            .arg(format!("{root}/python/tests/interop.py"))
            .args(args)
            .env("PYTHONPATH", format!("{root}/python"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 must be installed: the Python package is part of the project");
        let rx = common::lines_of(proc.stdout.take().expect("piped stdout"));
        Py {
            proc,
            lines: rx,
            what: args.join(" "),
        }
    }

    fn pid(&self) -> i32 {
        self.proc.id() as i32
    }

    fn line(&mut self) -> String {
        match self.lines.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => l,
            Err(_) => {
                let status = self.proc.try_wait().ok().flatten();
                panic!("python {:?} printed nothing more (exit: {status:?})", self.what)
            }
        }
    }

    fn expect(&mut self, want: &str) {
        let got = self.line();
        assert_eq!(got, want, "python {:?} said something else", self.what);
    }

    fn send(&mut self, line: &str) {
        let stdin = self.proc.stdin.as_mut().expect("piped stdin");
        writeln!(stdin, "{line}").expect("write to python");
        stdin.flush().expect("flush to python");
    }

    fn wait_success(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.proc.try_wait().expect("try_wait") {
                assert!(status.success(), "python {:?} failed: {status}", self.what);
                return;
            }
            assert!(Instant::now() < deadline, "python {:?} did not finish", self.what);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn kill(&mut self) {
        self.proc.kill().expect("kill python");
        self.proc.wait().expect("reap python");
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        if let Ok(None) = self.proc.try_wait() {
            let _ = self.proc.kill();
            let _ = self.proc.wait();
        }
    }
}

/// Runs one command to completion, expecting its last line.
fn run_py(args: &[&str], last: &str) {
    let mut py = Py::spawn(args);
    py.expect(last);
    py.wait_success();
}

/// A 32-bit word of the segment's header, read from the file.
fn header_u32(key: &str, offset: u64) -> u32 {
    let f = std::fs::File::open(shm_path(key)).expect("open segment file");
    let mut b = [0u8; 4];
    f.read_exact_at(&mut b, offset).expect("read header");
    u32::from_ne_bytes(b)
}

#[test]
fn python_package_unit_checks() {
    run_py(&["unit", "-"], "ok");
}

#[test]
fn python_snapshot_equals_the_rust_value_field_by_field() {
    let key = unique_key("py-snap");
    let skey = unique_key("py-snap-slice");
    let keys = Keys::new(&[&key, &skey]);
    let mut value = sample();
    let shm = SharedMemory::<Sample>::create(&key, value).unwrap();
    value.seq = 5;
    shm.lock().unwrap().seq = 5;
    run_py(
        &[
            "check",
            &key,
            "1",
            &Sample::FINGERPRINT.to_string(),
            &py_sample(&value),
        ],
        &format!(
            "ok {} 1 Sample {{ seq: u64 @0, stamp: i64 @8, mean: f64 @16, count: usize @24, \
             temps: [f32; 4] @32, small: [u8; 8] @48, half: [u16; 4] @56, inner: Inner @64, \
             grid: [[i16; 2]; 2] @88, pair: [Inner; 2] @96, tail: u32 @144, code: i32 @148 }}",
            std::mem::size_of::<Sample>()
        ),
    );

    let points: Vec<Point> = (0..5)
        .map(|i| Point {
            x: f64::from(i) * 1.5,
            y: -f64::from(i) / 7.0,
        })
        .collect();
    let slice = SharedMemory::<[Point]>::create_slice(&skey, 5, points[0]).unwrap();
    slice.lock().unwrap().copy_from_slice(&points);
    run_py(
        &[
            "check",
            &skey,
            "1",
            &Point::FINGERPRINT.to_string(),
            &py_points(&points),
        ],
        "ok 80 5 Point { x: f64 @0, y: f64 @8 }",
    );
    drop((shm, slice));
    keys.finish();
}

#[test]
fn a_python_commit_is_seen_by_rust_and_wakes_its_waiter() {
    let key = unique_key("py-write");
    let skey = unique_key("py-write-slice");
    let keys = Keys::new(&[&key, &skey]);
    let shm = SharedMemory::<Sample>::create(&key, sample()).unwrap();
    let mut py = Py::spawn(&["write", &key, "struct"]);
    let woken = std::thread::scope(|s| {
        let waiter = s.spawn(|| shm.wait_for_change_timeout(0, Duration::from_secs(20)));
        py.expect("committed 1");
        waiter.join().unwrap()
    });
    assert_eq!(
        woken.unwrap(),
        1,
        "the Rust waiter was woken by the Python commit"
    );
    assert_eq!(shm.version(), 1);
    let mut want = sample();
    want.seq = 42;
    want.stamp = -(1 << 40);
    want.mean = 0.1;
    want.count = (1 << 40) + 3;
    want.temps[1] = -1.25;
    want.temps[3] = 20.6;
    want.small = [1, 2, 3, 4, 5, 6, 7, 255];
    want.half[3] = 65535;
    want.inner.score = 2.5;
    want.inner.level = -128;
    want.pair[1].hist = [7, 8, 9];
    want.pair[0] = want.inner;
    want.grid[1][0] = -3;
    want.code = -7;
    assert_eq!(shm.snapshot().unwrap(), want);
    py.send("read-only");
    py.expect("poisoned 2");
    assert!(shm.is_poisoned(), "an exception inside a Python lock poisons");
    let Err(poison) = shm.lock() else {
        panic!("Rust's lock did not report the poison")
    };
    assert_eq!(poison.into_inner().seq, 43, "the abandoned write is there");
    shm.clear_poison();
    py.send("bye");
    py.wait_success();
    assert_eq!(shm.attach_count(), 1);

    let slice = SharedMemory::<[Point]>::create_slice(&skey, 3, Point { x: 0.0, y: 0.0 }).unwrap();
    let mut py = Py::spawn(&["write", &skey, "slice"]);
    py.expect("committed 1");
    assert_eq!(
        slice.snapshot().unwrap(),
        [
            Point { x: -1.0, y: 1e300 },
            Point { x: 0.0, y: 0.0 },
            Point { x: 3.5, y: 0.25 }
        ]
    );
    py.send("read-only");
    py.expect("poisoned 2");
    assert!(slice.is_poisoned());
    py.send("bye");
    py.wait_success();
    drop((shm, slice));
    keys.finish();
}

#[test]
fn a_python_waiter_is_woken_by_a_rust_commit() {
    const ROUNDS: usize = 7;
    let key = unique_key("py-wait");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<u64>::create(&key, 0).unwrap();
    let mut py = Py::spawn(&["wait", &key, &ROUNDS.to_string()]);
    let mut latencies = Vec::new();
    for round in 0..ROUNDS {
        py.expect(&format!("waiting {round}"));
        // Python's main thread (tid = pid) asleep in FUTEX_WAIT, counted in
        // `waiters` (its atomic add works).
        let blocked = common::wait_until(Duration::from_secs(10), || {
            common::blocked_in_futex(py.pid(), py.pid()) && header_u32(&key, 520) == 1
        });
        assert!(blocked, "the Python waiter never blocked in the futex");
        let committed = common::monotonic_ns();
        *shm.lock().unwrap() += 1;
        let line = py.line();
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts[..2], ["woke", &(round + 1).to_string()], "{line}");
        let woke: i128 = parts[2].parse().unwrap();
        latencies.push(Duration::from_nanos((woke - committed).max(0) as u64));
    }
    py.expect("done");
    py.wait_success();
    assert_eq!(header_u32(&key, 520), 0, "every Python waiter unregistered");
    // A waiter that only looked again at the end of its 20 ms slices would
    // see each commit 0-20 ms late, evenly spread; woken by the commit it
    // sees it within a fraction of a millisecond (scheduling aside).
    let prompt = latencies
        .iter()
        .filter(|d| **d < Duration::from_millis(4))
        .count();
    assert!(
        prompt >= ROUNDS - 2,
        "the Python waiter was not woken by the commits: latencies {latencies:?}"
    );
    drop(shm);
    keys.finish();
}

#[test]
fn a_rust_waiter_is_woken_by_a_python_commit() {
    const ROUNDS: usize = 5;
    let key = unique_key("py-wake-rust");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<u64>::create(&key, 0).unwrap();
    let mut py = Py::spawn(&["commit", &key, &ROUNDS.to_string()]);
    py.expect("attached");
    let mut latencies = Vec::new();
    for round in 0..ROUNDS as u64 {
        let (tid_tx, tid_rx) = channel();
        let (woke, line) = std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                tid_tx.send(common::gettid()).unwrap();
                let v = shm.wait_for_change_timeout(round, Duration::from_secs(20));
                (v, common::monotonic_ns())
            });
            let tid = tid_rx.recv().unwrap();
            let me = std::process::id() as i32;
            assert!(
                common::wait_until(Duration::from_secs(10), || common::blocked_in_futex(me, tid)),
                "the Rust waiter never blocked"
            );
            py.send("commit");
            let line = py.line();
            (waiter.join().unwrap(), line)
        });
        assert_eq!(woke.0.unwrap(), round + 1);
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts[..2], ["committed", &(round + 1).to_string()], "{line}");
        let committed: i128 = parts[2].parse().unwrap();
        latencies.push(Duration::from_nanos((woke.1 - committed).max(0) as u64));
    }
    py.wait_success();
    assert_eq!(*shm.lock().unwrap(), ROUNDS as u64, "Python's commits are there");
    let prompt = latencies
        .iter()
        .filter(|d| **d < Duration::from_millis(4))
        .count();
    assert!(
        prompt >= ROUNDS - 1,
        "the Rust waiter was not woken by the Python commits: latencies {latencies:?}"
    );
    drop(shm);
    keys.finish();
}

#[test]
fn python_sees_the_poison_of_a_killed_rust_holder() {
    const ENTRY: &str = "python_sees_the_poison_of_a_killed_rust_holder";
    if let Some((role, key)) = role() {
        assert_eq!(role, "hold");
        let shm = SharedMemory::<Sample>::attach(&key).unwrap();
        let mut g = shm.lock().unwrap();
        g.seq = 99;
        say("holding");
        hear();
        return;
    }
    let key = unique_key("py-poison");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Sample>::create(&key, sample()).unwrap();
    let mut child = Child::spawn(ENTRY, "hold", &key, &[]);
    child.expect("holding", Duration::from_secs(30));
    child.kill_running();
    // The next locker (Python) ends the dead write (version 1); its repair
    // is one more commit.
    run_py(&["poisoned", &key], "ok 2");
    let g = shm.lock().expect("Python cleared the poison");
    assert_eq!(g.seq, 100, "Python's repair is there");
    drop(g);
    assert!(!shm.is_poisoned());
    drop(shm);
    keys.finish();
}

/// Python's `clear_poison`, called while a Rust thread holds the lock in the
/// middle of a write to a poisoned segment, waits for that holder (SPEC §4:
/// only a holder clears), so that the holder's commit cannot bring the
/// poison bit of the sequence word back: afterwards, lockers and snapshots
/// in both languages agree that the segment is clean.
#[test]
fn python_clear_poison_waits_for_the_rust_holder() {
    let key = unique_key("py-clear");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Sample>::create(&key, sample()).unwrap();
    common::poison_by_panic(&shm);
    let mut py = Py::spawn(&["clear", &key]);
    py.expect("attached");
    let mut g = shm.lock().unwrap_err().into_inner();
    g.seq = 5;
    py.send("clear");
    py.expect("clearing");
    // A clear that did not wait for the lock returns within milliseconds.
    let early = py.lines.recv_timeout(Duration::from_millis(300));
    assert!(
        early.is_err(),
        "Python's clear_poison returned while Rust held the lock: {early:?}"
    );
    drop(g);
    py.expect("cleared");
    py.wait_success();
    assert!(!shm.is_poisoned());
    assert_eq!(shm.snapshot().expect("clean for snapshots").seq, 5);
    assert!(shm.lock().is_ok(), "clean for lockers");
    drop(shm);
    keys.finish();
}

#[test]
fn rust_sees_the_poison_of_a_killed_python_holder() {
    let key = unique_key("py-dies");
    let tkey = unique_key("py-dies-txn");
    let keys = Keys::new(&[&key, &tkey]);
    let shm = SharedMemory::<Sample>::create(&key, sample()).unwrap();
    let mut py = Py::spawn(&["hold", &key]);
    py.expect("holding");
    assert!(matches!(shm.try_lock(), Err(TryLockError::WouldBlock)));
    py.kill();
    let Err(poison) = shm.snapshot() else {
        panic!("a snapshot after the Python writer died was clean")
    };
    assert_eq!(poison.into_inner().seq, 7);
    let Err(poison) = shm.lock() else {
        panic!("the lock of a dead Python holder was not poisoned")
    };
    assert_eq!(poison.into_inner().seq, 7);
    assert_eq!(shm.attach_count(), 1, "the dead Python process is not counted");

    // Transactional: the dead Python writer's changes are discarded.
    let txn = SharedMemory::<Sample>::options()
        .transactional(true)
        .create(&tkey, sample())
        .unwrap();
    let mut py = Py::spawn(&["hold", &tkey]);
    py.expect("holding");
    py.kill();
    assert_eq!(*txn.lock().expect("never poisoned"), sample());
    assert_eq!(txn.version(), 0);
    drop((shm, txn));
    keys.finish();
}

#[test]
fn python_commits_to_a_transactional_segment_whole_and_discards_on_exception() {
    let key = unique_key("py-txn");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Sample>::options()
        .transactional(true)
        .create(&key, sample())
        .unwrap();
    let mut py = Py::spawn(&["txn", &key]);
    py.expect("wrote");
    // Python holds the lock with changes made: nothing shows yet.
    assert_eq!(shm.snapshot().unwrap(), sample());
    assert!(matches!(
        shm.lock_timeout(Duration::from_millis(20)),
        Err(TryLockError::TimedOut)
    ));
    assert_eq!(shm.version(), 0);
    let woken = std::thread::scope(|s| {
        let waiter = s.spawn(|| shm.wait_for_change_timeout(0, Duration::from_secs(20)));
        py.send("go");
        py.expect("committed 1");
        waiter.join().unwrap()
    });
    assert_eq!(woken.unwrap(), 1);
    let mut want = sample();
    want.seq = 1000;
    want.inner.score = -0.5;
    want.pair[1].hist = [1, 2, 3];
    assert_eq!(shm.snapshot().unwrap(), want);
    py.expect("discarded 1");
    assert_eq!(shm.version(), 1);
    assert!(!shm.is_poisoned());
    {
        let mut g = shm.lock().expect("not poisoned");
        assert_eq!(*g, want);
        g.seq = 5;
        py.send("rust-holds");
        py.expect("snapshot-ok");
    }
    py.wait_success();
    assert_eq!(shm.version(), 2);
    drop(shm);
    keys.finish();
}

/// A Python thread in the middle of its own write is refused a snapshot and
/// a wait for a change (with and without a time limit) at once, with
/// `LockError`, instead of waiting for a commit that cannot happen while it
/// waits; the write then commits, unpoisoned. (A hang fails on the line's
/// deadline.)
#[test]
fn a_python_snapshot_or_wait_by_the_locks_holder_is_refused_not_hung() {
    let key = unique_key("py-self");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Sample>::create(&key, sample()).unwrap();
    run_py(&["self-wait", &key], "committed 1 7");
    assert!(!shm.is_poisoned());
    assert_eq!(shm.snapshot().unwrap().seq, 7);
    drop(shm);
    keys.finish();
}

/// A Rust writer killed in the middle of publishing a transactional commit,
/// after it counted the commit (its copy whole, only the sequence word left
/// to store): before Python locks, Python's version and snapshot agree on
/// the last visible commit; Python's lock completes the counted one, and
/// both languages then see it, counted once.
#[test]
fn a_counted_commit_of_a_killed_writer_is_completed_by_python() {
    const ENTRY: &str = "a_counted_commit_of_a_killed_writer_is_completed_by_python";
    if let Some((r, key)) = role() {
        assert_eq!(r, "counted-dier");
        let next = Sample {
            seq: 4242,
            ..sample()
        };
        common::die_publishing(&key, &next, true);
    }
    let key = unique_key("py-counted");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Sample>::options()
        .transactional(true)
        .create(&key, sample())
        .unwrap();
    let mut writer = Child::spawn(ENTRY, "counted-dier", &key, &[]);
    writer.expect("crafted", Duration::from_secs(30));
    writer.kill();
    run_py(
        &["txn-repair", &key],
        &format!("before 0 {} after 1 4242", sample().seq),
    );
    assert_eq!(shm.version(), 1);
    assert_eq!(shm.snapshot().unwrap().seq, 4242);
    assert_eq!(shm.lock().expect("not poisoned").seq, 4242);
    assert_eq!(shm.version(), 1, "counted once");
    drop(shm);
    keys.finish();
}

#[test]
fn python_attach_errors_have_the_rust_kinds() {
    let base = unique_key("py-err");
    let names = ["foreign", "pidns", "oldver", "empty", "link", "good"].map(|n| format!("{base}-{n}"));
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let keys = Keys::new(&all);
    let [foreign, pidns, oldver, empty, link, good] = &names;
    std::fs::write(shm_path(foreign), vec![0x5a; 8192]).unwrap();
    std::fs::write(shm_path(empty), b"").unwrap();
    std::os::unix::fs::symlink(shm_path(good), shm_path(link)).unwrap();
    let patched = |key: &str, offset: u64, bytes: &[u8]| {
        let shm = SharedMemory::<Sample>::create(key, sample()).unwrap();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(shm_path(key))
            .unwrap();
        f.write_all_at(bytes, offset).unwrap();
        shm
    };
    // Another PID namespace's inode; another format version.
    let a = patched(pidns, 456, &1u64.to_ne_bytes());
    let b = patched(oldver, 8, &1u32.to_ne_bytes());
    let good_shm = SharedMemory::<Sample>::create(good, sample()).unwrap();
    run_py(
        &[
            "errors",
            &base,
            foreign,
            pidns,
            oldver,
            empty,
            link,
            good,
            &Sample::FINGERPRINT.to_string(),
        ],
        "ok",
    );
    assert!(
        exists(foreign) && exists(empty),
        "Python left foreign files untouched"
    );
    assert_eq!(good_shm.attach_count(), 1);
    for k in [foreign, empty, link] {
        std::fs::remove_file(shm_path(k)).unwrap();
    }
    drop((a, b, good_shm));
    keys.finish();
}

#[test]
fn python_takes_part_in_liveness_and_its_last_detach_removes_the_segment() {
    let key = unique_key("py-live");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<u32>::create(&key, 1).unwrap();

    // A Python process that dies without detaching stops counting.
    let mut py = Py::spawn(&["count", &key]);
    py.expect("count 2");
    assert_eq!(shm.attach_count(), 2);
    py.kill();
    assert_eq!(shm.attach_count(), 1);

    let mut py = Py::spawn(&["live", &key]);
    py.expect("count 2");
    assert_eq!(shm.attach_count(), 2, "Rust counts the Python attachment");
    shm.detach().unwrap();
    assert!(exists(&key), "the Python handle keeps the segment alive");
    py.send("rust-detached");
    py.expect("removed");
    py.wait_success();
    assert!(!exists(&key), "Python's last detach removed the segment");
    assert_eq!(
        SharedMemory::<u32>::attach(&key).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    keys.finish();
}

/// `snapshot_numpy()` gives the same bytes as the data, a structured dtype
/// with the struct's field names and the integers of the Rust value, and a
/// `(len,)` array for a slice. numpy is optional for the package: without
/// it this test is skipped (and fails in CI, whose `.ci/run` installs it).
#[test]
fn python_numpy_view_matches_the_snapshot() {
    const TEST: &str = "python_numpy_view_matches_the_snapshot";
    let key = unique_key("py-numpy");
    let skey = unique_key("py-numpy-slice");
    let keys = Keys::new(&[&key, &skey]);
    let value = sample();
    let shm = SharedMemory::<Sample>::create(&key, value).unwrap();
    let points: Vec<Point> = (0..5)
        .map(|i| Point {
            x: f64::from(i),
            y: 0.5,
        })
        .collect();
    let slice = SharedMemory::<[Point]>::create_slice(&skey, 5, points[0]).unwrap();
    slice.lock().unwrap().copy_from_slice(&points);
    for (k, expected, want) in [
        (&key, py_sample(&value), "ok numpy ()"),
        (&skey, py_points(&points), "ok numpy (5,)"),
    ] {
        let mut py = Py::spawn(&["numpy", k, &expected]);
        let line = py.line();
        py.wait_success();
        if line == "numpy-skipped" {
            common::skip(TEST, "numpy is not installed (pip install numpy)");
            break;
        }
        assert_eq!(line, want);
    }
    drop((shm, slice));
    keys.finish();
}

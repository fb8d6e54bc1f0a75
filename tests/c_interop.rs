//! C programs that use `include/typed_shm.h` share real segments with Rust
//! handles, as real processes: the C peers (`tests/c/*.c`) are compiled with
//! `cc -std=c11 -Wall -Wextra -Werror -O2 -pthread` by the test itself (cc is
//! part of every supported toolchain: these tests never skip), and talk to
//! the test through their stdin and stdout, one line per step.
//!
//! What they prove: a C program attaches to a segment a Rust program created
//! (and its layout check refuses the wrong type), reads consistent snapshots
//! while Rust commits, commits under the same robust lock so that Rust sees
//! the new value, the new version and a wake-up, reports and recovers the
//! poison of a holder killed in the other language, publishes transactional
//! commits whole, and takes part in the liveness protocol so that the last
//! detach, in either language, removes the segment.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use common::{Child, Keys, exists, hear, say, shm_path, unique_key};
use typed_shm::{SharedMemory, ShmSafe, TryLockError};

const LINE: Duration = Duration::from_secs(30);

/// Sixteen words that every commit sets to one value: a copy that mixes two
/// commits has unequal words (the C peers know it as `uint64_t[16]`).
type Row = [u64; 16];

/// A struct with fields of several kinds, as C sees it in `struct_peer.c`.
#[derive(Clone, Copy, Debug, PartialEq, ShmSafe)]
#[repr(C)]
struct Pose {
    id: u64,
    x: f64,
    y: f64,
    tag: [u8; 8],
    counts: [u32; 4],
}

/// Compiles `tests/c/<name>.c` against `include/typed_shm.h`, once per test
/// process, and returns the program's path. The program is built under a
/// temporary name and renamed into place, so concurrent test runs never run
/// a half-written file.
fn c_program(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c_interop");
    let out = dir.join(name);
    if built.iter().any(|b| b == name) {
        return out;
    }
    std::fs::create_dir_all(&dir).expect("create the C build directory");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = dir.join(format!("{name}.{}.tmp", std::process::id()));
    let result = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", "-pthread", "-I"])
        .arg(root.join("include"))
        .arg(root.join("tests/c").join(format!("{name}.c")))
        .arg("-o")
        .arg(&tmp)
        .output()
        .expect("run cc (a C compiler is needed to test include/typed_shm.h)");
    assert!(
        result.status.success(),
        "cc failed on tests/c/{name}.c:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    std::fs::rename(&tmp, &out).expect("move the C program into place");
    built.push(name.to_string());
    out
}

/// A running C peer: its stdout lines arrive through a channel.
struct CProc {
    proc: std::process::Child,
    lines: Receiver<String>,
    name: String,
}

impl CProc {
    fn spawn(name: &str, args: &[&str]) -> CProc {
        let mut proc = Command::new(c_program(name))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the C peer");
        let rx = common::lines_of(proc.stdout.take().expect("piped stdout"));
        CProc {
            proc,
            lines: rx,
            name: format!("{name} {}", args.join(" ")),
        }
    }

    /// The next line; panics after `timeout` or if the peer ended.
    fn line(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => {
                panic!("C peer {:?} printed nothing within {timeout:?}", self.name)
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.proc.wait().ok();
                panic!("C peer {:?} ended ({status:?}) without its line", self.name)
            }
        }
    }

    fn expect(&mut self, expected: &str) {
        assert_eq!(self.line(LINE), expected, "C peer {:?}", self.name);
    }

    /// A line already printed, without waiting.
    fn try_line(&mut self) -> Option<String> {
        self.lines.try_recv().ok()
    }

    fn send(&mut self, line: &str) {
        let stdin = self.proc.stdin.as_mut().expect("piped stdin");
        writeln!(stdin, "{line}").expect("write to the C peer");
        stdin.flush().expect("flush to the C peer");
    }

    fn wait_success(&mut self) {
        let deadline = Instant::now() + LINE;
        loop {
            if let Some(status) = self.proc.try_wait().expect("try_wait") {
                assert!(status.success(), "C peer {:?} failed: {status}", self.name);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "C peer {:?} did not finish within {LINE:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL, and reap.
    fn kill(&mut self) {
        self.proc.kill().expect("kill the C peer");
        let status = self.proc.wait().expect("reap the C peer");
        assert_eq!(common::killed_by(&status), Some(libc::SIGKILL), "{status}");
    }
}

impl Drop for CProc {
    fn drop(&mut self) {
        if let Ok(None) = self.proc.try_wait() {
            let _ = self.proc.kill();
            let _ = self.proc.wait();
        }
    }
}

fn hex(fingerprint: u64) -> String {
    format!("{fingerprint:#x}")
}

/// Rust creates a struct segment; a C program attaches with the struct's
/// fingerprint, size and alignment, finds the values Rust stored, and
/// commits new ones under the lock. Rust's `wait_for_change`, blocked
/// before the commit, returns the new version; Rust's snapshot and lock
/// see the C values; the C peer's detach leaves the Rust handle attached.
#[test]
fn a_c_program_reads_and_commits_a_rust_struct() {
    let key = unique_key("c-struct");
    let keys = Keys::new(&[&key]);
    let init = Pose {
        id: 7,
        x: 1.5,
        y: -2.25,
        tag: *b"rust\0\0\0\0",
        counts: [1, 2, 3, 4],
    };
    let shm = SharedMemory::<Pose>::create(&key, init).unwrap();
    let (fp, size, align) = (
        hex(Pose::FINGERPRINT),
        size_of::<Pose>().to_string(),
        align_of::<Pose>().to_string(),
    );
    let mut c = CProc::spawn("struct_peer", &[&key, &fp, &size, &align]);
    c.expect("attached count=2 version=0 size=48 len=1");
    c.expect("seen ok");
    assert_eq!(shm.attach_count(), 2);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| shm.wait_for_change_timeout(0, LINE));
        // Let the waiter block before the C commit.
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !waiter.is_finished(),
            "wait_for_change returned before any commit"
        );
        c.send("go");
        assert_eq!(waiter.join().unwrap().unwrap(), 1, "woken with the new version");
    });
    c.expect("committed version=1");
    let written = Pose {
        id: 8,
        x: 3.5,
        y: 4.75,
        tag: *b"c\0\0\0\0\0\0\0",
        counts: [10, 20, 30, 40],
    };
    assert_eq!(shm.snapshot().unwrap(), written);
    assert_eq!(*shm.lock().unwrap(), written);
    assert_eq!(shm.version(), 1);
    c.send("detach");
    c.expect("detached OK");
    c.wait_success();
    assert_eq!(shm.attach_count(), 1);
    assert!(exists(&key), "the Rust handle is still attached");
    shm.detach().unwrap();
    keys.finish();
}

/// A Rust thread commits rows continuously while a C process snapshots:
/// no C copy mixes two commits, values and versions never go back. Then the
/// C process waits for a change, and a single Rust commit wakes it with the
/// new version.
#[test]
fn c_snapshots_never_mix_rust_commits_and_c_waiters_wake() {
    let key = unique_key("c-mix");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Row>::create(&key, [0; 16]).unwrap();
    let mut c = CProc::spawn("row_peer", &[&key, &hex(Row::FINGERPRINT), "mix", "1500"]);
    c.expect("ready");
    let stop = AtomicBool::new(false);
    let commits = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut commits = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut g = shm.lock().expect("not poisoned");
                let next = g[0] + 1;
                for w in g.iter_mut() {
                    *w = next;
                }
                drop(g);
                commits += 1;
            }
            commits
        });
        c.send("go");
        let line = c.line(LINE);
        stop.store(true, Ordering::Relaxed);
        let commits = writer.join().unwrap();
        let parts: Vec<&str> = line.split(' ').collect();
        assert!(
            parts.len() == 4 && parts[0] == "snapshots" && parts[2] == "changes",
            "the C reader saw a copy that mixes two commits: {line}"
        );
        let (n, changes): (u64, u64) = (parts[1].parse().unwrap(), parts[3].parse().unwrap());
        assert!(n >= 100, "too few snapshots to mean anything: {line}");
        assert!(changes > 10, "the C reader did not see the commits: {line}");
        commits
    });
    assert_eq!(shm.version(), commits);
    c.send("wait");
    assert_eq!(c.line(LINE), format!("waiting {commits}"));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(c.try_line(), None, "the C waiter returned before any commit");
    {
        let mut g = shm.lock().unwrap();
        *g = [commits + 1; 16];
    }
    c.expect(&format!("woken OK {} value {}", commits + 1, commits + 1));
    c.wait_success();
    drop(shm);
    keys.finish();
}

fn killed_holder_child(role: &str, key: &str) {
    match role {
        // Locks, writes half a row, and waits inside the write to be killed.
        "holder" => {
            let shm = SharedMemory::<Row>::attach(key).expect("attach");
            let mut g = shm.lock().expect("not poisoned");
            for w in &mut g[..8] {
                *w = 77;
            }
            say("holding");
            hear();
            unreachable!("the holder is killed");
        }
        other => panic!("unknown role {other}"),
    }
}

/// A C process killed (SIGKILL) while it holds the lock in the middle of a
/// write: Rust's snapshot reports the poison with the half-written data, and
/// Rust's lock returns the poison. Then a Rust process killed the same way:
/// the C side's snapshot, wait and lock all report the poison; C repairs,
/// clears the poison and commits, and Rust sees a clean value.
#[test]
fn holders_killed_in_either_language_poison_the_other() {
    const ENTRY: &str = "holders_killed_in_either_language_poison_the_other";
    if let Some((role, key)) = common::role() {
        return killed_holder_child(&role, &key);
    }
    let key = unique_key("c-poison");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Row>::create(&key, [0; 16]).unwrap();
    let fp = hex(Row::FINGERPRINT);

    // A C holder, killed.
    let mut c = CProc::spawn("row_peer", &[&key, &fp, "hold"]);
    c.expect("holding");
    assert!(matches!(shm.try_lock(), Err(TryLockError::WouldBlock)));
    assert!(!shm.is_poisoned());
    c.kill();
    let t = Instant::now();
    let Err(TryLockError::Poisoned(p)) = shm.snapshot_timeout(Duration::from_secs(5)) else {
        panic!("a writer killed mid-write must be reported as poison")
    };
    assert!(t.elapsed() < Duration::from_millis(100), "{:?}", t.elapsed());
    let copy = p.into_inner();
    assert_eq!((copy[0], copy[7], copy[8]), (99, 99, 0), "the data as it stands");
    assert!(shm.is_poisoned());
    let g = shm.lock().expect_err("the lock is poisoned").into_inner();
    assert_eq!(g[0], 99);
    drop(g);
    assert_eq!(shm.version(), 1, "the first locker ends the dead writer's commit");
    shm.clear_poison();
    assert_eq!(shm.snapshot().unwrap()[0], 99);

    // A Rust holder, killed; the C side sees the poison and recovers.
    let mut holder = Child::spawn(ENTRY, "holder", &key, &[]);
    holder.expect("holding", LINE);
    holder.kill();
    let mut c = CProc::spawn("row_peer", &[&key, &fp, "poisoned"]);
    c.expect("poisoned snapshot POISONED 77 0 wait POISONED lock POISONED is_poisoned 1");
    c.expect("recovered lock OK snapshot OK 5");
    c.wait_success();
    assert!(!shm.is_poisoned());
    assert_eq!(shm.snapshot().unwrap(), [5; 16]);
    assert_eq!(*shm.lock().unwrap(), [5; 16]);
    drop(shm);
    keys.finish();
}

/// C's `tshm_clear_poison`, called while a Rust thread holds the lock in the
/// middle of a write to a poisoned segment, waits for that holder (SPEC §4:
/// only a holder clears), so that the holder's commit cannot bring the
/// poison bit of the sequence word back: afterwards, lockers and snapshots
/// in both languages agree that the segment is clean.
#[test]
fn c_clear_poison_waits_for_the_rust_holder() {
    let key = unique_key("c-clear");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Row>::create(&key, [1; 16]).unwrap();
    common::poison_by_panic(&shm);
    let mut c = CProc::spawn("row_peer", &[&key, &hex(Row::FINGERPRINT), "clear"]);
    c.expect("attached");
    let mut g = shm.lock().unwrap_err().into_inner();
    *g = [5; 16];
    c.send("clear");
    c.expect("clearing");
    // A clear that did not wait for the lock returns within microseconds.
    let early = c.lines.recv_timeout(Duration::from_millis(300));
    assert!(
        early.is_err(),
        "C's tshm_clear_poison returned while Rust held the lock: {early:?}"
    );
    drop(g);
    c.expect("cleared OK");
    c.expect("then is_poisoned 0 snapshot OK 5");
    c.wait_success();
    assert!(!shm.is_poisoned());
    assert_eq!(shm.snapshot().expect("clean for snapshots"), [5; 16]);
    assert!(shm.lock().is_ok(), "clean for lockers");
    drop(shm);
    keys.finish();
}

/// A transactional segment: C commits through `tshm_commit_txn` while a
/// Rust thread snapshots (every copy whole, never going back); while Rust
/// holds a write guard with uncommitted changes, C snapshots at once (with
/// no waiting allowed) and gets the last commit, and cannot take the lock;
/// a C holder killed with the lock leaves no poison and the last commit.
#[test]
fn transactional_commits_from_c_are_whole() {
    let key = unique_key("c-txn");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Row>::options()
        .transactional(true)
        .create(&key, [0; 16])
        .unwrap();
    let fp = hex(Row::FINGERPRINT);

    let mut c = CProc::spawn("row_peer", &[&key, &fp, "txn", "1000"]);
    c.expect("ready");
    let (stop, started) = (AtomicBool::new(false), AtomicBool::new(false));
    let commits = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let (mut n, mut changes, mut last) = (0u64, 0u64, 0u64);
            started.store(true, Ordering::Relaxed);
            while !stop.load(Ordering::Relaxed) {
                let row = shm.snapshot().expect("never poisoned");
                assert!(row.iter().all(|&w| w == row[0]), "a mixed copy: {row:?}");
                assert!(row[0] >= last, "went back: {last} → {}", row[0]);
                changes += u64::from(row[0] != last);
                (last, n) = (row[0], n + 1);
            }
            (n, changes)
        });
        while !started.load(Ordering::Relaxed) {
            std::thread::yield_now();
        }
        c.send("go");
        let line = c.line(LINE);
        stop.store(true, Ordering::Relaxed);
        let (n, changes) = reader.join().unwrap();
        assert!(n >= 100 && changes > 10, "{n} snapshots, {changes} changes");
        let parts: Vec<&str> = line.split(' ').collect();
        assert!(
            parts.len() == 4 && parts[0] == "committed" && parts[1] == parts[3],
            "{line}"
        );
        parts[1].parse::<u64>().unwrap()
    });
    c.wait_success();
    let n = commits;
    assert_eq!(shm.version(), n);
    assert_eq!(shm.snapshot().unwrap(), [n; 16]);

    // C snapshots while Rust holds a write guard.
    let mut c = CProc::spawn("row_peer", &[&key, &fp, "held"]);
    c.expect("ready");
    let mut g = shm.lock().unwrap();
    g[0] = 12345;
    g[1] = 12345;
    c.send("go");
    let line = c.line(LINE);
    assert!(
        line.starts_with(&format!("snapshot OK {n} {n} uniform 1 us ")),
        "a C snapshot during a transactional write: {line}"
    );
    c.expect("trylock BUSY");
    drop(g);
    c.send("again");
    c.expect(&format!("snapshot OK 12345 version {}", n + 1));
    c.wait_success();

    // A C holder killed with the lock: no poison, the last commit.
    let mut c = CProc::spawn("row_peer", &[&key, &fp, "txn-hold"]);
    c.expect("holding");
    c.kill();
    let g = shm
        .lock()
        .expect("a transactional segment is not poisoned by a death");
    assert_eq!((g[0], g[2]), (12345, n));
    drop(g);
    assert!(!shm.is_poisoned());
    assert_eq!(shm.version(), n + 1);
    drop(shm);
    keys.finish();
}

/// A C thread in the middle of its own write is refused a snapshot and a
/// wait for a change (both without a time limit) at once, with
/// `TSHM_E_DEADLOCK`, instead of waiting forever for a commit that cannot
/// happen while it waits; the write then commits, unpoisoned. (A hang fails
/// on the line's deadline.)
#[test]
fn a_c_snapshot_or_wait_by_the_locks_holder_is_refused_not_hung() {
    let key = unique_key("c-self");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Row>::create(&key, [0; 16]).unwrap();
    let mut c = CProc::spawn("row_peer", &[&key, &hex(Row::FINGERPRINT), "self-wait"]);
    c.expect("snapshot DEADLOCK wait DEADLOCK then OK 7 7 commits 1");
    c.wait_success();
    assert!(!shm.is_poisoned());
    assert_eq!(shm.snapshot().unwrap(), [7; 16]);
    drop(shm);
    keys.finish();
}

/// A Rust writer killed in the middle of publishing a transactional commit,
/// after it counted the commit (its copy whole, only the sequence word left
/// to store): before C locks, C's version and snapshot agree on the last
/// visible commit; C's lock completes the counted one, and both languages
/// then see it, counted once.
#[test]
fn a_counted_commit_of_a_killed_writer_is_completed_by_c() {
    const ENTRY: &str = "a_counted_commit_of_a_killed_writer_is_completed_by_c";
    if let Some((role, key)) = common::role() {
        assert_eq!(role, "counted-dier");
        common::die_publishing::<Row>(&key, &[1; 16], true);
    }
    let key = unique_key("c-counted");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Row>::options()
        .transactional(true)
        .create(&key, [0; 16])
        .unwrap();
    let mut writer = Child::spawn(ENTRY, "counted-dier", &key, &[]);
    writer.expect("crafted", LINE);
    writer.kill();
    let mut c = CProc::spawn("row_peer", &[&key, &hex(Row::FINGERPRINT), "txn-repair"]);
    c.expect("before 0 OK 0 lock OK after 1 OK 1");
    c.wait_success();
    assert_eq!(shm.version(), 1);
    assert_eq!(shm.snapshot().unwrap(), [1; 16]);
    assert_eq!(*shm.lock().expect("not poisoned"), [1; 16]);
    assert_eq!(shm.version(), 1, "counted once");
    drop(shm);
    keys.finish();
}

/// Errors and liveness: the C native keys equal Rust's; a missing key, a
/// wrong fingerprint, size, slice flag or length, a foreign file and
/// another format version are each refused with their code (the foreign
/// files left untouched); `tshm_attach_count` and `attach_count` count the
/// handles of both languages, and the C peer's detach, the last, removes
/// the segment.
#[test]
fn c_attach_errors_and_liveness() {
    let row = unique_key("c-err");
    let slice = unique_key("c-err-slice");
    let foreign = unique_key("c-err-foreign");
    let old = unique_key("c-err-old");
    let missing = unique_key("c-err-missing");
    let keys = Keys::new(&[&row, &slice, &foreign, &old, &missing]);

    let names = [
        "telemetry",
        "abcdefghijklmnopqrstuvwxy",
        "my app/ü",
        "/",
        "a b",
        &row,
    ];
    let mut args = vec!["keys"];
    args.extend(names);
    args.push("");
    let mut c = CProc::spawn("attach_check", &args);
    for name in names {
        c.expect(&format!("key OK {}", typed_shm::native_key(name).unwrap()));
    }
    c.expect("key KEY -");
    c.wait_success();

    let attach = |key: &str, fp: u64, size: usize, align: usize, is_slice: bool, count: u64| {
        let args = [
            key.to_string(),
            hex(fp),
            size.to_string(),
            align.to_string(),
            u8::from(is_slice).to_string(),
            count.to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut c = CProc::spawn("attach_check", &args);
        let line = c.line(LINE);
        (c, line)
    };
    let fp = Row::FINGERPRINT;
    let (mut c, line) = attach(&missing, fp, 128, 8, false, 1);
    assert_eq!(line, "attach NOT_FOUND desc=");
    c.wait_success();

    let shm = SharedMemory::<Row>::create(&row, [0; 16]).unwrap();
    for (fp, size, is_slice) in [(fp ^ 1, 128, false), (fp, 64, false), (fp, 128, true)] {
        let (mut c, line) = attach(&row, fp, size, 8, is_slice, 1);
        assert_eq!(line, "attach LAYOUT desc=[u64; 16]", "{fp:#x} {size} {is_slice}");
        c.wait_success();
    }
    let cells = SharedMemory::<[u32]>::create_slice(&slice, 5, 9).unwrap();
    let fp32 = <u32 as ShmSafe>::FINGERPRINT;
    for (count, is_slice, expected) in [
        (5, true, "attach OK desc=u32"),
        (0, true, "attach OK desc=u32"),
        (6, true, "attach LAYOUT desc=u32"),
        (1, false, "attach LAYOUT desc=u32"),
    ] {
        let (mut c, line) = attach(&slice, fp32, 4, 4, is_slice, count);
        assert_eq!(line, expected, "count {count}, slice {is_slice}");
        if line.starts_with("attach OK") {
            c.expect("count 2");
            c.send("detach");
            c.expect("detached OK");
        }
        c.wait_success();
    }
    drop(cells);

    // A foreign file, and a header of format version 1: refused, untouched.
    std::fs::write(shm_path(&foreign), vec![0xab_u8; 4096]).unwrap();
    let mut v1 = vec![0u8; 8192];
    v1[..8].copy_from_slice(b"TYPEDSHM");
    v1[8..12].copy_from_slice(&1u32.to_ne_bytes());
    v1[352..356].copy_from_slice(&0x5245_4459u32.to_ne_bytes());
    std::fs::write(shm_path(&old), &v1).unwrap();
    for (key, expected) in [
        (&foreign, "attach CORRUPTED desc="),
        (&old, "attach VERSION desc="),
    ] {
        let (mut c, line) = attach(key, fp, 128, 8, false, 1);
        assert_eq!(line, expected);
        c.wait_success();
        assert!(exists(key), "a refused file is left untouched");
        std::fs::remove_file(shm_path(key)).unwrap();
    }

    // attach_count across languages; the C detach, the last, removes it.
    let (mut c, line) = attach(&row, fp, 128, 8, false, 1);
    assert_eq!(line, "attach OK desc=[u64; 16]");
    c.expect("count 2");
    let second = SharedMemory::<Row>::attach(&row).unwrap();
    assert_eq!(shm.attach_count(), 3);
    c.send("count");
    c.expect("count 3");
    // Many handles: the count splits the slot range around each one found.
    let many: Vec<_> = (0..40)
        .map(|_| SharedMemory::<Row>::attach(&row).unwrap())
        .collect();
    c.send("count");
    c.expect("count 43");
    assert_eq!(shm.attach_count(), 43);
    drop(many);
    drop(second);
    shm.detach().unwrap();
    c.send("count");
    c.expect("count 1");
    assert!(exists(&row), "the C handle is still attached");
    c.send("detach");
    c.expect("detached OK");
    assert!(!exists(&row), "the last detach, in C, removes the segment");
    c.wait_success();
    keys.finish();
}

/// The offsets `include/typed_shm.h` uses are the ones SPEC.md's header
/// table gives, field by field (both are read as text here: a field renamed
/// or moved in one and not the other fails).
#[test]
fn the_c_header_offsets_match_spec_md() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let spec = std::fs::read_to_string(root.join("SPEC.md")).unwrap();
    let header = std::fs::read_to_string(root.join("include/typed_shm.h")).unwrap();
    let table: Vec<(String, u64)> = spec
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let offset = cells.get(1)?.parse().ok()?;
            let field = cells.get(3)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((field.to_string(), offset))
        })
        .collect();
    assert!(table.len() >= 20, "SPEC.md's header table: {table:?}");
    let defines: Vec<(String, u64)> = header
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("#define TSHM__OFF_")?;
            let (name, value) = rest.split_once(' ')?;
            Some((name.to_lowercase(), value.trim().parse().ok()?))
        })
        .collect();
    assert!(defines.len() >= 20, "the header's offsets: {defines:?}");
    for (name, offset) in &defines {
        let in_spec = table.iter().find(|(f, _)| f == name);
        assert_eq!(
            in_spec.map(|(_, o)| *o),
            Some(*offset),
            "field {name}: offset {offset} in typed_shm.h"
        );
    }
    assert!(spec.contains("Fixed part, 576 bytes"));
    assert!(header.contains("#define TSHM_HEADER_SIZE 576"));
}

/// A C process in another PID namespace than the segment's creator is
/// refused with `TSHM_E_PID_NAMESPACE` (robust locks name their owners by
/// thread id, which repeat across PID namespaces). Needs root, for a new PID
/// namespace (`unshare --pid --fork`).
#[test]
fn a_c_process_in_another_pid_namespace_is_refused() {
    const TEST: &str = "a_c_process_in_another_pid_namespace_is_refused";
    if !common::require_root(TEST, "a new PID namespace") {
        return;
    }
    let key = unique_key("c-pidns");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Row>::create(&key, [0; 16]).unwrap();
    let program = c_program("attach_check");
    let fp = hex(Row::FINGERPRINT);
    let result = Command::new("unshare")
        .args(["--pid", "--fork"])
        .arg(&program)
        .args([key.as_str(), &fp, "128", "8", "0", "1"])
        .stdin(Stdio::null())
        .output();
    let Ok(output) = result else {
        common::skip(TEST, "the unshare command (util-linux) is not installed");
        return;
    };
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "attach PID_NAMESPACE desc="
    );
    assert_eq!(shm.attach_count(), 1, "the refused process holds nothing");
    drop(shm);
    keys.finish();
}

//! The second process of the cross-process benchmarks.
//!
//! The bench binary re-executes itself (`std::env::current_exe()`, never
//! `fork`) with [`ENV`] naming the role, the subject and the object. The
//! child attaches, says `ready`, then serves commands on stdin: a number `n`
//! runs `n` iterations of its side of the work and answers `done`; end of
//! input detaches and exits. Every wait on either side has a timeout, the
//! child dies with its parent (`PR_SET_PDEATHSIG`) and exits on its own
//! after a long silence, so a bug fails the run instead of hanging it.
//!
//! The holding role ([`Role::Hold`]) answers differently: for every line it
//! locks, writes through the guard, says `held`, and keeps the guard until
//! the next line, which releases it (a rollback: nothing is committed);
//! then it says `done`.
#![allow(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use crate::floor::Locked;
use crate::futex::FutexWord;
use crate::peer::Peer;
use crate::pin;
use crate::seqlock::SeqLocked;
use crate::subject::{self, Cell, Notify};
use crate::typed::{TxnCell, TypedCell};

/// The environment variable that makes the bench binary a child.
pub const ENV: &str = "TYPED_SHM_BENCH_CHILD";

/// How long the parent waits for one answer of the child.
const ANSWER: Duration = Duration::from_secs(60);
/// How long a child lives without a command before it gives up.
const IDLE: Duration = Duration::from_secs(120);

/// The work the child does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `n` increments of the shared counter.
    Contended,
    /// `n` turns of side 1 of the ping-pong.
    Pingpong,
    /// Commits until told to stop (`n` is not used).
    Writer,
    /// `n` turns of side 1 of `wait_pingpong` (a subject with a change
    /// count: typed-shm or the futex floor).
    WaitPingpong,
    /// Holds a written, uncommitted write guard of a transactional segment
    /// from one line to the next (`n` is not used; see the module docs).
    Hold,
}

/// The subject the child attaches with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    /// typed-shm.
    Typed,
    /// The libc floor.
    Floor,
    /// shared_memory + raw_sync.
    Peer,
    /// The libc floor with a sequence word (the seqlock floor).
    SeqFloor,
    /// The libc floor with a futex word (the futex ping-pong floor).
    FutexFloor,
    /// typed-shm, a transactional segment.
    Txn,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Contended => "contended",
            Role::Pingpong => "pingpong",
            Role::Writer => "writer",
            Role::WaitPingpong => "wait_pingpong",
            Role::Hold => "hold",
        }
    }
}

impl Subject {
    fn as_str(self) -> &'static str {
        match self {
            Subject::Typed => "typed",
            Subject::Floor => "floor",
            Subject::Peer => "peer",
            Subject::SeqFloor => "seqfloor",
            Subject::FutexFloor => "futexfloor",
            Subject::Txn => "txn",
        }
    }
}

/// The parent's end of a child process.
pub struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Worker {
    /// Starts the child, pinned to `cpu` if given, and waits until it has
    /// attached to `name`.
    ///
    /// # Panics
    ///
    /// If the child cannot be started or does not attach in time.
    pub fn spawn(role: Role, subject: Subject, name: &str, cpu: Option<usize>) -> Worker {
        let exe = std::env::current_exe().expect("current_exe");
        let cpu = cpu.map_or_else(|| "-".to_owned(), |c| c.to_string());
        let mut child = Command::new(exe)
            .env(
                ENV,
                format!("{} {} {name} {cpu}", role.as_str(), subject.as_str()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the child process");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut w = Worker { child, stdin, lines };
        w.expect("ready");
        w
    }

    /// Tells the child to run `n` iterations; returns at once.
    pub fn start(&mut self, n: u64) {
        let stdin = self.stdin.as_mut().expect("child stdin open");
        writeln!(stdin, "{n}").expect("write to the child");
        stdin.flush().expect("flush to the child");
    }

    /// Waits until the child has finished its `n` iterations.
    pub fn finish(&mut self) {
        self.expect("done");
    }

    /// [`Role::Hold`]: waits until the child holds its written guard (after
    /// [`start`](Self::start)).
    pub fn await_held(&mut self) {
        self.expect("held");
    }

    /// [`Role::Hold`]: tells the child to release its guard; returns at once
    /// ([`finish`](Self::finish) waits for the release).
    pub fn release(&mut self) {
        self.start(0);
    }

    fn expect(&mut self, what: &str) {
        match self.lines.recv_timeout(ANSWER) {
            Ok(line) if line == what => {}
            Ok(line) => panic!("child said {line:?}, expected {what:?}"),
            Err(e) => {
                let _ = self.child.kill();
                panic!("child did not say {what:?} within {ANSWER:?}: {e}");
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // End of input: the child detaches and exits.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() && !std::thread::panicking() {
                        panic!("child exited with {status}");
                    }
                    return;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    if !std::thread::panicking() {
                        panic!("child did not exit within 10 s of end of input; killed");
                    }
                    return;
                }
            }
        }
    }
}

/// If this process is a child, runs it and returns `true`.
pub fn run_if_child() -> bool {
    let Ok(spec) = std::env::var(ENV) else {
        return false;
    };
    die_with_parent();
    let mut parts = spec.split(' ');
    let (Some(role), Some(subject), Some(name), Some(cpu), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        panic!("bad {ENV}: {spec:?}");
    };
    if cpu != "-" {
        // Pinned for the life of the process.
        std::mem::forget(pin::pin(cpu.parse().expect("a CPU number")));
    }
    let role = match role {
        "contended" => Role::Contended,
        "pingpong" => Role::Pingpong,
        "writer" => Role::Writer,
        "wait_pingpong" => Role::WaitPingpong,
        "hold" => Role::Hold,
        _ => panic!("bad role {role:?}"),
    };
    match (subject, role) {
        ("typed", Role::WaitPingpong) => serve(TypedCell::attach(name), wait_side),
        ("typed", _) => serve(TypedCell::attach(name), |c, n| lock_side(role, c, n)),
        ("floor", _) => serve(Locked::attach(name), |c, n| lock_side(role, c, n)),
        ("peer", _) => serve(Peer::attach(name), |c, n| lock_side(role, c, n)),
        ("seqfloor", _) => serve(SeqLocked::attach(name), |c, n| lock_side(role, c, n)),
        ("futexfloor", Role::WaitPingpong) => serve(FutexWord::attach(name), wait_side),
        ("txn", Role::Hold) => serve_hold(&TxnCell::attach(name)),
        _ => panic!("no {role:?} role for subject {subject:?}"),
    }
    true
}

/// One run of a role that uses the lock only: the start signal, then the
/// work.
fn lock_side<C: Cell>(role: Role, cell: &C, n: u64) {
    subject::signal_start(cell);
    match role {
        Role::Contended => subject::increment(cell, n),
        Role::Pingpong => subject::pingpong(cell, n, 1),
        Role::Writer => subject::write_until_stopped(cell),
        Role::WaitPingpong => panic!("wait_pingpong needs a subject with a change count"),
        Role::Hold => panic!("the holding role has its own loop (serve_hold)"),
    }
}

/// One run of side 1 of `wait_pingpong`: the start signal, which tells the
/// version both sides start from, then the turns.
fn wait_side<N: Notify>(cell: &N, n: u64) {
    let base = cell.signal_start();
    subject::wait_pingpong(cell, n, base, 1);
}

/// Seconds since `START` at the last sign of life of the parent.
static LAST_SEEN: AtomicU64 = AtomicU64::new(0);

/// Attached to `cell`: says `ready`, then for every number `n` on stdin
/// calls `run(&cell, n)` and says `done`.
fn serve<C: Cell>(cell: C, run: impl Fn(&C, u64)) {
    let start = Instant::now();
    exit_when_idle(start);
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").and_then(|()| out.flush()).expect("stdout");
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("read stdin");
        let n: u64 = line.trim().parse().expect("a number of iterations");
        LAST_SEEN.store(start.elapsed().as_secs(), Ordering::Relaxed);
        run(&cell, n);
        LAST_SEEN.store(start.elapsed().as_secs(), Ordering::Relaxed);
        writeln!(out, "done").and_then(|()| out.flush()).expect("stdout");
    }
    drop(cell);
}

/// Exits the process once no command has come for [`IDLE`] (as
/// [`LAST_SEEN`] tells, counted from `start`).
fn exit_when_idle(start: Instant) {
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let idle = start.elapsed().as_secs() - LAST_SEEN.load(Ordering::Relaxed);
            if idle > IDLE.as_secs() {
                eprintln!("bench child: no command for {idle} s, exiting");
                std::process::exit(3);
            }
        }
    });
}

/// [`Role::Hold`], attached to `cell`: says `ready`; then for every line
/// locks, writes [`subject::HELD`] through the guard (the first `DerefMut`:
/// the guard now works on its private copy), says `held`, blocks reading the
/// next line with the guard alive, rolls the guard back (the segment keeps
/// its committed value and version) and says `done`. The child sleeps in
/// `read` while it holds the lock: it takes no CPU from the measured side.
fn serve_hold(cell: &TxnCell) {
    let start = Instant::now();
    exit_when_idle(start);
    let mut out = std::io::stdout().lock();
    let mut say = |what: &str| {
        writeln!(out, "{what}")
            .and_then(|()| out.flush())
            .expect("stdout")
    };
    say("ready");
    let mut lines = std::io::stdin().lock().lines();
    while let Some(line) = lines.next() {
        line.expect("read stdin");
        LAST_SEEN.store(start.elapsed().as_secs(), Ordering::Relaxed);
        let mut guard = cell
            .0
            .0
            .lock()
            .unwrap_or_else(|_| panic!("typed_shm lock poisoned"));
        *guard = subject::HELD;
        say("held");
        let release = lines.next();
        LAST_SEEN.store(start.elapsed().as_secs(), Ordering::Relaxed);
        typed_shm::Guard::rollback(guard).unwrap_or_else(|_| panic!("a transactional segment rolls back"));
        let Some(release) = release else { break };
        release.expect("read stdin");
        say("done");
    }
}

fn die_with_parent() {
    let signal = libc::c_ulong::try_from(libc::SIGKILL).expect("signal numbers are positive");
    // SAFETY: prctl(2) PR_SET_PDEATHSIG reads its second argument as an
    // `unsigned long` signal number (passed as one here) and takes no
    // pointers; SIGKILL is a valid signal.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal) };
    assert_eq!(rc, 0, "prctl(PR_SET_PDEATHSIG)");
}

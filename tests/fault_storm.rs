//! The kill storm: worker processes, each with several threads, update a
//! two-step invariant under the lock (`a += 1; …; b = a`) while the parent
//! SIGKILLs workers at random moments and starts new ones. Threads also
//! re-open their handles, panic under the lock, or forget their guard, say
//! so, and SIGKILL their own process (a thread that ends holding a lock is
//! not a case of poison: see the README).
//!
//! One worker, the *steady* one, is never killed during the first two thirds
//! of the storm: its lock calls are checked against the bound for many
//! times the bound. In the last third, the parent also kills everyone at
//! once, so that `open_or_create` must reclaim.
//!
//! What must hold: every worker is alive until its kill and dies of that
//! SIGKILL (or of its own, right after saying it forgot a guard); no thread panics unexpectedly (a panic ends its worker at once
//! and fails the test); no lock call blocks beyond its bound; every broken
//! invariant a thread finds came with a poison report; kills themselves
//! cause poison (counted apart from the test's own panics and forgotten
//! guards); `open_or_create` always succeeds; nothing is left in `/dev/shm`.
//!
//! `TSHM_STORM_SECS` sets the length (default 15 s, at least 12 s).

#![allow(unsafe_code)]

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Child, Keys, hear, role, say, unique_key};
use typed_shm::{SharedMemory, TryLockError};

/// `[a, b, updates, cause]`: the invariant is `a == b`; `cause` says why the
/// current holder might leave the lock poisoned on purpose.
type Data = [u64; 4];

/// `cause`: an ordinary update (a poison found with this was caused by a kill).
const CAUSE_NONE: u64 = 0;
/// `cause`: the holder panics on purpose.
const CAUSE_PANIC: u64 = 1;
/// `cause`: the holder forgets its guard and waits for its process's kill.
const CAUSE_FORGOT: u64 = 2;

/// Short-lived workers, besides the steady one.
const WORKERS: usize = 4;
const THREADS: usize = 3;
/// `lock_timeout`'s and `open_or_create`'s bound. Nobody holds the lock for
/// more than microseconds, and a dead holder is reported at once, so a call
/// that takes this long is a wedge.
const BOUND: Duration = Duration::from_secs(1);
/// What a call may take before the worker fails: the bound plus slack for
/// a loaded machine.
const LIMIT: Duration = Duration::from_secs(2);
/// Deliberate panics carry this message; any other panic fails the test.
const DELIBERATE: &str = "storm: panic under the lock";

fn storm_duration() -> Duration {
    let secs: u64 = std::env::var("TSHM_STORM_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    Duration::from_secs(secs.max(12))
}

/// A small xorshift generator: no dependency, seeded per thread.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn now_ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64 + 1
}

/// Counters a worker reports (and resets) at every tick.
#[derive(Default)]
struct Stats {
    updates: AtomicUsize,
    calls: AtomicUsize,
    /// Poison found with `cause == CAUSE_NONE`: a kill hit a holder.
    killed: AtomicUsize,
    /// Poison left by a deliberate panic.
    panicked: AtomicUsize,
    /// Poison left by a forgotten guard (released by its process's kill).
    forgotten: AtomicUsize,
    broken: AtomicUsize,
    /// The slowest lock call, in milliseconds (not reset).
    slowest_ms: AtomicU64,
}

impl Stats {
    fn take(&self) -> String {
        let t = |a: &AtomicUsize| a.swap(0, Ordering::Relaxed);
        format!(
            "{} {} {} {} {} {}",
            t(&self.updates),
            t(&self.calls),
            t(&self.killed),
            t(&self.panicked),
            t(&self.forgotten),
            t(&self.broken)
        )
    }
}

fn fail(msg: &str) -> ! {
    say(&format!("FAIL {msg}"));
    std::process::abort();
}

fn open(key: &str) -> SharedMemory<Data> {
    let t = Instant::now();
    let shm = SharedMemory::<Data>::options()
        .timeout(BOUND)
        .open_or_create(key, || [0; 4])
        .unwrap_or_else(|e| fail(&format!("open_or_create: {e} ({:?})", e.kind())));
    if t.elapsed() > LIMIT {
        fail(&format!("open_or_create took {:?}", t.elapsed()));
    }
    shm
}

/// State a worker process shares with its threads.
struct Shared {
    stop: AtomicBool,
    /// The steady worker never forgets a guard (nobody would kill it).
    steady: bool,
    stats: Stats,
    /// The highest update count any thread of this process saw, recorded
    /// under the lock: while this process stays attached (it holds an anchor
    /// handle), the segment can never be re-created, so the count never goes
    /// down.
    seen: AtomicU64,
}

/// One worker thread; returns when `stop` is set. A thread that forgets its
/// guard never returns: it kills its process.
fn work(key: &str, seed: u64, shared: &Shared, in_call: &AtomicU64, start: Instant) {
    let stats = &shared.stats;
    let mut rng = Rng::new(seed);
    let mut shm = open(key);
    while !shared.stop.load(Ordering::Relaxed) {
        if rng.below(200) == 0 {
            drop(shm);
            shm = open(key);
        }
        let kind = rng.below(10);
        in_call.store(now_ms(start), Ordering::Relaxed);
        let t = Instant::now();
        let r = match kind {
            0 => shm.lock().map_err(TryLockError::Poisoned),
            1 => shm.try_lock(),
            _ => shm.lock_timeout(BOUND),
        };
        let took = t.elapsed();
        in_call.store(0, Ordering::Relaxed);
        stats.calls.fetch_add(1, Ordering::Relaxed);
        stats
            .slowest_ms
            .fetch_max(took.as_millis() as u64, Ordering::Relaxed);
        if took > LIMIT {
            fail(&format!("a lock call (kind {kind}) blocked {took:?}"));
        }
        let mut g = match r {
            Ok(g) => {
                if g[0] != g[1] {
                    fail(&format!("broken invariant {:?} without a poison report", &g[..2]));
                }
                g
            }
            Err(TryLockError::Poisoned(p)) => {
                let mut g = p.into_inner();
                match g[3] {
                    CAUSE_NONE => &stats.killed,
                    CAUSE_PANIC => &stats.panicked,
                    CAUSE_FORGOT => &stats.forgotten,
                    other => fail(&format!("unknown cause {other}")),
                }
                .fetch_add(1, Ordering::Relaxed);
                if g[0] != g[1] {
                    stats.broken.fetch_add(1, Ordering::Relaxed);
                    g[1] = g[0];
                }
                g[3] = CAUSE_NONE;
                shm.clear_poison();
                g
            }
            Err(TryLockError::WouldBlock) if kind == 1 => continue,
            Err(TryLockError::WouldBlock) => fail("WouldBlock from a blocking call"),
            Err(TryLockError::TimedOut) => fail(&format!("lock_timeout timed out after {took:?}")),
        };
        let before = shared.seen.fetch_max(g[2], Ordering::Relaxed);
        if g[2] < before {
            fail(&format!(
                "the update count went down from {before} to {}: a segment was re-created while \
                 this process was attached",
                g[2]
            ));
        }
        g[0] += 1;
        // Widen the window in which a kill breaks the invariant.
        for _ in 0..rng.below(2000) {
            std::hint::spin_loop();
        }
        match rng.below(3000) {
            0 => {
                // Panic half-way through the update.
                g[3] = CAUSE_PANIC;
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    let _g = g;
                    panic!("{DELIBERATE}");
                }));
                continue;
            }
            1 if !shared.steady => {
                // Forget the guard half-way through, say so, and die of
                // SIGKILL before this thread could end.
                g[3] = CAUSE_FORGOT;
                std::mem::forget(g);
                say("forgot");
                let me = std::process::id() as i32;
                // SAFETY: kill(2) has no memory preconditions; it ends this
                // very process.
                unsafe { libc::kill(me, libc::SIGKILL) };
                unreachable!("SIGKILL cannot be caught");
            }
            _ => {}
        }
        g[1] = g[0];
        g[2] += 1;
        drop(g);
        stats.updates.fetch_add(1, Ordering::Relaxed);
    }
}

fn worker(key: &str, steady: bool) {
    // A panic other than the deliberate ones ends the worker at once, and
    // the parent fails the test (no thread waits for a panicked one).
    std::panic::set_hook(Box::new(|info| {
        if !info.to_string().contains(DELIBERATE) {
            fail(&format!("panic: {}", info.to_string().replace('\n', " ")));
        }
    }));
    let start = Instant::now();
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        steady,
        stats: Stats::default(),
        seen: AtomicU64::new(0),
    });
    let _anchor = open(key);
    let calls: Arc<Vec<AtomicU64>> = Arc::new((0..THREADS).map(|_| AtomicU64::new(0)).collect());
    {
        // Watchdog: a call still in progress beyond the limit is a wedge.
        // It also reports progress, so kills lose little of the count.
        let calls = calls.clone();
        let shared = shared.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(100));
                say(&format!("tick {}", shared.stats.take()));
                let now = now_ms(start);
                for c in calls.iter() {
                    let since = c.load(Ordering::Relaxed);
                    if since != 0 && now.saturating_sub(since) > LIMIT.as_millis() as u64 {
                        fail(&format!("a lock call has been blocked for {} ms", now - since));
                    }
                }
            }
        });
    }
    say("started");
    let seed = u64::from(std::process::id()) << 20;
    let threads: Vec<_> = (0..THREADS)
        .map(|i| {
            let (shared, calls) = (shared.clone(), calls.clone());
            let key = key.to_string();
            std::thread::spawn(move || work(&key, seed + i as u64, &shared, &calls[i], start))
        })
        .collect();
    assert_eq!(hear(), "stop");
    shared.stop.store(true, Ordering::Relaxed);
    for t in threads {
        // A panic never reaches here: the hook ended the process.
        t.join().expect("worker thread");
    }
    say(&format!(
        "stats {} {}",
        shared.stats.take(),
        shared.stats.slowest_ms.load(Ordering::Relaxed)
    ));
}

/// Sums of the workers' reports.
#[derive(Default, Debug)]
struct Totals {
    updates: usize,
    calls: usize,
    killed: usize,
    panicked: usize,
    forgotten: usize,
    broken: usize,
}

impl Totals {
    fn add(&mut self, numbers: &str) {
        let mut n = numbers.split(' ').map(|n| n.parse::<usize>().expect("a number"));
        for t in [
            &mut self.updates,
            &mut self.calls,
            &mut self.killed,
            &mut self.panicked,
            &mut self.forgotten,
            &mut self.broken,
        ] {
            *t += n.next().expect("six numbers");
        }
    }
}

/// A worker process and what the parent knows of it.
struct Worker {
    child: Child,
    steady: bool,
    born: Instant,
    /// It said it forgot a guard (and then kills itself).
    forgot: bool,
}

struct Storm {
    key: String,
    totals: Totals,
    kills: usize,
    /// Workers that killed themselves after forgetting a guard.
    self_kills: usize,
    massacres: usize,
    /// Lifetimes of steady workers when they were killed or stopped.
    steady_lives: Vec<Duration>,
}

impl Storm {
    fn spawn(&self, steady: bool) -> Worker {
        const ENTRY: &str = "kill_storm_never_wedges_never_hides_a_broken_invariant_leaves_nothing";
        let role = if steady { "steady" } else { "worker" };
        let mut child = Child::spawn(ENTRY, role, &self.key, &[]);
        child.expect("started", Duration::from_secs(10));
        Worker {
            child,
            steady,
            born: Instant::now(),
            forgot: false,
        }
    }

    /// Takes in one line of a worker.
    fn hear(&mut self, w: &mut Worker, line: &str) {
        assert!(!line.starts_with("FAIL"), "a worker failed: {line}");
        if let Some(n) = line.strip_prefix("tick ") {
            self.totals.add(n);
        } else if line == "forgot" {
            w.forgot = true;
        }
    }

    /// Whether `w` ended: only a worker that said it forgot a guard may end
    /// by itself, and only by its own SIGKILL; anything else fails at once.
    fn ended(&mut self, w: &mut Worker) -> bool {
        let Some(status) = w.child.exited() else {
            return false;
        };
        // Its last words: everything it printed before it died.
        while let Some(line) = w.child.lines_within(Duration::from_secs(5)) {
            self.hear(w, &line);
        }
        assert!(
            w.forgot && common::killed_by(&status) == Some(libc::SIGKILL),
            "a worker ended before it was killed: {status}"
        );
        self.self_kills += 1;
        if w.steady {
            self.steady_lives.push(w.born.elapsed());
        }
        true
    }

    /// Reads what the workers said; fails at once on a failure report or on
    /// a worker that ended by itself (other than after forgetting a guard:
    /// that one is replaced).
    fn check(&mut self, workers: &mut [Worker]) {
        for w in workers.iter_mut() {
            while let Some(line) = w.child.try_line() {
                self.hear(w, &line);
            }
            if self.ended(w) {
                *w = self.spawn(w.steady);
            }
        }
    }

    /// Kills `w`, which must still be running, and checks that the SIGKILL
    /// is what ended it.
    fn kill(&mut self, w: &mut Worker) {
        if self.ended(w) {
            // It killed itself after forgetting a guard, just now.
            return;
        }
        if w.steady {
            self.steady_lives.push(w.born.elapsed());
        }
        // (If it kills itself in between, that is a SIGKILL too, and it said
        // "forgot" first; an exit of its own shows here.)
        let status = w.child.kill_and_reap();
        assert_eq!(
            common::killed_by(&status),
            Some(libc::SIGKILL),
            "a worker was not ended by its kill: {status}"
        );
        self.kills += 1;
    }
}

#[test]
fn kill_storm_never_wedges_never_hides_a_broken_invariant_leaves_nothing() {
    if let Some((role, key)) = role() {
        worker(&key, role == "steady");
        return;
    }
    let key = unique_key("storm");
    let keys = Keys::new(&[&key]);
    let mut storm = Storm {
        key: key.clone(),
        totals: Totals::default(),
        kills: 0,
        self_kills: 0,
        massacres: 0,
        steady_lives: Vec::new(),
    };
    let mut workers: Vec<Worker> = std::iter::once(storm.spawn(true))
        .chain((0..WORKERS).map(|_| storm.spawn(false)))
        .collect();
    let mut rng = Rng::new(u64::from(std::process::id()) * 2654435761);
    let length = storm_duration();
    let started = Instant::now();
    let steady_phase = started + length * 2 / 3;
    let end = started + length;
    let mut next_kill = Instant::now();
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
        storm.check(&mut workers);
        if Instant::now() < next_kill {
            continue;
        }
        next_kill = Instant::now() + Duration::from_millis(20 + rng.below(120));
        let late = Instant::now() >= steady_phase;
        if late && (storm.massacres == 0 || rng.below(25) == 0) {
            // Everyone at once: the next open_or_create must reclaim.
            for mut w in std::mem::take(&mut workers) {
                storm.kill(&mut w);
            }
            storm.massacres += 1;
            workers = std::iter::once(storm.spawn(true))
                .chain((0..WORKERS).map(|_| storm.spawn(false)))
                .collect();
        } else {
            // Anyone but the steady worker.
            let i = 1 + rng.below(WORKERS as u64) as usize;
            let mut w = workers.remove(i);
            storm.kill(&mut w);
            workers.insert(i, storm.spawn(false));
        }
    }
    storm.check(&mut workers);
    for w in &mut workers {
        w.child.send("stop");
    }
    let mut slowest = 0;
    let mut last_steady_life = None;
    for w in &mut workers {
        loop {
            let Some(line) = w.child.lines_within(Duration::from_secs(30)) else {
                // No more lines: it must have ended, after forgetting a guard.
                let status = w.child.wait_exit(Duration::from_secs(10));
                assert!(
                    w.forgot && common::killed_by(&status) == Some(libc::SIGKILL),
                    "a stopped worker ended without its stats: {status}"
                );
                storm.self_kills += 1;
                break;
            };
            if let Some(n) = line.strip_prefix("stats ") {
                let (counts, ms) = n.rsplit_once(' ').expect("stats line");
                storm.totals.add(counts);
                let ms: u64 = ms.parse().expect("milliseconds");
                slowest = slowest.max(ms);
                if w.steady {
                    last_steady_life = Some(w.born.elapsed());
                }
                let status = w.child.wait_exit(Duration::from_secs(30));
                assert!(status.success(), "a stopped worker failed: {status}");
                break;
            }
            storm.hear(w, &line);
        }
    }
    let t = &storm.totals;
    let first_steady = storm.steady_lives.first().copied().or(last_steady_life);
    common::tell(&format!(
        "storm: {} kills ({} of everyone) and {} workers that killed themselves after forgetting \
         a guard, {} updates in {} lock calls (slowest {slowest} ms at \
         the end, bound {BOUND:?}, limit {LIMIT:?}); poison reports: {} caused by kills, {} by the \
         test's own panics ({}) and forgotten guards ({}); {} broken invariants found and \
         repaired; first steady worker lived {:.1?}\n",
        storm.kills,
        storm.massacres,
        storm.self_kills,
        t.updates,
        t.calls,
        t.killed,
        t.panicked + t.forgotten,
        t.panicked,
        t.forgotten,
        t.broken,
        first_steady.unwrap_or_default(),
    ));
    let first_steady = first_steady.expect("a steady worker");
    assert!(
        first_steady >= LIMIT * 4,
        "the steady worker lived {first_steady:?}: too short to check the bound"
    );
    assert!(t.updates > 1000, "too little progress: {}", t.updates);
    assert!(
        t.killed > 0,
        "no kill ever hit a holder: the storm did not test poisoning by death"
    );
    assert!(storm.kills > 30, "too few kills: {}", storm.kills);
    assert!(storm.massacres > 0, "everyone was never killed at once");
    keys.finish();
}

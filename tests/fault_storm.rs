//! The kill storm: worker processes, each with several threads, update a
//! two-step invariant under the lock (`a += 1; …; b = a`) while the parent
//! SIGKILLs workers at random moments — one at a time, sometimes all at once —
//! and starts new ones, for tens of seconds. Threads also re-open their
//! handles, panic under the lock, or end holding it.
//!
//! What must hold: no lock call blocks beyond its bound; every broken
//! invariant a thread finds came with a poison report; `open_or_create`
//! always succeeds (reclaiming when everyone was killed); and nothing is left
//! in `/dev/shm` at the end.

mod common;

use std::io::BufRead;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Child, Keys, role, say, unique_key};
use typed_shm::{SharedMemory, TryLockError};

/// `[a, b, updates, unused]`: the invariant is `a == b`.
type Data = [u64; 4];

const WORKERS: usize = 4;
const THREADS: usize = 3;
/// `lock_timeout`'s bound; `lock` must not take longer either.
const BOUND: Duration = Duration::from_secs(3);
/// Slack for a loaded machine on top of a bound.
const SLACK: Duration = Duration::from_secs(2);

fn storm_duration() -> Duration {
    let secs = std::env::var("TSHM_STORM_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(secs)
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

#[derive(Default)]
struct Stats {
    updates: AtomicUsize,
    poisoned: AtomicUsize,
    broken: AtomicUsize,
}

fn fail(msg: &str) -> ! {
    say(&format!("FAIL {msg}"));
    std::process::exit(1);
}

fn open(key: &str) -> SharedMemory<Data> {
    let t = Instant::now();
    let shm = SharedMemory::<Data>::options()
        .timeout(BOUND)
        .open_or_create(key, || [0; 4])
        .unwrap_or_else(|e| fail(&format!("open_or_create: {e} ({:?})", e.kind())));
    if t.elapsed() > BOUND + SLACK {
        fail(&format!("open_or_create took {:?}", t.elapsed()));
    }
    shm
}

/// One worker thread. Returns when `stop` is set, or early when it chose to
/// end holding the lock (the caller starts a replacement).
/// State a worker process shares with its threads.
struct Shared {
    stop: AtomicBool,
    stats: Stats,
    /// The highest update count any thread of this process saw, recorded
    /// under the lock: while this process stays attached (it holds an anchor
    /// handle), the segment can never be re-created, so the count never goes
    /// down.
    seen: AtomicU64,
}

fn work(key: &str, seed: u64, shared: &Shared, in_call: &AtomicU64, start: Instant) {
    let (stop, stats) = (&shared.stop, &shared.stats);
    let mut rng = Rng::new(seed);
    let mut shm = open(key);
    while !stop.load(Ordering::Relaxed) {
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
        let limit = if kind == 1 { SLACK } else { BOUND + SLACK };
        if took > limit {
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
                stats.poisoned.fetch_add(1, Ordering::Relaxed);
                let mut g = p.into_inner();
                if g[0] != g[1] {
                    stats.broken.fetch_add(1, Ordering::Relaxed);
                    g[1] = g[0];
                }
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
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    let _g = g;
                    panic!("storm: panic under the lock");
                }));
                continue;
            }
            1 => {
                // End this thread holding the lock, half-way through.
                std::mem::forget(g);
                return;
            }
            _ => {}
        }
        g[1] = g[0];
        g[2] += 1;
        drop(g);
        stats.updates.fetch_add(1, Ordering::Relaxed);
    }
}

fn worker(key: &str) {
    std::panic::set_hook(Box::new(|info| {
        if !info.to_string().contains("storm: panic under the lock") {
            eprintln!("{info}");
        }
    }));
    let start = Instant::now();
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        stats: Stats::default(),
        seen: AtomicU64::new(0),
    });
    let _anchor = open(key);
    let calls: Arc<Vec<AtomicU64>> = Arc::new((0..THREADS).map(|_| AtomicU64::new(0)).collect());
    {
        let shared = shared.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
            shared.stop.store(true, Ordering::Relaxed);
        });
    }
    {
        // Watchdog: a call still in progress beyond its bound is a wedge.
        // It also reports progress, so kills lose little of the count.
        let calls = calls.clone();
        let shared = shared.clone();
        std::thread::spawn(move || {
            let stats = &shared.stats;
            loop {
                std::thread::sleep(Duration::from_millis(200));
                say(&format!(
                    "tick {} {} {}",
                    stats.updates.swap(0, Ordering::Relaxed),
                    stats.poisoned.swap(0, Ordering::Relaxed),
                    stats.broken.swap(0, Ordering::Relaxed)
                ));
                let now = now_ms(start);
                for c in calls.iter() {
                    let since = c.load(Ordering::Relaxed);
                    if since != 0 && now.saturating_sub(since) > (BOUND + SLACK + SLACK).as_millis() as u64 {
                        fail(&format!("a lock call has been blocked for {} ms", now - since));
                    }
                }
            }
        });
    }
    say("started");
    let seed = u64::from(std::process::id()) << 20;
    let mut generation = 0u64;
    std::thread::scope(|s| {
        let mut handles: Vec<_> = (0..THREADS).map(|_| None).collect();
        while !shared.stop.load(Ordering::Relaxed) {
            for (i, h) in handles.iter_mut().enumerate() {
                let finished = h
                    .as_ref()
                    .is_none_or(|h: &std::thread::ScopedJoinHandle<()>| h.is_finished());
                if finished {
                    if let Some(old) = h.take() {
                        old.join().expect("worker thread");
                    }
                    generation += 1;
                    let (shared, calls) = (&shared, &calls);
                    let thread_seed = seed + generation * 7919 + i as u64;
                    *h = Some(s.spawn(move || work(key, thread_seed, shared, &calls[i], start)));
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    say(&format!(
        "stats {} {} {}",
        shared.stats.updates.load(Ordering::Relaxed),
        shared.stats.poisoned.load(Ordering::Relaxed),
        shared.stats.broken.load(Ordering::Relaxed)
    ));
}

/// Sums of the workers' reports: updates, poison reports, broken invariants.
#[derive(Default, Debug)]
struct Totals([usize; 3]);

impl Totals {
    fn add(&mut self, numbers: &str) {
        for (t, n) in self.0.iter_mut().zip(numbers.split(' ')) {
            *t += n.parse::<usize>().expect("a number");
        }
    }
}

fn check_lines(workers: &mut [Child], totals: &mut Totals) {
    for w in workers.iter_mut() {
        while let Some(line) = w.try_line() {
            assert!(!line.starts_with("FAIL"), "a worker failed: {line}");
            if let Some(n) = line.strip_prefix("tick ") {
                totals.add(n);
            }
        }
    }
}

#[test]
fn kill_storm_never_wedges_never_hides_a_broken_invariant_leaves_nothing() {
    const ENTRY: &str = "kill_storm_never_wedges_never_hides_a_broken_invariant_leaves_nothing";
    if let Some((_, key)) = role() {
        worker(&key);
        return;
    }
    let key = unique_key("storm");
    let keys = Keys::new(&[&key]);
    let spawn = || {
        let mut c = Child::spawn(ENTRY, "worker", &key, &[]);
        c.expect("started", Duration::from_secs(10));
        c
    };
    let mut workers: Vec<Child> = (0..WORKERS).map(|_| spawn()).collect();
    let mut rng = Rng::new(u64::from(std::process::id()) * 2654435761);
    let (mut kills, mut massacres) = (0, 0);
    let mut totals = Totals::default();
    let end = Instant::now() + storm_duration();
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20 + rng.below(120)));
        check_lines(&mut workers, &mut totals);
        if rng.below(25) == 0 {
            // Everyone at once: the next open_or_create must reclaim.
            for w in &mut workers {
                w.kill();
            }
            kills += workers.len();
            massacres += 1;
            workers = (0..WORKERS).map(|_| spawn()).collect();
        } else {
            let i = rng.below(WORKERS as u64) as usize;
            workers[i].kill();
            kills += 1;
            workers[i] = spawn();
        }
    }
    check_lines(&mut workers, &mut totals);
    for w in &mut workers {
        w.send("stop");
    }
    for w in &mut workers {
        loop {
            let line = w.next_line(Duration::from_secs(30));
            assert!(!line.starts_with("FAIL"), "a worker failed: {line}");
            if let Some(n) = line.strip_prefix("tick ") {
                totals.add(n);
            } else if let Some(n) = line.strip_prefix("stats ") {
                totals.add(n);
                break;
            }
        }
        w.wait_success(Duration::from_secs(30));
    }
    let [updates, poisoned, broken] = totals.0;
    eprintln!(
        "storm: {kills} kills ({massacres} of everyone), {updates} updates, {poisoned} poison \
         reports, {broken} broken invariants found and repaired"
    );
    assert!(updates > 1000, "too little progress: {updates}");
    assert!(
        poisoned > 0,
        "no kill ever hit a holder: the storm did not test poisoning"
    );
    assert!(kills > 50, "too few kills: {kills}");
    assert!(updates > 0, "the last workers made no progress");
    keys.finish();
}

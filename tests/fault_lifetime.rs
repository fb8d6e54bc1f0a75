//! Lifetime under faults: simultaneous detaches, racing creators, killed
//! attachers and creators, everyone killed, and handles inherited by `fork()`.
//!
//! Children are re-runs of this test binary in a role (see `common`); every
//! wait has a deadline and every test ends by checking that its segments are
//! gone from `/dev/shm`.
#![allow(unsafe_code)]

mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{Child, Keys, hear, role, say, unique_key, wait_until};
use typed_shm::{ErrorKind, SharedMemory, TryLockError};

type Data = [u64; 4];

const LINE: Duration = Duration::from_secs(10);

fn exists(key: &str) -> bool {
    common::exists(key)
}

/// Detaches that happen at the same instant, in threads with their own
/// handles (each handle has its own open file description, exactly as in
/// separate processes): whoever is last must remove the object, every round.
#[test]
fn simultaneous_last_detaches_in_threads_remove_the_segment() {
    const HANDLES: usize = 6;
    const ROUNDS: usize = 150;
    let key = unique_key("simul-detach-threads");
    let keys = Keys::new(&[&key]);
    for round in 0..ROUNDS {
        let first = SharedMemory::<Data>::create(&key, [round as u64; 4]).expect("create");
        let mut handles = vec![first];
        for _ in 1..HANDLES {
            handles.push(SharedMemory::<Data>::attach(&key).expect("attach"));
        }
        assert_eq!(handles[0].attach_count(), HANDLES);
        let barrier = Arc::new(Barrier::new(HANDLES));
        let threads: Vec<_> = handles
            .into_iter()
            .map(|h| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    h.detach()
                })
            })
            .collect();
        for t in threads {
            t.join().expect("detaching thread").expect("detach");
        }
        // The last detach unlinks before it returns: no waiting needed.
        assert!(
            !exists(&key),
            "round {round}: segment left behind after simultaneous detaches"
        );
    }
    keys.finish();
}

/// The same across processes: four children attach, wait for a go signal
/// (a file they poll without sleeping), and detach together with the parent.
#[test]
fn simultaneous_last_detaches_in_processes_remove_the_segment() {
    const CHILDREN: usize = 4;
    const ROUNDS: usize = 25;
    if let Some((_, key)) = role() {
        let go_dir = std::env::var("TSHM_GO_DIR").expect("go dir");
        for round in 0..ROUNDS {
            let k = format!("{key}-{round}");
            let deadline = Instant::now() + LINE;
            let shm = loop {
                match SharedMemory::<Data>::attach(&k) {
                    Ok(s) => break s,
                    Err(e) if e.kind() == ErrorKind::NotFound && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(e) => panic!("attach {k}: {e}"),
                }
            };
            say(&format!("ready {round}"));
            let go = format!("{go_dir}/go-{round}");
            while std::fs::metadata(&go).is_err() {
                assert!(Instant::now() < deadline, "no go signal");
                std::hint::spin_loop();
            }
            shm.detach().expect("detach");
        }
        say("done");
        return;
    }
    let base = unique_key("simul-detach-procs");
    let names: Vec<String> = (0..ROUNDS).map(|r| format!("{base}-{r}")).collect();
    let keys = Keys::new(&names.iter().map(String::as_str).collect::<Vec<_>>());
    let go_dir = std::env::temp_dir().join(format!("tshm-go-{}", std::process::id()));
    std::fs::create_dir_all(&go_dir).unwrap();
    let go_env = [("TSHM_GO_DIR", go_dir.to_string_lossy().into_owned())];
    let first = SharedMemory::<Data>::create(&names[0], [0; 4]).expect("create");
    let mut children: Vec<Child> = (0..CHILDREN)
        .map(|_| {
            Child::spawn(
                "simultaneous_last_detaches_in_processes_remove_the_segment",
                "detacher",
                &base,
                &go_env,
            )
        })
        .collect();
    let mut shm = Some(first);
    for (round, name) in names.iter().enumerate() {
        let s = match shm.take() {
            Some(s) => s,
            None => SharedMemory::<Data>::create(name, [round as u64; 4]).expect("create"),
        };
        for c in &mut children {
            c.expect(&format!("ready {round}"), LINE);
        }
        assert_eq!(s.attach_count(), CHILDREN + 1);
        std::fs::write(go_dir.join(format!("go-{round}")), b"").unwrap();
        s.detach().expect("detach");
        assert!(
            wait_until(Duration::from_secs(5), || !exists(name)),
            "round {round}: segment left behind after simultaneous detaches"
        );
    }
    for c in &mut children {
        c.expect("done", LINE);
        c.wait_success(LINE);
    }
    let _ = std::fs::remove_dir_all(&go_dir);
    keys.finish();
}

/// Attachers arriving while the last handle detaches: each attach either
/// gets a live segment or `NotFound` — never an error, never a hang — and the
/// segment is gone once everyone is done.
#[test]
fn attaches_racing_the_last_detach_never_leak_nor_fail() {
    const ROUNDS: usize = 200;
    let key = unique_key("attach-vs-detach");
    let keys = Keys::new(&[&key]);
    for round in 0..ROUNDS {
        let owner = SharedMemory::<Data>::create(&key, [round as u64; 4]).expect("create");
        let barrier = Arc::new(Barrier::new(3));
        let attachers: Vec<_> = (0..2)
            .map(|_| {
                let barrier = barrier.clone();
                let key = key.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    match SharedMemory::<Data>::attach(&key) {
                        Ok(s) => {
                            // A live segment: it holds this round's data.
                            assert_eq!(s.lock().expect("not poisoned")[0], round as u64);
                            true
                        }
                        Err(e) if e.kind() == ErrorKind::NotFound => false,
                        Err(e) => panic!("round {round}: attach racing a detach failed: {e}"),
                    }
                })
            })
            .collect();
        barrier.wait();
        owner.detach().expect("detach");
        for a in attachers {
            a.join().expect("attacher");
        }
        assert!(!exists(&key), "round {round}: segment left behind");
    }
    keys.finish();
}

/// Threads (each with its own handle, so its own open file description)
/// calling `open_or_create` at the same instant on a free key: exactly one
/// creates, all share its data, none fails.
#[test]
fn concurrent_open_or_create_makes_exactly_one_segment() {
    const THREADS: usize = 6;
    const ROUNDS: usize = 300;
    let key = unique_key("racing-ooc");
    let keys = Keys::new(&[&key]);
    // Busy threads make preemption between a creator's steps likely.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|id| {
                let barrier = barrier.clone();
                let key = key.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    let shm = SharedMemory::<Data>::open_or_create(&key, || [id as u64, round as u64, 0, 0])
                        .unwrap_or_else(|e| panic!("round {round}: open_or_create failed: {e}"));
                    (shm.created(), shm)
                })
            })
            .collect();
        let results: Vec<(bool, SharedMemory<Data>)> =
            threads.into_iter().map(|t| t.join().expect("thread")).collect();
        let creators = results.iter().filter(|(c, _)| *c).count();
        assert_eq!(
            creators, 1,
            "round {round}: {creators} handles say they created the segment"
        );
        let creator = results.iter().find(|(c, _)| *c).unwrap();
        let value = *creator.1.lock().expect("not poisoned");
        assert_eq!(value[1], round as u64);
        for (_, s) in &results {
            assert_eq!(
                *s.lock().expect("not poisoned"),
                value,
                "round {round}: two different segments"
            );
        }
        assert_eq!(results[0].1.attach_count(), THREADS, "round {round}");
        drop(results);
        assert!(!exists(&key), "round {round}: segment left behind");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in spinners {
        s.join().expect("spinner");
    }
    keys.finish();
}

/// An attacher is killed while the creator lives: a new attach sees the live
/// data (never a re-initialized segment), and `attach_count` drops the dead
/// one once it is reaped. Then the reverse: the creator is killed while an
/// attacher lives.
#[test]
fn killed_attacher_or_creator_leaves_the_live_data_alone() {
    const ENTRY: &str = "killed_attacher_or_creator_leaves_the_live_data_alone";
    if let Some((role, key)) = role() {
        let shm = match role.as_str() {
            "create" => SharedMemory::<Data>::create(&key, [7; 4]).expect("create"),
            _ => SharedMemory::<Data>::attach(&key).expect("attach"),
        };
        if role == "write" {
            *shm.lock().expect("not poisoned") = [1, 2, 3, 4];
        }
        say("attached");
        hear();
        return;
    }
    let key = unique_key("killed-peer");
    let keys = Keys::new(&[&key]);
    {
        let owner = SharedMemory::<Data>::create(&key, [9; 4]).expect("create");
        let mut writer = Child::spawn(ENTRY, "write", &key, &[]);
        writer.expect("attached", LINE);
        assert_eq!(owner.attach_count(), 2);
        writer.kill();
        assert!(
            wait_until(Duration::from_secs(5), || owner.attach_count() == 1),
            "attach_count still counts the killed attacher: {}",
            owner.attach_count()
        );
        let again = SharedMemory::<Data>::open_or_create(&key, || [0; 4]).expect("open_or_create");
        assert!(!again.created(), "a live segment was re-created");
        assert_eq!(*again.lock().expect("not poisoned"), [1, 2, 3, 4]);
        let mut reader = Child::spawn(ENTRY, "attach", &key, &[]);
        reader.expect("attached", LINE);
        assert_eq!(owner.attach_count(), 3);
        reader.send("bye");
        reader.wait_success(LINE);
        assert_eq!(owner.attach_count(), 2);
    }
    assert!(!exists(&key));
    {
        let mut creator = Child::spawn(ENTRY, "create", &key, &[]);
        creator.expect("attached", LINE);
        let survivor = SharedMemory::<Data>::attach(&key).expect("attach");
        *survivor.lock().expect("not poisoned") = [5; 4];
        creator.kill();
        assert!(wait_until(Duration::from_secs(5), || survivor.attach_count() == 1));
        let again = SharedMemory::<Data>::open_or_create(&key, || [0; 4]).expect("open_or_create");
        assert!(
            !again.created(),
            "a live segment was re-created after its creator died"
        );
        assert_eq!(*again.lock().expect("not poisoned"), [5; 4]);
        assert_eq!(
            SharedMemory::<Data>::create(&key, [0; 4]).unwrap_err().kind(),
            ErrorKind::AlreadyExists
        );
    }
    keys.finish();
}

/// A creator killed while its `init` runs (holding the creation lock): an
/// attacher waits at most its timeout and gets `TimedOut` — during the
/// initialization and after the death — and `open_or_create` (and `create`)
/// then reclaim the key.
#[test]
fn creator_killed_mid_initialization_times_out_then_is_reclaimed() {
    const ENTRY: &str = "creator_killed_mid_initialization_times_out_then_is_reclaimed";
    if let Some((_, key)) = role() {
        stuck_creator(&key);
    }
    let key = unique_key("mid-init");
    let keys = Keys::new(&[&key]);
    let bound = Duration::from_millis(300);
    for reclaim_with_create in [false, true] {
        let mut creator = Child::spawn(ENTRY, "creator", &key, &[]);
        creator.expect("initializing", LINE);
        let t = Instant::now();
        let err = SharedMemory::<Data>::options()
            .timeout(bound)
            .attach(&key)
            .unwrap_err();
        let waited = t.elapsed();
        assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
        assert!(
            waited >= bound && waited < bound + Duration::from_secs(2),
            "waited {waited:?}"
        );
        creator.kill();
        let t = Instant::now();
        let err = SharedMemory::<Data>::options()
            .timeout(bound)
            .attach(&key)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
        assert!(t.elapsed() < bound + Duration::from_secs(2));
        assert!(
            err.to_string().contains("reclaim"),
            "the message says what to do: {err}"
        );
        let fresh = if reclaim_with_create {
            SharedMemory::<Data>::create(&key, [3; 4]).expect("create reclaims")
        } else {
            SharedMemory::<Data>::open_or_create(&key, || [3; 4]).expect("open_or_create reclaims")
        };
        assert!(fresh.created());
        assert!(!fresh.is_poisoned());
        assert_eq!(*fresh.lock().expect("not poisoned"), [3; 4]);
        assert_eq!(fresh.attach_count(), 1);
        drop(fresh);
        assert!(!exists(&key));
    }
    keys.finish();
}

/// What a creator killed at the very first steps leaves: an empty object (died
/// right after `shm_open`) or a zero-filled one (died after reserving its
/// size with `posix_fallocate`).
/// `attach` times out within its bound, `open_or_create` reclaims.
#[test]
fn creator_killed_before_writing_the_header_is_reclaimed() {
    let key = unique_key("empty-stale");
    let keys = Keys::new(&[&key]);
    let bound = Duration::from_millis(200);
    for len in [0usize, 4096 + 32] {
        std::fs::write(common::shm_path(&key), vec![0u8; len]).unwrap();
        let t = Instant::now();
        let err = SharedMemory::<Data>::options()
            .timeout(bound)
            .attach(&key)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut, "len {len}: {err}");
        assert!(t.elapsed() < bound + Duration::from_secs(2));
        let shm = SharedMemory::<Data>::open_or_create(&key, || [4; 4]).expect("reclaim");
        assert!(shm.created(), "len {len}");
        assert_eq!(*shm.lock().expect("not poisoned"), [4; 4]);
        drop(shm);
        assert!(!exists(&key));
    }
    keys.finish();
}

/// Every attached process is killed, one of them while holding the lock:
/// the next `open_or_create` reclaims the key and starts fresh — created,
/// initialized anew, not poisoned.
#[test]
fn everyone_killed_one_holding_the_lock_then_reclaimed_fresh() {
    const ENTRY: &str = "everyone_killed_one_holding_the_lock_then_reclaimed_fresh";
    if let Some((role, key)) = role() {
        let shm = SharedMemory::<Data>::open_or_create(&key, || [1; 4]).expect("open_or_create");
        if role == "holder" {
            let mut g = shm.lock().expect("not poisoned");
            g[0] = 99;
            say("holding");
            hear();
        } else {
            say("attached");
            hear();
        }
        return;
    }
    let key = unique_key("all-killed");
    let keys = Keys::new(&[&key]);
    let mut kids: Vec<Child> = Vec::new();
    for r in ["plain", "plain", "holder"] {
        let mut c = Child::spawn(ENTRY, r, &key, &[]);
        c.expect(if r == "holder" { "holding" } else { "attached" }, LINE);
        kids.push(c);
    }
    {
        let peek = SharedMemory::<Data>::attach(&key).expect("attach");
        assert_eq!(peek.attach_count(), 4);
        assert!(matches!(peek.try_lock(), Err(TryLockError::WouldBlock)));
    }
    for c in &mut kids {
        c.kill();
    }
    assert!(
        exists(&key),
        "the segment outlives its killed users until reclaimed"
    );
    let fresh = SharedMemory::<Data>::open_or_create(&key, || [2; 4]).expect("open_or_create");
    assert!(fresh.created(), "a stale segment must be reclaimed, not attached");
    assert!(
        !fresh.is_poisoned(),
        "the reclaimed segment inherited the old poison"
    );
    assert_eq!(*fresh.lock().expect("a fresh lock"), [2; 4]);
    assert_eq!(fresh.attach_count(), 1);
    drop(fresh);
    keys.finish();
}

/// `fork()` with a live handle. The forking process is a dedicated child
/// test process whose only other threads are idle (the harness waiting for
/// the test, and the watchdog asleep), so the forked process, which runs only
/// this thread, finds no lock held by a vanished thread in what it uses:
/// the library, `catch_unwind` and `_exit`.
///
/// In the forked process, `lock`/`try_lock`/`lock_timeout` on the inherited
/// handle panic with a message about `fork`, dropping the inherited copy of
/// a guard (one that wrote, and one that never did) leaves the parent's lock
/// alone, and `detach` returns `LockError`;
/// attaching anew works. The parent's lock (held across the
/// fork) and its attachment are unaffected: no poison, same `attach_count`,
/// and the segment disappears exactly when the real handles are gone.
#[test]
fn fork_child_with_inherited_handle_gets_clear_error_parent_unaffected() {
    const ENTRY: &str = "fork_child_with_inherited_handle_gets_clear_error_parent_unaffected";
    if let Some((_, key)) = role() {
        fork_role(&key);
        return;
    }
    let key = unique_key("fork");
    let keys = Keys::new(&[&key]);
    let mut forker = Child::spawn(ENTRY, "forker", &key, &[]);
    forker.expect("created", LINE);
    let shm = SharedMemory::<Data>::attach(&key).expect("attach");
    forker.send("go");
    forker.expect("holding", LINE);
    let line = forker.next_line(LINE);
    assert_eq!(
        line, "forked child 0 (held)",
        "failed checks in the forked child (bit mask)"
    );
    // The forker still holds its lock, then releases it normally.
    assert!(matches!(shm.try_lock(), Err(TryLockError::WouldBlock)));
    assert_eq!(shm.attach_count(), 2, "the forked child changed the attachments");
    forker.send("release");
    forker.expect("released", LINE);
    {
        let g = shm
            .try_lock()
            .expect("free and not poisoned after the forked child exited");
        assert_eq!(g[0], 11);
    }
    // Fork while not holding the lock; the forked child drops its copy.
    forker.send("fork-again");
    assert_eq!(forker.next_line(LINE), "forked child 0 (free)");
    assert_eq!(
        shm.attach_count(),
        2,
        "the forked child's drop detached the parent"
    );
    assert!(!shm.is_poisoned());
    *shm.lock().expect("not poisoned") = [12; 4];
    forker.send("detach");
    forker.expect("detached", LINE);
    forker.wait_success(LINE);
    assert_eq!(shm.attach_count(), 1);
    assert!(exists(&key));
    drop(shm);
    keys.finish();
}

/// Child role: creates `key` with an `init` that says "initializing" and
/// never returns (the parent kills the process there).
fn stuck_creator(key: &str) -> ! {
    let _shm = SharedMemory::<Data>::open_or_create(key, || {
        say("initializing");
        hear(); // never answered: the parent kills us here
        [0; 4]
    });
    unreachable!("the parent kills this process during init");
}

fn fork_role(key: &str) {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    let shm = SharedMemory::<Data>::create(key, [0; 4]).expect("create");
    say("created");
    hear();
    // Panics in the forked process are expected; keep them quiet.
    std::panic::set_hook(Box::new(|_| {}));
    let panics_about_fork = |f: &dyn Fn()| match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => false,
        Err(p) => common::panic_message(&*p).contains("fork"),
    };
    let panics_about_relock = |f: &dyn Fn()| match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => false,
        Err(p) => common::panic_message(&*p).contains("already holds the lock"),
    };
    // Runs `checks` in a forked process; returns its exit code (0: all passed).
    let in_forked = |checks: &dyn Fn() -> i32| -> i32 {
        // SAFETY: fork(2) has no memory preconditions. The forked process runs
        // only `checks` and `_exit` (see the test's doc comment for why that is
        // safe here).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = checks();
            // SAFETY: _exit(2) ends the process without running destructors
            // or atexit handlers, which belong to the parent.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waitpid(2) with our own child's pid and a valid pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(rc, pid);
        assert!(libc::WIFEXITED(status), "forked child died: status {status:#x}");
        libc::WEXITSTATUS(status)
    };
    {
        let mut g = shm.lock().expect("not poisoned");
        g[0] = 11;
        say("holding");
        let code = in_forked(&|| {
            let mut failed = 0;
            if !panics_about_fork(&|| drop(shm.lock())) {
                failed |= 1;
            }
            if !panics_about_fork(&|| drop(shm.try_lock())) {
                failed |= 2;
            }
            if !panics_about_fork(&|| drop(shm.lock_timeout(Duration::from_millis(10)))) {
                failed |= 4;
            }
            // A fresh attachment in the child works (and sees the lock held).
            match SharedMemory::<Data>::attach(key) {
                Ok(own) => {
                    if !matches!(own.try_lock(), Err(TryLockError::WouldBlock)) {
                        failed |= 8;
                    }
                }
                Err(_) => failed |= 16,
            }
            // SAFETY: the handle is not used again in this process, which
            // ends with _exit right after; read copies it bit for bit.
            let inherited = unsafe { std::ptr::read(&shm) };
            // The inherited copy of the guard: dropping it must not touch the
            // parent's lock (its holder word, the poison flag, the mutex).
            // SAFETY: as above, for the guard, which is not used again here.
            let inherited_guard = unsafe { std::ptr::read(&g) };
            drop(inherited_guard);
            match inherited.detach() {
                Err(e) if e.kind() == ErrorKind::LockError => {}
                _ => failed |= 32,
            }
            failed
        });
        // This thread still holds the lock, as the lock words say: a relock
        // is refused (it would deadlock if the forked child had cleared them).
        assert!(
            panics_about_relock(&|| drop(shm.lock_timeout(Duration::from_millis(10)))),
            "the forked child's drop of the inherited guard released the parent's lock words"
        );
        say(&format!("forked child {code} (held)"));
        assert_eq!(hear(), "release");
        drop(g);
    }
    say("released");
    assert_eq!(hear(), "fork-again");
    {
        // A guard that never wrote, held across a fork: its drop takes the
        // short path of such guards, which must also leave the parent's
        // lock alone in the forked process.
        let unwritten = shm.lock().expect("not poisoned");
        let code = in_forked(&|| {
            // SAFETY: as above, for a guard not used again in this process.
            drop(unsafe { std::ptr::read(&unwritten) });
            0
        });
        assert_eq!(code, 0);
        assert!(
            panics_about_relock(&|| drop(shm.lock_timeout(Duration::from_millis(10)))),
            "the forked child's drop of an inherited guard that never wrote released the parent's lock words"
        );
        drop(unwritten);
    }
    let code = in_forked(&|| {
        let mut failed = 0;
        if !panics_about_fork(&|| drop(shm.try_lock())) {
            failed |= 1;
        }
        // SAFETY: as above; dropping unmaps and closes only this process's
        // copies.
        let inherited = unsafe { std::ptr::read(&shm) };
        drop(inherited);
        failed
    });
    say(&format!("forked child {code} (free)"));
    assert_eq!(hear(), "detach");
    shm.detach().expect("detach");
    say("detached");
}

/// Regression: `attach_count` read `/proc/locks` in several reads, each a
/// separate kernel snapshot of a global list; while other locks came and went
/// (any process on the machine, or the other tests of this binary) entries
/// were skipped or counted twice, and a segment with 3 handles reported 2 or
/// 4. The count must stay exact while unrelated locks churn.
#[test]
fn attach_count_is_exact_while_other_locks_churn() {
    let key = unique_key("count-churn");
    let churn_keys: Vec<String> = (0..4).map(|i| unique_key(&format!("count-churn-{i}"))).collect();
    let mut all: Vec<&str> = churn_keys.iter().map(String::as_str).collect();
    all.push(&key);
    let keys = Keys::new(&all);
    let a = SharedMemory::<Data>::create(&key, [0; 4]).expect("create");
    let _b = SharedMemory::<Data>::attach(&key).expect("attach");
    let _c = SharedMemory::<Data>::attach(&key).expect("attach");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churners: Vec<_> = churn_keys
        .iter()
        .cloned()
        .map(|k| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let x = SharedMemory::<Data>::create(&k, [1; 4]).expect("create");
                    let y = SharedMemory::<Data>::attach(&k).expect("attach");
                    drop((x, y));
                }
            })
        })
        .collect();
    let t = Instant::now();
    let (mut checks, mut wrong) = (0, None);
    while t.elapsed() < Duration::from_secs(2) && wrong.is_none() {
        let n = a.attach_count();
        if n != 3 {
            wrong = Some(n);
        }
        checks += 1;
    }
    // Stop the churners before asserting, so a failure leaves nothing behind.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in churners {
        c.join().expect("churner");
    }
    assert_eq!(
        wrong, None,
        "attach_count of 3 handles was wrong after {checks} checks"
    );
    drop((a, _b, _c));
    keys.finish();
}

/// A process killed while removing a segment — after marking it destroyed,
/// before removing its name (the last detach, or a reclaim) — leaves a
/// half-removed object that nobody holds. `attach` says `NotFound` at once
/// (not after spinning until its timeout), and `open_or_create` makes a
/// fresh segment.
#[test]
fn remover_killed_between_marking_and_unlinking_is_not_waited_for() {
    let key = unique_key("half-removed");
    let keys = Keys::new(&[&key]);
    let mut bytes = {
        let shm = SharedMemory::<Data>::create(&key, [1; 4]).expect("create");
        let bytes = std::fs::read(common::shm_path(&key)).unwrap();
        shm.detach().expect("detach");
        bytes
    };
    // The header's state word (offset 352) as the remover leaves it.
    bytes[352..356].copy_from_slice(&0x4445_4144_u32.to_ne_bytes());
    std::fs::write(common::shm_path(&key), &bytes).unwrap();
    let t = Instant::now();
    let err = SharedMemory::<Data>::options()
        .timeout(Duration::from_secs(3))
        .attach(&key)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "attach waited {:?}",
        t.elapsed()
    );
    let fresh = SharedMemory::<Data>::open_or_create(&key, || [2; 4]).expect("open_or_create");
    assert!(fresh.created());
    assert_eq!(*fresh.lock().expect("not poisoned"), [2; 4]);
    drop(fresh);
    keys.finish();
}

/// `open_or_create` on a key whose creator is alive but stuck in its `init`
/// waits at most its timeout — not the timeout once per internal retry —
/// and says `TimedOut`; once the creator is killed it reclaims the key.
#[test]
fn open_or_create_waits_at_most_its_timeout_for_a_stuck_creator() {
    const ENTRY: &str = "open_or_create_waits_at_most_its_timeout_for_a_stuck_creator";
    if let Some((_, key)) = role() {
        stuck_creator(&key);
    }
    let key = unique_key("stuck-creator");
    let keys = Keys::new(&[&key]);
    let bound = Duration::from_millis(300);
    let mut creator = Child::spawn(ENTRY, "creator", &key, &[]);
    creator.expect("initializing", LINE);
    let t = Instant::now();
    let err = SharedMemory::<Data>::options()
        .timeout(bound)
        .open_or_create(&key, || [1; 4])
        .unwrap_err();
    let waited = t.elapsed();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    assert!(waited >= bound, "gave up early: {waited:?}");
    assert!(
        waited < bound + Duration::from_secs(1),
        "waited {waited:?} for a {bound:?} timeout"
    );
    assert!(
        err.to_string().contains("waited"),
        "the message says how long it waited: {err}"
    );
    creator.kill();
    let fresh = SharedMemory::<Data>::options()
        .timeout(bound)
        .open_or_create(&key, || [1; 4])
        .expect("reclaims");
    assert!(fresh.created());
    drop(fresh);
    keys.finish();
}

/// Threads (each its own handle) calling `create` at the same instant on a
/// free key: exactly one succeeds, every other one says `AlreadyExists` —
/// never another error, never a second segment.
#[test]
fn concurrent_create_succeeds_exactly_once() {
    const THREADS: usize = 6;
    const ROUNDS: usize = 200;
    let key = unique_key("racing-create");
    let keys = Keys::new(&[&key]);
    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|id| {
                let barrier = barrier.clone();
                let key = key.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    SharedMemory::<Data>::create(&key, [id as u64; 4])
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().expect("thread")).collect();
        let mut winners = Vec::new();
        for r in results {
            match r {
                Ok(s) => winners.push(s),
                Err(e) => assert_eq!(e.kind(), ErrorKind::AlreadyExists, "round {round}: {e}"),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: {} creates succeeded",
            winners.len()
        );
        let peer = SharedMemory::<Data>::attach(&key).expect("attach the winner's segment");
        let seen = *peer.lock().unwrap();
        assert_eq!(seen, *winners[0].lock().unwrap(), "round {round}: two segments");
        assert_eq!(peer.attach_count(), 2, "round {round}");
        drop((peer, winners));
        assert!(!exists(&key), "round {round}: segment left behind");
    }
    keys.finish();
}

/// Racing `create` and `open_or_create` across processes: in every round,
/// four child processes, released together (a file they poll without
/// sleeping), call `open_or_create` (even rounds) or `create` (odd rounds)
/// on a new key. Exactly one of them creates the segment; the others attach
/// to that very segment (`open_or_create`) or get `AlreadyExists` (`create`);
/// all see the creator's value; the segment goes away with the last of them.
#[test]
fn racing_create_and_open_or_create_in_processes_make_exactly_one_segment() {
    const ENTRY: &str = "racing_create_and_open_or_create_in_processes_make_exactly_one_segment";
    const CHILDREN: usize = 4;
    const ROUNDS: usize = 30;
    if let Some((_, key)) = role() {
        let go_dir = std::env::var("TSHM_GO_DIR").expect("go dir");
        let me = u64::from(std::process::id());
        for round in 0..ROUNDS {
            let k = format!("{key}-{round}");
            say(&format!("ready {round}"));
            let go = format!("{go_dir}/go-{round}");
            let deadline = Instant::now() + LINE;
            while std::fs::metadata(&go).is_err() {
                assert!(Instant::now() < deadline, "no go signal");
                std::hint::spin_loop();
            }
            let shm = if round % 2 == 0 {
                Some(
                    SharedMemory::<Data>::open_or_create(&k, || [me, round as u64, 0, 0])
                        .expect("open_or_create"),
                )
            } else {
                match SharedMemory::<Data>::create(&k, [me, round as u64, 0, 0]) {
                    Ok(s) => Some(s),
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => None,
                    Err(e) => panic!("create: {e}"),
                }
            };
            match &shm {
                Some(s) => {
                    let v = *s.lock().expect("not poisoned");
                    say(&format!(
                        "{} {} {}",
                        if s.created() { "created" } else { "attached" },
                        v[0],
                        v[1]
                    ));
                }
                None => say("exists"),
            }
            assert_eq!(hear(), "next");
            drop(shm);
            say(&format!("dropped {round}"));
        }
        return;
    }
    let base = unique_key("racing-procs");
    let names: Vec<String> = (0..ROUNDS).map(|r| format!("{base}-{r}")).collect();
    let keys = Keys::new(&names.iter().map(String::as_str).collect::<Vec<_>>());
    let go_dir = std::env::temp_dir().join(format!("tshm-race-{}", std::process::id()));
    std::fs::create_dir_all(&go_dir).unwrap();
    let go_env = [("TSHM_GO_DIR", go_dir.to_string_lossy().into_owned())];
    let mut children: Vec<Child> = (0..CHILDREN)
        .map(|_| Child::spawn(ENTRY, "racer", &base, &go_env))
        .collect();
    let pids: Vec<u64> = children.iter().map(|c| c.pid() as u64).collect();
    let mut creators_seen = std::collections::HashSet::new();
    for (round, name) in names.iter().enumerate() {
        for c in &mut children {
            c.expect(&format!("ready {round}"), LINE);
        }
        std::fs::write(go_dir.join(format!("go-{round}")), b"").unwrap();
        let lines: Vec<String> = children.iter_mut().map(|c| c.next_line(LINE)).collect();
        let created: Vec<&String> = lines.iter().filter(|l| l.starts_with("created ")).collect();
        assert_eq!(created.len(), 1, "round {round}: {lines:?}");
        let value = created[0].strip_prefix("created ").unwrap();
        let (creator, value_round) = value.split_once(' ').unwrap();
        let creator: u64 = creator.parse().unwrap();
        assert!(pids.contains(&creator), "round {round}: value from {creator}");
        assert_eq!(value_round, round.to_string(), "round {round}: a stale value");
        creators_seen.insert(creator);
        for l in &lines {
            if round % 2 == 0 {
                assert!(
                    *l == format!("created {value}") || *l == format!("attached {value}"),
                    "round {round}: another segment or value: {lines:?}"
                );
            } else {
                assert!(
                    *l == format!("created {value}") || l == "exists",
                    "round {round}: create did not refuse: {lines:?}"
                );
            }
        }
        for c in &mut children {
            c.send("next");
        }
        for c in &mut children {
            c.expect(&format!("dropped {round}"), LINE);
        }
        assert!(
            wait_until(Duration::from_secs(5), || !exists(name)),
            "round {round}: segment left behind"
        );
    }
    for c in &mut children {
        c.wait_success(LINE);
    }
    let _ = std::fs::remove_dir_all(&go_dir);
    // Not a test of fairness; only a sign that the race was real.
    common::tell(&format!(
        "racing processes: {} different creators over {ROUNDS} rounds\n",
        creators_seen.len()
    ));
    keys.finish();
}

/// `attach_count()` is exact across processes: three children attach two
/// handles each (two of them churning other segments all the while, which
/// takes and drops the same kind of locks): every process counts exactly
/// 7; a child killed with SIGKILL drops out of the count at once (the kernel
/// releases its locks), one handle dropped elsewhere is exactly one less.
#[test]
fn attach_count_is_exact_across_processes_and_drops_a_killed_one() {
    const ENTRY: &str = "attach_count_is_exact_across_processes_and_drops_a_killed_one";
    if let Some((_, key)) = role() {
        let mut handles: Vec<SharedMemory<Data>> = (0..2)
            .map(|_| SharedMemory::<Data>::attach(&key).expect("attach"))
            .collect();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn = std::env::var("TSHM_CHURN").ok().map(|k| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let x = SharedMemory::<Data>::create(&k, [1; 4]).expect("create");
                    let y = SharedMemory::<Data>::attach(&k).expect("attach");
                    drop((x, y));
                }
            })
        });
        say("attached");
        loop {
            match hear().as_str() {
                "count" => say(&format!("count {}", handles[0].attach_count())),
                "drop" => {
                    handles.pop();
                    say("dropped");
                }
                _ => break,
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(c) = churn {
            c.join().expect("churner");
        }
        return;
    }
    let key = unique_key("count-procs");
    let churn: Vec<String> = (0..3).map(|i| format!("{key}-churn-{i}")).collect();
    let mut all: Vec<&str> = churn.iter().map(String::as_str).collect();
    all.push(&key);
    let keys = Keys::new(&all);
    let a = SharedMemory::<Data>::create(&key, [0; 4]).expect("create");
    // Child 0 is killed later: it churns nothing (a killed churner would
    // leave its stale segment behind).
    let mut children: Vec<Child> = (0..3)
        .map(|i| {
            let env: Vec<(&str, String)> = if i == 0 {
                vec![]
            } else {
                vec![("TSHM_CHURN", churn[i].clone())]
            };
            Child::spawn(ENTRY, "counted", &key, &env)
        })
        .collect();
    for c in &mut children {
        c.expect("attached", LINE);
    }
    let check = |expected: usize, children: &mut [Child]| {
        for _ in 0..500 {
            assert_eq!(a.attach_count(), expected, "in the creator");
        }
        for c in children.iter_mut() {
            c.send("count");
            c.expect(&format!("count {expected}"), LINE);
        }
    };
    check(7, &mut children);
    let status = children[0].kill_running();
    assert_eq!(common::killed_by(&status), Some(libc::SIGKILL), "{status}");
    assert_eq!(a.attach_count(), 5, "right after the kill");
    check(5, &mut children[1..]);
    children[1].send("drop");
    children[1].expect("dropped", LINE);
    check(4, &mut children[1..]);
    for c in &mut children[1..] {
        c.send("bye");
        c.wait_success(LINE);
    }
    assert_eq!(a.attach_count(), 1);
    drop(a);
    keys.finish();
}

/// A segment whose name was removed while it was in use (`tshm rm --force`)
/// and then given to a new segment by a creator in another process: the
/// last detach of the old segment must not remove the new one's name. The
/// new segment stays attachable, with its own data, until its own last
/// user leaves; then it is gone too.
#[test]
fn the_last_detach_of_a_segment_whose_name_was_reused_leaves_the_new_one() {
    const ENTRY: &str = "the_last_detach_of_a_segment_whose_name_was_reused_leaves_the_new_one";
    if let Some((_, key)) = role() {
        let shm = SharedMemory::<Data>::create(&key, [2; 4]).expect("create the new segment");
        say("created");
        hear();
        drop(shm);
        return;
    }
    let key = unique_key("name-reused");
    let keys = Keys::new(&[&key]);
    let old = SharedMemory::<Data>::create(&key, [1; 4]).expect("create");
    let removed = typed_shm::inspect::remove(&key, true).expect("forced removal");
    assert_eq!(removed, typed_shm::inspect::Removal::Removed { attached: 1 });
    assert!(!exists(&key), "the forced removal left the name");
    let mut creator = Child::spawn(ENTRY, "create", &key, &[]);
    creator.expect("created", LINE);
    // The old segment's only handle, so its last detach.
    *old.lock().expect("not poisoned") = [3; 4];
    old.detach().expect("detach");
    let new = SharedMemory::<Data>::attach(&key)
        .unwrap_or_else(|e| panic!("the old segment's last detach removed the new segment's name: {e}"));
    assert_eq!(
        *new.lock().expect("not poisoned"),
        [2; 4],
        "not the new segment's data"
    );
    assert_eq!(new.attach_count(), 2);
    drop(new);
    creator.send("bye");
    creator.wait_success(LINE);
    assert!(!exists(&key), "the new segment outlived its last user");
    keys.finish();
}

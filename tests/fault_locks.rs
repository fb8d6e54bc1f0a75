//! The lock under faults: holders killed, crashed, panicking, or ending a
//! thread with the lock held; waiters already blocked; poison that must stay
//! reported everywhere without ever wedging the lock; forgotten guards.
//!
//! Children are re-runs of this test binary in a role (see `common`); every
//! wait has a deadline and every test ends by checking that its segments are
//! gone from `/dev/shm`.
#![allow(unsafe_code)]

mod common;

use std::time::{Duration, Instant};

use common::{Child, Keys, hear, require_root, role, say, unique_key, wait_until};
use typed_shm::{SharedMemory, TryLockError, TryLockResult};

type Data = [u64; 4];

const LINE: Duration = Duration::from_secs(10);
/// How soon a dead holder must be reported. Measured: microseconds for the
/// first call after the death, a few milliseconds for a waiter already
/// blocked in another process; the bound is generous for a loaded 2-core
/// machine, and the README states both (the figure and the bound).
const PROMPT: Duration = Duration::from_millis(500);

/// Which lock call a child or thread makes.
fn call<'a>(shm: &'a SharedMemory<Data>, which: &str) -> TryLockResult<typed_shm::Guard<'a, Data>> {
    match which {
        "lock" => shm.lock().map_err(TryLockError::Poisoned),
        "try_lock" => shm.try_lock(),
        "lock_timeout" => shm.lock_timeout(Duration::from_secs(30)),
        other => panic!("unknown call {other}"),
    }
}

fn describe<G>(r: &TryLockResult<G>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(TryLockError::Poisoned(_)) => "poisoned",
        Err(TryLockError::WouldBlock) => "would-block",
        Err(TryLockError::TimedOut) => "timed-out",
    }
}

/// Child roles shared by the tests of this file.
fn child(role: &str, key: &str) {
    let shm = SharedMemory::<Data>::attach(key).expect("attach");
    match role {
        // Takes the lock, writes half of an update, and waits to be killed.
        "holder" => {
            let mut g = shm.lock().unwrap_or_else(|p| p.into_inner());
            g[0] += 1;
            say("holding");
            hear();
        }
        // Takes the lock and crashes (SIGABRT) while holding it.
        "aborter" => {
            let mut g = shm.lock().unwrap_or_else(|p| p.into_inner());
            g[0] = 77;
            say("aborting");
            std::process::abort();
        }
        // Makes one lock call as the first after a holder died.
        "prober" => {
            let which = std::env::var("TSHM_CALL").expect("call");
            hear();
            let t = Instant::now();
            let r = call(&shm, &which);
            say(&format!("{} {}", describe(&r), t.elapsed().as_micros()));
            drop(r);
            hear();
        }
        // Blocks in a lock call while another process holds the lock.
        "waiter" => {
            let which = std::env::var("TSHM_CALL").expect("call");
            say(&format!("tid {}", common::gettid()));
            let r = call(&shm, &which);
            say(describe(&r));
            drop(r);
            hear();
        }
        // A thread panics while holding the lock, half-way through an update.
        "panicker" => {
            std::panic::set_hook(Box::new(|_| {}));
            let r = std::thread::scope(|s| {
                s.spawn(|| {
                    let mut g = shm.lock().expect("not poisoned");
                    g[0] = 1;
                    panic!("half-way through an update");
                })
                .join()
            });
            assert!(r.is_err());
            say("panicked");
            hear();
        }
        // Hammers the poisoned lock with every call; none may block, time out
        // or report anything but poison, until the parent clears it.
        "hammer" => {
            let mut counts = [0usize; 4];
            for i in 0..300 {
                let which = ["lock", "try_lock", "lock_timeout"][i % 3];
                let t = Instant::now();
                let r = match which {
                    "lock_timeout" => shm.lock_timeout(Duration::from_secs(2)),
                    w => call(&shm, w),
                };
                let took = t.elapsed();
                match (&r, which) {
                    (Err(TryLockError::Poisoned(_)), _) => counts[0] += 1,
                    // Another hammer holds it for an instant.
                    (Err(TryLockError::WouldBlock), "try_lock") => counts[1] += 1,
                    _ => panic!("{which} returned {} on a poisoned lock", describe(&r)),
                }
                assert!(took < Duration::from_secs(2), "{which} blocked {took:?}");
                drop(r);
            }
            // Once the others are done, try_lock too reports the poison.
            say(&format!("hammered {} {}", counts[0], counts[1]));
            assert_eq!(hear(), "again");
            assert_eq!(describe(&shm.try_lock()), "poisoned");
            say("still poisoned");
            assert_eq!(hear(), "cleared");
            for which in ["lock", "try_lock", "lock_timeout"] {
                assert_eq!(describe(&call(&shm, which)), "ok", "{which} after clear_poison");
            }
            say("clean");
            hear();
        }
        // A second handle's thread forgets its guard, drops the handle and
        // ends; then this handle must get the poison.
        "thread-forgetter" => {
            let other = SharedMemory::<Data>::attach(key).expect("attach");
            std::thread::spawn(move || {
                std::mem::forget(other.lock().expect("not poisoned"));
                drop(other);
            })
            .join()
            .unwrap();
            let t = Instant::now();
            let r = shm.lock_timeout(Duration::from_secs(10));
            say(&format!("{} {}", describe(&r), t.elapsed().as_micros()));
            drop(r);
            hear();
        }
        // Forgets a guard, then drops the handle (which must keep the mapping
        // of the held lock), and waits to be killed.
        "forgetter" => {
            let g = shm.lock().expect("not poisoned");
            std::mem::forget(g);
            let err = shm.detach().expect_err("detach with a forgotten guard");
            assert_eq!(err.kind(), typed_shm::ErrorKind::LockError);
            say("dropped");
            hear();
        }
        other => panic!("unknown role {other}"),
    }
}

fn assert_poisoned_promptly(what: &str, took: Duration) {
    eprintln!("{what}: poison reported after {took:?}");
    assert!(took < PROMPT, "{what}: poison took {took:?}");
}

/// A holder killed with SIGKILL: the first `lock`, `try_lock` or
/// `lock_timeout` afterwards — in this process or in another — reports the
/// poison at once (no waiting, no timeout), and the data stays reachable
/// through `into_inner`. `is_poisoned` says so even before anyone locks.
#[test]
fn killed_holder_is_reported_promptly_by_every_lock_call_in_any_process() {
    const ENTRY: &str = "killed_holder_is_reported_promptly_by_every_lock_call_in_any_process";
    if let Some((role, key)) = role() {
        return child(&role, &key);
    }
    let key = unique_key("prompt-poison");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Data>::create(&key, [0; 4]).expect("create");
    let cases = [
        ("try_lock", false),
        ("lock_timeout", false),
        ("lock", false),
        ("try_lock", true),
        ("lock_timeout", true),
        ("lock", true),
    ];
    for (round, (which, in_child)) in cases.into_iter().enumerate() {
        let mut prober = in_child.then(|| {
            let p = Child::spawn(ENTRY, "prober", &key, &[("TSHM_CALL", which.to_string())]);
            // Attached before the holder dies.
            assert!(wait_until(LINE, || shm.attach_count() == 2));
            p
        });
        let mut holder = Child::spawn(ENTRY, "holder", &key, &[]);
        holder.expect("holding", LINE);
        holder.kill();
        assert!(
            shm.is_poisoned(),
            "{which}: is_poisoned is false after the holder was killed"
        );
        if let Some(p) = &mut prober {
            p.send("go");
            let line = p.next_line(LINE);
            let (what, micros) = line.split_once(' ').expect("result line");
            assert_eq!(what, "poisoned", "{which} in another process");
            assert_poisoned_promptly(which, Duration::from_micros(micros.parse().unwrap()));
            p.send("bye");
            p.wait_success(LINE);
            // Sticky: this process sees it too.
            assert!(matches!(shm.try_lock(), Err(TryLockError::Poisoned(_))));
        } else {
            let t = Instant::now();
            let r = call(&shm, which);
            assert_poisoned_promptly(which, t.elapsed());
            match r {
                Err(TryLockError::Poisoned(p)) => {
                    assert_eq!(p.into_inner()[0], round as u64 + 1, "the half-written data");
                }
                other => panic!("{which} after the holder died: {}", describe(&other)),
            }
        }
        shm.clear_poison();
        assert!(shm.try_lock().is_ok());
    }
    drop(shm);
    keys.finish();
}

/// Waiters already asleep in `lock` and `lock_timeout(30 s)` — threads of
/// this process and another process — wake with the poison as soon as the
/// holder is killed, not at their timeout.
#[test]
fn blocked_waiters_wake_with_poison_when_the_holder_is_killed() {
    const ENTRY: &str = "blocked_waiters_wake_with_poison_when_the_holder_is_killed";
    if let Some((role, key)) = role() {
        return child(&role, &key);
    }
    let key = unique_key("waiters");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Data>::create(&key, [0; 4]).expect("create");
    let mut holder = Child::spawn(ENTRY, "holder", &key, &[]);
    holder.expect("holding", LINE);
    let me = std::process::id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let mut tids = Vec::new();
        for which in ["lock", "lock_timeout"] {
            let tx = tx.clone();
            let shm = &shm;
            let (tid_tx, tid_rx) = std::sync::mpsc::channel();
            s.spawn(move || {
                tid_tx.send(common::gettid()).unwrap();
                let r = call(shm, which);
                tx.send((which, describe(&r), Instant::now())).unwrap();
            });
            tids.push((me, tid_rx.recv_timeout(LINE).expect("tid")));
        }
        let mut waiters: Vec<Child> = ["lock", "lock_timeout"]
            .iter()
            .map(|w| Child::spawn(ENTRY, "waiter", &key, &[("TSHM_CALL", w.to_string())]))
            .collect();
        for w in &mut waiters {
            let line = w.next_line(LINE);
            let tid = line.strip_prefix("tid ").expect("tid line").parse().unwrap();
            tids.push((w.pid(), tid));
        }
        // Every waiter is asleep in the kernel before the holder dies.
        for &(pid, tid) in &tids {
            assert!(
                wait_until(LINE, || common::blocked_in_futex(pid, tid)),
                "waiter {pid}/{tid} never blocked"
            );
        }
        let killed = Instant::now();
        holder.kill();
        for _ in 0..2 {
            let (which, what, when) = rx.recv_timeout(LINE).expect("a thread woke");
            assert_eq!(what, "poisoned", "{which} in this process");
            assert_poisoned_promptly(which, when - killed);
        }
        for w in &mut waiters {
            assert_eq!(w.next_line(LINE), "poisoned");
            assert_poisoned_promptly("waiter process", killed.elapsed());
            w.send("bye");
            w.wait_success(LINE);
        }
    });
    drop(shm);
    keys.finish();
}

/// A thread that panics under the lock poisons it for other processes, and
/// so does a process that crashes (SIGABRT) holding it; the data is as they
/// left it.
#[test]
fn panic_and_crash_under_the_lock_poison() {
    const ENTRY: &str = "panic_and_crash_under_the_lock_poison";
    if let Some((role, key)) = role() {
        return child(&role, &key);
    }
    let key = unique_key("panic-crash");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Data>::create(&key, [0; 4]).expect("create");

    let mut c = Child::spawn(ENTRY, "panicker", &key, &[]);
    c.expect("panicked", LINE);
    let t = Instant::now();
    match shm.lock_timeout(Duration::from_secs(30)) {
        Err(TryLockError::Poisoned(p)) => {
            assert_poisoned_promptly("panicker", t.elapsed());
            assert_eq!(p.into_inner()[..2], [1, 0], "panicker: the data as left");
        }
        other => panic!("panicker: {}", describe(&other)),
    }
    shm.clear_poison();
    c.send("bye");
    c.wait_success(LINE);

    let mut c = Child::spawn(ENTRY, "aborter", &key, &[]);
    c.expect("aborting", LINE);
    let status = c.wait_exit(LINE);
    assert_eq!(common::killed_by(&status), Some(libc::SIGABRT), "{status}");
    match shm.try_lock() {
        Err(TryLockError::Poisoned(p)) => assert_eq!(p.into_inner()[0], 77),
        other => panic!("after a crash: {}", describe(&other)),
    }
    assert_eq!(shm.attach_count(), 1);
    drop(shm);
    keys.finish();
}

/// Runs `role` of the test `entry` in a child process to its end (at most
/// `timeout`) and returns how it ended, with everything it printed on
/// standard output and standard error.
fn run_to_end(
    entry: &str,
    role: &str,
    key: &str,
    timeout: Duration,
) -> (std::process::ExitStatus, String, String) {
    use std::process::{Command, Stdio};
    let proc = Command::new(std::env::current_exe().expect("test binary path"))
        .args([entry, "--exact", "--nocapture", "--test-threads=1"])
        .env(common::ROLE_VAR, role)
        .env(common::KEY_VAR, key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child test process");
    let pid = proc.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(proc.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => {
            let out = out.expect("wait for the child");
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            (out.status, text(&out.stdout), text(&out.stderr))
        }
        Err(_) => {
            // SAFETY: kill(2) on our own child, which has not been reaped (the
            // waiting thread has not returned).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("child {role:?} did not end within {timeout:?}");
        }
    }
}

/// The child roles of `a_thread_that_ends_holding_the_lock_aborts_its_process`:
/// a thread takes the lock, leaks (`Box::leak`) or forgets (`mem::forget`)
/// its guard, and ends while the process lives on. If the process survives
/// that, it locks again and says so: a second `&mut` to data that the first
/// may still be writing.
fn leaker(role: &str, key: &str) {
    let shm: &'static SharedMemory<Data> =
        Box::leak(Box::new(SharedMemory::<Data>::attach(key).expect("attach")));
    let first: &'static mut Data = match role {
        "leak" => std::thread::spawn(move || {
            let g = Box::leak(Box::new(shm.lock().expect("not poisoned")));
            let r: &'static mut Data = g;
            r[2] = 11;
            r
        })
        .join()
        .expect("the leaking thread"),
        _ => {
            std::thread::spawn(move || {
                let mut g = shm.lock().expect("not poisoned");
                g[2] = 12;
                std::mem::forget(g);
            })
            .join()
            .expect("the forgetting thread");
            // Nothing borrows from the forgotten guard here; a program could
            // as well have kept a raw pointer from it.
            Box::leak(Box::new([0; 4]))
        }
    };
    say("thread ended, process alive");
    let mut second = shm.lock().unwrap_or_else(|p| p.into_inner());
    second[2] = 99;
    first[2] = 98;
    say(&format!("second guard while the first lives: {}", second[2]));
}

/// Soundness: the kernel marks a robust lock owner-dead when the holding
/// *thread* ends, while its process lives on, and hands it to the next
/// locker with `EOWNERDEAD`. References from a leaked guard may still be in
/// use then, so taking the lock again would make two `&mut` to the same data
/// from safe code. Instead, a thread that ends holding a lock aborts its
/// process, naming the segment on stderr; only then (the process is gone)
/// does the lock pass on, with the poison and the data as left.
#[test]
fn a_thread_that_ends_holding_the_lock_aborts_its_process() {
    const ENTRY: &str = "a_thread_that_ends_holding_the_lock_aborts_its_process";
    if let Some((role, key)) = role() {
        return leaker(&role, &key);
    }
    let key = unique_key("thread-end");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Data>::create(&key, [0; 4]).expect("create");
    for (how, left) in [("leak", 11), ("forget", 12)] {
        let (status, out, err) = run_to_end(ENTRY, how, &key, LINE);
        assert!(
            !out.contains("second guard"),
            "{how}: the lock passed to another guard while the first could live:\n{out}"
        );
        assert_eq!(
            common::killed_by(&status),
            Some(libc::SIGABRT),
            "{how}: the process must abort ({status}); stdout:\n{out}\nstderr:\n{err}"
        );
        let expected = format!("a thread ended while holding the lock of segment {key:?}");
        assert!(
            err.contains(&expected),
            "{how}: stderr does not say {expected:?}:\n{err}"
        );
        match shm.try_lock() {
            Err(TryLockError::Poisoned(p)) => assert_eq!(p.into_inner()[2], left, "{how}"),
            other => panic!("{how}: after the process died: {}", describe(&other)),
        }
        shm.clear_poison();
        assert_eq!(
            shm.attach_count(),
            1,
            "{how}: the aborted process is not attached"
        );
    }
    drop(shm);
    keys.finish();
}

/// Poison is sticky and never wedges: after a holder is killed, three
/// processes hammer the lock with `lock`, `try_lock` and `lock_timeout`; every
/// call reports the poison (or, for `try_lock`, that another hammer holds it
/// right now), none blocks or times out — until one `clear_poison`, after
/// which every call in every process succeeds.
#[test]
fn poison_is_sticky_across_processes_and_never_wedges_the_lock() {
    const ENTRY: &str = "poison_is_sticky_across_processes_and_never_wedges_the_lock";
    if let Some((role, key)) = role() {
        return child(&role, &key);
    }
    let key = unique_key("sticky");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Data>::create(&key, [0; 4]).expect("create");
    let mut holder = Child::spawn(ENTRY, "holder", &key, &[]);
    holder.expect("holding", LINE);
    holder.kill();
    let mut hammers: Vec<Child> = (0..3).map(|_| Child::spawn(ENTRY, "hammer", &key, &[])).collect();
    let mut poisoned = 0;
    for h in &mut hammers {
        let line = h.next_line(Duration::from_secs(30));
        let mut parts = line.split(' ').skip(1).map(|n| n.parse::<usize>().unwrap());
        poisoned += parts.next().unwrap();
    }
    assert!(
        poisoned >= 3 * 200,
        "lock and lock_timeout always report poison: {poisoned}"
    );
    assert!(shm.is_poisoned());
    for h in &mut hammers {
        h.send("again");
        h.expect("still poisoned", LINE);
    }
    shm.clear_poison();
    for h in &mut hammers {
        h.send("cleared");
        h.expect("clean", LINE);
        h.send("bye");
        h.wait_success(LINE);
    }
    drop(shm);
    keys.finish();
}

/// A guard forgotten (`mem::forget`) and its handle then dropped — in a
/// thread of this process, and in another process that is then killed: the
/// handle must keep the held lock mapped (never unmap a locked robust mutex),
/// so the kernel can still mark it owner-dead, and the next locker gets the
/// poison instead of hanging.
#[test]
fn forgotten_guard_then_dropped_handle_then_death_is_still_recoverable() {
    const ENTRY: &str = "forgotten_guard_then_dropped_handle_then_death_is_still_recoverable";
    if let Some((role, key)) = role() {
        return child(&role, &key);
    }
    let key = unique_key("forgotten");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Data>::create(&key, [0; 4]).expect("create");

    // In a child process (this one must end with nothing attached): a thread
    // forgets its guard, drops its handle and ends.
    let mut c = Child::spawn(ENTRY, "thread-forgetter", &key, &[]);
    let line = c.next_line(LINE);
    let (what, micros) = line.split_once(' ').expect("result line");
    assert_eq!(what, "poisoned", "after a forgotten guard's thread ended");
    assert_poisoned_promptly(
        "forgotten guard, thread ended",
        Duration::from_micros(micros.parse().unwrap()),
    );
    c.send("bye");
    c.wait_success(LINE);
    shm.clear_poison();
    assert_eq!(shm.attach_count(), 1);

    // Another process forgets its guard, drops its handle, then is killed.
    let mut c = Child::spawn(ENTRY, "forgetter", &key, &[]);
    c.expect("dropped", LINE);
    assert!(matches!(shm.try_lock(), Err(TryLockError::WouldBlock)));
    assert_eq!(
        shm.attach_count(),
        1,
        "the forgetter detached (keeping only its mapping)"
    );
    c.kill();
    let t = Instant::now();
    let r = shm.lock_timeout(Duration::from_secs(10));
    assert_eq!(describe(&r), "poisoned", "after the forgetter was killed");
    assert_poisoned_promptly("forgotten guard, process killed", t.elapsed());
    drop(r);
    assert_eq!(shm.attach_count(), 1);
    drop(shm);
    keys.finish();
}

/// The relocks of `relock_by_the_holding_thread_is_refused_not_deadlocked`,
/// in a child: each is announced before it is tried, and its outcome after,
/// so a relock that deadlocks is seen by the parent as a missing answer.
fn relocker(key: &str) {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    common::quiet_panics_containing("already holds");
    let shm = SharedMemory::<Data>::attach(key).expect("attach");
    let other = SharedMemory::<Data>::attach(key).expect("attach");
    let mut g = shm.lock().expect("not poisoned");
    g[0] = 1;
    say("holding");
    say("relocking try_lock");
    say(&format!("try_lock {}", describe(&shm.try_lock())));
    // Through another handle of the same segment, too.
    say("relocking other try_lock");
    say(&format!("other try_lock {}", describe(&other.try_lock())));
    for (name, handle) in [("other lock", &other), ("lock", &shm), ("lock_timeout", &shm)] {
        let which = name.trim_start_matches("other ");
        say(&format!("relocking {name}"));
        let r = catch_unwind(AssertUnwindSafe(|| describe(&call(handle, which))));
        match r {
            Ok(what) => say(&format!("{name} returned {what}")),
            Err(e) => say(&format!("{name} panicked: {}", common::panic_message(&*e))),
        }
    }
    drop(g);
    say(&format!("poisoned {}", shm.is_poisoned()));
    say(&format!("then {}", other.lock().expect("not poisoned")[0]));
}

/// A thread that already holds the lock and locks again is refused at once
/// instead of deadlocking itself: `try_lock` reports `WouldBlock`, `lock` and
/// `lock_timeout` panic with a message that says why — through the same
/// handle and through another handle of the segment. The lock it holds is
/// unaffected (not poisoned, released normally). The relocks run in a child
/// process, each under a deadline: a relock that deadlocks fails the test
/// (and the child is killed) instead of hanging the test binary.
#[test]
fn relock_by_the_holding_thread_is_refused_not_deadlocked() {
    const ENTRY: &str = "relock_by_the_holding_thread_is_refused_not_deadlocked";
    if let Some((_, key)) = role() {
        return relocker(&key);
    }
    let key = unique_key("relock");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Data>::create(&key, [0; 4]).expect("create");
    let mut c = Child::spawn(ENTRY, "relocker", &key, &[]);
    c.expect("holding", LINE);
    let mut answer = |relock: &str| -> String {
        c.expect(&format!("relocking {relock}"), LINE);
        match c.lines_within(LINE) {
            Some(line) => line,
            None => {
                c.kill();
                panic!("the relock by {relock} deadlocked: no answer within {LINE:?}");
            }
        }
    };
    assert_eq!(answer("try_lock"), "try_lock would-block");
    assert_eq!(answer("other try_lock"), "other try_lock would-block");
    for which in ["other lock", "lock", "lock_timeout"] {
        let line = answer(which);
        let msg = line
            .strip_prefix(&format!("{which} panicked: "))
            .unwrap_or_else(|| panic!("a relock must panic: {line}"));
        assert!(msg.contains("already holds"), "{which}: {msg}");
    }
    c.expect("poisoned false", LINE);
    c.expect("then 1", LINE);
    let status = c.wait_exit(LINE);
    assert!(status.success(), "{status}");
    assert!(!shm.is_poisoned());
    assert_eq!(shm.lock().expect("not poisoned")[0], 1);
    drop(shm);
    keys.finish();
}

/// Runs `body` as PID 1 of a new PID namespace (its only thread has thread
/// id 1 there) and returns that process's global pid. The caller is a
/// dedicated child test process; the forked process runs only `body` (the
/// library, `say` and `_exit`) while the harness's other threads are idle.
fn in_new_pid_namespace(body: &dyn Fn() -> i32) -> i32 {
    // SAFETY: unshare(2) with a flag constant; it only changes the PID
    // namespace of the children this process makes from now on.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWPID) };
    assert_eq!(rc, 0, "unshare(CLONE_NEWPID)");
    // SAFETY: fork(2) has no memory preconditions; see above for what the
    // forked process does.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        // Die with the process that forked us, whatever happens to it.
        // SAFETY: prctl(2) PR_SET_PDEATHSIG takes a signal number.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        let code = body();
        // SAFETY: _exit(2) ends the forked process without running the
        // parent's destructors or atexit handlers.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// Waits for the forked process `pid` and returns its exit code.
fn reap(pid: i32) -> i32 {
    let mut status = 0;
    // SAFETY: waitpid(2) with our own child's pid and a valid pointer.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(rc, pid, "waitpid");
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    }
}

/// What a process in a new PID namespace gets from every way of opening a
/// segment made outside it, as an exit code: 0 when each is a `LockError`
/// that says "PID namespace", else the number of the first that was not.
fn refused_in_new_pid_namespace(key: &str) -> i32 {
    use typed_shm::{Error, ErrorKind, ReadOnly};
    fn refused<T>(r: Result<T, Error>) -> bool {
        matches!(&r, Err(e) if e.kind() == ErrorKind::LockError && e.to_string().contains("PID namespace"))
    }
    if !refused(SharedMemory::<Data>::attach(key)) {
        return 1;
    }
    if !refused(SharedMemory::<Data, ReadOnly>::attach(key)) {
        return 2;
    }
    if !refused(SharedMemory::<Data>::open_or_create(key, || [9; 4])) {
        return 3;
    }
    // `create` of a live key is `AlreadyExists`, wherever it comes from.
    match SharedMemory::<Data>::create(key, [9; 4]) {
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        _ => return 4,
    }
    // A segment made in this namespace is this namespace's.
    let inner = format!("{key}-inner");
    let Ok(mine) = SharedMemory::<Data>::create(&inner, [5; 4]) else {
        return 5;
    };
    if *mine.lock().expect("not poisoned") != [5; 4] {
        return 6;
    }
    say("created inner");
    hear();
    0
}

/// Soundness: robust locks name their holders by thread id, and thread ids
/// repeat across PID namespaces (containers sharing `/dev/shm`). A waiter
/// killed in another namespace with the holder's thread id makes the kernel
/// mark a held lock owner-dead, and a third process would then write while
/// the holder still holds it. So a process in another PID namespace than the
/// creator's is refused with `LockError` by `attach` (read-write and
/// read-only) and `open_or_create`; a segment created in a new namespace is
/// refused outside it; the refused calls leave the segment and its lock
/// untouched.
#[test]
fn processes_in_another_pid_namespace_are_refused_with_lock_error() {
    const ENTRY: &str = "processes_in_another_pid_namespace_are_refused_with_lock_error";
    if let Some((_, key)) = role() {
        let pid = in_new_pid_namespace(&|| refused_in_new_pid_namespace(&key));
        say(&format!("ns child {}", reap(pid)));
        return;
    }
    if !require_root(ENTRY, "creates PID namespaces") {
        return;
    }
    let key = unique_key("pidns");
    let inner = format!("{key}-inner");
    let keys = Keys::new(&[&key, &inner]);
    let shm = SharedMemory::<Data>::create(&key, [3; 4]).expect("create");
    let g = shm.lock().expect("not poisoned");
    let mut c = Child::spawn(ENTRY, "ns", &key, &[]);
    assert_eq!(
        c.next_line(LINE),
        "created inner",
        "the calls in the new namespace"
    );
    match SharedMemory::<Data>::attach(&inner) {
        Err(e) => {
            assert_eq!(e.kind(), typed_shm::ErrorKind::LockError, "{e}");
            assert!(e.to_string().contains("PID namespace"), "{e}");
        }
        Ok(_) => panic!("a segment created in another PID namespace was attached"),
    }
    c.send("bye");
    assert_eq!(c.next_line(LINE), "ns child 0");
    c.wait_success(LINE);
    // Untouched: still held by this thread, not poisoned, one attachment.
    assert!(matches!(shm.try_lock(), Err(TryLockError::WouldBlock)));
    drop(g);
    assert_eq!(*shm.lock().expect("not poisoned"), [3; 4]);
    assert_eq!(shm.attach_count(), 1);
    drop(shm);
    keys.finish();
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Signals delivered to a thread blocked in `lock_timeout` or `lock` (with a
/// handler installed without `SA_RESTART`, so every wait is interrupted) do
/// not wake it early, do not make it fail, and do not lose the wake-up when
/// the lock is released.
#[test]
fn signals_to_a_blocked_waiter_neither_end_its_wait_early_nor_break_it() {
    const ENTRY: &str = "signals_to_a_blocked_waiter_neither_end_its_wait_early_nor_break_it";
    if let Some((_, key)) = role() {
        // SAFETY: `sigaction` is a plain C struct; all-zero is valid (no
        // flags, so no SA_RESTART, and an empty mask).
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = ignore_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: sigaction(2) with a valid struct whose handler does
        // nothing (async-signal-safe), and a null pointer for the old one.
        let rc = unsafe { libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()) };
        assert_eq!(rc, 0);
        let shm = SharedMemory::<Data>::attach(&key).expect("attach");
        say(&format!("tid {}", common::gettid()));
        let t = Instant::now();
        let r = shm.lock_timeout(Duration::from_millis(1500));
        say(&format!("{} {}", describe(&r), t.elapsed().as_millis()));
        drop(r);
        let g = shm.lock().expect("not poisoned");
        say(&format!("locked {}", g[0]));
        drop(g);
        hear();
        return;
    }
    let key = unique_key("signals");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Data>::create(&key, [0; 4]).expect("create");
    let mut g = shm.lock().expect("not poisoned");
    let mut c = Child::spawn(ENTRY, "waiter", &key, &[]);
    let tid: i32 = c.next_line(LINE).strip_prefix("tid ").unwrap().parse().unwrap();
    let pid = c.pid();
    let pester = |n: usize| {
        for _ in 0..n {
            // SAFETY: tgkill(2) to a thread of our own, still running, child.
            let rc = unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGUSR1) };
            assert_eq!(rc, 0, "tgkill");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert!(wait_until(LINE, || common::blocked_in_futex(pid, tid)));
    pester(30);
    let line = c.next_line(LINE);
    let (what, ms) = line.split_once(' ').unwrap();
    assert_eq!(what, "timed-out", "lock_timeout under signals");
    let ms: u64 = ms.parse().unwrap();
    assert!(ms >= 1500, "lock_timeout ended early, after {ms} ms");
    assert!(wait_until(LINE, || common::blocked_in_futex(pid, tid)));
    pester(20);
    g[0] = 42;
    drop(g);
    assert_eq!(c.next_line(LINE), "locked 42", "lock under signals");
    c.send("bye");
    c.wait_success(LINE);
    assert!(!shm.is_poisoned());
    drop(shm);
    keys.finish();
}

/// A guard kept in a thread-local of a thread that ends is released by that
/// thread-local's destructor — also when the library's own per-thread state
/// is destroyed first — without a panic in a destructor (an abort), and the
/// lock is free and not poisoned afterwards.
#[test]
fn a_guard_in_a_thread_local_is_released_when_its_thread_ends() {
    use std::cell::RefCell;
    type StaticGuard = typed_shm::Guard<'static, Data>;
    thread_local! {
        static KEPT: RefCell<Option<StaticGuard>> = const { RefCell::new(None) };
    }
    if let Some((_, key)) = role() {
        let shm: &'static SharedMemory<Data> =
            Box::leak(Box::new(SharedMemory::<Data>::attach(&key).unwrap()));
        std::thread::spawn(move || {
            // Registered before the library's per-thread state, so destroyed
            // after it (thread-local destructors run in reverse order).
            KEPT.with(|k| assert!(k.borrow().is_none()));
            let mut g = shm.lock().expect("not poisoned");
            g[0] = 3;
            KEPT.with(|k| *k.borrow_mut() = Some(g));
        })
        .join()
        .expect("the thread ended normally");
        let g = shm
            .lock_timeout(Duration::from_secs(5))
            .expect("free and not poisoned");
        assert_eq!(g[0], 3);
        drop(g);
        say("ok");
        return;
    }
    let key = unique_key("tls-guard");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Data>::create(&key, [0; 4]).expect("create");
    let mut c = Child::spawn(
        "a_guard_in_a_thread_local_is_released_when_its_thread_ends",
        "tls",
        &key,
        &[],
    );
    assert_eq!(c.next_line(LINE), "ok");
    let status = c.wait_exit(LINE);
    assert!(status.success(), "{status}");
    assert!(!shm.is_poisoned());
    drop(shm);
    keys.finish();
}

/// Waits up to `timeout` for the forked process `pid`; returns its exit
/// code, or `None` after killing it when it did not end in time.
fn reap_within(pid: i32, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: waitpid(2) with our own child's pid and a valid pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(rc == 0 || rc == pid, "waitpid");
        if rc == pid {
            return libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        }
        if Instant::now() >= deadline {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            reap(pid);
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Child role of `fork_while_other_threads_open_and_close_handles_never_deadlocks`:
/// two threads open and drop handles in a loop (each registers with, and
/// leaves, the per-process list of locks checked when a thread ends) while
/// this thread forks; every forked process attaches, locks and exits. A
/// forked child that inherited that list's lock mid-change would hang.
fn fork_churn(key: &str) {
    let stop = std::sync::atomic::AtomicBool::new(false);
    let forks = std::env::var("TSHM_FORKS").map_or(1000, |v| v.parse().expect("a number"));
    // The library's one-time set-up is done before the other threads start
    // (a fork during another thread's one-time set-up is not covered).
    drop(SharedMemory::<Data>::attach(key).expect("attach"));
    let failures = std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let h = SharedMemory::<Data>::attach(key).expect("attach");
                    drop(h.lock().expect("not poisoned"));
                }
            });
        }
        let mut failures = Vec::new();
        for _ in 0..forks {
            // SAFETY: fork(2) has no memory preconditions. The forked process
            // attaches, locks and leaves with _exit; the point of the test is
            // that the library's own state is consistent there.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork");
            if pid == 0 {
                // SAFETY: prctl(2) PR_SET_PDEATHSIG takes a signal number.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
                let code = match SharedMemory::<Data>::attach(key) {
                    Ok(h) => match h.lock() {
                        Ok(_) => 0,
                        Err(_) => 2,
                    },
                    Err(_) => 1,
                };
                // SAFETY: _exit(2) ends the forked process without running
                // the parent's destructors or atexit handlers.
                unsafe { libc::_exit(code) };
            }
            match reap_within(pid, Duration::from_secs(5)) {
                Some(0) => {}
                other => failures.push(format!("{other:?}")),
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        failures
    });
    say(&format!("forked {forks}, failed {} {failures:?}", failures.len()));
}

/// `fork()` while another thread opens and closes handles: the library's
/// per-process state (the list of locks checked when a thread ends) is held
/// still across the fork, so the forked process can attach and lock — it
/// never inherits that state half-changed or locked forever.
#[test]
fn fork_while_other_threads_open_and_close_handles_never_deadlocks() {
    const ENTRY: &str = "fork_while_other_threads_open_and_close_handles_never_deadlocks";
    if let Some((_, key)) = role() {
        return fork_churn(&key);
    }
    let key = unique_key("fork-churn");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Data>::create(&key, [0; 4]).expect("create");
    let mut c = Child::spawn(ENTRY, "churn", &key, &[]);
    let line = c.next_line(Duration::from_secs(50));
    assert!(line.ends_with("failed 0 []"), "{line}");
    c.wait_success(LINE);
    assert!(!shm.is_poisoned());
    drop(shm);
    keys.finish();
}

/// Child roles of `a_waiter_whose_wake_up_was_lost_still_takes_a_dead_holders_lock`.
#[allow(unsafe_code)]
fn lost_wakeup_role(role: &str, key: &str) {
    let shm = SharedMemory::<Data>::attach(key).expect("attach");
    match role {
        // Takes the lock, then empties its thread's robust list (an empty
        // list whose head points to itself), so that the kernel does
        // nothing for this lock when the process dies.
        "silent-holder" => {
            let g = shm.lock().expect("not poisoned");
            #[repr(C)]
            struct Head {
                next: *const Head,
                futex_offset: libc::c_long,
                pending: *const libc::c_void,
            }
            let head: &'static mut Head = Box::leak(Box::new(Head {
                next: std::ptr::null(),
                futex_offset: 0,
                pending: std::ptr::null(),
            }));
            head.next = head as *const Head;
            // SAFETY: set_robust_list(2) takes a pointer to a robust list
            // head and its size; the head lives forever (leaked) and its
            // list is empty (it points to itself).
            let rc =
                unsafe { libc::syscall(libc::SYS_set_robust_list, head as *const Head, size_of::<Head>()) };
            assert_eq!(rc, 0, "set_robust_list");
            std::mem::forget(g);
            say("holding silently");
            hear();
        }
        // Blocks in `lock` and says what it got.
        _ => {
            say(&format!("tid {}", common::gettid()));
            let r = shm.lock();
            say(if r.is_err() { "poisoned" } else { "ok" });
            drop(r);
            hear();
        }
    }
}

/// When a holder dies the kernel marks the lock word owner-dead and wakes
/// one waiter; if that waiter dies too before it takes the lock, nobody wakes
/// the others, and a waiter that only slept would sleep forever. Here a
/// holder dies with the lock word set to exactly that state and nobody
/// woken: the waiter must still take the lock (with the poison), because
/// every wait is made of bounded slices that look at the word again.
#[test]
fn a_waiter_whose_wake_up_was_lost_still_takes_a_dead_holders_lock() {
    use std::os::unix::fs::FileExt;
    const ENTRY: &str = "a_waiter_whose_wake_up_was_lost_still_takes_a_dead_holders_lock";
    if let Some((role, key)) = role() {
        return lost_wakeup_role(&role, &key);
    }
    let key = unique_key("lost-wakeup");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Data>::create(&key, [0; 4]).expect("create");
    let mut holder = Child::spawn(ENTRY, "silent-holder", &key, &[]);
    holder.expect("holding silently", LINE);
    let mut waiter = Child::spawn(ENTRY, "waiter", &key, &[]);
    let tid: i32 = waiter
        .next_line(LINE)
        .strip_prefix("tid ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait_until(LINE, || common::blocked_in_futex(waiter.pid(), tid)));
    // The state a holder's death leaves when the waiter it woke died too:
    // owner died, waiters present, nobody awake. (glibc keeps the kernel's
    // lock word as the first 4 bytes of the mutex, at header offset 384.)
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(common::shm_path(&key))
        .unwrap();
    let word: u32 = libc::FUTEX_OWNER_DIED | libc::FUTEX_WAITERS;
    holder.kill();
    file.write_all_at(&word.to_ne_bytes(), 384).unwrap();
    let t = Instant::now();
    assert_eq!(
        waiter.next_line(Duration::from_secs(5)),
        "poisoned",
        "the waiter never took the lock"
    );
    eprintln!("lost wake-up: the waiter took the lock after {:?}", t.elapsed());
    waiter.send("bye");
    waiter.wait_success(LINE);
    assert!(shm.is_poisoned());
    shm.clear_poison();
    assert_eq!(*shm.lock().expect("clean after clear_poison"), [0; 4]);
    drop(shm);
    keys.finish();
}

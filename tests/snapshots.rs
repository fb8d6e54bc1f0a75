//! Snapshots, versions and change notification across real processes: a
//! writer committing while readers in other processes copy the data without
//! the lock; waiters woken by commits in another process; writers killed or
//! stopped in the middle of a write; the format version.

mod common;

use std::time::{Duration, Instant};

use common::{Child, Keys, hear, say, unique_key};
use typed_shm::{ErrorKind, ReadOnly, SharedMemory, TryLockError};

const LINE: Duration = Duration::from_secs(30);

/// Sixteen words that every commit writes to the same value, one by one: a
/// copy that mixes two commits has unequal words.
type Row = [u64; 16];

/// How long the writer and readers of the mixing tests run.
fn run_for() -> Duration {
    Duration::from_millis(
        std::env::var("TSHM_SNAPSHOT_MS").map_or(1500, |v| v.parse().expect("milliseconds")),
    )
}

fn child(role: &str, key: &str) {
    match role {
        // Commits rows of equal words, one word at a time, for `run_for()`,
        // pausing after each commit for as long as the commit took: a writer
        // that relocks at once leaves readers only the instants between its
        // unlock and its next lock, and on a loaded machine a run can pass
        // with hardly a clean copy (readers never block a writer, so one
        // that never stops can starve them; see `SharedMemory::snapshot`).
        "writer" => {
            let shm = SharedMemory::<Row>::attach(key).expect("attach");
            say("ready");
            assert_eq!(hear(), "go");
            let (mut commits, end) = (0u64, Instant::now() + run_for());
            while Instant::now() < end {
                let t = Instant::now();
                let mut g = shm.lock().expect("not poisoned");
                let next = g[0] + 1;
                for w in g.iter_mut() {
                    *w = next;
                }
                drop(g);
                commits += 1;
                let pause = t.elapsed();
                let t = Instant::now();
                while t.elapsed() < pause {
                    std::hint::spin_loop();
                }
            }
            say(&format!("committed {commits}"));
        }
        // The same with a slice, element by element, pausing after each
        // commit for 20 times as long as the commit took (a copy of a long
        // slice needs a longer moment without a commit in progress).
        "slice-writer" => {
            let shm = SharedMemory::<[u32]>::attach(key).expect("attach");
            say("ready");
            assert_eq!(hear(), "go");
            let (mut commits, end) = (0u64, Instant::now() + run_for());
            while Instant::now() < end {
                let mut g = shm.lock().expect("not poisoned");
                let next = g[0] + 1;
                let t = Instant::now();
                for w in g.iter_mut() {
                    *w = next;
                }
                drop(g);
                commits += 1;
                let pause = t.elapsed() * 20;
                let t = Instant::now();
                while t.elapsed() < pause {
                    std::hint::spin_loop();
                }
            }
            say(&format!("committed {commits}"));
        }
        // Snapshots through a read-only handle: every copy is one commit,
        // and versions never go back.
        "reader" => {
            let shm = SharedMemory::<Row, ReadOnly>::attach(key).expect("attach");
            say("ready");
            assert_eq!(hear(), "go");
            let (mut n, mut changes, mut last, mut last_version) = (0u64, 0u64, 0u64, 0u64);
            let end = Instant::now() + run_for();
            while Instant::now() < end {
                let version = shm.version();
                let row = shm.snapshot().expect("not poisoned");
                if row.iter().any(|&w| w != row[0]) {
                    say(&format!("MIXED {row:?}"));
                    return;
                }
                assert!(
                    version >= last_version,
                    "version went back: {last_version} → {version}"
                );
                assert!(row[0] >= last, "a snapshot went back: {last} → {}", row[0]);
                changes += u64::from(row[0] != last);
                (last, last_version, n) = (row[0], version, n + 1);
            }
            say(&format!("snapshots {n} changes {changes}"));
        }
        "slice-reader" => {
            let shm = SharedMemory::<[u32], ReadOnly>::attach(key).expect("attach");
            say("ready");
            assert_eq!(hear(), "go");
            let mut buf = vec![0u32; shm.len()];
            let (mut n, mut changes, mut last) = (0u64, 0u64, 0u32);
            let end = Instant::now() + run_for();
            while Instant::now() < end {
                shm.snapshot_into(&mut buf).expect("not poisoned");
                if let Some(i) = buf.iter().position(|&w| w != buf[0]) {
                    say(&format!("MIXED at {i}: {} vs {}", buf[i], buf[0]));
                    return;
                }
                changes += u64::from(buf[0] != last);
                (last, n) = (buf[0], n + 1);
            }
            say(&format!("snapshots {n} changes {changes}"));
        }
        // Commits when told to; a guard that only reads, and a read-only
        // handle's guard, commit nothing.
        "committer" => {
            let shm = SharedMemory::<Row>::attach(key).expect("attach");
            let ro = SharedMemory::<Row, ReadOnly>::attach(key).expect("attach");
            loop {
                match hear().as_str() {
                    "commit" => shm.lock().expect("not poisoned")[0] += 1,
                    "read" => assert_eq!(shm.lock().expect("not poisoned")[1], 0),
                    "read-only" => assert_eq!(ro.lock().expect("not poisoned")[1], 0),
                    _ => return,
                }
                say("done");
            }
        }
        // Writes half of a row, then waits inside the write (until killed,
        // stopped, or told to finish).
        "half-writer" => {
            let shm = SharedMemory::<Row>::attach(key).expect("attach");
            half_write(shm.lock().expect("not poisoned"));
        }
        // The same on a segment that is poisoned already.
        "poisoned-half-writer" => {
            let shm = SharedMemory::<Row>::attach(key).expect("attach");
            let g = shm.lock().expect_err("poisoned").into_inner();
            half_write(g);
        }
        // Holds a write guard in the middle of a write and, from the same
        // thread, takes snapshots and waits for changes through this handle
        // and another one; says how each ended.
        "self-waiter" => self_waiter(key),
        other => panic!("unknown role {other}"),
    }
}

/// Writes 99 into the first half of the row, says `half`, waits for
/// `finish`, writes the second half, commits and says `committed`.
fn half_write(mut g: typed_shm::Guard<'_, Row>) {
    for w in &mut g[..8] {
        *w = 99;
    }
    say("half");
    assert_eq!(hear(), "finish");
    for w in &mut g[8..] {
        *w = 99;
    }
    drop(g);
    say("committed");
}

/// The `self-waiter` role: see `a_thread_that_holds_the_lock_is_refused_a_wait_for_its_own_commit`.
fn self_waiter(key: &str) {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    common::quiet_panics_containing("would never end");
    let shm = SharedMemory::<Row>::attach(key).expect("attach");
    let other = SharedMemory::<Row, ReadOnly>::attach(key).expect("attach");
    let short = Duration::from_millis(200);
    let mut g = shm.lock().expect("not poisoned");
    g[0] = 7;
    let v = shm.version();
    let calls: [(&str, &dyn Fn() -> String); 5] = [
        ("snapshot", &|| format!("{:?}", shm.snapshot().map(|r| r[0]))),
        ("other snapshot", &|| {
            format!("{:?}", other.snapshot().map(|r| r[0]))
        }),
        ("other snapshot_timeout", &|| {
            format!("{:?}", other.snapshot_timeout(short).map(|r| r[0]))
        }),
        ("wait_for_change", &|| shm.wait_for_change(v).to_string()),
        ("other wait_for_change_timeout", &|| {
            format!(
                "{:?}",
                other.wait_for_change_timeout(v, short).map_err(|e| e.kind())
            )
        }),
    ];
    for (name, call) in calls {
        say(&format!("calling {name}"));
        match catch_unwind(AssertUnwindSafe(call)) {
            Ok(what) => say(&format!("{name} returned {what}")),
            Err(e) => say(&format!("{name} panicked: {}", common::panic_message(&*e))),
        }
    }
    g[1] = 7;
    drop(g);
    say(&format!(
        "then {:?} version {} poisoned {}",
        other.snapshot().map(|r| r[..2].to_vec()),
        other.version(),
        other.is_poisoned()
    ));
}

/// Runs one writer and two readers at once; returns (commits, each reader's
/// line).
fn mix(entry: &str, key: &str, writer: &str, reader: &str) -> (u64, Vec<String>) {
    let mut w = Child::spawn(entry, writer, key, &[]);
    let mut readers: Vec<Child> = (0..2).map(|_| Child::spawn(entry, reader, key, &[])).collect();
    for c in readers.iter_mut().chain([&mut w]) {
        c.expect("ready", LINE);
    }
    for c in readers.iter_mut().chain([&mut w]) {
        c.send("go");
    }
    let commits: u64 = w
        .next_line(LINE)
        .strip_prefix("committed ")
        .expect("the writer's count")
        .parse()
        .unwrap();
    let lines = readers.iter_mut().map(|r| r.next_line(LINE)).collect();
    w.wait_success(LINE);
    for r in &mut readers {
        r.wait_success(LINE);
    }
    (commits, lines)
}

/// Each reader took at least `min` snapshots and saw at least 3 commits.
fn check_readers(lines: &[String], min: u64) {
    for line in lines {
        let parts: Vec<&str> = line.split(' ').collect();
        assert!(
            parts.len() == 4 && parts[0] == "snapshots" && parts[2] == "changes",
            "a reader saw a copy that mixes two commits: {line}"
        );
        let (n, changes): (u64, u64) = (parts[1].parse().unwrap(), parts[3].parse().unwrap());
        assert!(n >= min, "too few snapshots to mean anything: {line}");
        assert!(
            changes > 10,
            "the reader did not see the writer's commits: {line}"
        );
    }
}

/// A writer commits continuously in one process while readers in two others
/// take snapshots through read-only handles: no copy mixes two commits,
/// versions and values never go back, and the version counts every commit.
#[test]
fn snapshots_in_other_processes_never_mix_two_commits() {
    const ENTRY: &str = "snapshots_in_other_processes_never_mix_two_commits";
    if let Some((role, key)) = common::role() {
        return child(&role, &key);
    }
    let key = unique_key("snap-mix");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Row>::create(&key, [0; 16]).expect("create");
    let (commits, lines) = mix(ENTRY, &key, "writer", "reader");
    eprintln!("snapshot mix: {commits} commits; readers: {lines:?}");
    check_readers(&lines, 1000);
    assert_eq!(shm.version(), commits, "one version per commit");
    assert_eq!(shm.snapshot().unwrap(), [commits; 16]);
    drop(shm);
    keys.finish();
}

/// The same for a slice of 1024 elements, copied with `snapshot_into`.
#[test]
fn slice_snapshots_in_other_processes_never_mix_two_commits() {
    const ENTRY: &str = "slice_snapshots_in_other_processes_never_mix_two_commits";
    if let Some((role, key)) = common::role() {
        return child(&role, &key);
    }
    let key = unique_key("snap-slice");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<[u32]>::create_slice(&key, 1024, 0).expect("create_slice");
    let (commits, lines) = mix(ENTRY, &key, "slice-writer", "slice-reader");
    eprintln!("slice snapshot mix: {commits} commits; readers: {lines:?}");
    check_readers(&lines, 200);
    assert_eq!(shm.version(), commits);
    assert!(shm.snapshot().unwrap().iter().all(|&w| u64::from(w) == commits));
    drop(shm);
    keys.finish();
}

/// `version()` counts commits made in other processes; a guard that only
/// reads and a read-only handle's guard commit nothing; `wait_for_change`
/// in this process is woken by each commit there, promptly (by the
/// committer, not by a polling interval).
#[test]
fn versions_count_commits_across_processes_and_wake_waiters() {
    const ENTRY: &str = "versions_count_commits_across_processes_and_wake_waiters";
    if let Some((role, key)) = common::role() {
        return child(&role, &key);
    }
    let key = unique_key("snap-version");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Row>::create(&key, [0; 16]).expect("create");
    assert_eq!(shm.version(), 0);
    let mut c = Child::spawn(ENTRY, "committer", &key, &[]);
    for what in ["read", "read-only"] {
        c.send(what);
        c.expect("done", LINE);
        assert_eq!(shm.version(), 0, "a guard that only read ({what}) committed");
    }
    let mut latencies = Vec::new();
    for round in 1..=20u64 {
        let since = shm.version();
        assert_eq!(since, round - 1);
        let t = Instant::now();
        c.send("commit");
        let now = shm
            .wait_for_change_timeout(since, LINE)
            .expect("woken by the commit");
        latencies.push(t.elapsed());
        assert_eq!(now, round);
        c.expect("done", LINE);
    }
    c.send("bye");
    c.wait_success(LINE);
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    eprintln!(
        "wait_for_change wake-up after a commit in another process: median {median:?}, all {latencies:?}"
    );
    // A wake-up that waited for a polling interval instead (waiters look at
    // the lock word every 20 ms) would put the median near 10 ms or above.
    assert!(median < Duration::from_millis(8), "median wake-up {median:?}");
    assert_eq!(shm.snapshot().unwrap()[0], 20);
    drop(shm);
    keys.finish();
}

/// A writer killed in the middle of a write: while it lives, `snapshot`
/// cannot get a consistent copy (`snapshot_timeout` times out) and a waiter
/// waits; once it is dead, `snapshot` reports the poison with the data as it
/// stands, and the waiter returns — both within 100 ms. The next `lock`
/// repairs the sequence word (the version advances once); the poison stays
/// until `clear_poison`.
#[test]
fn a_writer_killed_mid_write_is_reported_as_poison_within_100_ms() {
    const ENTRY: &str = "a_writer_killed_mid_write_is_reported_as_poison_within_100_ms";
    if let Some((role, key)) = common::role() {
        return child(&role, &key);
    }
    let key = unique_key("snap-kill");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Row>::create(&key, [5; 16]).expect("create");
    let mut c = Child::spawn(ENTRY, "half-writer", &key, &[]);
    c.expect("half", LINE);
    assert!(matches!(
        shm.snapshot_timeout(Duration::from_millis(30)),
        Err(TryLockError::TimedOut)
    ));
    // The waiter and the snapshot run on threads of their own, with handles
    // of their own: a bug that makes either hang fails the test.
    let waiter_key = key.clone();
    let mut waiter = common::start("wait_for_change after the writer's death", move || {
        let shm = SharedMemory::<Row, ReadOnly>::attach(&waiter_key).expect("attach");
        let v = shm.wait_for_change(0);
        (v, Instant::now())
    });
    // Let the waiter block (it would return at once after the kill too).
    std::thread::sleep(Duration::from_millis(20));
    assert!(!waiter.is_finished(), "the waiter returned before any change");
    let reader = SharedMemory::<Row, ReadOnly>::attach(&key).expect("attach");
    let status = c.kill_and_reap();
    let dead = Instant::now();
    assert_eq!(common::killed_by(&status), Some(libc::SIGKILL));
    let (r, took) = common::within(
        Duration::from_secs(10),
        "snapshot after the writer's death",
        move || {
            let r = reader.snapshot().map_err(typed_shm::PoisonError::into_inner);
            (r, dead.elapsed())
        },
    );
    match r {
        Err(row) => {
            assert_eq!(row[..8], [99; 8], "the data as it stands");
            assert_eq!(row[8..], [5; 8]);
        }
        Ok(row) => panic!("a half-written row reported clean: {row:?}"),
    }
    assert!(
        took < Duration::from_millis(100),
        "snapshot reported the poison after {took:?}"
    );
    let (v, at) = waiter.wait(Duration::from_secs(10));
    let woke = at.saturating_duration_since(dead);
    eprintln!("after the writer's death: snapshot {took:?}, waiter {woke:?}");
    assert_eq!(v, 0, "no commit happened");
    assert!(
        woke < Duration::from_millis(100),
        "the waiter returned {woke:?} after the death"
    );
    assert!(shm.is_poisoned());
    match shm.lock() {
        Err(p) => assert_eq!(p.into_inner()[0], 99),
        Ok(_) => panic!("the lock of a dead holder is not poisoned"),
    }
    assert_eq!(
        shm.version(),
        1,
        "the repair publishes the half-written data once"
    );
    assert!(shm.snapshot().is_err(), "poison is sticky for snapshots too");
    shm.clear_poison();
    assert_eq!(shm.snapshot().unwrap()[..8], [99; 8]);
    drop(shm);
    keys.finish();
}

/// A writer stopped (SIGSTOP) in the middle of a write never makes a reader
/// return a mixed copy or hang: `snapshot_timeout` times out; after SIGCONT
/// and the end of the write, `snapshot` sees the new commit.
#[test]
fn a_stopped_writer_makes_snapshot_timeout_time_out_then_the_commit_shows() {
    const ENTRY: &str = "a_stopped_writer_makes_snapshot_timeout_time_out_then_the_commit_shows";
    if let Some((role, key)) = common::role() {
        return child(&role, &key);
    }
    let key = unique_key("snap-stop");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Row>::create(&key, [5; 16]).expect("create");
    let mut c = Child::spawn(ENTRY, "half-writer", &key, &[]);
    c.expect("half", LINE);
    c.signal(libc::SIGSTOP);
    for _ in 0..3 {
        let t = Instant::now();
        assert!(matches!(
            shm.snapshot_timeout(Duration::from_millis(40)),
            Err(TryLockError::TimedOut)
        ));
        assert!(t.elapsed() >= Duration::from_millis(40));
    }
    assert_eq!(shm.version(), 0);
    c.signal(libc::SIGCONT);
    c.send("finish");
    c.expect("committed", LINE);
    assert_eq!(shm.snapshot_timeout(LINE).unwrap(), [99; 16]);
    assert_eq!(shm.version(), 1);
    c.wait_success(LINE);
    drop(shm);
    keys.finish();
}

/// The same on a poisoned segment: while the writer is stopped in the
/// middle of its write, `snapshot_timeout` times out (poison does not make
/// it return the half-written data); after the write ends, snapshots report
/// the poison with the whole new commit.
#[test]
fn a_stopped_writer_on_a_poisoned_segment_times_out_then_the_poisoned_commit_shows() {
    const ENTRY: &str = "a_stopped_writer_on_a_poisoned_segment_times_out_then_the_poisoned_commit_shows";
    if let Some((role, key)) = common::role() {
        return child(&role, &key);
    }
    let key = unique_key("snap-stop-poisoned");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Row>::create(&key, [5; 16]).expect("create");
    common::quiet_panics_containing("poison the segment");
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _g = shm.lock().expect("not poisoned");
        panic!("poison the segment");
    }));
    assert!(panicked.is_err());
    assert!(shm.is_poisoned());
    assert_eq!(shm.snapshot().expect_err("poisoned").into_inner(), [5; 16]);
    let mut c = Child::spawn(ENTRY, "poisoned-half-writer", &key, &[]);
    c.expect("half", LINE);
    c.signal(libc::SIGSTOP);
    for _ in 0..3 {
        let t = Instant::now();
        match shm.snapshot_timeout(Duration::from_millis(40)) {
            Err(TryLockError::TimedOut) => {}
            Err(TryLockError::Poisoned(p)) => panic!("a copy during the write: {:?}", p.into_inner()),
            other => panic!("not a time-out: {other:?}"),
        }
        assert!(t.elapsed() >= Duration::from_millis(40));
    }
    c.signal(libc::SIGCONT);
    c.send("finish");
    c.expect("committed", LINE);
    match shm.snapshot_timeout(LINE) {
        Err(TryLockError::Poisoned(p)) => assert_eq!(p.into_inner(), [99; 16]),
        other => panic!("the poison is not reported: {other:?}"),
    }
    assert_eq!(shm.snapshot().expect_err("poisoned").into_inner(), [99; 16]);
    c.wait_success(LINE);
    drop(shm);
    keys.finish();
}

/// A thread that holds the lock and then takes a snapshot (in the middle of
/// its own write) or waits for a change cannot see the commit it waits for:
/// it would wait forever. Each such call panics at once, through the same
/// handle and through another one, with a message that says why, and the
/// guard it holds is unaffected: dropped normally afterwards, it commits
/// unpoisoned. The calls run in a child process, each under a deadline, so a
/// call that hangs fails the test instead of hanging it.
#[test]
fn a_thread_that_holds_the_lock_is_refused_a_wait_for_its_own_commit() {
    const ENTRY: &str = "a_thread_that_holds_the_lock_is_refused_a_wait_for_its_own_commit";
    if let Some((role, key)) = common::role() {
        return child(&role, &key);
    }
    let key = unique_key("snap-self");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Row>::create(&key, [0; 16]).expect("create");
    let mut c = Child::spawn(ENTRY, "self-waiter", &key, &[]);
    for name in [
        "snapshot",
        "other snapshot",
        "other snapshot_timeout",
        "wait_for_change",
        "other wait_for_change_timeout",
    ] {
        c.expect(&format!("calling {name}"), LINE);
        let Some(line) = c.lines_within(LINE) else {
            c.kill();
            panic!("{name} by the lock's holder hung: no answer within {LINE:?}");
        };
        let msg = line
            .strip_prefix(&format!("{name} panicked: "))
            .unwrap_or_else(|| panic!("{name} by the lock's holder must panic: {line}"));
        assert!(msg.contains("would never end"), "{name}: {msg}");
    }
    c.expect("then Ok([7, 7]) version 1 poisoned false", LINE);
    c.wait_success(LINE);
    assert!(!shm.is_poisoned());
    assert_eq!(shm.snapshot().expect("not poisoned")[..2], [7, 7]);
    drop(shm);
    keys.finish();
}

/// A panic under a write guard commits what was written and poisons:
/// snapshots report the poison, a waiter is woken, the version advances.
#[test]
fn a_panic_under_a_write_guard_is_reported_by_snapshot_and_wakes_waiters() {
    let key = unique_key("snap-panic");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Row>::create(&key, [1; 16]).expect("create");
    std::thread::scope(|s| {
        let waiter = s.spawn(|| shm.wait_for_change_timeout(0, LINE));
        let panicked = s
            .spawn(|| {
                let mut g = shm.lock().unwrap();
                g[0] = 2;
                panic!("half-way");
            })
            .join();
        assert!(panicked.is_err());
        assert_eq!(waiter.join().unwrap().expect("woken"), 1);
    });
    match shm.snapshot() {
        Err(p) => assert_eq!(p.into_inner()[..2], [2, 1]),
        Ok(_) => panic!("a snapshot after a panic under the lock is not poisoned"),
    }
    shm.clear_poison();
    assert!(shm.snapshot().is_ok());
    drop(shm);
    keys.finish();
}

/// Commits on a poisoned segment keep it poisoned for snapshots (the
/// sequence word carries the poison through them, SPEC §6). `clear_poison`
/// by a thread that does not hold the lock waits for the holder, so that the
/// holder's commit cannot bring the poison back: afterwards lockers and
/// snapshots agree that the segment is clean. By the holder itself (through
/// its guard, or another handle) it clears at once.
#[test]
fn poison_survives_commits_and_clear_poison_waits_for_the_holder() {
    use std::sync::mpsc::channel;
    let key = unique_key("snap-clear");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Row>::create(&key, [1; 16]).expect("create");
    common::poison_by_panic(&shm);
    {
        let mut g = shm.lock().unwrap_err().into_inner();
        g[0] = 3;
    }
    assert_eq!(shm.version(), 1);
    match shm.snapshot() {
        Err(p) => assert_eq!(p.into_inner()[0], 3),
        Ok(_) => panic!("a commit made the poisoned segment look clean to snapshots"),
    }

    // clear_poison while another thread holds the lock, in the middle of a
    // write.
    let (writing_tx, writing_rx) = channel();
    let (cleared_tx, cleared_rx) = channel();
    let shm_ref = &shm;
    let early = std::thread::scope(|s| {
        let holder = s.spawn(move || {
            let shm = shm_ref;
            let mut g = shm.lock().unwrap_err().into_inner();
            g[0] = 4;
            writing_tx.send(()).unwrap();
            // A clear_poison that did not wait for the lock would end here,
            // before this commit, which would then set the poison again.
            let early = cleared_rx.recv_timeout(Duration::from_millis(200)).is_ok();
            g[1] = 4;
            early
        });
        writing_rx.recv_timeout(LINE).expect("the holder writes");
        s.spawn(move || {
            shm_ref.clear_poison();
            // The holder stopped listening once it committed.
            let _ = cleared_tx.send(());
        });
        holder.join().unwrap()
    });
    assert!(!early, "clear_poison returned while another thread held the lock");
    assert!(!shm.is_poisoned());
    assert_eq!(shm.snapshot().expect("clean for snapshots too")[..2], [4, 4]);
    assert_eq!(shm.version(), 2);
    assert!(shm.lock().is_ok(), "clean for lockers");

    // By the holder: at once, whichever handle it calls through. On threads
    // of their own, so that a clear_poison that waits for its own thread's
    // lock fails the test instead of hanging it.
    for other_handle in [false, true] {
        common::poison_by_panic(&shm);
        let key = key.clone();
        common::within(LINE, "clear_poison by the holder", move || {
            let a = SharedMemory::<Row>::attach(&key).expect("attach");
            let b = SharedMemory::<Row>::attach(&key).expect("attach");
            let mut g = a.lock().unwrap_err().into_inner();
            g[2] = 5;
            if other_handle { &b } else { &a }.clear_poison();
            drop(g);
        });
        assert!(!shm.is_poisoned());
        assert_eq!(shm.snapshot().expect("clean")[2], 5);
    }
    drop(shm);
    keys.finish();
}

/// A segment of an older header format (version 1, or version 2, whose
/// sequence word had another meaning), written by an older typed-shm, is
/// `IncompatibleVersion` for `attach`, with a message that names both
/// versions, and is left untouched by `create` and `open_or_create`.
#[test]
fn older_format_segments_are_incompatible_and_left_untouched() {
    use std::os::unix::fs::FileExt;
    for (version, header_size) in [(1u32, 512u32), (2, 576)] {
        let key = unique_key(&format!("snap-v{version}"));
        let keys = Keys::new(&[&key]);
        let shm = SharedMemory::<Row>::create(&key, [1; 16]).expect("create");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(common::shm_path(&key))
            .unwrap();
        // version and header_size (offsets 8 and 12).
        file.write_all_at(&version.to_ne_bytes(), 8).unwrap();
        file.write_all_at(&header_size.to_ne_bytes(), 12).unwrap();
        let before = std::fs::read(common::shm_path(&key)).unwrap();
        let err = SharedMemory::<Row>::attach(&key).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::IncompatibleVersion, "{err}");
        assert!(err.to_string().contains(&format!("version {version}")), "{err}");
        assert!(err.to_string().contains("version 3"), "{err}");
        let err = SharedMemory::<Row>::create(&key, [0; 16]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
        let err = SharedMemory::<Row>::open_or_create(&key, || [0; 16]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::IncompatibleVersion, "{err}");
        assert_eq!(
            std::fs::read(common::shm_path(&key)).unwrap(),
            before,
            "version {version}: the file changed"
        );
        drop(shm);
        keys.finish();
    }
}

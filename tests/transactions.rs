//! Transactional segments with real processes: writers SIGKILLed at random
//! instants of long writes and of the commit itself; panics and explicit
//! rollbacks; snapshots while a write guard is held; the version advances
//! only on commits.

mod common;

use std::os::unix::fs::FileExt;
use std::time::Duration;

use common::{Child, Keys, hear, say, unique_key};
use typed_shm::{ErrorKind, Guard, ReadOnly, SharedMemory, TryLockError};

const LINE: Duration = Duration::from_secs(30);

/// 32 KiB of words that every commit sets to the same value, the commit
/// count: a copy that mixes two commits has unequal words, and the value is
/// always the version.
type Big = [u64; 4096];

fn txn_create(key: &str) -> SharedMemory<Big> {
    SharedMemory::<Big>::options()
        .transactional(true)
        .create(key, [0; 4096])
        .expect("create")
}

/// The sequence word as the segment file holds it (header offset 512): odd
/// while a commit is being published.
fn raw_seq(key: &str) -> u64 {
    let file = std::fs::File::open(common::shm_path(key)).expect("the segment file");
    let mut b = [0u8; 8];
    file.read_exact_at(&mut b, 512).expect("read the sequence word");
    u64::from_ne_bytes(b)
}

fn child(role: &str, key: &str) {
    match role {
        // Commits rows of equal words forever (until killed), writing each
        // row in two halves with a pause between them.
        "committer" => {
            let shm = SharedMemory::<Big>::attach(key).expect("attach");
            say("ready");
            loop {
                let mut g = shm.lock().expect("a transactional segment is never poisoned");
                let next = g[0] + 1;
                for w in &mut g[..2048] {
                    *w = next;
                }
                std::hint::black_box(&mut *g);
                for w in &mut g[2048..] {
                    *w = next;
                }
            }
        }
        // Holds a write guard with half a row written, until told to go.
        "holder" => {
            let shm = SharedMemory::<Big>::attach(key).expect("attach");
            let mut g = shm.lock().expect("not poisoned");
            for w in &mut g[..2048] {
                *w = 777;
            }
            say("holding");
            assert_eq!(hear(), "commit");
            for w in &mut g[2048..] {
                *w = 777;
            }
            drop(g);
            say("committed");
        }
        // Holds the lock and leaves the segment as a writer killed in the
        // middle of publishing a commit of ones would: the row in the other
        // buffer, the word odd, and — for the "counted" writer, which died
        // after counting the commit — the count one further. Then waits to
        // be killed. (Run on a new segment.)
        "counted-dier" | "uncounted-dier" => {
            common::die_publishing::<Big>(key, &[1; 4096], role == "counted-dier")
        }
        // Holds a read-only guard until killed.
        "reader-holder" => {
            let shm = SharedMemory::<Big, ReadOnly>::attach(key).expect("attach");
            let _g = shm.lock().expect("not poisoned");
            say("holding");
            hear();
        }
        other => panic!("unknown role {other}"),
    }
}

/// Checks the segment after a writer's death: `snapshot` is a whole commit
/// equal to the version; `lock` is `Ok` (never poisoned) with a whole commit
/// equal to the version then — the same, or one more if the dead writer had
/// counted a commit whose copy was whole, which the lock completes; a
/// snapshot agrees. Returns the version.
fn check_whole(shm: &SharedMemory<Big>, what: &str) -> u64 {
    let version = shm.version();
    let snap = shm
        .snapshot()
        .unwrap_or_else(|_| panic!("{what}: snapshot poisoned"));
    assert!(
        snap.iter().all(|&w| w == snap[0]),
        "{what}: snapshot mixes two commits"
    );
    assert_eq!(snap[0], version, "{what}: the snapshot is not the last commit");
    let g = match shm.lock() {
        Ok(g) => g,
        Err(_) => panic!("{what}: a transactional segment reported poison"),
    };
    assert!(
        g.iter().all(|&w| w == g[0]),
        "{what}: the lock shows a mix of two commits"
    );
    assert!(
        g[0] == version || g[0] == version + 1,
        "{what}: the lock shows {} after version {version}",
        g[0]
    );
    let version = g[0];
    drop(g);
    assert!(!shm.is_poisoned(), "{what}");
    assert_eq!(shm.version(), version, "{what}: a read committed");
    assert_eq!(
        shm.snapshot().expect("not poisoned")[0],
        version,
        "{what}: the snapshot after the lock"
    );
    version
}

/// The kill storm of transactional segments: writers in other processes
/// commit 32 KiB rows without pause and are SIGKILLed at random instants —
/// while writing their private copy, and (proven by the sequence word found
/// odd) in the middle of publishing the commit. After every kill, in this
/// process: `lock` is `Ok`, never poisoned, and shows a whole commit;
/// `snapshot` agrees; the version equals the value, so it advanced exactly
/// once per finished commit; a reader thread snapshotting all along never
/// saw a mix. Rounds: `TSHM_TXN_ROUNDS` (default 300).
#[test]
fn writers_killed_at_any_instant_leave_the_last_commit_unpoisoned() {
    const ENTRY: &str = "writers_killed_at_any_instant_leave_the_last_commit_unpoisoned";
    if let Some((role, key)) = common::role() {
        return child(&role, &key);
    }
    let rounds: u32 = std::env::var("TSHM_TXN_ROUNDS").map_or(300, |v| v.parse().expect("a number"));
    let key = unique_key("txn-storm");
    let keys = Keys::new(&[&key]);
    let shm = txn_create(&key);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut mid_commit, mut last) = (0u32, 0u64);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let snap = shm.snapshot().unwrap_or_else(|_| panic!("snapshot poisoned"));
                assert!(snap.iter().all(|&w| w == snap[0]), "a snapshot mixed two commits");
                n += 1;
            }
            n
        });
        for round in 0..rounds {
            let mut c = Child::spawn(ENTRY, "committer", &key, &[]);
            c.expect("ready", LINE);
            // Let it commit for 0..4 ms, then kill it wherever it is.
            std::thread::sleep(Duration::from_micros(next() % 4000));
            c.signal(libc::SIGKILL);
            let status = c.kill_and_reap();
            assert_eq!(
                common::killed_by(&status),
                Some(libc::SIGKILL),
                "round {round}: {status}"
            );
            if raw_seq(&key) & 1 == 1 {
                mid_commit += 1;
            }
            let version = check_whole(&shm, &format!("round {round}"));
            assert!(version >= last, "round {round}: the version went back");
            last = version;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let snapshots = reader.join().expect("the reader thread");
        eprintln!(
            "transactional kill storm: {rounds} writers killed, {mid_commit} of them in the middle \
             of publishing a commit; {last} commits; {snapshots} snapshots, none mixed"
        );
        assert!(snapshots > 0);
    });
    assert!(last > 0, "no writer committed anything");
    assert!(
        mid_commit > 0,
        "no kill landed in the middle of a commit: the test did not exercise it"
    );
    drop(shm);
    keys.finish();
}

/// A long-held write guard in another process does not delay snapshots: they
/// return the last commit at once, many times over, while the guard is held
/// with half its changes made; the changes show only after its drop.
#[test]
fn a_held_write_guard_does_not_delay_snapshots_and_changes_show_on_commit() {
    const ENTRY: &str = "a_held_write_guard_does_not_delay_snapshots_and_changes_show_on_commit";
    if let Some((role, key)) = common::role() {
        return child(&role, &key);
    }
    let key = unique_key("txn-held");
    let keys = Keys::new(&[&key]);
    let shm = txn_create(&key);
    let mut c = Child::spawn(ENTRY, "holder", &key, &[]);
    c.expect("holding", LINE);
    for _ in 0..1000 {
        let snap = shm
            .snapshot_timeout(Duration::from_millis(100))
            .unwrap_or_else(|e| panic!("snapshot while a writer holds the lock: {e}"));
        assert_eq!(snap[0], 0);
        assert_eq!(snap[2047], 0, "a change before the commit is visible");
    }
    assert!(matches!(shm.try_lock(), Err(TryLockError::WouldBlock)));
    assert_eq!(shm.version(), 0);
    c.send("commit");
    c.expect("committed", LINE);
    assert_eq!(shm.snapshot().unwrap(), [777; 4096]);
    assert_eq!(shm.version(), 1);
    c.wait_success(LINE);
    drop(shm);
    keys.finish();
}

/// A writer killed while holding its guard, half its changes made: nothing
/// of them is visible, the lock is `Ok` and not poisoned, the version did not
/// move; a process killed holding a read-only guard does not poison either.
#[test]
fn a_writer_or_reader_killed_holding_the_lock_leaves_the_last_commit() {
    const ENTRY: &str = "a_writer_or_reader_killed_holding_the_lock_leaves_the_last_commit";
    if let Some((role, key)) = common::role() {
        return child(&role, &key);
    }
    let key = unique_key("txn-kill");
    let keys = Keys::new(&[&key]);
    let shm = txn_create(&key);
    for role in ["holder", "reader-holder"] {
        let mut c = Child::spawn(ENTRY, role, &key, &[]);
        c.expect("holding", LINE);
        c.kill_and_reap();
        assert!(!shm.is_poisoned(), "{role}: is_poisoned after its death");
        assert_eq!(check_whole(&shm, role), 0);
    }
    drop(shm);
    keys.finish();
}

/// A writer killed in the middle of publishing a commit: if it had not yet
/// counted the commit, the commit is abandoned (the last commit stays, the
/// version does not move); if it had counted it — its copy was then whole,
/// and only the sequence word was left to store — the next locker completes
/// it: the lock shows the new row, the version counts it, and waiters are
/// woken. Before that lock, `version` and `snapshot` agree on the last
/// commit either way (the count runs one ahead, and `version` knows it by
/// its parity). The deaths are made exact: the child holds the lock and
/// writes what the publish would have written up to that instant, then is
/// killed.
#[test]
fn a_writer_killed_after_counting_its_commit_is_completed_not_counted_twice() {
    const ENTRY: &str = "a_writer_killed_after_counting_its_commit_is_completed_not_counted_twice";
    if let Some((role, key)) = common::role() {
        return child(&role, &key);
    }
    for (role, expected) in [("uncounted-dier", 0), ("counted-dier", 1)] {
        let key = unique_key(role);
        let keys = Keys::new(&[&key]);
        let shm = txn_create(&key);
        let mut c = Child::spawn(ENTRY, role, &key, &[]);
        c.expect("crafted", LINE);
        assert_eq!(raw_seq(&key) & 1, 1, "{role}: the word is odd");
        // An abandoned commit wakes nobody; a completed one wakes waiters.
        let wait = if expected == 0 {
            Duration::from_millis(300)
        } else {
            LINE
        };
        std::thread::scope(|s| {
            let waiter = s.spawn(|| shm.wait_for_change_timeout(0, wait));
            c.kill_and_reap();
            // Nobody has locked since: the commit is neither completed nor
            // abandoned yet, and every reader sees the last commit.
            assert_eq!(shm.version(), 0, "{role}: version before the next lock");
            assert!(
                shm.snapshot().expect("not poisoned").iter().all(|&w| w == 0),
                "{role}: snapshot before the next lock"
            );
            let g = match shm.lock() {
                Ok(g) => g,
                Err(_) => panic!("{role}: a transactional segment reported poison"),
            };
            assert!(
                g.iter().all(|&w| w == expected),
                "{role}: the lock shows {}",
                g[0]
            );
            drop(g);
            assert_eq!(raw_seq(&key) & 1, 0, "{role}: the word is even again");
            assert_eq!(check_whole(&shm, role), expected);
            match waiter.join().unwrap() {
                Ok(v) => assert_eq!((expected, v), (1, 1), "{role}: the waiter woke"),
                Err(e) => assert_eq!((expected, e.kind()), (0, ErrorKind::TimedOut), "{role}"),
            }
        });
        drop(shm);
        keys.finish();
    }
}

/// A panic under a write guard and `Guard::rollback` discard the changes:
/// `lock` is `Ok` with the last commit, not poisoned, the version does not
/// advance, and a waiter is not woken; a normal drop after a write commits.
/// On a segment that is not transactional, `rollback` gives the guard back
/// (the changes are already in place) and the lock stays held.
#[test]
fn panics_and_rollbacks_discard_commits_advance() {
    let key = unique_key("txn-panic");
    let plain_key = unique_key("txn-plain");
    let keys = Keys::new(&[&key, &plain_key]);
    let shm = txn_create(&key);
    std::panic::set_hook(Box::new(|_| {}));
    let panicked = std::panic::catch_unwind(|| {
        let mut g = shm.lock().unwrap();
        g[0] = 5;
        panic!("half-way");
    });
    let _ = std::panic::take_hook();
    assert!(panicked.is_err());
    assert_eq!(check_whole(&shm, "after a panic"), 0);

    let mut g = shm.lock().unwrap();
    g.fill(9);
    assert!(Guard::rollback(g).is_ok());
    assert_eq!(check_whole(&shm, "after a rollback"), 0);
    assert!(
        shm.wait_for_change_timeout(0, Duration::from_millis(30)).is_err(),
        "nothing to wake for"
    );

    shm.lock().unwrap().fill(1);
    assert_eq!(check_whole(&shm, "after a commit"), 1);

    let plain = SharedMemory::<[u64; 2]>::create(&plain_key, [0, 0]).unwrap();
    assert!(!plain.is_transactional());
    let mut g = plain.lock().unwrap();
    g[0] = 3;
    let g = Guard::rollback(g).expect_err("not transactional: nothing can be undone");
    assert_eq!(*g, [3, 0], "the guard comes back as it was");
    assert!(
        matches!(plain.try_lock(), Err(TryLockError::WouldBlock)),
        "still held"
    );
    drop(g);
    assert_eq!(plain.snapshot().unwrap(), [3, 0]);
    drop((shm, plain));
    keys.finish();
}

/// Transactional slices: a commit replaces the whole slice at once for
/// readers; a second handle learns the mode from the header; the segment
/// holds two buffers.
#[test]
fn transactional_slices_commit_whole_and_attachers_learn_the_mode() {
    let key = unique_key("txn-slice");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<[u32]>::options()
        .transactional(true)
        .create_slice(&key, 10_000, 1)
        .unwrap();
    let peer = SharedMemory::<[u32]>::attach(&key).unwrap();
    let ro = SharedMemory::<[u32], ReadOnly>::attach(&key).unwrap();
    assert!(peer.is_transactional() && ro.is_transactional());
    let file_len = std::fs::metadata(common::shm_path(&key)).unwrap().len();
    assert!(file_len >= 4096 + 2 * 40_000, "two buffers: {file_len} bytes");
    {
        let mut g = peer.lock().unwrap();
        g.fill(2);
        assert_eq!(ro.snapshot().unwrap()[9_999], 1, "before the commit");
    }
    assert!(ro.snapshot().unwrap().iter().all(|&w| w == 2));

    assert!(shm.lock().unwrap().iter().all(|&w| w == 2));
    assert_eq!(ro.version(), 1);
    drop((shm, peer, ro));
    keys.finish();
}

/// `open_or_create` of an existing segment in the other mode (transactional
/// or not) is `LayoutMismatch`, and the segment is untouched; in the same
/// mode it attaches.
#[test]
fn open_or_create_in_the_other_mode_is_a_layout_mismatch() {
    let key = unique_key("txn-mode");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<[u64; 2]>::options()
        .transactional(true)
        .create(&key, [4, 4])
        .unwrap();
    let err = SharedMemory::<[u64; 2]>::open_or_create(&key, || [0, 0])
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.kind(), typed_shm::ErrorKind::LayoutMismatch, "{err}");
    assert!(err.to_string().contains("is transactional"), "{err}");
    let same = SharedMemory::<[u64; 2]>::options()
        .transactional(true)
        .open_or_create(&key, || [0, 0])
        .unwrap();
    assert!(!same.created() && same.is_transactional());
    assert_eq!(shm.snapshot().unwrap(), [4, 4]);
    assert_eq!(shm.attach_count(), 2);
    drop((shm, same));
    keys.finish();
}

/// Write guards always start from the last commit, whichever handle made it
/// and whatever a discarded guard left in a handle's private copy: two
/// handles increment different words in turn, with rollbacks and panics of
/// scribbling guards in between.
#[test]
fn write_guards_always_start_from_the_last_commit() {
    let key = unique_key("txn-start");
    let keys = Keys::new(&[&key]);
    let a = SharedMemory::<[u64; 4]>::options()
        .transactional(true)
        .create(&key, [0; 4])
        .unwrap();
    let b = SharedMemory::<[u64; 4]>::attach(&key).unwrap();
    std::panic::set_hook(Box::new(|_| {}));
    for i in 0..500u64 {
        a.lock().unwrap()[0] += 1;
        a.lock().unwrap()[0] += 1; // again from the same handle
        b.lock().unwrap()[1] += 1;
        let mut g = a.lock().unwrap();
        g.fill(99);
        assert!(Guard::rollback(g).is_ok());
        let _ = std::panic::catch_unwind(|| {
            let mut g = b.lock().unwrap();
            g.fill(77);
            panic!("discarded");
        });
        b.lock().unwrap()[2] += 1;
        a.lock().unwrap()[3] += 1;
        assert_eq!(
            a.snapshot().unwrap(),
            [2 * (i + 1), i + 1, i + 1, i + 1],
            "round {i}"
        );
    }
    let _ = std::panic::take_hook();
    assert_eq!(a.version(), 500 * 5);
    drop((a, b));
    keys.finish();
}

/// Tools see a transactional segment as its programs do: `inspect` reports
/// it transactional, and its snapshot is the last commit, also while a
/// write guard with changes is held.
#[test]
fn inspect_reads_the_committed_buffer_of_a_transactional_segment() {
    let key = unique_key("txn-inspect");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<[u64; 2]>::options()
        .transactional(true)
        .create(&key, [1, 1])
        .unwrap();
    *shm.lock().unwrap() = [2, 2];
    *shm.lock().unwrap() = [3, 3];
    let seg = typed_shm::inspect::Segment::open(&key).unwrap();
    assert!(seg.is_transactional());
    assert_eq!(seg.version(), 2);
    let mut g = shm.lock().unwrap();
    *g = [9, 9];
    let snap = seg.snapshot().unwrap();
    assert_eq!(
        snap.bytes,
        bytemuck::bytes_of(&[3u64, 3]),
        "the committed value, not the guard's"
    );
    assert_eq!(snap.version, 2);
    drop(g);
    assert_eq!(seg.snapshot().unwrap().bytes, bytemuck::bytes_of(&[9u64, 9]));
    drop((seg, shm));
    keys.finish();
}

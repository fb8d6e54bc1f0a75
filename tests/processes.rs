//! Multi-process behaviour: every test here runs at least one real child
//! process (a re-run of this test binary in a role) against a real segment in
//! `/dev/shm`.

mod common;

use std::time::{Duration, Instant};

use common::{Child, Keys, hear, say, unique_key};
use typed_shm::{ErrorKind, ReadOnly, SharedMemory, TryLockError};

const T: Duration = Duration::from_secs(20);

/// Two fields that a correct writer always keeps equal: a holder killed
/// between the two stores leaves them unequal.
type Pair = [u64; 2];

/// The child roles of the tests of this file; each test runs them as roles
/// of itself (see `common`).
fn child(role: &str, key: &str) {
    match role {
        "read-write-back" => {
            let shm = SharedMemory::<[u64; 4]>::attach(key).unwrap();
            let mut g = shm.lock().unwrap();
            say(&format!("saw {:?}", *g));
            for v in g.iter_mut() {
                *v *= 10;
            }
        }
        "reader" => {
            let shm = SharedMemory::<u64, ReadOnly>::attach(key).unwrap();
            say(&format!("first {}", *shm.lock().unwrap()));
            // Wait (bounded) for the parent's next write to show through.
            let ok = common::wait_until(T, || *shm.lock().unwrap() == 2);
            say(if ok { "saw 2" } else { "never saw 2" });
        }
        "hold-lock" => {
            let shm = SharedMemory::<Pair>::attach(key).unwrap();
            let g = shm.lock().unwrap();
            say("locked");
            assert_eq!(hear(), "release");
            drop(g);
            say("released");
        }
        "die-half-way" => {
            let shm = SharedMemory::<Pair>::attach(key).unwrap();
            let mut g = shm.lock().unwrap();
            g[0] += 1; // first step of a two-step update...
            say("half-written");
            // ...the parent kills us here.
            let _ = hear();
            g[1] += 1;
        }
        "clear-poison" => {
            let shm = SharedMemory::<Pair>::attach(key).unwrap();
            say(&format!("poisoned {}", shm.is_poisoned()));
            let mut g = shm.lock().unwrap_err().into_inner();
            g[1] = g[0]; // repair the invariant
            drop(g);
            shm.clear_poison();
            say("cleared");
        }
        "attach-and-wait" => {
            let shm = SharedMemory::<u64>::attach(key).unwrap();
            say(&format!("attached {}", *shm.lock().unwrap()));
            let _ = hear(); // killed or told to go
        }
        "create-and-wait" => {
            let shm = SharedMemory::<u64>::create(key, 41).unwrap();
            say("created");
            let _ = hear();
            drop(shm);
        }
        "attach-other-type" => {
            let err = SharedMemory::<[u32; 2]>::attach(key).unwrap_err();
            say(&format!("{:?}", err.kind()));
            say(&err.to_string());
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn typed_data_written_by_one_process_is_read_by_another() {
    const ENTRY: &str = "typed_data_written_by_one_process_is_read_by_another";
    if let Some((role, key)) = common::role() {
        return child(&role, &key);
    }
    let key = unique_key("crosses");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<[u64; 4]>::create(&key, [1, 2, 3, 4]).unwrap();
    let mut child = Child::spawn(ENTRY, "read-write-back", &key, &[]);
    child.expect("saw [1, 2, 3, 4]", T);
    child.wait_success(T);
    assert_eq!(*shm.lock().unwrap(), [10, 20, 30, 40]);
    drop(shm);
    keys.finish();
}

#[test]
fn read_only_handle_in_another_process_sees_writes() {
    const ENTRY: &str = "read_only_handle_in_another_process_sees_writes";
    if let Some((role, key)) = common::role() {
        return child(&role, &key);
    }
    let key = unique_key("ro-sees");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<u64>::create(&key, 1).unwrap();
    let mut child = Child::spawn(ENTRY, "reader", &key, &[]);
    child.expect("first 1", T);
    *shm.lock().unwrap() = 2;
    child.expect("saw 2", T);
    child.wait_success(T);
    drop(shm);
    keys.finish();
}

#[test]
fn try_lock_would_block_and_lock_timeout_times_out_while_another_process_holds_the_lock() {
    const ENTRY: &str =
        "try_lock_would_block_and_lock_timeout_times_out_while_another_process_holds_the_lock";
    if let Some((role, key)) = common::role() {
        return child(&role, &key);
    }
    let key = unique_key("contend");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Pair>::create(&key, [0, 0]).unwrap();
    let mut child = Child::spawn(ENTRY, "hold-lock", &key, &[]);
    child.expect("locked", T);

    assert!(matches!(shm.try_lock(), Err(TryLockError::WouldBlock)));
    let start = Instant::now();
    assert!(matches!(
        shm.lock_timeout(Duration::from_millis(200)),
        Err(TryLockError::TimedOut)
    ));
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "returned before its timeout"
    );

    child.send("release");
    child.expect("released", T);
    assert!(shm.lock_timeout(T).is_ok());
    assert!(!shm.is_poisoned());
    child.wait_success(T);
    drop(shm);
    keys.finish();
}

#[test]
fn holder_killed_by_sigkill_poisons_the_next_lock_with_its_half_written_data() {
    const ENTRY: &str = "holder_killed_by_sigkill_poisons_the_next_lock_with_its_half_written_data";
    if let Some((role, key)) = common::role() {
        return child(&role, &key);
    }
    let key = unique_key("killed");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Pair>::create(&key, [5, 5]).unwrap();
    let mut child = Child::spawn(ENTRY, "die-half-way", &key, &[]);
    child.expect("half-written", T);
    child.kill();

    // A blocking lock would hang forever if the death went unnoticed; the
    // timeout turns that bug into a failure.
    let poisoned = match shm.lock_timeout(T) {
        Err(TryLockError::Poisoned(p)) => p,
        Err(TryLockError::TimedOut) => panic!("the dead holder's lock was never released"),
        other => panic!("expected poison, got {:?}", other.map(|g| *g)),
    };
    let g = poisoned.into_inner();
    assert_eq!(*g, [6, 5], "the dead holder's first write is visible");
    drop(g);
    // Sticky: the next lock reports it again.
    assert!(shm.is_poisoned());
    assert!(shm.lock().is_err());
    drop(shm);
    keys.finish();
}

#[test]
fn clear_poison_from_another_process_clears_it_for_everyone() {
    const ENTRY: &str = "clear_poison_from_another_process_clears_it_for_everyone";
    if let Some((role, key)) = common::role() {
        return child(&role, &key);
    }
    let key = unique_key("clear");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Pair>::create(&key, [0, 0]).unwrap();
    let mut dying = Child::spawn(ENTRY, "die-half-way", &key, &[]);
    dying.expect("half-written", T);
    dying.kill();
    assert!(matches!(shm.lock_timeout(T), Err(TryLockError::Poisoned(_))));

    let mut fixer = Child::spawn(ENTRY, "clear-poison", &key, &[]);
    fixer.expect("poisoned true", T);
    fixer.expect("cleared", T);
    fixer.wait_success(T);
    assert!(!shm.is_poisoned());
    assert_eq!(*shm.lock().unwrap(), [1, 1]);
    drop(shm);
    keys.finish();
}

#[test]
fn last_detach_removes_the_segment_even_when_an_attacher_was_killed() {
    const ENTRY: &str = "last_detach_removes_the_segment_even_when_an_attacher_was_killed";
    if let Some((role, key)) = common::role() {
        return child(&role, &key);
    }
    let key = unique_key("last");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<u64>::create(&key, 7).unwrap();
    let mut a = Child::spawn(ENTRY, "attach-and-wait", &key, &[]);
    let mut b = Child::spawn(ENTRY, "attach-and-wait", &key, &[]);
    a.expect("attached 7", T);
    b.expect("attached 7", T);
    assert_eq!(shm.attach_count(), 3);

    a.kill();
    assert!(
        common::wait_until(T, || shm.attach_count() == 2),
        "the killed attacher is still counted: {}",
        shm.attach_count()
    );
    drop(shm);
    assert!(common::exists(&key), "removed while a live process is attached");
    b.send("go");
    b.wait_success(T);
    keys.finish();
}

#[test]
fn a_segment_whose_users_were_all_killed_is_reclaimed_by_open_or_create() {
    const ENTRY: &str = "a_segment_whose_users_were_all_killed_is_reclaimed_by_open_or_create";
    if let Some((role, key)) = common::role() {
        return child(&role, &key);
    }
    let key = unique_key("reclaim");
    let keys = Keys::new(&[&key]);
    let mut creator = Child::spawn(ENTRY, "create-and-wait", &key, &[]);
    creator.expect("created", T);
    let mut attacher = Child::spawn(ENTRY, "attach-and-wait", &key, &[]);
    attacher.expect("attached 41", T);
    creator.kill();
    attacher.kill();
    assert!(
        common::exists(&key),
        "nobody detached, so the object is still there"
    );

    let shm = SharedMemory::<u64>::open_or_create(&key, || 1).unwrap();
    assert!(shm.created(), "the stale segment was reclaimed, not attached");
    assert_eq!(*shm.lock().unwrap(), 1);
    assert!(!shm.is_poisoned());
    assert_eq!(shm.attach_count(), 1);
    drop(shm);
    keys.finish();
}

#[test]
fn a_live_segment_is_attached_not_reclaimed_by_open_or_create() {
    const ENTRY: &str = "a_live_segment_is_attached_not_reclaimed_by_open_or_create";
    if let Some((role, key)) = common::role() {
        return child(&role, &key);
    }
    let key = unique_key("live");
    let keys = Keys::new(&[&key]);
    let mut creator = Child::spawn(ENTRY, "create-and-wait", &key, &[]);
    creator.expect("created", T);
    let shm = SharedMemory::<u64>::open_or_create(&key, || 1).unwrap();
    assert!(!shm.created());
    assert_eq!(*shm.lock().unwrap(), 41);
    assert_eq!(
        SharedMemory::<u64>::create(&key, 0).unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    creator.send("go");
    creator.wait_success(T);
    drop(shm);
    keys.finish();
}

#[test]
fn attach_with_another_element_type_is_a_layout_mismatch_and_leaves_the_segment_intact() {
    const ENTRY: &str = "attach_with_another_element_type_is_a_layout_mismatch_and_leaves_the_segment_intact";
    if let Some((role, key)) = common::role() {
        return child(&role, &key);
    }
    let key = unique_key("mismatch");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<u64>::create(&key, 0xABCD).unwrap();
    let mut child = Child::spawn(ENTRY, "attach-other-type", &key, &[]);
    child.expect("LayoutMismatch", T);
    let msg = child.next_line(T);
    assert!(msg.contains("holds u64 (8 bytes)"), "{msg}");
    assert!(msg.contains("expects [u32; 2] (8 bytes)"), "{msg}");
    child.wait_success(T);
    assert_eq!(*shm.lock().unwrap(), 0xABCD);
    assert_eq!(shm.attach_count(), 1);
    drop(shm);
    keys.finish();
}

/// CPU time this thread has used (user + system), from
/// `/proc/thread-self/stat`, in clock ticks (normally 10 ms each).
fn thread_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("/proc/thread-self/stat");
    // Fields after the command name (which may hold spaces) start with the
    // third, `state`; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// A waiter for a lock that another process holds for a long time spins
/// only for a few microseconds, then sleeps: `lock` and `lock_timeout`,
/// each waiting 300 ms in a thread of its own, use almost no CPU meanwhile
/// (a waiter that kept spinning would use all 300 ms).
#[test]
fn waiters_for_a_lock_held_long_sleep_instead_of_spinning() {
    const ENTRY: &str = "waiters_for_a_lock_held_long_sleep_instead_of_spinning";
    if let Some((role, key)) = common::role() {
        return child(&role, &key);
    }
    let key = unique_key("sleepers");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Pair>::create(&key, [0, 0]).unwrap();
    let mut holder = Child::spawn(ENTRY, "hold-lock", &key, &[]);
    holder.expect("locked", T);
    let (ready, waiting) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let waiter = |timed: bool| {
            let (shm, ready) = (&shm, ready.clone());
            s.spawn(move || {
                let (ticks, start) = (thread_cpu_ticks(), Instant::now());
                ready.send(()).unwrap();
                let g = if timed {
                    shm.lock_timeout(T).map_err(|e| e.to_string())
                } else {
                    shm.lock().map_err(|e| e.to_string())
                }
                .expect("not poisoned, in time");
                drop(g);
                (thread_cpu_ticks() - ticks, start.elapsed())
            })
        };
        let (plain, timed) = (waiter(false), waiter(true));
        waiting.recv().unwrap();
        waiting.recv().unwrap();
        // How long the lock stays held once both waiters are on their way.
        std::thread::sleep(Duration::from_millis(300));
        holder.send("release");
        for (what, w) in [("lock", plain), ("lock_timeout", timed)] {
            let (ticks, waited) = w.join().unwrap();
            assert!(
                waited >= Duration::from_millis(250),
                "{what} returned after {waited:?}, before the holder let go"
            );
            assert!(
                ticks <= 5,
                "{what} used {ticks} clock ticks of CPU while it waited {waited:?}: it spun"
            );
        }
    });
    holder.expect("released", T);
    holder.wait_success(T);
    drop(shm);
    keys.finish();
}

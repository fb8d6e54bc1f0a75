//! Deployment across users and start orders: a root daemon that creates a
//! segment for a group, an unprivileged client in that group that trusts it,
//! the last detach by a user who may not remove the name, and consumers that
//! start before their producer.

mod common;

use std::time::{Duration, Instant};

use common::{Child, Keys, hear, require_root, say, unique_key};
use typed_shm::{ErrorKind, SharedMemory};

const LINE: Duration = Duration::from_secs(30);
/// The unprivileged user and group the client runs as (`nobody`/`nogroup`).
const NOBODY: u32 = 65534;

type Data = [u64; 4];

/// In a child: becomes `nobody:nogroup` (with no other groups).
#[allow(unsafe_code)]
fn become_nobody() {
    let groups = [NOBODY as libc::gid_t];
    // SAFETY: setgroups(2) with a valid array of one group; setgid(2) and
    // setuid(2) take ids. glibc applies them to every thread of the process.
    unsafe {
        assert_eq!(libc::setgroups(1, groups.as_ptr()), 0, "setgroups");
    }
    // SAFETY: as above.
    assert_eq!(unsafe { libc::setgid(NOBODY) }, 0, "setgid");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::setuid(NOBODY) }, 0, "setuid");
}

fn child(role: &str, key: &str) {
    match role {
        "client" => {
            become_nobody();
            let err = SharedMemory::<Data>::attach(key).map(|_| ()).unwrap_err();
            say(&format!(
                "untrusted {:?} {}",
                err.kind(),
                err.to_string().contains("trust_owner(0)")
            ));
            let shm = SharedMemory::<Data>::options()
                .trust_owner(0)
                .attach(key)
                .expect("attach");
            *shm.lock().expect("not poisoned") = [2; 4];
            say(&format!("wrote, attached {}", shm.attach_count()));
            assert_eq!(hear(), "detach");
            shm.detach().expect("detach");
            say("detached");
            hear();
        }
        "consumer" => {
            let mut o = SharedMemory::<Data>::options();
            o.wait_for_creation(true).timeout(Duration::from_secs(20));
            say("waiting");
            let shm = o.attach(key).expect("attach after the producer created it");
            let at = common::monotonic_ns();
            say(&format!(
                "attached {} at {at}",
                shm.lock().expect("not poisoned")[0]
            ));
            hear();
        }
        other => panic!("unknown role {other}"),
    }
}

/// A root daemon creates a segment with `group(nogroup)` and `mode(0o660)`;
/// a client running as `nobody` is refused it (squatting defence) unless it
/// attaches with `trust_owner(0)`; then both share the data and the count.
/// The client, last to detach, may not remove the name (`/dev/shm` is
/// sticky): it marks the segment destroyed, nobody can attach to it, and the
/// owner's next `create` reclaims it.
#[test]
fn a_root_daemon_shares_a_segment_with_a_group_member_that_trusts_it() {
    const ENTRY: &str = "a_root_daemon_shares_a_segment_with_a_group_member_that_trusts_it";
    if let Some((role, key)) = common::role() {
        return child(&role, &key);
    }
    if !require_root(ENTRY, "switches to another user") {
        return;
    }
    let key = unique_key("deploy-group");
    let keys = Keys::new(&[&key]);
    let daemon = SharedMemory::<Data>::options()
        .mode(0o660)
        .group(NOBODY)
        .create(&key, [1; 4])
        .expect("create");
    let mut c = Child::spawn(ENTRY, "client", &key, &[]);
    assert_eq!(c.next_line(LINE), "untrusted PermissionDenied true");
    assert_eq!(c.next_line(LINE), "wrote, attached 2");
    assert_eq!(daemon.snapshot().unwrap(), [2; 4]);
    assert_eq!(daemon.version(), 1);
    // The daemon goes first; the client is the last user.
    drop(daemon);
    c.send("detach");
    c.expect("detached", LINE);
    assert!(
        common::exists(&key),
        "a non-owner cannot unlink in sticky /dev/shm"
    );
    let err = SharedMemory::<Data>::attach(&key).map(|_| ()).unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::NotFound,
        "a destroyed segment is never attached: {err}"
    );
    // Tools (`tshm gc`) see it as stale: nobody attached.
    let listed = typed_shm::inspect::list().expect("list");
    let seen = listed.iter().find(|s| s.key == key).expect("listed");
    assert!(seen.stale && seen.attached == 0, "{seen:?}");
    let fresh = SharedMemory::<Data>::create(&key, [3; 4]).expect("the owner's create reclaims it");
    assert!(fresh.created());
    assert_eq!(fresh.snapshot().unwrap(), [3; 4]);
    c.send("bye");
    c.wait_success(LINE);
    drop(fresh);
    keys.finish();
}

/// A group the creating user is not a member of is `PermissionDenied`, and
/// nothing is left behind.
#[test]
fn a_group_the_creator_is_not_in_is_permission_denied() {
    const ENTRY: &str = "a_group_the_creator_is_not_in_is_permission_denied";
    if let Some((role, key)) = common::role() {
        assert_eq!(role, "nobody-creator");
        become_nobody();
        let err = SharedMemory::<Data>::options()
            .group(0)
            .create(&key, [0; 4])
            .map(|_| ())
            .unwrap_err();
        say(&format!("{:?}", err.kind()));
        say(&format!("left {}", common::exists(&key)));
        return;
    }
    if !require_root(ENTRY, "switches to another user") {
        return;
    }
    let key = unique_key("deploy-badgroup");
    let keys = Keys::new(&[&key]);
    let mut c = Child::spawn(ENTRY, "nobody-creator", &key, &[]);
    assert_eq!(c.next_line(LINE), "PermissionDenied");
    assert_eq!(c.next_line(LINE), "left false");
    c.wait_success(LINE);
    keys.finish();
}

/// A consumer started before its producer waits for the creation (woken by
/// the kernel when the name appears) and then attaches; without the option
/// `attach` is `NotFound` at once; with it and no producer, `TimedOut`
/// after the timeout.
#[test]
fn wait_for_creation_attaches_once_the_producer_creates_the_segment() {
    const ENTRY: &str = "wait_for_creation_attaches_once_the_producer_creates_the_segment";
    if let Some((role, key)) = common::role() {
        return child(&role, &key);
    }
    let key = unique_key("deploy-wait");
    let keys = Keys::new(&[&key]);
    let t = Instant::now();
    let err = SharedMemory::<Data>::attach(&key).map(|_| ()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(t.elapsed() < Duration::from_secs(1), "NotFound at once");
    let t = Instant::now();
    let err = SharedMemory::<Data>::options()
        .wait_for_creation(true)
        .timeout(Duration::from_millis(200))
        .attach(&key)
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "waited {:?}",
        t.elapsed()
    );

    let mut c = Child::spawn(ENTRY, "consumer", &key, &[]);
    c.expect("waiting", LINE);
    // Let the consumer block in attach (it would attach at once after the
    // creation too).
    std::thread::sleep(Duration::from_millis(100));
    let producer = SharedMemory::<Data>::create(&key, [8; 4]).expect("create");
    let created = common::monotonic_ns();
    let line = c.next_line(LINE);
    let rest = line
        .strip_prefix("attached 8 at ")
        .unwrap_or_else(|| panic!("{line}"));
    let latency = Duration::from_nanos((rest.parse::<i128>().unwrap() - created).max(0) as u64);
    eprintln!("wait_for_creation: attached {latency:?} after the creation");
    assert!(latency < Duration::from_secs(2), "{latency:?}");
    assert_eq!(producer.attach_count(), 2);
    c.send("bye");
    c.wait_success(LINE);
    drop(producer);
    keys.finish();
}

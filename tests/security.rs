//! Bad input and hostile peers: foreign and crafted files under a key,
//! absurd sizes, permissions whatever the umask, another user squatting a
//! key, planted symbolic links, writes through a read-only mapping, and a user
//! with read permission only.
//!
//! Parts that switch users need root; without it they are skipped, printed
//! and counted (`common::skip`), and fail instead when `CI` is set.
#![allow(unsafe_code)]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use common::{Child, Keys, hear, require_root, role, say, shm_path, unique_key};
use proptest::prelude::*;
use typed_shm::{ErrorKind, ReadOnly, SharedMemory, TryLockError};

type Data = [u64; 4];

const LINE: Duration = Duration::from_secs(10);
/// An unprivileged user for the tests that switch users.
const NOBODY: u32 = 65534;

/// The bytes of a real, live `Data` segment (state READY, unlocked).
fn real_segment_bytes(key: &str) -> Vec<u8> {
    let shm = SharedMemory::<Data>::create(key, [1, 2, 3, 4]).expect("create");
    let bytes = std::fs::read(shm_path(key)).expect("read the segment");
    shm.detach().expect("detach");
    bytes
}

/// Writes `bytes` as the object under `key`, mode 0600, owned by us.
fn plant(key: &str, bytes: &[u8]) {
    let path = shm_path(key);
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Content and metadata that must not change.
fn snapshot(path: &str) -> (Vec<u8>, i64, i64, u32) {
    let m = std::fs::symlink_metadata(path).unwrap();
    let bytes = if m.file_type().is_symlink() {
        std::fs::read_link(path)
            .unwrap()
            .into_os_string()
            .into_encoded_bytes()
    } else {
        std::fs::read(path).unwrap()
    };
    (bytes, m.mtime(), m.mtime_nsec(), m.mode())
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// Options with a short timeout (for files that never become ready).
fn quick() -> typed_shm::Options<Data> {
    let mut o = SharedMemory::<Data>::options();
    o.timeout(Duration::from_millis(50));
    o
}

/// Every way of opening `key` fails — `attach` (read-write and read-only)
/// and `open_or_create` with `kind`, `create` with `AlreadyExists` — without
/// a panic, without changing the file (content, size, times, mode), and
/// without leaving a mapping or a descriptor of it in this process.
fn assert_refused(case: &str, key: &str, kind: ErrorKind) {
    let path = shm_path(key);
    let before = snapshot(&path);
    let e = quick().attach(key).expect_err(case);
    assert_eq!(e.kind(), kind, "{case}: attach: {e}");
    let e = quick().attach_read_only(key).expect_err(case);
    assert_eq!(e.kind(), kind, "{case}: attach read-only: {e}");
    let e = quick().open_or_create(key, || [0; 4]).expect_err(case);
    assert_eq!(e.kind(), kind, "{case}: open_or_create: {e}");
    let e = quick().create(key, [0; 4]).expect_err(case);
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{case}: create: {e}");
    assert!(
        e.to_string().contains("untouched"),
        "{case}: create says what it did: {e}"
    );
    assert_eq!(snapshot(&path), before, "{case}: the file was changed");
    assert!(
        !common::process_uses(&path),
        "{case}: a mapping or descriptor was left"
    );
}

/// Foreign and crafted files under a key — random bytes, too short, wrong
/// magic, a future format version, another ABI, lengths larger than the file
/// or overflowing, another type — each give their own `ErrorKind` from
/// `attach` and `open_or_create`, `AlreadyExists` from `create`, never `Ok`,
/// never a panic or a mapping beyond the file, and the file stays exactly as
/// it was: nobody is attached to them, but none is a stale segment of this
/// type, so none is reclaimed.
#[test]
fn hostile_files_give_their_error_kind_and_stay_untouched() {
    let key = unique_key("hostile");
    let keys = Keys::new(&[&key]);
    let good = real_segment_bytes(&key);
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                (rng >> 24) as u8 | 1
            })
            .collect()
    };
    let edit = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        b
    };
    use ErrorKind::*;
    let cases: Vec<(&str, Vec<u8>, ErrorKind)> = vec![
        ("random bytes", random(8192), Corrupted),
        ("too short", random(100), Corrupted),
        ("wrong magic", edit(&|b| b[0] ^= 0x20), Corrupted),
        ("future version", edit(&|b| put_u32(b, 8, 4)), IncompatibleVersion),
        (
            "other ABI (mutex size)",
            edit(&|b| put_u32(b, 20, 48)),
            IncompatibleVersion,
        ),
        (
            "other ABI (byte order)",
            edit(&|b| put_u32(b, 28, 0x0403_0201)),
            IncompatibleVersion,
        ),
        (
            "data longer than the file",
            edit(&|b| put_u64(b, 48, 1 << 20)),
            Corrupted,
        ),
        (
            "offset + length overflow",
            edit(&|b| put_u64(b, 40, u64::MAX - 4095)),
            Corrupted,
        ),
        ("length u64::MAX", edit(&|b| put_u64(b, 48, u64::MAX)), Corrupted),
        ("element count disagrees", edit(&|b| put_u64(b, 72, 2)), Corrupted),
        ("file cut short", good[..4096 + 16].to_vec(), Corrupted),
        ("another type", edit(&|b| put_u64(b, 80, 0x1234)), LayoutMismatch),
    ];
    for (case, bytes, kind) in cases {
        plant(&key, &bytes);
        assert_refused(case, &key, kind);
        std::fs::remove_file(shm_path(&key)).unwrap();
    }
    keys.finish();
}

/// What `create` and `open_or_create` do reclaim, as documented: a segment
/// of this very type that nobody is attached to (its users all died), and
/// what a creator that died before writing the header leaves (an empty or a
/// zero-filled object). The new segment holds the new value, unpoisoned.
#[test]
fn stale_segments_of_this_type_are_reclaimed_by_create_and_open_or_create() {
    let key = unique_key("stale-reclaim");
    let keys = Keys::new(&[&key]);
    let good = real_segment_bytes(&key);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a stale segment of this type", good.clone()),
        ("an empty object", Vec::new()),
        ("a zero-filled object", vec![0; good.len()]),
    ];
    for (case, bytes) in cases {
        for via_open_or_create in [false, true] {
            plant(&key, &bytes);
            let shm = if via_open_or_create {
                quick().open_or_create(&key, || [9; 4])
            } else {
                quick().create(&key, [9; 4])
            }
            .unwrap_or_else(|e| panic!("{case}: not reclaimed: {e}"));
            assert!(shm.created(), "{case}: reclaimed means created anew");
            assert_eq!(*shm.lock().expect("not poisoned"), [9; 4], "{case}");
            assert_eq!(shm.attach_count(), 1, "{case}");
            drop(shm);
            assert!(!common::exists(&key), "{case}: the new segment was left");
        }
    }
    keys.finish();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Fuzzed segment files: a real header with random bytes changed, or
    /// random bytes of a random length. Attaching never panics and never
    /// changes the file when it fails; when it succeeds the header was a
    /// valid one.
    #[test]
    fn fuzzed_segment_files_never_panic_nor_change_the_file(
        edits in proptest::collection::vec((0usize..512, any::<u8>()), 1..8),
        junk in proptest::collection::vec(any::<u8>(), 0..6000),
        use_junk in any::<bool>(),
    ) {
        let key = unique_key("fuzz");
        let keys = Keys::new(&[&key]);
        let mut bytes = real_segment_bytes(&key);
        if use_junk {
            bytes = junk;
        } else {
            for (at, v) in edits {
                bytes[at] = v;
            }
        }
        plant(&key, &bytes);
        let path = shm_path(&key);
        let before = snapshot(&path);
        let r = SharedMemory::<Data>::options().timeout(Duration::from_millis(20)).attach(&key);
        match r {
            Ok(shm) => {
                prop_assert_eq!(shm.size(), 32);
                drop(shm);
            }
            Err(e) => {
                prop_assert_eq!(&snapshot(&path), &before);
                prop_assert!(!common::process_uses(&path));
                // A file that is refused as not ours (or not this type) is
                // never reclaimed by create or open_or_create either.
                if matches!(
                    e.kind(),
                    ErrorKind::Corrupted | ErrorKind::IncompatibleVersion | ErrorKind::LayoutMismatch
                ) {
                    let c = quick().create(&key, [0; 4]);
                    prop_assert!(c.is_err(), "create reclaimed a refused file ({e})");
                    let o = quick().open_or_create(&key, || [0; 4]);
                    prop_assert!(o.is_err(), "open_or_create reclaimed a refused file ({e})");
                    prop_assert_eq!(snapshot(&path), before);
                    prop_assert!(!common::process_uses(&path));
                }
            }
        }
        drop(keys);
    }
}

/// Absurd sizes are refused before anything is created or touched: zero
/// elements, sizes that overflow the address space, and sizes larger than
/// memory (`OutOfResources` at create time, nothing left behind). A live
/// segment under the same key is not disturbed.
#[test]
fn absurd_sizes_are_refused_before_any_damage() {
    let key = unique_key("absurd");
    let live = unique_key("absurd-live");
    let keys = Keys::new(&[&key, &live]);
    let e = SharedMemory::<[u8]>::create_slice(&key, 0, 0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSize, "{e}");
    let e = SharedMemory::<[u8; 0]>::create(&key, []).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSize, "{e}");
    let e = SharedMemory::<[u8; 0]>::attach(&key).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSize, "{e}");
    for len in [usize::MAX, usize::MAX / 8 + 1, isize::MAX as usize / 8 + 1] {
        let e = SharedMemory::<[u64]>::create_slice(&key, len, 0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidSize, "len {len}: {e}");
    }
    let e = SharedMemory::<[u8]>::create_slice(&key, isize::MAX as usize, 0).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::InvalidSize | ErrorKind::OutOfResources),
        "{e}"
    );
    assert!(!common::exists(&key));
    // Larger than any memory (1 PiB): refused at create time.
    let t = Instant::now();
    let e = SharedMemory::<[u8]>::create_slice(&key, 1 << 50, 0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfResources, "{e}");
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    assert!(!common::exists(&key), "a failed create left its object behind");
    // The same requests on a live key change nothing there.
    let shm = SharedMemory::<[u8]>::create_slice(&live, 16, 7).unwrap();
    let before = std::fs::read(shm_path(&live)).unwrap();
    for len in [0, usize::MAX, 1 << 50] {
        assert!(SharedMemory::<[u8]>::create_slice(&live, len, 0).is_err());
    }
    assert_eq!(std::fs::read(shm_path(&live)).unwrap(), before);
    assert_eq!(shm.lock().unwrap()[..], [7; 16]);
    drop(shm);
    keys.finish();
}

/// New segments get mode 0600 whatever the umask, and `mode(…)` exactly,
/// for `create`, `create_slice` and `open_or_create`. (In a child: the umask
/// is per process.)
#[test]
fn default_mode_is_0600_whatever_the_umask_and_mode_is_exact() {
    if let Some((_, key)) = role() {
        for mask in [0o000, 0o022, 0o077, 0o777] {
            // SAFETY: umask(2) has no preconditions; this process is a child
            // that does nothing else concurrently that creates files.
            unsafe { libc::umask(mask) };
            let mode_of = |k: &str| std::fs::metadata(shm_path(k)).unwrap().mode() & 0o7777;
            let k = format!("{key}-{mask:o}");
            let a = SharedMemory::<Data>::create(&k, [0; 4]).unwrap();
            assert_eq!(mode_of(&k), 0o600, "create under umask {mask:o}");
            drop(a);
            let a = SharedMemory::<Data>::open_or_create(&k, || [0; 4]).unwrap();
            assert_eq!(mode_of(&k), 0o600, "open_or_create under umask {mask:o}");
            drop(a);
            for mode in [0o666, 0o640, 0o604, 0o700, 0o000] {
                let a = SharedMemory::<Data>::options()
                    .mode(mode)
                    .create(&k, [0; 4])
                    .unwrap();
                assert_eq!(mode_of(&k), mode, "mode {mode:o} under umask {mask:o}");
                drop(a);
                let a = SharedMemory::<[u8]>::options()
                    .mode(mode)
                    .create_slice(&k, 3, 0)
                    .unwrap();
                assert_eq!(mode_of(&k), mode, "slice mode {mode:o} under umask {mask:o}");
                drop(a);
            }
            // Only the permission bits are used.
            let a = SharedMemory::<Data>::options()
                .mode(0o4755)
                .create(&k, [0; 4])
                .unwrap();
            assert_eq!(mode_of(&k), 0o755);
            drop(a);
            assert!(!common::exists(&k));
        }
        say("modes ok");
        return;
    }
    let key = unique_key("modes");
    let names: Vec<String> = [0o000, 0o022, 0o077, 0o777]
        .iter()
        .map(|m| format!("{key}-{m:o}"))
        .collect();
    let names = Keys::new(&names.iter().map(String::as_str).collect::<Vec<_>>());
    let mut c = Child::spawn(
        "default_mode_is_0600_whatever_the_umask_and_mode_is_exact",
        "modes",
        &key,
        &[],
    );
    c.expect("modes ok", Duration::from_secs(30));
    c.wait_success(LINE);
    names.finish();
}

/// Switches this (child) process to `uid`/`gid` for good.
fn become_user(uid: u32) {
    // SAFETY: setresgid/setresuid(2) take plain integers; glibc applies them
    // to every thread of the process.
    let rc = unsafe { libc::setresgid(uid, uid, uid) };
    assert_eq!(rc, 0, "setresgid");
    // SAFETY: as above.
    let rc = unsafe { libc::setresuid(uid, uid, uid) };
    assert_eq!(rc, 0, "setresuid");
}

/// Another user pre-creates the key with mode 0666 — a real typed-shm
/// segment, or a raw file — to feed us its bytes: `create` says
/// `AlreadyExists`, and `attach`, read-only `attach` and `open_or_create`
/// never return `Ok` (the owner check refuses before reading anything).
#[test]
fn another_users_squatted_key_is_never_opened() {
    const ENTRY: &str = "another_users_squatted_key_is_never_opened";
    if let Some((role, key)) = role() {
        become_user(NOBODY);
        let _shm = match role.as_str() {
            "squat-segment" => Some(
                SharedMemory::<Data>::options()
                    .mode(0o666)
                    .create(&key, [6; 4])
                    .expect("squat"),
            ),
            _ => {
                std::fs::write(shm_path(&key), vec![0x5a; 8192]).unwrap();
                std::fs::set_permissions(shm_path(&key), std::fs::Permissions::from_mode(0o666)).unwrap();
                None
            }
        };
        say("squatted");
        hear();
        return;
    }
    if !require_root(
        "another_users_squatted_key_is_never_opened",
        "creates files as another user",
    ) {
        return;
    }
    let key = unique_key("squat");
    let keys = Keys::new(&[&key]);
    for role in ["squat-segment", "squat-file"] {
        let mut squatter = Child::spawn(ENTRY, role, &key, &[]);
        squatter.expect("squatted", LINE);
        let path = shm_path(&key);
        assert_eq!(std::fs::metadata(&path).unwrap().uid(), NOBODY);
        let before = snapshot(&path);
        let e = SharedMemory::<Data>::create(&key, [0; 4]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{role}: {e}");
        let e = SharedMemory::<Data>::attach(&key).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{role}: {e}");
        assert!(e.to_string().contains("uid"), "the message names the owner: {e}");
        let e = SharedMemory::<Data, ReadOnly>::attach(&key).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{role}: {e}");
        assert!(
            SharedMemory::<Data>::open_or_create(&key, || [0; 4]).is_err(),
            "{role}"
        );
        assert_eq!(snapshot(&path), before, "{role}: the squatted file was changed");
        squatter.send("bye");
        squatter.wait_success(LINE);
        let _ = std::fs::remove_file(&path);
    }
    keys.finish();
}

/// A symbolic link planted at the key — to a file, to nothing, or to another
/// live segment — is never followed: every call fails, the link and its
/// target stay as they were, and no target is created.
#[test]
fn symlink_at_the_key_is_refused_and_its_target_untouched() {
    let key = unique_key("symlink");
    let other = unique_key("symlink-target");
    let keys = Keys::new(&[&key, &other]);
    let dir = std::env::temp_dir().join(format!("tshm-symlink-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("target");
    std::fs::write(&file, b"precious").unwrap();
    let missing = dir.join("missing");
    let live = SharedMemory::<Data>::create(&other, [8; 4]).unwrap();
    let link = shm_path(&key);
    for target in [file.clone(), missing.clone(), shm_path(&other).into()] {
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let target_before = std::fs::read(&target).ok();
        let link_before = snapshot(&link);
        let e = SharedMemory::<Data>::create(&key, [0; 4]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{target:?}: {e}");
        for r in [
            SharedMemory::<Data>::attach(&key).map(drop),
            SharedMemory::<Data, ReadOnly>::attach(&key).map(drop),
            SharedMemory::<Data>::open_or_create(&key, || [0; 4]).map(drop),
        ] {
            let e = r.expect_err("a symlink must never be opened");
            assert!(e.to_string().contains("symbolic link"), "{target:?}: {e}");
        }
        assert_eq!(std::fs::read(&target).ok(), target_before, "{target:?} changed");
        assert_eq!(snapshot(&link), link_before, "the link changed");
        std::fs::remove_file(&link).unwrap();
    }
    assert!(!missing.exists(), "a dangling link's target was created");
    assert_eq!(*live.lock().unwrap(), [8; 4]);
    assert_eq!(live.attach_count(), 1);
    drop(live);
    let _ = std::fs::remove_dir_all(&dir);
    keys.finish();
}

/// A write through a read-only guard's pointer (unsafe code) faults —
/// SIGSEGV in that process only: the data is unchanged, the other processes
/// go on (the dead holder's lock reports poison, as for any crash).
#[test]
fn write_through_a_read_only_guard_faults_in_that_process_only() {
    if let Some((_, key)) = role() {
        let shm = SharedMemory::<Data, ReadOnly>::attach(&key).expect("attach read-only");
        let g = shm.lock().expect("not poisoned");
        let p = (&*g as *const Data).cast_mut();
        say("writing");
        // SAFETY: deliberately unsound: the test proves that the mapping is
        // read-only, so this write faults instead of changing shared data.
        unsafe { p.cast::<u64>().write_volatile(666) };
        say("wrote");
        return;
    }
    let key = unique_key("ro-write");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<Data>::create(&key, [5; 4]).unwrap();
    let mut c = Child::spawn(
        "write_through_a_read_only_guard_faults_in_that_process_only",
        "w",
        &key,
        &[],
    );
    c.expect("writing", LINE);
    let status = c.wait_exit(LINE);
    assert_eq!(common::killed_by(&status), Some(libc::SIGSEGV), "{status}");
    match shm.try_lock() {
        Err(TryLockError::Poisoned(p)) => assert_eq!(*p.into_inner(), [5; 4], "the data changed"),
        Ok(_) => panic!("the faulting holder died holding the lock: poison expected"),
        Err(_) => panic!("the lock is wedged"),
    }
    shm.clear_poison();
    *shm.lock().unwrap() = [6; 4];
    assert_eq!(shm.attach_count(), 1);
    drop(shm);
    keys.finish();
}

/// What a user with read permission only gets: `PermissionDenied`, saying
/// that a handle, even a read-only one, needs write permission.
fn check_read_only_user(who: &str, key: &str) {
    let e = SharedMemory::<Data>::attach(key).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{who}: {e}");
    assert!(e.to_string().contains("write permission"), "{who}: {e}");
    let e = SharedMemory::<Data, ReadOnly>::attach(key).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{who}: {e}");
    assert!(
        e.to_string().contains("read-only handles need write permission"),
        "{who}: {e}"
    );
}

/// The owner of a segment after `chmod 0400` (not root: root passes every
/// mode check).
fn check_owner_with_mode_0400(key: &str) {
    let own = format!("{key}-own");
    let shm = SharedMemory::<Data>::create(&own, [0; 4]).unwrap();
    std::fs::set_permissions(shm_path(&own), std::fs::Permissions::from_mode(0o400)).unwrap();
    check_read_only_user("owner, mode 0400", &own);
    drop(shm);
    assert!(!common::exists(&own));
}

/// A user who may only read the object gets `PermissionDenied` whose message
/// says why (a handle, even read-only, needs write permission: locking writes
/// to the segment) — the owner after `chmod 0400` (run as this user when it
/// is not root, else in a child that switched to an unprivileged user), and
/// another user with mode 0644 (needs root to switch users).
#[test]
fn read_permission_only_is_permission_denied_that_says_why() {
    const ENTRY: &str = "read_permission_only_is_permission_denied_that_says_why";
    if let Some((role, key)) = role() {
        become_user(NOBODY);
        if role == "other-user" {
            check_read_only_user("another user, mode 0644", &key);
        } else {
            check_owner_with_mode_0400(&key);
        }
        say("denied");
        return;
    }
    let key = unique_key("read-only-user");
    let own = format!("{key}-own");
    let keys = Keys::new(&[&key, &own]);
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        // The part that needs no other user runs here.
        check_owner_with_mode_0400(&key);
    }
    if !require_root(ENTRY, "switches to another user") {
        keys.finish();
        return;
    }
    let shm = SharedMemory::<Data>::options()
        .mode(0o644)
        .create(&key, [0; 4])
        .unwrap();
    for role in ["other-user", "owner"] {
        let mut c = Child::spawn(ENTRY, role, &key, &[]);
        c.expect("denied", LINE);
        c.wait_success(LINE);
    }
    assert_eq!(shm.attach_count(), 1);
    drop(shm);
    keys.finish();
}

//! Every `ErrorKind` is reachable: each bad input gives its exact kind, a
//! message that says what to do, and leaves the process and any existing
//! segment unharmed.

mod common;

use std::error::Error as _;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{Keys, exists, shm_path, unique_key};
use typed_shm::{ErrorKind, SharedMemory};

/// Writes a file under `key`'s name in `/dev/shm`, as a hostile or foreign
/// program would.
fn plant(key: &str, bytes: &[u8]) {
    std::fs::write(shm_path(key), bytes).unwrap();
    std::fs::set_permissions(shm_path(key), std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn bad_keys_are_key_errors() {
    for key in ["", "nul\0inside", &"k".repeat(256)] {
        let err = SharedMemory::<u32>::create(key, 0).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::KeyError, "{key:?}");
        assert_eq!(
            SharedMemory::<u32>::attach(key).unwrap_err().kind(),
            ErrorKind::KeyError
        );
        assert!(err.to_string().contains("key"), "{err}");
    }
}

#[test]
fn create_on_a_live_key_is_already_exists_and_the_segment_survives() {
    let key = unique_key("exists");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<u64>::create(&key, 9).unwrap();
    let err = SharedMemory::<u64>::create(&key, 1).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert!(
        err.to_string().contains("attach to it, or choose another key"),
        "{err}"
    );
    assert_eq!(*shm.lock().unwrap(), 9);
    drop(shm);
    keys.finish();
}

#[test]
fn attach_to_a_missing_key_is_not_found() {
    let key = unique_key("missing");
    let keys = Keys::new(&[&key]);
    let err = SharedMemory::<u64>::attach(&key).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.source().is_some(), "the OS error is the source");
    assert!(!exists(&key), "attach must not create anything");
    keys.finish();
}

#[test]
fn zero_sized_and_overflowing_sizes_are_invalid_size_before_anything_is_created() {
    let key = unique_key("size");
    let keys = Keys::new(&[&key]);
    let cases = [
        SharedMemory::<[u8; 0]>::create(&key, []).unwrap_err(),
        SharedMemory::<[u64]>::create_slice(&key, 0, 0).unwrap_err(),
        SharedMemory::<[u64]>::create_slice(&key, usize::MAX / 4, 0).unwrap_err(),
        SharedMemory::<[u8]>::create_slice(&key, usize::MAX, 0).unwrap_err(),
    ];
    for err in cases {
        assert_eq!(err.kind(), ErrorKind::InvalidSize, "{err}");
        assert!(!exists(&key), "nothing is created for an invalid size");
    }
    assert_eq!(
        SharedMemory::<[u8; 0]>::attach(&key).unwrap_err().kind(),
        ErrorKind::InvalidSize
    );
    keys.finish();
}

#[test]
fn a_segment_larger_than_dev_shm_is_out_of_resources_at_create_time() {
    let key = unique_key("huge");
    let keys = Keys::new(&[&key]);
    // 1 PiB: more than any /dev/shm here; fallocate refuses it now instead of
    // a SIGBUS at the first write later.
    let err = SharedMemory::<[u8]>::create_slice(&key, 1 << 50, 0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OutOfResources, "{err}");
    assert!(err.to_string().contains("/dev/shm"), "{err}");
    assert!(!exists(&key), "a failed create removes what it made");
    keys.finish();
}

#[test]
fn another_element_type_is_a_layout_mismatch_naming_both_layouts() {
    let key = unique_key("layout");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<[u16]>::create_slice(&key, 3, 7).unwrap();
    let err = SharedMemory::<[u32]>::attach(&key).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LayoutMismatch);
    let msg = err.to_string();
    assert!(msg.contains("holds [u16; 3] (6 bytes)"), "{msg}");
    assert!(msg.contains("expects [u32] (4 bytes per element)"), "{msg}");
    // A single value is not a slice of the same element either.
    assert_eq!(
        SharedMemory::<u16>::attach(&key).unwrap_err().kind(),
        ErrorKind::LayoutMismatch
    );
    assert_eq!(*shm.lock().unwrap(), [7, 7, 7]);
    drop(shm);
    keys.finish();
}

#[test]
fn a_foreign_file_is_corrupted_and_left_untouched() {
    let key = unique_key("foreign");
    let keys = Keys::new(&[&key]);
    let junk: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    plant(&key, &junk);
    let err = SharedMemory::<u64>::attach(&key).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupted);
    assert!(err.to_string().contains("not a typed-shm segment"), "{err}");
    // create neither reuses nor removes it.
    assert_eq!(
        SharedMemory::<u64>::create(&key, 0).unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        std::fs::read(shm_path(&key)).unwrap(),
        junk,
        "the file was modified"
    );

    // Too short for a header.
    plant(&key, b"short");
    assert_eq!(
        SharedMemory::<u64>::attach(&key).unwrap_err().kind(),
        ErrorKind::Corrupted
    );
    assert_eq!(std::fs::read(shm_path(&key)).unwrap(), b"short");
    std::fs::remove_file(shm_path(&key)).unwrap();
    keys.finish();
}

/// A valid segment's header and data, with `edit` applied to the header.
fn plant_edited(key: &str, edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let shm = SharedMemory::<u64>::create(key, 5).unwrap();
    let mut bytes = std::fs::read(shm_path(key)).unwrap();
    drop(shm);
    edit(&mut bytes);
    plant(key, &bytes);
    bytes
}

#[test]
fn a_header_from_another_format_version_is_incompatible_version() {
    let key = unique_key("version");
    let keys = Keys::new(&[&key]);
    let bytes = plant_edited(&key, |b| b[8..12].copy_from_slice(&4u32.to_ne_bytes()));
    let err = SharedMemory::<u64>::attach(&key).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::IncompatibleVersion);
    assert!(err.to_string().contains("version 4"), "{err}");
    assert_eq!(std::fs::read(shm_path(&key)).unwrap(), bytes);
    std::fs::remove_file(shm_path(&key)).unwrap();
    keys.finish();
}

#[test]
fn a_segment_whose_creator_died_before_initializing_it_times_out_then_is_reclaimed() {
    let key = unique_key("uninit");
    let keys = Keys::new(&[&key]);
    // What a creator killed between sizing the object and writing its header
    // leaves behind: an all-zero object of the full size.
    plant(&key, &vec![0u8; 4096 + 8]);
    let start = Instant::now();
    let err = SharedMemory::<u64>::options()
        .timeout(Duration::from_secs(2))
        .attach(&key)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut);
    assert!(err.to_string().contains("reclaims"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "waited although the creator is gone"
    );

    let shm = SharedMemory::<u64>::open_or_create(&key, || 3).unwrap();
    assert!(shm.created());
    assert_eq!(*shm.lock().unwrap(), 3);
    drop(shm);
    keys.finish();
}

#[test]
fn an_empty_object_times_out_within_the_bound() {
    let key = unique_key("empty");
    let keys = Keys::new(&[&key]);
    plant(&key, b"");
    let bound = Duration::from_millis(300);
    let start = Instant::now();
    let err = SharedMemory::<u64>::options()
        .timeout(bound)
        .attach(&key)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    assert!(start.elapsed() >= bound && start.elapsed() < bound * 10);
    // create reclaims it: an empty object holds nothing to lose.
    let shm = SharedMemory::<u64>::create(&key, 1).unwrap();
    drop(shm);
    keys.finish();
}

#[test]
fn a_segment_owned_by_another_user_is_permission_denied_and_never_reused() {
    if !common::require_root(
        "a_segment_owned_by_another_user_is_permission_denied_and_never_reused",
        "to make a file owned by another user",
    ) {
        return;
    }
    let key = unique_key("squat");
    let keys = Keys::new(&[&key]);
    let bytes = plant_edited(&key, |_| {});
    std::fs::set_permissions(shm_path(&key), std::fs::Permissions::from_mode(0o666)).unwrap();
    std::os::unix::fs::chown(shm_path(&key), Some(65534), Some(65534)).unwrap();

    let err = SharedMemory::<u64>::attach(&key).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("uid 65534"), "{err}");
    let err = SharedMemory::<u64>::create(&key, 0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert!(SharedMemory::<u64>::open_or_create(&key, || 0).is_err());
    assert_eq!(std::fs::read(shm_path(&key)).unwrap(), bytes);
    std::fs::remove_file(shm_path(&key)).unwrap();
    keys.finish();
}

#[test]
fn a_forgotten_guard_makes_detach_a_lock_error_and_keeps_the_mapping() {
    let key = unique_key("forgot");
    let keys = Keys::new(&[&key]);
    let shm = SharedMemory::<u64>::create(&key, 0).unwrap();
    let peer = SharedMemory::<u64>::attach(&key).unwrap();
    // A thread of `peer` forgets its guard and stays alive: detaching `peer`
    // now is a LockError and must keep the held lock mapped.
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    let (end_tx, end_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        std::mem::forget(peer.lock().unwrap());
        handle_tx.send(peer).unwrap();
        let _ = end_rx.recv_timeout(std::time::Duration::from_secs(10));
    });
    let peer = handle_rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    let err = peer.detach().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LockError);
    assert!(err.to_string().contains("forgotten"), "{err}");
    // The handle is detached; only its mapping is kept.
    assert_eq!(shm.attach_count(), 1);
    end_tx.send(()).unwrap();
    holder.join().unwrap();
    // Its holder thread ended after the handle was gone, so nothing can
    // borrow from the forgotten guard: the lock passes on, poisoned.
    assert!(
        shm.lock().is_err(),
        "its holder thread ended: poisoned, not deadlocked"
    );
    drop(shm);
    // The last attachment removed the segment; the leaked mapping dies with us.
    keys.finish();
}

#[test]
fn a_directory_under_the_key_is_corrupted_and_left_alone() {
    let key = unique_key("dir");
    let keys = Keys::new(&[&key]);
    std::fs::create_dir(shm_path(&key)).unwrap();
    let err = SharedMemory::<u64>::attach(&key).unwrap_err();
    let create_err = SharedMemory::<u64>::create(&key, 0).unwrap_err();
    let still_dir = std::fs::metadata(shm_path(&key)).unwrap().is_dir();
    std::fs::remove_dir(shm_path(&key)).unwrap();
    assert_eq!(err.kind(), ErrorKind::Corrupted, "{err}");
    assert_eq!(create_err.kind(), ErrorKind::AlreadyExists, "{create_err}");
    assert!(still_dir);
    keys.finish();
}

#[test]
fn an_unexpected_os_error_is_unknown_with_the_os_error_as_source() {
    let key = unique_key("socket");
    let keys = Keys::new(&[&key]);
    // Opening a socket file fails with ENXIO, which no other kind describes.
    let listener = std::os::unix::net::UnixListener::bind(shm_path(&key)).unwrap();
    let err = SharedMemory::<u64>::attach(&key).unwrap_err();
    drop(listener);
    std::fs::remove_file(shm_path(&key)).unwrap();
    assert_eq!(err.kind(), ErrorKind::Unknown, "{err}");
    let source = err.source().expect("the OS error is the source");
    assert!(source.to_string().contains("os error"), "{source}");
    keys.finish();
}

#[test]
fn errors_are_send_sync_static_and_say_what_to_do() {
    fn assert_bounds<E: std::error::Error + Send + Sync + 'static>(_: &E) {}
    let err = SharedMemory::<u8>::attach("").unwrap_err();
    assert_bounds(&err);
    assert!(format!("{err:?}").contains("KeyError"));
    assert!(err.to_string().contains("non-empty"));
}

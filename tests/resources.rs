//! Running out of resources, for real, in child processes: a full `/dev/shm`
//! (a small tmpfs mounted over it in a private mount namespace), a file-size
//! limit below the segment's size, and no file descriptors left. Each gives
//! `OutOfResources` at create (or attach) time — never SIGBUS or SIGXFSZ
//! later — and leaves nothing behind.
#![allow(unsafe_code)]

mod common;

use std::ffi::CString;
use std::time::Duration;

use common::{Child, Keys, require_root, role, say, shm_entries, unique_key};
use typed_shm::{ErrorKind, SharedMemory};

const LINE: Duration = Duration::from_secs(20);

fn set_limit(resource: libc::__rlimit_resource_t, soft: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) with a valid resource and a pointer to a rlimit.
    assert_eq!(unsafe { libc::getrlimit(resource, &mut lim) }, 0);
    lim.rlim_cur = soft;
    // SAFETY: setrlimit(2) with a valid resource and a pointer to a rlimit
    // whose soft limit is at most the hard one (both are ours to lower).
    assert_eq!(unsafe { libc::setrlimit(resource, &lim) }, 0, "setrlimit");
}

/// Runs the role `role` of `entry` in a child and waits for its "ok"; the
/// child must end normally (no SIGBUS, no SIGXFSZ).
fn run_child(entry: &str, role: &str, key: &str) {
    let mut c = Child::spawn(entry, role, key, &[]);
    let line = c.next_line(LINE);
    assert_eq!(line, "ok", "child {role}");
    let status = c.wait_exit(LINE);
    assert!(status.success(), "child {role} ended with {status}");
}

/// In a child, in a private mount namespace, a 256 KiB tmpfs is mounted on
/// `/dev/shm`: a segment that does not fit fails at create time with
/// `OutOfResources` (its memory is reserved up front, so no SIGBUS at the
/// first write), nothing is left there, and what does fit works to the last
/// byte.
#[test]
fn full_dev_shm_is_out_of_resources_at_create_time_and_leaves_nothing() {
    const ENTRY: &str = "full_dev_shm_is_out_of_resources_at_create_time_and_leaves_nothing";
    if let Some((_, key)) = role() {
        // Everything below runs on this thread: unshare(CLONE_NEWNS) gives
        // the new mount namespace to the calling thread only.
        // SAFETY: unshare(2) with a flag constant.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNS) };
        assert_eq!(rc, 0, "unshare(CLONE_NEWNS)");
        let root = CString::new("/").unwrap();
        let shm = CString::new("/dev/shm").unwrap();
        let tmpfs = CString::new("tmpfs").unwrap();
        let opts = CString::new("size=256k,mode=1777").unwrap();
        // SAFETY: mount(2) with NUL-terminated strings (or null where the
        // call ignores the argument); makes every mount private to this
        // namespace, so the next mount is not seen outside.
        let rc = unsafe {
            libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "make / private");
        // SAFETY: as above; mounts a fresh 256 KiB tmpfs on /dev/shm.
        let rc = unsafe {
            libc::mount(
                tmpfs.as_ptr(),
                shm.as_ptr(),
                tmpfs.as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(rc, 0, "mount tmpfs on /dev/shm");
        assert!(shm_entries().is_empty(), "a fresh /dev/shm");

        // 1 MiB: above the free space, and easily mapped.
        let e = SharedMemory::<[u8]>::create_slice(&key, 1 << 20, 0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfResources, "{e}");
        assert!(e.to_string().contains("/dev/shm"), "the message says where: {e}");
        let os = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .and_then(std::io::Error::raw_os_error);
        assert_eq!(os, Some(libc::ENOSPC), "the reservation's error: {e}");
        assert!(
            shm_entries().is_empty(),
            "a failed create left {:?}",
            shm_entries()
        );

        let fits = 160 * 1024;
        let a = SharedMemory::<[u8]>::create_slice(&key, fits, 1).expect("what fits is created");
        a.lock().unwrap().fill(0xab);
        let other = format!("{key}-2");
        let e = SharedMemory::<[u8]>::create_slice(&other, 128 * 1024, 0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfResources, "{e}");
        let e = SharedMemory::<[u64; 4]>::open_or_create(&other, || [0; 4]);
        assert!(e.is_ok(), "a small segment still fits: {:?}", e.err());
        drop(e);
        assert_eq!(shm_entries().len(), 1, "{:?}", shm_entries());
        assert!(a.lock().unwrap().iter().all(|&b| b == 0xab));
        drop(a);
        assert!(shm_entries().is_empty(), "{:?}", shm_entries());
        say("ok");
        return;
    }
    if !require_root(ENTRY, "mounts a small tmpfs in a private mount namespace") {
        return;
    }
    let key = unique_key("full");
    let keys = Keys::new(&[&key]);
    run_child(ENTRY, "full", &key);
    keys.finish();
}

/// A segment larger than the whole of `/dev/shm` (so larger than its free
/// space, whatever else runs) but small enough to map: `create` fails with
/// `OutOfResources` from `posix_fallocate` (`ENOSPC`, the message says it
/// could not reserve the space) — not from `mmap`, which could map it, and
/// not later as SIGBUS — and leaves no object and no descriptor. No root
/// needed: the real `/dev/shm`, and the kernel refuses such a reservation
/// up front, without filling the file system.
#[test]
fn a_segment_larger_than_dev_shm_is_out_of_resources_from_the_reservation() {
    const ENTRY: &str = "a_segment_larger_than_dev_shm_is_out_of_resources_from_the_reservation";
    if let Some((_, key)) = role() {
        // In a process of its own, so that the descriptor count is not
        // changed by the other tests of this binary running meanwhile.
        let size: usize = std::env::var("TSHM_SIZE").unwrap().parse().unwrap();
        let fds = common::open_fds();
        let e = SharedMemory::<[u8]>::create_slice(&key, size, 0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfResources, "{e}");
        assert!(
            e.to_string().contains("cannot reserve"),
            "not the reservation: {e}"
        );
        let os = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .and_then(std::io::Error::raw_os_error);
        assert_eq!(os, Some(libc::ENOSPC), "the reservation's error: {e}");
        assert!(!common::exists(&key), "a failed create left its object");
        assert_eq!(common::open_fds(), fds, "descriptors leaked");
        say("ok");
        return;
    }
    let path = CString::new("/dev/shm").unwrap();
    // SAFETY: `statvfs` is a plain C struct; all-zero is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs(3) with a NUL-terminated path and a pointer to a
    // statvfs struct.
    assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut st) }, 0, "statvfs");
    let total = st.f_blocks * st.f_frsize;
    let free = st.f_bavail * st.f_frsize;
    if total == 0 {
        // A tmpfs without a size limit: a reservation would fill memory.
        common::skip(ENTRY, "/dev/shm has no size limit to exceed");
        return;
    }
    let size = usize::try_from(total + (1 << 20)).expect("fits in usize");
    assert!(size as u64 > free);
    // SAFETY: mmap(2) of anonymous memory, no address hint, no access and no
    // reservation of swap: it only asks for address space, and is unmapped
    // at once below.
    let probe = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size + (1 << 20),
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if probe == libc::MAP_FAILED {
        common::skip(ENTRY, "this process cannot map a region larger than /dev/shm");
        return;
    }
    // SAFETY: munmap(2) of the whole region mapped just above.
    assert_eq!(unsafe { libc::munmap(probe, size + (1 << 20)) }, 0);
    let key = unique_key("larger-than-shm");
    let keys = Keys::new(&[&key]);
    let mut c = Child::spawn(ENTRY, "too-large", &key, &[("TSHM_SIZE", size.to_string())]);
    assert_eq!(c.next_line(LINE), "ok");
    let status = c.wait_exit(LINE);
    assert!(status.success(), "{status}");
    keys.finish();
}

/// With `RLIMIT_FSIZE` below the segment's size, `create` reports
/// `OutOfResources` naming the limit — it checks first, instead of growing the
/// file and dying of SIGXFSZ — and leaves nothing; below the limit it works.
#[test]
fn file_size_limit_is_out_of_resources_not_sigxfsz() {
    const ENTRY: &str = "file_size_limit_is_out_of_resources_not_sigxfsz";
    if let Some((_, key)) = role() {
        set_limit(libc::RLIMIT_FSIZE, 64 * 1024);
        let e = SharedMemory::<[u8]>::create_slice(&key, 1 << 20, 0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfResources, "{e}");
        assert!(e.to_string().contains("RLIMIT_FSIZE"), "{e}");
        assert!(!common::exists(&key));
        let e = SharedMemory::<[u64; 4]>::options().open_or_create(&key, || [0; 4]);
        let small = e.expect("below the limit");
        drop(small);
        let e = SharedMemory::<[u8]>::create_slice(&key, 62 * 1024, 0).unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::OutOfResources,
            "page + data above the limit: {e}"
        );
        assert!(!common::exists(&key));
        say("ok");
        return;
    }
    let key = unique_key("fsize");
    let keys = Keys::new(&[&key]);
    run_child(ENTRY, "fsize", &key);
    keys.finish();
}

/// With no file descriptor left, `create`, `attach` and `open_or_create`
/// report `OutOfResources`, leak no descriptor and leave nothing in
/// `/dev/shm`; with one descriptor free again they work.
#[test]
fn no_file_descriptors_left_is_out_of_resources_and_leaks_nothing() {
    const ENTRY: &str = "no_file_descriptors_left_is_out_of_resources_and_leaks_nothing";
    if let Some((_, key)) = role() {
        let new_key = format!("{key}-new");
        set_limit(libc::RLIMIT_NOFILE, 128);
        let null = std::fs::File::open("/dev/null").unwrap();
        let mut hog = Vec::new();
        loop {
            match null.try_clone() {
                Ok(f) => hog.push(f),
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                    break;
                }
            }
            assert!(hog.len() < 1000, "RLIMIT_NOFILE not in force");
        }
        let fds = common::open_fds();
        let e = SharedMemory::<[u64; 4]>::create(&new_key, [0; 4]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfResources, "create: {e}");
        let e = SharedMemory::<[u64; 4]>::attach(&key).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfResources, "attach: {e}");
        let e = SharedMemory::<[u64; 4]>::open_or_create(&new_key, || [0; 4]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfResources, "open_or_create: {e}");
        assert_eq!(common::open_fds(), fds, "descriptors leaked");
        assert!(!common::exists(&new_key), "a failed create left its object");
        // One descriptor free: each handle needs exactly one.
        hog.pop();
        let shm = SharedMemory::<[u64; 4]>::attach(&key).expect("attach with one descriptor free");
        assert_eq!(*shm.lock().unwrap(), [3; 4]);
        assert_eq!(shm.attach_count(), 2);
        drop(shm);
        say("ok");
        return;
    }
    let key = unique_key("nofile");
    let new_key = format!("{key}-new");
    let keys = Keys::new(&[&key, &new_key]);
    let shm = SharedMemory::<[u64; 4]>::create(&key, [3; 4]).unwrap();
    run_child(ENTRY, "nofile", &key);
    assert_eq!(shm.attach_count(), 1);
    drop(shm);
    keys.finish();
}

/// The current size of this process's address space, in bytes.
fn address_space_in_use() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize");
    kb * 1024
}

/// With too little address space left (`RLIMIT_AS`) to map a segment,
/// `create` and `attach` report `OutOfResources` instead of failing later,
/// leave no object, mapping or descriptor behind, and the segment's other
/// users are unaffected.
#[test]
fn no_address_space_left_is_out_of_resources_and_leaks_nothing() {
    const ENTRY: &str = "no_address_space_left_is_out_of_resources_and_leaks_nothing";
    const BIG: usize = 64 << 20;
    if let Some((_, key)) = role() {
        let new_key = format!("{key}-new");
        let fds = common::open_fds();
        set_limit(libc::RLIMIT_AS, address_space_in_use() + (16 << 20));
        let e = SharedMemory::<[u8]>::create_slice(&new_key, BIG, 0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfResources, "create: {e}");
        assert!(!common::exists(&new_key), "a failed create left its object");
        let e = SharedMemory::<[u8]>::attach(&key).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfResources, "attach: {e}");
        assert_eq!(common::open_fds(), fds, "descriptors leaked");
        assert!(
            !common::process_uses(&common::shm_path(&key)),
            "a mapping was left"
        );
        // A small segment still fits.
        let small = SharedMemory::<[u64; 4]>::create(&new_key, [1; 4]).expect("small create");
        drop(small);
        say("ok");
        return;
    }
    let key = unique_key("no-as");
    let new_key = format!("{key}-new");
    let keys = Keys::new(&[&key, &new_key]);
    let shm = SharedMemory::<[u8]>::create_slice(&key, BIG, 9).unwrap();
    run_child(ENTRY, "no-as", &key);
    assert_eq!(shm.attach_count(), 1);
    assert!(shm.lock().unwrap().iter().all(|&b| b == 9));
    drop(shm);
    keys.finish();
}

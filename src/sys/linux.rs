//! The shared-memory file: open, stat, size, map protection and
//! open-file-description locks (Linux + glibc).
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

/// Opens (or, with `create`, exclusively creates) the POSIX shared-memory
/// object `name`, read-write, close-on-exec.
pub(crate) fn shm_open(name: &CStr, create: bool, mode: u32) -> io::Result<OwnedFd> {
    let mut flags = libc::O_RDWR | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    if create {
        flags |= libc::O_CREAT | libc::O_EXCL;
    }
    // SAFETY: shm_open(3) requires a NUL-terminated name: `name` is a `CStr`.
    // The mode is passed as the variadic `mode_t` argument, which POSIX reads
    // only with O_CREAT and which has the type `libc::mode_t`.
    let fd = unsafe { libc::shm_open(name.as_ptr(), flags, mode as libc::mode_t) };
    if fd < 0 {
        return Err(last_error());
    }
    // SAFETY: `fd` was just returned by shm_open, is open, and is owned by
    // nobody else (OwnedFd::from_raw_fd requires an open fd we own).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Removes the name `name` (the object lives on while it is open or mapped).
pub(crate) fn shm_unlink(name: &CStr) -> io::Result<()> {
    // SAFETY: shm_unlink(3) requires a NUL-terminated name: `name` is a `CStr`.
    if unsafe { libc::shm_unlink(name.as_ptr()) } != 0 {
        return Err(last_error());
    }
    Ok(())
}

/// What `fstat` says about an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub uid: u32,
    pub regular: bool,
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
}

impl Stat {
    pub(crate) fn same_file(&self, other: &Stat) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }
}

pub(crate) fn fstat(fd: &OwnedFd) -> io::Result<Stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat(2) requires an open fd (`fd` is an OwnedFd) and a pointer
    // to writable storage for one `struct stat` (`st` is exactly that).
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Err(last_error());
    }
    // SAFETY: fstat returned 0, so it filled in the whole struct.
    let st = unsafe { st.assume_init() };
    Ok(Stat {
        dev: st.st_dev,
        ino: st.st_ino,
        uid: st.st_uid,
        regular: st.st_mode & libc::S_IFMT == libc::S_IFREG,
        size: u64::try_from(st.st_size).unwrap_or(0),
        mode: st.st_mode & 0o7777,
    })
}

/// What the name `native` (as given to `shm_open`) refers to now, without
/// following symbolic links and without opening it.
pub(crate) fn name_stat(native: &str) -> io::Result<Stat> {
    use std::os::unix::fs::MetadataExt;
    // glibc places POSIX shared-memory objects in /dev/shm (shm_open(3)).
    let m = std::fs::symlink_metadata(format!("/dev/shm{native}"))?;
    Ok(Stat {
        dev: m.dev(),
        ino: m.ino(),
        uid: m.uid(),
        regular: m.file_type().is_file(),
        size: m.len(),
        mode: m.mode() & 0o7777,
    })
}

/// Reads exactly `buf.len()` bytes at `offset` (an error if the file ends
/// first).
pub(crate) fn pread_exact(fd: &OwnedFd, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let at = offset
            .checked_add(done as u64)
            .and_then(|o| libc::off_t::try_from(o).ok())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        let rest = &mut buf[done..];
        // SAFETY: pread(2) requires an open fd (an OwnedFd) and a buffer valid
        // for writes of the given length: `rest` is a live, exclusively
        // borrowed slice of exactly that length.
        let n = unsafe { libc::pread(fd.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len(), at) };
        match n {
            n if n > 0 => done += n as usize,
            0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            _ => {
                let e = last_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// Makes `[ptr, ptr + len)` of a mapping read-only.
pub(crate) fn protect_read_only(ptr: *mut u8, len: usize) -> io::Result<()> {
    // SAFETY: mprotect(2) requires a page-aligned address inside a mapping of
    // this process; callers pass the data start of a segment mapping, which
    // is page aligned (the data offset is a multiple of the page size). Only
    // the protection changes: no memory is freed or moved, so no Rust
    // reference into it is invalidated (there are none yet).
    if unsafe { libc::mprotect(ptr.cast(), len, libc::PROT_READ) } != 0 {
        return Err(last_error());
    }
    Ok(())
}

/// This process's effective uid, as last seen. `expected` is the uid a caller
/// hopes for: a cached value that differs from it is confirmed with a fresh
/// geteuid(2), so a file of the current uid is never refused, and the common
/// case costs no system call. A process that changed its effective uid (a
/// daemon dropping root) may still accept files of the uid it had when it
/// last looked; the kernel's own permission check on open still applies.
pub(crate) fn effective_uid(expected: u32) -> u32 {
    static EUID: std::sync::atomic::AtomicU64 = AtomicU64::new(u64::MAX);
    let cached = EUID.load(Ordering::Relaxed);
    if cached == u64::from(expected) {
        return expected;
    }
    let now = geteuid();
    EUID.store(u64::from(now), Ordering::Relaxed);
    now
}

pub(crate) fn geteuid() -> u32 {
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

pub(crate) fn fchmod(fd: &OwnedFd, mode: u32) -> io::Result<()> {
    // SAFETY: fchmod(2) requires an open fd; `fd` is an OwnedFd.
    if unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) } != 0 {
        return Err(last_error());
    }
    Ok(())
}

/// Reserves the blocks of `[0, len)` now, so a full file system is an error
/// here instead of a SIGBUS at the first write.
pub(crate) fn fallocate(fd: &OwnedFd, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: posix_fallocate(3) requires an open fd (an OwnedFd) and a
    // non-negative offset and length (0 and `len`, checked to fit `off_t`).
    // It returns an error number instead of setting errno.
    match unsafe { libc::posix_fallocate(fd.as_raw_fd(), 0, len) } {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// The soft `RLIMIT_FSIZE`, or `None` when unlimited.
pub(crate) fn file_size_limit() -> Option<u64> {
    let mut lim = MaybeUninit::<libc::rlimit>::uninit();
    // SAFETY: getrlimit(2) requires a valid resource and a pointer to writable
    // storage for one `struct rlimit`; both hold.
    if unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, lim.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: getrlimit returned 0, so it filled in the struct.
    let lim = unsafe { lim.assume_init() };
    (lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf(3) with a valid name has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).unwrap_or(4096)
}

/// Kinds of open-file-description lock on byte 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OfdLock {
    Read,
    Write,
    Unlock,
}

/// Sets, converts or releases this open file description's lock on byte 0,
/// without waiting. Returns `Ok(false)` when another open file description
/// holds a conflicting lock.
///
/// OFD locks (fcntl(2), "Open file description locks") belong to the open
/// file description, not to the process: they conflict between two handles
/// of one process, survive closing other fds of the file, and are released by
/// the kernel when the description is closed — including when the process is
/// killed.
pub(crate) fn ofd_lock(fd: &OwnedFd, kind: OfdLock) -> io::Result<bool> {
    ofd_lock_range(fd, kind, 0, 1)
}

fn flock(kind: OfdLock, start: u64, len: u64) -> io::Result<libc::flock> {
    let range = |n: u64| libc::off_t::try_from(n).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
    // SAFETY: `flock` is a plain C struct; all-zero is a valid value of it.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = match kind {
        OfdLock::Read => libc::F_RDLCK,
        OfdLock::Write => libc::F_WRLCK,
        OfdLock::Unlock => libc::F_UNLCK,
    } as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = range(start)?;
    fl.l_len = range(len)?;
    // l_pid must be 0 for OFD locks (fcntl(2)).
    fl.l_pid = 0;
    Ok(fl)
}

/// [`ofd_lock`] on the bytes `[start, start + len)`; `len == 0` means "to
/// the end of the file and beyond".
pub(crate) fn ofd_lock_range(fd: &OwnedFd, kind: OfdLock, start: u64, len: u64) -> io::Result<bool> {
    let fl = flock(kind, start, len)?;
    // SAFETY: fcntl(2) F_OFD_SETLK requires an open fd (an OwnedFd) and a
    // pointer to a valid `struct flock` with l_pid == 0 (built above).
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &fl) } == 0 {
        return Ok(true);
    }
    let err = last_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN | libc::EACCES) => Ok(false),
        _ => Err(err),
    }
}

/// A lock held by another open file description that conflicts with a
/// write lock on `[start, start + len)`, as `(start, len)`; `None` if there
/// is none. Locks of `fd`'s own description never conflict with it.
pub(crate) fn ofd_conflict(fd: &OwnedFd, start: u64, len: u64) -> io::Result<Option<(u64, u64)>> {
    let mut fl = flock(OfdLock::Write, start, len)?;
    // SAFETY: fcntl(2) F_OFD_GETLK requires an open fd (an OwnedFd) and a
    // pointer to a valid, writable `struct flock` with l_pid == 0 (built
    // above), which it overwrites with the conflicting lock, if any.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) } != 0 {
        return Err(last_error());
    }
    if fl.l_type == libc::F_UNLCK as libc::c_short {
        return Ok(None);
    }
    let field = |n: libc::off_t| u64::try_from(n).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
    Ok(Some((field(fl.l_start)?, field(fl.l_len)?)))
}

//! The shared-memory file: [`ShmFile`], an open POSIX shared-memory object
//! with its operations (stat, size, mode, `pread`, open-file-description
//! locks, mapping), and the facts about this process that opening and sizing
//! one depend on (Linux + glibc).
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use super::call::{Call, OsError, OsResult};
use super::map::Mapping;

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
    /// Names the file has (`st_nlink`): 0 once its name was removed.
    pub links: u64,
}

impl Stat {
    pub(crate) fn same_file(&self, other: &Stat) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }
}

/// Kinds of open-file-description lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OfdLock {
    Read,
    Write,
    Unlock,
}

/// An open POSIX shared-memory object: its own open file description, read-write,
/// close-on-exec. Closing it (dropping) releases every open-file-description
/// lock it holds.
///
/// OFD locks (fcntl(2), "Open file description locks") belong to the open
/// file description, not to the process: they conflict between two handles
/// of one process, survive closing other fds of the file, and are released by
/// the kernel when the description is closed — including when the process is
/// killed.
#[derive(Debug)]
pub(crate) struct ShmFile {
    fd: OwnedFd,
}

impl ShmFile {
    /// Opens (or, with `create`, exclusively creates with the permission
    /// bits `mode`) the object `name`; symbolic links are never followed.
    pub(crate) fn open(name: &CStr, create: bool, mode: u32) -> OsResult<ShmFile> {
        let mut flags = libc::O_RDWR | libc::O_CLOEXEC | libc::O_NOFOLLOW;
        if create {
            flags |= libc::O_CREAT | libc::O_EXCL;
        }
        // SAFETY: shm_open(3):
        // - `name` must be NUL-terminated: it is a `CStr`;
        // - the variadic mode argument is read only with O_CREAT and must be
        //   a `mode_t`: it is passed as `libc::mode_t`.
        let fd = unsafe { libc::shm_open(name.as_ptr(), flags, mode as libc::mode_t) };
        if fd < 0 {
            return Err(OsError::last(Call::ShmOpen));
        }
        // SAFETY: OwnedFd::from_raw_fd:
        // - `fd` must be open: shm_open just returned it;
        // - nobody else may own it: it was made by this call and given to
        //   no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(ShmFile { fd })
    }

    /// What the object is now: type, owner, size, mode.
    pub(crate) fn stat(&self) -> OsResult<Stat> {
        let mut st = MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat(2):
        // - the fd must be open: it is owned by `self`;
        // - the pointer must be valid for writes of one `struct stat`: `st`
        //   is exactly that storage.
        if unsafe { libc::fstat(self.fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
            return Err(OsError::last(Call::Fstat));
        }
        // SAFETY: assume_init requires an initialized value: fstat returned
        // 0, so it filled in the whole struct.
        let st = unsafe { st.assume_init() };
        Ok(Stat {
            dev: st.st_dev,
            ino: st.st_ino,
            uid: st.st_uid,
            regular: st.st_mode & libc::S_IFMT == libc::S_IFREG,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mode: st.st_mode & 0o7777,
            links: st.st_nlink,
        })
    }

    /// Reads exactly `buf.len()` bytes at `offset` (an error if the file
    /// ends first).
    pub(crate) fn pread_exact(&self, buf: &mut [u8], offset: u64) -> OsResult<()> {
        let mut done = 0;
        while done < buf.len() {
            let at = offset
                .checked_add(done as u64)
                .and_then(|o| libc::off_t::try_from(o).ok())
                .ok_or_else(|| OsError::errno(Call::Pread, libc::EINVAL))?;
            let rest = &mut buf[done..];
            // SAFETY: pread(2):
            // - the fd must be open: it is owned by `self`;
            // - the buffer must be valid for writes of the given length:
            //   `rest` is a live, exclusively borrowed slice of exactly
            //   that length.
            let n = unsafe { libc::pread(self.fd.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len(), at) };
            match n {
                n if n > 0 => done += n as usize,
                0 => return Err(OsError::new(Call::Pread, io::ErrorKind::UnexpectedEof.into())),
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(OsError::new(Call::Pread, e));
                    }
                }
            }
        }
        Ok(())
    }

    /// Sets the permission bits to exactly `mode`.
    pub(crate) fn fchmod(&self, mode: u32) -> OsResult<()> {
        // SAFETY: fchmod(2) requires an open fd: it is owned by `self`.
        if unsafe { libc::fchmod(self.fd.as_raw_fd(), mode as libc::mode_t) } != 0 {
            return Err(OsError::last(Call::Fchmod));
        }
        Ok(())
    }

    /// Gives the object to group `gid` (the owner stays).
    pub(crate) fn fchown_group(&self, gid: u32) -> OsResult<()> {
        // SAFETY: fchown(2) requires an open fd: it is owned by `self`; a
        // uid of -1 leaves the owner unchanged.
        if unsafe { libc::fchown(self.fd.as_raw_fd(), u32::MAX, gid) } != 0 {
            return Err(OsError::last(Call::Fchown));
        }
        Ok(())
    }

    /// Reserves the blocks of `[0, len)` now, so a full file system is an
    /// error here instead of a SIGBUS at the first write. posix_fallocate(3)
    /// also sets the size: "If the size of the file is less than
    /// offset+len, then the file is increased to this size".
    pub(crate) fn fallocate(&self, len: u64) -> OsResult<()> {
        let len = libc::off_t::try_from(len).map_err(|_| OsError::errno(Call::Fallocate, libc::EFBIG))?;
        // SAFETY: posix_fallocate(3):
        // - the fd must be open: it is owned by `self`;
        // - offset and length must be non-negative: 0, and `len`, checked
        //   to fit `off_t`.
        // It returns an error number instead of setting errno.
        match unsafe { libc::posix_fallocate(self.fd.as_raw_fd(), 0, len) } {
            0 => Ok(()),
            e => Err(OsError::errno(Call::Fallocate, e)),
        }
    }

    /// Maps the first `len` bytes of the object read-write, shared.
    pub(crate) fn map(&self, len: usize) -> OsResult<Mapping> {
        Mapping::new(&self.fd, len)
    }

    /// Sets, converts or releases this open file description's lock on
    /// byte 0 (the lifetime lock), without waiting. Returns `Ok(false)` when
    /// another open file description holds a conflicting lock.
    pub(crate) fn lock(&self, kind: OfdLock) -> OsResult<bool> {
        self.lock_range(kind, 0, 1)
    }

    /// [`lock`](Self::lock) on the bytes `[start, start + len)`; `len == 0`
    /// means "to the end of the file and beyond".
    pub(crate) fn lock_range(&self, kind: OfdLock, start: u64, len: u64) -> OsResult<bool> {
        let fl = flock(kind, start, len).map_err(|e| OsError::new(Call::OfdSetLock, e))?;
        // SAFETY: fcntl(2) F_OFD_SETLK:
        // - the fd must be open: it is owned by `self`;
        // - the argument must point to a valid `struct flock` with
        //   l_pid == 0: `fl`, built by `flock`.
        if unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_OFD_SETLK, &fl) } == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN | libc::EACCES) => Ok(false),
            _ => Err(OsError::new(Call::OfdSetLock, err)),
        }
    }

    /// A lock held by another open file description that conflicts with a
    /// write lock on `[start, start + len)`, as `(start, len)`; `None` if
    /// there is none. Locks of this description never conflict with it.
    pub(crate) fn conflict(&self, start: u64, len: u64) -> OsResult<Option<(u64, u64)>> {
        let mut fl = flock(OfdLock::Write, start, len).map_err(|e| OsError::new(Call::OfdGetLock, e))?;
        // SAFETY: fcntl(2) F_OFD_GETLK:
        // - the fd must be open: it is owned by `self`;
        // - the argument must point to a valid, writable `struct flock` with
        //   l_pid == 0: `fl`, built by `flock`, which the call overwrites
        //   with the conflicting lock, if any.
        if unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) } != 0 {
            return Err(OsError::last(Call::OfdGetLock));
        }
        if fl.l_type == libc::F_UNLCK as libc::c_short {
            return Ok(None);
        }
        let field =
            |n: libc::off_t| u64::try_from(n).map_err(|_| OsError::errno(Call::OfdGetLock, libc::EINVAL));
        Ok(Some((field(fl.l_start)?, field(fl.l_len)?)))
    }
}

fn flock(kind: OfdLock, start: u64, len: u64) -> io::Result<libc::flock> {
    let range = |n: u64| libc::off_t::try_from(n).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
    // SAFETY: mem::zeroed requires the all-zero bit pattern to be a valid
    // value of the type: `flock` is a plain C struct of integers.
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

/// Removes the name `name` (the object lives on while it is open or mapped).
pub(crate) fn unlink(name: &CStr) -> OsResult<()> {
    // SAFETY: shm_unlink(3) requires a NUL-terminated name: `name` is a `CStr`.
    if unsafe { libc::shm_unlink(name.as_ptr()) } != 0 {
        return Err(OsError::last(Call::ShmUnlink));
    }
    Ok(())
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
        links: m.nlink(),
    })
}

/// This process's effective uid, as last seen. `expected` is the uid a caller
/// hopes for: a cached value that differs from it is confirmed with a fresh
/// geteuid(2), so a file of the current uid is never refused, and the common
/// case costs no system call. A process that changed its effective uid (a
/// daemon dropping root) may still accept files of the uid it had when it
/// last looked; the kernel's own permission check on open still applies.
pub(crate) fn effective_uid(expected: u32) -> u32 {
    static EUID: AtomicU64 = AtomicU64::new(u64::MAX);
    let cached = EUID.load(Ordering::Relaxed);
    if cached == u64::from(expected) {
        return expected;
    }
    let now = geteuid();
    EUID.store(u64::from(now), Ordering::Relaxed);
    now
}

fn geteuid() -> u32 {
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// The soft `RLIMIT_FSIZE`, or `None` when unlimited.
pub(crate) fn file_size_limit() -> Option<u64> {
    let mut lim = MaybeUninit::<libc::rlimit>::uninit();
    // SAFETY: getrlimit(2):
    // - the resource must be valid: RLIMIT_FSIZE is;
    // - the pointer must be valid for writes of one `struct rlimit`: `lim`
    //   is exactly that storage.
    if unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, lim.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: assume_init requires an initialized value: getrlimit returned
    // 0, so it filled in the struct.
    let lim = unsafe { lim.assume_init() };
    (lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf(3) with a valid name (_SC_PAGESIZE) has no other
    // precondition.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).unwrap_or(4096)
}

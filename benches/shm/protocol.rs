//! The floor plus the crash-safe lifetime protocol, written directly against
//! libc: what `lifecycle` and `attach_detach` cost with the system calls the
//! design requires and nothing else.
//!
//! - create: `shm_open(O_CREAT | O_EXCL)`, an open-file-description write
//!   lock on byte 0 while initializing, `fchmod` (so the umask cannot change
//!   the mode), `posix_fallocate`, which sets the size and reserves the
//!   memory (a full `/dev/shm` is an error now, not a SIGBUS later), one
//!   mapping of header page + data, the robust mutex, then the lock
//!   downgraded to a read lock;
//! - attach: `shm_open`, `fstat` (a regular file of the expected size), a
//!   read lock on byte 0, `pread` of the header (validated on a copy), one
//!   mapping;
//! - detach: drop the read lock, try the write lock: whoever gets it is the
//!   last one and unlinks; `munmap`, `close`.
//!
//! Compared with [`crate::floor::Locked`] (the minimum that works while no
//! process dies), the difference is the price of the design's guarantees;
//! compared with typed-shm, the difference is what the library adds on top.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::mem::MaybeUninit;
use std::ptr::NonNull;

use crate::floor::{self, HEADER, RobustMutex};
use crate::subject::{Cell, Lock};

/// Data bytes: one `[u64; 8]`.
const DATA: usize = 64;
/// Bytes of the header that attach reads and checks.
const HEADER_READ: usize = 512;
/// The header's first bytes, checked by attach.
const MAGIC: [u8; 8] = *b"FLOORHDR";

/// A handle that follows the protocol above.
pub struct Protocol {
    mutex: RobustMutex,
    ptr: NonNull<u8>,
    fd: libc::c_int,
    name: CString,
}

fn ofd_lock(fd: libc::c_int, kind: libc::c_int) -> bool {
    let lock = libc::flock {
        l_type: libc::c_short::try_from(kind).expect("lock types fit c_short"),
        l_whence: libc::c_short::try_from(libc::SEEK_SET).expect("SEEK_SET fits c_short"),
        l_start: 0,
        l_len: 1,
        l_pid: 0,
    };
    // SAFETY: fcntl(2) F_OFD_SETLK takes a pointer to a `struct flock`, valid
    // for reads for the duration of the call (a local); `fd` is open; l_pid
    // is 0 as open-file-description locks require.
    let rc = unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &raw const lock) };
    if rc == 0 {
        return true;
    }
    let err = std::io::Error::last_os_error();
    assert!(
        matches!(err.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)),
        "fcntl(F_OFD_SETLK): {err}"
    );
    false
}

fn check(what: &str, ok: bool) {
    assert!(ok, "{what}: {}", std::io::Error::last_os_error());
}

impl Protocol {
    fn create(name: &str) -> Protocol {
        let name = floor::os_name(name);
        let len = HEADER + DATA;
        // SAFETY: shm_open(3): `name` is a valid NUL-terminated string; the
        // flags and mode are valid constants.
        let fd = unsafe {
            libc::shm_open(
                name.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600,
            )
        };
        check("shm_open(O_CREAT | O_EXCL)", fd >= 0);
        assert!(ofd_lock(fd, libc::F_WRLCK), "a new object is not locked");
        // SAFETY: fchmod(2): `fd` is open; 0o600 is a valid mode.
        check("fchmod", unsafe { libc::fchmod(fd, 0o600) } == 0);
        let size = libc::off_t::try_from(len).expect("fits off_t");
        // posix_fallocate(3) also extends the file to `size` (as the library
        // does, with no `ftruncate` before it).
        // SAFETY: posix_fallocate(3): `fd` is open for writing; offset 0 and
        // `size` are non-negative.
        let rc = unsafe { libc::posix_fallocate(fd, 0, size) };
        assert_eq!(rc, 0, "posix_fallocate: {rc}");
        let ptr = floor::map(fd, len);
        // SAFETY: the mapping is `len` >= 8 bytes, writable, and nobody else
        // maps the object yet (the write lock is held).
        unsafe { ptr.as_ptr().cast::<[u8; 8]>().write(MAGIC) };
        // SAFETY: offset 384 of the fresh, zero-filled header page is
        // aligned for a mutex and unused; the mapping lives as long as the
        // handle, which owns it.
        let mutex = unsafe { RobustMutex::init(ptr.as_ptr().wrapping_add(384)) };
        // Publish: the write lock becomes this handle's read lock.
        assert!(ofd_lock(fd, libc::F_RDLCK), "downgrade to a read lock");
        Protocol { mutex, ptr, fd, name }
    }

    fn attach(name: &str) -> Protocol {
        let name = floor::os_name(name);
        let len = HEADER + DATA;
        // SAFETY: shm_open(3): `name` is a valid NUL-terminated string; the
        // flags are valid constants; the mode is ignored without O_CREAT.
        let fd = unsafe {
            libc::shm_open(
                name.as_ptr(),
                libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0,
            )
        };
        check("shm_open(O_RDWR)", fd >= 0);
        let mut st = MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat(2): `fd` is open; `st` is writable storage for a stat.
        check("fstat", unsafe { libc::fstat(fd, st.as_mut_ptr()) } == 0);
        // SAFETY: fstat returned 0, so it filled in the whole struct.
        let st = unsafe { st.assume_init() };
        assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFREG, "a regular file");
        assert_eq!(usize::try_from(st.st_size).ok(), Some(len), "the expected size");
        assert!(ofd_lock(fd, libc::F_RDLCK), "read lock refused: being removed");
        let mut header = [0u8; HEADER_READ];
        // SAFETY: pread(2): `fd` is open for reading; `header` is writable for
        // the length passed.
        let n = unsafe { libc::pread(fd, header.as_mut_ptr().cast(), header.len(), 0) };
        assert_eq!(usize::try_from(n).ok(), Some(HEADER_READ), "pread of the header");
        assert_eq!(header[..8], MAGIC, "not a floor segment");
        let ptr = floor::map(fd, len);
        // SAFETY: the creator initialized the mutex at offset 384 before
        // anyone could take a read lock; the mapping lives as long as the
        // handle.
        let mutex = unsafe { RobustMutex::existing(ptr.as_ptr().wrapping_add(384)) };
        Protocol { mutex, ptr, fd, name }
    }
}

impl Drop for Protocol {
    fn drop(&mut self) {
        assert!(ofd_lock(self.fd, libc::F_UNLCK), "unlock");
        if ofd_lock(self.fd, libc::F_WRLCK) {
            // The last one: remove the name while holding the write lock.
            // SAFETY: shm_unlink(3): `name` is a valid NUL-terminated string.
            unsafe { libc::shm_unlink(self.name.as_ptr()) };
        }
        // SAFETY: munmap(2): `ptr` and the length are exactly the mapping
        // made in create/attach, unmapped only here; no reference into it
        // outlives the handle.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), HEADER + DATA) };
        floor::close(self.fd);
    }
}

impl Lock for Protocol {
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut [u64; 8]) -> R) -> R {
        self.mutex.lock();
        // SAFETY: the data page follows the header page inside the mapping,
        // page aligned and 64 bytes long; any bits are a valid `[u64; 8]`;
        // the lock is held while the reference lives.
        let cell = unsafe { &mut *self.ptr.as_ptr().wrapping_add(HEADER).cast::<[u64; 8]>() };
        let r = f(cell);
        self.mutex.unlock();
        r
    }

    #[inline]
    fn lock_unlock(&self) {
        self.mutex.lock();
        self.mutex.unlock();
    }
}

impl Cell for Protocol {
    fn create(name: &str) -> Self {
        Protocol::create(name)
    }
    fn attach(name: &str) -> Self {
        Protocol::attach(name)
    }
}

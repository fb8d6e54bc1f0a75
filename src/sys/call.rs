//! Which OS call failed: every fallible operation of [`ShmFile`](super::ShmFile)
//! and [`Mapping`](super::Mapping) returns an [`OsError`] that names its call,
//! so the layers above classify failures by a type, never by a string.

use std::fmt;
use std::io;

/// The OS calls whose failures reach the layers above `sys`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Call {
    ShmOpen,
    ShmUnlink,
    Fstat,
    Fchmod,
    Fchown,
    Fallocate,
    Pread,
    /// `fcntl(F_OFD_SETLK)`: set, convert or release an OFD lock.
    OfdSetLock,
    /// `fcntl(F_OFD_GETLK)`: find a conflicting OFD lock.
    OfdGetLock,
    Mmap,
    Mprotect,
    /// `inotify_init1`, `inotify_add_watch`, `poll` or `read` on the watch.
    Inotify,
}

impl fmt::Display for Call {
    /// The C name of the call, as in its manual page.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Call::ShmOpen => "shm_open",
            Call::ShmUnlink => "shm_unlink",
            Call::Fstat => "fstat",
            Call::Fchmod => "fchmod",
            Call::Fchown => "fchown",
            Call::Fallocate => "posix_fallocate",
            Call::Pread => "pread",
            Call::OfdSetLock => "fcntl(F_OFD_SETLK)",
            Call::OfdGetLock => "fcntl(F_OFD_GETLK)",
            Call::Mmap => "mmap",
            Call::Mprotect => "mprotect",
            Call::Inotify => "inotify",
        })
    }
}

/// A failed OS call: which one, and the error it reported.
#[derive(Debug)]
pub(crate) struct OsError {
    pub call: Call,
    pub error: io::Error,
}

impl OsError {
    pub(crate) fn new(call: Call, error: io::Error) -> Self {
        OsError { call, error }
    }

    /// `call` failed with the calling thread's `errno`.
    pub(crate) fn last(call: Call) -> Self {
        OsError::new(call, io::Error::last_os_error())
    }

    /// `call` failed (or was refused before it was made) with `errno`.
    pub(crate) fn errno(call: Call, errno: i32) -> Self {
        OsError::new(call, io::Error::from_raw_os_error(errno))
    }

    /// The error number, if the OS gave one.
    pub(crate) fn raw_os_error(&self) -> Option<i32> {
        self.error.raw_os_error()
    }
}

impl fmt::Display for OsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.call, self.error)
    }
}

/// The result of an OS call.
pub(crate) type OsResult<T> = Result<T, OsError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_display_their_c_names() {
        assert_eq!(Call::Fallocate.to_string(), "posix_fallocate");
        assert_eq!(Call::OfdSetLock.to_string(), "fcntl(F_OFD_SETLK)");
        let e = OsError::errno(Call::ShmOpen, libc::ENOENT);
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        assert!(e.to_string().starts_with("shm_open failed: "), "{e}");
    }
}

//! Errors: [`Error`] and [`ErrorKind`] for setting up and tearing down
//! segments, [`PoisonError`] and [`TryLockError`] for locking (the `std::sync`
//! convention).

use std::fmt;
use std::io;

use crate::sys::{Call, OsError};

/// What went wrong, in categories that match Qt's `QSharedMemory` errors where
/// Qt has one.
///
/// # Examples
///
/// ```
/// use typed_shm::{ErrorKind, SharedMemory};
///
/// let err = SharedMemory::<u32>::attach("").unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::KeyError);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The OS refused: mode bits, another owner, a read-only file system.
    PermissionDenied,
    /// A zero-sized type or slice, a size that overflows, or a segment too
    /// small for its header.
    InvalidSize,
    /// An empty key, a key with a NUL byte, or a key longer than 255 bytes.
    KeyError,
    /// `create` on a key that is in use (or held by a file that is not a
    /// typed-shm segment).
    AlreadyExists,
    /// `attach` to a key that does not exist.
    NotFound,
    /// The lock could not be set up or used (for example, a handle used in a
    /// child process after `fork`).
    LockError,
    /// Out of memory, `/dev/shm` full, file-size limit or file-descriptor
    /// limit reached.
    OutOfResources,
    /// The segment holds another type; the message names both layouts.
    LayoutMismatch,
    /// The segment was written by an incompatible version or build of this
    /// library (format version or ABI differ).
    IncompatibleVersion,
    /// Not a typed-shm segment, or a header that fails validation.
    Corrupted,
    /// The process that creates the segment did not finish initializing it in
    /// time (it may have died).
    TimedOut,
    /// Anything else; [`Error::source`](std::error::Error::source) gives the
    /// OS error.
    Unknown,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::InvalidSize => "invalid size",
            ErrorKind::KeyError => "invalid key",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::NotFound => "not found",
            ErrorKind::LockError => "lock error",
            ErrorKind::OutOfResources => "out of resources",
            ErrorKind::LayoutMismatch => "layout mismatch",
            ErrorKind::IncompatibleVersion => "incompatible version",
            ErrorKind::Corrupted => "corrupted segment",
            ErrorKind::TimedOut => "timed out",
            ErrorKind::Unknown => "unknown error",
        })
    }
}

/// An error from creating, attaching or detaching a segment.
///
/// [`Display`](fmt::Display) says what happened and what to do;
/// [`kind`](Error::kind) classifies it; [`source`](std::error::Error::source)
/// gives the OS error where there is one.
///
/// # Examples
///
/// ```
/// use typed_shm::{ErrorKind, SharedMemory};
///
/// # let key = format!("no-such-segment-{}", std::process::id());
/// let err = SharedMemory::<u64>::attach(&key).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::NotFound);
/// assert!(err.to_string().contains(&key));
/// ```
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<io::Error>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(kind: ErrorKind, message: impl Into<String>, source: io::Error) -> Self {
        Error {
            kind,
            message: message.into(),
            source: Some(source),
        }
    }

    /// Classifies the failure of an OS call on the segment called `key`.
    pub(crate) fn os(key: &str, failure: OsError) -> Self {
        let OsError { call, error: err } = failure;
        let (kind, advice) = match err.raw_os_error() {
            Some(libc::EACCES | libc::EPERM) => (
                ErrorKind::PermissionDenied,
                "the segment's mode bits or owner do not allow this process to open it read-write \
                 (read-only handles need write permission too: taking the lock writes to the segment)",
            ),
            Some(libc::EROFS) => (
                ErrorKind::PermissionDenied,
                "the shared-memory file system is mounted read-only",
            ),
            Some(libc::ENOENT) => (
                ErrorKind::NotFound,
                "no segment with this key exists: create it first",
            ),
            Some(libc::EEXIST) => (
                ErrorKind::AlreadyExists,
                "a segment with this key exists: attach to it, or choose another key",
            ),
            Some(libc::ENOSPC | libc::ENOMEM | libc::EFBIG | libc::EMFILE | libc::ENFILE) => (
                ErrorKind::OutOfResources,
                "not enough memory, space in /dev/shm or file descriptors: free some, or raise the limit",
            ),
            Some(libc::ENAMETOOLONG) => (ErrorKind::KeyError, "the OS rejected the segment name"),
            // Keys are checked before any call, so glibc's shm_open reports
            // EINVAL only for a directory under the name (it turns EISDIR
            // into EINVAL).
            Some(libc::EINVAL) if call == Call::ShmOpen => (
                ErrorKind::Corrupted,
                "something that is not a shared-memory object (a directory?) has this name; it was \
                 left untouched",
            ),
            Some(libc::ELOOP) => (
                ErrorKind::Corrupted,
                "the name is a symbolic link, which is never followed: remove it",
            ),
            _ => (ErrorKind::Unknown, "see the OS error"),
        };
        Error::with_source(
            kind,
            format!("segment {key:?}: {call} failed: {err}; {advice}"),
            err,
        )
    }

    /// What kind of error this is.
    ///
    /// # Examples
    ///
    /// ```
    /// use typed_shm::{ErrorKind, SharedMemory};
    /// let err = SharedMemory::<u8>::attach("bad\0key").unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::KeyError);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(s) = &self.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The lock was poisoned: a process or thread died, or a thread panicked,
/// while holding it, so the data may be half-written.
///
/// The lock *is* held: [`into_inner`](PoisonError::into_inner) gives the guard
/// so the data can be inspected and repaired; then call
/// [`SharedMemory::clear_poison`](crate::SharedMemory::clear_poison).
///
/// # Examples
///
/// ```
/// use typed_shm::SharedMemory;
/// # let key = format!("doc-poison-{}", std::process::id());
/// let shm = SharedMemory::<u32>::create(&key, 7)?;
/// let g = match shm.lock() {
///     Ok(g) => g,
///     Err(poisoned) => poisoned.into_inner(), // inspect or repair the data
/// };
/// assert_eq!(*g, 7);
/// # Ok::<(), typed_shm::Error>(())
/// ```
pub struct PoisonError<G> {
    guard: G,
    /// The segment's key (the poisoned path is cold: one allocation there
    /// keeps the hot path free of any).
    segment: Box<str>,
}

impl<G> PoisonError<G> {
    pub(crate) fn new(guard: G, segment: &str) -> Self {
        PoisonError {
            guard,
            segment: segment.into(),
        }
    }

    /// Takes the guard out: the lock stays held until it is dropped.
    ///
    /// # Examples
    ///
    /// See [`PoisonError`].
    pub fn into_inner(self) -> G {
        self.guard
    }

    /// A reference to the guard.
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::SharedMemory;
    /// # let key = format!("doc-poison-ref-{}", std::process::id());
    /// # let shm = SharedMemory::<u32>::create(&key, 1)?;
    /// if let Err(p) = shm.lock() {
    ///     println!("half-written value: {}", **p.get_ref());
    /// }
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn get_ref(&self) -> &G {
        &self.guard
    }

    /// A mutable reference to the guard.
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::SharedMemory;
    /// # let key = format!("doc-poison-mut-{}", std::process::id());
    /// # let shm = SharedMemory::<u32>::create(&key, 1)?;
    /// if let Err(mut p) = shm.lock() {
    ///     **p.get_mut() = 0; // repair
    /// }
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn get_mut(&mut self) -> &mut G {
        &mut self.guard
    }
}

/// Says what happened and where the guard is, without requiring `G: Debug`
/// (as `std::sync::PoisonError`): `PoisonError { segment: "stats", cause: "a
/// holder died …", guard: "inside …", .. }`.
impl<G> fmt::Debug for PoisonError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoisonError")
            .field("segment", &self.segment)
            .field(
                "cause",
                &"a holder died (killed, crashed) or panicked while holding the lock; the data may \
                  be half-written",
            )
            .field(
                "guard",
                &"inside, holding the lock: into_inner() takes it; clear_poison() once repaired",
            )
            .finish_non_exhaustive()
    }
}

impl<G> fmt::Display for PoisonError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "poisoned lock: a process or thread died or panicked while holding it, so the data \
             may be half-written; inspect it through into_inner(), then call clear_poison()",
        )
    }
}

impl<G> std::error::Error for PoisonError<G> {}

/// Why [`try_lock`](crate::SharedMemory::try_lock) or
/// [`lock_timeout`](crate::SharedMemory::lock_timeout) did not return a guard.
///
/// # Examples
///
/// ```
/// use typed_shm::{SharedMemory, TryLockError};
/// # let key = format!("doc-trylock-{}", std::process::id());
/// let shm = SharedMemory::<u32>::create(&key, 0)?;
/// let held = shm.lock().unwrap();
/// std::thread::scope(|s| {
///     s.spawn(|| assert!(matches!(shm.try_lock(), Err(TryLockError::WouldBlock))));
/// });
/// drop(held);
/// # Ok::<(), typed_shm::Error>(())
/// ```
pub enum TryLockError<G> {
    /// The lock was acquired but is poisoned; the guard is inside.
    Poisoned(PoisonError<G>),
    /// `try_lock`: another thread or process holds the lock.
    WouldBlock,
    /// `lock_timeout`: the lock was not free before the timeout.
    TimedOut,
}

impl<G> From<PoisonError<G>> for TryLockError<G> {
    fn from(e: PoisonError<G>) -> Self {
        TryLockError::Poisoned(e)
    }
}

impl<G> fmt::Debug for TryLockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryLockError::Poisoned(p) => f.debug_tuple("Poisoned").field(p).finish(),
            TryLockError::WouldBlock => f.write_str("WouldBlock"),
            TryLockError::TimedOut => f.write_str("TimedOut"),
        }
    }
}

impl<G> fmt::Display for TryLockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryLockError::Poisoned(p) => fmt::Display::fmt(p, f),
            TryLockError::WouldBlock => {
                f.write_str("the lock is held by another thread or process; try again later")
            }
            TryLockError::TimedOut => f.write_str("the lock was not released before the timeout"),
        }
    }
}

impl<G> std::error::Error for TryLockError<G> {}

/// The result of [`lock`](crate::SharedMemory::lock).
///
/// # Examples
///
/// ```
/// use typed_shm::{Guard, LockResult, SharedMemory};
/// fn read(shm: &SharedMemory<u32>) -> u32 {
///     let r: LockResult<Guard<'_, u32>> = shm.lock();
///     *r.unwrap_or_else(|p| p.into_inner())
/// }
/// # let key = format!("doc-lock-result-{}", std::process::id());
/// # let shm = SharedMemory::<u32>::create(&key, 4)?;
/// # assert_eq!(read(&shm), 4);
/// # Ok::<(), typed_shm::Error>(())
/// ```
pub type LockResult<G> = Result<G, PoisonError<G>>;

/// The result of [`try_lock`](crate::SharedMemory::try_lock) and
/// [`lock_timeout`](crate::SharedMemory::lock_timeout).
///
/// # Examples
///
/// ```
/// use typed_shm::{Guard, SharedMemory, TryLockResult};
/// # let key = format!("doc-try-lock-result-{}", std::process::id());
/// let shm = SharedMemory::<u32>::create(&key, 4)?;
/// let r: TryLockResult<Guard<'_, u32>> = shm.try_lock();
/// assert!(r.is_ok());
/// # Ok::<(), typed_shm::Error>(())
/// ```
pub type TryLockResult<G> = Result<G, TryLockError<G>>;

#[cfg(test)]
mod tests {
    use crate::{SharedMemory, TryLockError};

    #[test]
    fn poison_error_debug_says_what_happened_and_where_the_guard_is() {
        let key = format!("t{}-poison-debug", std::process::id());
        let shm = SharedMemory::<u32>::create(&key, 0).unwrap();
        let panicked = std::thread::scope(|s| {
            s.spawn(|| {
                let _g = shm.lock().unwrap();
                panic!("poisoning the lock on purpose");
            })
            .join()
        });
        assert!(panicked.is_err());

        let Err(poisoned) = shm.lock() else {
            panic!("a panic under the lock poisons it");
        };
        let debug = format!("{poisoned:?}");
        let head = format!("PoisonError {{ segment: {key:?}, cause: ");
        assert!(debug.starts_with(&head), "{debug}");
        assert!(debug.contains("died (killed, crashed) or panicked"), "{debug}");
        assert!(debug.contains("into_inner()"), "{debug}");
        assert!(debug.ends_with(", .. }"), "{debug}");
        drop(poisoned);

        let Err(TryLockError::Poisoned(p)) = shm.try_lock() else {
            panic!("the poison is sticky");
        };
        let debug = format!("{:?}", TryLockError::Poisoned(p));
        assert!(debug.starts_with(&format!("Poisoned({head}")), "{debug}");
        shm.clear_poison();
        shm.detach().unwrap();
        assert!(!std::path::Path::new(&format!("/dev/shm/tshm_{key}")).exists());
    }
}

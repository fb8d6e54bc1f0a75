//! Linux + glibc system calls.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The C type of the lock stored in the segment header.
pub(crate) type RawMutexStorage = libc::pthread_mutex_t;

/// `(size, alignment)` of `pthread_mutex_t`, recorded in the header's ABI stamp.
pub(crate) const MUTEX_SIZE: usize = std::mem::size_of::<libc::pthread_mutex_t>();
pub(crate) const MUTEX_ALIGN: usize = std::mem::align_of::<libc::pthread_mutex_t>();

/// Identifies the C library whose mutex layout the header embeds (1 = glibc).
pub(crate) const LIBC_FAMILY: u32 = 1;

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

static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
/// Seeds the thread tokens of this process (a pid would not do: processes in
/// different PID namespaces can have the same one). Random, drawn once,
/// redrawn in a child after `fork`.
static PROCESS_NONCE: AtomicU64 = AtomicU64::new(0);
/// Numbers the threads of this process, so that their tokens differ.
static NEXT_THREAD: AtomicU64 = AtomicU64::new(1);
static ATFORK: Once = Once::new();

thread_local! {
    /// This thread's token, or 0 until its first use.
    static TOKEN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// splitmix64: a bijective scrambler of 64-bit values.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

extern "C" fn after_fork_in_child() {
    let generation = FORK_GENERATION.fetch_add(1, Ordering::Relaxed) + 1;
    // SAFETY: getpid(2) is async-signal-safe, as fork requires of child
    // handlers, and cannot fail.
    let pid = unsafe { libc::getpid() } as u64;
    let nonce = PROCESS_NONCE.load(Ordering::Relaxed);
    PROCESS_NONCE.store(mix(nonce ^ mix(pid ^ (generation << 32))), Ordering::Relaxed);
    // The forking thread is the child's only thread: its token must change
    // with the nonce. The cell has no destructor, so this is a plain store.
    let _ = TOKEN.try_with(|t| t.set(0));
}

/// A number that changes in a child process after every `fork`. A handle
/// records it when it is made and refuses to use inherited OS state when it
/// differs. Also sets up what [`fork_generation_now`] and
/// [`lock_token`] rely on; call it before making a handle.
pub(crate) fn fork_generation() -> u64 {
    ATFORK.call_once(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u128(
            std::time::SystemTime::UNIX_EPOCH
                .elapsed()
                .map_or(0, |d| d.as_nanos()),
        );
        PROCESS_NONCE.store(mix(h.finish()), Ordering::Relaxed);
        // SAFETY: pthread_atfork(3) takes three optional handlers; the child
        // handler is an `extern "C" fn()` that only does atomic operations and
        // getpid(2), which are async-signal-safe as fork requires of child
        // handlers.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
        assert_eq!(rc, 0, "pthread_atfork failed: out of memory");
    });
    fork_generation_now()
}

/// [`fork_generation`] without the one-time setup: for hot paths of handles,
/// whose creation did the setup.
#[inline]
pub(crate) fn fork_generation_now() -> u64 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// A random 64-bit token naming the calling thread among all threads of all
/// processes that may share a segment (never 0; equal for two live threads
/// with probability about 2^-64 per pair). Valid after [`fork_generation`]
/// ran once.
#[inline]
pub(crate) fn lock_token() -> u64 {
    let token = TOKEN.with(std::cell::Cell::get);
    if token != 0 { token } else { new_lock_token() }
}

#[cold]
#[inline(never)]
fn new_lock_token() -> u64 {
    let n = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
    let token = mix(PROCESS_NONCE.load(Ordering::Relaxed) ^ mix(n)).max(1);
    TOKEN.with(|t| t.set(token));
    token
}

/// The result of trying to take the robust mutex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// Locked, consistent.
    Locked,
    /// Locked, but the previous owner died holding it (`EOWNERDEAD`); the
    /// mutex has already been made consistent again.
    OwnerDied,
    /// `trylock`: held by someone else.
    Busy,
    /// Timed lock: not free before the deadline.
    TimedOut,
}

unsafe extern "C" {
    // glibc 2.30+; not (yet) declared by the libc crate. Same contract as
    // pthread_mutex_timedlock, with the clock named explicitly.
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clock: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// Who holds a robust mutex, according to its lock word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Nobody.
    Free,
    /// A live thread (of any process).
    Thread,
    /// Its owner ended without unlocking; the next locker gets `EOWNERDEAD`.
    Died,
}

/// A robust, process-shared pthread mutex that lives at a
/// fixed address in a shared mapping. It does not own the memory.
pub(crate) struct RawMutex {
    ptr: *mut libc::pthread_mutex_t,
}

impl RawMutex {
    /// Initializes a mutex in place.
    ///
    /// # Safety
    ///
    /// `ptr` must be valid for writes of a `pthread_mutex_t`, suitably
    /// aligned, not in use as a mutex by anyone, and stay mapped while any
    /// `RawMutex` built on it is used.
    pub(crate) unsafe fn init(ptr: *mut libc::pthread_mutex_t) -> io::Result<()> {
        let mut attr = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: pthread_mutexattr_init(3) initializes the object at the
        // given pointer; `attr` is writable storage for one attribute object.
        let rc = unsafe { libc::pthread_mutexattr_init(attr.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        let attr = attr.as_mut_ptr();
        let set = |rc: libc::c_int| {
            if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(rc))
            }
        };
        let result = (|| {
            // SAFETY: `attr` was initialized by pthread_mutexattr_init above.
            set(unsafe { libc::pthread_mutexattr_setpshared(attr, libc::PTHREAD_PROCESS_SHARED) })?;
            // SAFETY: as above.
            set(unsafe { libc::pthread_mutexattr_setrobust(attr, libc::PTHREAD_MUTEX_ROBUST) })?;
            // SAFETY: as above.
            // The normal type: glibc's error-checking type compares the
            // owner's thread id with the caller's, and thread ids repeat
            // across PID namespaces (a locker in another container would be
            // told it holds the lock already). Relocks are caught above
            // this type, per thread.
            set(unsafe { libc::pthread_mutexattr_settype(attr, libc::PTHREAD_MUTEX_NORMAL) })?;
            // SAFETY: `ptr` is valid, aligned and unused (this fn's contract);
            // `attr` is an initialized attribute object.
            set(unsafe { libc::pthread_mutex_init(ptr, attr) })
        })();
        // SAFETY: `attr` is initialized; destroying it does not affect mutexes
        // initialized with it (pthread_mutexattr_destroy(3)).
        unsafe { libc::pthread_mutexattr_destroy(attr) };
        result
    }

    /// # Safety
    ///
    /// `ptr` must point to a mutex initialized by [`RawMutex::init`] (in any
    /// process) that stays mapped for as long as the returned value is used.
    #[inline]
    pub(crate) unsafe fn from_ptr(ptr: *mut libc::pthread_mutex_t) -> Self {
        RawMutex { ptr }
    }

    #[inline]
    fn acquired(&self, rc: libc::c_int, call: &'static str) -> Acquired {
        if rc == 0 {
            Acquired::Locked
        } else {
            self.acquired_slow(rc, call)
        }
    }

    #[cold]
    #[inline(never)]
    fn acquired_slow(&self, rc: libc::c_int, call: &'static str) -> Acquired {
        match rc {
            libc::EOWNERDEAD => {
                // Make it consistent at once: a robust mutex unlocked while
                // inconsistent becomes ENOTRECOVERABLE for everyone.
                // SAFETY: pthread_mutex_consistent(3) requires a robust mutex
                // that the caller holds after EOWNERDEAD; both hold here.
                let rc = unsafe { libc::pthread_mutex_consistent(self.ptr) };
                assert_eq!(rc, 0, "pthread_mutex_consistent failed with error {rc}");
                Acquired::OwnerDied
            }
            libc::EBUSY => Acquired::Busy,
            libc::ETIMEDOUT => Acquired::TimedOut,
            rc => panic!(
                "typed-shm: {call} on the segment's lock failed with error {rc} ({}); \
                 the segment's lock is unusable",
                io::Error::from_raw_os_error(rc)
            ),
        }
    }

    #[inline]
    pub(crate) fn lock(&self) -> Acquired {
        // SAFETY: `self.ptr` points to an initialized, mapped mutex
        // (from_ptr's contract); pthread_mutex_lock(3) has no other
        // precondition.
        let rc = unsafe { libc::pthread_mutex_lock(self.ptr) };
        self.acquired(rc, "pthread_mutex_lock")
    }

    #[inline]
    pub(crate) fn try_lock(&self) -> Acquired {
        // SAFETY: as in `lock`.
        let rc = unsafe { libc::pthread_mutex_trylock(self.ptr) };
        // glibc's trylock of a robust error-checking mutex answers EDEADLK to
        // the thread that holds it; for a trylock that just means "held".
        if rc == libc::EDEADLK {
            return Acquired::Busy;
        }
        self.acquired(rc, "pthread_mutex_trylock")
    }

    /// Waits at most `timeout`, measured on `CLOCK_MONOTONIC` (immune to
    /// changes of the wall clock).
    pub(crate) fn lock_timeout(&self, timeout: Duration) -> Acquired {
        let mut now = MaybeUninit::<libc::timespec>::uninit();
        // SAFETY: clock_gettime(2) requires a valid clock id and writable
        // storage for one timespec.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, now.as_mut_ptr()) };
        assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
        // SAFETY: clock_gettime returned 0, so it filled in the timespec.
        let now = unsafe { now.assume_init() };
        let deadline = add_timespec(now, timeout);
        // SAFETY: as in `lock`; `deadline` is a valid timespec (tv_nsec in
        // 0..1e9) on CLOCK_MONOTONIC, as pthread_mutex_clocklock(3) requires.
        let rc = unsafe { pthread_mutex_clocklock(self.ptr, libc::CLOCK_MONOTONIC, &deadline) };
        self.acquired(rc, "pthread_mutex_clocklock")
    }

    /// What the lock word says about the owner. glibc keeps the kernel's
    /// robust futex word as the first `int` of a robust `pthread_mutex_t`
    /// (the ABI stamp pins glibc): the owner's thread id, or 0, plus
    /// `FUTEX_OWNER_DIED`, which the kernel sets when an owner ends without
    /// unlocking (futex(2), "Robust futexes").
    #[inline]
    pub(crate) fn owner(&self) -> Owner {
        // SAFETY: AtomicU32::from_ptr requires a 4-aligned pointer valid for
        // the lifetime of the reference and only accessed atomically meanwhile:
        // the mutex is 8-aligned and mapped while `self` is used (from_ptr's
        // contract), and glibc and the kernel access the word only atomically.
        let word =
            unsafe { std::sync::atomic::AtomicU32::from_ptr(self.ptr.cast::<u32>()) }.load(Ordering::Acquire);
        if word & libc::FUTEX_OWNER_DIED != 0 {
            Owner::Died
        } else if word & libc::FUTEX_TID_MASK == 0 {
            Owner::Free
        } else {
            Owner::Thread
        }
    }

    /// # Safety
    ///
    /// The calling thread must hold the mutex.
    #[inline]
    pub(crate) unsafe fn unlock(&self) {
        // SAFETY: the mutex is initialized and mapped (from_ptr's contract)
        // and held by this thread (this fn's contract), as
        // pthread_mutex_unlock(3) requires.
        let rc = unsafe { libc::pthread_mutex_unlock(self.ptr) };
        debug_assert_eq!(rc, 0, "pthread_mutex_unlock failed with error {rc}");
    }
}

fn add_timespec(t: libc::timespec, d: Duration) -> libc::timespec {
    let mut sec = t
        .tv_sec
        .saturating_add(libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX));
    let mut nsec = t.tv_nsec + libc::c_long::from(d.subsec_nanos() as i32);
    if nsec >= 1_000_000_000 {
        nsec -= 1_000_000_000;
        sec = sec.saturating_add(1);
    }
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespec_addition_carries_nanoseconds() {
        let t = libc::timespec {
            tv_sec: 5,
            tv_nsec: 900_000_000,
        };
        let r = add_timespec(t, Duration::from_millis(250));
        assert_eq!((r.tv_sec, r.tv_nsec), (6, 150_000_000));
        let r = add_timespec(t, Duration::MAX);
        assert_eq!(r.tv_sec, libc::time_t::MAX);
        assert!(r.tv_nsec < 1_000_000_000);
    }
}

//! The floor: the same work written directly against libc.
//!
//! A named POSIX shared memory object (`shm_open` + `ftruncate` + `mmap`)
//! laid out like a typed-shm segment — one header page that holds a robust,
//! process-shared pthread mutex, then the data on the next page boundary —
//! and nothing else: no header validation, no type check, no attach
//! counting, no poison flag. This is what the library would cost if it added
//! nothing on top of the OS primitives, so every typed-shm number is reported
//! as a ratio to it.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::mem::MaybeUninit;
use std::ptr::{self, NonNull};

/// The size of the header page that holds the mutex.
pub const HEADER: usize = 4096;

/// A mapped, named shared memory object: bytes only.
pub struct Segment {
    ptr: NonNull<u8>,
    len: usize,
    name: CString,
    owner: bool,
}

// SAFETY: `Segment` only holds the address and length of a `MAP_SHARED`
// mapping; the mapping is valid from any thread of the process, and all
// access to the bytes goes through raw pointers guarded by the callers.
unsafe impl Send for Segment {}
// SAFETY: as above; `&Segment` gives out raw pointers only.
unsafe impl Sync for Segment {}

/// `/{name}` as a C string.
pub fn os_name(name: &str) -> CString {
    CString::new(format!("/{name}")).expect("segment names have no NUL")
}

fn last_os_error(what: &str) -> ! {
    panic!("{what}: {}", std::io::Error::last_os_error())
}

impl Segment {
    /// Creates the object `/{name}` with `len` zeroed bytes and maps it.
    ///
    /// # Panics
    ///
    /// On any OS error (a benchmark cannot go on without its segment).
    pub fn create(name: &str, len: usize) -> Segment {
        let name = os_name(name);
        // SAFETY: shm_open(3): `name` is a valid NUL-terminated string (a
        // `CString`); the flags and mode are valid constants. O_EXCL makes the
        // call fail instead of reusing an existing object.
        let fd = unsafe { libc::shm_open(name.as_ptr(), libc::O_CREAT | libc::O_EXCL | libc::O_RDWR, 0o600) };
        if fd < 0 {
            last_os_error("shm_open(O_CREAT | O_EXCL)");
        }
        let size = libc::off_t::try_from(len).expect("segment size fits off_t");
        // SAFETY: ftruncate(2): `fd` is an open file descriptor returned by
        // shm_open above, opened O_RDWR; a new object's added bytes read as
        // zero (POSIX: "the extended area shall appear as if it were
        // zero-filled").
        if unsafe { libc::ftruncate(fd, size) } != 0 {
            let err = std::io::Error::last_os_error();
            unlink_and_close(&name, fd);
            panic!("ftruncate: {err}");
        }
        let ptr = map(fd, len);
        close(fd);
        Segment {
            ptr,
            len,
            name,
            owner: true,
        }
    }

    /// Opens the existing object `/{name}` and maps all of it.
    ///
    /// # Panics
    ///
    /// On any OS error.
    pub fn attach(name: &str) -> Segment {
        let name = os_name(name);
        // SAFETY: shm_open(3): `name` is a valid NUL-terminated string; the
        // flags are valid constants; the mode is ignored without O_CREAT.
        let fd = unsafe { libc::shm_open(name.as_ptr(), libc::O_RDWR, 0) };
        if fd < 0 {
            last_os_error("shm_open(O_RDWR)");
        }
        let mut st = MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat(2): `fd` is open; `st` points to writable memory large
        // enough for a `struct stat`.
        if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
            let err = std::io::Error::last_os_error();
            close(fd);
            panic!("fstat: {err}");
        }
        // SAFETY: fstat returned 0, so it filled in the whole `struct stat`.
        let st = unsafe { st.assume_init() };
        let len = usize::try_from(st.st_size).expect("object size fits usize");
        let ptr = map(fd, len);
        close(fd);
        Segment {
            ptr,
            len,
            name,
            owner: false,
        }
    }

    /// The first byte of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The mapped length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: munmap(2): `ptr`/`len` are exactly a mapping that mmap
        // returned and that is still mapped (only this `Drop` unmaps it); no
        // reference into it outlives the `Segment` (callers borrow it).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        if self.owner {
            // SAFETY: shm_unlink(3): `name` is a valid NUL-terminated string.
            unsafe { libc::shm_unlink(self.name.as_ptr()) };
        }
    }
}

/// Maps `len` bytes of `fd` read-write and shared; closes `fd` and panics on
/// failure.
pub fn map(fd: libc::c_int, len: usize) -> NonNull<u8> {
    // SAFETY: mmap(2): a NULL hint lets the kernel choose the address; `len`
    // is non-zero (every segment has at least one byte) and `fd` is an open
    // O_RDWR descriptor, which PROT_READ | PROT_WRITE with MAP_SHARED needs.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        let err = std::io::Error::last_os_error();
        close(fd);
        panic!("mmap: {err}");
    }
    NonNull::new(p.cast()).expect("mmap does not return NULL on success")
}

/// Closes `fd`, which the caller owns.
pub fn close(fd: libc::c_int) {
    // SAFETY: close(2): `fd` is an open descriptor owned by the caller and not
    // used after this call.
    unsafe { libc::close(fd) };
}

fn unlink_and_close(name: &CString, fd: libc::c_int) {
    // SAFETY: shm_unlink(3): `name` is a valid NUL-terminated string.
    unsafe { libc::shm_unlink(name.as_ptr()) };
    close(fd);
}

/// A robust, process-shared pthread mutex living in a mapping.
pub struct RobustMutex {
    m: *mut libc::pthread_mutex_t,
}

impl RobustMutex {
    /// Initializes a mutex at `at`.
    ///
    /// # Safety
    ///
    /// `at` must be valid for writes of a `pthread_mutex_t`, suitably
    /// aligned, stay mapped as long as the returned value is used, hold
    /// zeroed memory that no other thread or process uses as a mutex yet.
    pub unsafe fn init(at: *mut u8) -> RobustMutex {
        let m = at.cast::<libc::pthread_mutex_t>();
        let mut attr = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: pthread_mutexattr_init(3p): `attr` points to writable
        // storage for a `pthread_mutexattr_t`; initializing uninitialized
        // storage is what this call is for.
        check("pthread_mutexattr_init", unsafe {
            libc::pthread_mutexattr_init(attr.as_mut_ptr())
        });
        // SAFETY: pthread_mutexattr_setpshared(3p): `attr` was initialized by
        // pthread_mutexattr_init above; PTHREAD_PROCESS_SHARED is a valid value.
        check("pthread_mutexattr_setpshared", unsafe {
            libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED)
        });
        // SAFETY: pthread_mutexattr_setrobust(3p): `attr` is initialized;
        // PTHREAD_MUTEX_ROBUST is a valid value.
        check("pthread_mutexattr_setrobust", unsafe {
            libc::pthread_mutexattr_setrobust(attr.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST)
        });
        // SAFETY: pthread_mutex_init(3p): `m` is valid, aligned storage that
        // is not an initialized mutex in use (the caller's contract: fresh,
        // zeroed memory); `attr` is an initialized attributes object.
        check("pthread_mutex_init", unsafe {
            libc::pthread_mutex_init(m, attr.as_ptr())
        });
        // SAFETY: pthread_mutexattr_destroy(3p): `attr` is initialized and no
        // longer needed ("destroying the attributes object does not affect
        // mutexes initialized with it").
        unsafe { libc::pthread_mutexattr_destroy(attr.as_mut_ptr()) };
        RobustMutex { m }
    }

    /// Uses the mutex that another handle initialized at `at`.
    ///
    /// # Safety
    ///
    /// `at` must point to a mutex initialized by [`RobustMutex::init`] in a
    /// mapping of the same object, which stays mapped as long as the returned
    /// value is used.
    pub unsafe fn existing(at: *mut u8) -> RobustMutex {
        RobustMutex { m: at.cast() }
    }

    /// Locks; a dead owner is recovered with `pthread_mutex_consistent`, as a
    /// robust mutex requires.
    ///
    /// # Panics
    ///
    /// On any other error.
    #[inline]
    pub fn lock(&self) {
        // SAFETY: pthread_mutex_lock(3p): `m` is an initialized mutex in a
        // live mapping (the contract of `init`/`existing`).
        let rc = unsafe { libc::pthread_mutex_lock(self.m) };
        if rc != 0 {
            self.recover(rc);
        }
    }

    /// `pthread_mutex_trylock`: 0 (acquired), `EBUSY` or `EOWNERDEAD` (then
    /// acquired, and [`RobustMutex::recover`] must follow at once).
    #[inline]
    pub fn try_lock(&self) -> libc::c_int {
        // SAFETY: pthread_mutex_trylock(3p): `m` is an initialized mutex in a
        // live mapping (the contract of `init`/`existing`).
        unsafe { libc::pthread_mutex_trylock(self.m) }
    }

    /// After a `lock` or `try_lock` that returned `rc` other than 0 and
    /// `EBUSY`: makes the mutex consistent again.
    ///
    /// # Panics
    ///
    /// If `rc` is not `EOWNERDEAD`.
    #[cold]
    #[inline(never)]
    pub fn recover(&self, rc: libc::c_int) {
        assert_eq!(rc, libc::EOWNERDEAD, "pthread_mutex_lock failed: {rc}");
        // SAFETY: pthread_mutex_consistent(3p): the mutex is robust and the
        // calling thread holds it after EOWNERDEAD, which is exactly the
        // state the call requires.
        check("pthread_mutex_consistent", unsafe {
            libc::pthread_mutex_consistent(self.m)
        });
    }

    /// Unlocks a mutex the calling thread holds.
    #[inline]
    pub fn unlock(&self) {
        let rc = self.unlock_rc();
        debug_assert_eq!(rc, 0);
    }

    /// Unlocks a mutex the calling thread holds; returns what
    /// `pthread_mutex_unlock` returned.
    #[inline]
    pub fn unlock_rc(&self) -> libc::c_int {
        // SAFETY: pthread_mutex_unlock(3p): `m` is initialized and held by the
        // calling thread (every unlock pairs with a lock in the same thread
        // in the callers in this directory).
        unsafe { libc::pthread_mutex_unlock(self.m) }
    }
}

fn check(what: &str, rc: libc::c_int) {
    assert_eq!(rc, 0, "{what} failed: {rc}");
}

/// The floor for a `T` protected by a lock: a [`Segment`] whose header page
/// holds a [`RobustMutex`] and whose data starts at [`HEADER`].
pub struct Locked {
    mutex: RobustMutex,
    data: *mut u8,
    data_len: usize,
    // Kept alive for the mutex and data pointers; unmapped on drop.
    seg: Segment,
}

// SAFETY: the mutex pointer points into `seg`, which is `Send`; the mutex is
// process-shared, so any thread may lock it.
unsafe impl Send for Locked {}

impl Locked {
    /// Creates the segment (`data_len` zeroed bytes, at least 64) and
    /// initializes its mutex.
    pub fn create(name: &str, data_len: usize) -> Locked {
        assert!(data_len >= 64, "the data holds at least a [u64; 8]");
        let seg = Segment::create(name, HEADER + data_len);
        // SAFETY: the header page is freshly created, zero-filled, page
        // aligned (so aligned for a mutex), larger than `pthread_mutex_t`, and
        // nobody else uses it yet; it stays mapped as long as `seg`, which
        // `Locked` owns next to the mutex.
        let mutex = unsafe { RobustMutex::init(seg.as_ptr()) };
        Locked {
            mutex,
            data: seg.as_ptr().wrapping_add(HEADER),
            data_len,
            seg,
        }
    }

    /// Attaches to a segment made by [`Locked::create`].
    pub fn attach(name: &str) -> Locked {
        let seg = Segment::attach(name);
        let data_len = seg.len().checked_sub(HEADER).expect("segment has a header page");
        assert!(data_len >= 64, "the data holds at least a [u64; 8]");
        // SAFETY: the creator initialized the mutex at offset 0 before the
        // name was handed to anyone; `seg` keeps it mapped.
        let mutex = unsafe { RobustMutex::existing(seg.as_ptr()) };
        Locked {
            mutex,
            data: seg.as_ptr().wrapping_add(HEADER),
            data_len,
            seg,
        }
    }

    /// Runs `f` on the data bytes with the lock held.
    #[inline]
    pub fn with_bytes<R>(&self, f: impl FnOnce(&mut [u8]) -> R) -> R {
        self.mutex.lock();
        // SAFETY: the data region `[HEADER, HEADER + data_len)` lies inside
        // the mapping and is valid for reads and writes; the lock is held, so
        // no other user of this protocol touches it while the slice lives
        // (the slice does not escape `f`).
        let data = unsafe { std::slice::from_raw_parts_mut(self.data, self.data_len) };
        let r = f(data);
        self.mutex.unlock();
        r
    }

    /// Runs `f` on the data as `[u64; 8]` with the lock held.
    #[inline]
    pub fn with_cell<R>(&self, f: impl FnOnce(&mut [u64; 8]) -> R) -> R {
        self.mutex.lock();
        // SAFETY: the data starts on a page boundary (aligned for u64) and is
        // at least 64 bytes (checked by `create`/`attach`); every
        // bit pattern is a valid `[u64; 8]`; the lock is held while the
        // reference lives.
        let cell = unsafe { &mut *self.data.cast::<[u64; 8]>() };
        let r = f(cell);
        self.mutex.unlock();
        r
    }

    /// Locks and unlocks, nothing else.
    #[inline]
    pub fn lock_unlock(&self) {
        self.mutex.lock();
        self.mutex.unlock();
    }

    /// The mutex at the start of the header page.
    pub fn mutex(&self) -> &RobustMutex {
        &self.mutex
    }

    /// The first byte of the header page (the mutex lives at its start; the
    /// rest of the page is zeroed and free for the floors that add a word of
    /// their own to it).
    pub fn header(&self) -> *mut u8 {
        self.seg.as_ptr()
    }

    /// The first data byte (page aligned).
    pub fn data(&self) -> *mut u8 {
        self.data
    }
}

/// Plain `memcpy` of `src` to the start of `seg`, no lock.
///
/// # Panics
///
/// If `src` is longer than the mapping.
#[inline]
pub fn copy_into(seg: &Segment, src: &[u8]) {
    assert!(src.len() <= seg.len(), "source longer than the mapping");
    // SAFETY: copy_nonoverlapping: `src` is valid for reads of `src.len()`
    // bytes (a slice); the mapping is valid for writes of `seg.len()` >=
    // `src.len()` bytes; a fresh heap slice and a shared mapping do not
    // overlap; u8 needs no alignment.
    unsafe { ptr::copy_nonoverlapping(src.as_ptr(), seg.as_ptr(), src.len()) };
}

//! [`SharedMemory`]: a typed handle to a named shared-memory segment.
#![allow(unsafe_code)]

use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::Duration;

use crate::data::{Access, ReadOnly, ReadWrite, ShmData};
use crate::error::{Error, LockResult, PoisonError, TryLockError, TryLockResult};
use crate::guard::Guard;
use crate::header::Expected;
use crate::segment::{Segment, Settings};
use crate::shm_safe::ShmSafe;
use crate::sync::{Outcome, ShmMutex};
use crate::sys;
use crate::txn::PrivateBuf;

/// Default mode bits of a new segment: read-write for its owner only.
///
/// # Examples
///
/// ```
/// use std::os::unix::fs::PermissionsExt;
/// use typed_shm::{DEFAULT_MODE, SharedMemory};
/// # let key = format!("doc-default-mode-{}", std::process::id());
/// let shm = SharedMemory::<u8>::create(&key, 0)?;
/// let meta = std::fs::metadata(format!("/dev/shm{}", shm.native_key())).unwrap();
/// assert_eq!(meta.permissions().mode() & 0o777, DEFAULT_MODE);
/// # Ok::<(), typed_shm::Error>(())
/// ```
pub const DEFAULT_MODE: u32 = 0o600;
/// Default time `attach` waits for a creator to finish initializing.
///
/// # Examples
///
/// ```
/// assert_eq!(typed_shm::DEFAULT_TIMEOUT, std::time::Duration::from_secs(5));
/// ```
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether every byte of `value` is zero: what the data of a newly created
/// object holds already (posix_fallocate(3) reserves zero-filled blocks of a
/// new, empty file), so writing it would only fault pages in.
fn is_zero<T: ShmSafe>(value: &T) -> bool {
    bytemuck::bytes_of(value).iter().all(|&b| b == 0)
}

fn expected<T: ?Sized + ShmData>(transactional: bool) -> Result<Expected, Error> {
    let mut desc = String::new();
    <T::Element as ShmSafe>::write_layout(&mut desc);
    let pid_ns = sys::pid_namespace().map_err(|e| {
        Error::with_source(
            crate::ErrorKind::LockError,
            format!(
                "cannot tell this process's PID namespace from /proc/self/ns/pid ({e}); every \
                 process that shares a segment must be in the creator's PID namespace, which \
                 needs /proc mounted to check"
            ),
            e,
        )
    })?;
    Ok(Expected {
        fingerprint: <T::Element as ShmSafe>::FINGERPRINT,
        elem_size: size_of::<T::Element>(),
        elem_align: align_of::<T::Element>(),
        slice: T::IS_SLICE,
        desc,
        page_size: sys::page_size(),
        pid_ns,
        transactional,
        layout: <T::Element as ShmSafe>::LAYOUT,
    })
}

/// A handle to a named shared-memory segment that holds a `T` — or, for
/// `T = [E]`, a slice whose length is chosen at creation.
///
/// The data is reachable only through a [`Guard`], which holds the segment's
/// lock: a robust, process-shared mutex stored in the segment's header. Every
/// process that attaches gets its own handle; threads of one process share a
/// handle (`SharedMemory` is `Send + Sync`).
///
/// The segment is removed when the last handle, in any process, is dropped or
/// [detached](SharedMemory::detach) — also when some of the attached processes
/// were killed without detaching. A segment of the same type left behind by
/// processes that all died is reclaimed by the next
/// [`create`](SharedMemory::create) or
/// [`open_or_create`](SharedMemory::open_or_create) of its key; any other file
/// under the key (foreign, another type, a bad header) is left untouched.
///
/// # Trust model
///
/// Memory safety rests on: `T: ShmSafe` (every byte pattern is a valid `T`,
/// so no peer can store an invalid value); references into the data exist only
/// inside a guard, while the lock is held; the header is validated before use;
/// segments are created with mode `0600`, so other users cannot open them. What
/// remains is trust in the processes that can write the segment: each must use
/// this library's protocol. A process that truncates the object can make
/// readers fault (SIGBUS): named POSIX shared-memory objects cannot be sealed
/// on Linux.
///
/// # Examples
///
/// ```
/// use typed_shm::SharedMemory;
/// # let key = format!("doc-shm-{}", std::process::id());
/// let counter = SharedMemory::<u64>::create(&key, 0)?;
/// // In another process: SharedMemory::<u64>::attach(&key)?
/// let peer = SharedMemory::<u64>::attach(&key)?;
/// *counter.lock().unwrap() += 1;
/// assert_eq!(*peer.lock().unwrap(), 1);
/// assert_eq!(counter.attach_count(), 2);
/// # Ok::<(), typed_shm::Error>(())
/// ```
///
/// A type that is not [`ShmSafe`] is refused at compile time (`bool` could be
/// read back as 2 after another process stored any byte in it):
///
/// ```compile_fail
/// let flag = typed_shm::SharedMemory::<bool>::create("flag", true);
/// ```
pub struct SharedMemory<T: ?Sized + ShmData, A: Access = ReadWrite> {
    mutex: ShmMutex,
    data: NonNull<T>,
    segment: Segment,
    _access: PhantomData<A>,
}

// SAFETY: the handle owns its mappings and file descriptor, none of which is
// tied to a thread (OFD locks belong to the open file description, not to a
// thread or process). The data is only reached through guards, which hold the
// process-shared mutex, so moving the handle to another thread is like moving
// a `Mutex<T>`: sound when `T: Send`.
unsafe impl<T: ?Sized + ShmData + Send, A: Access> Send for SharedMemory<T, A> {}
// SAFETY: shared references allow only locking (the mutex serializes access
// to the data, like `Mutex<T>`, which is `Sync` when `T: Send`) and reading
// header fields, which are atomics.
unsafe impl<T: ?Sized + ShmData + Send, A: Access> Sync for SharedMemory<T, A> {}

impl<T: ?Sized + ShmData, A: Access> SharedMemory<T, A> {
    fn from_segment(segment: Segment) -> Self {
        let buffers = segment.buffers();
        let private = if A::WRITABLE && buffers.is_some() {
            // The length was validated to fit this address space.
            let buf = PrivateBuf::new(segment.data_len(), align_of::<T::Element>());
            Some(buf.expect("a validated data length has a valid layout"))
        } else {
            None
        };
        // SAFETY: ShmMutex::new requires:
        // - the mutex was initialized as a robust mutex by the creator before
        //   it published READY, and this handle validated the header;
        // - the holder, poisoned and sequence-line words are the header
        //   fields that go with it, aligned (offsets pinned in `header`), and
        //   every process accesses them only atomically;
        // - they stay mapped while `segment` lives, and `segment` outlives
        //   `mutex`: both are fields of `Self`, `mutex` is declared (so
        //   dropped) first, and a mapping whose lock may be held is never
        //   unmapped;
        // - for a transactional segment, the two buffers are the segment's:
        //   page aligned, `data_len()` bytes each, inside
        //   the mapping (validated), mapped read-write for a `ReadWrite`
        //   handle.
        let mutex = unsafe {
            ShmMutex::new(
                segment.in_place(),
                segment.key(),
                segment.fork_generation(),
                buffers,
                segment.data_len(),
                private,
            )
        };
        let data = T::from_raw_parts(segment.data_ptr().cast(), segment.elem_count());
        SharedMemory {
            mutex,
            data: NonNull::new(data).expect("a mapping is never at address 0"),
            segment,
            _access: PhantomData,
        }
    }

    /// The lock, with the header words it owns (for the readers in
    /// `snapshot`).
    #[inline]
    pub(crate) fn mutex(&self) -> &ShmMutex {
        &self.mutex
    }

    /// The start of the data: page aligned, `size()` bytes, mapped while
    /// `self` lives.
    #[inline]
    pub(crate) fn data_start(&self) -> *const u8 {
        self.data.as_ptr().cast::<u8>().cast_const()
    }

    /// For a guard of a transactional segment (the lock is held): the
    /// committed buffer.
    #[inline]
    fn txn_pointers(&self) -> NonNull<T> {
        let seq = self.mutex.seq().load(std::sync::atomic::Ordering::Relaxed);
        let (committed, _) = self.mutex.txn_buffers(seq).expect("a transactional segment");
        let len = self.segment.elem_count();
        let at = |p: *mut u8| NonNull::new(T::from_raw_parts(p.cast(), len)).expect("never at address 0");
        at(committed)
    }

    /// Whether the segment is transactional (chosen by its creator with
    /// [`Options::transactional`]): a write guard's changes become visible
    /// only when it is dropped normally, and a writer that panics or dies
    /// leaves the last committed value, unpoisoned.
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::SharedMemory;
    /// # let key = format!("doc-is-txn-{}", std::process::id());
    /// let shm = SharedMemory::<u64>::options().transactional(true).create(&key, 0)?;
    /// let peer = SharedMemory::<u64>::attach(&key)?; // learns it from the header
    /// assert!(shm.is_transactional() && peer.is_transactional());
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn is_transactional(&self) -> bool {
        self.mutex.is_transactional()
    }

    #[inline]
    fn check_not_inherited(&self) {
        #[cold]
        #[inline(never)]
        fn inherited(key: &str) -> ! {
            panic!(
                "typed-shm: the handle to segment {key:?} was inherited across fork(); a child \
                 process must attach to the segment itself"
            );
        }
        if self.segment.is_inherited() {
            inherited(self.segment.key());
        }
    }

    /// The key given by the user.
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::SharedMemory;
    /// # let key = format!("doc-key-{}", std::process::id());
    /// let shm = SharedMemory::<u8>::create(&key, 0)?;
    /// assert_eq!(shm.key(), key);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn key(&self) -> &str {
        self.segment.key()
    }

    /// The OS object's name, for peers not written with this crate: a
    /// [POSIX shared-memory name](https://man7.org/linux/man-pages/man3/shm_open.3.html)
    /// such as `/tshm_telemetry`, visible as `/dev/shm/tshm_telemetry`. See
    /// the crate documentation for how it is derived from the key.
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::SharedMemory;
    /// # let key = format!("doc-native-key-{}", std::process::id());
    /// let shm = SharedMemory::<u8>::create(&key, 0)?;
    /// assert_eq!(shm.native_key(), format!("/tshm_{key}"));
    /// assert!(std::path::Path::new(&format!("/dev/shm/tshm_{key}")).exists());
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn native_key(&self) -> &str {
        self.segment.native_key()
    }

    /// Bytes of shared data: `size_of::<T>()`, or `len * size_of::<E>()` for a
    /// slice. Exact, not rounded to pages.
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::SharedMemory;
    /// # let key = format!("doc-size-{}", std::process::id());
    /// let shm = SharedMemory::<[u32; 3]>::create(&key, [0; 3])?;
    /// assert_eq!(shm.size(), 12);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn size(&self) -> usize {
        self.segment.data_len()
    }

    /// Number of elements: the slice length, or 1 for a single `T`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::SharedMemory;
    /// # let key = format!("doc-len-{}", std::process::id());
    /// let shm = SharedMemory::<[f64]>::create_slice(&key, 1000, 0.0)?;
    /// assert_eq!(shm.len(), 1000);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.segment.elem_count()
    }

    /// Always `false`: a segment holds at least one byte (zero-sized data is
    /// refused with [`ErrorKind::InvalidSize`](crate::ErrorKind::InvalidSize)).
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::SharedMemory;
    /// # let key = format!("doc-empty-{}", std::process::id());
    /// let shm = SharedMemory::<[u8]>::create_slice(&key, 1, 0)?;
    /// assert!(!shm.is_empty());
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.segment.elem_count() == 0
    }

    /// Live attachments to this segment in all processes, this handle
    /// included. Handles of processes that died are not counted.
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::SharedMemory;
    /// # let key = format!("doc-count-{}", std::process::id());
    /// let a = SharedMemory::<u8>::create(&key, 0)?;
    /// assert_eq!(a.attach_count(), 1);
    /// let b = SharedMemory::<u8>::attach(&key)?;
    /// assert_eq!(a.attach_count(), 2);
    /// drop(b);
    /// assert_eq!(a.attach_count(), 1);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn attach_count(&self) -> usize {
        self.segment.attach_count()
    }

    /// Whether this handle created the segment (as opposed to attaching).
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::SharedMemory;
    /// # let key = format!("doc-created-{}", std::process::id());
    /// let a = SharedMemory::<u8>::open_or_create(&key, || 0)?;
    /// let b = SharedMemory::<u8>::open_or_create(&key, || 0)?;
    /// assert!(a.created() && !b.created());
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn created(&self) -> bool {
        self.segment.created()
    }

    /// Locks the segment, waiting as long as it takes, and returns a guard.
    ///
    /// A lock that another thread or process holds is watched for a few
    /// microseconds before the caller sleeps (in the kernel, until the
    /// holder unlocks): short critical sections then hand over without a
    /// system call on either side.
    ///
    /// # Errors
    ///
    /// `Err(PoisonError)` — which still holds the lock and the guard — when a
    /// previous holder died or panicked while holding it, and until
    /// [`clear_poison`](Self::clear_poison) is called.
    ///
    /// # Panics
    ///
    /// If the calling thread already holds this segment's lock (a relock would
    /// deadlock), if the handle was inherited across `fork()`, or if the OS
    /// reports a failure of the lock itself.
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::SharedMemory;
    /// # let key = format!("doc-lock-{}", std::process::id());
    /// let shm = SharedMemory::<u32>::create(&key, 1)?;
    /// let mut g = shm.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    /// *g *= 10;
    /// # drop(g);
    /// # assert_eq!(*shm.lock().unwrap(), 10);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    #[inline(always)]
    pub fn lock(&self) -> LockResult<Guard<'_, T, A>> {
        // One load of the handle's flags picks the path, and the guard.
        let plain = self.mutex.is_plain();
        let outcome = if plain {
            self.mutex.lock()
        } else {
            self.lock_detour()
        };
        let guard = || {
            if plain {
                self.plain_guard()
            } else {
                self.held_guard()
            }
        };
        match outcome {
            Outcome::Locked => Ok(guard()),
            // A blocking lock returns only when it holds the lock.
            _ => Err(self.poisoned(guard())),
        }
    }

    /// The acquisition of `lock` for a handle inherited across `fork`
    /// (which panics) or of a transactional segment.
    #[inline(never)]
    fn lock_detour(&self) -> Outcome {
        self.check_not_inherited();
        self.mutex.lock()
    }

    /// The error of an acquisition or a snapshot that found the segment
    /// poisoned, holding `guard` (a guard, or a copy of the data); out of
    /// line, so that the common paths stay small.
    #[cold]
    #[inline(never)]
    pub(crate) fn poisoned<G>(&self, guard: G) -> PoisonError<G> {
        PoisonError::new(guard, self.key())
    }

    /// The guard of a lock that this thread has just acquired through a
    /// handle that [`is_plain`](ShmMutex::is_plain) (so not transactional).
    #[inline(always)]
    fn plain_guard(&self) -> Guard<'_, T, A> {
        // SAFETY: as in `held_guard`, for a segment that is not
        // transactional.
        unsafe { Guard::new(&self.mutex, self.data, false) }
    }

    /// The guard of a lock that this thread has just acquired.
    #[inline(always)]
    fn held_guard(&self) -> Guard<'_, T, A> {
        let (data, txn) = if self.mutex.is_transactional() {
            (self.txn_pointers(), A::WRITABLE)
        } else {
            (self.data, false)
        };
        // SAFETY: Guard::new requires:
        // - that this thread has just acquired `mutex`: this fn's callers
        //   call it only after an acquisition (`Outcome::Locked` or
        //   `Outcome::Poisoned`);
        // - that `data` points to the data `mutex` guards, valid and aligned
        //   for `T` while the borrow of `self` lasts, and writable if `A` is:
        //   it points into this handle's mapping (validated length,
        //   page-aligned start), which lives as long as `self`, mapped
        //   PROT_READ only for `ReadOnly` handles (for a transactional
        //   segment: the committed buffer, which does not change while the
        //   lock is held);
        // - `txn` only for a write handle of a transactional segment, whose
        //   mutex has its own private buffer, of the data's size, aligned
        //   for `T`, used only by the lock's holder.
        unsafe { Guard::new(&self.mutex, data, txn) }
    }

    #[inline(always)]
    fn guard(&self, outcome: Outcome) -> TryLockResult<Guard<'_, T, A>> {
        match outcome {
            Outcome::Locked => Ok(self.held_guard()),
            Outcome::Poisoned => Err(TryLockError::Poisoned(self.poisoned(self.held_guard()))),
            Outcome::WouldBlock => Err(TryLockError::WouldBlock),
            Outcome::TimedOut => Err(TryLockError::TimedOut),
        }
    }

    /// Locks the segment if it is free right now.
    ///
    /// # Errors
    ///
    /// [`TryLockError::WouldBlock`] when another thread or process holds the
    /// lock; [`TryLockError::Poisoned`] as for [`lock`](Self::lock).
    ///
    /// # Panics
    ///
    /// As for [`lock`](Self::lock), except that a relock by the holding thread
    /// reports `WouldBlock`.
    ///
    /// # Examples
    ///
    /// ```
    /// use typed_shm::{SharedMemory, TryLockError};
    /// # let key = format!("doc-try-lock-{}", std::process::id());
    /// let shm = SharedMemory::<u32>::create(&key, 0)?;
    /// match shm.try_lock() {
    ///     Ok(mut g) => *g += 1,
    ///     Err(TryLockError::WouldBlock) => println!("busy, try later"),
    ///     Err(e) => panic!("{e}"),
    /// }
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    #[inline(always)]
    pub fn try_lock(&self) -> TryLockResult<Guard<'_, T, A>> {
        let plain = self.mutex.is_plain();
        let outcome = if plain {
            self.mutex.try_lock()
        } else {
            self.try_lock_detour()
        };
        match outcome {
            Outcome::Locked if plain => Ok(self.plain_guard()),
            outcome => self.guard(outcome),
        }
    }

    /// The acquisition of `try_lock` for a handle inherited across `fork`
    /// (which panics) or of a transactional segment.
    #[inline(never)]
    fn try_lock_detour(&self) -> Outcome {
        self.check_not_inherited();
        self.mutex.try_lock()
    }

    /// Locks the segment, waiting at most `timeout` (measured on the monotonic
    /// clock). Like [`lock`](Self::lock), it watches a taken lock for a few
    /// microseconds before it sleeps, also when `timeout` is shorter.
    ///
    /// # Errors
    ///
    /// [`TryLockError::TimedOut`] when the lock was not free in time;
    /// [`TryLockError::Poisoned`] as for [`lock`](Self::lock). A waiter whose
    /// holder dies wakes at once with `Poisoned`, not at its timeout.
    ///
    /// # Panics
    ///
    /// As for [`lock`](Self::lock).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use typed_shm::SharedMemory;
    /// # let key = format!("doc-lock-timeout-{}", std::process::id());
    /// let shm = SharedMemory::<u32>::create(&key, 0)?;
    /// let g = shm.lock_timeout(Duration::from_millis(100)).expect("free");
    /// # drop(g);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> TryLockResult<Guard<'_, T, A>> {
        self.check_not_inherited();
        self.guard(self.mutex.lock_timeout(timeout))
    }

    /// Whether the lock is poisoned: a holder died or panicked, and nobody has
    /// called [`clear_poison`](Self::clear_poison) since.
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::SharedMemory;
    /// # let key = format!("doc-is-poisoned-{}", std::process::id());
    /// let shm = SharedMemory::<u32>::create(&key, 0)?;
    /// let _ = std::panic::catch_unwind(|| {
    ///     let _g = shm.lock().unwrap();
    ///     panic!("half-way through an update");
    /// });
    /// assert!(shm.is_poisoned());
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn is_poisoned(&self) -> bool {
        self.mutex.is_poisoned()
    }

    /// Clears the poison, for every process: call it once the data is known
    /// to be consistent again.
    ///
    /// The poison is cleared under the lock: called by a thread that holds
    /// it (through a guard, as in the example), it clears at once; otherwise
    /// it takes the lock for the moment it takes, waiting for the holder if
    /// there is one.
    ///
    /// # Panics
    ///
    /// As [`lock`](Self::lock) does when it must take the lock: if the
    /// handle was inherited across `fork()`, or if the OS reports a failure
    /// of the lock itself.
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::SharedMemory;
    /// # let key = format!("doc-clear-poison-{}", std::process::id());
    /// let shm = SharedMemory::<u32>::create(&key, 0)?;
    /// let _ = std::panic::catch_unwind(|| {
    ///     let _g = shm.lock().unwrap();
    ///     panic!("oops");
    /// });
    /// let mut g = shm.lock().unwrap_err().into_inner();
    /// *g = 0; // repair
    /// drop(g);
    /// shm.clear_poison();
    /// assert!(shm.lock().is_ok());
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn clear_poison(&self) {
        // clear_poison_held is for a holder of the lock, or a transactional
        // segment: the condition here, or through `guard` below.
        if self.mutex.is_transactional() || self.mutex.held_by_this_thread() {
            self.mutex.clear_poison_held();
            return;
        }
        let guard = self.lock().unwrap_or_else(PoisonError::into_inner);
        self.mutex.clear_poison_held();
        drop(guard);
    }

    /// Detaches this handle, reporting errors (dropping the handle detaches
    /// too, ignoring them). The last handle in any process removes the segment.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::LockError`](crate::ErrorKind::LockError) if the handle was
    /// inherited across `fork()`, or if a guard of this handle was forgotten
    /// (`mem::forget`) while holding the lock: the handle is detached all the
    /// same (the last one removes the segment), but its memory stays mapped
    /// until the process exits, so the lock can still be recovered by others.
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::SharedMemory;
    /// # let key = format!("doc-detach-{}", std::process::id());
    /// let shm = SharedMemory::<u8>::create(&key, 0)?;
    /// shm.detach()?;
    /// assert!(!std::path::Path::new(&format!("/dev/shm/tshm_{key}")).exists());
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn detach(mut self) -> Result<(), Error> {
        if self.mutex.is_held_here() {
            self.segment.keep_forever()?;
            return Err(Error::new(
                crate::ErrorKind::LockError,
                format!(
                    "segment {:?}: a guard of this handle was forgotten while holding the lock; \
                     the handle is detached, but its memory stays mapped until this process exits",
                    self.key()
                ),
            ));
        }
        self.segment.release()
    }
}

impl<T: ?Sized + ShmData, A: Access> Drop for SharedMemory<T, A> {
    fn drop(&mut self) {
        if self.mutex.is_held_here() {
            // A forgotten guard: unmapping a held robust mutex would stop the
            // kernel from marking it owner-dead, and every waiter would hang.
            let _ = self.segment.keep_forever();
        }
        // `segment` detaches when it drops.
    }
}

impl<T: ?Sized + ShmData, A: Access> fmt::Debug for SharedMemory<T, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("key", &self.key())
            .field("native_key", &self.native_key())
            .field("size", &self.size())
            .field("len", &self.len())
            .field("created", &self.created())
            .field("writable", &A::WRITABLE)
            .finish_non_exhaustive()
    }
}

impl<T: ShmSafe> SharedMemory<T, ReadWrite> {
    /// Creates the segment `key`, holding `init`.
    ///
    /// The segment gets mode `0600` whatever the umask (see
    /// [`Options::mode`]); its memory is reserved now, so a full `/dev/shm` is
    /// an error here, never a `SIGBUS` later. A segment of this type left
    /// behind by processes that all died is reclaimed.
    ///
    /// # Errors
    ///
    /// [`AlreadyExists`](crate::ErrorKind::AlreadyExists) if a live segment
    /// (or a file that is not a typed-shm segment of this type, or another
    /// user's) has this key; [`KeyError`](crate::ErrorKind::KeyError) for a bad key;
    /// [`InvalidSize`](crate::ErrorKind::InvalidSize) for a zero-sized `T`;
    /// [`OutOfResources`](crate::ErrorKind::OutOfResources) when memory,
    /// `/dev/shm`, the file-size limit or file descriptors run out;
    /// [`PermissionDenied`](crate::ErrorKind::PermissionDenied) when the OS
    /// refuses.
    ///
    /// # Examples
    ///
    /// ```
    /// use typed_shm::{ErrorKind, SharedMemory};
    /// # let key = format!("doc-create-{}", std::process::id());
    /// let shm = SharedMemory::<[f32; 8]>::create(&key, [0.0; 8])?;
    /// let again = SharedMemory::<[f32; 8]>::create(&key, [0.0; 8]);
    /// assert_eq!(again.unwrap_err().kind(), ErrorKind::AlreadyExists);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn create(key: &str, init: T) -> Result<Self, Error> {
        Self::options().create(key, init)
    }

    /// Attaches to the segment `key`, or creates it with `init()` if it does
    /// not exist (or was left behind by processes that all died).
    /// [`created`](SharedMemory::created) tells which happened.
    ///
    /// # Errors
    ///
    /// As for [`create`](Self::create) and [`attach`](Self::attach).
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::SharedMemory;
    /// # let key = format!("doc-open-or-create-{}", std::process::id());
    /// let shm = SharedMemory::<u64>::open_or_create(&key, || 100)?;
    /// assert!(shm.created());
    /// assert_eq!(*shm.lock().unwrap(), 100);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn open_or_create(key: &str, init: impl FnOnce() -> T) -> Result<Self, Error> {
        Self::options().open_or_create(key, init)
    }
}

impl<E: ShmSafe> SharedMemory<[E], ReadWrite> {
    /// Creates the segment `key` holding `len` copies of `fill`: the typed
    /// form of Qt's `create(size)` (use `[u8]` for raw bytes).
    ///
    /// # Errors
    ///
    /// As for [`create`](SharedMemory::create);
    /// [`InvalidSize`](crate::ErrorKind::InvalidSize) also for `len == 0` or
    /// a size that overflows.
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::SharedMemory;
    /// # let key = format!("doc-create-slice-{}", std::process::id());
    /// let bytes = SharedMemory::<[u8]>::create_slice(&key, 4096, 0)?;
    /// bytes.lock().unwrap()[..5].copy_from_slice(b"hello");
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn create_slice(key: &str, len: usize, fill: E) -> Result<Self, Error> {
        Self::options().create_slice(key, len, fill)
    }
}

impl<T: ?Sized + ShmData> SharedMemory<T, ReadWrite> {
    /// Attaches read-write to the existing segment `key`.
    ///
    /// If its creator is still initializing it, waits up to
    /// [`DEFAULT_TIMEOUT`] (see [`Options::timeout`]).
    ///
    /// # Errors
    ///
    /// [`NotFound`](crate::ErrorKind::NotFound) if no segment has this key;
    /// [`LayoutMismatch`](crate::ErrorKind::LayoutMismatch) if it holds
    /// another type (the message shows both layouts);
    /// [`PermissionDenied`](crate::ErrorKind::PermissionDenied) if the mode
    /// bits refuse read-write access or another user owns it;
    /// [`Corrupted`](crate::ErrorKind::Corrupted) for a file that is not a
    /// valid typed-shm segment;
    /// [`IncompatibleVersion`](crate::ErrorKind::IncompatibleVersion) for one
    /// written by an incompatible build; [`TimedOut`](crate::ErrorKind::TimedOut)
    /// if its creator did not finish initializing it (or died doing so);
    /// [`KeyError`](crate::ErrorKind::KeyError) for a bad key.
    ///
    /// # Examples
    ///
    /// ```
    /// use typed_shm::{ErrorKind, SharedMemory};
    /// # let key = format!("doc-attach-{}", std::process::id());
    /// let owner = SharedMemory::<u32>::create(&key, 3)?;
    /// let peer = SharedMemory::<u32>::attach(&key)?;
    /// assert_eq!(*peer.lock().unwrap(), 3);
    /// // Another type is refused:
    /// let err = SharedMemory::<i32>::attach(&key).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::LayoutMismatch);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn attach(key: &str) -> Result<Self, Error> {
        Self::options().attach(key)
    }

    /// Builder for non-default settings (mode bits, timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::SharedMemory;
    /// # let key = format!("doc-options-{}", std::process::id());
    /// let shm = SharedMemory::<u32>::options().mode(0o640).create(&key, 0)?;
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn options() -> Options<T> {
        Options {
            mode: DEFAULT_MODE,
            timeout: DEFAULT_TIMEOUT,
            transactional: false,
            trusted: Vec::new(),
            group: None,
            wait_for_creation: false,
            _data: PhantomData,
        }
    }
}

impl<T: ?Sized + ShmData> SharedMemory<T, ReadOnly> {
    /// Attaches read-only to the existing segment `key`: guards give `&T`, and
    /// the data is mapped `PROT_READ`.
    ///
    /// Taking the lock writes to the segment's header, so the process still
    /// needs write permission on the segment.
    ///
    /// # Errors
    ///
    /// As for [`SharedMemory::attach`].
    ///
    /// # Examples
    ///
    /// ```
    /// use typed_shm::{ReadOnly, SharedMemory};
    /// # let key = format!("doc-attach-ro-{}", std::process::id());
    /// let writer = SharedMemory::<u32>::create(&key, 1)?;
    /// let reader = SharedMemory::<u32, ReadOnly>::attach(&key)?;
    /// *writer.lock().unwrap() = 2;
    /// assert_eq!(*reader.lock().unwrap(), 2);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn attach(key: &str) -> Result<Self, Error> {
        SharedMemory::<T>::options().attach_read_only(key)
    }
}

/// Settings for creating or attaching, in the style of
/// [`std::fs::OpenOptions`]. Made by [`SharedMemory::options`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use typed_shm::SharedMemory;
/// # let key = format!("doc-options-type-{}", std::process::id());
/// let shm = SharedMemory::<[u8]>::options()
///     .mode(0o660)
///     .timeout(Duration::from_secs(1))
///     .create_slice(&key, 64, 0)?;
/// # Ok::<(), typed_shm::Error>(())
/// ```
pub struct Options<T: ?Sized> {
    mode: u32,
    timeout: Duration,
    transactional: bool,
    trusted: Vec<u32>,
    group: Option<u32>,
    wait_for_creation: bool,
    _data: PhantomData<fn() -> *const T>,
}

impl<T: ?Sized> Clone for Options<T> {
    fn clone(&self) -> Self {
        Options {
            mode: self.mode,
            timeout: self.timeout,
            transactional: self.transactional,
            trusted: self.trusted.clone(),
            group: self.group,
            wait_for_creation: self.wait_for_creation,
            _data: PhantomData,
        }
    }
}

impl<T: ?Sized> fmt::Debug for Options<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("mode", &format_args!("{:#o}", self.mode))
            .field("timeout", &self.timeout)
            .field("transactional", &self.transactional)
            .field("trusted", &self.trusted)
            .field("group", &self.group)
            .field("wait_for_creation", &self.wait_for_creation)
            .finish()
    }
}

impl<T: ?Sized + ShmData> Options<T> {
    /// Permission bits of a new segment, applied exactly (not masked by the
    /// umask); only the `0o777` bits are used. Default `0o600`. Every handle
    /// opens the segment read-write, so a process needs both read and write
    /// permission to attach, even read-only.
    ///
    /// Group and other bits alone do not share a segment with other users:
    /// `attach` opens only segments owned by its own effective user, which
    /// is what stops another user from planting a segment under a key first
    /// (squatting). To share across users, the creator sets a
    /// [`group`](Self::group) and `mode(0o660)`, and the other users attach
    /// with [`trust_owner`](Self::trust_owner)`(creator's uid)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::os::unix::fs::PermissionsExt;
    /// use typed_shm::SharedMemory;
    /// # let key = format!("doc-mode-{}", std::process::id());
    /// let shm = SharedMemory::<u8>::options().mode(0o660).create(&key, 0)?;
    /// let path = format!("/dev/shm{}", shm.native_key());
    /// let mode = std::fs::metadata(path).unwrap().permissions().mode();
    /// assert_eq!(mode & 0o777, 0o660);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        self.mode = mode;
        self
    }

    /// How long `attach` waits for a segment that another process is still
    /// initializing. Default [`DEFAULT_TIMEOUT`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use typed_shm::{ErrorKind, SharedMemory};
    /// let err = SharedMemory::<u8>::options()
    ///     .timeout(Duration::from_millis(10))
    ///     .attach(&format!("doc-timeout-missing-{}", std::process::id()))
    ///     .unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::NotFound);
    /// ```
    pub fn timeout(&mut self, timeout: Duration) -> &mut Self {
        self.timeout = timeout;
        self
    }

    /// Whether `create`, `create_slice` and `open_or_create` make a
    /// transactional segment (default `false`; `attach` learns it from the
    /// segment). In a transactional segment a write guard works on a
    /// private copy: its changes become visible — to `snapshot`, to the next
    /// `lock`, in every process — only when it is dropped normally. A panic
    /// while it is held, [`Guard::rollback`](crate::Guard::rollback), or the
    /// death of its process at any instant (also in the middle of the
    /// commit) discards them: the next `lock` is `Ok` with the last committed
    /// value, not poisoned, and `snapshot` never waits for a writer.
    ///
    /// The price: the segment holds two copies of the data, and each commit
    /// copies the data once more.
    ///
    /// # Examples
    ///
    /// ```
    /// use typed_shm::SharedMemory;
    /// # let key = format!("doc-txn-{}", std::process::id());
    /// let shm = SharedMemory::<[u64; 2]>::options().transactional(true).create(&key, [0, 0])?;
    /// let _ = std::panic::catch_unwind(|| {
    ///     let mut g = shm.lock().unwrap();
    ///     g[0] = 1;
    ///     panic!("half-way"); // discarded, not poisoned
    /// });
    /// assert_eq!(*shm.lock().unwrap(), [0, 0]);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn transactional(&mut self, on: bool) -> &mut Self {
        self.transactional = on;
        self
    }

    /// Also accept, in `attach` and `open_or_create`, segments owned by the
    /// user `uid` (repeatable). Without it only segments of this process's
    /// own effective user are opened: another user could otherwise create a
    /// segment under the key first and feed this program its data
    /// (squatting). Use it for a daemon of another user — typically root —
    /// that creates the segment with a group and mode `0o660` (see
    /// [`group`](Self::group)).
    ///
    /// A process that is not the owner cannot remove the segment's name
    /// (`/dev/shm` is sticky): when such a process is the last to detach, it
    /// marks the segment destroyed instead — nobody can attach to it any
    /// more — and the owner's next `create` or `open_or_create` of the key,
    /// or `tshm gc`, removes it.
    ///
    /// # Examples
    ///
    /// ```
    /// use typed_shm::SharedMemory;
    /// # let key = format!("doc-trust-{}", std::process::id());
    /// # let _daemon = SharedMemory::<u64>::create(&key, 0)?;
    /// // A client that accepts a segment made by root (uid 0), or by itself.
    /// let shm = SharedMemory::<u64>::options().trust_owner(0).attach(&key)?;
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn trust_owner(&mut self, uid: u32) -> &mut Self {
        if !self.trusted.contains(&uid) {
            self.trusted.push(uid);
        }
        self
    }

    /// `create`, `create_slice`, `open_or_create`: give the new object to
    /// the group `gid`. With [`mode`](Self::mode)`(0o660)`, the members of
    /// the group can then attach (with [`trust_owner`](Self::trust_owner)
    /// naming the creator). The creating user must be a member of the group
    /// (or root).
    ///
    /// # Errors
    ///
    /// The create calls fail with
    /// [`PermissionDenied`](crate::ErrorKind::PermissionDenied) if the
    /// creating user may not give files to that group.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::os::unix::fs::MetadataExt;
    /// use typed_shm::SharedMemory;
    /// # let key = format!("doc-group-{}", std::process::id());
    /// let gid = std::fs::metadata("/proc/self").unwrap().gid(); // a group of ours
    /// let shm = SharedMemory::<u64>::options().mode(0o660).group(gid).create(&key, 0)?;
    /// let meta = std::fs::metadata(format!("/dev/shm{}", shm.native_key())).unwrap();
    /// assert_eq!((meta.gid(), meta.mode() & 0o777), (gid, 0o660));
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn group(&mut self, gid: u32) -> &mut Self {
        self.group = Some(gid);
        self
    }

    /// `attach`: when the key does not exist yet, wait (up to the
    /// [`timeout`](Self::timeout)) for a process to create it, instead of
    /// failing with [`NotFound`](crate::ErrorKind::NotFound) at once — woken
    /// by the kernel when the name appears (inotify), not by polling. Then
    /// it attaches as usual (waiting, within the same timeout, for the
    /// creator to finish initializing).
    ///
    /// # Errors
    ///
    /// [`TimedOut`](crate::ErrorKind::TimedOut) if nobody created it in
    /// time.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use typed_shm::SharedMemory;
    /// # let key = format!("doc-wait-creation-{}", std::process::id());
    /// std::thread::scope(|s| {
    ///     let consumer = s.spawn(|| {
    ///         SharedMemory::<u64>::options()
    ///             .wait_for_creation(true)
    ///             .timeout(Duration::from_secs(10))
    ///             .attach(&key)
    ///     });
    ///     std::thread::sleep(Duration::from_millis(20)); // the producer starts later
    ///     let producer = SharedMemory::<u64>::create(&key, 7).unwrap();
    ///     let consumer = consumer.join().unwrap().unwrap();
    ///     assert_eq!(*consumer.lock().unwrap(), 7);
    ///     drop(producer);
    /// });
    /// ```
    pub fn wait_for_creation(&mut self, on: bool) -> &mut Self {
        self.wait_for_creation = on;
        self
    }

    fn settings(&self) -> Settings {
        Settings {
            mode: self.mode,
            timeout: self.timeout,
            trusted: self.trusted.clone(),
            group: self.group,
            wait_for_creation: self.wait_for_creation,
        }
    }

    /// [`SharedMemory::attach`] with these options.
    ///
    /// # Errors
    ///
    /// As for [`SharedMemory::attach`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::SharedMemory;
    /// # let key = format!("doc-options-attach-{}", std::process::id());
    /// # let _owner = SharedMemory::<u8>::create(&key, 0)?;
    /// let shm = SharedMemory::<u8>::options().attach(&key)?;
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn attach(&self, key: &str) -> Result<SharedMemory<T>, Error> {
        Segment::attach(key, &expected::<T>(false)?, true, self.settings()).map(SharedMemory::from_segment)
    }

    /// [`SharedMemory::<T, ReadOnly>::attach`](SharedMemory#method.attach-1)
    /// with these options.
    ///
    /// # Errors
    ///
    /// As for [`SharedMemory::attach`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::SharedMemory;
    /// # let key = format!("doc-options-attach-ro-{}", std::process::id());
    /// # let _owner = SharedMemory::<u8>::create(&key, 0)?;
    /// let reader = SharedMemory::<u8>::options().attach_read_only(&key)?;
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn attach_read_only(&self, key: &str) -> Result<SharedMemory<T, ReadOnly>, Error> {
        Segment::attach(key, &expected::<T>(false)?, false, self.settings()).map(SharedMemory::from_segment)
    }
}

impl<T: ShmSafe> Options<T> {
    fn create_with(
        &self,
        key: &str,
        init: &mut Option<impl FnOnce() -> T>,
    ) -> Result<SharedMemory<T>, Error> {
        let mut write = |data: *mut u8| {
            let value = init.take().expect("the data is initialized once")();
            if is_zero(&value) {
                // A new object's data reads as zeros already.
                return;
            }
            // SAFETY: `data` is the start of a fresh writable mapping of
            // `size_of::<T>()` bytes, page aligned (so aligned for `T`), that
            // no other process can see yet; `write` does not read the old
            // bytes.
            unsafe { data.cast::<T>().write(value) };
        };
        Segment::create(
            key,
            &expected::<T>(self.transactional)?,
            1,
            self.settings(),
            &mut write,
        )
        .map(SharedMemory::from_segment)
    }

    /// [`SharedMemory::create`] with these options.
    ///
    /// # Errors
    ///
    /// As for [`SharedMemory::create`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::SharedMemory;
    /// # let key = format!("doc-options-create-{}", std::process::id());
    /// let shm = SharedMemory::<u32>::options().mode(0o600).create(&key, 7)?;
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn create(&self, key: &str, init: T) -> Result<SharedMemory<T>, Error> {
        self.create_with(key, &mut Some(|| init))
    }

    /// [`SharedMemory::open_or_create`] with these options.
    ///
    /// # Errors
    ///
    /// As for [`SharedMemory::open_or_create`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::SharedMemory;
    /// # let key = format!("doc-options-ooc-{}", std::process::id());
    /// let shm = SharedMemory::<u32>::options().mode(0o660).open_or_create(&key, || 7)?;
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn open_or_create(&self, key: &str, init: impl FnOnce() -> T) -> Result<SharedMemory<T>, Error> {
        let mut init = Some(init);
        let mut last = None;
        // One timeout for the whole call, not one per retry.
        let deadline = std::time::Instant::now() + self.timeout;
        for _ in 0..8 {
            match self.create_with(key, &mut init) {
                Err(e) if e.kind() == crate::ErrorKind::AlreadyExists => {}
                other => return other,
            }
            let mut remaining = self.clone();
            remaining.timeout = deadline.saturating_duration_since(std::time::Instant::now());
            match remaining.attach(key) {
                // Removed between our create and attach, or its creator died
                // initializing it: creating again reclaims it.
                Err(e) if matches!(e.kind(), crate::ErrorKind::NotFound | crate::ErrorKind::TimedOut) => {
                    let out_of_time =
                        e.kind() == crate::ErrorKind::TimedOut && std::time::Instant::now() >= deadline;
                    last = Some(e);
                    if out_of_time {
                        break;
                    }
                }
                Ok(shm) if shm.is_transactional() != self.transactional => {
                    let (is, asked) = if self.transactional {
                        ("is not", "")
                    } else {
                        ("is", " not")
                    };
                    return Err(Error::new(
                        crate::ErrorKind::LayoutMismatch,
                        format!(
                            "segment {key:?} exists and {is} transactional; this program asked for a \
                             segment that is{asked}: every program must use the same \
                             Options::transactional"
                        ),
                    ));
                }
                other => return other,
            }
        }
        Err(last.expect("the loop ran at least once"))
    }
}

impl<E: ShmSafe> Options<[E]> {
    /// [`SharedMemory::create_slice`] with these options.
    ///
    /// # Errors
    ///
    /// As for [`SharedMemory::create_slice`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::SharedMemory;
    /// # let key = format!("doc-options-slice-{}", std::process::id());
    /// let shm = SharedMemory::<[u64]>::options().create_slice(&key, 16, 1)?;
    /// assert_eq!(shm.lock().unwrap().iter().sum::<u64>(), 16);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn create_slice(&self, key: &str, len: usize, fill: E) -> Result<SharedMemory<[E]>, Error> {
        let mut write = |data: *mut u8| {
            if is_zero(&fill) {
                // A new object's data reads as zeros already: do not touch
                // (and so fault in) every page of a large zero-filled slice.
                return;
            }
            let data = data.cast::<E>();
            for i in 0..len {
                // SAFETY: `data` starts a fresh writable mapping of
                // `len * size_of::<E>()` bytes (checked for overflow by
                // `Segment::create`), page aligned, invisible to others yet;
                // `i < len`, so each write is in bounds and aligned.
                unsafe { data.wrapping_add(i).write(fill) };
            }
        };
        Segment::create(
            key,
            &expected::<[E]>(self.transactional)?,
            len,
            self.settings(),
            &mut write,
        )
        .map(SharedMemory::from_segment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Guard;
    use static_assertions::{assert_impl_all, assert_not_impl_any};

    // Threads of one process share one handle; a guard stays on the thread
    // that locked (glibc's robust list is per thread).
    assert_impl_all!(SharedMemory<u64>: Send, Sync);
    assert_impl_all!(SharedMemory<[u8], ReadOnly>: Send, Sync);
    assert_not_impl_any!(Guard<'static, u64>: Send);
    assert_not_impl_any!(Guard<'static, [u8], ReadOnly>: Send);
    assert_impl_all!(Guard<'static, u64>: Sync);
    assert_impl_all!(crate::Error: Send, Sync, std::error::Error);

    #[test]
    fn zero_initial_data_is_not_written_yet_reads_as_zeros() {
        let key = format!("unit-zero-init-{}", std::process::id());
        // A segment with other bytes under the same key first.
        let old = SharedMemory::<[u64; 512]>::create(&key, [u64::MAX; 512]).unwrap();
        drop(old);
        let new = SharedMemory::<[u64; 512]>::create(&key, [0; 512]).unwrap();
        assert!(new.lock().unwrap().iter().all(|&v| v == 0));
        drop(new);
        let slice = SharedMemory::<[u32]>::create_slice(&key, 3000, 0).unwrap();
        assert!(slice.lock().unwrap().iter().all(|&v| v == 0));
        drop(slice);
        let filled = SharedMemory::<[u32]>::create_slice(&key, 3000, 5).unwrap();
        assert!(filled.lock().unwrap().iter().all(|&v| v == 5));
    }

    #[test]
    fn handles_are_shared_by_threads_that_take_turns() {
        let key = format!("unit-threads-{}", std::process::id());
        let shm = SharedMemory::<u64>::create(&key, 0).unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        *shm.lock().unwrap() += 1;
                    }
                });
            }
        });
        assert_eq!(*shm.lock().unwrap(), 4000);
    }

    #[test]
    fn a_panic_under_a_write_guard_poisons_but_not_under_a_read_guard() {
        let key = format!("unit-panic-{}", std::process::id());
        let shm = SharedMemory::<u64>::create(&key, 0).unwrap();
        let ro = SharedMemory::<u64, ReadOnly>::attach(&key).unwrap();
        let _ = std::panic::catch_unwind(|| {
            let _g = ro.lock().unwrap();
            panic!("reader panics");
        });
        assert!(
            !shm.is_poisoned(),
            "a read-only guard cannot have half-written anything"
        );
        let _ = std::panic::catch_unwind(|| {
            let _g = shm.lock().unwrap();
            panic!("writer panics");
        });
        assert!(ro.is_poisoned());
        assert!(matches!(ro.try_lock(), Err(TryLockError::Poisoned(_))));
    }
}

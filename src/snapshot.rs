//! Snapshots, versions and change notification: reading a segment without
//! its lock (see [`crate::seq`] for the protocol and what the memory model
//! says about it).
#![allow(unsafe_code)]

use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

use crate::data::{Access, ShmData};
use crate::error::{Error, ErrorKind, LockResult, TryLockError, TryLockResult};
use crate::seq::{Next, Read};
use crate::shared::SharedMemory;
use crate::shm_safe::ShmSafe;

impl<T: ShmSafe, A: Access> SharedMemory<T, A> {
    /// A consistent copy of the value, taken without the lock: never a mix of
    /// two commits, never blocking a writer, never writing to the segment (so
    /// it works on [`ReadOnly`](crate::ReadOnly) handles). While a writer is
    /// in the middle of a commit it retries, then sleeps, until the commit
    /// ends.
    ///
    /// Because it never holds a writer back, a copy needs a moment with no
    /// commit in progress: a writer that relocks the moment it unlocks, with
    /// no pause between commits, can keep a snapshot retrying for long. On a
    /// [transactional](crate::Options::transactional) segment a copy is
    /// spoilt only when two commits overtake it, so such a writer slows it
    /// far less.
    ///
    /// # Errors
    ///
    /// [`PoisonError`](crate::PoisonError) when the segment is poisoned (a holder died or
    /// panicked, and nobody called [`clear_poison`](Self::clear_poison)); its
    /// [`into_inner`](crate::PoisonError::into_inner) is the copy as the data stands.
    /// A writer killed in the middle of a write is reported this way within
    /// milliseconds (never as a clean value, never as a hang).
    ///
    /// # Panics
    ///
    /// If the calling thread holds the lock (through any handle of the
    /// segment) and is in the middle of a write: the commit the copy would
    /// wait for cannot happen while it waits. (On a transactional segment a
    /// snapshot never waits for a writer, so it never panics.)
    ///
    /// # Examples
    ///
    /// ```
    /// use typed_shm::{ReadOnly, SharedMemory};
    /// # let key = format!("doc-snapshot-{}", std::process::id());
    /// let writer = SharedMemory::<[u32; 4]>::create(&key, [1, 2, 3, 4])?;
    /// let reader = SharedMemory::<[u32; 4], ReadOnly>::attach(&key)?;
    /// writer.lock().unwrap()[0] = 10;
    /// assert_eq!(reader.snapshot().unwrap(), [10, 2, 3, 4]);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    #[inline(always)]
    pub fn snapshot(&self) -> LockResult<T> {
        match self.snapshot_within(None) {
            Ok(value) => Ok(value),
            Err(TryLockError::Poisoned(e)) => Err(e),
            Err(_) => unreachable!("a snapshot without a deadline does not time out"),
        }
    }

    /// [`snapshot`](Self::snapshot) and
    /// [`snapshot_timeout`](Self::snapshot_timeout): quick reads, inlined,
    /// until one is clean; in between, out of line, the waits for a writer
    /// to finish and the poisoned copy (see [`ShmMutex::after_quick`]). Only
    /// a quick read returns a clean value, so the caller keeps it in
    /// registers.
    ///
    /// [`ShmMutex::after_quick`]: crate::sync::ShmMutex::after_quick
    #[inline(always)]
    fn snapshot_within(&self, timeout: Option<Duration>) -> TryLockResult<T> {
        // SAFETY: ShmMutex::read_quick requires the segment's data as the
        // source: 8-aligned (it starts on a page boundary), `size()` ==
        // size_of::<T>() bytes for a single value, mapped while `self` lives.
        let quick = || unsafe { self.mutex().read_quick::<T>(self.data_start()) };
        // The first attempt before the retry state exists: a snapshot that
        // succeeds at once sets up nothing else.
        if let Some(value) = quick() {
            return Ok(value);
        }
        let mut deadline = None;
        let mut round = 0;
        loop {
            // The clock is read only once a quick read was not enough.
            let deadline = *deadline.get_or_insert_with(|| timeout.map(|t| Instant::now() + t));
            match self.mutex().after_quick(&mut round, deadline) {
                Next::Retry => {}
                Next::Poisoned => {
                    let mut out = MaybeUninit::<T>::uninit();
                    match self.read_cold(&mut out, deadline) {
                        Read::Poisoned => {
                            // SAFETY: assume_init requires an initialized
                            // `T`: see `read_cold`.
                            let value = unsafe { out.assume_init() };
                            return Err(TryLockError::Poisoned(self.poisoned(value)));
                        }
                        // The poison was cleared meanwhile: read again.
                        Read::Clean => {}
                        Read::TimedOut => return Err(TryLockError::TimedOut),
                    }
                }
                Next::TimedOut => return Err(TryLockError::TimedOut),
            }
            if let Some(value) = quick() {
                return Ok(value);
            }
        }
    }

    /// Copies the data into `out`, out of line: for a snapshot that found
    /// the segment poisoned (or its writer dead in the middle of a write).
    /// Unless the result is `TimedOut`, `out` then holds a `T`: all its bytes
    /// were written by the copy, and every bit pattern is a valid `T`
    /// (`ShmSafe: Pod`). The caller builds its result from `out` itself, so
    /// that no clean value of a snapshot comes from memory written here: it
    /// stays in registers.
    #[cold]
    #[inline(never)]
    fn read_cold(&self, out: &mut MaybeUninit<T>, deadline: Option<Instant>) -> Read {
        // SAFETY: ShmMutex::read requires the segment's data (8-aligned: it
        // starts on a page boundary; `size()` bytes, mapped while `self`
        // lives) as the source, and a destination valid for writes of as
        // many bytes: `out` has room for a `T`, and
        // `size() == size_of::<T>()` for a single value.
        unsafe {
            self.mutex().read(
                self.data_start(),
                out.as_mut_ptr().cast(),
                size_of::<T>(),
                deadline,
            )
        }
    }

    /// Like [`snapshot`](Self::snapshot), but gives up after `timeout` if no
    /// consistent copy could be taken (a writer stayed in the middle of a
    /// commit, for example a stopped process).
    ///
    /// # Errors
    ///
    /// [`TryLockError::TimedOut`] after `timeout`;
    /// [`TryLockError::Poisoned`] as for [`snapshot`](Self::snapshot).
    ///
    /// # Panics
    ///
    /// As [`snapshot`](Self::snapshot), without waiting for `timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use typed_shm::{SharedMemory, TryLockError};
    /// # let key = format!("doc-snapshot-timeout-{}", std::process::id());
    /// let shm = SharedMemory::<u64>::create(&key, 7)?;
    /// assert_eq!(shm.snapshot_timeout(Duration::from_millis(10)).unwrap(), 7);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn snapshot_timeout(&self, timeout: Duration) -> TryLockResult<T> {
        self.snapshot_within(Some(timeout))
    }
}

impl<E: ShmSafe, A: Access> SharedMemory<[E], A> {
    /// A consistent copy of the slice, taken without the lock; see
    /// [`SharedMemory::snapshot`] for what consistent means and when it
    /// waits. Allocates the vector; [`snapshot_into`](Self::snapshot_into)
    /// reuses a buffer.
    ///
    /// # Errors
    ///
    /// [`PoisonError`](crate::PoisonError) when the segment is poisoned; `into_inner` is the copy.
    ///
    /// # Panics
    ///
    /// As [`SharedMemory::snapshot`]: if the calling thread holds the lock
    /// and is in the middle of a write.
    ///
    /// # Examples
    ///
    /// ```
    /// use typed_shm::SharedMemory;
    /// # let key = format!("doc-snapshot-slice-{}", std::process::id());
    /// let shm = SharedMemory::<[u16]>::create_slice(&key, 3, 9)?;
    /// shm.lock().unwrap()[2] = 1;
    /// assert_eq!(shm.snapshot().unwrap(), vec![9, 9, 1]);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn snapshot(&self) -> LockResult<Vec<E>> {
        let mut out = vec![E::zeroed(); self.len()];
        match self.snapshot_into(&mut out) {
            Ok(()) => Ok(out),
            Err(_) => Err(self.poisoned(out)),
        }
    }

    /// Copies the slice consistently into `out`, without the lock and
    /// without allocating.
    ///
    /// # Errors
    ///
    /// [`PoisonError`](crate::PoisonError) when the segment is poisoned; `out` then holds the
    /// copy as the data stands.
    ///
    /// # Panics
    ///
    /// If `out.len() != self.len()`; as [`SharedMemory::snapshot`], if the
    /// calling thread holds the lock and is in the middle of a write.
    ///
    /// # Examples
    ///
    /// ```
    /// use typed_shm::SharedMemory;
    /// # let key = format!("doc-snapshot-into-{}", std::process::id());
    /// let shm = SharedMemory::<[u32]>::create_slice(&key, 4, 0)?;
    /// shm.lock().unwrap().copy_from_slice(&[1, 2, 3, 4]);
    /// let mut buf = [0u32; 4];
    /// shm.snapshot_into(&mut buf).unwrap();
    /// assert_eq!(buf, [1, 2, 3, 4]);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn snapshot_into(&self, out: &mut [E]) -> LockResult<()> {
        assert_eq!(
            out.len(),
            self.len(),
            "snapshot_into: the buffer holds {} elements, the segment {}",
            out.len(),
            self.len()
        );
        // SAFETY: ShmMutex::read requires the segment's data (8-aligned,
        // page aligned in fact; `size()` bytes, mapped while `self` lives)
        // and a destination valid for writes of `size()` bytes: `out` has
        // `len()` elements of `E`, `size() == len() * size_of::<E>()` bytes,
        // and any bytes written into it make valid `E`s (`ShmSafe: Pod`).
        let read = unsafe {
            self.mutex()
                .read(self.data_start(), out.as_mut_ptr().cast(), self.size(), None)
        };
        match read {
            Read::Clean => Ok(()),
            Read::Poisoned => Err(self.poisoned(())),
            Read::TimedOut => unreachable!("a read without a deadline does not time out"),
        }
    }
}

impl<T: ?Sized + ShmData, A: Access> SharedMemory<T, A> {
    /// The number of commits so far, in all processes: 0 after `create`,
    /// plus 1 for each drop of a write guard through which the data was
    /// mutably dereferenced (a guard that only read commits nothing). A
    /// commit counts from the instant [`snapshot`](Self::snapshot) can see
    /// it, in every process; a transactional commit abandoned by a writer's
    /// death never counts.
    ///
    /// # Examples
    ///
    /// ```
    /// use typed_shm::SharedMemory;
    /// # let key = format!("doc-version-{}", std::process::id());
    /// let shm = SharedMemory::<u32>::create(&key, 0)?;
    /// assert_eq!(shm.version(), 0);
    /// *shm.lock().unwrap() += 1; // a commit
    /// let _ = *shm.lock().unwrap(); // only reads: no commit
    /// assert_eq!(shm.version(), 1);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn version(&self) -> u64 {
        self.mutex().version()
    }

    /// Blocks until [`version`](Self::version) differs from `since`, and
    /// returns the new version — woken by the committing process, in any
    /// process, with no polling interval in between. Also returns (with the
    /// version as it is) when the segment is or becomes poisoned, so that
    /// the caller's next [`snapshot`](Self::snapshot) or
    /// [`lock`](Self::lock) reports it; a writer killed in the middle of a
    /// write is noticed within 100 ms.
    ///
    /// # Panics
    ///
    /// If it would wait while the calling thread holds the lock (through any
    /// handle of the segment): nobody else can commit until that thread lets
    /// go, so the wait would never end.
    ///
    /// # Examples
    ///
    /// ```
    /// use typed_shm::SharedMemory;
    /// # let key = format!("doc-wait-{}", std::process::id());
    /// let shm = SharedMemory::<u64>::create(&key, 0)?;
    /// let seen = shm.version();
    /// std::thread::scope(|s| {
    ///     s.spawn(|| *shm.lock().unwrap() = 5);
    ///     let now = shm.wait_for_change(seen);
    ///     assert!(now > seen);
    /// });
    /// assert_eq!(shm.snapshot().unwrap(), 5);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn wait_for_change(&self, since: u64) -> u64 {
        self.mutex()
            .wait_for_change(since, None)
            .expect("a wait without a deadline ends with a version")
    }

    /// Like [`wait_for_change`](Self::wait_for_change), for at most
    /// `timeout`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::TimedOut`] if the version stayed `since` (and the segment
    /// unpoisoned) for `timeout`.
    ///
    /// # Panics
    ///
    /// As [`wait_for_change`](Self::wait_for_change), without waiting for
    /// `timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use typed_shm::{ErrorKind, SharedMemory};
    /// # let key = format!("doc-wait-timeout-{}", std::process::id());
    /// let shm = SharedMemory::<u64>::create(&key, 0)?;
    /// let err = shm.wait_for_change_timeout(0, Duration::from_millis(5)).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::TimedOut);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn wait_for_change_timeout(&self, since: u64, timeout: Duration) -> Result<u64, Error> {
        self.mutex()
            .wait_for_change(since, Some(Instant::now() + timeout))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::TimedOut,
                    format!(
                        "segment {:?}: no commit after version {since} within {timeout:?}",
                        self.key()
                    ),
                )
            })
    }
}

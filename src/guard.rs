//! The lock guard: the only way to reach the shared data.
#![allow(unsafe_code)]

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use crate::data::{Access, ReadWrite, ShmData};
use crate::sync::ShmMutex;
use std::sync::atomic::Ordering;

/// Holds a segment's lock; dereferences to the shared data. Dropping it
/// unlocks.
///
/// A guard of a [`ReadWrite`] handle gives `&mut T`; a guard of a
/// [`ReadOnly`](crate::ReadOnly) handle gives only `&T`. A write guard dropped
/// while its thread panics poisons the lock.
///
/// Guards are `!Send`: a lock is released by the thread that took it (the
/// kernel tracks robust locks per thread). A guard is `Sync` when `T` is, as
/// `MutexGuard` is.
///
/// A guard must be dropped before its thread ends. A thread that ends while
/// it holds a lock — its guard leaked with `Box::leak` or `mem::forget` —
/// aborts the process with a message naming the segment: references from
/// that guard may still be in use by the threads that remain, so the lock
/// cannot pass to another holder while the process lives. (The lock of a
/// process that dies, by any cause, passes on with the poison.)
///
/// # Examples
///
/// ```
/// use typed_shm::SharedMemory;
/// # let key = format!("doc-guard-{}", std::process::id());
/// let shm = SharedMemory::<[u32; 4]>::create(&key, [0; 4])?;
/// {
///     let mut g = shm.lock().unwrap();
///     g[1] = 42; // DerefMut
/// } // unlocked here
/// assert_eq!(shm.lock().unwrap()[1], 42);
/// # Ok::<(), typed_shm::Error>(())
/// ```
///
/// A read-only guard cannot write:
///
/// ```compile_fail
/// use typed_shm::{ReadOnly, SharedMemory};
/// let shm = SharedMemory::<u32, ReadOnly>::attach("some-key").unwrap();
/// *shm.lock().unwrap() = 1;
/// ```
///
/// A guard cannot be sent to another thread:
///
/// ```compile_fail
/// use typed_shm::SharedMemory;
/// let shm = SharedMemory::<u32>::create("some-key", 0).unwrap();
/// let g = shm.lock().unwrap();
/// std::thread::spawn(move || drop(g));
/// ```
#[must_use = "if unused the lock is released immediately"]
#[clippy::has_significant_drop]
pub struct Guard<'a, T: ?Sized + ShmData, A: Access = ReadWrite> {
    /// The lock this guard holds.
    mutex: &'a ShmMutex,
    /// The data the lock guards (for a write guard of a transactional
    /// segment: the committed buffer until the first `DerefMut`, then the
    /// private buffer).
    data: NonNull<T>,
    /// A write guard of a transactional segment: its changes are made in
    /// the handle's private buffer (the mutex's) until the drop publishes
    /// them.
    txn: bool,
    /// Poison on drop if the thread is panicking (write guards that were not
    /// taken during a panic).
    poison_on_panic: bool,
    /// Whether the data was mutably dereferenced through this guard: its
    /// drop is then a commit.
    wrote: bool,
    /// `MutexGuard<T>` is `!Send`, and invariant in `T`: what a lock guard
    /// must be.
    _not_send: PhantomData<std::sync::MutexGuard<'a, T>>,
    _access: PhantomData<fn() -> A>,
}

// SAFETY: a shared `&Guard` gives only `&T` (through `Deref`) and never
// touches the lock (only dropping, which needs the guard itself, unlocks), so
// sharing a guard between threads is sharing `&T`: sound when `T: Sync`, as
// for `MutexGuard`.
unsafe impl<T: ?Sized + ShmData + Sync, A: Access> Sync for Guard<'_, T, A> {}

impl<'a, T: ?Sized + ShmData, A: Access> Guard<'a, T, A> {
    /// # Safety
    ///
    /// - The calling thread must have just acquired `mutex`.
    /// - `data` must point to the data that `mutex` guards, aligned for `T`,
    ///   holding a valid `T` (every byte pattern is one: `ShmSafe`), valid
    ///   for reads for `'a` — and for writes if `A` is [`ReadWrite`] — and
    ///   reached by nobody else while `mutex` is held.
    /// - `txn`, for a write guard of a transactional segment (and only
    ///   then): `mutex` has the handle's private buffer, of the data's size,
    ///   aligned for `T`, that nothing but the lock's holder uses, outside
    ///   the segment; `data` is the committed buffer.
    #[inline(always)]
    pub(crate) unsafe fn new(mutex: &'a ShmMutex, data: NonNull<T>, txn: bool) -> Self {
        Guard {
            mutex,
            data,
            txn,
            // A transactional segment is never poisoned: a panic discards.
            poison_on_panic: A::WRITABLE && !txn && !std::thread::panicking(),
            wrote: false,
            _not_send: PhantomData,
            _access: PhantomData,
        }
    }
}

impl<T: ?Sized + ShmData, A: Access> Deref for Guard<'_, T, A> {
    type Target = T;

    #[inline(always)]
    fn deref(&self) -> &T {
        // SAFETY: NonNull::as_ref requires a pointer that is aligned,
        // dereferenceable and points to a valid `T`, with no `&mut T` to it
        // for the returned lifetime:
        // - aligned, valid for reads for `'a` (which outlives this borrow),
        //   and a valid `T`: `new`'s contract;
        // - no `&mut T`: this guard holds the lock, references to the data
        //   are only handed out through guards, and a `&mut T` needs
        //   `&mut self`.
        unsafe { self.data.as_ref() }
    }
}

impl<T: ?Sized + ShmData> DerefMut for Guard<'_, T, ReadWrite> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut T {
        if !self.wrote {
            self.first_write();
        }
        // SAFETY: NonNull::as_mut requires what `as_ref` does (see `deref`),
        // plus validity for writes and no other reference for the returned
        // lifetime: the data is writable for a `ReadWrite` guard (`new`'s
        // contract), and the `&mut self` borrow makes this the only reference
        // to the data.
        unsafe { self.data.as_mut() }
    }
}

impl<T: ?Sized + ShmData, A: Access> Drop for Guard<'_, T, A> {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: ShmMutex::release requires that the calling thread holds
        // the lock unless the handle was inherited across `fork`: a guard
        // exists only while its thread holds it (`new`'s contract), guards
        // are `!Send`, and this is the guard's only release; `txn` only for
        // a write guard of a transactional segment (`new`'s contract), which
        // writes, after its first write, to the handle's private buffer
        // (`first_write`).
        unsafe { self.mutex.release(self.txn, self.poison_on_panic, self.wrote) };
    }
}

impl<T: ?Sized + ShmData, A: Access> Guard<'_, T, A> {
    /// The first `DerefMut`: a write begins. In a transactional segment the
    /// guard switches to its private copy of the committed data; otherwise
    /// the sequence word says a write is in progress.
    #[inline]
    fn first_write(&mut self) {
        self.wrote = true;
        let buf = match self.mutex.private() {
            Some(buf) if self.txn => buf,
            _ => {
                self.mutex.begin_write();
                return;
            }
        };
        // SAFETY: NonNull::as_ref requires a valid, aligned `T` with no
        // `&mut T` alive: `data` is the committed buffer (`new`'s contract),
        // and `&mut self` excludes every other reference from this guard.
        let len = size_of_val(unsafe { self.data.as_ref() });
        let count = len / size_of::<T::Element>();
        let private = T::from_raw_parts(buf.as_ptr().cast(), count);
        let private = NonNull::new(private).expect("a heap buffer is never at address 0");
        // We hold the lock: the commit count cannot move meanwhile.
        if buf.holds(self.mutex.txn_commits().load(Ordering::Relaxed)) {
            // This handle published the last commit from this buffer, which
            // nothing has changed since.
            buf.mark_dirty();
            self.data = private;
            return;
        }
        buf.mark_dirty();
        // SAFETY: copy_nonoverlapping requires a source valid for reads and a
        // destination valid for writes of `len` bytes that do not overlap:
        // the committed buffer in the segment (unchanged while we hold the
        // lock) and the handle's private buffer of the same size outside it
        // (the mutex's, used only by the lock's holder).
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.data.as_ptr().cast::<u8>(),
                private.as_ptr().cast::<u8>(),
                len,
            )
        };
        self.data = private;
    }
}

impl<T: ?Sized + ShmData> Guard<'_, T, ReadWrite> {
    /// Discards the changes made through `guard` and unlocks: in a
    /// [transactional](crate::Options::transactional) segment, the data stays
    /// as the last commit left it, for every process, and the version does
    /// not advance. Returns `Ok(())`.
    ///
    /// In a segment that is not transactional, the changes are already in
    /// the shared data and cannot be undone: the guard is given back,
    /// untouched and still holding the lock, as `Err(guard)`, so that the
    /// caller decides (repair the data, or drop the guard to commit them).
    ///
    /// An associated function, not a method, so that it never shadows a
    /// method of `T`.
    ///
    /// # Errors
    ///
    /// `Err(guard)` if the segment is not transactional.
    ///
    /// # Examples
    ///
    /// ```
    /// use typed_shm::{Guard, SharedMemory};
    /// # let key = format!("doc-rollback-{}", std::process::id());
    /// let shm = SharedMemory::<[u32; 2]>::options().transactional(true).create(&key, [1, 1])?;
    /// let mut g = shm.lock().unwrap();
    /// g[0] = 5;
    /// Guard::rollback(g).unwrap(); // discarded
    /// assert_eq!(*shm.lock().unwrap(), [1, 1]);
    /// assert_eq!(shm.version(), 0);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn rollback(guard: Self) -> Result<(), Self> {
        let mut guard = guard;
        if !guard.txn {
            return Err(guard);
        }
        guard.wrote = false;
        drop(guard);
        Ok(())
    }
}

impl<T: ?Sized + ShmData + fmt::Debug, A: Access> fmt::Debug for Guard<'_, T, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

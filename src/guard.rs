//! The lock guard: the only way to reach the shared data.
#![allow(unsafe_code)]

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use crate::shared::{Access, ReadWrite, SharedMemory, ShmData};

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
    shm: &'a SharedMemory<T, A>,
    /// Poison on drop if the thread is panicking (write guards that were not
    /// taken during a panic).
    poison_on_panic: bool,
    /// `MutexGuard<T>` is `!Send`, and `Sync` exactly when `T: Sync`: what
    /// a lock guard must be.
    _not_send: PhantomData<std::sync::MutexGuard<'a, T>>,
}

impl<'a, T: ?Sized + ShmData, A: Access> Guard<'a, T, A> {
    /// # Safety
    ///
    /// The calling thread must have just acquired `shm`'s lock.
    #[inline]
    pub(crate) unsafe fn new(shm: &'a SharedMemory<T, A>) -> Self {
        Guard {
            shm,
            poison_on_panic: A::WRITABLE && !std::thread::panicking(),
            _not_send: PhantomData,
        }
    }
}

impl<T: ?Sized + ShmData, A: Access> Deref for Guard<'_, T, A> {
    type Target = T;

    #[inline(always)]
    fn deref(&self) -> &T {
        // SAFETY: the pointer is valid for the handle's lifetime, which
        // outlives the guard: it points into a live mapping of the validated
        // data length, aligned for `T` (the data starts on a page boundary).
        // Every bit pattern is a valid `T` (`ShmSafe`). No `&mut T` exists at
        // the same time: this guard holds the lock, and references to the data
        // are only handed out through guards.
        unsafe { &*self.shm.data_ptr() }
    }
}

impl<T: ?Sized + ShmData> DerefMut for Guard<'_, T, ReadWrite> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; in addition the mapping is writable (a
        // `ReadWrite` handle maps the data PROT_READ | PROT_WRITE) and the
        // `&mut self` borrow makes this the only reference to the data.
        unsafe { &mut *self.shm.data_ptr() }
    }
}

impl<T: ?Sized + ShmData, A: Access> Drop for Guard<'_, T, A> {
    #[inline(always)]
    fn drop(&mut self) {
        let poison = self.poison_on_panic && std::thread::panicking();
        // SAFETY: a guard exists only while its thread holds the lock (`new`'s
        // contract), guards are `!Send`, and this is the guard's only release.
        unsafe { self.shm.unlock(poison) };
    }
}

impl<T: ?Sized + ShmData + fmt::Debug, A: Access> fmt::Debug for Guard<'_, T, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

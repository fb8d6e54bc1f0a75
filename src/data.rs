//! The type parameters of [`SharedMemory`](crate::SharedMemory) and
//! [`Guard`](crate::Guard): what a segment holds ([`ShmData`]) and how a
//! handle may touch it ([`Access`]: [`ReadWrite`] or [`ReadOnly`]).

use crate::shm_safe::ShmSafe;

mod sealed {
    pub trait Sealed {}
    impl<T: crate::ShmSafe> Sealed for T {}
    impl<E: crate::ShmSafe> Sealed for [E] {}
    impl Sealed for super::ReadWrite {}
    impl Sealed for super::ReadOnly {}
}

/// What a segment can hold: a [`ShmSafe`] type `T`, or a slice `[E]` of a
/// `ShmSafe` type whose length is chosen at run time. Sealed: it is
/// implemented for exactly these two cases.
///
/// # Examples
///
/// ```
/// use typed_shm::{SharedMemory, ShmData};
///
/// fn describe<T: ShmData + ?Sized>(shm: &SharedMemory<T>) -> String {
///     format!("{} bytes in {} element(s)", shm.size(), shm.len())
/// }
/// # let key = format!("doc-shmdata-{}", std::process::id());
/// let shm = SharedMemory::<[u16]>::create_slice(&key, 10, 0)?;
/// assert_eq!(describe(&shm), "20 bytes in 10 element(s)");
/// # Ok::<(), typed_shm::Error>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot live in shared memory: it is not `ShmSafe`",
    label = "not `ShmSafe`",
    note = "share integers, `f32`/`f64`, arrays of them, slices of them, or a `#[repr(C)]` struct with \
            `#[derive(ShmSafe)]`; store `bool` as `u8` and `char` as `u32`; pointers and references \
            mean nothing in another process"
)]
pub trait ShmData: sealed::Sealed {
    /// The element type: `T` itself, or `E` for `[E]`.
    #[doc(hidden)]
    type Element: ShmSafe;
    /// Whether this is a slice.
    #[doc(hidden)]
    const IS_SLICE: bool;
    /// Builds a (possibly wide) pointer to the data.
    #[doc(hidden)]
    fn from_raw_parts(data: *mut Self::Element, len: usize) -> *mut Self;
}

impl<T: ShmSafe> ShmData for T {
    type Element = T;
    const IS_SLICE: bool = false;
    fn from_raw_parts(data: *mut T, _len: usize) -> *mut T {
        data
    }
}

impl<E: ShmSafe> ShmData for [E] {
    type Element = E;
    const IS_SLICE: bool = true;
    fn from_raw_parts(data: *mut E, len: usize) -> *mut [E] {
        std::ptr::slice_from_raw_parts_mut(data, len)
    }
}

/// Access of a handle: [`ReadWrite`] or [`ReadOnly`]. Sealed.
///
/// # Examples
///
/// ```
/// use typed_shm::{Access, ReadOnly, ReadWrite};
/// assert!(ReadWrite::WRITABLE);
/// assert!(!ReadOnly::WRITABLE);
/// ```
pub trait Access: sealed::Sealed {
    /// Whether guards give `&mut T`.
    const WRITABLE: bool;
}

/// Marker: the handle reads and writes (the default).
///
/// # Examples
///
/// ```
/// use typed_shm::{ReadWrite, SharedMemory};
/// # let key = format!("doc-rw-{}", std::process::id());
/// let shm: SharedMemory<u8, ReadWrite> = SharedMemory::create(&key, 1)?;
/// *shm.lock().unwrap() += 1;
/// # Ok::<(), typed_shm::Error>(())
/// ```
#[derive(Debug)]
pub enum ReadWrite {}

/// Marker: the handle only reads; its data is mapped `PROT_READ`, so even a
/// write through a pointer in unsafe code faults.
///
/// # Examples
///
/// ```
/// use typed_shm::{ReadOnly, SharedMemory};
/// # let key = format!("doc-ro-{}", std::process::id());
/// let writer = SharedMemory::<u64>::create(&key, 5)?;
/// let reader = SharedMemory::<u64, ReadOnly>::attach(&key)?;
/// assert_eq!(*reader.lock().unwrap(), 5);
/// # Ok::<(), typed_shm::Error>(())
/// ```
#[derive(Debug)]
pub enum ReadOnly {}

impl Access for ReadWrite {
    const WRITABLE: bool = true;
}

impl Access for ReadOnly {
    const WRITABLE: bool = false;
}

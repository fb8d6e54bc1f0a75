//! The process-private buffer in which a write guard of a transactional
//! segment works: its changes reach the segment only when the guard is
//! dropped normally (see `ShmMutex::unlock_txn`).
#![allow(unsafe_code)]

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// `current` when the buffer holds changes that were not committed.
const DIRTY: u64 = u64::MAX;

/// A heap buffer of one segment's data size, aligned for its element (and to
/// at least 8 bytes). Used only by the thread that holds the segment's lock
/// through the handle that owns it, so never by two threads at once.
pub(crate) struct PrivateBuf {
    ptr: NonNull<u8>,
    layout: Layout,
    /// The commit count whose data the buffer holds (after this handle
    /// published it), or [`DIRTY`]: a write guard whose handle committed
    /// last need not copy the committed data in again. Read and written
    /// only while holding the segment's lock.
    current: AtomicU64,
}

// SAFETY: the buffer is plain heap memory owned by this value; the handle
// that owns it touches it only while one of its threads holds the segment's
// lock, which excludes every other thread (of every process), so moving or
// sharing the owner between threads cannot make two threads use it at once.
unsafe impl Send for PrivateBuf {}
// SAFETY: as above.
unsafe impl Sync for PrivateBuf {}

impl PrivateBuf {
    /// A zeroed buffer of `len` bytes aligned to `align` (at least 8).
    /// Returns `None` if the layout is invalid (`len` too large).
    pub(crate) fn new(len: usize, align: usize) -> Option<Self> {
        let layout = Layout::from_size_align(len.max(1), align.max(8)).ok()?;
        // SAFETY: alloc_zeroed requires a layout of non-zero size: `len.max(1)`.
        let ptr = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })
            .unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Some(PrivateBuf {
            ptr,
            layout,
            current: AtomicU64::new(DIRTY),
        })
    }

    /// The start of the buffer.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Whether the buffer holds the data of commit `commits` (the segment's
    /// count now): then a write guard can start from it as it is.
    #[inline]
    pub(crate) fn holds(&self, commits: u64) -> bool {
        self.current.load(Ordering::Relaxed) == commits
    }

    /// A write guard starts changing the buffer.
    #[inline]
    pub(crate) fn mark_dirty(&self) {
        self.current.store(DIRTY, Ordering::Relaxed);
    }

    /// The buffer is about to become commit `commits`.
    #[inline]
    pub(crate) fn mark_committed(&self, commits: u64) {
        self.current.store(commits, Ordering::Relaxed);
    }
}

impl Drop for PrivateBuf {
    fn drop(&mut self) {
        // SAFETY: dealloc requires the pointer and layout of a live
        // allocation made by the global allocator: `new` made it with
        // exactly this layout, and it is freed only here.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

//! Stand-in for `typed.rs` until `SharedMemory` exists: the same types,
//! backed by the floor, so the harness can be built and run.

use crate::floor::Locked;

/// Stand-in for the `SharedMemory<[u64; 8]>` subject.
pub struct TypedCell(Locked);

impl TypedCell {
    /// Creates.
    pub fn create(name: &str) -> TypedCell {
        TypedCell(Locked::create(name, 64))
    }
    /// Attaches.
    pub fn attach(name: &str) -> TypedCell {
        TypedCell(Locked::attach(name))
    }
    /// Runs `f` under the lock.
    #[inline]
    pub fn with<R>(&self, f: impl FnOnce(&mut [u64; 8]) -> R) -> R {
        self.0.with_cell(f)
    }
    /// Locks and unlocks.
    #[inline]
    pub fn lock_unlock(&self) {
        self.0.lock_unlock()
    }
}

/// Stand-in for the `SharedMemory<[u8]>` subject.
pub struct TypedBuf(Locked);

impl TypedBuf {
    /// Creates.
    pub fn create(name: &str, len: usize) -> TypedBuf {
        TypedBuf(Locked::create(name, len))
    }
    /// Copies in under the lock.
    #[inline]
    pub fn copy_in(&self, src: &[u8]) {
        self.0.with_bytes(|d| d.copy_from_slice(src))
    }
}

//! The Rust peer users would otherwise pick: `shared_memory` for the mapping
//! and `raw_sync` for the lock, used the way their documentation shows: the
//! mutex at the start of the mapping, the data after it.
#![allow(unsafe_code)]

use raw_sync::locks::{LockImpl, LockInit, Mutex};
use shared_memory::{Shmem, ShmemConf};

/// Where the data starts: after the mutex, on a cache line.
const DATA: usize = 64;

/// A `shared_memory` mapping with a `raw_sync` mutex (boxed, as `raw_sync`
/// always does) in front of the data.
pub struct Peer {
    // Declared first so it is dropped before the mapping it points into.
    lock: Box<dyn LockImpl>,
    data_len: usize,
    // Never read, only kept alive: dropping it unmaps (and, for the creator,
    // unlinks) the object.
    _shmem: Shmem,
}

impl Peer {
    /// Creates `/{name}` with `data_len` (at least 64) zeroed data bytes.
    pub fn create(name: &str, data_len: usize) -> Peer {
        assert!(data_len >= 64, "the data holds at least a [u64; 8]");
        assert!(Mutex::size_of(None) <= DATA);
        let shmem = ShmemConf::new()
            .os_id(format!("/{name}"))
            .size(DATA + data_len)
            .create()
            .expect("shared_memory create");
        let base = shmem.as_ptr();
        // SAFETY: raw_sync's `LockInit::new` needs `base` to be valid for
        // writes of the mutex (the mapping is `DATA + data_len` bytes and the
        // mutex fits in `DATA`, asserted above) and `data` to stay valid as
        // long as the lock is used (`Peer` keeps the mapping alive and drops
        // the lock first).
        let (lock, _) = unsafe { Mutex::new(base, base.wrapping_add(DATA)) }.expect("raw_sync new");
        Peer {
            lock,
            data_len,
            _shmem: shmem,
        }
    }

    /// Opens `/{name}` made by [`Peer::create`].
    pub fn attach(name: &str) -> Peer {
        let shmem = ShmemConf::new()
            .os_id(format!("/{name}"))
            .open()
            .expect("shared_memory open");
        let data_len = shmem.len() - DATA;
        assert!(data_len >= 64, "the data holds at least a [u64; 8]");
        let base = shmem.as_ptr();
        // SAFETY: `base` holds a mutex the creator initialized with
        // `Mutex::new` before handing out the name; the mapping outlives the
        // lock (field order).
        let (lock, _) =
            unsafe { Mutex::from_existing(base, base.wrapping_add(DATA)) }.expect("raw_sync open");
        Peer {
            lock,
            data_len,
            _shmem: shmem,
        }
    }

    /// Runs `f` on the data bytes with the lock held.
    #[inline]
    pub fn with_bytes<R>(&self, f: impl FnOnce(&mut [u8]) -> R) -> R {
        let guard = self.lock.lock().expect("raw_sync lock");
        let data: *mut u8 = *guard;
        // SAFETY: `data` points to `data_len` bytes inside the live mapping;
        // the lock is held while the slice lives.
        let bytes = unsafe { std::slice::from_raw_parts_mut(data, self.data_len) };
        let r = f(bytes);
        drop(guard);
        r
    }

    /// Runs `f` on the data as `[u64; 8]` with the lock held.
    #[inline]
    pub fn with_cell<R>(&self, f: impl FnOnce(&mut [u64; 8]) -> R) -> R {
        let guard = self.lock.lock().expect("raw_sync lock");
        let data: *mut u8 = *guard;
        // SAFETY: `data` is the mapping's start plus 64 (aligned for u64; the
        // mapping is page aligned) and at least 64 bytes follow (checked at
        // create/attach); any bit pattern is a valid `[u64; 8]`; the lock is
        // held while the reference lives.
        let cell = unsafe { &mut *data.cast::<[u64; 8]>() };
        let r = f(cell);
        drop(guard);
        r
    }

    /// Locks and unlocks, nothing else.
    #[inline]
    pub fn lock_unlock(&self) {
        drop(self.lock.lock().expect("raw_sync lock"));
    }
}

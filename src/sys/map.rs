//! [`Mapping`]: a shared, read-write mapping of a shared-memory file, made
//! with memmap2 and unmapped when dropped (unless leaked).
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, OwnedFd};

use memmap2::{MmapOptions, MmapRaw};

use super::call::{Call, OsError, OsResult};

/// The first bytes of a shared-memory file, mapped shared and read-write
/// (parts may later be made read-only). The memory is reached only through
/// the raw pointer [`as_ptr`](Self::as_ptr): no reference into it is ever
/// made here. Dropping it unmaps the memory; [`leak`](Self::leak) keeps it
/// mapped until the process exits.
#[derive(Debug)]
pub(crate) struct Mapping {
    map: MmapRaw,
}

impl Mapping {
    /// Maps the first `len` bytes of `fd`.
    pub(super) fn new(fd: &OwnedFd, len: usize) -> OsResult<Mapping> {
        let map = MmapOptions::new()
            .len(len)
            .map_raw(fd.as_raw_fd())
            .map_err(|e| OsError::new(Call::Mmap, e))?;
        Ok(Mapping { map })
    }

    /// The start of the mapping: page aligned, valid for reads (and writes,
    /// outside the parts made read-only) of [`len`](Self::len) bytes while
    /// `self` lives (or for ever, after [`leak`](Self::leak)).
    #[inline]
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Bytes mapped.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Makes the bytes `[offset, offset + len)` read-only: a write to them
    /// then faults. `offset` must be a multiple of the page size (`EINVAL`
    /// otherwise), and the range must lie inside the mapping (`EINVAL`).
    pub(crate) fn protect_read_only(&self, offset: usize, len: usize) -> OsResult<()> {
        let einval = || OsError::errno(Call::Mprotect, libc::EINVAL);
        if offset.checked_add(len).is_none_or(|end| end > self.len()) {
            return Err(einval());
        }
        // SAFETY: mprotect(2):
        // - the address must be page aligned and the range inside a mapping
        //   of this process: the range was checked above to lie inside this
        //   live mapping, which is page aligned, and the kernel refuses an
        //   unaligned offset with EINVAL;
        // - only the protection changes: no memory is freed or moved, and no
        //   reference into the mapping exists (it is only reached through
        //   raw pointers), so nothing is invalidated.
        let rc = unsafe { libc::mprotect(self.as_ptr().wrapping_add(offset).cast(), len, libc::PROT_READ) };
        if rc != 0 {
            return Err(OsError::last(Call::Mprotect));
        }
        Ok(())
    }

    /// Never unmaps the memory: it stays valid until the process exits.
    pub(crate) fn leak(self) {
        std::mem::forget(self.map);
    }
}

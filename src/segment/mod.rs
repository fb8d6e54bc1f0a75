//! A named, mapped OS object: the lifetime protocol (create, attach, detach,
//! reclaim) over bytes only — no `T` here.
//!
//! Liveness is decided by the kernel, not by a counter that a killed process
//! could never decrement: every handle opens its own file description and
//! holds an open-file-description read lock on byte 0, which the kernel drops
//! when the process dies.
//!
//! - *create* ([`create`](Segment::create)): `O_CREAT | O_EXCL`, then a write
//!   lock on byte 0 (and on the creator's slot) while the object is sized and
//!   reserved (`posix_fallocate`), and the header and the data are
//!   initialized; `state = READY` is published (release), and the write lock
//!   on byte 0 is converted to a read lock.
//! - *attach* ([`attach`](Segment::attach)): take the read lock (a held write
//!   lock means a creator is initializing, or the last handle is removing
//!   the object: wait, with a deadline), then read the header (`pread`) and
//!   check that the state is `READY` — which, under the read lock, also means
//!   that the name still refers to this file, since every remover marks the
//!   state `DESTROYED` under the write lock before it removes the name — then
//!   validate the header and map it and the data in one mapping.
//! - *detach* ([`release`](Segment::release)): release the read lock, then
//!   try a write lock: whoever gets it was the last one, marks the state
//!   `DESTROYED` and removes the name.
//! - *reclaim*: `create` on an existing name tries the write lock; if it gets
//!   it, nobody is attached (everyone died), and the object is removed —
//!   provided it belongs to this user and is empty, zero-filled (its creator
//!   died before writing the header) or a valid segment of the expected type;
//!   any other file is left untouched.
//! - *counting* ([`slots`]): every handle also write-locks one byte of its
//!   own, a *slot*, so `attach_count` can find each live handle with
//!   `F_OFD_GETLK`.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::error::{Error, ErrorKind};
use crate::header::{InPlace, STATE_DESTROYED, Validated};
use crate::key;
use crate::sys::{self, Mapping, OfdLock, OsError, ShmFile, Stat};

mod attach;
mod create;
mod slots;

pub(crate) use slots::count_others;

/// Settings for creating and attaching.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub mode: u32,
    pub timeout: Duration,
    /// Owners besides this process's user whose segments `attach` accepts.
    pub trusted: Vec<u32>,
    /// `create`: the object's group.
    pub group: Option<u32>,
    /// `attach`: wait (up to `timeout`) for a segment that does not exist yet.
    pub wait_for_creation: bool,
}

/// Builds the errors of one segment: every message names the key, given
/// here once.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    key: &'a str,
}

impl Ctx<'_> {
    /// An error whose message is `segment "key"` followed by `what` (which
    /// starts with the separator it wants: `": …"` or `" is …"`).
    fn error(&self, kind: ErrorKind, what: impl fmt::Display) -> Error {
        Error::new(kind, format!("segment {:?}{what}", self.key))
    }

    /// [`error`](Self::error) with the OS error that caused it.
    fn error_from(&self, kind: ErrorKind, what: impl fmt::Display, source: std::io::Error) -> Error {
        Error::with_source(kind, format!("segment {:?}{what}", self.key), source)
    }

    /// A failed OS call, classified by its error number.
    fn os(&self, failure: OsError) -> Error {
        Error::os(self.key, failure)
    }

    /// A failed `mmap` or `mprotect` of `what`: out of address space or
    /// memory, or another failure.
    fn map(&self, what: &str, failure: OsError) -> Error {
        if failure.raw_os_error() == Some(libc::ENOMEM) {
            self.error_from(
                ErrorKind::OutOfResources,
                format_args!(": not enough address space or memory to map {what}"),
                failure.error,
            )
        } else {
            self.os(failure)
        }
    }
}

/// The object's name, in the forms the OS calls take.
#[derive(Clone, Debug)]
struct Name {
    /// As given to `shm_open`, e.g. `/tshm_stats`.
    native: String,
    cname: CString,
}

impl Name {
    fn of(key: &str) -> Result<Name, Error> {
        let native = key::native_key(key)?;
        let cname =
            CString::new(native.clone()).map_err(|_| Error::new(ErrorKind::KeyError, "NUL in key"))?;
        Ok(Name { native, cname })
    }

    /// Whether the name still refers to the file `st` (compared by device
    /// and inode).
    fn refers_to(&self, st: &Stat) -> bool {
        name_refers_to(&self.native, st)
    }

    /// Removes the name unless it was already removed.
    fn unlink(&self) {
        unlink(&self.cname);
    }

    /// Removes the name if it still names `file`'s object. Once removed (by
    /// `tshm rm --force`, or by a `create` that took the object for a stale
    /// one) it may name another object, and ours has no name left: objects
    /// get names only from shm_open, one each, so `fstat`'s link count
    /// tells, without a lookup of the name. This trusts that nobody
    /// hard-links segment files, which only their owner or root can do.
    fn unlink_if_it_names(&self, file: &ShmFile) {
        if file.stat().is_ok_and(|st| st.links > 0) {
            self.unlink();
        }
    }
}

/// Whether `native` still names the file `st` (compared by device and inode).
fn name_refers_to(native: &str, st: &Stat) -> bool {
    sys::name_stat(native).is_ok_and(|n| n.same_file(st))
}

/// Removes `cname` unless it was already removed.
fn unlink(cname: &CString) {
    let _ = sys::unlink(cname);
}

fn sleep_backoff(attempt: u32) {
    std::thread::sleep(Duration::from_millis(u64::from(attempt.clamp(1, 10))));
}

/// Checks that `file` is a regular file owned by this user; returns its stat.
fn check_owner(cx: Ctx<'_>, file: &ShmFile, trusted: &[u32]) -> Result<Stat, Error> {
    let st = file.stat().map_err(|e| cx.os(e))?;
    if !st.regular {
        return Err(cx.error(
            ErrorKind::Corrupted,
            " is not a regular file; it was left untouched",
        ));
    }
    let me = sys::effective_uid(st.uid);
    if st.uid != me && !trusted.contains(&st.uid) {
        return Err(cx.error(
            ErrorKind::PermissionDenied,
            format_args!(
                " belongs to uid {}, not to this process's user (uid {me}); its contents are not \
                 trusted (another user may have created it first): if that user is meant to \
                 create it, attach with Options::trust_owner({})",
                st.uid, st.uid
            ),
        ));
    }
    Ok(st)
}

/// One attachment: the mapping and the open file description whose locks
/// (byte 0 and a slot) keep it alive. The mapping is leaked (never unmapped)
/// when a lock may still be held through it.
struct Attachment {
    /// Header page(s) and data, in one mapping. Declared first: it is
    /// unmapped before the file is closed.
    map: Mapping,
    file: ShmFile,
}

pub(crate) struct Segment {
    key: String,
    name: Name,
    attachment: Option<Attachment>,
    header: InPlace,
    data: *mut u8,
    data_len: usize,
    elem_count: usize,
    /// Transactional segments: from the first data buffer to the second.
    stride: usize,
    created: bool,
    fork_generation: u64,
    released: bool,
}

impl Segment {
    fn assemble(key: &str, name: Name, attachment: Attachment, layout: Validated, created: bool) -> Segment {
        let base = attachment.map.as_ptr();
        Segment {
            key: key.to_owned(),
            name,
            // SAFETY: InPlace::new requires:
            // - a live, page-aligned, read-write mapping of at least
            //   HEADER_SIZE bytes of a segment header: the mapping starts at
            //   the header, is page aligned, and spans the header page and
            //   the data (which starts on the next page boundary); the header
            //   page is never made read-only;
            // - that it stays mapped while the value is used: it is unmapped
            //   only when `self` drops, or never;
            // - that every process accesses the in-place fields only
            //   atomically: this library's protocol.
            header: unsafe { InPlace::new(base) },
            data: base.wrapping_add(layout.data_offset as usize),
            attachment: Some(attachment),
            data_len: layout.data_len,
            elem_count: layout.elem_count,
            stride: layout.stride,
            created,
            fork_generation: sys::fork_generation(),
            released: false,
        }
    }

    fn cx(&self) -> Ctx<'_> {
        Ctx { key: &self.key }
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    pub(crate) fn native_key(&self) -> &str {
        &self.name.native
    }

    #[inline]
    pub(crate) fn data_ptr(&self) -> *mut u8 {
        self.data
    }

    pub(crate) fn data_len(&self) -> usize {
        self.data_len
    }

    /// Transactional segments: the two data buffers (both `data_len()`
    /// bytes, page aligned, inside the mapping); `None` for a segment with
    /// one buffer.
    pub(crate) fn buffers(&self) -> Option<[*mut u8; 2]> {
        crate::header::data_buffers(self.data, self.stride)
    }

    pub(crate) fn elem_count(&self) -> usize {
        self.elem_count
    }

    pub(crate) fn created(&self) -> bool {
        self.created
    }

    /// The `fork` generation this handle was made in (see
    /// [`sys::fork_generation`]).
    pub(crate) fn fork_generation(&self) -> u64 {
        self.fork_generation
    }

    /// The header's in-place fields (the lock's words among them); valid
    /// while `self` lives.
    pub(crate) fn in_place(&self) -> InPlace {
        self.header
    }

    fn state(&self) -> &AtomicU32 {
        self.header.state()
    }

    /// Live attachments in all processes: this handle and the slots that the
    /// kernel holds for others (at least this handle, should the kernel not
    /// answer).
    pub(crate) fn attach_count(&self) -> usize {
        // Only if the kernel cannot be asked (it always can on Linux): at
        // least this handle.
        self.attachment
            .as_ref()
            .and_then(|a| slots::count_others(&a.file).ok())
            .map_or(1, |n| n + 1)
    }

    /// Whether this handle was inherited across `fork` (made in another
    /// process).
    #[inline]
    pub(crate) fn is_inherited(&self) -> bool {
        sys::inherited_from(self.fork_generation)
    }

    /// Ends this attachment like [`release`](Self::release) but never
    /// unmaps: used when this process may still hold the lock through this
    /// mapping, so the kernel can still mark it owner-dead when the holder
    /// ends. Only the mapping stays (until the process exits); the attachment
    /// ends now, so the last one still removes the name — also when this
    /// process then exits normally.
    pub(crate) fn keep_forever(&mut self) -> Result<(), Error> {
        let result = self.release();
        if let Some(Attachment { map, file }) = self.attachment.take() {
            map.leak();
            // Closing the file does not touch the mappings.
            drop(file);
        }
        result
    }

    /// Ends this attachment: the last one removes the object.
    pub(crate) fn release(&mut self) -> Result<(), Error> {
        if std::mem::replace(&mut self.released, true) {
            return Ok(());
        }
        let cx = self.cx();
        if self.is_inherited() {
            // The file description, and its lock, are shared with the parent:
            // releasing it here would release the parent's attachment.
            return Err(cx.error(
                ErrorKind::LockError,
                ": this handle was inherited across fork(); only the process that made it may \
                 detach it (attach anew in the child)",
            ));
        }
        let Some(attachment) = &self.attachment else {
            return Ok(());
        };
        let file = &attachment.file;
        // Release the lifetime lock and the slot, then try the write lock: of
        // several handles detaching at once, at least one gets it (converting
        // a read lock in place could fail for every one of them). Attach and
        // detach do not touch the header: a handle that never locks never
        // faults its page in.
        file.lock_range(OfdLock::Unlock, 0, 0).map_err(|e| cx.os(e))?;
        if file.lock(OfdLock::Write).map_err(|e| cx.os(e))? {
            // Nobody else is attached: we are the last. Attachers that opened
            // the name meanwhile see DESTROYED (or another file) and start over.
            self.state().store(STATE_DESTROYED, Ordering::Release);
            self.name.unlink_if_it_names(file);
        }
        Ok(())
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        let _ = self.release();
        // `attachment` drops here: munmap, then close (which releases our
        // locks).
    }
}

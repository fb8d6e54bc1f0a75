//! A named, mapped OS object: the lifetime protocol (create, attach, detach,
//! reclaim) over bytes only — no `T` here.
//!
//! Liveness is decided by the kernel, not by a counter that a killed process
//! could never decrement: every handle opens its own file description and
//! holds an open-file-description read lock on byte 0, which the kernel drops
//! when the process dies.
//!
//! - *create*: `O_CREAT | O_EXCL`, then a write lock on byte 0 (and on the
//!   creator's slot) while the object is sized and reserved
//!   (`posix_fallocate`), and the header and the data are initialized;
//!   `state = READY` is published (release), and the write lock on byte 0 is
//!   converted to a read lock.
//! - *attach*: take the read lock (a held write lock means a creator is
//!   initializing, or the last handle is removing the object: wait, with a
//!   deadline), then read the header (`pread`) and check that the state is
//!   `READY` — which, under the read lock, also means that the name still
//!   refers to this file, since every remover marks the state `DESTROYED`
//!   under the write lock before it removes the name — then validate the
//!   header and map it and the data in one mapping.
//! - *detach*: release the read lock, then try a write lock: whoever gets it
//!   was the last one, marks the state `DESTROYED` and removes the name.
//! - *reclaim*: `create` on an existing name tries the write lock; if it gets
//!   it, nobody is attached (everyone died), and the object is removed —
//!   provided it belongs to this user and is empty, zero-filled (its creator
//!   died before writing the header) or a valid segment of the expected type;
//!   any other file is left untouched.
//! - *counting*: every handle also write-locks one byte of its own, a *slot*
//!   at `SLOT_BASE + i` (a free one), so `attach_count` can find each
//!   live handle with `F_OFD_GETLK` — an exact count, which `/proc/locks`
//!   (a global list read in pieces while it changes) cannot give.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::mem::offset_of;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use memmap2::{MmapOptions, MmapRaw};

use crate::error::{Error, ErrorKind};
use crate::header::{
    self, Expected, HEADER_SIZE, Header, InPlace, LockSlots, MAGIC, STATE_DESTROYED, STATE_INIT, STATE_READY,
    Validated,
};
use crate::key;
use crate::sys::{self, OfdLock, Stat};

/// How often `create` retries after reclaiming a stale object or losing a race.
const CREATE_ATTEMPTS: u32 = 16;

/// First byte of the attachment slots (byte 0 holds the lifetime lock).
const SLOT_BASE: u64 = 1;
/// Most handles attached to one segment at once.
const MAX_SLOTS: u64 = 1 << 20;

/// Settings for creating and attaching.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    pub mode: u32,
    pub timeout: Duration,
}

/// The mappings and the file description; forgotten (never unmapped) when a
/// lock may still be held through them.
struct Maps {
    /// Header page(s) and data, in one mapping.
    map: MmapRaw,
    fd: OwnedFd,
}

pub(crate) struct Segment {
    key: String,
    native: String,
    cname: CString,
    stat: Stat,
    maps: Option<Maps>,
    header: InPlace,
    data: *mut u8,
    data_len: usize,
    elem_count: usize,
    created: bool,
    fork_generation: u64,
    released: bool,
}

fn sleep_backoff(attempt: u32) {
    std::thread::sleep(Duration::from_millis(u64::from(attempt.clamp(1, 10))));
}

fn map_error(key: &str, what: &str, e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(libc::ENOMEM) {
        Error::with_source(
            ErrorKind::OutOfResources,
            format!("segment {key:?}: not enough address space or memory to map {what}"),
            e,
        )
    } else {
        Error::os(&format!("mmap of {what}"), key, e)
    }
}

fn unknown(key: &str, call: &str, e: std::io::Error) -> Error {
    Error::os(call, key, e)
}

/// Maps the first `len` bytes of the object read-write, shared.
fn map_all(fd: &OwnedFd, key: &str, len: usize) -> Result<MmapRaw, Error> {
    MmapOptions::new()
        .len(len)
        .map_raw(fd.as_raw_fd())
        .map_err(|e| map_error(key, "the segment", e))
}

/// Whether `native` still names the file `st` (compared by device and inode).
fn name_refers_to(native: &str, st: &Stat) -> bool {
    sys::name_stat(native).is_ok_and(|n| n.same_file(st))
}

/// Where this process starts looking for a free slot: just after the slot
/// it took last, so a process that attaches again and again finds a free
/// slot at the first try (the creator's slot is the first one).
static SLOT_HINT: AtomicU64 = AtomicU64::new(SLOT_BASE + 1);

/// Write-locks a free attachment slot of `fd`, so that `attach_count` finds
/// this handle.
fn take_slot(key: &str, fd: &OwnedFd) -> Result<(), Error> {
    let start = SLOT_HINT
        .load(Ordering::Relaxed)
        .clamp(SLOT_BASE, SLOT_BASE + MAX_SLOTS - 1);
    for i in 0..MAX_SLOTS {
        let slot = SLOT_BASE + (start - SLOT_BASE + i) % MAX_SLOTS;
        if sys::ofd_lock_range(fd, OfdLock::Write, slot, 1)
            .map_err(|e| unknown(key, "fcntl(F_OFD_SETLK)", e))?
        {
            // Slots free up in any order; wander on, and come back to the
            // first ones after a while.
            let next = if slot + 1 >= SLOT_BASE + 64 {
                SLOT_BASE + 1
            } else {
                slot + 1
            };
            SLOT_HINT.store(next, Ordering::Relaxed);
            return Ok(());
        }
    }
    Err(Error::new(
        ErrorKind::OutOfResources,
        format!("segment {key:?} already has {MAX_SLOTS} attachments"),
    ))
}

/// Attachment slots held by other open file descriptions of the file.
fn count_other_slots(fd: &OwnedFd) -> std::io::Result<usize> {
    let mut count = 0;
    let mut ranges = vec![(SLOT_BASE, SLOT_BASE + MAX_SLOTS)];
    // Each query finds one lock in a range (any one) or proves it free; the
    // parts on either side of a found lock are searched again.
    while let Some((start, end)) = ranges.pop() {
        if start >= end {
            continue;
        }
        if let Some((at, len)) = sys::ofd_conflict(fd, start, end - start)? {
            count += 1;
            let at_end = if len == 0 { end } else { at.saturating_add(len) };
            ranges.push((start, at.max(start)));
            ranges.push((at_end.max(start), end));
        }
    }
    Ok(count)
}

/// Removes `cname` unless it was already removed.
fn unlink(cname: &CString) {
    let _ = sys::shm_unlink(cname);
}

impl Segment {
    /// Creates the object `key` with room for `elem_count` elements of the
    /// expected layout; `write_data` initializes the data region.
    pub(crate) fn create(
        key: &str,
        expected: &Expected,
        elem_count: usize,
        settings: Settings,
        write_data: &mut dyn FnMut(*mut u8),
    ) -> Result<Segment, Error> {
        let native = key::native_key(key)?;
        let cname =
            CString::new(native.clone()).map_err(|_| Error::new(ErrorKind::KeyError, "NUL in key"))?;
        let page = expected.page_size;
        let invalid = |what: String| Error::new(ErrorKind::InvalidSize, format!("segment {key:?}: {what}"));
        if expected.elem_size == 0 {
            return Err(invalid(
                "a zero-sized type holds no data: share a type with at least one byte".into(),
            ));
        }
        if elem_count == 0 {
            return Err(invalid(
                "a slice of length 0 holds no data: give a length of at least 1".into(),
            ));
        }
        if expected.elem_align > page {
            return Err(invalid(format!(
                "alignment {} exceeds the page size {page}",
                expected.elem_align
            )));
        }
        let data_len = expected
            .elem_size
            .checked_mul(elem_count)
            .filter(|&n| isize::try_from(n).is_ok())
            .ok_or_else(|| {
                invalid(format!(
                    "{elem_count} elements of {} bytes overflow the address space",
                    expected.elem_size
                ))
            })?;
        let total = (page as u64)
            .checked_add(data_len as u64)
            .ok_or_else(|| invalid("the size overflows".into()))?;
        if let Some(limit) = sys::file_size_limit()
            && total > limit
        {
            return Err(Error::new(
                ErrorKind::OutOfResources,
                format!(
                    "segment {key:?} needs {total} bytes, above this process's file-size limit \
                     (RLIMIT_FSIZE = {limit} bytes): raise the limit (ulimit -f) or share less"
                ),
            ));
        }
        let deadline = Instant::now() + settings.timeout;

        // From here on, a failure removes what this call created — if the
        // name still refers to it.
        struct Unlink {
            native: String,
            cname: CString,
            file: Option<Stat>,
        }
        impl Drop for Unlink {
            fn drop(&mut self) {
                if let Some(st) = &self.file
                    && name_refers_to(&self.native, st)
                {
                    unlink(&self.cname);
                }
            }
        }

        let mut attempt = 0;
        let (fd, mut cleanup) = loop {
            attempt += 1;
            let fd = match sys::shm_open(&cname, true, settings.mode & 0o777) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) && attempt < CREATE_ATTEMPTS => {
                    reclaim(key, &native, &cname, expected)?;
                    continue;
                }
                Err(e) => return Err(Error::os("shm_open", key, e)),
            };
            let cleanup = Unlink {
                native: native.clone(),
                cname: cname.clone(),
                file: Some(sys::fstat(&fd).map_err(|e| unknown(key, "fstat", e))?),
            };
            // An attacher may hold a read lock for an instant while it finds
            // the object empty; wait for it to let go.
            let mut waits = 0;
            // Byte 0 and the first attachment slot in one call: no handle can
            // hold a slot of an object that was never published.
            while !sys::ofd_lock_range(&fd, OfdLock::Write, 0, SLOT_BASE + 1)
                .map_err(|e| unknown(key, "fcntl(F_OFD_SETLK)", e))?
            {
                waits += 1;
                if Instant::now() >= deadline {
                    return Err(Error::new(
                        ErrorKind::TimedOut,
                        format!("segment {key:?}: could not lock the new object to initialize it"),
                    ));
                }
                sleep_backoff(waits);
            }
            // Until we held the write lock, another `create` could take our
            // still empty object for the leftover of a creator that died,
            // remove it and create its own under the name. Then the name is
            // not ours: start over (and find theirs).
            if let Some(st) = &cleanup.file
                && !name_refers_to(&native, st)
            {
                continue;
            }
            break (fd, cleanup);
        };

        // The umask may have cleared bits of the mode given to shm_open; set
        // the exact mode unless it came out right (it usually does for 0600).
        let mode = settings.mode & 0o777;
        if cleanup.file.is_none_or(|st| st.mode != mode) {
            sys::fchmod(&fd, mode).map_err(|e| Error::os("fchmod", key, e))?;
        }
        // posix_fallocate(3) also sets the size ("If the size of the file is
        // less than offset+len, then the file is increased to this size"),
        // and, unlike ftruncate, reserves the memory now.
        sys::fallocate(&fd, total).map_err(|e| {
            Error::with_source(
                ErrorKind::OutOfResources,
                format!(
                    "segment {key:?}: cannot reserve {total} bytes in /dev/shm ({e}): free space \
                     there, enlarge it, or share less"
                ),
                e,
            )
        })?;
        let stat = cleanup.file.expect("set when the object was created");
        let map = map_all(&fd, key, page + data_len)?;

        let h = Header::new(expected, page as u64, data_len as u64, elem_count as u64);
        let base = map.as_mut_ptr();
        // SAFETY: copy_nonoverlapping requires both pointers valid for
        // HEADER_SIZE bytes and non-overlapping: the source is a local
        // `Header` (HEADER_SIZE bytes, statically asserted), the destination
        // the start of a fresh HEADER_SIZE-byte mapping. No other process
        // reads it yet: we hold the write lock, and attachers read only under
        // a read lock.
        unsafe { std::ptr::copy_nonoverlapping(bytemuck::bytes_of(&h).as_ptr(), base, HEADER_SIZE) };
        // SAFETY: the mutex slot is inside the mapping, 8-aligned (offset 384
        // of a page-aligned mapping, and pthread_mutex_t needs at most 8, both
        // statically asserted), zero-filled, not used by anyone (we hold the
        // write lock), and stays mapped as long as any handle uses it.
        unsafe { sys::RawMutex::init(base.wrapping_add(offset_of!(Header, mutex)).cast()) }.map_err(|e| {
            Error::with_source(
                ErrorKind::LockError,
                format!("segment {key:?}: cannot set up the lock: {e}"),
                e,
            )
        })?;
        write_data(base.wrapping_add(page));

        let maps = Maps { map, fd };
        let layout = Validated {
            data_offset: page as u64,
            data_len,
            elem_count,
        };
        let seg = Segment::assemble(key, native, cname.clone(), stat, maps, layout, true);
        seg.state().store(STATE_READY, Ordering::Release);
        // Converting our write lock to a read lock cannot conflict.
        let fd = &seg.maps.as_ref().expect("maps are present until drop").fd;
        if !sys::ofd_lock(fd, OfdLock::Read).map_err(|e| unknown(key, "fcntl(F_OFD_SETLK)", e))? {
            return Err(Error::new(
                ErrorKind::LockError,
                format!("segment {key:?}: lock conversion refused"),
            ));
        }
        cleanup.file = None;
        Ok(seg)
    }

    /// Attaches to the existing object `key`, whose layout must be `expected`.
    pub(crate) fn attach(
        key: &str,
        expected: &Expected,
        writable: bool,
        settings: Settings,
    ) -> Result<Segment, Error> {
        let native = key::native_key(key)?;
        let cname =
            CString::new(native.clone()).map_err(|_| Error::new(ErrorKind::KeyError, "NUL in key"))?;
        if expected.elem_size == 0 {
            return Err(Error::new(
                ErrorKind::InvalidSize,
                format!("segment {key:?}: a zero-sized type holds no data"),
            ));
        }
        let deadline = Instant::now() + settings.timeout;
        let timed_out = |why: &str| {
            Error::new(
                ErrorKind::TimedOut,
                format!("segment {key:?} {why}; waited {:?}", settings.timeout),
            )
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let fd = sys::shm_open(&cname, false, 0).map_err(|e| Error::os("shm_open", key, e))?;
            // The size is final once a creator has sized the object, and one
            // that is still 0 is retried below.
            let st = check_owner(key, &fd)?;
            if !sys::ofd_lock(&fd, OfdLock::Read).map_err(|e| unknown(key, "fcntl(F_OFD_SETLK)", e))? {
                // A creator is initializing it, or the last handle is removing it.
                if Instant::now() >= deadline {
                    return Err(timed_out(
                        "is still being initialized (or removed) by another process",
                    ));
                }
                sleep_backoff(attempt);
                continue;
            }
            if st.size == 0 {
                // Created, not yet locked by its creator — or its creator died
                // right after creating it.
                drop(fd);
                if Instant::now() >= deadline {
                    return Err(timed_out(
                        "exists but was never initialized: its creator died or is stuck \
                         (create or open_or_create reclaims it once nobody uses it)",
                    ));
                }
                sleep_backoff(attempt);
                continue;
            }
            if st.size < HEADER_SIZE as u64 {
                return Err(Error::new(
                    ErrorKind::Corrupted,
                    format!(
                        "segment {key:?} is not a typed-shm segment: it is {} bytes long, shorter \
                         than the {HEADER_SIZE}-byte header; it was left untouched",
                        st.size
                    ),
                ));
            }
            // A copy of the header, read under our read lock: the creator
            // published it before giving up its write lock.
            let mut bytes = [0u8; HEADER_SIZE];
            sys::pread_exact(&fd, &mut bytes, 0).map_err(|e| unknown(key, "pread", e))?;
            let state_at = offset_of!(Header, state);
            let state = u32::from_ne_bytes(bytes[state_at..state_at + 4].try_into().expect("4 bytes"));
            if bytes[..8] != MAGIC {
                if bytes.iter().all(|&b| b == 0) {
                    return Err(timed_out(
                        "was never initialized: the process creating it died first \
                         (create or open_or_create reclaims it)",
                    ));
                }
                return Err(Error::new(
                    ErrorKind::Corrupted,
                    format!(
                        "segment {key:?} is not a typed-shm segment (its first bytes are not the \
                         typed-shm magic); it was left untouched"
                    ),
                ));
            }
            match state {
                STATE_READY => {}
                STATE_DESTROYED => {
                    // A remover marks the state and removes the name while it
                    // holds the write lock. We hold a read lock: if the name
                    // still refers to this object, the remover died in
                    // between, and the object is gone all the same.
                    if name_refers_to(&native, &st) {
                        return Err(Error::new(
                            ErrorKind::NotFound,
                            format!(
                                "segment {key:?} was being removed by a process that died doing \
                                 so; create or open_or_create makes a new one"
                            ),
                        ));
                    }
                    // Its last handle removed it while we opened it: start over.
                    if Instant::now() >= deadline {
                        return Err(timed_out("kept being removed while attaching"));
                    }
                    sleep_backoff(attempt);
                    continue;
                }
                STATE_INIT => {
                    return Err(timed_out(
                        "was never fully initialized: the process creating it died part-way \
                         (create or open_or_create reclaims it)",
                    ));
                }
                other => {
                    return Err(Error::new(
                        ErrorKind::Corrupted,
                        format!("segment {key:?} has an unknown state {other:#x}; it was left untouched"),
                    ));
                }
            }
            // READY under our read lock also means the name still refers to
            // this object: a reclaimer or a last handle marks the state
            // DESTROYED, under the write lock, before it removes the name.
            let v = header::validate(key, &bytes, st.size, expected)?;
            // Validated: data_offset + data_len <= the file's length, and
            // data_offset is a page boundary.
            let total = usize::try_from(v.data_offset)
                .ok()
                .and_then(|o| o.checked_add(v.data_len))
                .ok_or_else(|| {
                    map_error(
                        key,
                        "the segment",
                        std::io::Error::from_raw_os_error(libc::ENOMEM),
                    )
                })?;
            let map = map_all(&fd, key, total)?;
            if !writable {
                let data = map.as_mut_ptr().wrapping_add(total - v.data_len);
                sys::protect_read_only(data, v.data_len)
                    .map_err(|e| map_error(key, "the segment data", e))?;
            }
            take_slot(key, &fd)?;
            let maps = Maps { map, fd };
            let seg = Segment::assemble(key, native, cname, st, maps, v, false);
            return Ok(seg);
        }
    }

    fn assemble(
        key: &str,
        native: String,
        cname: CString,
        stat: Stat,
        maps: Maps,
        layout: Validated,
        created: bool,
    ) -> Segment {
        Segment {
            key: key.to_owned(),
            native,
            cname,
            stat,
            // SAFETY: the mapping starts at the header, is page aligned, at
            // least HEADER_SIZE bytes long (the data starts on the next page
            // boundary), read-write, and lives as long as `self` (unmapped
            // only in drop, or never); every process uses the header's
            // in-place fields only atomically.
            header: unsafe { InPlace::new(maps.map.as_mut_ptr()) },
            data: maps.map.as_mut_ptr().wrapping_add(layout.data_offset as usize),
            maps: Some(maps),
            data_len: layout.data_len,
            elem_count: layout.elem_count,
            created,
            fork_generation: sys::fork_generation(),
            released: false,
        }
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    pub(crate) fn native_key(&self) -> &str {
        &self.native
    }

    #[inline]
    pub(crate) fn data_ptr(&self) -> *mut u8 {
        self.data
    }

    pub(crate) fn data_len(&self) -> usize {
        self.data_len
    }

    pub(crate) fn elem_count(&self) -> usize {
        self.elem_count
    }

    pub(crate) fn created(&self) -> bool {
        self.created
    }

    /// Pointers to the lock's words in the header; they stay valid while
    /// `self` lives.
    pub(crate) fn lock_slots(&self) -> LockSlots {
        self.header.lock_slots()
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
        self.maps
            .as_ref()
            .and_then(|m| count_other_slots(&m.fd).ok())
            .map_or(1, |n| n + 1)
    }

    /// Whether this handle was made in this process (not inherited by `fork`).
    #[inline]
    pub(crate) fn is_inherited(&self) -> bool {
        self.fork_generation != sys::fork_generation_now()
    }

    /// Ends this attachment like [`release`](Self::release) but never
    /// unmaps: used when this process may still hold the lock through this
    /// mapping, so the kernel can still mark it owner-dead when the holder
    /// ends. Only the mapping stays (until the process exits); the attachment
    /// ends now, so the last one still removes the name — also when this
    /// process then exits normally.
    pub(crate) fn keep_forever(&mut self) -> Result<(), Error> {
        let result = self.release();
        if let Some(maps) = self.maps.take() {
            std::mem::forget(maps.map);
            // Closing the file does not touch the mappings.
            drop(maps.fd);
        }
        result
    }

    /// Ends this attachment: the last one removes the object.
    pub(crate) fn release(&mut self) -> Result<(), Error> {
        if std::mem::replace(&mut self.released, true) {
            return Ok(());
        }
        let key = &self.key;
        if self.is_inherited() {
            // The file description, and its lock, are shared with the parent:
            // releasing it here would release the parent's attachment.
            return Err(Error::new(
                ErrorKind::LockError,
                format!(
                    "segment {key:?}: this handle was inherited across fork(); only the process \
                     that made it may detach it (attach anew in the child)"
                ),
            ));
        }
        let Some(maps) = &self.maps else { return Ok(()) };
        let lock_err = |e| unknown(key, "fcntl(F_OFD_SETLK)", e);
        // Release the lifetime lock and the slot, then try the write lock: of
        // several handles detaching at once, at least one gets it (converting
        // a read lock in place could fail for every one of them). Attach and
        // detach do not touch the header: a handle that never locks never
        // faults its page in.
        sys::ofd_lock_range(&maps.fd, OfdLock::Unlock, 0, 0).map_err(lock_err)?;
        if sys::ofd_lock(&maps.fd, OfdLock::Write).map_err(lock_err)? {
            // Nobody else is attached: we are the last. Attachers that opened
            // the name meanwhile see DESTROYED (or another file) and start over.
            self.state().store(STATE_DESTROYED, Ordering::Release);
            if name_refers_to(&self.native, &self.stat) {
                unlink(&self.cname);
            }
        }
        Ok(())
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        let _ = self.release();
        // `maps` drops here: munmap, then close (which releases our lock).
    }
}

/// Checks that `fd` is a regular file owned by this user; returns its stat.
fn check_owner(key: &str, fd: &OwnedFd) -> Result<Stat, Error> {
    let st = sys::fstat(fd).map_err(|e| unknown(key, "fstat", e))?;
    if !st.regular {
        return Err(Error::new(
            ErrorKind::Corrupted,
            format!("segment {key:?} is not a regular file; it was left untouched"),
        ));
    }
    let me = sys::effective_uid(st.uid);
    if st.uid != me {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "segment {key:?} belongs to uid {}, not to this process's user (uid {me}); its \
                 contents are not trusted (another user may have created it first)",
                st.uid
            ),
        ));
    }
    Ok(st)
}

/// `create` found `native` taken: removes it if it is a stale segment of this
/// user that nobody is attached to, and that is either empty or zero-filled
/// (its creator died before writing the header) or a valid segment of the
/// expected layout. Anything else (a foreign file, another format, another
/// type, inconsistent lengths) is left untouched. Returns `Ok` when the caller
/// should try to create again, or `AlreadyExists` saying why not.
fn reclaim(key: &str, native: &str, cname: &CString, expected: &Expected) -> Result<(), Error> {
    let exists = |why: &str| {
        Error::new(
            ErrorKind::AlreadyExists,
            format!("segment {key:?} already exists{why}"),
        )
    };
    let fd = match sys::shm_open(cname, false, 0) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
            return Err(exists(
                " and this user may not open it (it belongs to someone else); choose another key",
            ));
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(exists(
                " as a symbolic link, which is never followed nor removed; choose another key",
            ));
        }
        Err(e) => {
            let why = Error::os("shm_open", key, e);
            return Err(exists(&format!(" but cannot be opened as a segment: {why}")));
        }
    };
    let st = match check_owner(key, &fd) {
        Ok(st) => st,
        Err(e) => return Err(exists(&format!(" and is not ours to reuse: {e}"))),
    };
    if !sys::ofd_lock(&fd, OfdLock::Write).map_err(|e| unknown(key, "fcntl(F_OFD_SETLK)", e))? {
        return Err(exists(
            " and is in use by a running process: attach to it, or choose another key",
        ));
    }
    // We hold the write lock: nobody is attached and nobody is initializing.
    if st.size > 0 {
        let foreign = || {
            exists(
                " but is not a typed-shm segment; it was left untouched (remove it by hand if it is stale)",
            )
        };
        if st.size < HEADER_SIZE as u64 {
            return Err(foreign());
        }
        // We hold the write lock, so nobody writes the header meanwhile.
        let mut bytes = [0u8; HEADER_SIZE];
        sys::pread_exact(&fd, &mut bytes, 0).map_err(|e| unknown(key, "pread", e))?;
        let zeroed = bytes.iter().all(|&b| b == 0);
        if !zeroed && !header::same_format(&bytes, sys::page_size()) {
            // Not ours, or written by another version or build of this
            // library, whose liveness protocol we cannot assume.
            return Err(foreign());
        }
        if !zeroed {
            // Of this format, but not a segment this program would use
            // (another type, lengths that do not fit, a state no library
            // writes): not ours to discard.
            let not_ours = |why: String| {
                exists(&format!(
                    " and is not a stale segment of this type, so it was left untouched \
                     (remove it by hand if it is stale): {why}"
                ))
            };
            if let Err(e) = header::validate(key, &bytes, st.size, expected) {
                return Err(not_ours(e.to_string()));
            }
            let h: Header = bytemuck::pod_read_unaligned(&bytes);
            if !matches!(h.state, STATE_INIT | STATE_READY | STATE_DESTROYED) {
                return Err(not_ours(format!("its state {:#x} is unknown", h.state)));
            }
        }
        let map = map_all(&fd, key, HEADER_SIZE)?;
        // SAFETY: `map` is a live, page-aligned, read-write HEADER_SIZE-byte
        // mapping of a header of this format that outlives this use; `state`
        // is only accessed atomically.
        unsafe { InPlace::new(map.as_mut_ptr()) }
            .state()
            .store(STATE_DESTROYED, Ordering::Release);
    }
    if name_refers_to(native, &st) {
        unlink(cname);
    }
    Ok(())
}

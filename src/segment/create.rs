//! Creating a segment, and reclaiming a stale one that holds its name.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{
    Attachment, Ctx, Name, Segment, Settings, check_owner, name_refers_to, sleep_backoff, slots, unlink,
};
use crate::area::{self, AREA_OFFSET};
use crate::error::{Error, ErrorKind};
use crate::header::{
    self, Expected, HEADER_SIZE, Header, InPlace, STATE_DESTROYED, STATE_INIT, STATE_READY, Sizes, Validated,
};
use crate::sys::{self, Mapping, OfdLock, OsError, ShmFile, Stat};

/// How often `create` retries after reclaiming a stale object or losing a race.
const CREATE_ATTEMPTS: u32 = 16;

/// Until it is disarmed, removes the name of the object a `create` made — if
/// the name still refers to it — when the `create` fails.
struct Unlink {
    name: Name,
    /// The object this `create` made.
    stat: Stat,
    armed: bool,
}

impl Drop for Unlink {
    fn drop(&mut self) {
        if self.armed && self.name.refers_to(&self.stat) {
            self.name.unlink();
        }
    }
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
        let cx = Ctx { key };
        let name = Name::of(key)?;
        let sizes = plan_sizes(cx, expected, elem_count)?;
        let mode = settings.mode & 0o777;
        let deadline = Instant::now() + settings.timeout;
        // From here on, a failure removes what this call created — if the
        // name still refers to it.
        let (file, mut cleanup) = open_new(cx, &name, expected, mode, deadline)?;
        reserve(cx, &file, &cleanup.stat, mode, settings.group, sizes.total as u64)?;
        let map = initialize(cx, &file, expected, sizes, elem_count, write_data)?;
        let layout = Validated {
            data_offset: sizes.data_offset as u64,
            data_len: sizes.data_len,
            elem_count,
            stride: sizes.stride,
        };
        let attachment = Attachment { map, file };
        let seg = Segment::assemble(key, name, attachment, layout, true);
        seg.publish()?;
        cleanup.armed = false;
        Ok(seg)
    }

    /// Publishes an initialized segment: `state = READY` (release), then
    /// the creator's write lock on byte 0 becomes a read lock, which lets
    /// attachers in.
    fn publish(&self) -> Result<(), Error> {
        let cx = self.cx();
        self.state().store(STATE_READY, Ordering::Release);
        // Converting our write lock to a read lock cannot conflict.
        let file = &self.attachment.as_ref().expect("present until drop").file;
        if !file.lock(OfdLock::Read).map_err(|e| cx.os(e))? {
            return Err(cx.error(ErrorKind::LockError, ": lock conversion refused"));
        }
        Ok(())
    }
}

/// The sizes of the new object, checked against this process's file-size
/// limit (growing a file past it kills the process with SIGXFSZ).
fn plan_sizes(cx: Ctx<'_>, expected: &Expected, elem_count: usize) -> Result<Sizes, Error> {
    let sizes = header::sizes(
        expected.elem_size,
        expected.elem_align,
        elem_count,
        expected.page_size,
        expected.transactional,
    )
    .map_err(|e| cx.error(ErrorKind::InvalidSize, format_args!(": {e}")))?;
    let total = sizes.total as u64;
    if let Some(limit) = sys::file_size_limit()
        && total > limit
    {
        return Err(cx.error(
            ErrorKind::OutOfResources,
            format_args!(
                " needs {total} bytes, above this process's file-size limit (RLIMIT_FSIZE = \
                 {limit} bytes): raise the limit (ulimit -f) or share less"
            ),
        ));
    }
    Ok(sizes)
}

/// Creates the object (reclaiming a stale one that holds the name) and takes
/// the creator's write lock on it; returns it with the guard that removes it
/// if the `create` fails.
fn open_new(
    cx: Ctx<'_>,
    name: &Name,
    expected: &Expected,
    mode: u32,
    deadline: Instant,
) -> Result<(ShmFile, Unlink), Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let file = match ShmFile::open(&name.cname, true, mode) {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) && attempt < CREATE_ATTEMPTS => {
                reclaim(cx.key, &name.native, &name.cname, expected)?;
                continue;
            }
            Err(e) => return Err(cx.os(e)),
        };
        #[cfg(test)]
        tests::race_after_open(cx.key, name, expected);
        if let Err(e) = lock_new(cx, &file, deadline) {
            // Our still empty object.
            name.unlink_if_it_names(&file);
            return Err(e);
        }
        // Until we held the write lock, another `create` could take our
        // still empty object for the leftover of a creator that died,
        // remove it and create its own under the name. Then the name is
        // not ours: start over (and find theirs). Our object then has no
        // name left (see `Name::unlink_if_it_names`).
        let stat = file.stat().map_err(|e| cx.os(e))?;
        if stat.links == 0 {
            continue;
        }
        let cleanup = Unlink {
            name: name.clone(),
            stat,
            armed: true,
        };
        return Ok((file, cleanup));
    }
}

/// Takes the creator's write lock on byte 0 and the first slot of a new
/// object. An attacher may hold a read lock for an instant while it finds
/// the object empty; waits for it to let go, until `deadline`.
fn lock_new(cx: Ctx<'_>, file: &ShmFile, deadline: Instant) -> Result<(), Error> {
    let mut waits = 0;
    while !slots::lock_for_creator(file).map_err(|e| cx.os(e))? {
        waits += 1;
        if Instant::now() >= deadline {
            return Err(cx.error(
                ErrorKind::TimedOut,
                ": could not lock the new object to initialize it",
            ));
        }
        sleep_backoff(waits);
    }
    Ok(())
}

/// Gives the new object its exact mode and reserves its `total` bytes.
fn reserve(
    cx: Ctx<'_>,
    file: &ShmFile,
    stat: &Stat,
    mode: u32,
    group: Option<u32>,
    total: u64,
) -> Result<(), Error> {
    if let Some(gid) = group {
        // Before the mode: a change of group may clear set-id bits.
        file.fchown_group(gid).map_err(|e| {
            if e.raw_os_error() == Some(libc::EPERM) {
                cx.error(
                    ErrorKind::PermissionDenied,
                    format_args!(
                        ": cannot give the segment to group {gid}: this user is not a member of it \
                         (only root may choose any group)"
                    ),
                )
            } else {
                cx.os(e)
            }
        })?;
    }
    // The umask may have cleared bits of the mode given to shm_open; set
    // the exact mode unless it came out right (it usually does for 0600).
    if stat.mode != mode {
        file.fchmod(mode).map_err(|e| cx.os(e))?;
    }
    // posix_fallocate also sets the size, and reserves the memory now: a
    // full /dev/shm is an error here, not a SIGBUS at the first write.
    file.fallocate(total).map_err(|OsError { error, .. }| {
        cx.error_from(
            ErrorKind::OutOfResources,
            format!(
                ": cannot reserve {total} bytes in /dev/shm ({error}): free space there, enlarge \
                 it, or share less"
            ),
            error,
        )
    })
}

/// Maps the new object and writes its header, its lock and its data (state
/// `INIT`: nobody else reads it until it is published).
fn initialize(
    cx: Ctx<'_>,
    file: &ShmFile,
    expected: &Expected,
    sizes: Sizes,
    elem_count: usize,
    write_data: &mut dyn FnMut(*mut u8),
) -> Result<Mapping, Error> {
    let map = file.map(sizes.total).map_err(|e| cx.map("the segment", e))?;
    let h = Header::new(
        expected,
        sizes.data_offset as u64,
        sizes.data_len as u64,
        elem_count as u64,
    );
    let base = map.as_ptr();
    // SAFETY: copy_nonoverlapping requires:
    // - a source valid for reads of HEADER_SIZE bytes: a local `Header`,
    //   which is HEADER_SIZE bytes (statically asserted);
    // - a destination valid for writes of HEADER_SIZE bytes: the start of a
    //   fresh mapping of `sizes.total` > HEADER_SIZE bytes;
    // - no overlap: one is on the stack, the other a new mapping.
    // No other process reads it yet: we hold the write lock, and attachers
    // read only under a read lock.
    unsafe { std::ptr::copy_nonoverlapping(bytemuck::bytes_of(&h).as_ptr(), base, HEADER_SIZE) };
    // The key and the layout, for tools, between the header and the data.
    let area = area::encode(cx.key, expected.layout, sizes.data_offset - AREA_OFFSET);
    // SAFETY: copy_nonoverlapping requires:
    // - a source valid for reads of `area.len()` bytes: the vector;
    // - a destination valid for writes of as many bytes: `area::encode`
    //   keeps `area.len()` within `data_offset - AREA_OFFSET`, so the bytes
    //   lie between the header and the data, inside the fresh mapping;
    // - no overlap: a heap vector and a new mapping.
    unsafe { std::ptr::copy_nonoverlapping(area.as_ptr(), base.wrapping_add(AREA_OFFSET), area.len()) };
    // SAFETY: InPlace::new requires a live, page-aligned, read-write mapping
    // of at least HEADER_SIZE bytes of a header that stays mapped while the
    // value is used, with its in-place fields only accessed atomically: the
    // mapping is all that, and the value is used only in this function.
    let in_place = unsafe { InPlace::new(base) };
    // SAFETY: RawMutex::init requires:
    // - a pointer valid for writes of a `pthread_mutex_t` and aligned for
    //   it: the header's mutex slot, which is large and aligned enough
    //   (statically asserted in `header`) in a page-aligned mapping;
    // - a mutex nobody uses: the header is fresh and we hold the write lock;
    // - that it stays mapped while used: the mapping is returned, to live
    //   in the segment.
    unsafe { sys::RawMutex::init(in_place.mutex()) }
        .map_err(|e| cx.error_from(ErrorKind::LockError, format!(": cannot set up the lock: {e}"), e))?;
    write_data(base.wrapping_add(sizes.data_offset));
    Ok(map)
}

/// `create` found `native` taken: removes it if it is a stale segment of this
/// user that nobody is attached to, and that is either empty or zero-filled
/// (its creator died before writing the header) or a valid segment of the
/// expected layout. Anything else (a foreign file, another format, another
/// type, inconsistent lengths) is left untouched. Returns `Ok` when the caller
/// should try to create again, or `AlreadyExists` saying why not.
fn reclaim(key: &str, native: &str, cname: &CString, expected: &Expected) -> Result<(), Error> {
    let cx = Ctx { key };
    let exists = |why: &str| cx.error(ErrorKind::AlreadyExists, format_args!(" already exists{why}"));
    let fd = match ShmFile::open(cname, false, 0) {
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
            let why = cx.os(e);
            return Err(exists(&format!(" but cannot be opened as a segment: {why}")));
        }
    };
    // Only this user's own stale segments are reclaimed (trusted owners'
    // are theirs to remove).
    let st = match check_owner(cx, &fd, &[]) {
        Ok(st) => st,
        Err(e) => return Err(exists(&format!(" and is not ours to reuse: {e}"))),
    };
    if !fd.lock(OfdLock::Write).map_err(|e| cx.os(e))? {
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
        fd.pread_exact(&mut bytes, 0).map_err(|e| cx.os(e))?;
        let zeroed = header::is_zeroed(&bytes);
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
        let map = fd.map(HEADER_SIZE).map_err(|e| cx.map("the segment", e))?;
        // SAFETY: InPlace::new requires a live, page-aligned, read-write
        // mapping of at least HEADER_SIZE bytes of a header of this format
        // that stays mapped while the value is used, with `state` only
        // accessed atomically: `map` is all that, and outlives this use.
        unsafe { InPlace::new(map.as_ptr()) }
            .state()
            .store(STATE_DESTROYED, Ordering::Release);
    }
    if name_refers_to(native, &st) {
        unlink(cname);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::SharedMemory;

    thread_local! {
        /// Set by a test: the next `create` on this thread is raced once.
        static RACE: Cell<bool> = const { Cell::new(false) };
    }

    /// Called by `open_new` between creating the object and locking it: if
    /// a test asked for it, does what a racing `create` may do right there
    /// — find the object unlocked and empty, take it for the leftover of a
    /// creator that died, and remove it.
    pub(super) fn race_after_open(key: &str, name: &Name, expected: &Expected) {
        if RACE.replace(false) {
            reclaim(key, &name.native, &name.cname, expected).expect("the racer reclaims");
            assert!(
                sys::name_stat(&name.native).is_err(),
                "the racer removed the name"
            );
        }
    }

    /// A `create` whose new object was taken for a stale one and removed
    /// before it could lock it starts over: the segment it returns is the
    /// one its key names.
    #[test]
    fn a_create_whose_new_object_lost_its_name_before_the_lock_starts_over() {
        let key = format!("unit-create-raced-{}", std::process::id());
        RACE.set(true);
        let shm = SharedMemory::<u64>::create(&key, 5).expect("create");
        assert!(!RACE.get(), "the race ran");
        let other = SharedMemory::<u64>::attach(&key)
            .unwrap_or_else(|e| panic!("the segment create returned has no name: {e}"));
        *shm.lock().expect("not poisoned") = 6;
        assert_eq!(*other.lock().expect("not poisoned"), 6, "two different objects");
        drop((shm, other));
        assert!(
            sys::name_stat(&crate::key::native_key(&key).unwrap()).is_err(),
            "the segment outlived its handles"
        );
    }
}

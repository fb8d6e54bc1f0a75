//! Attaching to an existing segment.

use std::time::{Duration, Instant};

use super::{Attachment, Ctx, Name, Segment, Settings, check_owner, sleep_backoff, slots};
use crate::error::{Error, ErrorKind};
use crate::header::{
    self, Expected, HEADER_SIZE, Peeked, STATE_DESTROYED, STATE_INIT, STATE_READY, Validated,
};
use crate::sys::{Call, DirWatch, Mapping, OfdLock, OsError, ShmFile, Stat};

/// How long an attacher waits for a segment that is being initialized or
/// removed, and the error it gives when the time is up.
struct Patience<'a> {
    cx: Ctx<'a>,
    deadline: Instant,
    timeout: Duration,
    /// Owners besides this user whose segments are accepted.
    trusted: &'a [u32],
    /// With `wait_for_creation`: the watch that wakes us when the name
    /// appears.
    watch: Option<DirWatch>,
}

impl Patience<'_> {
    fn timed_out(&self, why: &str) -> Error {
        self.cx.error(
            ErrorKind::TimedOut,
            format_args!(" {why}; waited {:?}", self.timeout),
        )
    }

    /// Sleeps before the next attempt, or says why the time is up.
    fn again(&self, attempt: u32, why: &str) -> Result<(), Error> {
        if Instant::now() >= self.deadline {
            return Err(self.timed_out(why));
        }
        sleep_backoff(attempt);
        Ok(())
    }
}

impl Segment {
    /// Attaches to the existing object `key`, whose layout must be `expected`.
    pub(crate) fn attach(
        key: &str,
        expected: &Expected,
        writable: bool,
        settings: Settings,
    ) -> Result<Segment, Error> {
        let cx = Ctx { key };
        let name = Name::of(key)?;
        if expected.elem_size == 0 {
            return Err(cx.error(ErrorKind::InvalidSize, ": a zero-sized type holds no data"));
        }
        let deadline = Instant::now() + settings.timeout;
        // Watch before the first look, so a creation in between wakes us.
        let watch = match settings.wait_for_creation {
            true => Some(DirWatch::dev_shm().map_err(|e| cx.os(e))?),
            false => None,
        };
        let patience = Patience {
            cx,
            deadline,
            timeout: settings.timeout,
            trusted: &settings.trusted,
            watch,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some((file, st)) = open_locked(&patience, &name, attempt)? else {
                continue;
            };
            // A copy of the header, read under our read lock: the creator
            // published it before giving up its write lock.
            let mut bytes = [0u8; HEADER_SIZE];
            file.pread_exact(&mut bytes, 0).map_err(|e| cx.os(e))?;
            if !is_ready(&patience, &name, &st, &bytes, attempt)? {
                continue;
            }
            // READY under our read lock also means the name still refers to
            // this object: a reclaimer or a last handle marks the state
            // DESTROYED, under the write lock, before it removes the name.
            let layout = header::validate(key, &bytes, st.size, expected)?;
            let map = map_validated(cx, &file, layout, writable)?;
            slots::take(cx, &file)?;
            let attachment = Attachment { map, file };
            return Ok(Segment::assemble(key, name, attachment, layout, false));
        }
    }
}

/// Opens the object, checks its owner and takes the read lock on byte 0.
/// `None`: not ready yet (being initialized or removed, or still empty);
/// waited a little, try again.
fn open_locked(patience: &Patience<'_>, name: &Name, attempt: u32) -> Result<Option<(ShmFile, Stat)>, Error> {
    let cx = patience.cx;
    let file = match ShmFile::open(&name.cname, false, 0) {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) && patience.watch.is_some() => {
            let watch = patience.watch.as_ref().expect("checked above");
            let file_name = name.native.trim_start_matches('/');
            if !watch
                .wait_for(file_name, patience.deadline)
                .map_err(|e| cx.os(e))?
            {
                return Err(patience.timed_out("was not created by any process"));
            }
            return Ok(None);
        }
        Err(e) => return Err(cx.os(e)),
    };
    // The size is final once a creator has sized the object, and one
    // that is still 0 is retried below.
    let st = check_owner(cx, &file, patience.trusted)?;
    if !file.lock(OfdLock::Read).map_err(|e| cx.os(e))? {
        // A creator is initializing it, or the last handle is removing it.
        patience.again(
            attempt,
            "is still being initialized (or removed) by another process",
        )?;
        return Ok(None);
    }
    if st.size == 0 {
        // Created, not yet locked by its creator — or its creator died
        // right after creating it.
        drop(file);
        patience.again(
            attempt,
            "exists but was never initialized: its creator died or is stuck \
             (create or open_or_create reclaims it once nobody uses it)",
        )?;
        return Ok(None);
    }
    if st.size < HEADER_SIZE as u64 {
        return Err(cx.error(
            ErrorKind::Corrupted,
            format_args!(
                " is not a typed-shm segment: it is {} bytes long, shorter than the \
                 {HEADER_SIZE}-byte header; it was left untouched",
                st.size
            ),
        ));
    }
    Ok(Some((file, st)))
}

/// Whether the header copy `bytes` says the segment is ready; `false`: it
/// was removed while we opened it (waited a little, try again).
fn is_ready(
    patience: &Patience<'_>,
    name: &Name,
    st: &Stat,
    bytes: &[u8; HEADER_SIZE],
    attempt: u32,
) -> Result<bool, Error> {
    let cx = patience.cx;
    match header::peek(bytes) {
        Peeked::Zeroed => Err(patience.timed_out(
            "was never initialized: the process creating it died first \
             (create or open_or_create reclaims it)",
        )),
        Peeked::Foreign => Err(cx.error(
            ErrorKind::Corrupted,
            " is not a typed-shm segment (its first bytes are not the typed-shm magic); it was \
             left untouched",
        )),
        Peeked::State(STATE_READY) => Ok(true),
        Peeked::State(STATE_DESTROYED) => {
            // A remover marks the state and removes the name while it
            // holds the write lock. We hold a read lock: if the name
            // still refers to this object, the remover died in
            // between, and the object is gone all the same.
            if name.refers_to(st) {
                return Err(cx.error(
                    ErrorKind::NotFound,
                    " was destroyed by its last user, who could not remove its name (a \
                     process that died while removing it, or a user other than the owner: \
                     /dev/shm is sticky); the owner's create or open_or_create makes a new \
                     one",
                ));
            }
            // Its last handle removed it while we opened it: start over.
            patience.again(attempt, "kept being removed while attaching")?;
            Ok(false)
        }
        Peeked::State(STATE_INIT) => Err(patience.timed_out(
            "was never fully initialized: the process creating it died part-way \
             (create or open_or_create reclaims it)",
        )),
        Peeked::State(other) => Err(cx.error(
            ErrorKind::Corrupted,
            format_args!(" has an unknown state {other:#x}; it was left untouched"),
        )),
    }
}

/// Maps the header and the validated data; a read-only handle's data
/// becomes `PROT_READ`.
fn map_validated(cx: Ctx<'_>, file: &ShmFile, layout: Validated, writable: bool) -> Result<Mapping, Error> {
    // Validated: data_offset + data_len <= the file's length, and
    // data_offset is a page boundary.
    let len = layout
        .map_len()
        .ok_or_else(|| cx.map("the segment", OsError::errno(Call::Mmap, libc::ENOMEM)))?;
    let map = file.map(len).map_err(|e| cx.map("the segment", e))?;
    if !writable {
        map.protect_read_only(len - layout.span(), layout.span())
            .map_err(|e| cx.map("the segment data", e))?;
    }
    Ok(map)
}

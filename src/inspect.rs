//! Untyped inspection of segments, for tools: open a segment by key without
//! its Rust type, read what its header says, its decoded layout, who is
//! attached, the state of its lock and a consistent copy of its bytes; list
//! this user's segments; remove one safely. The `tshm` command is built on
//! this module.
//!
//! Inspecting is not attaching: a [`Segment`] takes no lock on the object
//! and is not counted by [`attach_count`](Segment::attach_count), it never
//! keeps a segment alive (when its last user detaches, the segment is
//! removed as usual; an open `Segment` keeps reading its memory), and it
//! never takes the segment's lock. It reads with the snapshot protocol
//! (see [`SharedMemory::snapshot`](crate::SharedMemory::snapshot)), so it
//! never holds up a writer. Only this user's segments are opened, and only
//! files that pass the header's validation and whose stored key gives back
//! their file name; anything else in `/dev/shm` is left alone.
//!
//! # What a segment stores for tools
//!
//! After the fixed 576-byte header, in the rest of the header page (up to
//! `data_offset`, the page size), the creator stores the *description
//! area*; integers are little-endian:
//!
//! | offset | field | |
//! |---|---|---|
//! | 576 | `key_len: u32` | bytes of the key (1..=255) |
//! | 580 | `layout_len: u32` | bytes of the encoded layout; 0 when omitted |
//! | 584 | `flags: u32` | bit 0: the layout was omitted because it does not fit |
//! | 588 | reserved | zero |
//! | 592 | key | UTF-8, `key_len` bytes |
//! | 592 + `key_len` | layout | `layout_len` bytes, encoded as below |
//!
//! A layout that does not fit in the header page (a struct of roughly 150
//! fields or more) is not stored; bit 0 says so, the segment works as any
//! other, and [`Segment::layout`] is `None` (the one-line
//! [`description`](Segment::description) is still there).
//!
//! The layout is the element type's [`TypeLayout`](crate::TypeLayout),
//! encoded as one node, depth first:
//!
//! | node | bytes |
//! |---|---|
//! | primitive | `1`, kind `u8` ([`Primitive::code`](crate::Primitive::code): 1 = `u8` … 14 = `isize`, in the order of [`Primitive`](crate::Primitive)), size `u32`, align `u32` |
//! | array | `2`, length `u64`, size `u64`, align `u32`, then the element's node |
//! | struct | `3`, name length `u16`, name, size `u64`, align `u32`, field count `u32`, then per field: name length `u16`, name, offset `u64`, the field's node |
//!
//! [`decode`] checks every length against the bytes, nesting up to
//! [`MAX_DEPTH`], primitive sizes against their kind, array sizes against
//! element size × length, alignments and that each field lies inside its
//! struct; [`Segment::open`] also checks that the layout's
//! [`fingerprint`](Layout::fingerprint) is the header's and its size the
//! element size, so a stored layout that does not describe the data is
//! refused.
//!
//! # Examples
//!
//! ```
//! use typed_shm::{SharedMemory, ShmSafe, inspect};
//!
//! #[derive(Clone, Copy, ShmSafe)]
//! #[repr(C)]
//! struct Telemetry { seq: u64, temps: [f32; 2] }
//!
//! # let key = format!("doc-inspect-{}", std::process::id());
//! let shm = SharedMemory::<Telemetry>::create(&key, Telemetry { seq: 7, temps: [0.5, 1.5] })?;
//!
//! let seg = inspect::Segment::open(&key)?;
//! assert_eq!(seg.description(), "Telemetry { seq: u64 @0, temps: [f32; 2] @8 }");
//! assert_eq!(seg.attach_count(), 1);
//! assert_eq!(seg.lock_state(), inspect::LockState::Free);
//! let copy = seg.snapshot()?;
//! assert_eq!(copy.bytes[..8], 7u64.to_ne_bytes());
//! # Ok::<(), typed_shm::Error>(())
//! ```
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::area;
use crate::error::{Error, ErrorKind};
use crate::header::{self, HEADER_SIZE, Header, InPlace, STATE_DESTROYED, STATE_INIT, STATE_READY};
use crate::key;
use crate::segment::count_others;
use crate::seq::Read;
use crate::sync::ShmMutex;
use crate::sys::{self, Mapping, OfdLock, Owner, ShmFile, Stat};

pub use crate::layout::{DecodeError, Field, Layout, MAX_DEPTH, decode};

/// `flags` bit 0 of the header: the data is a slice.
const FLAG_SLICE: u32 = 1;
/// `flags` bit 1 of the header: the segment is transactional.
const FLAG_TRANSACTIONAL: u32 = 2;
/// Where the names of POSIX shared-memory objects appear (glibc).
const SHM_DIR: &str = "/dev/shm";
/// The prefix of every native key (after the leading `/`).
const PREFIX: &str = "tshm_";

/// The segment's lock, as seen from outside.
///
/// # Examples
///
/// ```
/// assert_eq!(typed_shm::inspect::LockState::Held.as_str(), "held");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockState {
    /// Nobody holds it, and it is not poisoned.
    Free,
    /// A live thread holds it.
    Held,
    /// A holder died or panicked, and nobody cleared the poison (it may be
    /// held at the same time).
    Poisoned,
}

impl LockState {
    /// `"free"`, `"held"` or `"poisoned"`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(typed_shm::inspect::LockState::Poisoned.as_str(), "poisoned");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            LockState::Free => "free",
            LockState::Held => "held",
            LockState::Poisoned => "poisoned",
        }
    }
}

/// Where a segment is in its life, per its header's state word.
///
/// # Examples
///
/// ```
/// assert_ne!(typed_shm::inspect::State::Ready, typed_shm::inspect::State::Initializing);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Its creator is initializing it — or died doing so (then it is
    /// [stale](Segment::is_stale)).
    Initializing,
    /// Published: in use, or left behind by users that all died.
    Ready,
    /// Being removed (or its remover died before removing the name).
    Destroyed,
}

/// A consistent copy of a segment's data (see [`Segment::snapshot`]).
///
/// # Examples
///
/// ```
/// # use typed_shm::{SharedMemory, inspect};
/// # let key = format!("doc-inspect-snapshot-{}", std::process::id());
/// let shm = SharedMemory::<[u16]>::create_slice(&key, 3, 9)?;
/// let copy = inspect::Segment::open(&key)?.snapshot()?;
/// assert_eq!((copy.bytes.len(), copy.version, copy.poisoned), (6, 0, false));
/// # Ok::<(), typed_shm::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The data, all of one commit ([`Segment::size`] bytes), in the
    /// element type's layout.
    pub bytes: Vec<u8>,
    /// The version the copy was taken at (the commits before it).
    pub version: u64,
    /// Whether the segment is poisoned; the copy is then the data as it
    /// stands.
    pub poisoned: bool,
}

/// What [`remove`] did.
///
/// # Examples
///
/// ```
/// # use typed_shm::{SharedMemory, inspect};
/// # let key = format!("doc-removal-{}", std::process::id());
/// let shm = SharedMemory::<u8>::create(&key, 0)?;
/// assert_eq!(inspect::remove(&key, false)?, inspect::Removal::InUse { attached: 1 });
/// # Ok::<(), typed_shm::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a segment in use is not removed: check the outcome"]
pub enum Removal {
    /// The name is gone; `attached` handles were still attached (only when
    /// forced; they keep working on the unnamed object, and the last one
    /// frees its memory).
    Removed {
        /// Live attachments at the time of removal.
        attached: usize,
    },
    /// Not removed: processes are attached, and it was not forced.
    InUse {
        /// Live attachments.
        attached: usize,
    },
}

/// The facts about one segment, as [`list`] gives them.
///
/// # Examples
///
/// ```
/// # use typed_shm::{SharedMemory, inspect};
/// # let key = format!("doc-summary-{}", std::process::id());
/// let shm = SharedMemory::<u32>::create(&key, 1)?;
/// let s = inspect::Segment::open(&key)?.summary();
/// assert_eq!((s.key.as_str(), s.size, s.len, s.attached, s.stale), (key.as_str(), 4, 1, 1, false));
/// # Ok::<(), typed_shm::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// The user's key.
    pub key: String,
    /// The OS name (`/tshm_…`).
    pub native_key: String,
    /// The readable layout of the element type (a slice shows as `[E]`).
    pub description: String,
    /// Bytes of data.
    pub size: usize,
    /// Elements: 1, or the slice length.
    pub len: usize,
    /// Whether the data is a slice.
    pub slice: bool,
    /// Live attachments, all processes.
    pub attached: usize,
    /// The lock.
    pub lock: LockState,
    /// Commits so far.
    pub version: u64,
    /// Whether the segment is transactional.
    pub transactional: bool,
    /// Whether nobody is attached (its users died, or it is being removed).
    pub stale: bool,
    /// The state word.
    pub state: State,
}

/// A segment opened for inspection, by key, without its Rust type. See the
/// [module docs](self) for what that means and what it never does.
pub struct Segment {
    key: String,
    native: String,
    header: Header,
    layout: Option<Layout>,
    data_offset: usize,
    data_len: usize,
    elem_count: usize,
    /// The lock and sequence words (present once the segment is published).
    /// Declared before `map`: dropped while the mapping is still there.
    mutex: Option<ShmMutex>,
    map: Mapping,
    file: ShmFile,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("key", &self.key)
            .field("native_key", &self.native)
            .field("description", &self.description())
            .field("size", &self.data_len)
            .field("len", &self.elem_count)
            .finish_non_exhaustive()
    }
}

fn corrupted(native: &str, why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Corrupted,
        format!("{SHM_DIR}{native} is not a valid typed-shm segment: {why}; it was left untouched"),
    )
}

/// `error` about `native`, told with the key it was opened by.
fn with_key(key: Option<&str>, error: Error) -> Error {
    match key {
        Some(key) if error.kind() == ErrorKind::NotFound => Error::new(
            ErrorKind::NotFound,
            format!("no segment {key:?} exists (of this user)"),
        ),
        _ => error,
    }
}

/// Opens `native` (e.g. `/tshm_stats`) if it is a regular file of this user.
fn open_own(native: &str) -> Result<(ShmFile, Stat), Error> {
    let cname = CString::new(native).map_err(|_| Error::new(ErrorKind::KeyError, "NUL in name"))?;
    let file = ShmFile::open(&cname, false, 0).map_err(|e| Error::os(native, e))?;
    let st = file.stat().map_err(|e| Error::os(native, e))?;
    if !st.regular {
        return Err(corrupted(native, "it is not a regular file"));
    }
    let me = sys::effective_uid(st.uid);
    if st.uid != me {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "{SHM_DIR}{native} belongs to uid {}, not to this user (uid {me}); it is not inspected",
                st.uid
            ),
        ));
    }
    Ok((file, st))
}

/// Reads and validates the header page of `file`: the header, the
/// description area, and that the stored key names this file.
fn read_page(
    native: &str,
    file: &ShmFile,
    st: &Stat,
) -> Result<(Header, header::Validated, area::Described), Error> {
    let page = sys::page_size();
    if st.size < HEADER_SIZE as u64 {
        return Err(corrupted(
            native,
            format_args!("it is only {} bytes long", st.size),
        ));
    }
    let len = usize::try_from(st.size.min(page as u64)).unwrap_or(HEADER_SIZE);
    let mut bytes = vec![0u8; len];
    file.pread_exact(&mut bytes, 0)
        .map_err(|e| Error::os(native, e))?;
    let (h, validated) = header::validate_untyped(native, &bytes, st.size, page)?;
    let area_end = usize::try_from(validated.data_offset)
        .unwrap_or(usize::MAX)
        .min(len);
    let described = area::decode(bytes.get(area::AREA_OFFSET..area_end).unwrap_or(&[]))
        .map_err(|e| corrupted(native, format_args!("its description area is bad: {e}")))?;
    if key::native_key(&described.key).ok().as_deref() != Some(native) {
        return Err(corrupted(
            native,
            format_args!("its stored key {:?} does not give its name", described.key),
        ));
    }
    if let Some(layout) = &described.layout
        && (layout.fingerprint() != h.fingerprint || layout.size() as u64 != h.elem_size)
    {
        return Err(corrupted(
            native,
            "its stored layout does not match the fingerprint and element size in its header",
        ));
    }
    Ok((h, validated, described))
}

impl Segment {
    /// Opens the segment `key` for inspection.
    ///
    /// # Errors
    ///
    /// - [`ErrorKind::NotFound`]: no such segment;
    /// - [`ErrorKind::PermissionDenied`]: it belongs to another user;
    /// - [`ErrorKind::Corrupted`]: not a valid typed-shm segment (a foreign
    ///   file, a bad header or description area);
    /// - [`ErrorKind::IncompatibleVersion`]: made by an incompatible build;
    /// - [`ErrorKind::KeyError`]: an invalid key.
    ///
    /// # Examples
    ///
    /// ```
    /// use typed_shm::{ErrorKind, inspect};
    /// let err = inspect::Segment::open("no-such-segment-anywhere").unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::NotFound);
    /// ```
    pub fn open(key: &str) -> Result<Segment, Error> {
        let native = key::native_key(key)?;
        let seg = Segment::open_native(&native).map_err(|e| with_key(Some(key), e))?;
        if seg.key != key {
            return Err(corrupted(
                &native,
                format_args!("it stores the key {:?}", seg.key),
            ));
        }
        Ok(seg)
    }

    fn open_native(native: &str) -> Result<Segment, Error> {
        let (file, st) = open_own(native)?;
        let (header, validated, described) = read_page(native, &file, &st)?;
        let map_len = validated
            .map_len()
            .ok_or_else(|| corrupted(native, "it does not fit this process's address space"))?;
        let map = file.map(map_len).map_err(|e| Error::os(native, e))?;
        let data_offset = map_len - validated.span();
        map.protect_read_only(data_offset, validated.span())
            .map_err(|e| Error::os(native, e))?;
        // SAFETY: InPlace::new requires:
        // - a live, page-aligned, read-write mapping of at least HEADER_SIZE
        //   bytes of a segment header: `map` starts at the header (validated
        //   above) and spans the header page read-write (only the data was
        //   made read-only);
        // - that it stays mapped while the value is used: `in_place` is used
        //   only in this function and by the mutex, which `Segment` drops
        //   before `map`;
        // - that every process accesses the in-place fields only atomically:
        //   this library's protocol.
        let in_place = unsafe { InPlace::new(map.as_ptr()) };
        let data = map.as_ptr().wrapping_add(data_offset);
        let buffers = crate::header::data_buffers(data, validated.stride);
        let mutex = if in_place.state().load(Ordering::Acquire) == STATE_READY {
            // SAFETY: ShmMutex::new requires:
            // - a mutex initialized by RawMutex::init: the creator did so
            //   before it published READY (loaded above with acquire);
            // - the header words that go with it, aligned and only accessed
            //   atomically: `InPlace` gives the fields pinned in `header`;
            // - that they stay mapped while the mutex lives: `Segment` drops
            //   `mutex` before `map`;
            // - for a transactional segment, its two buffers: `stride` apart
            //   from the validated data offset, `data_len` bytes each, inside
            //   the mapping (validated), 8-aligned (page aligned).
            Some(unsafe {
                ShmMutex::new(
                    in_place,
                    &described.key,
                    sys::fork_generation(),
                    buffers,
                    validated.data_len,
                    None,
                )
            })
        } else {
            None
        };
        Ok(Segment {
            key: described.key,
            native: native.to_owned(),
            header,
            layout: described.layout,
            data_offset,
            data_len: validated.data_len,
            elem_count: validated.elem_count,
            mutex,
            map,
            file,
        })
    }

    fn in_place(&self) -> InPlace {
        // SAFETY: InPlace::new requires a live, page-aligned, read-write
        // mapping of the header that stays mapped while the value is used,
        // with its in-place fields only accessed atomically: `self.map`, as
        // in `open_native`; the value does not outlive `&self`.
        unsafe { InPlace::new(self.map.as_ptr()) }
    }

    /// The key the creator was given.
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::{SharedMemory, inspect};
    /// # let key = format!("doc-inspect-key-{}", std::process::id());
    /// # let shm = SharedMemory::<u8>::create(&key, 0)?;
    /// assert_eq!(inspect::Segment::open(&key)?.key(), key);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The OS name, e.g. `/tshm_stats` (the file `/dev/shm/tshm_stats`).
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::{SharedMemory, inspect};
    /// # let key = format!("doc-inspect-native-{}", std::process::id());
    /// # let shm = SharedMemory::<u8>::create(&key, 0)?;
    /// assert_eq!(inspect::Segment::open(&key)?.native_key(), shm.native_key());
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn native_key(&self) -> &str {
        &self.native
    }

    /// The readable layout of the element type stored in the header, as a
    /// `LayoutMismatch` error shows it (`Telemetry { seq: u64 @0, … }`);
    /// a slice segment shows the element's.
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::{SharedMemory, inspect};
    /// # let key = format!("doc-inspect-desc-{}", std::process::id());
    /// # let shm = SharedMemory::<[u32; 2]>::create(&key, [0; 2])?;
    /// assert_eq!(inspect::Segment::open(&key)?.description(), "[u32; 2]");
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn description(&self) -> String {
        self.header.description()
    }

    /// The element type's decoded layout; `None` when the creator could not
    /// store it (see the [module docs](self)).
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::{SharedMemory, ShmSafe, inspect};
    /// # let key = format!("doc-inspect-layout-{}", std::process::id());
    /// # let shm = SharedMemory::<[u32; 2]>::create(&key, [0; 2])?;
    /// let seg = inspect::Segment::open(&key)?;
    /// assert_eq!(seg.layout(), Some(&inspect::Layout::from(<[u32; 2]>::LAYOUT)));
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn layout(&self) -> Option<&Layout> {
        self.layout.as_ref()
    }

    /// Bytes of data (element size × [`len`](Self::len)).
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::{SharedMemory, inspect};
    /// # let key = format!("doc-inspect-size-{}", std::process::id());
    /// # let shm = SharedMemory::<[u16]>::create_slice(&key, 5, 0)?;
    /// assert_eq!(inspect::Segment::open(&key)?.size(), 10);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn size(&self) -> usize {
        self.data_len
    }

    /// Elements: 1 for a single value, else the slice length.
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::{SharedMemory, inspect};
    /// # let key = format!("doc-inspect-len-{}", std::process::id());
    /// # let shm = SharedMemory::<[u16]>::create_slice(&key, 5, 0)?;
    /// assert_eq!(inspect::Segment::open(&key)?.len(), 5);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    #[allow(clippy::len_without_is_empty)] // segments are never empty
    pub fn len(&self) -> usize {
        self.elem_count
    }

    /// Bytes of one element.
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::{SharedMemory, inspect};
    /// # let key = format!("doc-inspect-elem-{}", std::process::id());
    /// # let shm = SharedMemory::<[u16]>::create_slice(&key, 5, 0)?;
    /// assert_eq!(inspect::Segment::open(&key)?.element_size(), 2);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn element_size(&self) -> usize {
        usize::try_from(self.header.elem_size).unwrap_or(usize::MAX)
    }

    /// Whether the data is a slice (`SharedMemory<[E]>`).
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::{SharedMemory, inspect};
    /// # let key = format!("doc-inspect-slice-{}", std::process::id());
    /// # let shm = SharedMemory::<[u16]>::create_slice(&key, 5, 0)?;
    /// assert!(inspect::Segment::open(&key)?.is_slice());
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn is_slice(&self) -> bool {
        self.header.flags & FLAG_SLICE != 0
    }

    /// Whether the segment is transactional (bit 1 of the header's flags).
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::{SharedMemory, inspect};
    /// # let key = format!("doc-inspect-tx-{}", std::process::id());
    /// # let shm = SharedMemory::<u8>::create(&key, 0)?;
    /// assert!(!inspect::Segment::open(&key)?.is_transactional());
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn is_transactional(&self) -> bool {
        self.header.flags & FLAG_TRANSACTIONAL != 0
    }

    /// Where the data starts in the object (a page boundary): what a
    /// program in another language maps.
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::{SharedMemory, inspect};
    /// # let key = format!("doc-inspect-offset-{}", std::process::id());
    /// # let shm = SharedMemory::<u8>::create(&key, 0)?;
    /// assert_eq!(inspect::Segment::open(&key)?.data_offset() % 4096, 0);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn data_offset(&self) -> usize {
        self.data_offset
    }

    /// The element type's layout fingerprint, from the header.
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::{SharedMemory, ShmSafe, inspect};
    /// # let key = format!("doc-inspect-fp-{}", std::process::id());
    /// # let shm = SharedMemory::<u8>::create(&key, 0)?;
    /// assert_eq!(inspect::Segment::open(&key)?.fingerprint(), u8::FINGERPRINT);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn fingerprint(&self) -> u64 {
        self.header.fingerprint
    }

    /// The state word, read now.
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::{SharedMemory, inspect};
    /// # let key = format!("doc-inspect-state-{}", std::process::id());
    /// # let shm = SharedMemory::<u8>::create(&key, 0)?;
    /// assert_eq!(inspect::Segment::open(&key)?.state(), inspect::State::Ready);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn state(&self) -> State {
        match self.in_place().state().load(Ordering::Acquire) {
            STATE_READY => State::Ready,
            STATE_INIT => State::Initializing,
            _ => State::Destroyed,
        }
    }

    /// Commits so far, in all processes.
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::{SharedMemory, inspect};
    /// # let key = format!("doc-inspect-version-{}", std::process::id());
    /// let shm = SharedMemory::<u8>::create(&key, 0)?;
    /// *shm.lock().unwrap() = 1;
    /// assert_eq!(inspect::Segment::open(&key)?.version(), 1);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn version(&self) -> u64 {
        // A segment not yet published (no lock words to read) has no commits.
        self.mutex.as_ref().map_or(0, ShmMutex::version)
    }

    /// Live attachments, all processes (exact: counted by the kernel's
    /// locks; this inspection is not one of them).
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::{SharedMemory, inspect};
    /// # let key = format!("doc-inspect-count-{}", std::process::id());
    /// let a = SharedMemory::<u8>::create(&key, 0)?;
    /// let b = SharedMemory::<u8>::attach(&key)?;
    /// assert_eq!(inspect::Segment::open(&key)?.attach_count(), 2);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn attach_count(&self) -> usize {
        count_others(&self.file).unwrap_or(0)
    }

    /// Whether nobody is attached: every user died without detaching (or a
    /// remover is at work). A stale segment is removed by [`remove`], by
    /// `tshm gc`, or by the next `create` of its key.
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::{SharedMemory, inspect};
    /// # let key = format!("doc-inspect-stale-{}", std::process::id());
    /// # let shm = SharedMemory::<u8>::create(&key, 0)?;
    /// assert!(!inspect::Segment::open(&key)?.is_stale());
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn is_stale(&self) -> bool {
        // Every handle holds a read lock on byte 0, and a creator a write
        // lock: any lock there is a live user.
        matches!(self.file.conflict(0, 1), Ok(None))
    }

    /// The lock: free, held by a live thread, or poisoned.
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::{SharedMemory, inspect::{self, LockState}};
    /// # let key = format!("doc-inspect-lock-{}", std::process::id());
    /// let shm = SharedMemory::<u8>::create(&key, 0)?;
    /// let seg = inspect::Segment::open(&key)?;
    /// let guard = shm.lock().unwrap();
    /// assert_eq!(seg.lock_state(), LockState::Held);
    /// drop(guard);
    /// assert_eq!(seg.lock_state(), LockState::Free);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn lock_state(&self) -> LockState {
        match &self.mutex {
            Some(m) if m.is_poisoned() => LockState::Poisoned,
            Some(m) if m.owner() == Owner::Thread => LockState::Held,
            Some(_) => LockState::Free,
            // Not published: the header copy says whether it was poisoned.
            None if self.header.poisoned != 0 => LockState::Poisoned,
            None => LockState::Free,
        }
    }

    /// The facts [`list`] shows, read now.
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::{SharedMemory, inspect};
    /// # let key = format!("doc-inspect-summary-{}", std::process::id());
    /// # let shm = SharedMemory::<[u8]>::create_slice(&key, 3, 0)?;
    /// let s = inspect::Segment::open(&key)?.summary();
    /// assert_eq!((s.description.as_str(), s.len, s.slice), ("[u8]", 3, true));
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn summary(&self) -> Summary {
        let description = if self.is_slice() {
            format!("[{}]", self.description())
        } else {
            self.description()
        };
        Summary {
            key: self.key.clone(),
            native_key: self.native.clone(),
            description,
            size: self.size(),
            len: self.len(),
            slice: self.is_slice(),
            attached: self.attach_count(),
            lock: self.lock_state(),
            version: self.version(),
            transactional: self.is_transactional(),
            stale: self.is_stale(),
            state: self.state(),
        }
    }

    fn mutex(&self) -> Result<&ShmMutex, Error> {
        self.mutex.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::TimedOut,
                format!(
                    "segment {:?} is not published (its creator is initializing it, or died doing so)",
                    self.key
                ),
            )
        })
    }

    /// A consistent copy of the data (all of one commit), taken with the
    /// snapshot protocol: no lock, never holding up a writer, nothing
    /// written to the segment. A poisoned segment gives the data as it
    /// stands, with [`Snapshot::poisoned`] set.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::TimedOut`] if the segment was never published.
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::{SharedMemory, inspect};
    /// # let key = format!("doc-inspect-snap-{}", std::process::id());
    /// let shm = SharedMemory::<u32>::create(&key, 0)?;
    /// *shm.lock().unwrap() = 0xabcd;
    /// let copy = inspect::Segment::open(&key)?.snapshot()?;
    /// assert_eq!(copy.bytes, 0xabcd_u32.to_ne_bytes());
    /// assert_eq!((copy.version, copy.poisoned), (1, false));
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn snapshot(&self) -> Result<Snapshot, Error> {
        self.read(None)
    }

    /// Like [`snapshot`](Self::snapshot), giving up after `timeout` when no
    /// consistent copy could be taken (a writer stayed mid-commit).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::TimedOut`] after `timeout`, or if never published.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use typed_shm::{SharedMemory, inspect};
    /// # let key = format!("doc-inspect-snapt-{}", std::process::id());
    /// # let shm = SharedMemory::<u8>::create(&key, 3)?;
    /// let copy = inspect::Segment::open(&key)?.snapshot_timeout(Duration::from_millis(50))?;
    /// assert_eq!(copy.bytes, [3]);
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn snapshot_timeout(&self, timeout: Duration) -> Result<Snapshot, Error> {
        self.read(Some(Instant::now() + timeout))
    }

    fn read(&self, deadline: Option<Instant>) -> Result<Snapshot, Error> {
        let mutex = self.mutex()?;
        let mut bytes = vec![0u8; self.data_len];
        loop {
            let before = mutex.version();
            // SAFETY: ShmMutex::read requires:
            // - the segment's data as the source, 8-aligned, `data_len`
            //   bytes, mapped while `self` lives: it starts at the page
            //   boundary `data_offset` of `self.map`, which spans it;
            // - a destination valid for writes of `data_len` bytes: `bytes`.
            let read = unsafe {
                mutex.read(
                    self.map.as_ptr().wrapping_add(self.data_offset),
                    bytes.as_mut_ptr(),
                    self.data_len,
                    deadline,
                )
            };
            let poisoned = match read {
                Read::Clean => false,
                Read::Poisoned => true,
                Read::TimedOut => {
                    return Err(Error::new(
                        ErrorKind::TimedOut,
                        format!(
                            "segment {:?}: no consistent copy in time (a writer stayed mid-commit)",
                            self.key
                        ),
                    ));
                }
            };
            let after = mutex.version();
            // The copy is of one commit; if the version moved meanwhile, we
            // cannot tell which: copy again (a poisoned copy is as it stands).
            if after == before || poisoned {
                return Ok(Snapshot {
                    bytes,
                    version: after,
                    poisoned,
                });
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Snapshot {
                    bytes,
                    version: after,
                    poisoned,
                });
            }
        }
    }

    /// Blocks until the version differs from `since` (or the segment is
    /// poisoned), at most `timeout` if given, and returns the version — woken
    /// by the committer, like
    /// [`SharedMemory::wait_for_change`](crate::SharedMemory::wait_for_change).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::TimedOut`] when `timeout` passes first, or if the
    /// segment was never published.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use typed_shm::{SharedMemory, inspect};
    /// # let key = format!("doc-inspect-wait-{}", std::process::id());
    /// let shm = SharedMemory::<u8>::create(&key, 0)?;
    /// let seg = inspect::Segment::open(&key)?;
    /// std::thread::scope(|s| {
    ///     s.spawn(|| *shm.lock().unwrap() = 1);
    ///     assert_eq!(seg.wait_for_change(0, Some(Duration::from_secs(5))).unwrap(), 1);
    /// });
    /// # Ok::<(), typed_shm::Error>(())
    /// ```
    pub fn wait_for_change(&self, since: u64, timeout: Option<Duration>) -> Result<u64, Error> {
        let deadline = timeout.map(|t| Instant::now() + t);
        self.mutex()?.wait_for_change(since, deadline).ok_or_else(|| {
            Error::new(
                ErrorKind::TimedOut,
                format!("segment {:?}: no commit after version {since} in time", self.key),
            )
        })
    }
}

/// Every typed-shm segment of this user in `/dev/shm`, sorted by key.
/// Files of other users, files that are not valid typed-shm segments, and
/// segments removed while listing are left out (and never touched).
///
/// # Errors
///
/// Only if `/dev/shm` cannot be read.
///
/// # Examples
///
/// ```
/// # use typed_shm::{SharedMemory, inspect};
/// # let key = format!("doc-list-{}", std::process::id());
/// let shm = SharedMemory::<u64>::create(&key, 0)?;
/// let all = inspect::list()?;
/// let mine = all.iter().find(|s| s.key == key).unwrap();
/// assert_eq!((mine.attached, mine.stale, mine.description.as_str()), (1, false, "u64"));
/// # Ok::<(), typed_shm::Error>(())
/// ```
pub fn list() -> Result<Vec<Summary>, Error> {
    let dir = std::fs::read_dir(SHM_DIR)
        .map_err(|e| Error::with_source(ErrorKind::Unknown, format!("cannot read {SHM_DIR}: {e}"), e))?;
    let me = sys::effective_uid(u32::MAX);
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(PREFIX) {
            continue;
        }
        // Cheap refusals first, without opening: other users' files and
        // anything that is not a regular file.
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.file_type().is_file() || meta.uid() != me {
            continue;
        }
        if let Ok(seg) = Segment::open_native(&format!("/{name}")) {
            out.push(seg.summary());
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// Removes the segment `key`: only a valid typed-shm segment of this user,
/// and — unless `force` — only when nobody is attached (checked and done
/// under the same exclusive lock that a last detacher takes, so no process
/// can attach in between). Forced while processes are attached, the name
/// goes at once: they keep working on the unnamed object, new attachers get
/// `NotFound`, and the memory is freed when the last of them detaches.
///
/// # Errors
///
/// As for [`Segment::open`]: `NotFound`, `PermissionDenied` (another
/// user's), `Corrupted` (not a valid typed-shm segment: never removed),
/// `IncompatibleVersion`.
///
/// # Examples
///
/// ```
/// use typed_shm::{SharedMemory, inspect::{self, Removal}};
/// # let key = format!("doc-remove-{}", std::process::id());
/// let shm = SharedMemory::<u8>::create(&key, 0)?;
/// assert_eq!(inspect::remove(&key, false)?, Removal::InUse { attached: 1 });
/// assert_eq!(inspect::remove(&key, true)?, Removal::Removed { attached: 1 });
/// assert!(inspect::Segment::open(&key).is_err());
/// # Ok::<(), typed_shm::Error>(())
/// ```
pub fn remove(key: &str, force: bool) -> Result<Removal, Error> {
    let seg = Segment::open(key)?;
    let Segment {
        native, file, map, ..
    } = &seg;
    let ours = file.stat().map_err(|e| Error::os(native, e))?;
    let alone = file.lock(OfdLock::Write).map_err(|e| Error::os(native, e))?;
    let attached = if alone { 0 } else { count_others(file).unwrap_or(1) };
    if !alone && !force {
        return Ok(Removal::InUse { attached });
    }
    // Attachers that opened the name meanwhile see DESTROYED and start over
    // (finding no name); with `alone`, nobody can be attached now.
    // SAFETY: InPlace::new requires a live, page-aligned, read-write mapping
    // of the header, used while mapped, whose in-place fields are only
    // accessed atomically: `map`, as in `Segment::open_native`.
    unsafe { InPlace::new(map.as_ptr()) }
        .state()
        .store(STATE_DESTROYED, Ordering::Release);
    if sys::name_stat(native).is_ok_and(|n| n.same_file(&ours)) {
        let cname =
            CString::new(native.as_str()).map_err(|_| Error::new(ErrorKind::KeyError, "NUL in name"))?;
        sys::unlink(&cname).map_err(|e| Error::os(native, e))?;
    }
    Ok(Removal::Removed { attached })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SharedMemory;

    fn key(name: &str) -> String {
        format!("unit-inspect-{name}-{}", std::process::id())
    }

    #[test]
    fn a_stale_segment_is_removed_without_force() {
        let k = key("stale");
        let shm = SharedMemory::<u64>::create(&k, 5).unwrap();
        // A handle that is forgotten leaves its locks with its open file
        // description; closing that is what a dead process does. Instead,
        // inspect the live one, then detach: the segment goes by itself.
        let seg = Segment::open(&k).unwrap();
        assert!(!seg.is_stale());
        assert_eq!(seg.snapshot().unwrap().bytes, 5u64.to_ne_bytes());
        drop(shm);
        assert!(seg.is_stale());
        assert_eq!(Segment::open(&k).unwrap_err().kind(), ErrorKind::NotFound);
    }

    #[test]
    fn foreign_files_are_refused_and_left_alone() {
        let k = key("foreign");
        let path = format!("{SHM_DIR}{}", key::native_key(&k).unwrap());
        std::fs::write(&path, vec![7u8; 5000]).unwrap();
        assert_eq!(Segment::open(&k).unwrap_err().kind(), ErrorKind::Corrupted);
        assert_eq!(remove(&k, true).unwrap_err().kind(), ErrorKind::Corrupted);
        assert!(list().unwrap().iter().all(|s| s.key != k));
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 5000]);
        std::fs::remove_file(&path).unwrap();
    }
}

//! The segment header (format v3): its `#[repr(C)]` layout, pinned by static
//! assertions, and [`validate`], a pure function over its bytes.
//!
//! The header occupies the start of the first page of the object; the data
//! starts on the next page boundary (`data_offset`), so the data can be mapped
//! read-only while the header, which holds the lock, stays writable.
//!
//! | offset | field | |
//! |---|---|---|
//! | 0 | `magic: [u8; 8]` | `b"TYPEDSHM"` |
//! | 8 | `version: u32` | format version, 3 |
//! | 12 | `header_size: u32` | 576 |
//! | 16 | `abi: [u32; 6]` | libc family, `pthread_mutex_t` size, pointer bits, endianness mark, page size, `pthread_mutex_t` alignment |
//! | 40 | `data_offset: u64` | where the data starts (the page size) |
//! | 48 | `data_len: u64` | bytes of data |
//! | 56 | `elem_size: u64` | size of `T`, or of `E` for `[E]` |
//! | 64 | `elem_align: u64` | alignment of the same |
//! | 72 | `elem_count: u64` | 1, or the slice length |
//! | 80 | `fingerprint: u64` | [`ShmSafe::FINGERPRINT`](crate::ShmSafe::FINGERPRINT) of the element |
//! | 88 | `flags: u32` | bit 0: the data is a slice |
//! | 92 | `desc_len: u32` | bytes used in `desc` |
//! | 96 | `desc: [u8; 256]` | readable layout of the element, UTF-8 |
//! | 352 | `state: u32` (atomic) | 0 while initializing, `READY`, `DESTROYED` |
//! | 356 | reserved | zero |
//! | 360 | `attach_count: u32` | reserved for an attach counter, kept 0: live attachments are counted by the kernel (one lock per handle), which a killed process cannot leave wrong |
//! | 364 | reserved | zero |
//! | 384 | `mutex: [u8; 48]` | the robust `pthread_mutex_t` |
//! | 432 | `holder: u64` | while locked: the holder thread's random 64-bit token (0 when free) |
//! | 440 | `poisoned: u32` (atomic) | non-zero after a holder died or panicked |
//! | 444 | reserved | zero |
//! | 448 | `pid_ns: [u64; 2]` | the creator's PID namespace: device and inode of `/proc/self/ns/pid` |
//! | 464 | reserved | zero |
//! | 512 | `seq: u64` (atomic) | the sequence word: four times the number of commits, plus 2 while the segment is poisoned, plus 1 while a write guard is writing (transactional segments: see [`crate::sync`]) |
//! | 520 | `waiters: u32` (atomic) | processes blocked in `wait_for_change` (a hint: a commit wakes them only when it is non-zero) |
//! | 524 | reserved | zero |
//! | 528 | `txn_commits: u64` (atomic) | transactional segments: the commits so far (their version) |
//! | 536 | reserved | zero, up to 576 |
//! | 576 | the description area | the key and the element's encoded layout, up to `data_offset` (see [`crate::area`]) |
//!
//! The mutex, the holder token and `poisoned` share one 64-byte cache line: taking the
//! lock writes both, so they travel between cores together. The sequence word has a
//! line of its own: snapshot readers read only that line (and the data), so they do
//! not pull the lock's line away from its holder.
//!
//! # Format versions
//!
//! - v1 (512-byte header): the lock, no sequence word.
//! - v2 (576 bytes): adds the sequence word for snapshots and change
//!   notification (bytes 512..576), and the description area after the
//!   header (the key and the layout, for tools; nothing reads it to attach).
//!   Every other field keeps its offset.
//! - v3 (576 bytes, the same offsets): a plain segment's sequence word
//!   carries the poison for readers (bit 1; the commits count from bit 2),
//!   so that a snapshot checks one word instead of two; the word at 524,
//!   v2's separate copy of the poison flag for readers, is reserved. A v2
//!   reader would take a poisoned v3 segment for one whose writer never
//!   finishes, and a v2 writer would clear v3's poison bit, so the two are
//!   incompatible.
//!
//! A program of this version refuses a segment of another version with
//! [`ErrorKind::IncompatibleVersion`] (attach) and leaves it untouched (create
//! and open_or_create give [`ErrorKind::AlreadyExists`]). To move to a new
//! version: stop the programs of the old version, then remove their segments
//! (the file `/dev/shm` + the native key) if they were left behind.

use std::fmt;
use std::mem::{align_of, offset_of, size_of};
use std::sync::atomic::{AtomicU32, AtomicU64};

use static_assertions::{const_assert, const_assert_eq};

use crate::error::{Error, ErrorKind};
use crate::sys;

/// First bytes of every typed-shm segment.
pub(crate) const MAGIC: [u8; 8] = *b"TYPEDSHM";
/// Format version written by this library.
pub(crate) const VERSION: u32 = 3;
/// Size of the header in bytes.
pub(crate) const HEADER_SIZE: usize = 576;
/// Bytes available for the layout description.
pub(crate) const DESC_CAP: usize = 256;
/// Read as a native `u32`, shows the byte order of the writer.
const ENDIAN_MARK: u32 = 0x0102_0304;

/// `state` while the creator initializes (a fresh object is all zeros).
pub(crate) const STATE_INIT: u32 = 0;
/// `state` once the creator has published the segment.
pub(crate) const STATE_READY: u32 = 0x5245_4459;
/// `state` after the last handle detached or a stale segment was reclaimed:
/// the name is about to disappear; whoever sees it starts over.
pub(crate) const STATE_DESTROYED: u32 = 0x4445_4144;

const FLAG_SLICE: u32 = 1;
/// Bit 1 of `flags`: a transactional segment, with two data buffers.
const FLAG_TRANSACTIONAL: u32 = 2;

/// The header as stored. Fields that change after publication (`state`,
/// `poisoned`, `attach_count`, `mutex`) are only ever accessed in place,
/// through atomics or the pthread API, never through this struct.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Header {
    pub magic: [u8; 8],
    pub version: u32,
    pub header_size: u32,
    pub abi: [u32; 6],
    pub data_offset: u64,
    pub data_len: u64,
    pub elem_size: u64,
    pub elem_align: u64,
    pub elem_count: u64,
    pub fingerprint: u64,
    pub flags: u32,
    pub desc_len: u32,
    pub desc: [u8; DESC_CAP],
    pub state: u32,
    pub reserved_state: u32,
    pub attach_count: u32,
    pub reserved0: [u32; 5],
    pub mutex: [u64; 6],
    pub holder: u64,
    pub poisoned: u32,
    pub reserved_lock: u32,
    pub pid_ns: [u64; 2],
    pub reserved1: [u64; 6],
    pub seq: u64,
    pub waiters: u32,
    pub reserved_seq: u32,
    pub txn_commits: u64,
    pub reserved2: [u64; 5],
}

const_assert_eq!(size_of::<Header>(), HEADER_SIZE);
const_assert_eq!(align_of::<Header>(), 64);
const_assert_eq!(offset_of!(Header, version), 8);
const_assert_eq!(offset_of!(Header, header_size), 12);
const_assert_eq!(offset_of!(Header, abi), 16);
const_assert_eq!(offset_of!(Header, data_offset), 40);
const_assert_eq!(offset_of!(Header, data_len), 48);
const_assert_eq!(offset_of!(Header, elem_size), 56);
const_assert_eq!(offset_of!(Header, elem_align), 64);
const_assert_eq!(offset_of!(Header, elem_count), 72);
const_assert_eq!(offset_of!(Header, fingerprint), 80);
const_assert_eq!(offset_of!(Header, flags), 88);
const_assert_eq!(offset_of!(Header, desc_len), 92);
const_assert_eq!(offset_of!(Header, desc), 96);
const_assert_eq!(offset_of!(Header, state), 352);
const_assert_eq!(offset_of!(Header, poisoned), 440);
const_assert_eq!(offset_of!(Header, attach_count), 360);
const_assert_eq!(offset_of!(Header, mutex), 384);
const_assert_eq!(offset_of!(Header, holder), 432);
const_assert_eq!(offset_of!(Header, pid_ns), 448);
const_assert_eq!(offset_of!(Header, seq), 512);
const_assert_eq!(offset_of!(Header, waiters), 520);
const_assert_eq!(offset_of!(Header, txn_commits), 528);
// The mutex must fit its slot and be aligned by it.
const_assert!(sys::MUTEX_SIZE <= 48);
const_assert!(sys::MUTEX_ALIGN <= 8);
const_assert!(HEADER_SIZE <= 4096);

// SAFETY: `Header` is `#[repr(C)]` and made only of integers and integer
// arrays; the assertions above pin every offset, and the field sizes add up to
// exactly HEADER_SIZE (8+4+4+24+6*8+4+4+256+3*4+20+48+8+4+4+16+48+8+4+4+48 = 576), so it has no
// padding. The all-zero bit pattern is valid for integers.
#[allow(unsafe_code)]
unsafe impl bytemuck::Zeroable for Header {}
// SAFETY: as above: no padding, every bit pattern of every field is valid, no
// pointers or interior mutability, `Copy + 'static`.
#[allow(unsafe_code)]
unsafe impl bytemuck::Pod for Header {}

/// The layout a program expects a segment to have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Expected {
    pub fingerprint: u64,
    pub elem_size: usize,
    pub elem_align: usize,
    pub slice: bool,
    /// Readable layout of the element (`write_layout`).
    pub desc: String,
    pub page_size: usize,
    /// This process's PID namespace (see [`crate::sys::pid_namespace`]).
    pub pid_ns: (u64, u64),
    /// For `create`: make a transactional segment (attach learns it from the
    /// header).
    pub transactional: bool,
    /// The element's machine-readable layout, which a creator stores after
    /// the header (see [`crate::area`]).
    pub layout: &'static crate::TypeLayout,
}

/// What a validated header says about the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Validated {
    pub data_offset: u64,
    pub data_len: usize,
    pub elem_count: usize,
    /// Transactional segments: the distance from the first data buffer to
    /// the second (`data_len` rounded up to pages); 0 otherwise.
    pub stride: usize,
}

impl Validated {
    /// Bytes of the data region: one buffer, or two for a transactional
    /// segment.
    pub(crate) fn span(&self) -> usize {
        self.stride + self.data_len
    }

    /// Bytes to map: the header page(s) and the data; `None` if that does
    /// not fit this process's address space.
    pub(crate) fn map_len(&self) -> Option<usize> {
        usize::try_from(self.data_offset)
            .ok()
            .and_then(|o| o.checked_add(self.stride))
            .and_then(|o| o.checked_add(self.data_len))
    }
}

/// The distance between the two buffers of a transactional segment:
/// `data_len` rounded up to a multiple of `page` (so each buffer starts on a
/// page boundary); `None` on overflow.
pub(crate) fn stride(data_len: usize, page: usize) -> Option<usize> {
    data_len.checked_next_multiple_of(page)
}

/// The two data buffers of a transactional segment whose first buffer is at
/// `data` and whose second is `stride` bytes further; `None` when `stride`
/// is 0 (one buffer).
pub(crate) fn data_buffers(data: *mut u8, stride: usize) -> Option<[*mut u8; 2]> {
    (stride != 0).then(|| [data, data.wrapping_add(stride)])
}

fn abi_stamp(page_size: usize) -> [u32; 6] {
    [
        sys::LIBC_FAMILY,
        sys::MUTEX_SIZE as u32,
        usize::BITS,
        ENDIAN_MARK,
        u32::try_from(page_size).unwrap_or(u32::MAX),
        sys::MUTEX_ALIGN as u32,
    ]
}

/// Truncates `desc` to fit [`DESC_CAP`] bytes on a character boundary, marking
/// the cut with `…`.
fn fit_desc(desc: &str) -> &str {
    if desc.len() <= DESC_CAP {
        return desc;
    }
    let mut end = DESC_CAP - '…'.len_utf8();
    while !desc.is_char_boundary(end) {
        end -= 1;
    }
    &desc[..end]
}

impl Header {
    /// The header a creator writes (state `INIT`; counters and the mutex are
    /// set up in place afterwards).
    pub(crate) fn new(expected: &Expected, data_offset: u64, data_len: u64, elem_count: u64) -> Self {
        let mut h: Header = bytemuck::Zeroable::zeroed();
        h.magic = MAGIC;
        h.version = VERSION;
        h.header_size = HEADER_SIZE as u32;
        h.abi = abi_stamp(expected.page_size);
        h.data_offset = data_offset;
        h.data_len = data_len;
        h.elem_size = expected.elem_size as u64;
        h.elem_align = expected.elem_align as u64;
        h.elem_count = elem_count;
        h.fingerprint = expected.fingerprint;
        h.flags = if expected.slice { FLAG_SLICE } else { 0 }
            | if expected.transactional {
                FLAG_TRANSACTIONAL
            } else {
                0
            };
        h.pid_ns = [expected.pid_ns.0, expected.pid_ns.1];
        let desc = fit_desc(&expected.desc);
        let mut bytes = desc.as_bytes().to_vec();
        if desc.len() < expected.desc.len() {
            bytes.extend_from_slice("…".as_bytes());
        }
        h.desc[..bytes.len()].copy_from_slice(&bytes);
        h.desc_len = bytes.len() as u32;
        h
    }

    /// The layout description stored in the header (lossy if not UTF-8).
    pub(crate) fn description(&self) -> String {
        let len = (self.desc_len as usize).min(DESC_CAP);
        String::from_utf8_lossy(&self.desc[..len]).into_owned()
    }
}

/// The fields of a mapped header that are used in place, after publication:
/// `state` (atomic), and the lock's words. The one place that turns the
/// offsets pinned above into pointers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct InPlace {
    base: *mut u8,
}

#[allow(unsafe_code)]
impl InPlace {
    /// # Safety
    ///
    /// `base` must start a live, page-aligned, read-write mapping of at least
    /// [`HEADER_SIZE`] bytes of a segment header, which stays mapped for as
    /// long as the value returned (or any copy of it) is used, and whose
    /// `state`, `holder`, `poisoned`, `seq`, `waiters` and `txn_commits`
    /// fields every process accesses only atomically.
    pub(crate) unsafe fn new(base: *mut u8) -> Self {
        InPlace { base }
    }

    /// The `state` word.
    pub(crate) fn state(&self) -> &AtomicU32 {
        self.u32_at(offset_of!(Header, state))
    }

    /// The atomic `u32` at `offset`, one of the fields named in `new`.
    #[inline(always)]
    fn u32_at(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: AtomicU32::from_ptr requires a 4-aligned pointer that is
        // valid for reads and writes, and only accessed atomically, while the
        // reference lives: callers pass the 4-aligned offsets of such fields
        // (asserted above) in a page-aligned mapping that stays mapped
        // (`new`'s contract).
        unsafe { AtomicU32::from_ptr(self.base.wrapping_add(offset).cast()) }
    }

    /// The atomic `u64` at `offset`, one of the fields named in `new`.
    #[inline(always)]
    fn u64_at(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: as in `u32_at`, for the 8-aligned offsets of `u64` fields.
        unsafe { AtomicU64::from_ptr(self.base.wrapping_add(offset).cast()) }
    }

    /// The holder's token.
    #[inline(always)]
    pub(crate) fn holder(&self) -> &AtomicU64 {
        self.u64_at(offset_of!(Header, holder))
    }

    /// The sticky poison flag.
    #[inline(always)]
    pub(crate) fn poisoned(&self) -> &AtomicU32 {
        self.u32_at(offset_of!(Header, poisoned))
    }

    /// The sequence word.
    #[inline(always)]
    pub(crate) fn seq(&self) -> &AtomicU64 {
        self.u64_at(offset_of!(Header, seq))
    }

    /// The waiter count.
    #[inline(always)]
    pub(crate) fn waiters(&self) -> &AtomicU32 {
        self.u32_at(offset_of!(Header, waiters))
    }

    /// Transactional segments: the commit count.
    #[inline(always)]
    pub(crate) fn txn_commits(&self) -> &AtomicU64 {
        self.u64_at(offset_of!(Header, txn_commits))
    }

    /// The address of the sequence word's low 32 bits (the futex word).
    #[inline]
    pub(crate) fn seq_futex(&self) -> *const u32 {
        let low_half = if cfg!(target_endian = "little") { 0 } else { 4 };
        self.base.wrapping_add(offset_of!(Header, seq) + low_half).cast()
    }

    /// The mutex slot: 8-aligned and large enough for a `pthread_mutex_t`
    /// (asserted above).
    pub(crate) fn mutex(&self) -> *mut sys::RawMutexStorage {
        self.base.wrapping_add(offset_of!(Header, mutex)).cast()
    }
}

/// Whether `bytes` start with a header of this format version and ABI (magic,
/// version, header size and ABI stamp), whatever it holds.
pub(crate) fn same_format(bytes: &[u8], page_size: usize) -> bool {
    if bytes.len() < HEADER_SIZE {
        return false;
    }
    let h: Header = bytemuck::pod_read_unaligned(&bytes[..HEADER_SIZE]);
    h.magic == MAGIC
        && h.version == VERSION
        && h.header_size == HEADER_SIZE as u32
        && h.abi == abi_stamp(page_size)
}

/// What the first bytes of an object say before it is validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Peeked {
    /// All zeros: created but never initialized (its creator died first).
    Zeroed,
    /// Not the typed-shm magic, and not all zeros.
    Foreign,
    /// The typed-shm magic, with this `state` word.
    State(u32),
}

/// Reads the magic and the `state` word out of a copy of a header.
pub(crate) fn peek(bytes: &[u8; HEADER_SIZE]) -> Peeked {
    if bytes[..MAGIC.len()] != MAGIC {
        return if is_zeroed(bytes) {
            Peeked::Zeroed
        } else {
            Peeked::Foreign
        };
    }
    let at = offset_of!(Header, state);
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    Peeked::State(u32::from_ne_bytes(word))
}

/// Whether every byte is zero (a fresh object reads so until its creator
/// writes the header).
pub(crate) fn is_zeroed(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// Where a new segment's parts go: the header page, then the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sizes {
    /// Where the data starts: the page after the header's.
    pub data_offset: usize,
    /// Bytes of data: element size × count.
    pub data_len: usize,
    /// Transactional segments: where the second buffer starts, from the
    /// first (see [`stride`]); 0 otherwise.
    pub stride: usize,
    /// Bytes of the whole object, header page included.
    pub total: usize,
}

/// Why a segment of the requested size cannot be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SizeError {
    ZeroSized,
    EmptySlice,
    Alignment { align: usize, page: usize },
    Overflow { count: usize, size: usize },
    TotalOverflow,
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SizeError::ZeroSized => {
                f.write_str("a zero-sized type holds no data: share a type with at least one byte")
            }
            SizeError::EmptySlice => {
                f.write_str("a slice of length 0 holds no data: give a length of at least 1")
            }
            SizeError::Alignment { align, page } => {
                write!(f, "alignment {align} exceeds the page size {page}")
            }
            SizeError::Overflow { count, size } => {
                write!(f, "{count} elements of {size} bytes overflow the address space")
            }
            SizeError::TotalOverflow => f.write_str("the size overflows"),
        }
    }
}

/// The sizes of a new segment of `elem_count` elements of `elem_size` bytes
/// aligned to `elem_align`, on pages of `page_size` bytes: the data starts on
/// the page after the header's (so it can be mapped read-only on its own),
/// a transactional segment has a second buffer on the next page boundary
/// after the first, and no length exceeds `isize::MAX`. Checked arithmetic;
/// never panics.
pub(crate) fn sizes(
    elem_size: usize,
    elem_align: usize,
    elem_count: usize,
    page_size: usize,
    transactional: bool,
) -> Result<Sizes, SizeError> {
    if elem_size == 0 {
        return Err(SizeError::ZeroSized);
    }
    if elem_count == 0 {
        return Err(SizeError::EmptySlice);
    }
    if elem_align > page_size {
        return Err(SizeError::Alignment {
            align: elem_align,
            page: page_size,
        });
    }
    let data_len = elem_size
        .checked_mul(elem_count)
        .filter(|&n| isize::try_from(n).is_ok())
        .ok_or(SizeError::Overflow {
            count: elem_count,
            size: elem_size,
        })?;
    let stride = if transactional {
        stride(data_len, page_size).ok_or(SizeError::TotalOverflow)?
    } else {
        0
    };
    let total = page_size
        .checked_add(stride)
        .and_then(|n| n.checked_add(data_len))
        .filter(|&n| isize::try_from(n).is_ok())
        .ok_or(SizeError::TotalOverflow)?;
    Ok(Sizes {
        data_offset: page_size,
        data_len,
        stride,
        total,
    })
}

fn describe(desc: &str, slice: bool, elem_count: u64, data_len: u64) -> String {
    if slice {
        format!("[{desc}; {elem_count}] ({data_len} bytes)")
    } else {
        format!("{desc} ({data_len} bytes)")
    }
}

/// Validates a copy of a header against the object's length and the layout
/// this program expects, in the order: magic → format version → ABI stamp →
/// layout (fingerprint, element size and alignment, slice or not) → declared
/// lengths against the file length (overflow-checked). Pure; never panics.
///
/// # Errors
///
/// - [`ErrorKind::Corrupted`]: too short, wrong magic, or inconsistent lengths;
/// - [`ErrorKind::IncompatibleVersion`]: another format version or ABI;
/// - [`ErrorKind::LayoutMismatch`]: another element type; the message shows
///   both layouts.
pub(crate) fn validate(
    key: &str,
    bytes: &[u8],
    file_len: u64,
    expected: &Expected,
) -> Result<Validated, Error> {
    let corrupted = |what: String| {
        Error::new(
            ErrorKind::Corrupted,
            format!("segment {key:?} is not a valid typed-shm segment: {what}; it was left untouched"),
        )
    };
    if bytes.len() < HEADER_SIZE || file_len < HEADER_SIZE as u64 {
        return Err(corrupted(format!(
            "it is {} bytes long, shorter than the {HEADER_SIZE}-byte header",
            file_len.min(bytes.len() as u64)
        )));
    }
    let h: Header = bytemuck::pod_read_unaligned(&bytes[..HEADER_SIZE]);
    if h.magic != MAGIC {
        return Err(corrupted("its first bytes are not the typed-shm magic".into()));
    }
    if h.version != VERSION || h.header_size != HEADER_SIZE as u32 {
        return Err(Error::new(
            ErrorKind::IncompatibleVersion,
            format!(
                "segment {key:?} has header format version {} ({} bytes); this library reads \
                 version {VERSION} ({HEADER_SIZE} bytes): use the same typed-shm version in every program",
                h.version, h.header_size
            ),
        ));
    }
    let abi = abi_stamp(expected.page_size);
    if h.abi != abi {
        return Err(Error::new(
            ErrorKind::IncompatibleVersion,
            format!(
                "segment {key:?} was created by a build with another ABI (libc family, mutex size, \
                 pointer width, byte order, page size, mutex alignment = {:?}; this build: {abi:?}): \
                 build every program for the same target",
                h.abi
            ),
        ));
    }
    let slice = h.flags & FLAG_SLICE != 0;
    if h.fingerprint != expected.fingerprint
        || h.elem_size != expected.elem_size as u64
        || h.elem_align != expected.elem_align as u64
        || slice != expected.slice
    {
        let ours = if expected.slice {
            format!("[{}] ({} bytes per element)", expected.desc, expected.elem_size)
        } else {
            format!("{} ({} bytes)", expected.desc, expected.elem_size)
        };
        return Err(Error::new(
            ErrorKind::LayoutMismatch,
            format!(
                "segment {key:?} holds {}; this program expects {ours}: every program must use \
                 the same type definition",
                describe(&h.description(), slice, h.elem_count, h.data_len)
            ),
        ));
    }
    let page = expected.page_size as u64;
    if h.data_offset < HEADER_SIZE as u64 || page == 0 || h.data_offset % page != 0 {
        return Err(corrupted(format!(
            "its data offset {} is not a page boundary",
            h.data_offset
        )));
    }
    let end = h.data_offset.checked_add(h.data_len);
    if end.is_none_or(|end| end > file_len) {
        return Err(corrupted(format!(
            "it declares {} bytes of data at offset {}, but the object is {file_len} bytes long",
            h.data_len, h.data_offset
        )));
    }
    if h.data_len == 0
        || h.elem_size.checked_mul(h.elem_count) != Some(h.data_len)
        || (!slice && h.elem_count != 1)
    {
        return Err(corrupted(format!(
            "its lengths disagree ({} elements of {} bytes in {} bytes)",
            h.elem_count, h.elem_size, h.data_len
        )));
    }
    if h.elem_align > page || !h.elem_align.is_power_of_two() {
        return Err(corrupted(format!(
            "its element alignment {} is not a power of two up to the page size {page}",
            h.elem_align
        )));
    }
    let (Ok(data_len), Ok(elem_count)) = (usize::try_from(h.data_len), usize::try_from(h.elem_count)) else {
        return Err(corrupted(
            "its length does not fit in this process's address space".into(),
        ));
    };
    if isize::try_from(data_len).is_err() {
        return Err(corrupted(format!(
            "its data length {data_len} exceeds isize::MAX, the most one object may span"
        )));
    }
    if h.pid_ns != [expected.pid_ns.0, expected.pid_ns.1] {
        return Err(Error::new(
            ErrorKind::LockError,
            format!(
                "segment {key:?} was created in another PID namespace than this process's: its \
                 lock identifies holders by thread id, and thread ids of different PID \
                 namespaces collide, so processes in different PID namespaces cannot share it \
                 safely. Run every process that shares the segment in one PID namespace (for \
                 containers, share the host's or one container's PID namespace, e.g. \
                 `docker run --pid=host` or `--pid=container:NAME`, or `shareProcessNamespace` \
                 in a Kubernetes pod)"
            ),
        ));
    }
    if h.flags & !(FLAG_SLICE | FLAG_TRANSACTIONAL) != 0 {
        return Err(corrupted(format!(
            "its flags {:#x} include unknown bits",
            h.flags
        )));
    }
    let stride = if h.flags & FLAG_TRANSACTIONAL != 0 {
        // The second buffer must fit in the file too.
        let fits = stride(data_len, page as usize)
            .filter(|&st| isize::try_from(st + data_len).is_ok())
            .filter(|&st| {
                h.data_offset
                    .checked_add(st as u64 + h.data_len)
                    .is_some_and(|end| end <= file_len)
            });
        let Some(st) = fits else {
            return Err(corrupted(format!(
                "it is transactional, but its two buffers of {data_len} bytes do not fit in the \
                 {file_len}-byte object"
            )));
        };
        st
    } else {
        0
    };
    Ok(Validated {
        data_offset: h.data_offset,
        data_len,
        elem_count,
        stride,
    })
}

/// [`validate`] for a tool that has no type to expect: every check but the
/// layout's and the PID namespace's (the layout is the header's own).
/// Returns the header copy with what it says about the data.
pub(crate) fn validate_untyped(
    key: &str,
    bytes: &[u8],
    file_len: u64,
    page_size: usize,
) -> Result<(Header, Validated), Error> {
    let mut expected = Expected {
        fingerprint: 0,
        elem_size: 0,
        elem_align: 0,
        slice: false,
        desc: String::new(),
        page_size,
        pid_ns: (0, 0),
        transactional: false,
        layout: <u8 as crate::ShmSafe>::LAYOUT,
    };
    let Some(head) = bytes.get(..HEADER_SIZE) else {
        // Too short: `validate` says so.
        let short = || {
            Error::new(
                ErrorKind::Corrupted,
                format!("segment {key:?} is shorter than its header"),
            )
        };
        return Err(validate(key, bytes, file_len, &expected)
            .err()
            .unwrap_or_else(short));
    };
    let h: Header = bytemuck::pod_read_unaligned(head);
    expected.fingerprint = h.fingerprint;
    expected.elem_size = usize::try_from(h.elem_size).unwrap_or(usize::MAX);
    expected.elem_align = usize::try_from(h.elem_align).unwrap_or(usize::MAX);
    expected.slice = h.flags & FLAG_SLICE != 0;
    expected.pid_ns = (h.pid_ns[0], h.pid_ns[1]);
    validate(key, bytes, file_len, &expected).map(|v| (h, v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PAGE: usize = 4096;

    fn expected() -> Expected {
        Expected {
            fingerprint: 0x1234,
            elem_size: 8,
            elem_align: 8,
            slice: false,
            desc: "u64".into(),
            page_size: PAGE,
            pid_ns: (7, 4026531836),
            transactional: false,
            layout: <u64 as crate::ShmSafe>::LAYOUT,
        }
    }

    fn good() -> (Vec<u8>, u64) {
        let h = Header::new(&expected(), PAGE as u64, 8, 1);
        (bytemuck::bytes_of(&h).to_vec(), PAGE as u64 + 8)
    }

    fn kind(bytes: &[u8], len: u64, e: &Expected) -> Option<ErrorKind> {
        validate("k", bytes, len, e).err().map(|e| e.kind())
    }

    /// SPEC.md's header table (offset, size, field) is the layout of
    /// `Header`, field by field, and lists every field this code has.
    #[test]
    fn spec_md_header_table_matches_the_code() {
        let spec = include_str!("../SPEC.md");
        let fields: &[(&str, usize, usize)] = &[
            ("magic", offset_of!(Header, magic), 8),
            ("version", offset_of!(Header, version), 4),
            ("header_size", offset_of!(Header, header_size), 4),
            ("abi", offset_of!(Header, abi), 24),
            ("data_offset", offset_of!(Header, data_offset), 8),
            ("data_len", offset_of!(Header, data_len), 8),
            ("elem_size", offset_of!(Header, elem_size), 8),
            ("elem_align", offset_of!(Header, elem_align), 8),
            ("elem_count", offset_of!(Header, elem_count), 8),
            ("fingerprint", offset_of!(Header, fingerprint), 8),
            ("flags", offset_of!(Header, flags), 4),
            ("desc_len", offset_of!(Header, desc_len), 4),
            ("desc", offset_of!(Header, desc), DESC_CAP),
            ("state", offset_of!(Header, state), 4),
            ("attach_count", offset_of!(Header, attach_count), 4),
            ("mutex", offset_of!(Header, mutex), 48),
            ("holder", offset_of!(Header, holder), 8),
            ("poisoned", offset_of!(Header, poisoned), 4),
            ("pid_ns", offset_of!(Header, pid_ns), 16),
            ("seq", offset_of!(Header, seq), 8),
            ("waiters", offset_of!(Header, waiters), 4),
            ("txn_commits", offset_of!(Header, txn_commits), 8),
        ];
        let rows: Vec<(usize, usize, &str)> = spec
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let (off, size, name) = (cells.get(1)?, cells.get(2)?, cells.get(3)?);
                let name = name.strip_prefix('`')?.strip_suffix('`')?;
                Some((off.parse().ok()?, size.parse().ok()?, name))
            })
            .collect();
        for &(name, offset, size) in fields {
            let row = rows.iter().find(|r| r.2 == name);
            assert_eq!(row, Some(&(offset, size, name)), "SPEC.md's row for `{name}`");
        }
        let documented: Vec<&str> = rows.iter().map(|r| r.2).collect();
        for name in &documented {
            assert!(
                fields.iter().any(|f| f.0 == *name),
                "SPEC.md documents `{name}`, the code has no such field"
            );
        }
        assert!(spec.contains(&format!("| 12 | 4 | `header_size` | `{HEADER_SIZE}` |")));
        assert!(spec.contains(&format!("| 8 | 4 | `version` | `{VERSION}` |")));
        // The golden fingerprints SPEC.md gives for implementers.
        let telemetry = crate::FingerprintBuilder::new("Telemetry", 40, 8)
            .field("seq", 0, <u64 as crate::ShmSafe>::FINGERPRINT)
            .field("temps", 8, <[f32; 8] as crate::ShmSafe>::FINGERPRINT)
            .finish();
        assert!(
            spec.contains(&format!("`{telemetry:#018x}`")),
            "{telemetry:#018x}"
        );
        let u64_fp = <u64 as crate::ShmSafe>::FINGERPRINT;
        assert!(spec.contains(&format!("`{u64_fp:#018x}`")), "{u64_fp:#018x}");
    }

    #[test]
    fn a_fresh_header_validates() {
        let (b, len) = good();
        let v = validate("k", &b, len, &expected()).unwrap();
        assert_eq!(
            v,
            Validated {
                data_offset: PAGE as u64,
                data_len: 8,
                elem_count: 1,
                stride: 0,
            }
        );
    }

    #[test]
    fn each_defect_has_its_kind() {
        let e = expected();
        let (b, len) = good();
        let edit = |f: &dyn Fn(&mut Header)| {
            let mut h: Header = bytemuck::pod_read_unaligned(&b);
            f(&mut h);
            bytemuck::bytes_of(&h).to_vec()
        };
        assert_eq!(kind(&b[..100], len, &e), Some(ErrorKind::Corrupted));
        assert_eq!(kind(&b, 100, &e), Some(ErrorKind::Corrupted));
        assert_eq!(
            kind(&edit(&|h| h.magic[0] ^= 1), len, &e),
            Some(ErrorKind::Corrupted)
        );
        assert_eq!(
            kind(&edit(&|h| h.version = 1), len, &e),
            Some(ErrorKind::IncompatibleVersion)
        );
        assert_eq!(
            kind(&edit(&|h| h.header_size = 1024), len, &e),
            Some(ErrorKind::IncompatibleVersion)
        );
        assert_eq!(
            kind(&edit(&|h| h.abi[1] += 8), len, &e),
            Some(ErrorKind::IncompatibleVersion)
        );
        assert_eq!(
            kind(&edit(&|h| h.abi[3] = ENDIAN_MARK.swap_bytes()), len, &e),
            Some(ErrorKind::IncompatibleVersion)
        );
        assert_eq!(
            kind(&edit(&|h| h.fingerprint = 1), len, &e),
            Some(ErrorKind::LayoutMismatch)
        );
        assert_eq!(
            kind(&edit(&|h| h.flags = FLAG_SLICE), len, &e),
            Some(ErrorKind::LayoutMismatch)
        );
        assert_eq!(
            kind(&edit(&|h| h.data_len = 16), len, &e),
            Some(ErrorKind::Corrupted)
        );
        assert_eq!(
            kind(&edit(&|h| h.data_len = u64::MAX), len, &e),
            Some(ErrorKind::Corrupted)
        );
        assert_eq!(
            kind(&edit(&|h| h.data_offset = u64::MAX - 4095), len, &e),
            Some(ErrorKind::Corrupted)
        );
        assert_eq!(
            kind(&edit(&|h| h.data_offset = 0), len, &e),
            Some(ErrorKind::Corrupted)
        );
        assert_eq!(
            kind(&edit(&|h| h.data_offset = 100), len, &e),
            Some(ErrorKind::Corrupted)
        );
        assert_eq!(
            kind(&edit(&|h| h.elem_count = 2), len, &e),
            Some(ErrorKind::Corrupted)
        );
        assert_eq!(
            kind(&edit(&|h| h.data_len = 0), len, &e),
            Some(ErrorKind::Corrupted)
        );
        assert_eq!(
            kind(&edit(&|h| h.pid_ns[1] += 1), len, &e),
            Some(ErrorKind::LockError)
        );
        assert_eq!(
            kind(&edit(&|h| h.pid_ns = [0, 0]), len, &e),
            Some(ErrorKind::LockError)
        );
    }

    /// Whatever the creator claimed, and even when this program's own type
    /// says the same: an alignment the page-aligned data cannot give, or a
    /// length no object may span, is refused.
    #[test]
    fn impossible_alignments_and_lengths_are_refused() {
        let page = PAGE as u64;
        for align in [2 * page, 3, 0] {
            let e = Expected {
                elem_size: 2 * PAGE,
                elem_align: align as usize,
                ..expected()
            };
            let h = Header::new(&e, page, 2 * page, 1);
            let err = validate("k", bytemuck::bytes_of(&h), 3 * page, &e).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupted, "alignment {align}: {err}");
        }
        // Beyond isize::MAX: one element of that size, in a file that long.
        let huge = isize::MAX as u64 + 1;
        let e = Expected {
            elem_size: huge as usize,
            ..expected()
        };
        let h = Header::new(&e, page, huge, 1);
        let err = validate("k", bytemuck::bytes_of(&h), page + huge, &e).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupted, "{err}");
        assert!(err.to_string().contains("isize::MAX"), "{err}");
    }

    #[test]
    fn another_pid_namespace_is_a_lock_error_that_says_what_to_do() {
        let (b, len) = good();
        let e = Expected {
            pid_ns: (7, 1),
            ..expected()
        };
        let err = validate("k", &b, len, &e).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::LockError);
        assert!(err.to_string().contains("PID namespace"), "{err}");
    }

    #[test]
    fn validation_order_is_magic_version_abi_layout_lengths() {
        let e = expected();
        let (b, len) = good();
        let mut h: Header = bytemuck::pod_read_unaligned(&b);
        h.data_len = u64::MAX;
        h.fingerprint = 9;
        assert_eq!(
            kind(bytemuck::bytes_of(&h), len, &e),
            Some(ErrorKind::LayoutMismatch)
        );
        h.abi[0] = 7;
        assert_eq!(
            kind(bytemuck::bytes_of(&h), len, &e),
            Some(ErrorKind::IncompatibleVersion)
        );
        h.magic = [0; 8];
        assert_eq!(kind(bytemuck::bytes_of(&h), len, &e), Some(ErrorKind::Corrupted));
    }

    #[test]
    fn mismatch_message_shows_both_layouts() {
        let mut theirs = expected();
        theirs.desc = "Telemetry { seq: u64 @0, temps: [f32; 8] @8 }".into();
        theirs.elem_size = 40;
        let h = Header::new(&theirs, PAGE as u64, 40, 1);
        let mut ours = expected();
        ours.fingerprint = 99;
        ours.desc = "Telemetry { seq: u32 @0, temps: [f32; 8] @4 }".into();
        ours.elem_size = 36;
        let msg = validate("telemetry", bytemuck::bytes_of(&h), PAGE as u64 + 40, &ours)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(
                "segment \"telemetry\" holds Telemetry { seq: u64 @0, temps: [f32; 8] @8 } (40 bytes)"
            ),
            "{msg}"
        );
        assert!(
            msg.contains("this program expects Telemetry { seq: u32 @0, temps: [f32; 8] @4 } (36 bytes)"),
            "{msg}"
        );
    }

    #[test]
    fn long_descriptions_are_cut_on_a_char_boundary() {
        let mut e = expected();
        e.desc = "é".repeat(300);
        let h = Header::new(&e, PAGE as u64, 8, 1);
        let d = h.description();
        assert!(d.len() <= DESC_CAP && d.ends_with('…'), "{d}");
        assert!(!d.contains('\u{fffd}'));
    }

    #[test]
    fn peek_reads_the_magic_and_the_state() {
        let (b, _) = good();
        let mut bytes = [0u8; HEADER_SIZE];
        assert_eq!(peek(&bytes), Peeked::Zeroed);
        bytes.copy_from_slice(&b);
        assert_eq!(peek(&bytes), Peeked::State(STATE_INIT));
        let mut h: Header = bytemuck::pod_read_unaligned(&b);
        h.state = STATE_READY;
        bytes.copy_from_slice(bytemuck::bytes_of(&h));
        assert_eq!(peek(&bytes), Peeked::State(STATE_READY));
        h.state = STATE_DESTROYED;
        bytes.copy_from_slice(bytemuck::bytes_of(&h));
        assert_eq!(peek(&bytes), Peeked::State(STATE_DESTROYED));
        // The magic decides, whatever the state word says.
        bytes[0] ^= 1;
        assert_eq!(peek(&bytes), Peeked::Foreign);
        let mut stray = [0u8; HEADER_SIZE];
        stray[HEADER_SIZE - 1] = 1;
        assert_eq!(peek(&stray), Peeked::Foreign);
        assert!(is_zeroed(&[0; 7]) && is_zeroed(&[]) && !is_zeroed(&[0, 0, 3]));
    }

    #[test]
    fn sizes_put_the_data_on_the_page_after_the_header() {
        assert_eq!(
            sizes(8, 8, 1, PAGE, false),
            Ok(Sizes {
                data_offset: PAGE,
                data_len: 8,
                stride: 0,
                total: PAGE + 8
            })
        );
        assert_eq!(
            sizes(12, 4, 1000, PAGE, false),
            Ok(Sizes {
                data_offset: PAGE,
                data_len: 12_000,
                stride: 0,
                total: PAGE + 12_000
            })
        );
        // Transactional: a second buffer on the next page boundary.
        assert_eq!(
            sizes(12, 4, 1000, PAGE, true),
            Ok(Sizes {
                data_offset: PAGE,
                data_len: 12_000,
                stride: 12_288,
                total: PAGE + 12_288 + 12_000
            })
        );
        assert_eq!(
            sizes(1, 1, isize::MAX as usize - 2 * PAGE, PAGE, true),
            Err(SizeError::TotalOverflow)
        );
        assert_eq!(sizes(PAGE, PAGE, 1, PAGE, false).map(|s| s.total), Ok(2 * PAGE));
    }

    #[test]
    fn sizes_refuse_what_cannot_be_mapped() {
        assert_eq!(sizes(0, 1, 1, PAGE, false), Err(SizeError::ZeroSized));
        assert_eq!(sizes(0, 1, 0, PAGE, false), Err(SizeError::ZeroSized));
        assert_eq!(sizes(4, 4, 0, PAGE, false), Err(SizeError::EmptySlice));
        assert_eq!(
            sizes(2 * PAGE, 2 * PAGE, 1, PAGE, false),
            Err(SizeError::Alignment {
                align: 2 * PAGE,
                page: PAGE
            })
        );
        assert_eq!(
            sizes(8, 8, usize::MAX / 4, PAGE, false),
            Err(SizeError::Overflow {
                count: usize::MAX / 4,
                size: 8
            })
        );
        // Fits usize, but not isize: no object may span it.
        assert_eq!(
            sizes(1, 1, isize::MAX as usize + 1, PAGE, false),
            Err(SizeError::Overflow {
                count: isize::MAX as usize + 1,
                size: 1
            })
        );
        assert_eq!(
            sizes(1, 1, isize::MAX as usize, usize::MAX / 2 + 2, false),
            Err(SizeError::TotalOverflow)
        );
    }

    #[test]
    fn size_errors_say_what_to_do() {
        assert!(SizeError::ZeroSized.to_string().contains("at least one byte"));
        assert!(SizeError::EmptySlice.to_string().contains("length of at least 1"));
        assert_eq!(
            SizeError::Alignment {
                align: 8192,
                page: 4096
            }
            .to_string(),
            "alignment 8192 exceeds the page size 4096"
        );
        assert_eq!(
            SizeError::Overflow { count: 3, size: 5 }.to_string(),
            "3 elements of 5 bytes overflow the address space"
        );
    }

    #[test]
    fn map_len_covers_header_and_data_and_checks_overflow() {
        let v = Validated {
            data_offset: PAGE as u64,
            data_len: 10,
            elem_count: 10,
            stride: 0,
        };
        assert_eq!(v.map_len(), Some(PAGE + 10));
        let txn = Validated { stride: PAGE, ..v };
        assert_eq!(txn.map_len(), Some(2 * PAGE + 10));
        let v = Validated {
            data_offset: u64::MAX,
            ..v
        };
        assert_eq!(v.map_len(), None);
    }

    proptest! {
        #[test]
        fn sizes_are_consistent_or_refused(
            size in prop_oneof![0usize..64, any::<usize>()],
            count in prop_oneof![0usize..64, any::<usize>()],
            align in prop_oneof![Just(1usize), Just(8), Just(2 * PAGE)],
            transactional in any::<bool>(),
        ) {
            if let Ok(s) = sizes(size, align, count, PAGE, transactional) {
                prop_assert_eq!(s.data_len, size * count);
                prop_assert_eq!(s.total, s.data_offset + s.stride + s.data_len);
                prop_assert!(s.total <= isize::MAX as usize);
                prop_assert_eq!(s.data_offset % PAGE, 0);
                prop_assert_eq!(s.stride % PAGE, 0);
                let stride_ok = if transactional { s.stride >= s.data_len } else { s.stride == 0 };
                prop_assert!(stride_ok);
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024), len in any::<u64>()) {
            let _ = validate("k", &bytes, len, &expected());
        }

        #[test]
        fn random_headers_with_our_magic_never_panic_nor_overrun(
            fields in proptest::collection::vec(any::<u64>(), 64),
            offset in prop_oneof![Just(PAGE as u64), Just(2 * PAGE as u64), any::<u64>()],
            data_len in prop_oneof![0u64..64, any::<u64>()],
            count in prop_oneof![0u64..4, any::<u64>()],
            slice in any::<bool>(),
            len in prop_oneof![0u64..(3 * PAGE as u64), any::<u64>()],
        ) {
            let mut bytes: Vec<u8> = fields.iter().flat_map(|f| f.to_le_bytes()).collect();
            let mut h = Header::new(&expected(), offset, data_len, count);
            h.flags = u32::from(slice);
            h.desc_len = fields[0] as u32; // any value: must be clamped
            bytes[..352].copy_from_slice(&bytemuck::bytes_of(&h)[..352]);
            let mut e = expected();
            e.slice = slice;
            if let Ok(v) = validate("k", &bytes, len, &e) {
                prop_assert!(v.data_offset + v.data_len as u64 <= len);
                prop_assert!(v.data_offset % PAGE as u64 == 0);
            }
        }

        #[test]
        fn valid_headers_of_any_slice_length_validate(count in 1u64..1_000_000) {
            let mut e = expected();
            e.slice = true;
            let h = Header::new(&e, PAGE as u64, 8 * count, count);
            let v = validate("k", bytemuck::bytes_of(&h), PAGE as u64 + 8 * count, &e).unwrap();
            prop_assert_eq!(v.elem_count as u64, count);
        }
    }
}

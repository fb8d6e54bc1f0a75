//! Typed, crash-safe named shared memory for processes.
//!
//! `typed-shm` shares a value of type `T` (or a slice `[E]`) between
//! processes through a named POSIX shared-memory segment — Qt's
//! `QSharedMemory`, done the way a Rust user expects:
//!
//! - **Typed.** A segment holds a [`ShmSafe`] type: plain data with no padding,
//!   pointers, `bool`s or enums. `#[derive(ShmSafe)]` checks that at compile
//!   time and records a layout fingerprint; a program that attaches with
//!   another layout gets [`ErrorKind::LayoutMismatch`], never garbage.
//! - **Locked.** The data is reachable only through a [`Guard`], which holds a
//!   robust, process-shared mutex stored in the segment. [`try_lock`] and
//!   [`lock_timeout`] are there; a lock taken with no system call when it is
//!   free.
//! - **Crash-safe.** A holder that dies (even by `SIGKILL`) never deadlocks the
//!   others: the next locker gets a [`PoisonError`], std-style, with the data
//!   as the dead holder left it. The segment is removed when the last handle,
//!   in any process, is dropped or detached — also when other attached
//!   processes were killed. See [Lifetime](#lifetime) for what happens when
//!   all of them die.
//!
//! [`try_lock`]: SharedMemory::try_lock
//! [`lock_timeout`]: SharedMemory::lock_timeout
//!
//! # Two processes
//!
//! ```no_run
//! use typed_shm::{SharedMemory, ShmSafe};
//!
//! #[derive(Clone, Copy, ShmSafe)]
//! #[repr(C)]
//! struct Telemetry {
//!     seq: u64,
//!     temps: [f32; 8],
//! }
//!
//! // Process A
//! let shm = SharedMemory::<Telemetry>::create("telemetry", Telemetry { seq: 0, temps: [0.0; 8] })?;
//! {
//!     let mut t = shm.lock().unwrap();
//!     t.seq += 1;
//!     t.temps[0] = 21.5;
//! }
//!
//! // Process B
//! let shm = SharedMemory::<Telemetry>::attach("telemetry")?;
//! let t = shm.lock().unwrap();
//! println!("#{}: {} °C", t.seq, t.temps[0]);
//! # Ok::<(), typed_shm::Error>(())
//! ```
//!
//! The same within one process, as a runnable test (each handle could live in
//! another process):
//!
//! ```
//! use typed_shm::{ReadOnly, SharedMemory};
//! # let key = format!("doc-crate-{}", std::process::id());
//! let writer = SharedMemory::<[u64; 4]>::create(&key, [0; 4])?;
//! let reader = SharedMemory::<[u64; 4], ReadOnly>::attach(&key)?;
//! writer.lock().unwrap()[3] = 99;
//! assert_eq!(reader.lock().unwrap()[3], 99);
//! drop(writer);
//! drop(reader); // the last handle removes the segment
//! # assert!(!std::path::Path::new(&format!("/dev/shm/tshm_{key}")).exists());
//! # Ok::<(), typed_shm::Error>(())
//! ```
//!
//! `cargo run --release --example counter` starts several processes that
//! increment one shared counter.
//!
//! # Safety model
//!
//! The API is safe. Memory safety rests on four things:
//!
//! 1. `T: ShmSafe`: every byte pattern is a valid `T`, so no peer can write a
//!    value that is undefined behaviour to read;
//! 2. `&T` / `&mut T` into the data exist only inside a guard, while the lock
//!    is held;
//! 3. the header is validated (magic, version, ABI, layout fingerprint,
//!    lengths against the file size) before anything is mapped or used;
//! 4. segments are created with mode `0600` (exactly, whatever the umask), and
//!    only files owned by the effective user are opened.
//!
//! What remains is a trust assumption: every process with write access uses
//! this library's protocol. A process that truncates the object can make
//! readers fault (`SIGBUS`): named POSIX shared-memory objects cannot be
//! sealed on Linux.
//!
//! Two rules keep point 2 true when the kernel recovers a lock. The kernel
//! tracks a robust lock's owner by *thread id*, and marks the lock
//! owner-dead (handing it to the next locker) when that thread ends or its
//! id seems to die. Neither may hand the data to a second holder while the
//! first may still use it:
//!
//! - **A lock passes on only when the process that held it is gone.** A
//!   thread that ends while it holds a lock — its guard leaked with
//!   `Box::leak` or `mem::forget` while the handle lives — could leave
//!   references to the data with the threads that remain. So the process
//!   aborts, with a message on standard error that names the segment (std's
//!   `Mutex` keeps a leaked lock held instead; an abort tells you at once).
//!   A thread may end holding the lock of a handle that was already dropped:
//!   nothing can borrow from a dropped handle, so the lock then passes on
//!   with the poison. A process that dies by any cause releases its locks to
//!   the others, poisoned.
//! - **Every process that shares a segment is in one PID namespace.** Thread
//!   ids repeat across PID namespaces (two containers sharing `/dev/shm`),
//!   and a robust lock cannot tell their threads apart: a waiter killed in
//!   one namespace can make the kernel mark a lock held in another as
//!   owner-dead. The segment records its creator's PID namespace;
//!   [`attach`](SharedMemory::attach) and
//!   [`open_or_create`](SharedMemory::open_or_create) from another one fail
//!   with [`ErrorKind::LockError`], saying so. Share the PID namespace (for
//!   example `docker run --pid=host` or `--pid=container:NAME`, or
//!   `shareProcessNamespace` in a Kubernetes pod).
//!
//! A handle or guard inherited by a `fork()` child is inert there: lock calls
//! panic, `detach` is a `LockError`, and dropping an inherited guard leaves
//! the parent's lock alone. The lock itself never unwinds through a state the
//! design rules out: a failed unlock, or a failed repair of a lock whose
//! owner died, aborts the process with a message.
//!
//! # Lifetime
//!
//! The kernel, not a counter in the segment, knows who is attached (each
//! handle holds a lock on the object that the kernel releases when its
//! process dies). So the last handle to go, in any process, removes the
//! segment, whether the others detached or were killed.
//!
//! A segment whose users *all* died without detaching (killed, crashed, or
//! ended with `std::process::exit`, which skips `Drop`) is not removed then:
//! no process is left to do it, and nothing runs in the background. It stays
//! in `/dev/shm`, holding its memory, until its key is used again:
//!
//! - the next [`create`](SharedMemory::create) or
//!   [`open_or_create`](SharedMemory::open_or_create) of that key (by the
//!   same user, with the same type) removes it and makes a fresh segment; a
//!   file of another type, or one that is not a valid segment, is left
//!   untouched (`create` says `AlreadyExists`, `open_or_create` why);
//! - an [`attach`](SharedMemory::attach) attaches to it as the dead processes
//!   left it — its lock poisoned if one of them died holding it — and the
//!   last handle to go after that removes it as usual.
//!
//! Until then, once no process uses it, it can also be removed by hand: it
//! is the file `/dev/shm` followed by its [`native_key`] (for example
//! `/dev/shm/tshm_telemetry`).
//!
//! # Snapshots and change notification
//!
//! Every handle, read-write or [`ReadOnly`], can read without the lock:
//! [`snapshot`](SharedMemory::snapshot) copies the data consistently (never
//! a mix of two commits), never holds up a writer and never writes to the
//! segment; [`version`](SharedMemory::version) counts commits (the drop of
//! a write guard through which the data was mutably dereferenced);
//! [`wait_for_change`](SharedMemory::wait_for_change) blocks until the next
//! commit in any process and is woken by the committer itself.
//!
//! How: a sequence word in the header, in a cache line of its own. A write
//! guard makes it odd before its first write and even again, one commit
//! further, when it is dropped. A reader copies the data with atomic word
//! loads between two looks at the word and retries when it changed; while a
//! writer is in the middle of a commit it spins briefly, then sleeps (at most
//! 1 ms at a time). If the writer's process dies mid-write, the lock word says
//! so, and the reader reports the poison (within 100 ms, in practice
//! microseconds) with the data as it stands. Waiters sleep on a shared futex
//! on the word; a committer wakes them only when a count says someone
//! waits, so a commit with nobody waiting makes no system call.
//!
//! Readers never block a writer — the other side of that: a writer that
//! recommits without pause can keep a reader of a large value retrying (use
//! [`snapshot_timeout`](SharedMemory::snapshot_timeout) to bound the wait).
//! A waiter killed while waiting leaves the count one too high, which only
//! costs every later commit one wake-up system call.
//!
//! **What the Rust memory model says.** The reader uses only atomic loads. The
//! writer writes through a plain `&mut T`. When a reader and a writer are
//! threads of the same process, an atomic load that races with a non-atomic
//! store is a data race in the Rust (C++20) memory model, and so undefined
//! behaviour on paper, even though the reader discards every value it read
//! during the write. No seqlock whose writer uses plain stores avoids this;
//! the sound ones make the writer store atomically, which a `&mut T` cannot.
//! What this crate does: the reader never forms a reference to the shared
//! data, reads aligned words only (no load is torn below a word), and uses
//! nothing it read unless the sequence check passes; a reader in *another*
//! process is outside the model altogether (each compiler sees one side).
//! [Transactional segments](#transactional-segments) remove the race: their
//! writers work on a private copy and publish it with atomic stores.
//!
//! # Transactional segments
//!
//! Created with [`Options::transactional`]`(true)`, a segment keeps two
//! copies of the data and an index of the committed one. A write guard reads
//! the committed copy until its first `DerefMut`, then works on a copy in
//! process-private memory; dropping it normally publishes that copy, with
//! atomic stores, into the other buffer, then flips the index (a commit:
//! the version advances, waiters wake). A panic while it is held,
//! [`Guard::rollback`], or the death of its process at any instant — also in
//! the middle of publishing — discards the changes: the next
//! [`lock`](SharedMemory::lock) in any process is `Ok`, with the last
//! committed value, and nothing is poisoned. [`snapshot`](SharedMemory::snapshot)
//! copies the committed buffer and retries only if two commits overtook it
//! during the copy: it never waits for a writer, even one stopped while
//! holding the lock. No byte of the segment is written non-atomically while
//! another process may read it. The price: twice the memory, and one more
//! copy of the data per commit.
//!
//! # Self-describing segments
//!
//! Every segment also stores its key and the machine-readable layout of its
//! type ([`ShmSafe::LAYOUT`], a `const` built by the derive from the same
//! facts as the fingerprint). Tools decode any segment with it, without the
//! program's source: [`inspect`] opens, lists and removes segments without a
//! `T`, and the `tshm` command (package `typed-shm-cli`) is built on it.
//!
//! # The segment format, and other languages
//!
//! The format is published, normative and versioned, in
//! [`SPEC.md`](https://github.com/typed-shm/typed-shm/blob/main/SPEC.md):
//! names, every header field and offset (checked against this code by a
//! test), the stored layout, the lock, poison, commits and waiting, liveness
//! and transactional buffers. A header-only C library (`include/typed_shm.h`)
//! and a pure-Python package (`python/`) implement it, and the test suite
//! runs them against Rust processes.
//!
//! # Coming from Qt
//!
//! | QSharedMemory | typed-shm |
//! |---|---|
//! | `QSharedMemory(key)` + `create(size)` | [`SharedMemory::<T>::create(key, init)`](SharedMemory::create) / [`create_slice`](SharedMemory::create_slice) |
//! | `attach(ReadWrite)` / `attach(ReadOnly)` | [`SharedMemory::<T>::attach`](SharedMemory::attach) / `SharedMemory::<T, ReadOnly>::attach` |
//! | `detach()`, destructor | [`detach()`](SharedMemory::detach), `Drop` |
//! | `isAttached()` | always true for a live handle (typestate) |
//! | `setKey()` | make a new handle |
//! | `lock()` / `unlock()` | [`lock()`](SharedMemory::lock) returns a guard; dropping it unlocks |
//! | `data()` / `constData()` | `*guard` (`&mut T` / `&T`) |
//! | `size()` | [`size()`](SharedMemory::size) (exact, not page-rounded) |
//! | `error()` / `errorString()` | `Err(e)`: [`e.kind()`](Error::kind) / `e.to_string()` |
//! | `nativeKey()` | [`native_key()`](SharedMemory::native_key) |
//!
//! Unlike Qt, a lock is a futex in the segment (no system call when free), a
//! crashed holder is reported instead of leaving the data silently
//! half-written, a segment is removed by its last user even when the others
//! crashed (and, when all of them crashed, reclaimed by the next `create` of
//! its key, see [Lifetime](#lifetime)), and there are
//! [`try_lock`](SharedMemory::try_lock) and
//! [`lock_timeout`](SharedMemory::lock_timeout).
//!
//! # Keys
//!
//! A key is any UTF-8 string of 1 to 255 bytes without NUL. The OS name
//! ([`native_key`](SharedMemory::native_key)) is derived from it so that
//! programs in other languages can compute it:
//!
//! - a key of at most 24 bytes made only of `A-Z a-z 0-9 . _ -` becomes
//!   `/tshm_<key>` (`/dev/shm/tshm_<key>`);
//! - any other key becomes `/tshm_<prefix>~<hash>`: `<prefix>` is the key's
//!   first 7 characters with every character outside that set replaced by `_`,
//!   `<hash>` the 64-bit FNV-1a hash of the key's UTF-8 bytes as 16 lowercase
//!   hex digits.
//!
//! # Platform support
//!
//! Linux with glibc (x86_64 and other 64- and 32-bit targets): the crate relies
//! on POSIX shared memory in `/dev/shm`, open-file-description locks
//! (`F_OFD_SETLK`, Linux 3.15+) and glibc's robust process-shared mutexes
//! (glibc 2.30+ for the monotonic `lock_timeout`). On other platforms it does
//! not compile, with a message saying so. All OS calls live in one module, so
//! ports can be added.
//!
//! # Cargo features
//!
//! - `derive` (default): `#[derive(ShmSafe)]`, re-exported from
//!   `typed-shm-derive`.
#![deny(unsafe_code)]

mod area;
mod data;
mod error;
mod fingerprint;
mod guard;
mod header;
pub mod inspect;
mod key;
mod layout;
mod segment;
mod seq;
mod shared;
mod shm_safe;
mod snapshot;
mod sync;
mod sys;
mod txn;

pub use data::{Access, ReadOnly, ReadWrite, ShmData};
pub use error::{Error, ErrorKind, LockResult, PoisonError, TryLockError, TryLockResult};
pub use fingerprint::FingerprintBuilder;
pub use guard::Guard;
pub use layout::{FieldLayout, Primitive, TypeLayout};
pub use shared::{DEFAULT_MODE, DEFAULT_TIMEOUT, Options, SharedMemory};
pub use shm_safe::ShmSafe;
#[cfg(feature = "derive")]
pub use typed_shm_derive::ShmSafe;

/// The OS name of the segment that `key` names (what
/// [`SharedMemory::native_key`] returns), without opening anything: for peers
/// written in other languages, and for tools that inspect `/dev/shm`.
///
/// # Errors
///
/// [`ErrorKind::KeyError`] for an empty key, a key with NUL, or a key longer
/// than 255 bytes.
///
/// # Examples
///
/// ```
/// assert_eq!(typed_shm::native_key("telemetry")?, "/tshm_telemetry");
/// assert_eq!(typed_shm::native_key("a key with spaces")?, "/tshm_a_key_w~26f82781e701e160");
/// # Ok::<(), typed_shm::Error>(())
/// ```
pub fn native_key(key: &str) -> Result<String, Error> {
    key::native_key(key)
}

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

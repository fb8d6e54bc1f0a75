//! Threads and processes: the `fork` generation, per-thread lock tokens, the
//! PID namespace, the check that no thread ends while it holds a segment's
//! lock, and aborting with a message.
#![allow(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once, OnceLock};

static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
/// Seeds the thread tokens of this process (a pid would not do: processes in
/// different PID namespaces can have the same one). Random, drawn once,
/// redrawn in a child after `fork`.
static PROCESS_NONCE: AtomicU64 = AtomicU64::new(0);
/// Numbers the threads of this process, so that their tokens differ.
static NEXT_THREAD: AtomicU64 = AtomicU64::new(1);
static ATFORK: Once = Once::new();
/// The PID namespace of this process as `(st_dev, st_ino)` of
/// `/proc/self/ns/pid`, once looked up; reset in a child after `fork` (a
/// process that called `unshare(CLONE_NEWPID)` forks children into another
/// namespace).
static PID_NS_DEV: AtomicU64 = AtomicU64::new(0);
static PID_NS_INO: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's token, or 0 until its first use.
    static TOKEN: Cell<u64> = const { Cell::new(0) };
    /// The registry's lock, held by the forking thread across `fork`.
    static FORKING: RefCell<Option<MutexGuard<'static, Vec<Watched>>>> = const { RefCell::new(None) };
}

/// splitmix64: a bijective scrambler of 64-bit values.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Before `fork`: take the registry's lock, so that the child gets a
/// registry that no other thread was changing.
extern "C" fn before_fork() {
    let guard = registry();
    let _ = FORKING.try_with(|f| *f.borrow_mut() = Some(guard));
}

/// After `fork`, in the parent: give the registry's lock back.
extern "C" fn after_fork_in_parent() {
    let _ = FORKING.try_with(|f| f.borrow_mut().take());
}

extern "C" fn after_fork_in_child() {
    let generation = FORK_GENERATION.fetch_add(1, Ordering::Relaxed) + 1;
    // SAFETY: getpid(2) cannot fail and has no preconditions.
    let pid = unsafe { libc::getpid() } as u64;
    let nonce = PROCESS_NONCE.load(Ordering::Relaxed);
    PROCESS_NONCE.store(mix(nonce ^ mix(pid ^ (generation << 32))), Ordering::Relaxed);
    // The forking thread is the child's only thread: its token must change
    // with the nonce. The cell has no destructor, so this is a plain store.
    let _ = TOKEN.try_with(|t| t.set(0));
    // The handles the child inherited are unusable there: made in an older
    // generation than the one above, they refuse every lock call and their
    // guards leave the parent's lock alone, so none of their locks can be
    // held by the child's threads, and the thread-end check forgets them.
    let _ = FORKING.try_with(|f| {
        if let Some(mut registry) = f.borrow_mut().take() {
            registry.clear();
        }
    });
    PID_NS_INO.store(0, Ordering::Relaxed);
}

/// The pthread key whose destructor runs when a thread that ever locked a
/// segment ends.
fn exit_key() -> libc::pthread_key_t {
    static KEY: OnceLock<libc::pthread_key_t> = OnceLock::new();
    *KEY.get_or_init(|| {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: pthread_key_create(3) requires writable storage for the key
        // and an optional destructor of type `extern "C" fn(*mut c_void)`;
        // both are given.
        let rc = unsafe { libc::pthread_key_create(&mut key, Some(thread_ends)) };
        if rc != 0 {
            abort_with(&format!(
                "typed-shm: pthread_key_create failed ({}); cannot watch for threads that end \
                 holding a segment's lock",
                io::Error::from_raw_os_error(rc)
            ));
        }
        key
    })
}

/// A number that changes in a child process after every `fork`. A handle
/// records it when it is made and refuses to use inherited OS state when it
/// differs. Also sets up what [`fork_generation_now`], [`lock_token`] and
/// [`watch_holder`] rely on; call it before making a handle.
pub(crate) fn fork_generation() -> u64 {
    ATFORK.call_once(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u128(
            std::time::SystemTime::UNIX_EPOCH
                .elapsed()
                .map_or(0, |d| d.as_nanos()),
        );
        PROCESS_NONCE.store(mix(h.finish()), Ordering::Relaxed);
        exit_key();
        // SAFETY: pthread_atfork(3) takes three optional handlers of type
        // `extern "C" fn()`. The child handler runs in the only thread of the
        // child, which may then call anything an async-signal-safe function
        // may; ours stores atomics, calls getpid(2) and releases a mutex that
        // the same thread took in the prepare handler (so nobody else holds
        // it), and clears a vector while holding it.
        let rc = unsafe {
            libc::pthread_atfork(
                Some(before_fork),
                Some(after_fork_in_parent),
                Some(after_fork_in_child),
            )
        };
        assert_eq!(rc, 0, "pthread_atfork failed: out of memory");
    });
    fork_generation_now()
}

/// [`fork_generation`] without the one-time setup: for hot paths of handles,
/// whose creation did the setup.
#[inline]
pub(crate) fn fork_generation_now() -> u64 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// Whether something made in fork generation `made_in` was inherited across
/// `fork`: this process is a child of the one that made it.
#[inline]
pub(crate) fn inherited_from(made_in: u64) -> bool {
    made_in != fork_generation_now()
}

/// A random 64-bit token naming the calling thread among all threads of all
/// processes that may share a segment (never 0; equal for two live threads
/// with probability about 2^-64 per pair). Valid after [`fork_generation`]
/// ran once.
#[inline]
pub(crate) fn lock_token() -> u64 {
    let token = TOKEN.with(Cell::get);
    if token != 0 { token } else { new_lock_token() }
}

/// This thread's token if it has one: a thread without one has never
/// locked a segment (so it holds none), and asking does not give it one.
pub(crate) fn existing_lock_token() -> Option<u64> {
    TOKEN.try_with(Cell::get).ok().filter(|&t| t != 0)
}

#[cold]
#[inline(never)]
fn new_lock_token() -> u64 {
    let n = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
    let token = mix(PROCESS_NONCE.load(Ordering::Relaxed) ^ mix(n)).max(1);
    TOKEN.with(|t| t.set(token));
    // Every thread that may lock gets a token first: arm the check that runs
    // when it ends. The value only has to be non-null.
    // SAFETY: pthread_setspecific(3) requires a key made by
    // pthread_key_create, which `exit_key` returns; the value is never
    // dereferenced.
    let rc = unsafe { libc::pthread_setspecific(exit_key(), std::ptr::dangling::<libc::c_void>()) };
    if rc != 0 {
        abort_with("typed-shm: pthread_setspecific failed; cannot watch this thread's locks");
    }
    token
}

/// What the registry needs to know about one handle in this process, at an
/// address the registry reaches (so on the heap).
#[derive(Debug, Default)]
pub(crate) struct HandleFlags {
    /// Whether a thread of this process holds the lock through this handle
    /// (set after acquiring, cleared before releasing).
    held: AtomicBool,
}

impl HandleFlags {
    /// Whether a thread of this process holds the lock through this handle.
    #[inline(always)]
    pub(crate) fn held(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }

    /// Records that a thread of this process took (`true`) or is about to
    /// release (`false`) the lock through this handle.
    #[inline(always)]
    pub(crate) fn set_held(&self, held: bool) {
        self.held.store(held, Ordering::Relaxed);
    }
}

/// A handle's lock words and key, as registered by [`watch_holder`].
struct Watched {
    id: u64,
    holder: *const AtomicU64,
    flags: *const HandleFlags,
    key: Box<str>,
}

// SAFETY: `holder` and `flags` point to atomics (in a shared mapping, and on
// the heap) that any thread may use; the registry only uses them
// atomically, while the entry is registered (see `watch_holder`'s contract).
unsafe impl Send for Watched {}

fn registry() -> MutexGuard<'static, Vec<Watched>> {
    static REGISTRY: Mutex<Vec<Watched>> = Mutex::new(Vec::new());
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Registration of a holder word; [`unwatch_holder`] ends it.
#[derive(Debug)]
pub(crate) struct WatchId(u64);

/// Registers the lock of a handle: `holder`, the segment's holder word (the
/// token of the thread that holds the lock, 0 when free), and `flags`, the
/// handle's flags (whether a thread holds the lock through this handle).
/// When a thread of this process ends while both say it holds the lock, the
/// process aborts with a message naming `key`. (A thread that ends holding
/// the lock of a handle that was dropped does not abort: nothing can borrow
/// from a dropped handle.) In a child process after `fork`, every handle
/// registered when it forked is marked inherited.
///
/// # Safety
///
/// `holder` and `flags` must stay valid (for atomic use) until
/// [`unwatch_holder`] is called with the returned id.
pub(crate) unsafe fn watch_holder(holder: *const AtomicU64, flags: *const HandleFlags, key: &str) -> WatchId {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    registry().push(Watched {
        id,
        holder,
        flags,
        key: key.into(),
    });
    WatchId(id)
}

/// Ends a registration made by [`watch_holder`].
pub(crate) fn unwatch_holder(id: WatchId) {
    registry().retain(|w| w.id != id.0);
}

/// Runs when a thread that ever took a lock token ends, after its
/// thread-local destructors (glibc runs `pthread_key_create` destructors after
/// the C++-style thread-local ones that Rust's `thread_local!` uses), so a
/// guard kept in a thread-local has been dropped by now.
extern "C" fn thread_ends(_: *mut libc::c_void) {
    let Ok(token) = TOKEN.try_with(Cell::get) else {
        return;
    };
    if token == 0 {
        return;
    }
    let held: Vec<String> = registry()
        .iter()
        .filter(|w| {
            // SAFETY: dereferencing requires a pointer to a live `AtomicU64`:
            // the entry is registered, so its word is still valid for atomic
            // reads (`watch_holder`'s contract).
            let holder = unsafe { &*w.holder };
            // SAFETY: as above, for the `HandleFlags`.
            let flags = unsafe { &*w.flags };
            holder.load(Ordering::Relaxed) == token && flags.held()
        })
        .map(|w| format!("{:?}", w.key))
        .collect();
    if !held.is_empty() {
        abort_with(&format!(
            "typed-shm: a thread ended while holding the lock of segment {} (its guard was \
             leaked or forgotten). References from that guard may still be in use in this \
             process, so the lock must not pass to anyone else while the process lives: \
             aborting the process. Drop guards before their thread ends.",
            held.join(", ")
        ));
    }
}

/// Writes `message` and a newline to standard error, then aborts the process
/// (no unwinding, no destructors). For states the design says cannot happen
/// while a lock may be held, and for threads that end holding a lock.
#[cold]
#[inline(never)]
pub(crate) fn abort_with(message: &str) -> ! {
    let text = format!("{message}\n");
    let mut rest = text.as_bytes();
    while !rest.is_empty() {
        // SAFETY: write(2) reads `rest.len()` bytes from a valid buffer; fd 2
        // may be closed, which only makes the call fail.
        let n = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
        let Ok(n @ 1..) = usize::try_from(n) else { break };
        rest = &rest[n..];
    }
    std::process::abort()
}

/// This process's PID namespace as `(device, inode)` of
/// `/proc/self/ns/pid` (namespaces(7): "two processes are in the same
/// namespace if the device IDs and inode numbers of their symbolic links …
/// are the same").
pub(crate) fn pid_namespace() -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    // The cache is cleared after `fork` only once the handlers are set up.
    fork_generation();
    // Both words are only ever set to this process's values (an inode is
    // never 0), and cleared in a child after `fork`.
    let ino = PID_NS_INO.load(Ordering::Acquire);
    if ino != 0 {
        return Ok((PID_NS_DEV.load(Ordering::Relaxed), ino));
    }
    let meta = std::fs::metadata("/proc/self/ns/pid")?;
    PID_NS_DEV.store(meta.dev(), Ordering::Relaxed);
    PID_NS_INO.store(meta.ino(), Ordering::Release);
    Ok((meta.dev(), meta.ino()))
}

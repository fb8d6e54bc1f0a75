//! Heap use of the hot path and of a handle, counted by a global allocator.
//!
//! - `lock`, `try_lock` and dropping a guard allocate nothing.
//! - A handle's own heap footprint (what `attach` leaves allocated) stays
//!   below 512 bytes; the number is printed (`--nocapture`).
//! - A segment costs its data rounded up to pages plus one header page.
//!
//! The counters are per thread, so tests running in parallel do not see each
//! other's allocations.
// A global allocator is an `unsafe impl`; it only forwards to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use typed_shm::SharedMemory;

/// Forwards to the system allocator and counts, per thread, the number of
/// allocations and the bytes allocated and freed.
struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static ALLOCATED: Cell<u64> = const { Cell::new(0) };
    static FREED: Cell<u64> = const { Cell::new(0) };
}

fn add(counter: &'static std::thread::LocalKey<Cell<u64>>, n: usize) {
    // `try_with`: a thread being torn down may still allocate.
    let _ = counter.try_with(|c| c.set(c.get() + n as u64));
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System` upholds the `GlobalAlloc` contract; the counting
// touches const-initialized thread-locals only, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(&ALLOCS, 1);
        add(&ALLOCATED, layout.size());
        // SAFETY: the caller's `layout` contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(&ALLOCS, 1);
        add(&ALLOCATED, layout.size());
        // SAFETY: the caller's `layout` contract is passed on unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(&FREED, layout.size());
        // SAFETY: `ptr` was allocated by `System` (every allocation goes
        // through this type) with `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(&ALLOCS, 1);
        add(&ALLOCATED, new_size);
        add(&FREED, layout.size());
        // SAFETY: the caller's contract for `ptr`, `layout` and `new_size` is
        // passed on unchanged; `ptr` came from `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// This thread's counters: (allocations, bytes allocated, bytes freed).
fn counters() -> (u64, u64, u64) {
    (
        ALLOCS.with(Cell::get),
        ALLOCATED.with(Cell::get),
        FREED.with(Cell::get),
    )
}

/// A key unique to this process and test.
fn key(test: &str) -> String {
    format!("alloc-{}-{test}", std::process::id())
}

/// The object's path in `/dev/shm`, from `native_key()` (which starts with
/// `/`).
fn shm_path(native_key: &str) -> PathBuf {
    PathBuf::from(format!("/dev/shm{native_key}"))
}

#[test]
fn lock_try_lock_and_guard_drop_allocate_nothing() {
    let shm = SharedMemory::<[u64; 8]>::create(&key("hot"), [0; 8]).expect("create");
    let path = shm_path(shm.native_key());
    let round = |i: u64| {
        let mut g = shm.lock().unwrap_or_else(|_| panic!("poisoned"));
        g[0] = g[0].wrapping_add(i);
        drop(g);
        let mut g = shm.try_lock().unwrap_or_else(|_| panic!("try_lock failed"));
        g[1] = g[1].wrapping_add(i);
        drop(g);
    };
    // Warm-up: anything lazily initialized on first use happens here.
    for i in 0..100 {
        round(i);
    }
    let (a0, b0, _) = counters();
    for i in 0..100_000 {
        round(i);
    }
    let (a1, b1, _) = counters();
    println!(
        "lock + try_lock + guard drop, 100000 rounds: {} allocations, {} bytes",
        a1 - a0,
        b1 - b0
    );
    assert_eq!(a1 - a0, 0, "the hot path allocated {} bytes", b1 - b0);
    drop(shm);
    assert!(!path.exists(), "{} left behind", path.display());
}

#[test]
fn snapshot_snapshot_into_version_and_waits_allocate_nothing() {
    use std::time::Duration;
    let k = key("readers");
    let one = SharedMemory::<[u64; 8]>::create(&k, [3; 8]).expect("create");
    let many = SharedMemory::<[u32]>::create_slice(&format!("{k}-slice"), 1000, 7).expect("create_slice");
    let mut buf = vec![0u32; 1000];
    let round = |buf: &mut [u32]| {
        let v = one.snapshot().unwrap_or_else(|_| panic!("poisoned"));
        assert_eq!(v[7], 3);
        many.snapshot_into(buf).unwrap_or_else(|_| panic!("poisoned"));
        let seen = one.version() + many.version();
        assert_eq!(
            one.wait_for_change(seen + 1),
            0,
            "a version other than `since` returns at once"
        );
        assert_eq!(
            one.wait_for_change_timeout(seen + 1, Duration::from_secs(1)).ok(),
            Some(0)
        );
    };
    for _ in 0..100 {
        round(&mut buf);
    }
    let (a0, b0, _) = counters();
    for _ in 0..10_000 {
        round(&mut buf);
    }
    let (a1, b1, _) = counters();
    println!(
        "snapshot + snapshot_into + version + wait_for_change(_timeout), 10000 rounds: {} allocations",
        a1 - a0
    );
    assert_eq!(a1 - a0, 0, "the read path allocated {} bytes", b1 - b0);
    assert_eq!(buf[999], 7);
    let paths = [shm_path(one.native_key()), shm_path(many.native_key())];
    drop((one, many));
    for p in paths {
        assert!(!p.exists(), "{} left behind", p.display());
    }
}

#[test]
fn a_handle_costs_less_than_512_heap_bytes() {
    let k = key("footprint");
    let owner = SharedMemory::<[u64; 8]>::create(&k, [0; 8]).expect("create");
    let path = shm_path(owner.native_key());
    let (_, alloc0, freed0) = counters();
    let second = SharedMemory::<[u64; 8]>::attach(&k).expect("attach");
    let (_, alloc1, freed1) = counters();
    let kept = (alloc1 - alloc0).saturating_sub(freed1 - freed0);
    println!(
        "attach: {} bytes allocated, {} freed, {kept} kept by the handle \
         (plus {} bytes inline)",
        alloc1 - alloc0,
        freed1 - freed0,
        size_of::<SharedMemory<[u64; 8]>>()
    );
    assert!(kept < 512, "a handle keeps {kept} heap bytes");
    drop(second);
    drop(owner);
    assert!(!path.exists(), "{} left behind", path.display());
}

#[test]
fn a_segment_costs_its_data_pages_plus_one_header_page() {
    const PAGE: u64 = 4096;
    let cell = SharedMemory::<[u64; 8]>::create(&key("cost-cell"), [0; 8]).expect("create");
    let slice = SharedMemory::<[u8]>::create_slice(&key("cost-slice"), 10_000, 0).expect("create");
    for (path, data) in [
        (shm_path(cell.native_key()), 64u64),
        (shm_path(slice.native_key()), 10_000),
    ] {
        let meta = std::fs::metadata(&path).expect("stat the object");
        let budget = PAGE + data.div_ceil(PAGE) * PAGE;
        let resident = meta.blocks() * 512;
        println!(
            "{}: {data} data bytes, file size {}, {resident} bytes of memory, budget {budget}",
            path.display(),
            meta.len()
        );
        assert!(meta.len() <= budget, "file size {} > {budget}", meta.len());
        assert!(resident <= budget, "memory {resident} > {budget}");
    }
    let paths = [shm_path(cell.native_key()), shm_path(slice.native_key())];
    drop(cell);
    drop(slice);
    for path in paths {
        assert!(!path.exists(), "{} left behind", path.display());
    }
}

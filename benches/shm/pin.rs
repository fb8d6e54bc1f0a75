//! CPU pinning for the two-sided benchmarks.
//!
//! `contended` and `pingpong` measure two processes (or threads) on two
//! CPUs. Left to the scheduler, both sides sometimes share one CPU on a
//! 2-core machine, and then they never contend at all: a run measures either
//! time slicing or real cross-CPU hand-over, at random. Pinning each side to
//! its own CPU makes every subject measure the same thing.
#![allow(unsafe_code)]

/// A CPU mask as the kernel's `cpu_set_t` lays it out: 1024 bits.
type Mask = [libc::c_ulong; 1024 / libc::c_ulong::BITS as usize];

const WORD: usize = libc::c_ulong::BITS as usize;

fn get() -> Mask {
    let mut mask: Mask = [0; 1024 / WORD];
    // SAFETY: sched_getaffinity(2): pid 0 is the calling thread; `mask` is
    // writable for `size_of::<Mask>()` bytes, which is the size passed, and
    // has the layout of `cpu_set_t` (an array of `unsigned long` bits, 128
    // bytes on Linux).
    let rc =
        unsafe { libc::sched_getaffinity(0, size_of::<Mask>(), (&raw mut mask).cast::<libc::cpu_set_t>()) };
    assert_eq!(rc, 0, "sched_getaffinity: {}", std::io::Error::last_os_error());
    mask
}

fn set(mask: &Mask) {
    // SAFETY: sched_setaffinity(2): pid 0 is the calling thread; `mask` is
    // readable for the size passed and laid out as a `cpu_set_t`.
    let rc = unsafe {
        libc::sched_setaffinity(0, size_of::<Mask>(), (&raw const *mask).cast::<libc::cpu_set_t>())
    };
    assert_eq!(rc, 0, "sched_setaffinity: {}", std::io::Error::last_os_error());
}

/// The first two CPUs this thread may run on, if there are two.
pub fn two_cpus() -> Option<(usize, usize)> {
    let mask = get();
    let mut cpus = (0..1024).filter(|&c| mask[c / WORD] & (1 << (c % WORD)) != 0);
    Some((cpus.next()?, cpus.next()?))
}

/// Pins the calling thread to `cpu` until the returned value is dropped.
pub fn pin(cpu: usize) -> Pinned {
    let old = get();
    let mut mask: Mask = [0; 1024 / WORD];
    mask[cpu / WORD] |= 1 << (cpu % WORD);
    set(&mask);
    Pinned { old }
}

/// Restores the previous CPU mask on drop.
pub struct Pinned {
    old: Mask,
}

impl Drop for Pinned {
    fn drop(&mut self) {
        set(&self.old);
    }
}

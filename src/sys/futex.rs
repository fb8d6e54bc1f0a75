//! Shared (process-wide, not `FUTEX_PRIVATE_FLAG`) futex wait and wake on a
//! 32-bit word in a shared mapping, for change notification.
#![allow(unsafe_code)]

use std::time::Duration;

/// Sleeps while the 32-bit word at `word` holds `expected`, for at most
/// `timeout` (relative, on `CLOCK_MONOTONIC`), or until a [`wake_all`] on the
/// same word — in any process that maps it. May return early (a signal, a
/// spurious wake-up, the word already changed): callers re-check their
/// condition.
///
/// # Safety
///
/// `word` must be 4-aligned and point into a mapping that stays mapped for
/// the duration of the call.
pub(crate) unsafe fn wait(word: *const u32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: futex(2) FUTEX_WAIT reads the 4-aligned word at `word` (valid
    // and mapped: this fn's contract) and compares it with `expected`;
    // `&ts` is a valid relative timeout (tv_nsec below 1e9). The other
    // arguments are ignored for FUTEX_WAIT. Its errors (EAGAIN: the word
    // changed; ETIMEDOUT; EINTR) all mean "re-check", which callers do.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word,
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
}

/// Wakes every thread, in any process, sleeping in [`wait`] on `word`.
///
/// # Safety
///
/// As for [`wait`].
pub(crate) unsafe fn wake_all(word: *const u32) {
    // SAFETY: futex(2) FUTEX_WAKE takes the address of a 4-aligned word
    // (this fn's contract) and a count; it does not dereference the other
    // pointer arguments. It cannot fail for a valid, mapped address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word,
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
}

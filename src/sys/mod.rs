//! The only module that calls the operating system.
//!
//! Everything above it works with safe wrappers: file descriptors, stat
//! records, open-file-description locks, a raw robust mutex, and per-thread
//! and per-process facts (lock tokens, the `fork` generation, the PID
//! namespace).

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
compile_error!(
    "typed-shm supports Linux with glibc only for now: it relies on POSIX shared memory, \
     open-file-description locks (F_OFD_SETLK) and glibc's robust process-shared mutexes"
);

mod linux;
mod mutex;
mod thread;

pub(crate) use linux::*;
pub(crate) use mutex::*;
pub(crate) use thread::*;

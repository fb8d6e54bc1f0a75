//! The only module that calls the operating system.
//!
//! Everything above it works with safe wrappers: [`ShmFile`] (an open
//! shared-memory object with its stat, size, `pread`, open-file-description
//! locks and mapping), [`Mapping`] (a mapped region, with its protection),
//! a raw robust mutex, and per-thread and per-process facts (lock tokens, the
//! `fork` generation, the PID namespace), and shared futex wait and wake
//! ([`futex`]). Failures come back as an
//! [`OsError`] that names its [`Call`].

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
compile_error!(
    "typed-shm supports Linux with glibc only for now: it relies on POSIX shared memory, \
     open-file-description locks (F_OFD_SETLK) and glibc's robust process-shared mutexes"
);

mod call;
mod file;
pub(crate) mod futex;
mod map;
mod mutex;
mod notify;
mod thread;

pub(crate) use call::*;
pub(crate) use file::*;
pub(crate) use map::*;
pub(crate) use mutex::*;
pub(crate) use notify::*;
pub(crate) use thread::*;

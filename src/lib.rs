//! typed-shm (crate docs are written in full with the core library).
#![deny(unsafe_code)]

mod fingerprint;
mod shm_safe;

pub use fingerprint::FingerprintBuilder;
pub use shm_safe::ShmSafe;
#[cfg(feature = "derive")]
pub use typed_shm_derive::ShmSafe;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

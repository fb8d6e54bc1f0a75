//! Items used by the code that `#[derive(ShmSafe)]` generates. Not public API:
//! names here may change in any release.

pub use crate::fingerprint::FingerprintBuilder;
pub use crate::shm_safe::ShmSafe;
pub use bytemuck;

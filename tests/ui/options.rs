// Unknown `#[shm_safe(...)]` options, and `external_pod` without a `Pod` impl.
use typed_shm::ShmSafe;

#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
#[shm_safe(bytemuck_derived)]
struct UnknownOption {
    a: u32,
}

#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
#[shm_safe(external_pod)]
struct PromisedPodMissing {
    a: u32,
}

fn main() {}

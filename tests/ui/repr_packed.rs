// `packed` makes fields unaligned; padding must be explicit instead.
use typed_shm::ShmSafe;

#[derive(Clone, Copy, ShmSafe)]
#[repr(C, packed)]
struct Packed {
    a: u8,
    b: u32,
}

#[derive(Clone, Copy, ShmSafe)]
#[repr(C, packed(2))]
struct PackedTwo {
    a: u8,
    b: u32,
}

fn main() {}

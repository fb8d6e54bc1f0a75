// Padding anywhere: between fields, at the end, or from `align(N)`.
use typed_shm::ShmSafe;

#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
struct Interior {
    flag: u8,
    len: u32,
}

#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
struct InteriorAndTrailing {
    a: u8,
    b: u64,
    c: u16,
}

#[derive(Clone, Copy, ShmSafe)]
#[repr(C, align(16))]
struct OverAligned {
    value: u64,
}

fn main() {}

// A segment needs at least one byte of data.
use typed_shm::ShmSafe;

#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
struct Unit;

#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
struct EmptyBraces {}

#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
struct EmptyTuple();

#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
struct OnlyEmptyArray {
    nothing: [u64; 0],
}

#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
struct UnitField {
    a: u32,
    b: (),
}

fn main() {}

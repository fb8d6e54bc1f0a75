// No `#[repr(C)]`: Rust's default layout may reorder fields.
use typed_shm::ShmSafe;

#[derive(Clone, Copy, ShmSafe)]
struct NoRepr {
    a: u32,
    b: u32,
}

// An `align` alone does not fix the field order either.
#[derive(Clone, Copy, ShmSafe)]
#[repr(align(8))]
struct AlignOnly {
    a: u64,
}

fn main() {}

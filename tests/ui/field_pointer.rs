// Addresses mean nothing in another process.
use typed_shm::ShmSafe;

#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
struct Pointers {
    raw: *const u8,
    raw_mut: *mut u32,
}

#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
struct References {
    r: &'static u32,
}

#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
struct FnPointer {
    callback: fn(),
}

fn main() {}

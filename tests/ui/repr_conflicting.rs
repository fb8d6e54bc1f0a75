// Reprs other than `C` and `transparent`.
use typed_shm::ShmSafe;

#[derive(Clone, Copy, ShmSafe)]
#[repr(Rust)]
struct ExplicitRust {
    a: u32,
}

#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
#[repr(u32)]
struct IntegerRepr {
    a: u32,
}

#[derive(Clone, Copy, ShmSafe)]
#[repr(C, transparent)]
struct Both {
    a: u32,
}

fn main() {}

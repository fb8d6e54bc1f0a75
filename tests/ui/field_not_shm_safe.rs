// Field types that only the compiler can judge: the bound on each field
// lands the error on the field's type.
use typed_shm::ShmSafe;

#[derive(Clone, Copy)]
#[repr(u8)]
enum Mode {
    Off,
    On,
}

#[derive(Clone, Copy)]
#[repr(C)]
struct NotDerived {
    a: u32,
}

type Flag = bool;

#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
struct Fields {
    mode: Mode,
    maybe: Option<u32>,
    plain: NotDerived,
    hidden: Flag,
    nonzero: core::num::NonZeroU32,
}

fn main() {}

// Padding and the fingerprint of a generic struct depend on its parameters.
use typed_shm::ShmSafe;

#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
struct TypeParam<T> {
    a: T,
}

#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
struct ConstParam<const N: usize> {
    data: [u8; N],
}

#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
struct Lifetime<'a> {
    r: &'a u32,
}

fn main() {}

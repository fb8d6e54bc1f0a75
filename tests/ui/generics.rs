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

// A `where` clause without parameters has nothing to say; refused too.
#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
struct WhereClause
where
    u32: Copy,
{
    a: u32,
}

fn main() {}

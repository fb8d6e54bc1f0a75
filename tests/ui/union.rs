// Which field of a union is live is unknown to another process.
use typed_shm::ShmSafe;

#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
union Either {
    a: u32,
    b: f32,
}

fn main() {}

// Heap-owning types point into this process's heap.
use typed_shm::ShmSafe;

#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
struct Heap {
    name: String,
    items: Vec<u8>,
    boxed: Box<u32>,
}

fn main() {}

// `ShmSafe` (through `bytemuck::Pod`) requires `Copy`.
use typed_shm::ShmSafe;

#[derive(ShmSafe)]
#[repr(C)]
struct NotCopy {
    a: u32,
}

fn main() {}

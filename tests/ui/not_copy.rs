// `ShmSafe` (through `bytemuck::Pod`) requires `Copy`: one error per struct,
// on its name, that says to derive `Clone, Copy`.
use typed_shm::ShmSafe;

#[derive(ShmSafe)]
#[repr(C)]
struct NotCopy {
    a: u32,
}

#[derive(Clone, ShmSafe)]
#[repr(C)]
struct CloneOnly {
    a: u32,
}

fn main() {}

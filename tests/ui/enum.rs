// Another process could write a discriminant that is no variant.
use typed_shm::ShmSafe;

#[derive(Clone, Copy, ShmSafe)]
#[repr(u8)]
enum State {
    Idle,
    Busy,
}

fn main() {}

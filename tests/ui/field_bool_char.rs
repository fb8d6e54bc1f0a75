// `bool` and `char` have bit patterns that are not valid values.
use typed_shm::ShmSafe;

#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
struct Flags {
    ready: bool,
    letter: char,
    many: [bool; 4],
}

fn main() {}

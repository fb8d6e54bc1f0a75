//! tmp
fn main() {
    let n = 5000;
    let t = std::time::Instant::now();
    for _ in 0..n {
        let a = typed_shm::SharedMemory::<[u64; 8]>::create("lc-tmp", [0; 8]).unwrap();
        let b = typed_shm::SharedMemory::<[u64; 8]>::attach("lc-tmp").unwrap();
        drop(b);
        drop(a);
    }
    eprintln!("{:?} per lifecycle", t.elapsed() / n);
}

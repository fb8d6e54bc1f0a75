//! Object names unique to this run, and the check that none is left behind.

use std::path::Path;

/// The tag every object of this run carries: `tsb` and the parent's pid.
fn tag() -> String {
    format!("tsb{}-", std::process::id())
}

/// The name (key) of one benchmark's object: short, so that typed-shm's
/// native key keeps it readable, and unique to this process.
pub fn name(code: &str) -> String {
    format!("{}{code}", tag())
}

/// Asserts that no object of this run is left in `/dev/shm`; removes any it
/// finds, so a failed run does not leak memory either.
///
/// # Panics
///
/// If something was left.
pub fn check_clean() {
    let left = leftovers();
    for path in &left {
        let _ = std::fs::remove_file(path);
    }
    assert!(left.is_empty(), "left in /dev/shm (now removed): {left:?}");
    eprintln!("/dev/shm: nothing left behind by this run");
}

/// Asserts that no object of this run whose name contains `name` exists.
pub fn assert_gone(name: &str) {
    let left: Vec<_> = leftovers()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(name))
        .collect();
    assert!(left.is_empty(), "{name} outlived its last handle: {left:?}");
}

fn leftovers() -> Vec<std::path::PathBuf> {
    let tag = tag();
    std::fs::read_dir(Path::new("/dev/shm"))
        .expect("read /dev/shm")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|f| f.to_string_lossy().contains(&tag)))
        .collect()
}

//! Two processes, one segment, two layouts of the same size: the second
//! program's `attach` fails with `LayoutMismatch`, the message shows both
//! layouts as `#[derive(ShmSafe)]` describes them, and the segment is left
//! as it was.
//!
//! The child is this test binary run again with a role (see `common`); it
//! reports what it saw, and the parent makes the assertions.

mod common;

use std::time::Duration;

use common::{Child, Keys};
use typed_shm::{ErrorKind, SharedMemory};

/// The layout the parent creates the segment with.
mod parent_program {
    #[derive(Clone, Copy, Debug, PartialEq, typed_shm::ShmSafe)]
    #[repr(C)]
    pub struct Telemetry {
        pub seq: u64,
        pub temps: [f32; 8],
    }
}

/// Another program's idea of `Telemetry`: same name, same size (40 bytes),
/// different fields.
mod other_program {
    #[derive(Clone, Copy, Debug, typed_shm::ShmSafe)]
    #[repr(C)]
    pub struct Telemetry {
        pub seq: u32,
        pub flags: u32,
        pub temps: [f32; 8],
    }
}

/// The parent's definition written out again in another module: the module
/// path is not part of the layout, so this one attaches.
mod same_definition_elsewhere {
    #[derive(Clone, Copy, Debug, typed_shm::ShmSafe)]
    #[repr(C)]
    pub struct Telemetry {
        pub seq: u64,
        pub temps: [f32; 8],
    }
}

const TEST: &str = "attach_with_another_layout_of_the_same_size_is_a_layout_mismatch";
const TIMEOUT: Duration = Duration::from_secs(30);

const PARENT_LAYOUT: &str = "Telemetry { seq: u64 @0, temps: [f32; 8] @8 }";
const CHILD_LAYOUT: &str = "Telemetry { seq: u32 @0, flags: u32 @4, temps: [f32; 8] @8 }";

#[test]
fn attach_with_another_layout_of_the_same_size_is_a_layout_mismatch() {
    if let Some((role, key)) = common::role() {
        assert_eq!(role, "other-program");
        return child(&key);
    }
    assert_eq!(
        size_of::<parent_program::Telemetry>(),
        size_of::<other_program::Telemetry>(),
        "the test needs two layouts of the same size"
    );
    assert_ne!(
        <parent_program::Telemetry as typed_shm::ShmSafe>::FINGERPRINT,
        <other_program::Telemetry as typed_shm::ShmSafe>::FINGERPRINT,
    );

    let key = common::unique_key("derive-mismatch");
    // Removes the object even if an assertion below fails.
    let keys = Keys::new(&[&key]);
    let init = parent_program::Telemetry {
        seq: 0x1122_3344_5566_7788,
        temps: [21.5; 8],
    };
    let shm = SharedMemory::<parent_program::Telemetry>::create(&key, init).expect("create");
    let object = format!("/dev/shm{}", shm.native_key());
    assert_eq!(object, common::shm_path(&key));
    let object_len = std::fs::metadata(&object).expect("the object exists").len();

    let mut child = Child::spawn(TEST, "other-program", &key, &[]);
    // The mismatched attach: the right kind, both layouts in the message.
    let kind = child.next_line(TIMEOUT);
    assert_eq!(kind, format!("kind {:?}", ErrorKind::LayoutMismatch));
    let message = child.next_line(TIMEOUT);
    assert!(
        message.contains(&format!("holds {PARENT_LAYOUT} (40 bytes)")),
        "the creator's layout is missing from: {message}"
    );
    assert!(
        message.contains(&format!("expects {CHILD_LAYOUT} (40 bytes)")),
        "the attacher's layout is missing from: {message}"
    );
    // The same definition from another module attaches and reads the data.
    child.expect(&format!("seq {:#x}", init.seq), TIMEOUT);
    child.wait_success(TIMEOUT);

    // The segment is untouched: same data, same object size, only us.
    assert_eq!(*shm.lock().expect("lock after the child"), init);
    assert_eq!(shm.attach_count(), 1);
    assert_eq!(std::fs::metadata(&object).expect("still there").len(), object_len);

    shm.detach().expect("detach");
    keys.finish();
}

/// The other program: reports what it saw, one line at a time.
fn child(key: &str) {
    // With `--nocapture` the harness prints `test <name> ... ` without a line
    // break before the test runs; end that line so the first report starts
    // one of its own.
    println!();
    match SharedMemory::<other_program::Telemetry>::attach(key) {
        Ok(_) => common::say("kind attached without an error"),
        Err(e) => {
            common::say(&format!("kind {:?}", e.kind()));
            common::say(&e.to_string().replace('\n', " "));
        }
    }
    match SharedMemory::<same_definition_elsewhere::Telemetry>::attach(key) {
        Ok(shm) => {
            let seq = shm.lock().expect("lock in the child").seq;
            common::say(&format!("seq {seq:#x}"));
            shm.detach().expect("detach in the child");
        }
        Err(e) => common::say(&format!("seq: attach failed: {e}")),
    }
}

//! The `tshm` binary against real segments made by other processes: every
//! command, its `--json` output field by field, foreign files, held and
//! poisoned locks, a killed owner's stale segment, and the C and Python
//! definitions read by real `cc` and `python3` programs.
//!
//! Children are re-runs of this test binary in a role (see
//! `tests/common/mod.rs` at the repository root).

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Child, Keys, say, shm_path, unique_key};
use serde_json::Value;
use typed_shm::{SharedMemory, ShmSafe};

const T: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
struct Inner {
    x: i16,
    y: [u16; 3],
}

#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
struct Reading {
    seq: u64,
    temps: [f32; 4],
    offset: i32,
    flags: u8,
    _pad: [u8; 3],
    inner: Inner,
    n: usize,
    pos: [[i8; 2]; 2],
    _pad2: [u8; 4],
}

#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
struct Sample {
    t: u32,
    v: f32,
}

const READING_DESC: &str = "Reading { seq: u64 @0, temps: [f32; 4] @8, offset: i32 @24, flags: u8 @28, \
     _pad: [u8; 3] @29, inner: Inner @32, n: usize @40, pos: [[i8; 2]; 2] @48, _pad2: [u8; 4] @52 }";

fn reading(seq: u64) -> Reading {
    Reading {
        seq,
        temps: [1.5, -2.25, 0.0, 100.0],
        offset: -7,
        flags: 3,
        _pad: [0; 3],
        inner: Inner { x: -3, y: [7, 8, 9] },
        n: 42,
        pos: [[-1, 2], [3, -4]],
        _pad2: [0; 4],
    }
}

fn slice_key(key: &str) -> String {
    format!("{key}-s")
}

/// The child role: owns a `Reading` segment (`key`) and a `[Sample]` one
/// (`key-s`), commits once, then obeys its parent's lines.
fn owner(key: &str) {
    let shm = SharedMemory::<Reading>::create(key, reading(0)).expect("create");
    let slice = SharedMemory::<[Sample]>::create_slice(&slice_key(key), 3, Sample { t: 0, v: 0.5 })
        .expect("create slice");
    slice.lock().unwrap()[2] = Sample { t: 9, v: -1.0 };
    shm.lock().unwrap().seq = 1;
    say("ready");
    let mut held = None;
    loop {
        let line = common::hear();
        match line.as_str() {
            "hold" => {
                held = Some(shm.lock().unwrap());
                say("held");
            }
            "release" => {
                held = None;
                say("released");
            }
            "poison" => {
                // The panic is the point: keep its message out of the output.
                let hook = std::panic::take_hook();
                std::panic::set_hook(Box::new(|_| {}));
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let mut g = shm.lock().unwrap();
                    g.seq = 99;
                    panic!("a writer fails mid-update (on purpose)");
                }));
                std::panic::set_hook(hook);
                assert!(r.is_err());
                say("poisoned");
            }
            "commits" => {
                // Commit every 20 ms until told to stop.
                let (tx, rx) = std::sync::mpsc::channel::<()>();
                std::thread::scope(|s| {
                    let shm = &shm;
                    s.spawn(move || {
                        while rx.recv_timeout(Duration::from_millis(20)).is_err() {
                            let mut g = shm.lock().unwrap();
                            g.seq += 1;
                            g.n = g.seq as usize;
                        }
                    });
                    assert_eq!(common::hear(), "stop");
                    tx.send(()).unwrap();
                });
                say("stopped");
            }
            "exit" | "" => break,
            other => panic!("unknown command {other:?}"),
        }
    }
    drop(held);
}

/// Runs `tshm args…` and returns its output.
fn tshm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tshm"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run tshm")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `tshm args…`, expects exit 0, and returns its standard output.
fn ok(args: &[&str]) -> String {
    let o = tshm(args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "tshm {args:?}: {}{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Runs `tshm args…` and expects exit `code`; returns standard error.
fn fails(args: &[&str], code: i32) -> String {
    let o = tshm(args);
    assert_eq!(
        o.status.code(),
        Some(code),
        "tshm {args:?}: {}{}",
        stdout(&o),
        stderr(&o)
    );
    stderr(&o)
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The `list --json` entry of `key`, if listed.
fn listed(key: &str) -> Option<Value> {
    let all = json(&ok(&["list", "--json"]));
    all.as_array()
        .expect("an array")
        .iter()
        .find(|e| e["key"] == key)
        .cloned()
}

fn spawn_owner(entry: &str, key: &str) -> Child {
    let mut c = Child::spawn(entry, "owner", key, &[]);
    c.expect("ready", T);
    c
}

fn keys_for(key: &str) -> Keys {
    Keys::new(&[key, &slice_key(key)])
}

#[test]
fn list_and_show_decode_the_segments_of_another_process() {
    const ENTRY: &str = "list_and_show_decode_the_segments_of_another_process";
    if let Some((_, key)) = common::role() {
        return owner(&key);
    }
    let key = unique_key("list");
    let keys = keys_for(&key);
    let mut c = spawn_owner(ENTRY, &key);

    let e = listed(&key).expect("listed");
    assert_eq!(e["key"], key.as_str());
    assert_eq!(e["native_key"], typed_shm::native_key(&key).unwrap());
    assert_eq!(e["type"], READING_DESC);
    assert_eq!(e["size"], 56);
    assert_eq!(e["len"], 1);
    assert_eq!(e["attached"], 1);
    assert_eq!(e["lock"], "free");
    assert_eq!(e["version"], 1);
    assert_eq!(e["transactional"], false);
    assert_eq!(e["stale"], false);
    let s = listed(&slice_key(&key)).expect("slice listed");
    assert_eq!(s["type"], "[Sample { t: u32 @0, v: f32 @4 }]");
    assert_eq!((s["size"].as_u64(), s["len"].as_u64()), (Some(24), Some(3)));
    assert_eq!(s["version"], 1);

    let table = ok(&["list"]);
    let row = table
        .lines()
        .find(|l| l.contains(&key) && !l.contains("-s "))
        .expect("a row");
    assert!(
        row.contains("Reading {") && row.contains(" 56 ") && row.contains("free"),
        "{row}"
    );

    let shown = json(&ok(&["show", &key, "--json"]));
    assert_eq!(shown["key"], key.as_str());
    assert_eq!(shown["version"], 1);
    assert_eq!(shown["poisoned"], false);
    let v = &shown["value"];
    assert_eq!(v["seq"], 1);
    assert_eq!(v["temps"], serde_json::json!([1.5, -2.25, 0.0, 100.0]));
    assert_eq!(v["offset"], -7);
    assert_eq!(v["flags"], 3);
    assert_eq!(v["inner"], serde_json::json!({"x": -3, "y": [7, 8, 9]}));
    assert_eq!(v["n"], 42);
    assert_eq!(v["pos"], serde_json::json!([[-1, 2], [3, -4]]));
    let names: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(
        names,
        [
            "seq", "temps", "offset", "flags", "_pad", "inner", "n", "pos", "_pad2"
        ]
    );

    let shown = json(&ok(&["show", &slice_key(&key), "--json"]));
    assert_eq!(
        shown["value"],
        serde_json::json!([{"t": 0, "v": 0.5}, {"t": 0, "v": 0.5}, {"t": 9, "v": -1.0}])
    );

    let text = ok(&["show", &key]);
    assert!(text.starts_with(&format!("{key} (version 1)")), "{text}");
    assert!(text.contains("  inner.y = [7,8,9]"), "{text}");
    assert!(text.contains("  temps = [1.5,-2.25,0.0,100.0]"), "{text}");

    c.send("exit");
    c.wait_success(T);
    keys.finish();
}

#[test]
fn watch_prints_each_commit_of_another_process() {
    const ENTRY: &str = "watch_prints_each_commit_of_another_process";
    if let Some((_, key)) = common::role() {
        return owner(&key);
    }
    let key = unique_key("watch");
    let keys = keys_for(&key);
    let mut c = spawn_owner(ENTRY, &key);
    c.send("commits");
    let o = Command::new(env!("CARGO_BIN_EXE_tshm"))
        .args(["watch", &key, "--json", "--count", "3"])
        .output()
        .expect("run watch");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let lines: Vec<Value> = stdout(&o).lines().map(json).collect();
    assert_eq!(lines.len(), 3, "{}", stdout(&o));
    let mut last = 0;
    for l in &lines {
        let version = l["version"].as_u64().expect("a version");
        assert!(version > last, "versions must grow: {lines:?}");
        last = version;
        assert_eq!(l["key"], key.as_str());
        assert_eq!(l["poisoned"], false);
        // Each commit sets seq and n together: a consistent copy agrees.
        assert_eq!(l["value"]["seq"], l["value"]["n"], "{l}");
        assert_eq!(l["value"]["seq"], version, "{l}");
    }
    let text = ok(&["watch", &key, "--count", "1"]);
    assert!(
        text.starts_with(&format!("{key} (version ")) && text.contains("  seq = "),
        "{text}"
    );
    c.send("stop");
    c.expect("stopped", T);
    // A watch without a count ends, with exit 1, when the segment goes away
    // (its last user detaches): no commit can come any more.
    let mut forever = Command::new(env!("CARGO_BIN_EXE_tshm"))
        .args(["watch", &key])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run watch");
    std::thread::sleep(Duration::from_millis(300));
    c.send("exit");
    c.wait_success(T);
    let ended = common::wait_until(T, || forever.try_wait().ok().flatten().is_some());
    if !ended {
        let _ = forever.kill();
    }
    let status = forever.wait().expect("wait for watch");
    assert!(ended, "watch went on after its segment was removed");
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut forever.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("was removed"), "{err}");
    keys.finish();
}

#[test]
fn rm_refuses_while_attached_and_removes_with_force() {
    const ENTRY: &str = "rm_refuses_while_attached_and_removes_with_force";
    if let Some((_, key)) = common::role() {
        return owner(&key);
    }
    let key = unique_key("rm");
    let keys = keys_for(&key);
    let mut c = spawn_owner(ENTRY, &key);
    let err = fails(&["rm", &key], 1);
    assert!(
        err.contains("in use (1 live attachment(s))") && err.contains("--force"),
        "{err}"
    );
    assert!(common::exists(&key));
    let out = ok(&["rm", &key, "--force"]);
    assert!(out.starts_with(&format!("removed {key}")), "{out}");
    assert!(!common::exists(&key));
    // The owner keeps working on the unnamed segment.
    c.send("hold");
    c.expect("held", T);
    c.send("release");
    c.expect("released", T);
    fails(&["show", &key], 1);
    fails(&["rm", &key], 1);
    c.send("exit");
    c.wait_success(T);
    keys.finish();
}

#[test]
fn a_killed_owner_leaves_a_stale_segment_that_gc_removes() {
    const ENTRY: &str = "a_killed_owner_leaves_a_stale_segment_that_gc_removes";
    if let Some((_, key)) = common::role() {
        return owner(&key);
    }
    let dead = unique_key("gc-dead");
    let live = unique_key("gc-live");
    let keys = Keys::new(&[&dead, &slice_key(&dead), &live, &slice_key(&live)]);
    let mut killed = spawn_owner(ENTRY, &dead);
    let mut alive = spawn_owner(ENTRY, &live);
    killed.kill_running();

    let e = listed(&dead).expect("a stale segment is listed");
    assert_eq!(
        (e["stale"].as_bool(), e["attached"].as_u64()),
        (Some(true), Some(0))
    );
    let e = listed(&live).expect("listed");
    assert_eq!(
        (e["stale"].as_bool(), e["attached"].as_u64()),
        (Some(false), Some(1))
    );
    // A stale segment can still be shown.
    assert_eq!(json(&ok(&["show", &dead, "--json"]))["value"]["seq"], 1);

    let dry = ok(&["gc", "--dry-run"]);
    assert!(dry.lines().any(|l| l == format!("would remove {dead}")), "{dry}");
    assert!(
        dry.lines()
            .any(|l| l == format!("would remove {}", slice_key(&dead))),
        "{dry}"
    );
    assert!(!dry.contains(&live), "{dry}");
    assert!(common::exists(&dead));

    let done = ok(&["gc"]);
    assert!(done.lines().any(|l| l == format!("removed {dead}")), "{done}");
    assert!(!done.contains(&live), "{done}");
    assert!(!common::exists(&dead) && !common::exists(&slice_key(&dead)));
    assert!(common::exists(&live) && common::exists(&slice_key(&live)));
    assert!(listed(&dead).is_none());

    alive.send("exit");
    alive.wait_success(T);
    keys.finish();
}

/// Removes the file at `path` when dropped.
struct File(String);

impl Drop for File {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn foreign_files_are_ignored_by_list_and_gc_and_refused_by_show_and_rm() {
    const ENTRY: &str = "foreign_files_are_ignored_by_list_and_gc_and_refused_by_show_and_rm";
    if let Some((_, key)) = common::role() {
        return owner(&key);
    }
    let key = unique_key("real");
    let keys = keys_for(&key);
    let mut c = spawn_owner(ENTRY, &key);
    let junk = unique_key("junk");
    let zeros = unique_key("zeros");
    let short = unique_key("short");
    let copy = unique_key("copy");
    let real = std::fs::read(shm_path(&key)).expect("read the real segment");
    let files = [
        (junk.as_str(), vec![0x5a; 5000]),
        (zeros.as_str(), vec![0; 8192]),
        (short.as_str(), b"TYPEDSHM".to_vec()),
        // A valid segment under a name its stored key does not give.
        (copy.as_str(), real.clone()),
    ];
    let mut guards = Vec::new();
    for (k, bytes) in &files {
        std::fs::write(shm_path(k), bytes).unwrap();
        guards.push(File(shm_path(k)));
    }
    let other = format!("/dev/shm/other-{}", std::process::id());
    std::fs::write(&other, b"not ours").unwrap();
    guards.push(File(other.clone()));

    let all = json(&ok(&["list", "--json"]));
    let listed_keys: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["key"].as_str())
        .collect();
    assert!(listed_keys.contains(&key.as_str()));
    for (k, _) in &files {
        assert!(!listed_keys.contains(k), "{k} listed: {listed_keys:?}");
        let err = fails(&["show", k], 1);
        assert!(err.contains("not a valid typed-shm segment"), "{k}: {err}");
        fails(&["rm", k, "--force"], 1);
        fails(&["header", k, "--lang", "c"], 1);
    }
    ok(&["gc"]);
    for (k, bytes) in &files {
        assert_eq!(std::fs::read(shm_path(k)).unwrap(), *bytes, "{k} changed");
    }
    assert_eq!(std::fs::read(&other).unwrap(), b"not ours");
    drop(guards);
    c.send("exit");
    c.wait_success(T);
    keys.finish();
}

#[test]
fn held_and_poisoned_locks_are_shown_as_such() {
    const ENTRY: &str = "held_and_poisoned_locks_are_shown_as_such";
    if let Some((_, key)) = common::role() {
        return owner(&key);
    }
    let key = unique_key("locks");
    let keys = keys_for(&key);
    let mut c = spawn_owner(ENTRY, &key);
    c.send("hold");
    c.expect("held", T);
    assert_eq!(listed(&key).unwrap()["lock"], "held");
    // A held lock does not stop show: it reads without the lock.
    assert_eq!(json(&ok(&["show", &key, "--json"]))["poisoned"], false);
    c.send("release");
    c.expect("released", T);
    assert_eq!(listed(&key).unwrap()["lock"], "free");
    c.send("poison");
    c.expect("poisoned", T);
    let e = listed(&key).unwrap();
    assert_eq!(
        (e["lock"].as_str(), e["stale"].as_bool()),
        (Some("poisoned"), Some(false))
    );
    let shown = json(&ok(&["show", &key, "--json"]));
    assert_eq!(shown["poisoned"], true);
    assert_eq!(shown["value"]["seq"], 99);
    assert!(ok(&["show", &key]).starts_with(&format!("{key} (version 2, POISONED)")));
    c.send("exit");
    c.wait_success(T);
    keys.finish();
}

/// A fresh directory for generated files, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("tshm-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_c_header_compiles_and_reads_a_live_segment() {
    const ENTRY: &str = "the_c_header_compiles_and_reads_a_live_segment";
    if let Some((_, key)) = common::role() {
        return owner(&key);
    }
    let key = unique_key("cheader");
    let keys = keys_for(&key);
    let mut c = spawn_owner(ENTRY, &key);
    let dir = Dir::new("c");
    let header = ok(&["header", &key, "--lang", "c"]);
    assert!(
        header.contains("_Static_assert(offsetof(struct Reading, inner) == 32"),
        "{header}"
    );
    std::fs::write(dir.0.join("segment.h"), &header).unwrap();
    let k = key.to_ascii_uppercase().replace('-', "_");
    let program = format!(
        r#"#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "segment.h"

int main(void) {{
    char path[64] = "/dev/shm";
    strcat(path, TSHM_{k}_NATIVE_KEY);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {{ perror("open"); return 1; }}
    size_t len = TSHM_{k}_DATA_OFFSET + sizeof(struct Reading);
    const unsigned char *base = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {{ perror("mmap"); return 1; }}
    uint64_t offset;
    memcpy(&offset, base + 40, sizeof offset);
    if (offset != TSHM_{k}_DATA_OFFSET) {{ fprintf(stderr, "data offset %llu\n", (unsigned long long)offset); return 1; }}
    const struct Reading *r = (const struct Reading *)(base + offset);
    printf("seq=%llu temps1=%.2f offset=%d x=%d y2=%u n=%llu pos11=%d\n",
        (unsigned long long)r->seq, r->temps[1], r->offset, r->inner.x, r->inner.y[2],
        (unsigned long long)r->n, r->pos[1][1]);
    return 0;
}}
"#
    );
    std::fs::write(dir.0.join("main.c"), program).unwrap();
    let exe = dir.0.join("read");
    let cc = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(dir.0.join("main.c"))
        .output()
        .expect("run cc");
    assert!(cc.status.success(), "cc: {}\n{header}", stderr(&cc));
    let run = Command::new(&exe).output().expect("run the C program");
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(
        stdout(&run),
        "seq=1 temps1=-2.25 offset=-7 x=-3 y2=9 n=42 pos11=-4\n"
    );

    // The slice segment's element, with its length.
    let slice = ok(&["header", &slice_key(&key), "--lang", "c"]);
    assert!(
        slice.contains("struct Sample {\n    uint32_t t;\n    float v;\n};"),
        "{slice}"
    );
    assert!(slice.contains("_LEN 3\n"), "{slice}");
    c.send("exit");
    c.wait_success(T);
    keys.finish();
}

#[test]
fn the_python_header_loads_and_reads_a_live_segment() {
    const ENTRY: &str = "the_python_header_loads_and_reads_a_live_segment";
    if let Some((_, key)) = common::role() {
        return owner(&key);
    }
    let key = unique_key("pyheader");
    let keys = keys_for(&key);
    let mut c = spawn_owner(ENTRY, &key);
    let dir = Dir::new("py");
    std::fs::write(
        dir.0.join("segment.py"),
        ok(&["header", &key, "--lang", "python"]),
    )
    .unwrap();
    std::fs::write(
        dir.0.join("segment_s.py"),
        ok(&["header", &slice_key(&key), "--lang", "python"]),
    )
    .unwrap();
    let script = r#"
import mmap, struct, sys
sys.path.insert(0, sys.argv[1])
import segment, segment_s

def data(mod, count):
    with open("/dev/shm" + mod.NATIVE_KEY, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    (offset,) = struct.unpack_from("=Q", mm, 40)
    assert offset == mod.DATA_OFFSET, offset
    return (mod.ROOT * count).from_buffer_copy(mm, offset)

r = data(segment, 1)[0]
print(r.seq, r.temps[1], r.offset, r.inner.x, list(r.inner.y), r.n, r.pos[1][1])
s = data(segment_s, segment_s.LEN)
print(segment_s.LEN, [(e.t, e.v) for e in s])
"#;
    let run = Command::new("python3")
        .args(["-c", script])
        .arg(&dir.0)
        .output()
        .expect("run python3");
    assert!(run.status.success(), "python3: {}", stderr(&run));
    assert_eq!(
        stdout(&run),
        "1 -2.25 -7 -3 [7, 8, 9] 42 -4\n3 [(0, 0.5), (0, 0.5), (9, -1.0)]\n"
    );
    c.send("exit");
    c.wait_success(T);
    keys.finish();
}

#[test]
fn bad_usage_exits_2_and_missing_segments_exit_1() {
    fails(&[], 2);
    fails(&["frobnicate"], 2);
    fails(&["show"], 2);
    fails(&["header", "k", "--lang", "rust"], 2);
    fails(&["watch", "k", "--count", "many"], 2);
    let missing = unique_key("missing");
    let err = fails(&["show", &missing], 1);
    assert!(err.starts_with("tshm: ") && err.contains("no segment"), "{err}");
    fails(&["rm", &missing], 1);
    fails(&["watch", &missing, "--count", "1"], 1);
    fails(&["header", &missing, "--lang", "python"], 1);
    fails(&["show", ""], 1);
    ok(&["--help"]);
    // Nothing of this test in /dev/shm.
    assert!(!common::exists(&missing));
}

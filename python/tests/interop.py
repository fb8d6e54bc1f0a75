"""The Python side of tests/python_interop.rs: one command per scenario.

    python3 -u python/tests/interop.py COMMAND KEY [ARGS...]

It prints lines for the Rust test to read, reads lines from stdin where the
scenario needs a cue, and exits non-zero (with a traceback) if a check
fails. Run with ``python/`` on PYTHONPATH.
"""

import ast
import gc
import os
import sys
import time

import typed_shm
from typed_shm import Error, PoisonedError, to_python


def say(*parts):
    print(" ".join(str(p) for p in parts), flush=True)


def hear():
    return sys.stdin.readline().strip()


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def expect_error(kind, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except Error as e:
        check(e.kind == kind, "expected %s, got %r" % (kind, e))
        return e
    raise AssertionError("expected an error of kind %s" % kind)


def diff(got, want, path="value"):
    """The first difference between two decoded values, for messages."""
    if isinstance(want, dict) and isinstance(got, dict):
        if list(got) != list(want):
            return "%s: fields %r != %r" % (path, list(got), list(want))
        for k in want:
            d = diff(got[k], want[k], "%s.%s" % (path, k))
            if d:
                return d
        return None
    if isinstance(want, list) and isinstance(got, list):
        if len(got) != len(want):
            return "%s: length %d != %d" % (path, len(got), len(want))
        for i, (g, w) in enumerate(zip(got, want)):
            d = diff(g, w, "%s[%d]" % (path, i))
            if d:
                return d
        return None
    if type(got) is not type(want) or got != want:
        return "%s: %r (%s) != %r (%s)" % (path, got, type(got).__name__, want, type(want).__name__)
    return None


def cmd_check(key, version, fingerprint, expected):
    """Attach, snapshot, compare with the Rust value; the same through a
    lock view; the handle's facts."""
    want = ast.literal_eval(expected)
    with typed_shm.attach(key) as h:
        snap = h.snapshot()
        d = diff(snap, want)
        check(d is None, "snapshot differs: %s" % d)
        check(h.version == int(version), "version %d != %s" % (h.version, version))
        check(h.fingerprint == int(fingerprint), "fingerprint %#x != %#x" % (h.fingerprint, int(fingerprint)))
        check(h.attach_count == 2, "attach_count %d" % h.attach_count)
        check(not h.is_poisoned and not h.is_transactional, "flags")
        with h.lock() as v:
            d = diff(to_python(v), want)
            check(d is None, "lock view differs: %s" % d)
        check(h.version == int(version), "a lock that only read committed")
        with typed_shm.attach(key, read_only=True) as r:
            check(diff(r.snapshot(), want) is None, "read-only snapshot differs")
        say("ok", h.size, h.len, h.description)


def cmd_write(key, which):
    """Commit through a lock view; then a read-only handle cannot assign,
    then an exception inside the lock poisons."""
    h = typed_shm.attach(key)
    before = h.version
    with h.lock() as v:
        if which == "struct":
            v.seq = 42
            v.stamp = -(2**40)
            v.mean = 0.1
            v.count = 2**40 + 3
            v.temps[1] = -1.25
            v.temps[3] = 20.6
            v.small = [1, 2, 3, 4, 5, 6, 7, 255]
            v.half[-1] = 65535
            v.inner.score = 2.5
            v.inner.level = -128
            v.pair[1].hist = [7, 8, 9]
            v.pair[0] = to_python(v.inner)
            v.grid[1][0] = -3
            v["code"] = -7
            expect_error_type(ValueError, setattr, v, "tail", -1)
            expect_error_type(ValueError, setattr, v.inner, "kind", 256)
            expect_error_type(TypeError, setattr, v, "mean", "x")
            expect_error_type(AttributeError, setattr, v, "nope", 1)
            expect_error_type(IndexError, v.temps.__getitem__, 4)
        else:
            v[2].x = 3.5
            v[0] = {"x": -1.0, "y": 1e300}
            v[-1]["y"] = 0.25
    check(h.version == before + 1, "version %d after one commit from %d" % (h.version, before))
    say("committed", h.version)
    check(hear() == "read-only", "cue")
    with typed_shm.attach(key, read_only=True) as r:
        with r.lock() as v:
            if which == "struct":
                expect_error("PermissionDenied", setattr, v, "seq", 1)
            else:
                expect_error("PermissionDenied", v.__setitem__, 0, {"x": 0.0, "y": 0.0})
    check(h.version == before + 1, "a read-only lock committed")
    try:
        with h.lock() as v:
            if which == "struct":
                v.seq = 43
            else:
                v[1].x = 9.0
            raise RuntimeError("abandoned")
    except RuntimeError:
        pass
    check(h.is_poisoned, "an exception inside a lock did not poison")
    expect_error("Poisoned", h.snapshot)
    say("poisoned", h.version)
    check(hear() == "bye", "cue")
    h.detach()


def expect_error_type(t, fn, *args):
    try:
        fn(*args)
    except t:
        return
    raise AssertionError("expected %s" % t.__name__)


def cmd_wait(key, rounds):
    """Wait for changes; print the monotonic clock when woken."""
    with typed_shm.attach(key) as h:
        for _ in range(int(rounds)):
            v = h.version
            say("waiting", v)
            got = h.wait_for_change(v, timeout=20)
            say("woke", got, time.monotonic_ns())
        expect_error("TimedOut", h.wait_for_change, h.version, timeout=0.05)
        say("done")


def cmd_commit(key, rounds):
    """Commit at each cue (a segment holding one u64); print the monotonic
    clock once the commit's wake-up is issued."""
    with typed_shm.attach(key) as h:
        say("attached")
        for _ in range(int(rounds)):
            check(hear() == "commit", "cue")
            with h.lock() as v:
                v.value += 1
                expect_error_type(AttributeError, setattr, v, "other", 1)
            say("committed", h.version, time.monotonic_ns())


def cmd_poisoned(key):
    """After a Rust holder was killed mid-write: poison everywhere, then
    repair and clear."""
    with typed_shm.attach(key) as h:
        t0 = time.monotonic()
        try:
            h.snapshot()
            raise AssertionError("snapshot of a segment whose writer died was clean")
        except PoisonedError as e:
            took = time.monotonic() - t0
            check(took < 0.1, "poison reported after %.3f s" % took)
            check(e.value["seq"] == 99, "the poisoned value is the data as it stands: %r" % e.value["seq"])
        check(h.is_poisoned, "is_poisoned")
        check(h.wait_for_change(h.version, timeout=5) == h.version, "wait returns at once when poisoned")
        expect_error("Poisoned", h.lock().__enter__)
        with h.lock(ignore_poison=True) as v:
            check(v.seq == 99, "the dead holder's write is there")
            v.seq = 100
        h.clear_poison()
        check(not h.is_poisoned, "cleared")
        check(h.snapshot()["seq"] == 100, "repaired")
        say("ok", h.version)


def cmd_clear(key):
    """At the cue, clear the poison while Rust holds the lock: says
    "clearing" just before the call and "cleared" once it returned."""
    with typed_shm.attach(key) as h:
        say("attached")
        check(hear() == "clear", "cue")
        check(h.is_poisoned, "poisoned before the clear")
        say("clearing")
        h.clear_poison()
        say("cleared")
        check(not h.is_poisoned, "cleared for lockers")
        check(h.snapshot()["seq"] == 5, "clean for snapshots, with the holder's commit")


def cmd_hold(key):
    """Lock, write, and wait to be killed."""
    h = typed_shm.attach(key)
    g = h.lock()
    v = g.__enter__()
    v.seq = 7
    say("holding")
    time.sleep(60)


def cmd_txn(key):
    """A transactional segment: changes are seen whole at the commit; an
    exception discards them without poison; snapshots never wait."""
    with typed_shm.attach(key) as h:
        check(h.is_transactional, "is_transactional")
        before = h.version
        with h.lock() as v:
            v.seq = 1000
            v.inner.score = -0.5
            v.pair[1].hist = [1, 2, 3]
            check(v.seq == 1000, "the view reads its own writes")
            say("wrote")
            check(hear() == "go", "cue")
        check(h.version == before + 1, "one commit")
        snap = h.snapshot()
        check(snap["seq"] == 1000 and snap["pair"][1]["hist"] == [1, 2, 3], "committed")
        say("committed", h.version)
        try:
            with h.lock() as v:
                v.seq = 2000
                v.inner.score = 9.0
                raise RuntimeError("abandoned")
        except RuntimeError:
            pass
        check(not h.is_poisoned, "a transactional segment is never poisoned")
        check(h.version == before + 1, "the discarded write did not commit")
        check(h.snapshot() == snap, "discarded")
        with h.lock() as v:
            check(v.seq == 1000, "the next lock starts from the last commit")
        say("discarded", h.version)
        check(hear() == "rust-holds", "cue")
        t0 = time.monotonic()
        check(h.snapshot(timeout=1) == snap, "a snapshot during a Rust write sees the last commit")
        check(time.monotonic() - t0 < 0.5, "the snapshot waited for the writer")
        say("snapshot-ok")


def cmd_txn_repair(key):
    """After a Rust writer was killed having counted a transactional commit
    it had not yet made visible: the version and a snapshot before this
    process locks, then after its lock (which completes that commit)."""
    with typed_shm.attach(key) as h:
        before = (h.version, h.snapshot()["seq"])
        with h.lock():
            pass
        check(not h.is_poisoned, "a transactional segment is never poisoned")
        say("before", before[0], before[1], "after", h.version, h.snapshot()["seq"])


def cmd_self_wait(key):
    """In the middle of its own write, this thread's snapshot and wait for a
    change are refused at once (LockError) instead of waiting forever; the
    write then commits unpoisoned."""
    with typed_shm.attach(key) as h:
        before = h.version
        with h.lock() as v:
            v.seq = 7
            expect_error("LockError", h.snapshot)
            expect_error("LockError", h.snapshot, timeout=5)
            expect_error("LockError", h.wait_for_change, before)
            expect_error("LockError", h.wait_for_change, before, timeout=5)
        check(not h.is_poisoned, "not poisoned")
        say("committed", h.version - before, h.snapshot()["seq"])


def cmd_errors(base, foreign, pidns, oldver, empty, link, good, good_fp):
    expect_error("NotFound", typed_shm.attach, base + "-missing")
    expect_error("KeyError", typed_shm.attach, "")
    expect_error("KeyError", typed_shm.attach, "k" * 256)
    expect_error("Corrupted", typed_shm.attach, foreign)
    e = expect_error("LockError", typed_shm.attach, pidns)
    check("PID namespace" in str(e), str(e))
    expect_error("IncompatibleVersion", typed_shm.attach, oldver)
    expect_error("TimedOut", typed_shm.attach, empty, timeout=0.2)
    expect_error("Corrupted", typed_shm.attach, link)
    expect_error("LayoutMismatch", typed_shm.attach, good, fingerprint=int(good_fp) ^ 1)
    with typed_shm.attach(good, fingerprint=int(good_fp)) as h:
        check(h.attach_count == 2, "attached")
    # A creator or remover at work holds byte 0 write-locked: attach waits,
    # then times out.
    from typed_shm import _sys

    fd = os.open("/dev/shm" + typed_shm.native_key(foreign), os.O_RDWR)
    try:
        check(_sys.ofd_lock(fd, 1, 0, 1), "write lock on byte 0")
        t0 = time.monotonic()
        expect_error("TimedOut", typed_shm.attach, foreign, timeout=0.2)
        check(time.monotonic() - t0 >= 0.2, "waited")
    finally:
        os.close(fd)
    expect_error("LockError", h.snapshot)
    say("ok")


def cmd_live(key):
    h = typed_shm.attach(key)
    say("count", h.attach_count)
    check(hear() == "rust-detached", "cue")
    check(h.attach_count == 1, "count after the Rust handle detached: %d" % h.attach_count)
    # A handle that is garbage-collected detaches.
    h2 = typed_shm.attach(key)
    check(h.attach_count == 2, "two Python handles")
    del h2
    gc.collect()
    check(h.attach_count == 1, "the finalizer detached")
    with typed_shm.attach(key) as h3:
        check(h3.attach_count == 2, "context manager")
    check(h.attach_count == 1, "the context manager detached")
    h.detach()
    h.detach()
    check(not os.path.exists("/dev/shm" + typed_shm.native_key(key)), "the last detach removed the segment")
    say("removed")


def cmd_count(key):
    """Attach and report the count, then wait to be killed or told to go."""
    h = typed_shm.attach(key)
    say("count", h.attach_count)
    hear()
    h.detach()


def cmd_unit(_key):
    from typed_shm import _layout as L

    nk = typed_shm.native_key
    check(nk("telemetry") == "/tshm_telemetry", "plain key")
    check(nk("abcdefghijklmnopqrstuvwxy") == "/tshm_abcdefg~1c2ce16aeda40dac", "long key")
    check(nk("my app/\u00fc") == "/tshm_my_app_~71b9a9ec86a1b31a", "unicode key")
    check(nk("/") == "/tshm__~af63a24c860189fe", "slash key")
    golden = {"u8": 0xD54B3289D8579B5F, "u16": 0x2C1A0B933C27FB49, "u32": 0xA3F26B7771B30590,
              "u64": 0x9B2DE921368B2A6D, "i32": 0x41A3274BC397C764, "f32": 0xBEB0E95AEDE85970,
              "f64": 0x5E0CDB71AB5978B4}
    for kind, fp in golden.items():
        size = int(kind[1:]) // 8
        check(L.fingerprint(L.Primitive(kind, size, size)) == fp, kind)
    f32x8 = L.Array(L.Primitive("f32", 4, 4), 8, 32, 4)
    check(L.fingerprint(f32x8) == 0x6FE7E2F2FF02059C, "[f32; 8]")
    tele = L.Struct("Telemetry", 40, 8, [("seq", 0, L.Primitive("u64", 8, 8)), ("temps", 8, f32x8)])
    check(L.fingerprint(tele) == 0xEC7112896A1578DF, "Telemetry")
    enc = (bytes([3, 1, 0]) + b"S" + (8).to_bytes(8, "little") + (4).to_bytes(4, "little")
           + (2).to_bytes(4, "little") + bytes([1, 0]) + b"a" + (0).to_bytes(8, "little")
           + bytes([1, 3, 4, 0, 0, 0, 4, 0, 0, 0]) + bytes([1, 0]) + b"b" + (4).to_bytes(8, "little")
           + bytes([2]) + (4).to_bytes(8, "little") + (4).to_bytes(8, "little") + (1).to_bytes(4, "little")
           + bytes([1, 1, 1, 0, 0, 0, 1, 0, 0, 0]))
    s = L.decode(enc)
    check(L.describe(s) == "S { a: u32 @0, b: [u8; 4] @4 }", L.describe(s))
    for bad in (b"", bytes([9]), enc[:-1], enc + b"\0", bytes([1, 3, 8, 0, 0, 0, 4, 0, 0, 0])):
        try:
            L.decode(bad)
            raise AssertionError("decoded %r" % bad)
        except L.LayoutError:
            pass
    check(L.f32_value(L._F32.unpack(L._F32.pack(20.6))[0]) == 20.6, "shortest f32")
    say("ok")


def cmd_numpy(key, expected):
    """The numpy view equals the snapshot: the same bytes, the same field
    names, the same integers. Says "numpy-skipped" without numpy."""
    try:
        import numpy as np  # noqa: F401
    except ImportError:
        say("numpy-skipped")
        return
    want = ast.literal_eval(expected)
    with typed_shm.attach(key) as h:
        arr = h.snapshot_numpy()
        data, _, _ = h._read(None)
        check(arr.tobytes() == bytes(data), "numpy bytes differ from the data")
        check(arr.dtype.itemsize == h.size // h.len, "itemsize %d" % arr.dtype.itemsize)
        if isinstance(want, dict):
            check(list(arr.dtype.names) == list(want), "names %r" % (arr.dtype.names,))
            for name, value in want.items():
                if isinstance(value, int):
                    check(arr[name].item() == value, "field %s: %r != %r" % (name, arr[name].item(), value))
        else:
            check(arr.shape == (len(want),), "shape %r" % (arr.shape,))
        say("ok numpy", arr.shape)


def main():
    cmd, key, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    globals()["cmd_" + cmd.replace("-", "_")](key, *args)


if __name__ == "__main__":
    main()

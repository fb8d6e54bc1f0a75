"""Attaching to a segment, and the handle: snapshots, versions, waiting,
locking, liveness. Every step follows SPEC.md; section numbers below refer
to it."""

import ctypes
import mmap
import os
import random
import stat as _stat
import threading
import time
import weakref

from . import _layout as L
from . import _sys
from . import _views
from ._errors import Error, PoisonedError

SHM_DIR = "/dev/shm"
HEADER_SIZE = 576
MAGIC = b"TYPEDSHM"
VERSION = 3
STATE_INIT = 0
STATE_READY = 0x52454459
STATE_DESTROYED = 0x44454144
FLAG_SLICE = 1
FLAG_TRANSACTIONAL = 2
AREA_HEAD = 16
AREA_LAYOUT_OMITTED = 1
SLOT_BASE = 1
MAX_SLOTS = 1 << 20

# Offsets in the header (section 3).
OFF_STATE = 352
OFF_MUTEX = 384
OFF_HOLDER = 432
OFF_POISONED = 440
OFF_SEQ = 512
OFF_WAITERS = 520
# 524: reserved, zero (format 2's copy of `poisoned` for readers; readers
# now take the poison from the sequence word). Never read or written.
OFF_TXN_COMMITS = 528

# The sequence word of a plain segment (section 6) is
# COMMIT * commits + POISONED * poisoned + WRITING * writing. A
# transactional segment's word means something else (section 8: bit 1 names
# the committed buffer): never apply these to it.
SEQ_WRITING = 1
SEQ_POISONED = 2
SEQ_COMMIT = 4

WAIT_SLICE = 0.020
MAX_NAP = 0.001

_PLAIN = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def native_key(key):
    """The OS name of ``key`` (section 1), e.g. ``"/tshm_telemetry"``."""
    if not isinstance(key, str):
        raise Error("KeyError", "a key is a str, not %r" % type(key).__name__)
    data = key.encode("utf-8")
    if not data:
        raise Error("KeyError", "the key is empty: give every segment a non-empty name")
    if len(data) > 255:
        raise Error("KeyError", "the key is %d bytes long; keys are at most 255 bytes" % len(data))
    if "\0" in key:
        raise Error("KeyError", "the key %r contains a NUL byte, which OS names cannot hold" % key)
    if len(data) <= 24 and all(c in _PLAIN for c in key):
        return "/tshm_" + key
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    prefix = "".join(c if c in _PLAIN else "_" for c in key[:7])
    return "/tshm_%s~%016x" % (prefix, h)


_tls = threading.local()


def _token():
    """This thread's random non-zero 64-bit lock token (section 4)."""
    t = getattr(_tls, "token", None)
    if t is None:
        t = random.SystemRandom().getrandbits(64) | 1
        _tls.token = t
    return t


def _u32(b, off):
    return int.from_bytes(b[off : off + 4], "little" if _little() else "big")


def _u64(b, off):
    return int.from_bytes(b[off : off + 8], "little" if _little() else "big")


def _little():
    import sys

    return sys.byteorder == "little"


class _Mapped:
    """What a handle owns: the descriptor (and its OFD locks), the mapping,
    and ctypes words in the header. Kept apart from the handle so that its
    finalizer can detach without referring to the handle."""

    def __init__(self, key, path, fd, st, mm):
        self.key, self.path, self.fd, self.st, self.mm = key, path, fd, st, mm
        self.pid = os.getpid()
        self.closed = False
        self.held = 0  # locks held through this handle (by any thread)
        self._arr = (ctypes.c_ubyte * len(mm)).from_buffer(mm)
        self.base = ctypes.addressof(self._arr)
        b = self.base
        self.state = ctypes.c_uint32.from_address(b + OFF_STATE)
        self.lockword = ctypes.c_uint32.from_address(b + OFF_MUTEX)
        self.holder = ctypes.c_uint64.from_address(b + OFF_HOLDER)
        self.poisoned = ctypes.c_uint32.from_address(b + OFF_POISONED)
        self.seq = ctypes.c_uint64.from_address(b + OFF_SEQ)
        self.waiters = ctypes.c_uint32.from_address(b + OFF_WAITERS)
        self.txn_commits = ctypes.c_uint64.from_address(b + OFF_TXN_COMMITS)

    def release(self):
        """Detach (section 5): drop this description's locks, then the one
        that gets the write lock on byte 0 is the last: it marks the segment
        DESTROYED and removes the name if it still names this object."""
        if self.closed:
            return
        if os.getpid() != self.pid:
            # Inherited across fork(): the description and its locks are
            # shared with the parent; only close our copies.
            self._close()
            raise Error(
                "LockError",
                "segment %r: this handle was inherited across fork(); only the process that "
                "attached may detach it (attach anew in the child)" % self.key,
            )
        try:
            _sys.ofd_lock(self.fd, 2, 0, 0)  # F_UNLCK, the whole file
            if _sys.ofd_lock(self.fd, 1, 0, 1):  # F_WRLCK on byte 0
                self.state.value = STATE_DESTROYED
                try:
                    n = os.stat(self.path, follow_symlinks=False)
                    if (n.st_dev, n.st_ino) == (self.st.st_dev, self.st.st_ino):
                        os.unlink(self.path)
                except FileNotFoundError:
                    pass
        finally:
            self._close()

    def _close(self):
        self.closed = True
        for name in ("state", "lockword", "holder", "poisoned", "seq", "waiters", "txn_commits"):
            setattr(self, name, None)
        self._arr = None
        try:
            self.mm.close()
        finally:
            os.close(self.fd)


def _finalize(mapped):
    try:
        mapped.release()
    except Exception:
        pass


class _Patience:
    def __init__(self, key, timeout):
        self.key, self.timeout = key, timeout
        self.deadline = time.monotonic() + timeout

    def timed_out(self, why):
        return Error("TimedOut", "segment %r %s; waited %.3g s" % (self.key, why, self.timeout))

    def again(self, attempt, why):
        if time.monotonic() >= self.deadline:
            raise self.timed_out(why)
        time.sleep(min(max(attempt, 1), 10) / 1000)


def _os_error(key, e, what):
    import errno

    kinds = {
        errno.ENOENT: ("NotFound", "no segment with this key exists: create it first"),
        errno.EACCES: ("PermissionDenied", "the segment's mode bits or owner do not allow opening it read-write"),
        errno.EPERM: ("PermissionDenied", "the OS refused"),
        errno.EROFS: ("PermissionDenied", "the shared-memory file system is mounted read-only"),
        errno.ELOOP: ("Corrupted", "the name is a symbolic link, which is never followed: remove it"),
        errno.EISDIR: ("Corrupted", "a directory has this name; it was left untouched"),
        errno.ENOMEM: ("OutOfResources", "not enough memory"),
        errno.EMFILE: ("OutOfResources", "too many open files"),
        errno.ENFILE: ("OutOfResources", "too many open files"),
    }
    kind, advice = kinds.get(e.errno, ("Unknown", "see the OS error"))
    err = Error(kind, "segment %r: %s failed: %s; %s" % (key, what, e.strerror, advice))
    err.__cause__ = e
    return err


def attach(key, read_only=False, timeout=5.0, fingerprint=None):
    """Attaches to the live segment ``key`` and returns a :class:`Handle`.

    ``read_only``: map the data read-only (the lock still works; views
    cannot assign). ``timeout``: how long to wait, in seconds, for a segment
    that is being created or removed. ``fingerprint``: if given, the layout
    fingerprint the segment must have (else ``LayoutMismatch``).

    Raises :class:`Error` with ``kind`` ``NotFound``, ``PermissionDenied``,
    ``Corrupted``, ``IncompatibleVersion``, ``LayoutMismatch``,
    ``LockError`` (another PID namespace), ``TimedOut``, ``KeyError``, ...
    """
    _sys.check_platform()
    native = native_key(key)
    path = SHM_DIR + native
    patience = _Patience(key, timeout)
    attempt = 0
    while True:
        attempt += 1
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            raise _os_error(key, e, "open %s" % path) from e
        try:
            got = _attach_open(key, path, fd, patience, attempt, read_only, fingerprint)
        except BaseException:
            os.close(fd)
            raise
        if got is None:
            os.close(fd)
            continue
        return got


def _attach_open(key, path, fd, patience, attempt, read_only, fingerprint):
    st = os.fstat(fd)
    if not _stat.S_ISREG(st.st_mode):
        raise Error("Corrupted", "segment %r is not a regular file; it was left untouched" % key)
    if st.st_uid != os.geteuid():
        raise Error(
            "PermissionDenied",
            "segment %r belongs to uid %d, not to this process's user (uid %d); its contents are "
            "not trusted" % (key, st.st_uid, os.geteuid()),
        )
    if not _sys.ofd_lock(fd, 0, 0, 1):  # F_RDLCK on byte 0 (section 5)
        patience.again(attempt, "is still being initialized (or removed) by another process")
        return None
    if st.st_size == 0:
        patience.again(attempt, "exists but was never initialized: its creator died or is stuck")
        return None
    if st.st_size < HEADER_SIZE:
        raise Error(
            "Corrupted",
            "segment %r is not a typed-shm segment: it is %d bytes long, shorter than the %d-byte "
            "header; it was left untouched" % (key, st.st_size, HEADER_SIZE),
        )
    page = os.pread(fd, min(st.st_size, _sys.PAGE_SIZE), 0)
    if len(page) < HEADER_SIZE:
        raise Error("Corrupted", "segment %r: short read of its header" % key)
    head = page[:HEADER_SIZE]
    if head[:8] != MAGIC:
        if not any(head):
            raise patience.timed_out("was never initialized: the process creating it died first")
        raise Error(
            "Corrupted",
            "segment %r is not a typed-shm segment (its first bytes are not the typed-shm magic); "
            "it was left untouched" % key,
        )
    state = _u32(head, OFF_STATE)
    if state == STATE_DESTROYED:
        n = os.stat(path, follow_symlinks=False) if os.path.lexists(path) else None
        if n is not None and (n.st_dev, n.st_ino) == (st.st_dev, st.st_ino):
            raise Error("NotFound", "segment %r was being removed by a process that died doing so" % key)
        patience.again(attempt, "kept being removed while attaching")
        return None
    if state == STATE_INIT:
        raise patience.timed_out("was never fully initialized: the process creating it died part-way")
    if state != STATE_READY:
        raise Error("Corrupted", "segment %r has an unknown state %#x; it was left untouched" % (key, state))
    info = _validate(key, page, st.st_size, fingerprint)
    map_len = info["data_offset"] + info["stride"] + info["data_len"]
    try:
        mm = mmap.mmap(fd, map_len, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    except OSError as e:
        raise _os_error(key, e, "mmap") from e
    try:
        mapped = _Mapped(key, path, fd, st, mm)
        if read_only:
            _sys.mprotect_read_only(mapped.base + info["data_offset"], info["stride"] + info["data_len"])
        _take_slot(key, fd)
    except BaseException:
        try:
            mapped._arr = None
        except NameError:
            pass
        mm.close()
        raise
    return Handle(key, native_key(key), mapped, info, read_only)


def _validate(key, page, file_len, fingerprint):
    """Section 3's checks, in order, on a copy of the header page; the
    stored key and layout (section 10) stand for "the type it expects"."""

    def corrupted(why):
        return Error("Corrupted", "segment %r is not a valid typed-shm segment: %s; it was left untouched" % (key, why))

    version, header_size = _u32(page, 8), _u32(page, 12)
    if version != VERSION or header_size != HEADER_SIZE:
        raise Error(
            "IncompatibleVersion",
            "segment %r has header format version %d (%d bytes); this package reads version %d "
            "(%d bytes): use the same typed-shm format everywhere" % (key, version, header_size, VERSION, HEADER_SIZE),
        )
    abi = tuple(_u32(page, 16 + 4 * i) for i in range(6))
    if abi != _sys.abi_stamp():
        raise Error(
            "IncompatibleVersion",
            "segment %r was created for another ABI (libc family, mutex size, pointer width, byte "
            "order, page size, mutex alignment = %r; this process: %r)" % (key, abi, _sys.abi_stamp()),
        )
    data_offset, data_len = _u64(page, 40), _u64(page, 48)
    elem_size, elem_align, elem_count = _u64(page, 56), _u64(page, 64), _u64(page, 72)
    fp, flags = _u64(page, 80), _u32(page, 88)
    desc_len = min(_u32(page, 92), 256)
    desc = page[96 : 96 + desc_len].decode("utf-8", "replace")
    is_slice = bool(flags & FLAG_SLICE)
    # 4. The type: the stored key and layout must describe this segment.
    area = page[HEADER_SIZE : max(HEADER_SIZE, min(len(page), data_offset))]
    if len(area) < AREA_HEAD or _u32le(area, 0) == 0:
        raise corrupted("it stores no key and layout after its header")
    key_len, layout_len, area_flags = _u32le(area, 0), _u32le(area, 4), _u32le(area, 8)
    if key_len > 255 or AREA_HEAD + key_len + layout_len > len(area):
        raise corrupted("its description area's lengths run past the header page")
    try:
        stored_key = area[AREA_HEAD : AREA_HEAD + key_len].decode("utf-8")
    except UnicodeDecodeError:
        raise corrupted("its stored key is not UTF-8") from None
    if stored_key != key:
        raise corrupted("it stores the key %r" % stored_key)
    if area_flags & AREA_LAYOUT_OMITTED:
        raise Error(
            "LayoutMismatch",
            "segment %r holds %s, whose layout was too large to be stored in the segment: Python "
            "cannot decode its fields" % (key, desc),
        )
    try:
        layout = L.decode(area[AREA_HEAD + key_len : AREA_HEAD + key_len + layout_len])
    except L.LayoutError as e:
        raise corrupted("its stored layout is bad: %s" % e) from None
    if L.fingerprint(layout) != fp or layout.size != elem_size or layout.align != elem_align:
        raise corrupted("its stored layout does not match the fingerprint, size and alignment in its header")
    if fingerprint is not None and fingerprint != fp:
        raise Error(
            "LayoutMismatch",
            "segment %r holds %s (fingerprint %#018x); expected fingerprint %#018x" % (key, desc, fp, fingerprint),
        )
    # 5. Lengths.
    page_size = _sys.PAGE_SIZE
    if data_offset < HEADER_SIZE or data_offset % page_size:
        raise corrupted("its data offset %d is not a page boundary" % data_offset)
    if data_offset + data_len > file_len:
        raise corrupted("it declares %d bytes of data at offset %d in a %d-byte object" % (data_len, data_offset, file_len))
    if data_len == 0 or elem_size * elem_count != data_len or (not is_slice and elem_count != 1):
        raise corrupted("its lengths disagree (%d elements of %d bytes in %d bytes)" % (elem_count, elem_size, data_len))
    if elem_align > page_size or elem_align & (elem_align - 1) or elem_align == 0:
        raise corrupted("its element alignment %d is not a power of two up to the page size" % elem_align)
    if data_len >= 1 << 63:
        raise corrupted("its data length exceeds isize::MAX")
    # 6. The PID namespace.
    if (_u64(page, 448), _u64(page, 456)) != _sys.pid_namespace():
        raise Error(
            "LockError",
            "segment %r was created in another PID namespace than this process's: its lock "
            "identifies holders by thread id, and thread ids of different PID namespaces collide. "
            "Run every process that shares the segment in one PID namespace (e.g. docker run "
            "--pid=host or --pid=container:NAME)" % key,
        )
    # 7. Flags, and the second buffer of a transactional segment.
    if flags & ~(FLAG_SLICE | FLAG_TRANSACTIONAL):
        raise corrupted("its flags %#x include unknown bits" % flags)
    stride = 0
    if flags & FLAG_TRANSACTIONAL:
        stride = -(-data_len // page_size) * page_size
        if data_offset + stride + data_len > file_len:
            raise corrupted("it is transactional, but its two buffers do not fit in the object")
    return {
        "data_offset": data_offset,
        "data_len": data_len,
        "elem_size": elem_size,
        "elem_count": elem_count,
        "fingerprint": fp,
        "slice": is_slice,
        "transactional": bool(flags & FLAG_TRANSACTIONAL),
        "stride": stride,
        "layout": layout,
        "description": desc,
    }


def _u32le(b, off):
    return int.from_bytes(b[off : off + 4], "little")


def _take_slot(key, fd):
    """Write-locks one free slot byte (section 5)."""
    for slot in range(SLOT_BASE, SLOT_BASE + MAX_SLOTS):
        if _sys.ofd_lock(fd, 1, slot, 1):
            return slot
    raise Error("OutOfResources", "segment %r already has %d attachments" % (key, MAX_SLOTS))


def _count_others(fd):
    count = 0
    ranges = [(SLOT_BASE, SLOT_BASE + MAX_SLOTS)]
    while ranges:
        start, end = ranges.pop()
        if start >= end:
            continue
        found = _sys.ofd_conflict(fd, start, end - start)
        if found is not None:
            count += 1
            at, length = found
            at_end = end if length == 0 else at + length
            ranges.append((start, max(at, start)))
            ranges.append((max(at_end, start), end))
    return count


def _waits_on_itself(key, what):
    """The error of a snapshot or a wait by the thread that holds the lock:
    the commit it would wait for cannot happen while it waits."""
    return Error(
        "LockError",
        "segment %r: %s by the thread that holds its lock would never end (the commit it "
        "waits for cannot happen while it waits); leave the lock first" % (key, what),
    )


def _txn_version(m):
    """The commits of a transactional segment that snapshots can see (section
    8): the count, less one counted by a publish that has not yet made the
    sequence word even (its parity then differs from the committed buffer's
    bit), read between two equal loads of the word."""
    while True:
        s = m.seq.value
        n = m.txn_commits.value
        if m.seq.value == s:
            return max(n - ((n & 1) != ((s >> 1) & 1)), 0)


def _back_off(round_, deadline):
    if round_ < 16:
        return
    nap = min(MAX_NAP, (1 << min(round_ - 16, 10)) * 1e-6)
    if deadline is not None:
        nap = min(nap, max(0.0, deadline - time.monotonic()))
    time.sleep(nap)


class Handle:
    """An attachment to a segment. Use it as a context manager, or call
    :meth:`detach`; a handle that is garbage-collected (or alive at
    interpreter exit) detaches too."""

    def __init__(self, key, native, mapped, info, read_only):
        self._key, self._native, self._m, self._info = key, native, mapped, info
        self._read_only = read_only
        layout = info["layout"]
        self._layout = layout
        self._read_elem = L.reader(layout)
        self._data_offset = info["data_offset"]
        self._data_len = info["data_len"]
        self._txn = info["transactional"]
        self._finalizer = weakref.finalize(self, _finalize, mapped)

    # --- facts ------------------------------------------------------------

    key = property(lambda self: self._key, doc="The key, as given.")
    native_key = property(lambda self: self._native, doc="The OS name (``/tshm_...``).")
    size = property(lambda self: self._data_len, doc="Bytes of data.")
    len = property(lambda self: self._info["elem_count"], doc="Elements: 1, or the slice length.")
    is_slice = property(lambda self: self._info["slice"])
    is_transactional = property(lambda self: self._txn)
    read_only = property(lambda self: self._read_only)
    fingerprint = property(lambda self: self._info["fingerprint"], doc="The layout fingerprint.")
    description = property(lambda self: L.describe(self._layout), doc="The readable layout of the element.")

    @property
    def closed(self):
        return self._m.closed

    def _live(self):
        m = self._m
        if m.closed:
            raise Error("LockError", "segment %r: this handle was detached" % self._key)
        return m

    def __repr__(self):
        state = "detached" if self._m.closed else "attached"
        return "<typed_shm.Handle %r %s, %s>" % (self._key, self.description, state)

    # --- versions, snapshots, waiting (sections 6 and 8) ----------------------

    @property
    def version(self):
        """Commits so far, in every process."""
        m = self._live()
        return _txn_version(m) if self._txn else m.seq.value // SEQ_COMMIT

    @property
    def is_poisoned(self):
        m = self._live()
        return m.poisoned.value != 0 or (not self._txn and m.lockword.value & _sys.FUTEX_OWNER_DIED != 0)

    def clear_poison(self):
        """Clears the poison, for every process: call it once the data is
        repaired. It is cleared under the lock (a committer stores the
        sequence word with a plain load and store, which would bring back a
        poison bit cleared meanwhile): called by the thread that holds the
        lock, it clears at once; otherwise it takes the lock just for the
        clearing, waiting for its holder, if any (a poisoned lock counts as
        taken), and releases it without a commit. A transactional segment
        is never poisoned: its flag is cleared without the lock."""
        m = self._live()
        if self._txn or m.holder.value == _token():
            _clear_poison_held(m, self._txn)
            return
        lock = _Lock(self, None, True)
        lock.__enter__()
        try:
            _clear_poison_held(m, self._txn)
        finally:
            # Nothing was written through the lock's view: no commit.
            lock.__exit__(None, None, None)

    def _decode(self, data):
        if self._info["slice"]:
            step, r = self._info["elem_size"], self._read_elem
            return [r(data, i * step) for i in range(self._info["elem_count"])]
        return self._read_elem(data, 0)

    def snapshot(self, timeout=None):
        """A consistent copy of the data, decoded as ``tshm show --json``'s
        ``value``: a struct is a dict by field name, an array a list, a
        number an int or float, a slice segment a list of its elements.
        Never takes the lock, never writes to the segment.

        Raises :class:`PoisonedError` (whose ``value`` is the copy as the
        data stands) when the segment is poisoned, ``TimedOut`` if no
        consistent copy could be made within ``timeout`` seconds, and
        ``LockError`` at once if the write in progress is this thread's own
        (it holds the lock, so the write cannot end while it waits)."""
        data, version, poisoned = self._read(timeout)
        value = self._decode(data)
        if poisoned:
            raise PoisonedError(
                "segment %r is poisoned: a holder died or abandoned a write; the value may be "
                "half-written (clear_poison() once it is repaired)" % self._key,
                value,
                version,
            )
        return value

    def numpy_dtype(self):
        """The element's numpy dtype, built from the stored layout (a
        structured dtype for a struct, with the same field names and
        offsets). Needs numpy (optional: the rest of the package does not
        use it)."""
        import numpy as np

        return L.numpy_dtype(self._layout, np)

    def snapshot_numpy(self, timeout=None):
        """Like :meth:`snapshot`, as a numpy array of :meth:`numpy_dtype`:
        shape ``()`` for a single value, ``(len,)`` for a slice. The array
        owns a copy; raises :class:`PoisonedError` (with the array as
        ``value``) as :meth:`snapshot` does."""
        import numpy as np

        dtype = L.numpy_dtype(self._layout, np)
        data, version, poisoned = self._read(timeout)
        arr = np.frombuffer(bytes(data), dtype=dtype).copy()
        if not self._info["slice"]:
            arr = arr.reshape(())
        if poisoned:
            raise PoisonedError(
                "segment %r is poisoned: a holder died or abandoned a write; the value may be "
                "half-written (clear_poison() once it is repaired)" % self._key,
                arr,
                version,
            )
        return arr

    def _read(self, timeout):
        m = self._live()
        seq, base, n = m.seq, m.base, self._data_len
        data_addr = base + self._data_offset
        deadline = None if timeout is None else time.monotonic() + timeout
        round_ = 0
        while True:
            before = seq.value
            if self._txn:
                committed = before & ~1
                src = data_addr + (self._info["stride"] if (committed >> 1) & 1 else 0)
                data = ctypes.string_at(src, n)
                if seq.value < committed + 3:
                    # A transactional segment is never poisoned (section 8).
                    return data, _txn_version(m), False
            elif before & SEQ_WRITING == 0:
                data = ctypes.string_at(data_addr, n)
                if seq.value == before:
                    # The word that framed the copy says whether it is poisoned.
                    return data, before // SEQ_COMMIT, before & SEQ_POISONED != 0
            elif m.lockword.value & _sys.FUTEX_OWNER_DIED:
                # The writer died mid-write: the data as it stands.
                return ctypes.string_at(data_addr, n), before // SEQ_COMMIT, True
            elif m.holder.value == _token():
                # The write in progress is this thread's own.
                raise _waits_on_itself(self._key, "a snapshot")
            if deadline is not None and time.monotonic() >= deadline:
                raise Error("TimedOut", "segment %r: no consistent copy within %.3g s" % (self._key, timeout))
            _back_off(round_, deadline)
            round_ += 1

    def wait_for_change(self, since, timeout=None):
        """Blocks until the version differs from ``since`` (or the segment
        is poisoned) and returns the version. Woken by the committer's
        ``FUTEX_WAKE``. Raises ``TimedOut`` after ``timeout`` seconds, and
        ``LockError`` at once if it would wait while this thread holds the
        lock (nobody else can commit until it lets go)."""
        m = self._live()
        deadline = None if timeout is None else time.monotonic() + timeout
        seq_word = m.base + OFF_SEQ  # its low half on little-endian x86_64
        waiters = m.base + OFF_WAITERS
        while True:
            seen = m.seq.value
            version = _txn_version(m) if self._txn else seen // SEQ_COMMIT
            dead_writer = not self._txn and seen & SEQ_WRITING and m.lockword.value & _sys.FUTEX_OWNER_DIED
            if version != since or self.is_poisoned or dead_writer:
                return version
            if m.holder.value == _token():
                raise _waits_on_itself(self._key, "a wait for a change")
            slice_ = WAIT_SLICE
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Error("TimedOut", "segment %r did not change within %.3g s" % (self._key, timeout))
                slice_ = min(slice_, left)
            _sys.atomic_add_u32(waiters, 1)
            try:
                if m.seq.value == seen:
                    _sys.futex_wait(seq_word, seen & 0xFFFFFFFF, slice_)
            finally:
                _sys.atomic_add_u32(waiters, -1)

    # --- the lock (section 4) -----------------------------------------------

    def lock(self, timeout=None, ignore_poison=False):
        """A context manager that takes the segment's lock and yields a view
        of the data whose fields can be read and assigned.

        On a normal exit a write is committed (one version step, waiters
        woken). On an exception, a transactional segment discards the
        changes; a non-transactional one is poisoned (for read-write
        handles), as a panic does in Rust. A poisoned lock raises
        :class:`PoisonedError` from ``__enter__`` (after releasing it) unless
        ``ignore_poison`` is true. ``timeout`` (seconds) raises ``TimedOut``
        when the lock is not free in time."""
        return _Lock(self, timeout, ignore_poison)

    # --- liveness (section 5) -------------------------------------------------

    @property
    def attach_count(self):
        """Live attachments in every process, this one included."""
        return _count_others(self._live().fd) + 1

    def detach(self):
        """Detaches; the last attachment (in any process) removes the
        segment. Idempotent."""
        m = self._m
        if m.held:
            raise Error("LockError", "segment %r: detach while its lock is held through this handle" % self._key)
        self._finalizer.detach()
        m.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.detach()
        return False


def _end_write(m, wrote, poison):
    """The holder's end of a write, a poisoning, or both, in the words of a
    plain segment (sections 4 and 6): the sticky flag for lockers, and the
    sequence word for readers. If ``wrote`` (the word has the write bit), the
    word moves on to the next commit (+3: the write bit clear, one commit
    more, the poison bit as it was); if ``poison``, the poison bit is set in
    it too. Only the holder stores the word of a plain segment, so a load and
    a store suffice. Returns whether the word changed (then waiters are to be
    woken)."""
    if poison:
        m.poisoned.value = 1
    if not wrote and not poison:
        return False
    s = m.seq.value
    nxt = s + (SEQ_COMMIT - SEQ_WRITING) if wrote else s
    if poison:
        nxt |= SEQ_POISONED
    m.seq.value = nxt
    return True


def _clear_poison_held(m, txn):
    """Clears the poison: the sticky flag and, in a plain segment, the
    sequence word's poison bit. The calling thread holds the lock, or the
    segment is transactional (never poisoned: its word, whose bit 1 names
    the committed buffer, is left alone)."""
    m.poisoned.value = 0
    if txn:
        return
    s = m.seq.value
    if s & SEQ_POISONED:
        m.seq.value = s & ~SEQ_POISONED
        _Lock._wake(m)


class _Lock:
    def __init__(self, handle, timeout, ignore_poison):
        self._h, self._timeout, self._ignore = handle, timeout, ignore_poison
        self._session = None

    def __enter__(self):
        h = self._h
        m = h._live()
        me = _token()
        if m.holder.value == me:
            raise Error(
                "LockError",
                "segment %r: this thread already holds its lock; locking it again would deadlock" % h._key,
            )
        mutex = m.base + OFF_MUTEX
        got = _sys.mutex_lock(mutex, self._timeout)
        if got in (_sys.BUSY, _sys.TIMED_OUT):
            raise Error("TimedOut", "segment %r: the lock was not free within %s s" % (h._key, self._timeout))
        m.holder.value = me
        m.held += 1
        self._thread = threading.get_ident()
        poisoned = False
        if got == _sys.OWNER_DIED:
            s = m.seq.value
            if h._txn:
                if s & 1:
                    # A publish that already counted its commit (the count's
                    # parity differs from the committed buffer's bit) had
                    # copied it whole: complete it; else abandon it (the same
                    # committed buffer, never back).
                    if (m.txn_commits.value & 1) != ((s >> 1) & 1):
                        m.seq.value = s + 1
                        self._wake(m)
                    else:
                        m.seq.value = s + 3
            else:
                # Poison; a write the dead holder left unfinished (an odd
                # word) is counted with the data as it stands.
                _end_write(m, wrote=s & SEQ_WRITING != 0, poison=True)
                self._wake(m)
                poisoned = True
        elif m.poisoned.value != 0:
            poisoned = True
        if poisoned and not self._ignore:
            self._release(m, wrote=False, poison=False)
            raise PoisonedError(
                "segment %r is poisoned: a holder died or abandoned a write; the data may be "
                "half-written. Lock it with ignore_poison=True to repair it, then clear_poison()" % h._key
            )
        if h._txn:
            committed = m.seq.value & ~1
            src = m.base + h._data_offset + (h._info["stride"] if (committed >> 1) & 1 else 0)
            buf = bytearray(ctypes.string_at(src, h._data_len))
            session = _views._Session(buf, 0, not h._read_only, lambda: None, h._key)
        else:

            def begin_write():
                s = m.seq.value
                m.seq.value = s | SEQ_WRITING

            session = _views._Session(m.mm, h._data_offset, not h._read_only, begin_write, h._key)
        self._session = session
        return _views.top_view(session, h._layout, h._info["elem_count"], h._info["slice"])

    def __exit__(self, exc_type, exc, tb):
        h, s = self._h, self._session
        m = h._m
        s.active = False
        if threading.get_ident() != self._thread:
            raise Error("LockError", "segment %r: a lock is released by the thread that took it" % h._key)
        if h._txn:
            if exc_type is None and s.wrote:
                self._publish(m, s.buf)
            else:
                self._release(m, wrote=False, poison=False)
        else:
            poison = exc_type is not None and not h._read_only
            self._release(m, wrote=s.wrote, poison=poison)
        return False

    def _publish(self, m, buf):
        h = self._h
        s = m.seq.value
        target = m.base + h._data_offset + (0 if (s >> 1) & 1 else h._info["stride"])
        m.seq.value = s | 1
        ctypes.memmove(target, bytes(buf), h._data_len)
        m.txn_commits.value = m.txn_commits.value + 1
        m.seq.value = (s | 1) + 1
        m.holder.value = 0
        m.held -= 1
        _sys.mutex_unlock(m.base + OFF_MUTEX)
        self._wake(m)

    def _release(self, m, wrote, poison):
        changed = _end_write(m, wrote, poison)
        m.holder.value = 0
        m.held -= 1
        _sys.mutex_unlock(m.base + OFF_MUTEX)
        if changed:
            self._wake(m)

    @staticmethod
    def _wake(m):
        # The unlock before this (a locked instruction) orders the store of
        # `seq` before this load of `waiters` on x86_64.
        if m.waiters.value != 0:
            _sys.futex_wake_all(m.base + OFF_SEQ)

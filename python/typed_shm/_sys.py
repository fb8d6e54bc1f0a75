"""The operating-system calls the protocol needs, through ``ctypes``,
``fcntl`` and ``os`` only: OFD locks, futex wait/wake, the kernel-side atomic
add on a shared word, and the glibc robust mutex.

What this module relies on (see the package README):

- Linux, glibc, x86_64. The ABI stamp of a segment (SPEC.md section 3) is
  checked against the values below, so a segment of another ABI is refused.
- Word reads and writes go through ``ctypes.c_uint32`` / ``c_uint64``
  objects at aligned addresses. CPython reads and writes such a field with
  one fixed-size ``memcpy`` that the C compiler emits as a single aligned
  ``mov``: on x86_64 that is one atomic load or store. The x86_64 memory
  model (TSO: loads are not reordered with older loads, stores not with older
  stores) then gives every plain load acquire and every plain store release
  ordering, which is all the protocol asks of them; each word access is a
  separate call into C, so no compiler can merge or reorder them.
- The one read-modify-write the protocol needs besides the mutex (the
  ``waiters`` count) is done by the kernel: ``FUTEX_WAKE_OP`` with
  ``FUTEX_OP_ADD`` adds a signed 12-bit value to a shared 32-bit word
  atomically (a ``lock xadd`` on x86_64) and wakes nobody when both wake
  counts are 0 and nothing waits on that word (nothing ever waits on
  ``waiters``: waiters sleep on ``seq``).
"""

import ctypes
import errno
import fcntl
import os
import platform
import struct

from ._errors import Error

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# Linux x86_64.
_SYS_FUTEX = 202
_FUTEX_WAIT = 0
_FUTEX_WAKE = 1
_FUTEX_WAKE_OP = 5
_FUTEX_OP_ADD = 1
FUTEX_OWNER_DIED = 0x40000000
FUTEX_TID_MASK = 0x3FFFFFFF
_CLOCK_MONOTONIC = 1
_INT_MAX = 0x7FFFFFFF

# struct flock on x86_64: short l_type, short l_whence, (pad), off_t l_start,
# off_t l_len, pid_t l_pid, (pad): 32 bytes.
_FLOCK = struct.Struct("=hh4xqqi4x")

MUTEX_SIZE = 40
MUTEX_ALIGN = 8


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _load():
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None, None
    try:
        libc.gnu_get_libc_version
    except AttributeError:
        return None, None
    pthread = libc
    try:
        libc.pthread_mutex_clocklock
    except AttributeError:
        # glibc before 2.34 keeps the pthread functions in libpthread.
        pthread = ctypes.CDLL("libpthread.so.0", use_errno=True)
    for f in ("pthread_mutex_lock", "pthread_mutex_unlock", "pthread_mutex_consistent", "pthread_mutex_trylock"):
        fn = getattr(pthread, f)
        fn.argtypes = [ctypes.c_void_p]
        fn.restype = ctypes.c_int
    pthread.pthread_mutex_clocklock.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(_Timespec)]
    pthread.pthread_mutex_clocklock.restype = ctypes.c_int
    libc.syscall.restype = ctypes.c_long
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.mprotect.restype = ctypes.c_int
    return libc, pthread


_LIBC, _PTHREAD = _load()


def check_platform():
    """Raises ``IncompatibleVersion`` unless this is Linux, glibc, x86_64."""
    machine = platform.machine()
    if platform.system() != "Linux" or machine not in ("x86_64", "AMD64") or _LIBC is None:
        raise Error(
            "IncompatibleVersion",
            "typed_shm for Python supports Linux with glibc on x86_64 only (this is %s %s): its "
            "lock-free reads rely on that ABI and memory model" % (platform.system(), machine),
        )
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        raise Error("IncompatibleVersion", "typed_shm for Python needs a 64-bit Python")


def abi_stamp():
    """The six ABI words of SPEC.md section 3 for this process."""
    return (1, MUTEX_SIZE, 8 * ctypes.sizeof(ctypes.c_void_p), 0x01020304, PAGE_SIZE, MUTEX_ALIGN)


def pid_namespace():
    st = os.stat("/proc/self/ns/pid")
    return (st.st_dev, st.st_ino)


# --- open-file-description locks ----------------------------------------


def ofd_lock(fd, kind, start, length):
    """``F_OFD_SETLK``: True if set, False if another description holds a
    conflicting lock."""
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(kind, os.SEEK_SET, start, length, 0))
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise


def ofd_conflict(fd, start, length):
    """``F_OFD_GETLK`` for a write lock on ``[start, start + length)``: the
    conflicting lock of another description as ``(start, length)``, or
    None."""
    out = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, start, length, 0))
    l_type, _whence, l_start, l_len, _pid = _FLOCK.unpack(out)
    if l_type == fcntl.F_UNLCK:
        return None
    return (l_start, l_len)


# --- futexes and the kernel's atomic add ----------------------------------


def _futex(addr, op, val, arg4, addr2, val3):
    return _LIBC.syscall(
        ctypes.c_long(_SYS_FUTEX),
        ctypes.c_void_p(addr),
        ctypes.c_long(op),
        ctypes.c_long(val),
        arg4,
        ctypes.c_void_p(addr2),
        ctypes.c_long(val3),
    )


def futex_wait(addr, expected, timeout):
    """``FUTEX_WAIT`` (shared) on the 32-bit word at ``addr`` while it holds
    ``expected``, for at most ``timeout`` seconds. Every outcome (woken,
    value changed, timed out, interrupted) means "look again"."""
    ns = max(0, int(timeout * 1e9))
    ts = _Timespec(ns // 1_000_000_000, ns % 1_000_000_000)
    _futex(addr, _FUTEX_WAIT, expected & 0xFFFFFFFF, ctypes.byref(ts), None, 0)


def futex_wake_all(addr):
    """``FUTEX_WAKE`` (shared) of every waiter on the word at ``addr``."""
    _futex(addr, _FUTEX_WAKE, _INT_MAX, ctypes.c_void_p(None), None, 0)


def atomic_add_u32(addr, delta):
    """Adds ``delta`` (-2048..2047) to the shared 32-bit word at ``addr``
    atomically, done by the kernel: ``FUTEX_WAKE_OP`` with ``FUTEX_OP_ADD``
    on that word, waking nobody (both wake counts 0, and nothing waits on
    it)."""
    op = (_FUTEX_OP_ADD << 28) | ((delta & 0xFFF) << 12)
    rc = _futex(addr, _FUTEX_WAKE_OP, 0, ctypes.c_void_p(0), addr, op)
    if rc < 0:
        e = ctypes.get_errno()
        raise Error("LockError", "futex(FUTEX_WAKE_OP) failed: %s" % os.strerror(e))


# --- the robust mutex -------------------------------------------------------

LOCKED, OWNER_DIED, BUSY, TIMED_OUT = "locked", "owner-died", "busy", "timed-out"


def mutex_lock(addr, timeout=None):
    """Locks the robust mutex at ``addr`` (``pthread_mutex_lock``, or
    ``pthread_mutex_clocklock`` on ``CLOCK_MONOTONIC`` with a timeout in
    seconds). On ``EOWNERDEAD`` it makes the mutex consistent at once."""
    if timeout is None:
        rc = _PTHREAD.pthread_mutex_lock(addr)
    elif timeout <= 0:
        rc = _PTHREAD.pthread_mutex_trylock(addr)
    else:
        import time

        deadline = time.clock_gettime_ns(time.CLOCK_MONOTONIC) + int(timeout * 1e9)
        ts = _Timespec(deadline // 1_000_000_000, deadline % 1_000_000_000)
        rc = _PTHREAD.pthread_mutex_clocklock(addr, _CLOCK_MONOTONIC, ctypes.byref(ts))
    if rc == 0:
        return LOCKED
    if rc == errno.EOWNERDEAD:
        crc = _PTHREAD.pthread_mutex_consistent(addr)
        if crc != 0:
            # Unlocking an inconsistent robust mutex would make it unusable
            # for every process: end this one instead (as the Rust side does).
            os.write(2, b"typed_shm: pthread_mutex_consistent failed; aborting\n")
            os.abort()
        return OWNER_DIED
    if rc == errno.EBUSY:
        return BUSY
    if rc == errno.ETIMEDOUT:
        return TIMED_OUT
    raise Error("LockError", "locking the segment's mutex failed: %s" % os.strerror(rc))


def mutex_unlock(addr):
    rc = _PTHREAD.pthread_mutex_unlock(addr)
    if rc != 0:
        raise Error(
            "LockError",
            "pthread_mutex_unlock failed (%s): the lock is released by the thread that took it"
            % os.strerror(rc),
        )


def mprotect_read_only(addr, length):
    if _LIBC.mprotect(addr, length, 1) != 0:  # PROT_READ
        e = ctypes.get_errno()
        raise Error("Unknown", "mprotect failed: %s" % os.strerror(e))

/*
 * typed_shm.h — a header-only C library for typed-shm segments.
 *
 * Lets a C program (C11, Linux, glibc) share a named segment with programs
 * that use the typed-shm Rust library, following SPEC.md (segment format
 * version 3): attach and detach (taking part in the liveness protocol, so
 * the last detach, in any language, removes the segment), consistent
 * snapshots without the lock, the robust lock with poison reporting,
 * commits that advance the version and wake waiters, transactional commits,
 * and waiting for a change.
 *
 * Usage: include this header before any system header (it defines
 * _GNU_SOURCE, which the open-file-description locks need), or define
 * _GNU_SOURCE yourself before the first include; link with -pthread.
 *
 *     #include "typed_shm.h"
 *
 *     struct telemetry { uint64_t seq; float temps[8]; };   // the Rust type, #[repr(C)]
 *     tshm_expect want = TSHM_EXPECT(struct telemetry, 0x1234abcd5678ef00ULL);
 *     tshm_segment seg;
 *     int rc = tshm_attach("telemetry", &want, 0, &seg);
 *     if (rc != TSHM_OK) { fprintf(stderr, "%s\n", tshm_strerror(rc)); return 1; }
 *     struct telemetry t;
 *     rc = tshm_snapshot(&seg, &t, -1);               // TSHM_OK or TSHM_POISONED
 *     rc = tshm_lock(&seg, -1);                       // TSHM_OK or TSHM_POISONED: held
 *     if (rc >= 0) {
 *         tshm_begin_write(&seg);                     // before the first store
 *         ((struct telemetry *)tshm_data(&seg))->seq += 1;
 *         tshm_unlock(&seg, 1);                       // commits: version + 1, waiters woken
 *     }
 *     tshm_detach(&seg);
 *
 * The fingerprint is the element type's layout fingerprint: take it from the
 * Rust program (`<T as ShmSafe>::FINGERPRINT`) or from `tshm show`; it is
 * compared as an opaque number.
 *
 * Return values: every function that can fail returns an int, TSHM_OK (0) on
 * success, TSHM_POISONED (1) where a poisoned lock or segment is reported
 * (the operation succeeded), or a negative TSHM_E_* code; errno is left as
 * the failing system call set it (TSHM_E_OS and the others that come from a
 * system call). tshm_strerror() describes each code.
 *
 * Threads: a tshm_segment may be used by several threads of one process at
 * once, except tshm_detach, which must be the last use. The lock is taken and
 * released by the same thread; a thread that holds it must not lock it again
 * (refused with TSHM_E_DEADLOCK / TSHM_E_BUSY), and must not end while its
 * process goes on (the kernel would then hand the lock, marked owner-dead, to
 * the next locker while this process may still use the data). A tshm_segment
 * belongs to the process that attached it: a child made by fork() must not
 * use the parent's segments (attach anew).
 *
 * PID namespace: robust locks name their owner by thread id, and thread ids
 * repeat across PID namespaces, so a process in another PID namespace than
 * the segment's creator cannot share it: tshm_attach refuses with
 * TSHM_E_PID_NAMESPACE. Run every process that shares a segment in one PID
 * namespace (for containers: `--pid=host`, `--pid=container:NAME`, or a
 * shared process namespace in a pod).
 */
#ifndef TYPED_SHM_H
#define TYPED_SHM_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#if !defined(F_OFD_SETLK) || !defined(F_OFD_GETLK)
#error "typed_shm.h: F_OFD_SETLK is not declared: include typed_shm.h before any system header, or define _GNU_SOURCE before the first include"
#endif
#if !defined(__linux__) || !defined(__GLIBC__)
#error "typed_shm.h: Linux with glibc only (the lock is a glibc robust pthread mutex)"
#endif
#if ATOMIC_LONG_LOCK_FREE != 2 || ATOMIC_INT_LOCK_FREE != 2
#error "typed_shm.h: needs lock-free 32- and 64-bit atomics"
#endif

#ifdef __cplusplus
#error "typed_shm.h is a C11 header (it uses <stdatomic.h> and _Atomic)"
#endif

_Static_assert(sizeof(pthread_mutex_t) <= 48, "pthread_mutex_t must fit the header's 48-byte slot");
_Static_assert(_Alignof(pthread_mutex_t) <= 8, "pthread_mutex_t must be at most 8-aligned");
_Static_assert(sizeof(unsigned long) == sizeof(uint64_t) || sizeof(unsigned long long) == sizeof(uint64_t),
               "uint64_t");

/* ------------------------------------------------------------------------- */
/* Results                                                                   */

/** Results of the functions below: 0 and 1 are successes, negatives errors. */
enum tshm_result {
    /** Success. */
    TSHM_OK = 0,
    /** Success, and the segment is poisoned: a holder of the lock died (or
     *  abandoned a write) and nobody has called tshm_clear_poison(); the data
     *  may be half-written. */
    TSHM_POISONED = 1,
    /** No segment with this key exists (or it was being removed by a process
     *  that died doing so). */
    TSHM_E_NOT_FOUND = -1,
    /** Not a typed-shm segment (another file under the name, a symbolic link,
     *  a directory), or a header that fails validation. Left untouched. */
    TSHM_E_CORRUPTED = -2,
    /** Another header format version or ABI (libc, mutex size, pointer width,
     *  byte order, page size). */
    TSHM_E_VERSION = -3,
    /** The segment holds another type: fingerprint, element size or
     *  alignment, slice or not, or element count differ from the expectation
     *  (tshm_segment.desc names what it holds). */
    TSHM_E_LAYOUT = -4,
    /** The segment was created in another PID namespace (see the top of this
     *  file), or this process's PID namespace cannot be read (/proc). */
    TSHM_E_PID_NAMESPACE = -5,
    /** A deadline passed: the lock stayed held, no consistent snapshot, no
     *  change, or the segment stayed in initialization or removal. */
    TSHM_E_TIMED_OUT = -6,
    /** The OS refused (mode bits, read-only file system), or the object is
     *  owned by another user (it could have been planted). */
    TSHM_E_PERMISSION = -7,
    /** The key is NULL, empty, longer than 255 bytes, or not UTF-8. */
    TSHM_E_KEY = -8,
    /** tshm_trylock: the lock is held (by another thread, or by this one). */
    TSHM_E_BUSY = -9,
    /** tshm_lock: this thread holds the lock already; locking again would
     *  deadlock. */
    TSHM_E_DEADLOCK = -10,
    /** A call that does not fit the state: unlocking a lock this thread does
     *  not hold, writing through a read-only handle, tshm_begin_write on a
     *  transactional segment, tshm_commit_txn on a plain one, detaching while
     *  holding the lock, a buffer too small. */
    TSHM_E_INVALID = -11,
    /** Out of memory, address space, file descriptors or attachment slots. */
    TSHM_E_RESOURCES = -12,
    /** Another failure of a system call (see errno). */
    TSHM_E_OS = -13
};

/** A sentence describing a result code (a static string; never NULL). */
static inline const char *tshm_strerror(int rc) {
    switch (rc) {
    case TSHM_OK: return "success";
    case TSHM_POISONED: return "the segment is poisoned: a holder of its lock died or abandoned a write; the data may be half-written (clear it with tshm_clear_poison once repaired)";
    case TSHM_E_NOT_FOUND: return "no segment with this key exists: create it first";
    case TSHM_E_CORRUPTED: return "not a typed-shm segment, or its header fails validation; it was left untouched";
    case TSHM_E_VERSION: return "the segment has another header format version or ABI: use the same typed-shm format and target in every program";
    case TSHM_E_LAYOUT: return "the segment holds another type (fingerprint, size, alignment, slice or length differ): every program must use the same type definition";
    case TSHM_E_PID_NAMESPACE: return "the segment was created in another PID namespace (or this one cannot be read from /proc): its lock names holders by thread id, which repeat across PID namespaces; run every process that shares it in one PID namespace";
    case TSHM_E_TIMED_OUT: return "timed out";
    case TSHM_E_PERMISSION: return "permission denied: the mode bits or the owner of the segment do not allow this process to use it";
    case TSHM_E_KEY: return "invalid key: keys are UTF-8 strings of 1 to 255 bytes";
    case TSHM_E_BUSY: return "the lock is held";
    case TSHM_E_DEADLOCK: return "this thread holds the lock already: locking it again would deadlock";
    case TSHM_E_INVALID: return "invalid call in this state (lock not held by this thread, read-only handle, wrong kind of segment, or buffer too small)";
    case TSHM_E_RESOURCES: return "out of memory, address space, file descriptors or attachment slots";
    case TSHM_E_OS: return "a system call failed (see errno)";
    default: return "unknown typed-shm result code";
    }
}

/* ------------------------------------------------------------------------- */
/* The segment format (SPEC.md)                                              */

/** Bytes of the fixed header. */
#define TSHM_HEADER_SIZE 576
/** The format version this header implements. */
#define TSHM_FORMAT_VERSION 3
/** Room for a native key, NUL included (native keys are at most 30 bytes). */
#define TSHM_NATIVE_KEY_MAX 32
/** Longest key, in bytes. */
#define TSHM_KEY_MAX 255
/** How long tshm_attach waits for a segment that is being initialized or
 *  removed by another process (milliseconds). Define it before including
 *  this header to change it. */
#ifndef TSHM_ATTACH_TIMEOUT_MS
#define TSHM_ATTACH_TIMEOUT_MS 5000
#endif

#define TSHM__OFF_MAGIC 0
#define TSHM__OFF_VERSION 8
#define TSHM__OFF_HEADER_SIZE 12
#define TSHM__OFF_ABI 16
#define TSHM__OFF_DATA_OFFSET 40
#define TSHM__OFF_DATA_LEN 48
#define TSHM__OFF_ELEM_SIZE 56
#define TSHM__OFF_ELEM_ALIGN 64
#define TSHM__OFF_ELEM_COUNT 72
#define TSHM__OFF_FINGERPRINT 80
#define TSHM__OFF_FLAGS 88
#define TSHM__OFF_DESC_LEN 92
#define TSHM__OFF_DESC 96
#define TSHM__OFF_STATE 352
#define TSHM__OFF_MUTEX 384
#define TSHM__OFF_HOLDER 432
#define TSHM__OFF_POISONED 440
#define TSHM__OFF_PID_NS 448
#define TSHM__OFF_SEQ 512
#define TSHM__OFF_WAITERS 520
/* 524: reserved, zero (format 2's copy of `poisoned` for readers; in format
 * 3 readers take the poison from bit 1 of seq). Never read or written. */
#define TSHM__OFF_TXN_COMMITS 528

#define TSHM__DESC_CAP 256
#define TSHM__STATE_INIT 0u
#define TSHM__STATE_READY 0x52454459u
#define TSHM__STATE_DESTROYED 0x44454144u
#define TSHM__FLAG_SLICE 1u
#define TSHM__FLAG_TRANSACTIONAL 2u
/* The sequence word of a plain segment (SPEC §6) is
 * TSHM__SEQ_COMMIT * commits + TSHM__SEQ_POISONED * poisoned +
 * TSHM__SEQ_WRITING * writing. A transactional segment's word means
 * something else (SPEC §8: bit 1 names the committed buffer): never apply
 * these to it. 64-bit, so that ~TSHM__SEQ_POISONED keeps the high half. */
#define TSHM__SEQ_WRITING UINT64_C(1)
#define TSHM__SEQ_POISONED UINT64_C(2)
#define TSHM__SEQ_COMMIT UINT64_C(4)
#define TSHM__SLOT_BASE 1
#define TSHM__MAX_SLOTS (1L << 20)
/* One futex wait of tshm_wait_for_change lasts at most this long (ms). */
#define TSHM__WAIT_SLICE_MS 20

/** The layout a program expects a segment to hold. */
typedef struct tshm_expect {
    /** The element type's layout fingerprint (from the Rust program). */
    uint64_t fingerprint;
    /** sizeof the element type. */
    uint64_t elem_size;
    /** _Alignof the element type. */
    uint64_t elem_align;
    /** Non-zero: a slice segment (a run of elements whose length was chosen
     *  at creation); zero: a single value. */
    int slice;
    /** Slices: the number of elements expected, or 0 to accept any length
     *  (tshm_len() tells). Single values: 0 or 1. */
    uint64_t elem_count;
} tshm_expect;

/** The expectation for a single value of type T with fingerprint FP. */
#define TSHM_EXPECT(T, FP) ((tshm_expect){(uint64_t)(FP), sizeof(T), _Alignof(T), 0, 1})
/** The expectation for a slice of COUNT elements of type T (0: any length). */
#define TSHM_EXPECT_SLICE(T, FP, COUNT) ((tshm_expect){(uint64_t)(FP), sizeof(T), _Alignof(T), 1, (uint64_t)(COUNT)})

/** An attached segment. Filled in by tshm_attach; read its fields through
 *  the functions below (desc and native_key may be read directly). */
typedef struct tshm_segment {
    int fd;
    int read_only;
    int transactional;
    /** Set by tshm_begin_write; used only by the lock's holder. */
    int writing;
    unsigned char *base;
    size_t map_len;
    /** The first data buffer (transactional: the second is at + stride). */
    unsigned char *data;
    size_t data_len;
    size_t elem_count;
    size_t stride;
    dev_t dev;
    ino_t ino;
    /** The OS name of the object, e.g. "/tshm_telemetry". */
    char native_key[TSHM_NATIVE_KEY_MAX];
    /** The readable layout the segment holds, as stored in its header, e.g.
     *  "Telemetry { seq: u64 @0, temps: [f32; 8] @8 }". Also filled in when
     *  tshm_attach fails with TSHM_E_LAYOUT. */
    char desc[TSHM__DESC_CAP + 1];
} tshm_segment;

/* ------------------------------------------------------------------------- */
/* Internals                                                                 */

static inline uint64_t tshm__get64(const unsigned char *h, size_t off) {
    uint64_t v;
    memcpy(&v, h + off, sizeof v);
    return v;
}

static inline uint32_t tshm__get32(const unsigned char *h, size_t off) {
    uint32_t v;
    memcpy(&v, h + off, sizeof v);
    return v;
}

/* The in-place words of a mapped header; only ever accessed atomically. */
static inline _Atomic uint64_t *tshm__a64(const tshm_segment *s, size_t off) {
    return (_Atomic uint64_t *)(void *)(s->base + off);
}

static inline _Atomic uint32_t *tshm__a32(const tshm_segment *s, size_t off) {
    return (_Atomic uint32_t *)(void *)(s->base + off);
}

static inline pthread_mutex_t *tshm__mutex(const tshm_segment *s) {
    return (pthread_mutex_t *)(void *)(s->base + TSHM__OFF_MUTEX);
}

/* The futex word waiters sleep on: the low 32 bits of seq. */
static inline uint32_t *tshm__seq_futex(const tshm_segment *s) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return (uint32_t *)(void *)(s->base + TSHM__OFF_SEQ);
#else
    return (uint32_t *)(void *)(s->base + TSHM__OFF_SEQ + 4);
#endif
}

static inline int64_t tshm__now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A deadline timeout_ms from now, or -1 for none (timeout_ms < 0). */
static inline int64_t tshm__deadline(long timeout_ms) {
    return timeout_ms < 0 ? -1 : tshm__now_ns() + (int64_t)timeout_ms * 1000000;
}

static inline void tshm__sleep_ns(int64_t ns) {
    if (ns <= 0) {
        return;
    }
    struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static inline uint64_t tshm__mix(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* This thread's lock token, shared by every translation unit of the program
 * that includes this header (a weak definition: the linker keeps one). */
__attribute__((weak)) _Thread_local uint64_t tshm__thread_token;

/** The calling thread's random non-zero 64-bit token, stored in the header
 *  while it holds a lock (SPEC §4). */
static inline uint64_t tshm__token(void) {
    uint64_t t = tshm__thread_token;
    if (t != 0) {
        return t;
    }
    if (getrandom(&t, sizeof t, 0) != (ssize_t)sizeof t) {
        t = tshm__mix((uint64_t)tshm__now_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)syscall(SYS_gettid) ^
                      (uint64_t)(uintptr_t)&tshm__thread_token);
    }
    if (t == 0) {
        t = 1;
    }
    tshm__thread_token = t;
    return t;
}

static inline int tshm__is_plain(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
}

/* The length of the UTF-8 character at s (of n bytes left), or 0 if it is
 * not valid UTF-8 (as Rust's str: no overlong forms, no surrogates, at most
 * U+10FFFF). */
static inline size_t tshm__utf8_char(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
        return 1;
    } else if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff))) {
        return 0;
    }
    return len;
}

/* ------------------------------------------------------------------------- */
/* Names                                                                     */

/**
 * Writes the native key (the POSIX shared-memory object name, e.g.
 * "/tshm_telemetry") of `key` into `buf` (`len` bytes; TSHM_NATIVE_KEY_MAX
 * always suffices), per SPEC §1: "/tshm_<key>" for a key of at most 24 bytes
 * of A-Z a-z 0-9 . _ -, else "/tshm_<first 7 characters, others as _>~<FNV-1a
 * of the key's bytes, 16 hex digits>".
 *
 * Errors: TSHM_E_KEY (NULL, empty, over 255 bytes, not UTF-8);
 * TSHM_E_INVALID (`buf` NULL or too small). Thread-safe.
 */
static inline int tshm_native_key(const char *key, char *buf, size_t len) {
    if (key == NULL) {
        return TSHM_E_KEY;
    }
    const unsigned char *k = (const unsigned char *)key;
    size_t n = strlen(key);
    if (n == 0 || n > TSHM_KEY_MAX) {
        return TSHM_E_KEY;
    }
    int plain = n <= 24;
    for (size_t i = 0; i < n;) {
        size_t c = tshm__utf8_char(k + i, n - i);
        if (c == 0) {
            return TSHM_E_KEY;
        }
        if (c != 1 || !tshm__is_plain(k[i])) {
            plain = 0;
        }
        i += c;
    }
    char out[TSHM_NATIVE_KEY_MAX];
    if (plain) {
        memcpy(out, "/tshm_", 6);
        memcpy(out + 6, key, n + 1); /* n <= 24 */
    } else {
        char prefix[8];
        size_t p = 0;
        for (size_t i = 0; i < n && p < 7;) {
            size_t c = tshm__utf8_char(k + i, n - i);
            prefix[p++] = (c == 1 && tshm__is_plain(k[i])) ? (char)k[i] : '_';
            i += c;
        }
        prefix[p] = '\0';
        uint64_t h = 0xcbf29ce484222325ULL;
        for (size_t i = 0; i < n; i++) {
            h = (h ^ k[i]) * 0x100000001b3ULL;
        }
        snprintf(out, sizeof out, "/tshm_%s~%016llx", prefix, (unsigned long long)h);
    }
    if (buf == NULL || strlen(out) + 1 > len) {
        return TSHM_E_INVALID;
    }
    memcpy(buf, out, strlen(out) + 1);
    return TSHM_OK;
}

/* ------------------------------------------------------------------------- */
/* Attach and detach                                                         */

/* An open-file-description lock (F_OFD_SETLK, never waiting) on [start,
 * start + len) (len 0: to the end and beyond). 1: set; 0: another
 * description holds a conflicting lock; -1: error (errno). */
static inline int tshm__ofd(int fd, short type, off_t start, off_t len) {
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = start;
    fl.l_len = len;
    if (fcntl(fd, F_OFD_SETLK, &fl) == 0) {
        return 1;
    }
    return (errno == EAGAIN || errno == EACCES) ? 0 : -1;
}

/* The result for a failed system call, by errno. */
static inline int tshm__os_result(int e) {
    switch (e) {
    case ENOENT: return TSHM_E_NOT_FOUND;
    case EACCES:
    case EPERM:
    case EROFS: return TSHM_E_PERMISSION;
    case ENOMEM:
    case ENOSPC:
    case EMFILE:
    case ENFILE:
    case EFBIG: return TSHM_E_RESOURCES;
    case ENAMETOOLONG: return TSHM_E_KEY;
    case EINVAL: /* glibc's shm_open: a directory under the name */
    case ELOOP: return TSHM_E_CORRUPTED; /* a symbolic link, never followed */
    default: return TSHM_E_OS;
    }
}

/* Whether the name still refers to the file (device, inode). */
static inline int tshm__name_refers_to(const char *native, dev_t dev, ino_t ino) {
    char path[TSHM_NATIVE_KEY_MAX + 16];
    struct stat st;
    snprintf(path, sizeof path, "/dev/shm%s", native);
    return lstat(path, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

/* Checks a header copy against the file length and `expect` (SPEC §3, in
 * its order). Fills in the layout fields of `s`. */
static inline int tshm__validate(const unsigned char *h, uint64_t file_len, const tshm_expect *expect,
                                 tshm_segment *s) {
    if (memcmp(h + TSHM__OFF_MAGIC, "TYPEDSHM", 8) != 0) {
        return TSHM_E_CORRUPTED;
    }
    if (tshm__get32(h, TSHM__OFF_VERSION) != TSHM_FORMAT_VERSION ||
        tshm__get32(h, TSHM__OFF_HEADER_SIZE) != TSHM_HEADER_SIZE) {
        return TSHM_E_VERSION;
    }
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0) {
        page = 4096;
    }
    uint32_t abi[6] = {1, (uint32_t)sizeof(pthread_mutex_t), (uint32_t)(sizeof(void *) * 8), 0x01020304u,
                       (uint32_t)page, (uint32_t)_Alignof(pthread_mutex_t)};
    for (int i = 0; i < 6; i++) {
        if (tshm__get32(h, TSHM__OFF_ABI + 4 * (size_t)i) != abi[i]) {
            return TSHM_E_VERSION;
        }
    }
    uint64_t data_offset = tshm__get64(h, TSHM__OFF_DATA_OFFSET);
    uint64_t data_len = tshm__get64(h, TSHM__OFF_DATA_LEN);
    uint64_t elem_size = tshm__get64(h, TSHM__OFF_ELEM_SIZE);
    uint64_t elem_align = tshm__get64(h, TSHM__OFF_ELEM_ALIGN);
    uint64_t elem_count = tshm__get64(h, TSHM__OFF_ELEM_COUNT);
    uint32_t flags = tshm__get32(h, TSHM__OFF_FLAGS);
    int slice = (flags & TSHM__FLAG_SLICE) != 0;
    uint32_t desc_len = tshm__get32(h, TSHM__OFF_DESC_LEN);
    if (desc_len > TSHM__DESC_CAP) {
        desc_len = TSHM__DESC_CAP;
    }
    memcpy(s->desc, h + TSHM__OFF_DESC, desc_len);
    s->desc[desc_len] = '\0';
    if (expect != NULL) {
        if (tshm__get64(h, TSHM__OFF_FINGERPRINT) != expect->fingerprint || elem_size != expect->elem_size ||
            elem_align != expect->elem_align || slice != (expect->slice != 0)) {
            return TSHM_E_LAYOUT;
        }
    }
    uint64_t pg = (uint64_t)page;
    if (data_offset < TSHM_HEADER_SIZE || data_offset % pg != 0) {
        return TSHM_E_CORRUPTED;
    }
    if (data_offset + data_len < data_offset || data_offset + data_len > file_len) {
        return TSHM_E_CORRUPTED;
    }
    if (data_len == 0 || elem_size == 0 || data_len / elem_size != elem_count || data_len % elem_size != 0 ||
        (!slice && elem_count != 1)) {
        return TSHM_E_CORRUPTED;
    }
    if (elem_align == 0 || elem_align > pg || (elem_align & (elem_align - 1)) != 0) {
        return TSHM_E_CORRUPTED;
    }
    if (data_len > (uint64_t)PTRDIFF_MAX) {
        return TSHM_E_CORRUPTED;
    }
    /* The element count is part of the expected layout, checked once the
     * header's own lengths are known to agree. */
    if (expect != NULL && expect->elem_count != 0 && expect->elem_count != elem_count) {
        return TSHM_E_LAYOUT;
    }
    struct stat ns;
    if (stat("/proc/self/ns/pid", &ns) != 0) {
        return TSHM_E_PID_NAMESPACE;
    }
    if (tshm__get64(h, TSHM__OFF_PID_NS) != (uint64_t)ns.st_dev ||
        tshm__get64(h, TSHM__OFF_PID_NS + 8) != (uint64_t)ns.st_ino) {
        return TSHM_E_PID_NAMESPACE;
    }
    if ((flags & ~(TSHM__FLAG_SLICE | TSHM__FLAG_TRANSACTIONAL)) != 0) {
        return TSHM_E_CORRUPTED;
    }
    uint64_t stride = 0;
    if (flags & TSHM__FLAG_TRANSACTIONAL) {
        stride = (data_len + pg - 1) / pg * pg;
        if (stride < data_len || stride + data_len < stride || stride + data_len > (uint64_t)PTRDIFF_MAX ||
            data_offset + stride + data_len < data_offset || data_offset + stride + data_len > file_len) {
            return TSHM_E_CORRUPTED;
        }
    }
    if (data_offset + stride + data_len > (uint64_t)SIZE_MAX) {
        return TSHM_E_RESOURCES;
    }
    s->transactional = (flags & TSHM__FLAG_TRANSACTIONAL) != 0;
    s->data_len = (size_t)data_len;
    s->elem_count = (size_t)elem_count;
    s->stride = (size_t)stride;
    s->map_len = (size_t)(data_offset + stride + data_len);
    s->data = (unsigned char *)(uintptr_t)data_offset; /* an offset until mapped */
    return TSHM_OK;
}

/* Takes a free attachment slot (a write lock on one byte of 1 .. 1 + 2^20). */
static inline int tshm__take_slot(int fd) {
    for (long i = 0; i < TSHM__MAX_SLOTS; i++) {
        int r = tshm__ofd(fd, F_WRLCK, TSHM__SLOT_BASE + i, 1);
        if (r == 1) {
            return TSHM_OK;
        }
        if (r < 0) {
            return tshm__os_result(errno);
        }
    }
    return TSHM_E_RESOURCES;
}

/**
 * Attaches to the segment named `key`, created by a Rust program (or any
 * participant that follows SPEC.md), and fills in `*out`.
 *
 * Opens the object (O_RDWR | O_CLOEXEC | O_NOFOLLOW), checks that it is a
 * regular file owned by this process's effective uid, takes the lifetime read
 * lock (waiting up to TSHM_ATTACH_TIMEOUT_MS while a creator initializes it or
 * the last participant removes it), reads and validates the header (magic,
 * format version, ABI, then the layout `expect`, if not NULL, then the
 * lengths against the file size, then the PID namespace), maps exactly the
 * validated length (the data PROT_READ when `read_only` is non-zero), and
 * takes an attachment slot, so that tshm_attach_count() counts it and the last
 * detach, in any process and language, removes the segment. A process that
 * dies attached is detached by the kernel.
 *
 * `expect` NULL accepts any layout (use tshm_size() and tshm_len(); the
 * layout is in out->desc); otherwise the fingerprint, element size and
 * alignment, slice flag and (if given) element count must match.
 *
 * Returns TSHM_OK, or: TSHM_E_KEY; TSHM_E_NOT_FOUND (no such segment);
 * TSHM_E_PERMISSION (mode bits, or another user's object); TSHM_E_CORRUPTED
 * (not a typed-shm segment, a bad header; left untouched); TSHM_E_VERSION;
 * TSHM_E_LAYOUT (out->desc says what it holds); TSHM_E_PID_NAMESPACE;
 * TSHM_E_TIMED_OUT (still being initialized or removed, or its creator died
 * initializing it); TSHM_E_RESOURCES; TSHM_E_OS. On error nothing is held
 * and *out must not be used (except out->desc after TSHM_E_LAYOUT).
 * Thread-safe.
 */
static inline int tshm_attach(const char *key, const tshm_expect *expect, int read_only, tshm_segment *out) {
    if (out == NULL) {
        return TSHM_E_INVALID;
    }
    memset(out, 0, sizeof *out);
    out->fd = -1;
    int rc = tshm_native_key(key, out->native_key, sizeof out->native_key);
    if (rc != TSHM_OK) {
        return rc;
    }
    int64_t deadline = tshm__now_ns() + (int64_t)TSHM_ATTACH_TIMEOUT_MS * 1000000;
    for (int attempt = 1;; attempt++) {
        int fd = shm_open(out->native_key, O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0);
        if (fd < 0) {
            return tshm__os_result(errno);
        }
        struct stat st;
        if (fstat(fd, &st) != 0) {
            rc = tshm__os_result(errno);
            goto fail;
        }
        if (!S_ISREG(st.st_mode)) {
            rc = TSHM_E_CORRUPTED;
            goto fail;
        }
        if (st.st_uid != geteuid()) {
            rc = TSHM_E_PERMISSION;
            goto fail;
        }
        int locked = tshm__ofd(fd, F_RDLCK, 0, 1);
        if (locked < 0) {
            rc = tshm__os_result(errno);
            goto fail;
        }
        if (!locked || st.st_size == 0) {
            /* Being initialized or removed; or created, not yet locked. */
            close(fd);
            if (tshm__now_ns() >= deadline) {
                return TSHM_E_TIMED_OUT;
            }
            tshm__sleep_ns((int64_t)(attempt < 10 ? attempt : 10) * 1000000);
            continue;
        }
        if (st.st_size < TSHM_HEADER_SIZE) {
            rc = TSHM_E_CORRUPTED;
            goto fail;
        }
        unsigned char h[TSHM_HEADER_SIZE];
        size_t got = 0;
        while (got < sizeof h) {
            ssize_t n = pread(fd, h + got, sizeof h - got, (off_t)got);
            if (n > 0) {
                got += (size_t)n;
            } else if (n == 0) {
                rc = TSHM_E_CORRUPTED;
                goto fail;
            } else if (errno != EINTR) {
                rc = tshm__os_result(errno);
                goto fail;
            }
        }
        if (memcmp(h, "TYPEDSHM", 8) != 0) {
            int zero = 1;
            for (size_t i = 0; i < sizeof h; i++) {
                zero &= h[i] == 0;
            }
            /* All zeros: its creator died before writing the header. */
            rc = zero ? TSHM_E_TIMED_OUT : TSHM_E_CORRUPTED;
            goto fail;
        }
        uint32_t state = tshm__get32(h, TSHM__OFF_STATE);
        if (state == TSHM__STATE_DESTROYED) {
            if (tshm__name_refers_to(out->native_key, st.st_dev, st.st_ino)) {
                /* Its remover died between marking it and unlinking it. */
                rc = TSHM_E_NOT_FOUND;
                goto fail;
            }
            /* Removed while we opened it: start over. */
            close(fd);
            if (tshm__now_ns() >= deadline) {
                return TSHM_E_TIMED_OUT;
            }
            tshm__sleep_ns((int64_t)(attempt < 10 ? attempt : 10) * 1000000);
            continue;
        }
        if (state == TSHM__STATE_INIT) {
            rc = TSHM_E_TIMED_OUT; /* its creator died part-way */
            goto fail;
        }
        if (state != TSHM__STATE_READY) {
            rc = TSHM_E_CORRUPTED;
            goto fail;
        }
        rc = tshm__validate(h, (uint64_t)st.st_size, expect, out);
        if (rc != TSHM_OK) {
            goto fail;
        }
        size_t data_offset = (size_t)(uintptr_t)out->data;
        void *base = mmap(NULL, out->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (base == MAP_FAILED) {
            rc = tshm__os_result(errno);
            goto fail;
        }
        if (read_only && mprotect((unsigned char *)base + data_offset, out->map_len - data_offset, PROT_READ) != 0) {
            rc = tshm__os_result(errno);
            munmap(base, out->map_len);
            goto fail;
        }
        rc = tshm__take_slot(fd);
        if (rc != TSHM_OK) {
            munmap(base, out->map_len);
            goto fail;
        }
        out->fd = fd;
        out->base = (unsigned char *)base;
        out->data = out->base + data_offset;
        out->read_only = read_only != 0;
        out->dev = st.st_dev;
        out->ino = st.st_ino;
        return TSHM_OK;
    fail: {
        int saved = errno;
        close(fd); /* releases this description's locks */
        errno = saved;
        return rc;
    }
    }
}

/**
 * Ends the attachment (SPEC §5): releases this handle's locks, then tries the
 * write lock on byte 0; if it gets it, no other participant is attached: it
 * marks the segment DESTROYED and removes the name (if the name still refers
 * to this object). Then unmaps and closes. *seg must not be used afterwards.
 *
 * Returns TSHM_OK; TSHM_E_INVALID if this thread holds the segment's lock
 * (unlock first; nothing was done) or `seg` is not attached; TSHM_E_OS if a
 * lock call failed (the handle is still closed). Must not run concurrently
 * with any other use of `seg`.
 */
static inline int tshm_detach(tshm_segment *seg) {
    if (seg == NULL || seg->base == NULL) {
        return TSHM_E_INVALID;
    }
    if (atomic_load_explicit(tshm__a64(seg, TSHM__OFF_HOLDER), memory_order_relaxed) == tshm__token()) {
        return TSHM_E_INVALID;
    }
    int rc = TSHM_OK;
    int saved = 0;
    if (tshm__ofd(seg->fd, F_UNLCK, 0, 0) < 0) {
        rc = TSHM_E_OS;
        saved = errno;
    } else {
        int last = tshm__ofd(seg->fd, F_WRLCK, 0, 1);
        if (last < 0) {
            rc = TSHM_E_OS;
            saved = errno;
        } else if (last) {
            atomic_store_explicit(tshm__a32(seg, TSHM__OFF_STATE), TSHM__STATE_DESTROYED, memory_order_release);
            if (tshm__name_refers_to(seg->native_key, seg->dev, seg->ino)) {
                shm_unlink(seg->native_key);
            }
        }
    }
    munmap(seg->base, seg->map_len);
    close(seg->fd);
    seg->base = NULL;
    seg->data = NULL;
    seg->fd = -1;
    if (rc != TSHM_OK) {
        errno = saved;
    }
    return rc;
}

/**
 * Live attachments to the segment, in every process and language, this one
 * included (counted by the kernel's locks on the attachment slots, so a
 * killed process is never counted). Returns the count (>= 1), or
 * TSHM_E_OS / TSHM_E_RESOURCES. Thread-safe.
 */
static inline long tshm_attach_count(const tshm_segment *seg) {
    /* Each query finds one lock held by another description in a range (any
     * one) or proves the range free; the parts on either side of a found
     * lock are searched again. */
    long count = 0;
    size_t n = 0, cap = 16;
    long (*ranges)[2] = malloc(cap * sizeof *ranges);
    if (ranges == NULL) {
        return TSHM_E_RESOURCES;
    }
    ranges[n][0] = TSHM__SLOT_BASE;
    ranges[n][1] = TSHM__SLOT_BASE + TSHM__MAX_SLOTS;
    n++;
    while (n > 0) {
        n--;
        long start = ranges[n][0], end = ranges[n][1];
        if (start >= end) {
            continue;
        }
        struct flock fl;
        memset(&fl, 0, sizeof fl);
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        fl.l_start = start;
        fl.l_len = end - start;
        if (fcntl(seg->fd, F_OFD_GETLK, &fl) != 0) {
            free(ranges);
            return TSHM_E_OS;
        }
        if (fl.l_type == F_UNLCK) {
            continue;
        }
        count++;
        long at = (long)fl.l_start;
        long at_end = fl.l_len == 0 ? end : at + (long)fl.l_len;
        if (n + 2 > cap) {
            long (*more)[2] = realloc(ranges, 2 * cap * sizeof *ranges);
            if (more == NULL) {
                free(ranges);
                return TSHM_E_RESOURCES;
            }
            ranges = more;
            cap *= 2;
        }
        ranges[n][0] = start;
        ranges[n][1] = at > start ? at : start;
        n++;
        ranges[n][0] = at_end > start ? at_end : start;
        ranges[n][1] = end;
        n++;
    }
    free(ranges);
    return count + 1;
}

/* ------------------------------------------------------------------------- */
/* Facts                                                                     */

/** Bytes of data (one buffer): the element size times tshm_len(). */
static inline size_t tshm_size(const tshm_segment *seg) { return seg->data_len; }

/** Elements: 1 for a single value, else the slice length. */
static inline size_t tshm_len(const tshm_segment *seg) { return seg->elem_count; }

/** Non-zero for a transactional segment (SPEC §8). */
static inline int tshm_is_transactional(const tshm_segment *seg) { return seg->transactional; }

/** Commits so far, in every process (SPEC §6, §8). Thread-safe. */
static inline uint64_t tshm_version(const tshm_segment *seg) {
    _Atomic uint64_t *seq = tshm__a64(seg, TSHM__OFF_SEQ);
    if (seg->transactional) {
        /* The commits snapshots can see: the count, less one counted by a
         * publish that has not made the word even yet (its parity then
         * differs from the committed buffer's bit), read between two equal
         * loads of the word (SPEC §8). */
        for (;;) {
            uint64_t s = atomic_load_explicit(seq, memory_order_acquire);
            uint64_t n = atomic_load_explicit(tshm__a64(seg, TSHM__OFF_TXN_COMMITS), memory_order_acquire);
            if (atomic_load_explicit(seq, memory_order_relaxed) == s) {
                /* n > 0 unless the header was written by something else. */
                return n - (n > 0 && (n & 1) != ((s >> 1) & 1));
            }
        }
    }
    /* The word's count: neither a write in progress nor the poison bit
     * counts (SPEC §6). */
    return atomic_load_explicit(seq, memory_order_acquire) / TSHM__SEQ_COMMIT;
}

/* The committed buffer of a transactional segment as of sequence word s. */
static inline unsigned char *tshm__committed(const tshm_segment *seg, uint64_t s) {
    return ((s >> 1) & 1) ? seg->data + seg->stride : seg->data;
}

/**
 * The data: for a plain segment, its only buffer; for a transactional one,
 * the committed buffer (read it only; write through tshm_commit_txn). Valid to
 * dereference only while the calling thread holds the lock (use
 * tshm_snapshot() otherwise); the pointer is page-aligned. Read-only handles
 * must not write through it (the data is mapped PROT_READ: SIGSEGV).
 */
static inline void *tshm_data(const tshm_segment *seg) {
    if (seg->transactional) {
        return tshm__committed(seg, atomic_load_explicit(tshm__a64(seg, TSHM__OFF_SEQ), memory_order_acquire));
    }
    return seg->data;
}

/** What the lock word says: non-zero if its owner died without unlocking. */
static inline int tshm__owner_died(const tshm_segment *seg) {
    return (atomic_load_explicit(tshm__a32(seg, TSHM__OFF_MUTEX), memory_order_acquire) & FUTEX_OWNER_DIED) != 0;
}

/** Non-zero if the segment is poisoned: the sticky flag, or (not
 *  transactional) a holder that died and whose death no locker has seen yet.
 *  Thread-safe. */
static inline int tshm_is_poisoned(const tshm_segment *seg) {
    return atomic_load_explicit(tshm__a32(seg, TSHM__OFF_POISONED), memory_order_relaxed) != 0 ||
           (!seg->transactional && tshm__owner_died(seg));
}

/* ------------------------------------------------------------------------- */
/* The lock                                                                  */

static inline void tshm__wake_waiters(tshm_segment *seg) {
    /* The committer stores seq, then reads waiters; a waiter increments
     * waiters, then reads seq: a full fence on each side. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(tshm__a32(seg, TSHM__OFF_WAITERS), memory_order_relaxed) != 0) {
        syscall(SYS_futex, tshm__seq_futex(seg), FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
    }
}

/* Plain segments, by the lock's holder: sets the sticky poison flag and the
 * sequence word's poison bit. If the word has the write bit (the holder, or
 * a dead one, began a write), that write is counted as a commit first (+3:
 * the write bit clear, one commit more), so that readers stop waiting for it
 * and report the poison instead (SPEC §4, §6). Release: a reader that sees
 * the new word sees every data store before it. Only the holder stores the
 * word of a plain segment, so a load and a store suffice. The caller wakes
 * the waiters. */
static inline void tshm__poison_held(tshm_segment *seg) {
    _Atomic uint64_t *seq = tshm__a64(seg, TSHM__OFF_SEQ);
    atomic_store_explicit(tshm__a32(seg, TSHM__OFF_POISONED), 1, memory_order_relaxed);
    uint64_t s = atomic_load_explicit(seq, memory_order_relaxed);
    uint64_t next = (s & TSHM__SEQ_WRITING) ? s + (TSHM__SEQ_COMMIT - TSHM__SEQ_WRITING) : s;
    atomic_store_explicit(seq, next | TSHM__SEQ_POISONED, memory_order_release);
}

/* The first locker after a holder died (SPEC §4, §8). */
static inline void tshm__after_owner_died(tshm_segment *seg) {
    _Atomic uint64_t *seq = tshm__a64(seg, TSHM__OFF_SEQ);
    uint64_t s = atomic_load_explicit(seq, memory_order_relaxed);
    if (seg->transactional) {
        /* No poison: the committed buffer was never written. A publish that
         * already counted its commit (the count's parity differs from the
         * committed buffer's bit) had copied it whole: complete it. Any
         * other unfinished publish moves on to the same committed buffer,
         * never back. */
        if (s & 1) {
            uint64_t commits = atomic_load_explicit(tshm__a64(seg, TSHM__OFF_TXN_COMMITS), memory_order_acquire);
            if ((commits & 1) != ((s >> 1) & 1)) {
                atomic_store_explicit(seq, s + 1, memory_order_release);
                tshm__wake_waiters(seg);
            } else {
                atomic_store_explicit(seq, s + 3, memory_order_release);
            }
        }
        return;
    }
    /* Poison; a write the dead holder left unfinished (an odd word) is
     * counted with the data as it stands. */
    tshm__poison_held(seg);
    tshm__wake_waiters(seg);
}

static inline int tshm__acquired(tshm_segment *seg, int rc, uint64_t me) {
    int died = 0;
    if (rc == EOWNERDEAD) {
        if (pthread_mutex_consistent(tshm__mutex(seg)) != 0) {
            /* Unlocking it inconsistent would make it unusable for every
             * process: stop here instead. */
            fprintf(stderr, "typed_shm.h: pthread_mutex_consistent failed on the lock of segment %s; aborting\n",
                    seg->native_key);
            abort();
        }
        died = 1;
    } else if (rc == EBUSY) {
        return TSHM_E_BUSY;
    } else if (rc == ETIMEDOUT) {
        return TSHM_E_TIMED_OUT;
    } else if (rc != 0) {
        errno = rc;
        return TSHM_E_OS;
    }
    atomic_store_explicit(tshm__a64(seg, TSHM__OFF_HOLDER), me, memory_order_relaxed);
    seg->writing = 0;
    if (died) {
        tshm__after_owner_died(seg);
        return seg->transactional ? TSHM_OK : TSHM_POISONED;
    }
    return atomic_load_explicit(tshm__a32(seg, TSHM__OFF_POISONED), memory_order_relaxed) ? TSHM_POISONED : TSHM_OK;
}

/**
 * Takes the segment's lock, waiting at most `timeout_ms` milliseconds
 * (measured on CLOCK_MONOTONIC), or without limit if `timeout_ms` < 0.
 *
 * Returns TSHM_OK (held), TSHM_POISONED (held; the data may be half-written:
 * a holder died, or abandoned a write, and the poison was not cleared —
 * the first locker after a death also repairs the sequence word, SPEC §4),
 * or, not held: TSHM_E_TIMED_OUT, TSHM_E_DEADLOCK (this thread holds it
 * already), TSHM_E_OS. In a transactional segment a dead holder's changes
 * are discarded (unless it died after counting a commit whose copy was
 * whole, which is then completed, SPEC §8) and the lock is not poisoned by
 * its death.
 *
 * While held, tshm_data() may be read; to write a plain segment call
 * tshm_begin_write() before the first store, then tshm_unlock(seg, 1); to
 * write a transactional one, tshm_commit_txn(). The same thread must
 * release it, and must not end before it does (see the top of this file).
 */
static inline int tshm_lock(tshm_segment *seg, long timeout_ms) {
    uint64_t me = tshm__token();
    if (atomic_load_explicit(tshm__a64(seg, TSHM__OFF_HOLDER), memory_order_relaxed) == me) {
        return TSHM_E_DEADLOCK;
    }
    int rc;
    if (timeout_ms < 0) {
        rc = pthread_mutex_lock(tshm__mutex(seg));
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += (time_t)(timeout_ms / 1000);
        ts.tv_nsec += (timeout_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_nsec -= 1000000000L;
            ts.tv_sec += 1;
        }
        rc = pthread_mutex_clocklock(tshm__mutex(seg), CLOCK_MONOTONIC, &ts);
    }
    return tshm__acquired(seg, rc, me);
}

/**
 * Takes the lock if it is free. Returns TSHM_OK or TSHM_POISONED (held, as
 * for tshm_lock), TSHM_E_BUSY (held by another thread, or by this one), or
 * TSHM_E_OS.
 */
static inline int tshm_trylock(tshm_segment *seg) {
    uint64_t me = tshm__token();
    if (atomic_load_explicit(tshm__a64(seg, TSHM__OFF_HOLDER), memory_order_relaxed) == me) {
        return TSHM_E_BUSY;
    }
    return tshm__acquired(seg, pthread_mutex_trylock(tshm__mutex(seg)), me);
}

static inline int tshm__held_here(const tshm_segment *seg) {
    return atomic_load_explicit(tshm__a64(seg, TSHM__OFF_HOLDER), memory_order_relaxed) == tshm__token();
}

/**
 * Plain segments: marks the start of a write, before the first store into
 * tshm_data() (the sequence word gets its write bit and becomes odd, then a
 * release fence), so that snapshot readers never take a half-written copy.
 * The lock must be held through a writable handle. Calling it again is
 * harmless.
 *
 * Returns TSHM_OK, or TSHM_E_INVALID (lock not held by this thread, a
 * read-only handle, or a transactional segment: use tshm_commit_txn).
 */
static inline int tshm_begin_write(tshm_segment *seg) {
    if (seg->read_only || seg->transactional || !tshm__held_here(seg)) {
        return TSHM_E_INVALID;
    }
    _Atomic uint64_t *seq = tshm__a64(seg, TSHM__OFF_SEQ);
    uint64_t s = atomic_load_explicit(seq, memory_order_relaxed);
    atomic_store_explicit(seq, s | TSHM__SEQ_WRITING, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    seg->writing = 1;
    return TSHM_OK;
}

static inline void tshm__unlock_raw(tshm_segment *seg) {
    atomic_store_explicit(tshm__a64(seg, TSHM__OFF_HOLDER), 0, memory_order_relaxed);
    seg->writing = 0;
    int rc = pthread_mutex_unlock(tshm__mutex(seg));
    if (rc != 0) {
        /* The lock is not in the state this process relies on: going on
         * could give the data to two holders at once. */
        fprintf(stderr, "typed_shm.h: pthread_mutex_unlock failed on the lock of segment %s (%s); aborting\n",
                seg->native_key, strerror(rc));
        abort();
    }
}

/**
 * Releases the lock taken by this thread.
 *
 * Plain segments: if a write was begun (tshm_begin_write) or `wrote` is
 * non-zero, this is a commit: the version advances by one in every process
 * (the sequence word loses its write bit and counts one commit more, keeping
 * its poison bit: + 3, release), and waiters are woken after the unlock (a
 * system call only if someone waits). `wrote` without
 * tshm_begin_write still commits, but snapshot readers may then have copied
 * the data half-written: always call tshm_begin_write before storing.
 *
 * Transactional segments: releases without changing anything (the
 * changes of a transactional write go through tshm_commit_txn); `wrote`
 * must be 0.
 *
 * Returns TSHM_OK; TSHM_E_INVALID if this thread does not hold the lock
 * (nothing done), or if `wrote` is non-zero on a transactional segment (the
 * lock is released, nothing committed).
 */
static inline int tshm_unlock(tshm_segment *seg, int wrote) {
    if (!tshm__held_here(seg)) {
        return TSHM_E_INVALID;
    }
    if (seg->transactional) {
        tshm__unlock_raw(seg);
        return wrote ? TSHM_E_INVALID : TSHM_OK;
    }
    int commit = seg->writing || (wrote && !seg->read_only);
    if (commit) {
        _Atomic uint64_t *seq = tshm__a64(seg, TSHM__OFF_SEQ);
        uint64_t s = atomic_load_explicit(seq, memory_order_relaxed);
        if ((s & TSHM__SEQ_WRITING) == 0) {
            atomic_store_explicit(seq, s | TSHM__SEQ_WRITING, memory_order_relaxed);
            atomic_thread_fence(memory_order_release);
            s |= TSHM__SEQ_WRITING;
        }
        /* From 4c + 1 to 4(c + 1), or, poisoned, from 4c + 3 to 4(c + 1) + 2.
         * Release: a reader that sees the new word sees every data store. */
        atomic_store_explicit(seq, s + (TSHM__SEQ_COMMIT - TSHM__SEQ_WRITING), memory_order_release);
    }
    tshm__unlock_raw(seg);
    if (commit) {
        tshm__wake_waiters(seg);
    }
    return TSHM_OK;
}

/* Clears the poison; the caller holds the lock, or the segment is
 * transactional (never poisoned: only the sticky flag is stored, and its
 * word, whose bit 1 names the committed buffer, is left alone). */
static inline void tshm__clear_poison_held(tshm_segment *seg) {
    atomic_store_explicit(tshm__a32(seg, TSHM__OFF_POISONED), 0, memory_order_relaxed);
    if (seg->transactional) {
        return;
    }
    _Atomic uint64_t *seq = tshm__a64(seg, TSHM__OFF_SEQ);
    uint64_t s = atomic_load_explicit(seq, memory_order_relaxed);
    if (s & TSHM__SEQ_POISONED) {
        /* Release, as a commit: a reader that sees the clean word sees the
         * repairs made under the lock before it. */
        atomic_store_explicit(seq, s & ~TSHM__SEQ_POISONED, memory_order_release);
        tshm__wake_waiters(seg);
    }
}

/**
 * Clears the poison, for every process: the sticky flag, and in a plain
 * segment the sequence word's poison bit, which snapshots read (SPEC §4).
 * Call it once the data is repaired.
 *
 * The poison is cleared under the lock (a committer stores the sequence
 * word with a plain load and store, which would bring back a bit cleared
 * meanwhile): called by the thread that holds the lock, it clears at once;
 * otherwise it takes the lock, waiting without limit for its holder (a
 * poisoned acquisition counts, and so does one after a dead holder), clears,
 * and releases it without a commit. A transactional segment is never
 * poisoned: its flag is cleared without the lock.
 *
 * Returns TSHM_OK, or TSHM_E_OS if the lock could not be taken (nothing
 * done; errno says why). Thread-safe.
 */
static inline int tshm_clear_poison(tshm_segment *seg) {
    if (seg->transactional || tshm__held_here(seg)) {
        tshm__clear_poison_held(seg);
        return TSHM_OK;
    }
    int rc = tshm_lock(seg, -1);
    if (rc < 0) {
        return rc;
    }
    tshm__clear_poison_held(seg);
    tshm__unlock_raw(seg);
    return TSHM_OK;
}

/* Copies len bytes from shared memory (8-aligned) with atomic loads. */
static inline void tshm__copy_from_shared(void *dst, const unsigned char *src, size_t len) {
    unsigned char *d = (unsigned char *)dst;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t v = atomic_load_explicit((_Atomic uint64_t *)(void *)(src + i), memory_order_relaxed);
        memcpy(d + i, &v, 8);
    }
    if (i + 4 <= len) {
        uint32_t v = atomic_load_explicit((_Atomic uint32_t *)(void *)(src + i), memory_order_relaxed);
        memcpy(d + i, &v, 4);
        i += 4;
    }
    if (i + 2 <= len) {
        uint16_t v = atomic_load_explicit((_Atomic uint16_t *)(void *)(src + i), memory_order_relaxed);
        memcpy(d + i, &v, 2);
        i += 2;
    }
    if (i < len) {
        d[i] = atomic_load_explicit((_Atomic uint8_t *)(void *)(src + i), memory_order_relaxed);
    }
}

/* Copies len bytes into shared memory (8-aligned) with atomic stores. */
static inline void tshm__copy_to_shared(unsigned char *dst, const void *src, size_t len) {
    const unsigned char *s = (const unsigned char *)src;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t v;
        memcpy(&v, s + i, 8);
        atomic_store_explicit((_Atomic uint64_t *)(void *)(dst + i), v, memory_order_relaxed);
    }
    if (i + 4 <= len) {
        uint32_t v;
        memcpy(&v, s + i, 4);
        atomic_store_explicit((_Atomic uint32_t *)(void *)(dst + i), v, memory_order_relaxed);
        i += 4;
    }
    if (i + 2 <= len) {
        uint16_t v;
        memcpy(&v, s + i, 2);
        atomic_store_explicit((_Atomic uint16_t *)(void *)(dst + i), v, memory_order_relaxed);
        i += 2;
    }
    if (i < len) {
        atomic_store_explicit((_Atomic uint8_t *)(void *)(dst + i), s[i], memory_order_relaxed);
    }
}

/**
 * Transactional segments: publishes `new_data` (tshm_size() bytes, not in
 * the segment) as the next commit, then releases the lock (SPEC §8): the
 * data is copied with atomic stores into the buffer that is not committed,
 * the commit count advances, the sequence word names that buffer (release),
 * the lock is released, and waiters are woken. Readers see either the
 * previous commit or this one, whole; a process that dies in the middle
 * leaves the previous commit in place.
 *
 * To discard instead, call tshm_unlock(seg, 0).
 *
 * Returns TSHM_OK; TSHM_E_INVALID (nothing done: lock not held by this
 * thread, a plain segment, a read-only handle, or `new_data` NULL).
 */
static inline int tshm_commit_txn(tshm_segment *seg, const void *new_data) {
    if (!seg->transactional || seg->read_only || new_data == NULL || !tshm__held_here(seg)) {
        return TSHM_E_INVALID;
    }
    _Atomic uint64_t *seq = tshm__a64(seg, TSHM__OFF_SEQ);
    _Atomic uint64_t *commits = tshm__a64(seg, TSHM__OFF_TXN_COMMITS);
    uint64_t s = atomic_load_explicit(seq, memory_order_relaxed);
    unsigned char *target = ((s >> 1) & 1) ? seg->data : seg->data + seg->stride;
    atomic_store_explicit(seq, s | 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    tshm__copy_to_shared(target, new_data, seg->data_len);
    /* Release: a locker that finds this process dead before the next store
     * and sees the count sees the whole copy, and completes the commit. */
    atomic_store_explicit(commits, atomic_load_explicit(commits, memory_order_relaxed) + 1, memory_order_release);
    atomic_store_explicit(seq, (s | 1) + 1, memory_order_release);
    tshm__unlock_raw(seg);
    tshm__wake_waiters(seg);
    return TSHM_OK;
}

/* ------------------------------------------------------------------------- */
/* Reading without the lock                                                  */

/* Waits before the next look at a write in progress: spins, yields, then
 * sleeps up to 1 ms (never past the deadline). */
static inline void tshm__back_off(unsigned round, int64_t deadline) {
    if (round < 32) {
        atomic_signal_fence(memory_order_seq_cst);
    } else if (round < 48) {
        sched_yield();
    } else {
        unsigned shift = round - 48 < 10 ? round - 48 : 10;
        int64_t nap = (int64_t)1000 << shift;
        if (nap > 1000000) {
            nap = 1000000;
        }
        if (deadline >= 0) {
            int64_t left = deadline - tshm__now_ns();
            if (left < nap) {
                nap = left;
            }
        }
        tshm__sleep_ns(nap);
    }
}

/**
 * Copies the data (tshm_size() bytes) into `out`, consistently — all from one
 * commit — without taking the lock and without writing to the segment (SPEC
 * §6, §8). While a writer is in the middle of a commit of a plain segment it
 * retries, then sleeps (at most 1 ms between looks), for at most
 * `timeout_ms` milliseconds (< 0: no limit; 0: one attempt). A transactional
 * segment's snapshot never waits for a writer.
 *
 * Returns TSHM_OK (a clean copy), TSHM_POISONED (the segment is poisoned;
 * `out` holds the data as it stands — a writer killed mid-write is reported
 * this way at once), TSHM_E_TIMED_OUT (`out` may be partly written), or,
 * at once, TSHM_E_DEADLOCK if the write in progress is this thread's own
 * (it holds the lock: the write cannot end while it waits).
 * Thread-safe; works on read-only handles.
 */
static inline int tshm_snapshot(const tshm_segment *seg, void *out, long timeout_ms) {
    _Atomic uint64_t *seq = tshm__a64(seg, TSHM__OFF_SEQ);
    int64_t deadline = tshm__deadline(timeout_ms);
    for (unsigned round = 0;; round++) {
        uint64_t before = atomic_load_explicit(seq, memory_order_acquire);
        if (seg->transactional) {
            uint64_t committed = before & ~(uint64_t)1;
            tshm__copy_from_shared(out, tshm__committed(seg, committed), seg->data_len);
            atomic_thread_fence(memory_order_acquire);
            /* The buffer just read is written again only by the commit after
             * next, which makes the word committed + 3 or more. */
            if (atomic_load_explicit(seq, memory_order_relaxed) < committed + 3) {
                /* A transactional segment is never poisoned (SPEC §8). */
                return TSHM_OK;
            }
        } else if ((before & TSHM__SEQ_WRITING) == 0) {
            tshm__copy_from_shared(out, seg->data, seg->data_len);
            atomic_thread_fence(memory_order_acquire);
            if (atomic_load_explicit(seq, memory_order_relaxed) == before) {
                /* The word that framed the copy says whether it is poisoned. */
                return (before & TSHM__SEQ_POISONED) ? TSHM_POISONED : TSHM_OK;
            }
        } else if (tshm__owner_died(seg)) {
            /* The writer died mid-write: the data as it stands. */
            tshm__copy_from_shared(out, seg->data, seg->data_len);
            return TSHM_POISONED;
        } else if (tshm__held_here(seg)) {
            /* The write in progress is this thread's own: it cannot end
             * while this thread waits. */
            return TSHM_E_DEADLOCK;
        }
        if (deadline >= 0 && tshm__now_ns() >= deadline) {
            return TSHM_E_TIMED_OUT;
        }
        tshm__back_off(round > 1000 ? 1000 : round, deadline);
    }
}

/**
 * Waits until the version differs from `since` (SPEC §6): registers as a
 * waiter and sleeps on the sequence word (a shared futex), woken by the
 * committing process, in slices of at most 20 ms (a writer killed
 * mid-write wakes nobody; its death is then noticed within a slice).
 * `timeout_ms` < 0 waits without limit.
 *
 * Returns TSHM_OK with the new version in *new_version (if not NULL);
 * TSHM_POISONED if the segment is or becomes poisoned (*new_version: the
 * version as it is), so that the caller's next snapshot or lock reports it;
 * TSHM_E_TIMED_OUT if nothing changed within `timeout_ms`; TSHM_E_DEADLOCK,
 * at once, if it would wait while this thread holds the lock (nobody else
 * can commit until it lets go). Thread-safe.
 */
static inline int tshm_wait_for_change(const tshm_segment *seg, uint64_t since, long timeout_ms,
                                       uint64_t *new_version) {
    _Atomic uint64_t *seq = tshm__a64(seg, TSHM__OFF_SEQ);
    _Atomic uint32_t *waiters = tshm__a32(seg, TSHM__OFF_WAITERS);
    int64_t deadline = tshm__deadline(timeout_ms);
    for (;;) {
        uint64_t seen = atomic_load_explicit(seq, memory_order_acquire);
        uint64_t version = tshm_version(seg);
        int dead_writer = !seg->transactional && (seen & TSHM__SEQ_WRITING) && tshm__owner_died(seg);
        int poisoned = dead_writer || tshm_is_poisoned(seg);
        if (version != since || poisoned) {
            if (new_version != NULL) {
                *new_version = version;
            }
            return poisoned ? TSHM_POISONED : TSHM_OK;
        }
        if (tshm__held_here(seg)) {
            return TSHM_E_DEADLOCK;
        }
        int64_t slice = (int64_t)TSHM__WAIT_SLICE_MS * 1000000;
        if (deadline >= 0) {
            int64_t left = deadline - tshm__now_ns();
            if (left <= 0) {
                return TSHM_E_TIMED_OUT;
            }
            if (left < slice) {
                slice = left;
            }
        }
        /* Register, then look again: a committer that stored the new word
         * before the increment is seen by the second load; one that stores
         * it after sees the count and wakes us. */
        atomic_fetch_add_explicit(waiters, 1, memory_order_seq_cst);
        if (atomic_load_explicit(seq, memory_order_seq_cst) == seen) {
            struct timespec ts = {(time_t)(slice / 1000000000), (long)(slice % 1000000000)};
            syscall(SYS_futex, tshm__seq_futex(seg), FUTEX_WAIT, (uint32_t)seen, &ts, NULL, 0);
        }
        atomic_fetch_sub_explicit(waiters, 1, memory_order_seq_cst);
    }
}

#endif /* TYPED_SHM_H */

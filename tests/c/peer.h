/* Helpers shared by the C peers of tests/c_interop.rs: each peer prints one
 * line per step on stdout and reads its cues, one per line, from stdin. */
#ifndef PEER_H
#define PEER_H

#include "typed_shm.h"

#include <inttypes.h>
#include <stdarg.h>

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* Waits for the cue `what` on stdin; exits if stdin ends or says another. */
static __attribute__((unused)) void hear(const char *what) {
    char line[128];
    if (fgets(line, sizeof line, stdin) == NULL) {
        fprintf(stderr, "peer: stdin ended while waiting for %s\n", what);
        exit(2);
    }
    line[strcspn(line, "\n")] = '\0';
    if (strcmp(line, what) != 0) {
        fprintf(stderr, "peer: heard %s, expected %s\n", line, what);
        exit(2);
    }
}

static __attribute__((unused)) void check(int ok, const char *what) {
    if (!ok) {
        say("FAILED %s", what);
        exit(1);
    }
}

static __attribute__((unused)) const char *rc_name(int rc) {
    switch (rc) {
    case TSHM_OK: return "OK";
    case TSHM_POISONED: return "POISONED";
    case TSHM_E_NOT_FOUND: return "NOT_FOUND";
    case TSHM_E_CORRUPTED: return "CORRUPTED";
    case TSHM_E_VERSION: return "VERSION";
    case TSHM_E_LAYOUT: return "LAYOUT";
    case TSHM_E_PID_NAMESPACE: return "PID_NAMESPACE";
    case TSHM_E_TIMED_OUT: return "TIMED_OUT";
    case TSHM_E_PERMISSION: return "PERMISSION";
    case TSHM_E_KEY: return "KEY";
    case TSHM_E_BUSY: return "BUSY";
    case TSHM_E_DEADLOCK: return "DEADLOCK";
    case TSHM_E_INVALID: return "INVALID";
    case TSHM_E_RESOURCES: return "RESOURCES";
    case TSHM_E_OS: return "OS";
    default: return "?";
    }
}

static __attribute__((unused)) uint64_t arg_u64(const char *s) { return strtoull(s, NULL, 0); }

#endif

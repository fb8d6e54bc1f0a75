/* Works on a segment of 16 u64 words (the Rust type [u64; 16]) that every
 * commit sets to one value. Usage: row_peer KEY FINGERPRINT MODE [ARG]
 *
 * mix MS      snapshots for MS ms, checking that no copy mixes two commits,
 *             then waits for the next commit (cue: none; the parent commits)
 * txn MS      commits rows (each one more) through tshm_commit_txn for MS ms
 * held        transactional: snapshots while the Rust side holds a write guard
 * hold        locks, half-writes a row, and waits to be killed
 * txn-hold    transactional: locks, and waits to be killed
 * poisoned    after a holder was killed: reports what it sees, recovers
 * clear       at the cue, clears the poison while the Rust side holds the
 *             lock: says "clearing" just before, "cleared ..." after */
#include "peer.h"

#define WORDS 16
typedef uint64_t row[WORDS];

static int uniform(const row r) {
    for (int i = 1; i < WORDS; i++) {
        if (r[i] != r[0]) {
            return 0;
        }
    }
    return 1;
}

static void fill(row r, uint64_t v) {
    for (int i = 0; i < WORDS; i++) {
        r[i] = v;
    }
}

static int mix(tshm_segment *seg, long ms) {
    say("ready");
    hear("go");
    int64_t end = tshm__now_ns() + (int64_t)ms * 1000000;
    uint64_t n = 0, changes = 0, last = 0, last_version = 0;
    row r;
    while (tshm__now_ns() < end) {
        uint64_t version = tshm_version(seg);
        int rc = tshm_snapshot(seg, r, 5000);
        check(rc == TSHM_OK, "a clean snapshot");
        if (!uniform(r)) {
            say("MIXED %" PRIu64 " %" PRIu64, r[0], r[WORDS - 1]);
            return 1;
        }
        check(version >= last_version, "versions never go back");
        check(r[0] >= last, "values never go back");
        changes += r[0] != last;
        last = r[0];
        last_version = version;
        n++;
    }
    say("snapshots %" PRIu64 " changes %" PRIu64, n, changes);
    hear("wait");
    uint64_t since = tshm_version(seg), now = 0;
    say("waiting %" PRIu64, since);
    int rc = tshm_wait_for_change(seg, since, 20000, &now);
    tshm_snapshot(seg, r, 1000);
    say("woken %s %" PRIu64 " value %" PRIu64, rc_name(rc), now, r[0]);
    return 0;
}

static int txn(tshm_segment *seg, long ms) {
    check(tshm_is_transactional(seg), "a transactional segment");
    say("ready");
    hear("go");
    int64_t end = tshm__now_ns() + (int64_t)ms * 1000000;
    uint64_t n = 0;
    while (tshm__now_ns() < end) {
        check(tshm_lock(seg, 5000) == TSHM_OK, "lock");
        const uint64_t *committed = tshm_data(seg);
        row next;
        fill(next, committed[0] + 1);
        check(tshm_begin_write(seg) == TSHM_E_INVALID, "begin_write is refused on a transactional segment");
        check(tshm_commit_txn(seg, next) == TSHM_OK, "commit_txn");
        n++;
    }
    say("committed %" PRIu64 " version %" PRIu64, n, tshm_version(seg));
    return 0;
}

static int held(tshm_segment *seg) {
    say("ready");
    hear("go"); /* the Rust side holds a write guard with uncommitted changes */
    row r;
    int64_t t = tshm__now_ns();
    int rc = 0;
    for (int i = 0; i < 1000; i++) {
        rc = tshm_snapshot(seg, r, 0); /* timeout 0: one attempt, no waiting */
        if (rc != TSHM_OK) {
            break;
        }
    }
    int64_t us = (tshm__now_ns() - t) / 1000;
    say("snapshot %s %" PRIu64 " %" PRIu64 " uniform %d us %" PRId64, rc_name(rc), r[0], r[WORDS - 1], uniform(r), us);
    say("trylock %s", rc_name(tshm_trylock(seg)));
    hear("again"); /* the guard was dropped: committed */
    rc = tshm_snapshot(seg, r, 0);
    say("snapshot %s %" PRIu64 " version %" PRIu64, rc_name(rc), r[0], tshm_version(seg));
    return 0;
}

static _Noreturn void hold(tshm_segment *seg) {
    check(tshm_lock(seg, 5000) == TSHM_OK, "lock");
    uint64_t *d = tshm_data(seg);
    check(tshm_begin_write(seg) == TSHM_OK, "begin_write");
    for (int i = 0; i < WORDS / 2; i++) {
        d[i] = 99;
    }
    say("holding");
    for (;;) {
        pause();
    }
}

static _Noreturn void txn_hold(tshm_segment *seg) {
    check(tshm_lock(seg, 5000) == TSHM_OK, "lock");
    say("holding");
    for (;;) {
        pause();
    }
}

static int poisoned(tshm_segment *seg) {
    row r;
    uint64_t v = 0;
    int snap = tshm_snapshot(seg, r, 1000);
    int wait = tshm_wait_for_change(seg, tshm_version(seg), 1000, &v);
    int lock = tshm_lock(seg, 5000);
    check(lock >= 0, "lock");
    say("poisoned snapshot %s %" PRIu64 " %" PRIu64 " wait %s lock %s is_poisoned %d", rc_name(snap), r[0],
        r[WORDS - 1], rc_name(wait), rc_name(lock), tshm_is_poisoned(seg));
    /* Repair, clear, commit. */
    uint64_t *d = tshm_data(seg);
    check(tshm_begin_write(seg) == TSHM_OK, "begin_write");
    for (int i = 0; i < WORDS; i++) {
        d[i] = 5;
    }
    check(tshm_clear_poison(seg) == TSHM_OK, "clear_poison");
    check(tshm_unlock(seg, 1) == TSHM_OK, "unlock");
    int again = tshm_lock(seg, 5000);
    tshm_unlock(seg, 0);
    snap = tshm_snapshot(seg, r, 1000);
    say("recovered lock %s snapshot %s %" PRIu64, rc_name(again), rc_name(snap), r[0]);
    return 0;
}

/* In the middle of its own write, this thread's snapshot and wait for a
 * change, both without a time limit, are refused at once; the write then
 * commits. */
static int self_wait(tshm_segment *seg) {
    row r;
    uint64_t v = 0, before = tshm_version(seg);
    check(tshm_lock(seg, 5000) == TSHM_OK, "lock");
    check(tshm_begin_write(seg) == TSHM_OK, "begin_write");
    uint64_t *d = tshm_data(seg);
    d[0] = 7;
    int snap = tshm_snapshot(seg, r, -1);
    int wait = tshm_wait_for_change(seg, before, -1, &v);
    for (int i = 1; i < WORDS; i++) {
        d[i] = 7;
    }
    check(tshm_unlock(seg, 1) == TSHM_OK, "unlock");
    int again = tshm_snapshot(seg, r, 1000);
    say("snapshot %s wait %s then %s %" PRIu64 " %" PRIu64 " commits %" PRIu64, rc_name(snap), rc_name(wait),
        rc_name(again), r[0], r[WORDS - 1], tshm_version(seg) - before);
    return 0;
}

/* After a writer was killed having counted a commit it had not made
 * visible yet: the version and a snapshot before this process locks, then
 * after its lock (which completes that commit). */
static int txn_repair(tshm_segment *seg) {
    row r;
    uint64_t before = tshm_version(seg);
    int snap = tshm_snapshot(seg, r, 1000);
    uint64_t seen = r[0];
    int lock = tshm_lock(seg, 5000);
    check(lock >= 0, "lock");
    check(tshm_unlock(seg, 0) == TSHM_OK, "unlock");
    uint64_t after = tshm_version(seg);
    int again = tshm_snapshot(seg, r, 1000);
    say("before %" PRIu64 " %s %" PRIu64 " lock %s after %" PRIu64 " %s %" PRIu64, before, rc_name(snap), seen,
        rc_name(lock), after, rc_name(again), r[0]);
    return 0;
}

static int clear(tshm_segment *seg) {
    say("attached");
    hear("clear");
    say("clearing");
    int rc = tshm_clear_poison(seg);
    say("cleared %s", rc_name(rc));
    row r;
    int snap = tshm_snapshot(seg, r, 1000);
    say("then is_poisoned %d snapshot %s %" PRIu64, tshm_is_poisoned(seg), rc_name(snap), r[0]);
    return 0;
}

int main(int argc, char **argv) {
    check(argc >= 4, "usage: row_peer KEY FINGERPRINT MODE [ARG]");
    tshm_expect want = TSHM_EXPECT(row, arg_u64(argv[2]));
    tshm_segment seg;
    int rc = tshm_attach(argv[1], &want, 0, &seg);
    if (rc != TSHM_OK) {
        say("attach %s: %s", rc_name(rc), tshm_strerror(rc));
        return 1;
    }
    const char *mode = argv[3];
    long arg = argc > 4 ? atol(argv[4]) : 0;
    if (strcmp(mode, "mix") == 0) {
        rc = mix(&seg, arg);
    } else if (strcmp(mode, "txn") == 0) {
        rc = txn(&seg, arg);
    } else if (strcmp(mode, "held") == 0) {
        rc = held(&seg);
    } else if (strcmp(mode, "hold") == 0) {
        hold(&seg);
    } else if (strcmp(mode, "txn-hold") == 0) {
        txn_hold(&seg);
    } else if (strcmp(mode, "poisoned") == 0) {
        rc = poisoned(&seg);
    } else if (strcmp(mode, "self-wait") == 0) {
        rc = self_wait(&seg);
    } else if (strcmp(mode, "txn-repair") == 0) {
        rc = txn_repair(&seg);
    } else if (strcmp(mode, "clear") == 0) {
        rc = clear(&seg);
    } else {
        check(0, "a known mode");
    }
    check(tshm_detach(&seg) == TSHM_OK, "detach");
    return rc;
}

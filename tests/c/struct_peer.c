/* Attaches to a segment holding the Rust struct Pose, checks the values the
 * Rust creator stored, then (on the cue "go") writes new values under the
 * lock and commits. Usage: struct_peer KEY FINGERPRINT SIZE ALIGN */
#include "peer.h"

struct pose {
    uint64_t id;
    double x;
    double y;
    uint8_t tag[8];
    uint32_t counts[4];
};

int main(int argc, char **argv) {
    check(argc == 5, "usage: struct_peer KEY FINGERPRINT SIZE ALIGN");
    tshm_expect want = TSHM_EXPECT(struct pose, arg_u64(argv[2]));
    check(want.elem_size == arg_u64(argv[3]), "sizeof(struct pose) equals the Rust size");
    check(want.elem_align == arg_u64(argv[4]), "_Alignof(struct pose) equals the Rust alignment");
    tshm_segment seg;
    int rc = tshm_attach(argv[1], &want, 0, &seg);
    if (rc != TSHM_OK) {
        say("attach %s: %s", rc_name(rc), tshm_strerror(rc));
        return 1;
    }
    say("attached count=%ld version=%" PRIu64 " size=%zu len=%zu", tshm_attach_count(&seg), tshm_version(&seg),
        tshm_size(&seg), tshm_len(&seg));

    struct pose p;
    rc = tshm_snapshot(&seg, &p, 1000);
    check(rc == TSHM_OK, "snapshot is clean");
    check(p.id == 7 && p.x == 1.5 && p.y == -2.25, "scalar fields");
    check(memcmp(p.tag, "rust\0\0\0\0", 8) == 0, "byte array field");
    check(p.counts[0] == 1 && p.counts[1] == 2 && p.counts[2] == 3 && p.counts[3] == 4, "u32 array field");
    say("seen ok");

    hear("go");
    rc = tshm_lock(&seg, 5000);
    check(rc == TSHM_OK, "lock");
    check(tshm_lock(&seg, 0) == TSHM_E_DEADLOCK, "a relock is refused");
    check(tshm_trylock(&seg) == TSHM_E_BUSY, "a relock by trylock is refused");
    struct pose *d = tshm_data(&seg);
    check(d->id == 7, "the data in place under the lock");
    check(tshm_begin_write(&seg) == TSHM_OK, "begin_write");
    d->id = 8;
    d->x = 3.5;
    d->y = 4.75;
    memcpy(d->tag, "c\0\0\0\0\0\0\0", 8);
    for (int i = 0; i < 4; i++) {
        d->counts[i] = 10u * (uint32_t)(i + 1);
    }
    check(tshm_unlock(&seg, 1) == TSHM_OK, "unlock commits");
    check(tshm_unlock(&seg, 0) == TSHM_E_INVALID, "an unlock without the lock is refused");
    say("committed version=%" PRIu64, tshm_version(&seg));

    hear("detach");
    rc = tshm_detach(&seg);
    say("detached %s", rc_name(rc));
    return rc == TSHM_OK ? 0 : 1;
}

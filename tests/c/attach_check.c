/* Attaches with the given expectation and reports the result; then, while
 * attached, answers the cues "count" (tshm_attach_count) and "detach".
 * Usage: attach_check KEY FINGERPRINT SIZE ALIGN SLICE COUNT [KEY...]
 * With "keys" as the first argument instead, prints the native key of each
 * following argument. */
#include "peer.h"

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "keys") == 0) {
        for (int i = 2; i < argc; i++) {
            char name[TSHM_NATIVE_KEY_MAX];
            int rc = tshm_native_key(argv[i], name, sizeof name);
            say("key %s %s", rc_name(rc), rc == TSHM_OK ? name : "-");
        }
        return 0;
    }
    check(argc == 7, "usage: attach_check KEY FINGERPRINT SIZE ALIGN SLICE COUNT");
    tshm_expect want = {arg_u64(argv[2]), arg_u64(argv[3]), arg_u64(argv[4]), (int)arg_u64(argv[5]),
                        arg_u64(argv[6])};
    tshm_segment seg;
    int rc = tshm_attach(argv[1], &want, 0, &seg);
    say("attach %s desc=%s", rc_name(rc), rc == TSHM_OK || rc == TSHM_E_LAYOUT ? seg.desc : "");
    if (rc != TSHM_OK) {
        return 0;
    }
    say("count %ld", tshm_attach_count(&seg));
    char line[64];
    while (fgets(line, sizeof line, stdin) != NULL) {
        if (strcmp(line, "count\n") == 0) {
            say("count %ld", tshm_attach_count(&seg));
        } else if (strcmp(line, "detach\n") == 0) {
            rc = tshm_detach(&seg);
            say("detached %s", rc_name(rc));
            return 0;
        }
    }
    return 1;
}

/* A whole call through sotto's C API only: Alice creates a room, invites Bob and Carol
 * with their KeyPackages, they join by Welcome, everyone exchanges sealed audio, Bob
 * updates his keys, Alice removes Carol, who then cannot open the next epoch's frames,
 * and Alice and Bob compare safety codes. Then the API's guards: NULL, wrong-kind and
 * misaligned handles, too-small buffers, a consumed identity, a forged frame.
 * Exits 0 on success; prints what failed otherwise. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sotto.h"

static int failures = 0;

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            char msg_[256];                                                \
            size_t n_ = 0;                                                 \
            msg_[0] = 0;                                                   \
            sotto_last_error(msg_, sizeof msg_, &n_);                      \
            fprintf(stderr, "%s:%d: %s failed (last error: %s)\n", __FILE__, \
                    __LINE__, #cond, msg_);                                \
            failures++;                                                    \
            return 1;                                                      \
        }                                                                  \
    } while (0)

#define OK(call) CHECK((call) == SOTTO_OK)

typedef struct {
    SottoRoom *room;
    SottoMedia *media;
} Member;

static uint8_t buf[1 << 16];
static size_t len;

/* Moves every waiting key from the room to the data plane. */
static int apply_keys(Member *m, uint64_t now_ms) {
    for (;;) {
        SottoKeys *keys = NULL;
        SottoStatus s = sotto_room_take_keys(m->room, &keys);
        if (s == SOTTO_EMPTY) return 0;
        CHECK(s == SOTTO_OK);
        OK(sotto_media_apply(m->media, keys, now_ms));
        OK(sotto_keys_free(keys));
    }
}

/* Seals `text` at `from` and opens it at `to`; returns the open status. */
static SottoStatus hear(Member *from, Member *to, const char *text, uint64_t now_ms,
                        uint32_t *leaf) {
    uint8_t sealed[512], opened[512];
    size_t sealed_len = 0, opened_len = 0;
    SottoStatus sealed_status = sotto_media_seal(from->media, 0, (const uint8_t *)text,
                                                 strlen(text), sealed, sizeof sealed,
                                                 &sealed_len, now_ms);
    if (sealed_status != SOTTO_OK) return sealed_status;
    SottoStatus s = sotto_media_open(to->media, sealed, sealed_len, opened, sizeof opened,
                                     &opened_len, leaf, now_ms);
    if (s == SOTTO_OK && (opened_len != strlen(text) || memcmp(opened, text, opened_len)))
        return SOTTO_MEDIA_ERROR;
    return s;
}

static int join(SottoIdentity *id, const uint8_t *welcome, size_t welcome_len, Member *m,
                uint64_t now_ms) {
    OK(sotto_room_join(id, welcome, welcome_len, &m->room));
    OK(sotto_media_new(&m->media));
    return apply_keys(m, now_ms);
}

static int run(void) {
    uint64_t t = 1000;
    SottoIdentity *alice_id = NULL, *bob_id = NULL, *carol_id = NULL;
    OK(sotto_identity_new((const uint8_t *)"alice", 5, &alice_id));
    OK(sotto_identity_new((const uint8_t *)"bob", 3, &bob_id));
    OK(sotto_identity_new((const uint8_t *)"carol", 5, &carol_id));

    Member alice = {0}, bob = {0}, carol = {0};
    OK(sotto_room_create(alice_id, &alice.room));
    OK(sotto_media_new(&alice.media));
    CHECK(apply_keys(&alice, t) == 0);

    /* The KeyPackages, with a size query first. */
    uint8_t bob_kp[4096], carol_kp[4096];
    size_t bob_kp_len = 0, carol_kp_len = 0;
    CHECK(sotto_identity_key_package(bob_id, NULL, 0, &bob_kp_len) == SOTTO_BUFFER_TOO_SMALL);
    CHECK(bob_kp_len > 0 && bob_kp_len <= sizeof bob_kp);
    OK(sotto_identity_key_package(bob_id, bob_kp, sizeof bob_kp, &bob_kp_len));
    OK(sotto_identity_key_package(carol_id, carol_kp, sizeof carol_kp, &carol_kp_len));

    const uint8_t *kps[2] = {bob_kp, carol_kp};
    size_t kp_lens[2] = {bob_kp_len, carol_kp_len};
    OK(sotto_room_invite(alice.room, kps, kp_lens, 2));
    OK(sotto_room_confirm(alice.room));
    CHECK(apply_keys(&alice, t) == 0);
    OK(sotto_room_welcome(alice.room, buf, sizeof buf, &len));
    CHECK(join(bob_id, buf, len, &bob, t) == 0);
    CHECK(join(carol_id, buf, len, &carol, t) == 0);

    /* After the switch delay (1 s) Alice seals in the new epoch. Bob and Carol, who joined
     * by Welcome, only open until their own first commit (a Welcome could be processed
     * twice, so sealing in its epoch could reuse nonces). */
    t += 1500;
    uint32_t leaf = 99;
    CHECK(hear(&alice, &bob, "alice to bob", t, &leaf) == SOTTO_OK && leaf == 0);
    CHECK(hear(&alice, &carol, "alice to carol", t, &leaf) == SOTTO_OK);
    CHECK(hear(&bob, &alice, "too early", t, &leaf) == SOTTO_NO_SENDING_KEY);

    /* Bob, then Carol, update their keys; the others process each commit. */
    Member *everyone[3] = {&alice, &bob, &carol};
    for (int k = 1; k <= 2; k++) {
        Member *m = everyone[k];
        OK(sotto_room_self_update(m->room));
        OK(sotto_room_commit(m->room, buf, sizeof buf, &len));
        OK(sotto_room_confirm(m->room));
        for (int j = 0; j < 3; j++)
            if (j != k) OK(sotto_room_process(everyone[j]->room, buf, len));
        for (int j = 0; j < 3; j++) CHECK(apply_keys(everyone[j], t) == 0);
    }
    t += 1500;
    CHECK(hear(&bob, &carol, "bob to carol", t, &leaf) == SOTTO_OK);
    CHECK(hear(&carol, &alice, "carol to alice", t, &leaf) == SOTTO_OK);
    CHECK(hear(&bob, &alice, "bob to alice", t, &leaf) == SOTTO_OK);

    /* Alice removes Carol. */
    /* Alice finds Carol among the members by her pseudonym (size query first). */
    uint32_t leaves[8], carol_leaf = 99, own = 99;
    size_t count = 0;
    CHECK(sotto_room_members(alice.room, NULL, 0, &count) == SOTTO_BUFFER_TOO_SMALL &&
          count == 3);
    OK(sotto_room_members(alice.room, leaves, 8, &count));
    for (size_t i = 0; i < count; i++) {
        uint8_t name[64];
        size_t name_len = 0;
        OK(sotto_room_member_pseudonym(alice.room, leaves[i], name, sizeof name, &name_len));
        if (name_len == 5 && memcmp(name, "carol", 5) == 0) carol_leaf = leaves[i];
    }
    OK(sotto_room_own_leaf(carol.room, &own));
    CHECK(carol_leaf == own);
    CHECK(sotto_room_member_pseudonym(alice.room, 77, buf, sizeof buf, &len) ==
          SOTTO_NO_SUCH_MEMBER);
    OK(sotto_room_remove(alice.room, carol_leaf));
    OK(sotto_room_commit(alice.room, buf, sizeof buf, &len));
    OK(sotto_room_confirm(alice.room));
    OK(sotto_room_process(bob.room, buf, len));
    OK(sotto_room_process(carol.room, buf, len));
    uint8_t removed = 0;
    OK(sotto_room_is_removed(carol.room, &removed));
    CHECK(removed == 1);
    CHECK(apply_keys(&alice, t) == 0 && apply_keys(&bob, t) == 0 && apply_keys(&carol, t) == 0);
    t += 1500;
    CHECK(hear(&alice, &bob, "without carol", t, &leaf) == SOTTO_OK);
    CHECK(hear(&alice, &carol, "not for carol", t, &leaf) == SOTTO_UNKNOWN_KEY);

    /* Safety codes: Alice and Bob agree. */
    char code_a[64], code_b[64];
    size_t n = 0;
    OK(sotto_room_safety_code(alice.room, code_a, sizeof code_a, &n));
    CHECK(n == 36 && strlen(code_a) == 35);
    OK(sotto_room_safety_code(bob.room, code_b, sizeof code_b, &n));
    CHECK(strcmp(code_a, code_b) == 0);
    uint64_t epoch_a = 0, epoch_b = 0;
    OK(sotto_room_epoch(alice.room, &epoch_a));
    OK(sotto_room_epoch(bob.room, &epoch_b));
    CHECK(epoch_a == epoch_b && epoch_a == 4);
    printf("c api: epoch %llu, safety code %s\n", (unsigned long long)epoch_a, code_a);

    /* The guards. */
    CHECK(sotto_room_epoch(NULL, &epoch_a) == SOTTO_NULL_POINTER);
    CHECK(sotto_room_epoch((SottoRoom *)alice.media, &epoch_a) == SOTTO_WRONG_HANDLE);
    CHECK(sotto_room_epoch((SottoRoom *)((uint8_t *)alice.room + 1), &epoch_a) ==
          SOTTO_MISALIGNED);
    CHECK(sotto_room_create(alice_id, &alice.room) == SOTTO_CONSUMED);
    CHECK(sotto_room_safety_code(alice.room, code_a, 10, &n) == SOTTO_BUFFER_TOO_SMALL &&
          n == 36);
    CHECK(sotto_media_open(bob.media, NULL, 5, buf, sizeof buf, &n, NULL, t) ==
          SOTTO_NULL_POINTER);
    uint8_t sealed[256];
    size_t sealed_len = 0;
    OK(sotto_media_seal(alice.media, 0, (const uint8_t *)"x", 1, sealed, sizeof sealed,
                        &sealed_len, t));
    sealed[sealed_len - 1] ^= 1;
    CHECK(sotto_media_open(bob.media, sealed, sealed_len, buf, sizeof buf, &n, NULL, t) ==
          SOTTO_AUTHENTICATION_FAILED);
    CHECK(sotto_room_process(bob.room, (const uint8_t *)"garbage", 7) != SOTTO_OK);
    /* A misaligned out-parameter, empty input, a used identity's KeyPackage. */
    CHECK(sotto_room_epoch(alice.room, (uint64_t *)((uint8_t *)&epoch_b + 1)) ==
          SOTTO_MISALIGNED);
    CHECK(sotto_media_open(bob.media, sealed, 0, buf, sizeof buf, &n, NULL, t) ==
          SOTTO_INVALID_ARGUMENT);
    CHECK(sotto_identity_key_package(bob_id, buf, sizeof buf, &n) == SOTTO_CONSUMED);
    CHECK(sotto_media_apply(alice.media, (SottoKeys *)alice.media, t) == SOTTO_WRONG_HANDLE);
    CHECK(sotto_abi_version() == 1);
    char message[128];
    OK(sotto_last_error(message, sizeof message, &n));
    CHECK(n > 1);

    OK(sotto_media_free(alice.media));
    OK(sotto_media_free(bob.media));
    OK(sotto_media_free(carol.media));
    OK(sotto_room_free(alice.room));
    OK(sotto_room_free(bob.room));
    OK(sotto_room_free(carol.room));
    OK(sotto_identity_free(alice_id));
    OK(sotto_identity_free(bob_id));
    OK(sotto_identity_free(carol_id));
    OK(sotto_identity_free(NULL));
    return 0;
}

int main(void) {
    int r = run();
    if (r != 0 || failures != 0) {
        fprintf(stderr, "c api: FAILED\n");
        return 1;
    }
    printf("c api: ok\n");
    return 0;
}

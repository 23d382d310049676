/*
 * check_stress.c - several threads doing random create / child / cancel /
 * add / remove / release on a shared pool of tokens, then invariants:
 * every armed callback ran exactly once or was removed, every descendant
 * of a token whose cancel returned true read cancelled at that moment, and
 * no token is left alive.
 *
 * CANCEL_STRESS_SECONDS sets the duration (default 3).  White-box: the
 * pool's tokens all hang under a few anchor roots, so "nothing left alive"
 * is "every anchor has no child and one reference" (a live token keeps its
 * parent alive and linked).
 */
#include "internal.h"
#include "subtree.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>

enum { THREADS = 4, SLOTS = 64, ANCHORS = 4, RECS = 128 };

struct slot {
    pthread_mutex_t mutex;
    cancel_token_t *t;
};

static struct slot slots[SLOTS];
static cancel_token_t *anchors[ANCHORS];
static _Atomic bool stop;

/* Totals, checked at the end. */
static _Atomic long added, removed_before_run, runs, inline_runs, cancels_won;
static _Atomic long violations;
static _Atomic int first_violation; /* line number of the first one */

#define VIOLATION() record_violation(__LINE__)
static void record_violation(int line)
{
    int none = 0;
    atomic_compare_exchange_strong(&first_violation, &none, line);
    atomic_fetch_add(&violations, 1);
}

enum { FREE, ACTIVE };
enum { PLAIN, CANCEL_TARGET, SELF_REMOVE, VARIANTS };

struct rec {
    cancel_callback_t cb;
    _Atomic int ran;
    int state;
    int variant;
    cancel_token_t *target; /* a reference, for CANCEL_TARGET */
};

static void rec_fn(void *arg, int reason)
{
    struct rec *r = arg;
    if (atomic_fetch_add(&r->ran, 1) != 0)
        VIOLATION(); /* ran twice */
    atomic_fetch_add(&runs, 1);
    if (reason <= 0)
        VIOLATION();
    if (r->variant == CANCEL_TARGET)
        cancel_token_cancel(r->target, 0);
    else if (r->variant == SELF_REMOVE && cancel_callback_remove(&r->cb))
        VIOLATION(); /* from inside fn: false */
}

static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* A reference on slot I's token, or NULL. */
static cancel_token_t *slot_get(int i)
{
    pthread_mutex_lock(&slots[i].mutex);
    cancel_token_t *t = cancel_token_ref(slots[i].t);
    pthread_mutex_unlock(&slots[i].mutex);
    return t;
}

/* Puts T (a reference) in slot I and releases what was there. */
static void slot_put(int i, cancel_token_t *t)
{
    pthread_mutex_lock(&slots[i].mutex);
    cancel_token_t *old = slots[i].t;
    slots[i].t = t;
    pthread_mutex_unlock(&slots[i].mutex);
    cancel_token_unref(old);
}

static void retire(struct rec *r)
{
    bool removed = cancel_callback_remove(&r->cb);
    int ran = atomic_load(&r->ran);
    if (removed) {
        atomic_fetch_add(&removed_before_run, 1);
        if (ran != 0)
            VIOLATION(); /* removed, yet it ran */
    } else if (ran != 1) {
        VIOLATION(); /* remove returned false before fn finished */
    }
    cancel_token_unref(r->target);
    r->target = NULL;
    r->state = FREE;
}

struct worker {
    uint64_t seed;
    struct rec recs[RECS];
};

static void *worker_fn(void *arg)
{
    struct worker *w = arg;
    uint64_t *rs = &w->seed;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        int i = (int)(next_rand(rs) % SLOTS);
        switch (next_rand(rs) % 10) {
        case 0: case 1: { /* create a child of an anchor or of another slot */
            cancel_token_t *parent;
            if (next_rand(rs) % 3 == 0)
                parent = cancel_token_ref(anchors[next_rand(rs) % ANCHORS]);
            else
                parent = slot_get((int)(next_rand(rs) % SLOTS));
            if (!parent)
                parent = cancel_token_ref(anchors[0]);
            /* Read the parent first: a cancel that lands after the child is
             * linked may still be walking towards it. */
            bool parent_was_cancelled = cancel_token_is_cancelled(parent);
            cancel_token_t *c = cancel_token_child(parent);
            if (!c) {
                VIOLATION();
            } else if (parent_was_cancelled && !cancel_token_is_cancelled(c)) {
                VIOLATION(); /* child of a cancelled parent is born cancelled */
            }
            cancel_token_unref(parent);
            slot_put(i, c);
            break;
        }
        case 2: { /* cancel */
            cancel_token_t *t = slot_get(i);
            if (t && cancel_token_cancel(t, (int)(next_rand(rs) % 4))) {
                atomic_fetch_add(&cancels_won, 1);
                if (!tu_subtree_cancelled(t))
                    VIOLATION();
            }
            cancel_token_unref(t);
            break;
        }
        case 3: case 4: case 5: { /* add */
            struct rec *r = &w->recs[next_rand(rs) % RECS];
            if (r->state != FREE)
                break;
            cancel_token_t *t = slot_get(i);
            if (!t)
                break;
            atomic_store(&r->ran, 0);
            r->variant = (int)(next_rand(rs) % VARIANTS);
            r->target = r->variant == CANCEL_TARGET ? slot_get((int)(next_rand(rs) % SLOTS))
                                                    : NULL;
            int rc = cancel_callback_add(&r->cb, t, rec_fn, r);
            atomic_fetch_add(&added, 1);
            if (rc == 1) {
                atomic_fetch_add(&inline_runs, 1);
                if (atomic_load(&r->ran) != 1)
                    VIOLATION(); /* inline: ran before add returned */
            } else if (rc != 0) {
                VIOLATION();
            }
            r->state = ACTIVE;
            cancel_token_unref(t);
            break;
        }
        case 6: case 7: { /* remove */
            struct rec *r = &w->recs[next_rand(rs) % RECS];
            if (r->state == ACTIVE)
                retire(r);
            break;
        }
        default: /* release */
            slot_put(i, NULL);
            break;
        }
    }
    for (int k = 0; k < RECS; k++)
        if (w->recs[k].state == ACTIVE)
            retire(&w->recs[k]);
    return NULL;
}

static int stress_seconds(void)
{
    const char *s = getenv("CANCEL_STRESS_SECONDS");
    int n = s ? atoi(s) : 3;
    return n > 0 ? n : 3;
}

START_TEST(random_operations_keep_every_invariant)
{
    for (int a = 0; a < ANCHORS; a++)
        anchors[a] = cancel_token_new();
    for (int i = 0; i < SLOTS; i++) {
        pthread_mutex_init(&slots[i].mutex, NULL);
        slots[i].t = NULL;
    }
    static struct worker workers[THREADS];
    pthread_t th[THREADS];
    for (int k = 0; k < THREADS; k++) {
        memset(&workers[k], 0, sizeof workers[k]);
        workers[k].seed = 0x9E3779B97F4A7C15ull * (uint64_t)(k + 1) ^ (uint64_t)tu_now_ns();
        tu_thread_start(&th[k], worker_fn, &workers[k]);
    }
    struct timespec d = { stress_seconds(), 0 };
    nanosleep(&d, NULL); /* the duration of the run, not a synchronisation */
    atomic_store(&stop, true);
    for (int k = 0; k < THREADS; k++)
        tu_thread_join(th[k]);
    for (int i = 0; i < SLOTS; i++)
        slot_put(i, NULL);

    fprintf(stderr, "stress: %ld adds (%ld inline), %ld runs, %ld removed first, %ld cancels won\n",
            atomic_load(&added), atomic_load(&inline_runs), atomic_load(&runs),
            atomic_load(&removed_before_run), atomic_load(&cancels_won));
    if (atomic_load(&violations) != 0)
        ck_abort_msg("%ld violations, the first at check_stress.c:%d",
                     atomic_load(&violations), atomic_load(&first_violation));
    /* Every add either ran its fn exactly once or was removed first. */
    ck_assert_int_eq(atomic_load(&runs), atomic_load(&added) - atomic_load(&removed_before_run));
    /* The run did something of each kind. */
    ck_assert_int_gt(atomic_load(&added), 100);
    ck_assert_int_gt(atomic_load(&runs), 10);
    ck_assert_int_gt(atomic_load(&inline_runs), 0);
    ck_assert_int_gt(atomic_load(&removed_before_run), 0);
    ck_assert_int_gt(atomic_load(&cancels_won), 10);
    /* No token left alive: each anchor is bare again. */
    for (int a = 0; a < ANCHORS; a++) {
        ck_assert_ptr_null(anchors[a]->first_child);
        ck_assert_uint_eq(atomic_load(&anchors[a]->refs), 1);
        ck_assert_ptr_null(anchors[a]->callbacks);
        ck_assert(!cancel_token_is_cancelled(anchors[a]));
        cancel_token_unref(anchors[a]);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("stress");
    TCase *tc = tcase_create("stress");
    tcase_set_timeout(tc, TU_TIMEOUT + stress_seconds());
    tcase_add_test(tc, random_operations_keep_every_invariant);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}

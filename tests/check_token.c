/*
 * check_token.c - the token tree: create, reference, cancel, propagate,
 * release (SPEC.md "Tokens": new, child, ref, unref, cancel, is_cancelled,
 * reason).  White-box where the contract is about memory: it includes
 * internal.h to look at the tree links.
 */
#include "internal.h"
#include "testutil.h"
#include <sys/wait.h>
#include <string.h>
#include <signal.h>
#include "malloc_hook.h"

#include <limits.h>
#include <malloc.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1 /* mallinfo2 does not see the sanitizer's heap */
#else
#define UNDER_SANITIZER 0
#endif


static size_t heap_in_use(void)
{
    return mallinfo2().uordblks;
}

static unsigned refs_of(cancel_token_t *t)
{
    return atomic_load(&t->refs);
}

/* Is C on P's list of children (under the lock)? */
static bool is_child_of(cancel_token_t *c, cancel_token_t *p)
{
    bool found = false;
    cancel__token_lock(p);
    for (cancel_token_t *n = p->first_child; n; n = n->next_sibling)
        found = found || n == c;
    cancel__token_unlock(p);
    return found;
}

/* ------------------------------------------------------------ basics */

START_TEST(new_token_is_a_live_root_with_reason_zero)
{
    cancel_token_t *t = cancel_token_new();
    ck_assert_ptr_nonnull(t);
    ck_assert(!cancel_token_is_cancelled(t));
    ck_assert_int_eq(cancel_token_reason(t), 0);
    ck_assert_ptr_null(t->parent);
    ck_assert_uint_eq(refs_of(t), 1);
    cancel_token_unref(t);
}
END_TEST

START_TEST(cancel_returns_true_once_and_sets_the_reason)
{
    cancel_token_t *t = cancel_token_new();
    ck_assert(cancel_token_cancel(t, EPIPE));
    ck_assert(cancel_token_is_cancelled(t));
    ck_assert_int_eq(cancel_token_reason(t), EPIPE);
    ck_assert(!cancel_token_cancel(t, EPIPE));
    cancel_token_unref(t);
}
END_TEST

START_TEST(first_reason_wins_over_later_cancels)
{
    cancel_token_t *t = cancel_token_new();
    ck_assert(cancel_token_cancel(t, 1234));
    ck_assert(!cancel_token_cancel(t, ETIMEDOUT));
    ck_assert(!cancel_token_cancel(t, 0));
    ck_assert_int_eq(cancel_token_reason(t), 1234);
    cancel_token_unref(t);
}
END_TEST

START_TEST(reason_zero_or_negative_gives_ecanceled)
{
    int reasons[] = { 0, -1, INT_MIN };
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++) {
        cancel_token_t *t = cancel_token_new();
        ck_assert(cancel_token_cancel(t, reasons[i]));
        ck_assert_int_eq(cancel_token_reason(t), ECANCELED);
        cancel_token_unref(t);
    }
}
END_TEST

START_TEST(any_positive_application_reason_is_kept)
{
    cancel_token_t *t = cancel_token_new();
    ck_assert(cancel_token_cancel(t, INT_MAX));
    ck_assert_int_eq(cancel_token_reason(t), INT_MAX);
    cancel_token_unref(t);
}
END_TEST

START_TEST(null_token_reads_never_cancelled_and_cancel_null_is_false)
{
    ck_assert(!cancel_token_is_cancelled(NULL));
    ck_assert_int_eq(cancel_token_reason(NULL), 0);
    ck_assert(!cancel_token_cancel(NULL, ECANCELED));
    ck_assert_ptr_null(cancel_token_ref(NULL));
    cancel_token_unref(NULL); /* fine */
}
END_TEST

START_TEST(child_of_null_is_a_root)
{
    cancel_token_t *t = cancel_token_child(NULL);
    ck_assert_ptr_nonnull(t);
    ck_assert_ptr_null(t->parent);
    ck_assert(!cancel_token_is_cancelled(t));
    ck_assert(cancel_token_cancel(t, 0));
    ck_assert_int_eq(cancel_token_reason(t), ECANCELED);
    cancel_token_unref(t);
}
END_TEST

START_TEST(ref_keeps_a_token_alive_until_the_last_unref)
{
    cancel_token_t *t = cancel_token_new();
    ck_assert_ptr_eq(cancel_token_ref(t), t);
    ck_assert_uint_eq(refs_of(t), 2);
    cancel_token_unref(t);
    ck_assert_uint_eq(refs_of(t), 1);
    ck_assert(cancel_token_cancel(t, 0)); /* still usable */
    cancel_token_unref(t);
}
END_TEST

/* ------------------------------------------------------------ propagation */

START_TEST(cancel_flows_to_every_descendant_with_the_same_reason)
{
    cancel_token_t *root = cancel_token_new();
    cancel_token_t *a = cancel_token_child(root), *b = cancel_token_child(root);
    cancel_token_t *aa = cancel_token_child(a), *ab = cancel_token_child(a);
    cancel_token_t *aaa = cancel_token_child(aa);
    ck_assert(cancel_token_cancel(root, 777));
    cancel_token_t *all[] = { root, a, b, aa, ab, aaa };
    for (size_t i = 0; i < 6; i++)
        ck_assert_int_eq(cancel_token_reason(all[i]), 777);
    /* Descendants are not "the call that made the transition". */
    ck_assert(!cancel_token_cancel(aaa, 1));
    ck_assert_int_eq(cancel_token_reason(aaa), 777);
    for (size_t i = 6; i-- > 0;)
        cancel_token_unref(all[i]);
}
END_TEST

START_TEST(descendant_cancelled_first_keeps_its_own_reason)
{
    cancel_token_t *root = cancel_token_new();
    cancel_token_t *mid = cancel_token_child(root);
    cancel_token_t *leaf = cancel_token_child(mid);
    cancel_token_t *other = cancel_token_child(root);
    ck_assert(cancel_token_cancel(mid, EPIPE));
    ck_assert_int_eq(cancel_token_reason(leaf), EPIPE);
    ck_assert(cancel_token_cancel(root, ETIMEDOUT));
    ck_assert_int_eq(cancel_token_reason(mid), EPIPE);
    ck_assert_int_eq(cancel_token_reason(leaf), EPIPE);
    ck_assert_int_eq(cancel_token_reason(other), ETIMEDOUT);
    cancel_token_unref(leaf);
    cancel_token_unref(other);
    cancel_token_unref(mid);
    cancel_token_unref(root);
}
END_TEST

START_TEST(child_of_cancelled_parent_is_born_cancelled_with_its_reason)
{
    cancel_token_t *p = cancel_token_new();
    ck_assert(cancel_token_cancel(p, 4242));
    cancel_token_t *c = cancel_token_child(p);
    ck_assert_ptr_nonnull(c);
    ck_assert(cancel_token_is_cancelled(c));
    ck_assert_int_eq(cancel_token_reason(c), 4242);
    ck_assert(!cancel_token_cancel(c, 1));
    cancel_token_t *gc = cancel_token_child(c);
    ck_assert_int_eq(cancel_token_reason(gc), 4242);
    cancel_token_unref(gc);
    cancel_token_unref(c);
    cancel_token_unref(p);
}
END_TEST

START_TEST(cancelling_a_child_never_touches_its_parent_or_siblings)
{
    cancel_token_t *p = cancel_token_new();
    cancel_token_t *c1 = cancel_token_child(p);
    cancel_token_t *c2 = cancel_token_child(p);
    cancel_token_t *c2a = cancel_token_child(c2);
    cancel_token_t *c1a = cancel_token_child(c1);
    ck_assert(cancel_token_cancel(c1, 0));
    ck_assert(cancel_token_is_cancelled(c1));
    ck_assert(cancel_token_is_cancelled(c1a));
    ck_assert(!cancel_token_is_cancelled(p));
    ck_assert(!cancel_token_is_cancelled(c2));
    ck_assert(!cancel_token_is_cancelled(c2a));
    /* The parent can still be cancelled by its own call. */
    ck_assert(cancel_token_cancel(p, EPIPE));
    ck_assert_int_eq(cancel_token_reason(c2a), EPIPE);
    ck_assert_int_eq(cancel_token_reason(c1a), ECANCELED);
    cancel_token_unref(c1a);
    cancel_token_unref(c2a);
    cancel_token_unref(c1);
    cancel_token_unref(c2);
    cancel_token_unref(p);
}
END_TEST

/* ------------------------------------------------------------ references and memory */

START_TEST(child_keeps_its_parent_without_a_counted_reference)
{
    cancel_token_t *p = cancel_token_new();
    cancel_token_t *c = cancel_token_child(p);
    ck_assert_ptr_eq(c->parent, p);
    ck_assert_uint_eq(refs_of(p), 1);     /* linking costs no atomic reference */
    cancel_token_unref(c);
    ck_assert_uint_eq(refs_of(p), 1);
    cancel_token_unref(p);
}
END_TEST

START_TEST(parent_does_not_keep_children_alive_and_outlives_them_as_needed)
{
    cancel_token_t *p = cancel_token_new();
    cancel_token_t *c = cancel_token_child(p);
    cancel_token_unref(p);                /* the linked child still holds it */
    ck_assert_uint_eq(refs_of(p), CANCEL_REFS_HOLD | 1);
    ck_assert_ptr_eq(p->first_child, c);
    ck_assert_uint_eq(refs_of(c), 1);     /* the parent holds no reference */
    ck_assert(!cancel_token_is_cancelled(c));
    ck_assert(cancel_token_cancel(c, 0));
    cancel_token_unref(c);                /* frees both (ASan checks) */
}
END_TEST

static void count_runs(void *arg, int reason)
{
    (void)reason;
    ++*(int *)arg;
}

/* Released ancestors that only a linked descendant keeps still propagate
 * and run their callbacks, and go, all of them, with that descendant. */
START_TEST(released_ancestors_live_while_a_descendant_is_linked_and_go_with_it)
{
    cancel_token_t *root = cancel_token_new();
    cancel_token_t *a = cancel_token_child(root);
    cancel_token_t *b = cancel_token_child(a);
    cancel_token_t *c = cancel_token_child(b);
    int runs = 0;
    cancel_callback_t cb;
    ck_assert_int_eq(cancel_callback_add(&cb, b, count_runs, &runs), 0);
    cancel_token_unref(a);
    cancel_token_unref(b);
    ck_assert_uint_eq(refs_of(a), CANCEL_REFS_HOLD | 1);
    ck_assert_uint_eq(refs_of(b), CANCEL_REFS_HOLD | 1);
    ck_assert(cancel_token_cancel(root, 77));
    ck_assert_int_eq(runs, 1);
    ck_assert_int_eq(cancel_token_reason(c), 77);
    ck_assert_uint_eq(refs_of(b), CANCEL_REFS_HOLD | 1); /* c still keeps b */
    ck_assert_ptr_eq(root->first_child, a);
    cancel_token_unref(c);                /* frees c, b and a (ASan checks) */
    ck_assert_ptr_null(root->first_child);
    ck_assert_uint_eq(refs_of(root), 1);
    ck_assert(!cancel_callback_remove(&cb)); /* it ran */
    cancel_token_unref(root);
}
END_TEST

/* A released token kept by a child and a callback: while the cancel runs
 * that callback, the token stays, even when fn releases the last child. */
struct drop_child_arg {
    cancel_token_t *token, *child;
    int reason_seen;
};

static void drop_child_then_look(void *arg, int reason)
{
    struct drop_child_arg *a = arg;
    (void)reason;
    cancel_token_unref(a->child);                 /* the last dependent but us */
    a->reason_seen = cancel_token_reason(a->token); /* ASan: still alive */
}

START_TEST(a_released_tokens_running_callback_keeps_it_after_its_last_child_goes)
{
    cancel_token_t *root = cancel_token_new();
    cancel_token_t *p = cancel_token_child(root);
    struct drop_child_arg a = { p, cancel_token_child(p), 0 };
    cancel_callback_t cb;
    ck_assert_int_eq(cancel_callback_add(&cb, p, drop_child_then_look, &a), 0);
    cancel_token_unref(p);
    ck_assert(cancel_token_cancel(root, 55));
    ck_assert_int_eq(a.reason_seen, 55);
    ck_assert_ptr_null(root->first_child);        /* p went after its callback */
    ck_assert_uint_eq(refs_of(root), 1);
    cancel_token_unref(root);
}
END_TEST

/* Every callback of a released token may look at it while it runs, not
 * only the first one the cancel runs. */
static void look_at_token(void *arg, int reason)
{
    struct drop_child_arg *a = arg;
    ck_assert_int_eq(cancel_token_reason(a->token), reason); /* ASan: alive */
    a->reason_seen++;
}

START_TEST(each_callback_of_a_released_token_runs_with_the_token_alive)
{
    cancel_token_t *root = cancel_token_new();
    cancel_token_t *p = cancel_token_child(root);
    struct drop_child_arg a = { p, NULL, 0 };
    cancel_callback_t cb[3];
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(cancel_callback_add(&cb[i], p, look_at_token, &a), 0);
    cancel_token_unref(p);
    ck_assert_uint_eq(refs_of(p), CANCEL_REFS_HOLD | 1);
    ck_assert(cancel_token_cancel(root, 56));
    ck_assert_int_eq(a.reason_seen, 3);
    ck_assert_ptr_null(root->first_child);        /* p went after the last one */
    cancel_token_unref(root);
}
END_TEST

/* A released parent stays until both its last child and its last armed
 * callback are gone, whichever goes last. */
START_TEST(released_parent_goes_with_its_last_child_or_callback_whichever_is_last)
{
    for (int child_last = 0; child_last < 2; child_last++) {
        cancel_token_t *root = cancel_token_new();
        cancel_token_t *p = cancel_token_child(root);
        cancel_token_t *c = cancel_token_child(p);
        int runs = 0;
        cancel_callback_t cb;
        ck_assert_int_eq(cancel_callback_add(&cb, p, count_runs, &runs), 0);
        cancel_token_unref(p);
        ck_assert_uint_eq(refs_of(p), CANCEL_REFS_HOLD | 1);
        if (child_last) {
            ck_assert(cancel_callback_remove(&cb));
            ck_assert_uint_eq(refs_of(p), CANCEL_REFS_HOLD | 1);
            ck_assert_ptr_eq(root->first_child, p);
            cancel_token_unref(c);
        } else {
            cancel_token_unref(c);
            ck_assert_uint_eq(refs_of(p), CANCEL_REFS_HOLD | 1);
            ck_assert_ptr_eq(root->first_child, p);
            ck_assert(cancel_callback_remove(&cb));
        }
        ck_assert_ptr_null(root->first_child); /* p is gone (ASan checks) */
        ck_assert_int_eq(runs, 0);
        cancel_token_unref(root);
    }
}
END_TEST

START_TEST(released_child_leaves_its_parents_list_at_once)
{
    cancel_token_t *p = cancel_token_new();
    cancel_token_t *c = cancel_token_child(p);
    ck_assert_ptr_eq(p->first_child, c);
    cancel_token_unref(c);
    ck_assert_ptr_null(p->first_child);
    cancel_token_unref(p);
}
END_TEST

START_TEST(releasing_children_in_any_order_keeps_the_sibling_list_intact)
{
    cancel_token_t *p = cancel_token_new();
    cancel_token_t *c[5];
    for (int i = 0; i < 5; i++)
        c[i] = cancel_token_child(p);
    cancel_token_unref(c[2]);             /* middle */
    cancel_token_unref(c[4]);             /* head (newest first) */
    cancel_token_unref(c[0]);             /* tail */
    ck_assert(is_child_of(c[1], p));
    ck_assert(is_child_of(c[3], p));
    int n = 0;
    for (cancel_token_t *k = p->first_child; k; k = k->next_sibling)
        n++;
    ck_assert_int_eq(n, 2);
    ck_assert(cancel_token_cancel(p, 0));
    ck_assert(cancel_token_is_cancelled(c[1]));
    ck_assert(cancel_token_is_cancelled(c[3]));
    cancel_token_unref(c[1]);
    cancel_token_unref(c[3]);
    ck_assert_ptr_null(p->first_child);
    cancel_token_unref(p);
}
END_TEST

START_TEST(root_outliving_a_million_released_children_holds_no_memory_for_them)
{
    cancel_token_t *root = cancel_token_new();
    /* Warm up the allocator so the measurement sees only tokens. */
    cancel_token_unref(cancel_token_child(root));
    size_t before = heap_in_use();
    for (int i = 0; i < 1000000; i++) {
        cancel_token_t *c = cancel_token_child(root);
        ck_assert_ptr_nonnull(c);
        if (i % 2)
            cancel_token_cancel(c, 0);
        cancel_token_unref(c);
    }
    size_t after = heap_in_use();
    ck_assert_ptr_null(root->first_child);
    ck_assert_uint_eq(refs_of(root), 1);
    /* A million children would be 64 MB; allow the allocator's own slack. */
    if (!UNDER_SANITIZER)
        ck_assert_uint_le(after, before + 64 * 1024);
    ck_assert(!cancel_token_is_cancelled(root));
    cancel_token_unref(root);
}
END_TEST

/* ------------------------------------------------------------ memory cache */

/* Each test turns the per-thread token cache and the slabs on (main turns
 * them off for the allocation-counting tests) and off again.  Under the
 * sanitizers they are compiled out: every block goes straight back to
 * malloc.  A slab is 64 blocks of 64 bytes (src/token_mem.c), 4112 bytes
 * of malloc's with its chunk header. */
enum { SLAB_HEAP = 4096 + 64 };
enum { CACHE_BOUND = 32 };

START_TEST(released_token_memory_serves_the_next_token_of_the_thread)
{
    cancel__token_cache_off = false;
    cancel_token_t *root = cancel_token_new();
    cancel_token_t *c = cancel_token_child(root);
    void *block = c;
    unsigned cached = cancel__token_cache_count();
    cancel_token_unref(c);
    if (UNDER_SANITIZER) {
        ck_assert_uint_eq(cancel__token_cache_count(), 0);
    } else {
        ck_assert_uint_eq(cancel__token_cache_count(), cached + 1);
        cancel_token_t *again = cancel_token_child(root);
        ck_assert_ptr_eq(again, block);   /* last in, first out: still warm */
        ck_assert_uint_eq(cancel__token_cache_count(), cached);
        ck_assert(is_child_of(again, root));
        ck_assert(!cancel_token_is_cancelled(again));
        ck_assert_uint_eq(refs_of(again), 1);
        ck_assert_ptr_null(again->first_child);
        ck_assert_ptr_null(atomic_load(&again->ext));
        cancel_token_unref(again);
    }
    cancel_token_unref(root);
    cancel__token_cache_off = true;
}
END_TEST

START_TEST(the_cache_keeps_a_bounded_number_of_blocks)
{
    enum { N = 1000 };
    static cancel_token_t *kids[N];
    cancel__token_cache_off = false;
    cancel_token_t *root = cancel_token_new();
    for (int i = 0; i < N; i++)
        kids[i] = cancel_token_child(root);
    size_t before = heap_in_use();
    for (int i = 0; i < N; i++)
        cancel_token_unref(kids[i]);
    size_t after = heap_in_use();
    ck_assert_uint_le(cancel__token_cache_count(), CACHE_BOUND);
    if (!UNDER_SANITIZER) {
        ck_assert_uint_eq(cancel__token_cache_count(), CACHE_BOUND);
        /* 1000 blocks went back but the cached 32, in whole slabs: all of
         * them but the slab still being carved and the one holding the
         * root and the cached blocks. */
        ck_assert_uint_le(before - after, N * 64 + N / 64 * 16);
        ck_assert_uint_ge(before - after + CACHE_BOUND * 64 + 2 * SLAB_HEAP, N * 64);
    }
    ck_assert_ptr_null(root->first_child);
    cancel_token_unref(root);
    cancel__token_cache_off = true;
}
END_TEST

/* Two tokens made one after the other never share a cache line: child
 * create+release under two such roots on two threads would write one. */
START_TEST(every_token_has_a_cache_line_of_its_own)
{
    cancel__token_cache_off = false;
    enum { N = 200 };
    cancel_token_t *t[N];
    for (int i = 0; i < N; i++)
        t[i] = cancel_token_new();
    for (int i = 0; i < N; i++) {
        if (!UNDER_SANITIZER)
            ck_assert_uint_eq((uintptr_t)t[i] % 64, 0);
        for (int j = 0; j < i; j++)
            ck_assert_uint_ne((uintptr_t)t[i] / 64, (uintptr_t)t[j] / 64);
    }
    for (int i = 0; i < N; i++)
        cancel_token_unref(t[i]);
    cancel__token_cache_off = true;
}
END_TEST

struct carved {
    cancel_token_t *kids[10];
};

static void *carve_ten_and_exit(void *arg)
{
    struct carved *c = arg;
    for (int i = 0; i < 10; i++)
        c->kids[i] = cancel_token_new();
    return NULL;
}

/* A thread that carved 10 blocks of a slab and exited gave the other 54
 * back; the slab goes when another thread releases the 10. */
START_TEST(a_slab_goes_when_its_last_token_does_on_another_thread)
{
    cancel__token_cache_off = false;
    struct carved c;
    pthread_t th;
    /* A first thread pays whatever thread start and exit keep for good. */
    ck_assert_int_eq(pthread_create(&th, NULL, carve_ten_and_exit, &c), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    for (int i = 0; i < 10; i++)
        cancel_token_unref(c.kids[i]);
    size_t before = heap_in_use();
    ck_assert_int_eq(pthread_create(&th, NULL, carve_ten_and_exit, &c), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    size_t during = heap_in_use();
    cancel__token_cache_off = true; /* our releases give blocks back at once */
    for (int i = 0; i < 10; i++) {
        ck_assert(!cancel_token_is_cancelled(c.kids[i]));
        cancel_token_unref(c.kids[i]);
    }
    size_t after = heap_in_use();
    if (!UNDER_SANITIZER) {
        ck_assert_uint_ge(during, before + 4096); /* the slab outlived its carver */
        ck_assert_uint_le(after, before + 512);   /* and went with its last token */
    }
}
END_TEST

static void *fill_cache_and_exit(void *arg)
{
    cancel_token_t *root = arg;
    cancel_token_t *kids[2 * CACHE_BOUND];
    for (int i = 0; i < 2 * CACHE_BOUND; i++)
        kids[i] = cancel_token_child(root);
    for (int i = 0; i < 2 * CACHE_BOUND; i++)
        cancel_token_unref(kids[i]);
    return (void *)(uintptr_t)cancel__token_cache_count();
}

START_TEST(an_exiting_thread_hands_its_cached_blocks_back_to_malloc)
{
    cancel__token_cache_off = false;
    cancel_token_t *root = cancel_token_new();
    /* A first thread pays whatever thread start and exit keep for good. */
    pthread_t th;
    void *cached;
    ck_assert_int_eq(pthread_create(&th, NULL, fill_cache_and_exit, root), 0);
    ck_assert_int_eq(pthread_join(th, &cached), 0);
    size_t before = heap_in_use();
    ck_assert_int_eq(pthread_create(&th, NULL, fill_cache_and_exit, root), 0);
    ck_assert_int_eq(pthread_join(th, &cached), 0);
    size_t after = heap_in_use();
    if (!UNDER_SANITIZER) {
        ck_assert_uint_eq((uintptr_t)cached, CACHE_BOUND); /* it did cache */
        /* Its 32 cached blocks (2 KiB) are gone with it. */
        ck_assert_uint_le(after, before + 512);
    }
    ck_assert_ptr_null(root->first_child);
    cancel_token_unref(root);
    cancel__token_cache_off = true;
}
END_TEST

/* ------------------------------------------------------------ depth */

/* Ten million; a million under sanitizers (ten times slower per node),
 * which still needs far more than the thread's stack if anything recursed. */
enum { DEEP = UNDER_SANITIZER ? 1000000 : 10000000 };

struct deep_result {
    bool built, leaf_cancelled, reason_ok, root_list_empty;
};

static void *deep_chain_thread(void *arg)
{
    struct deep_result *r = arg;
    cancel_token_t *root = cancel_token_new();
    cancel_token_t *t = cancel_token_ref(root);
    for (int i = 0; i < DEEP; i++) {
        cancel_token_t *c = cancel_token_child(t);
        if (!c)
            return NULL;
        cancel_token_unref(t);            /* the child holds its parent */
        t = c;
    }
    r->built = true;
    cancel_token_cancel(root, 31337);     /* walks ten million nodes */
    r->leaf_cancelled = cancel_token_is_cancelled(t);
    r->reason_ok = cancel_token_reason(t) == 31337;
    cancel_token_unref(t);                /* frees the whole chain */
    r->root_list_empty = root->first_child == NULL;
    cancel_token_unref(root);
    return NULL;
}

START_TEST(ten_million_deep_chain_cancels_and_frees_on_a_small_stack)
{
    /* 64 KiB of stack: a recursive walk or release would need gigabytes. */
    size_t stack = 64 * 1024;
    if (UNDER_SANITIZER)
        stack = 256 * 1024;
    if (stack < (size_t)PTHREAD_STACK_MIN)
        stack = PTHREAD_STACK_MIN;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    ck_assert_int_eq(pthread_attr_setstacksize(&attr, stack), 0);
    struct deep_result r = { 0 };
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, &attr, deep_chain_thread, &r), 0);
    pthread_attr_destroy(&attr);
    tu_thread_join(th);
    ck_assert(r.built);
    ck_assert(r.leaf_cancelled);
    ck_assert(r.reason_ok);
    ck_assert(r.root_list_empty);
}
END_TEST

/* ------------------------------------------------------------ races */

enum { RACERS = 8 };

struct race {
    cancel_token_t *t;
    pthread_barrier_t go;
    bool won[RACERS];
};

struct racer {
    struct race *race;
    int id;
};

static void *cancel_racer(void *arg)
{
    struct racer *r = arg;
    pthread_barrier_wait(&r->race->go);
    r->race->won[r->id] = cancel_token_cancel(r->race->t, 100 + r->id);
    return NULL;
}

START_TEST(cancel_returns_true_exactly_once_across_racing_threads)
{
    struct race race;
    race.t = cancel_token_new();
    pthread_barrier_init(&race.go, NULL, RACERS);
    pthread_t th[RACERS];
    struct racer rs[RACERS];
    for (int i = 0; i < RACERS; i++) {
        rs[i] = (struct racer){ &race, i };
        race.won[i] = false;
        tu_thread_start(&th[i], cancel_racer, &rs[i]);
    }
    for (int i = 0; i < RACERS; i++)
        tu_thread_join(th[i]);
    int winners = 0, winner = -1;
    for (int i = 0; i < RACERS; i++)
        if (race.won[i]) {
            winners++;
            winner = i;
        }
    ck_assert_int_eq(winners, 1);
    ck_assert_int_eq(cancel_token_reason(race.t), 100 + winner);
    pthread_barrier_destroy(&race.go);
    cancel_token_unref(race.t);
}
END_TEST

/*
 * A tree: ROOT -> MID -> three levels of fan-out 3 (39 nodes), plus a
 * sibling subtree of MID.  A callback on every node counts its runs and
 * yields to widen the windows.  One thread cancels MID while the other
 * cancels ROOT; each checks, the moment its cancel returns, that every
 * node under what it cancelled reads cancelled and that every callback
 * there has run to completion.
 */
enum { TREE_MAX = 128 };

struct tree {
    int n;
    cancel_token_t *node[TREE_MAX];
    int parent[TREE_MAX];
    cancel_callback_t cb[TREE_MAX];
    _Atomic int started[TREE_MAX];
    _Atomic int done[TREE_MAX];
    pthread_barrier_t go;
    int mid;
};

struct slot_arg {
    struct tree *tree;
    int i;
};
static struct slot_arg slot_args[TREE_MAX];

static void count_cb(void *arg, int reason)
{
    struct slot_arg *s = arg;
    (void)reason;
    atomic_fetch_add(&s->tree->started[s->i], 1);
    for (int k = 0; k < 3; k++)
        sched_yield();
    atomic_fetch_add(&s->tree->done[s->i], 1);
}

static int tree_add(struct tree *tr, int parent)
{
    int i = tr->n++;
    tr->parent[i] = parent;
    tr->node[i] = parent < 0 ? cancel_token_new() : cancel_token_child(tr->node[parent]);
    atomic_init(&tr->started[i], 0);
    atomic_init(&tr->done[i], 0);
    slot_args[i] = (struct slot_arg){ tr, i };
    cancel_callback_add(&tr->cb[i], tr->node[i], count_cb, &slot_args[i]);
    return i;
}

static bool is_under(const struct tree *tr, int i, int top)
{
    for (; i >= 0; i = tr->parent[i])
        if (i == top)
            return true;
    return false;
}

static void tree_build(struct tree *tr)
{
    tr->n = 0;
    int root = tree_add(tr, -1);
    tr->mid = tree_add(tr, root);
    int level[40], nlevel = 1;
    level[0] = tr->mid;
    for (int depth = 0; depth < 3; depth++) {
        int next[40], nnext = 0;
        for (int j = 0; j < nlevel; j++)
            for (int k = 0; k < 3; k++)
                next[nnext++] = tree_add(tr, level[j]);
        memcpy(level, next, sizeof next);
        nlevel = nnext;
    }
    int side = tree_add(tr, root);
    tree_add(tr, side);
}

static void tree_free(struct tree *tr)
{
    for (int i = tr->n; i-- > 0;)
        cancel_token_unref(tr->node[i]);
}

/* Whether everything under TOP is cancelled and its callbacks are done. */
static bool subtree_settled(struct tree *tr, int top)
{
    bool ok = true;
    for (int i = 0; i < tr->n; i++)
        if (is_under(tr, i, top))
            ok = ok && cancel_token_is_cancelled(tr->node[i]) &&
                 atomic_load(&tr->done[i]) == 1;
    return ok;
}

struct mid_canceller {
    struct tree *tree;
    bool cancelled, settled;
};

static void *cancel_mid(void *arg)
{
    struct mid_canceller *m = arg;
    pthread_barrier_wait(&m->tree->go);
    m->cancelled = cancel_token_cancel(m->tree->node[m->tree->mid], EPIPE);
    m->settled = subtree_settled(m->tree, m->tree->mid);
    return NULL;
}

START_TEST(cancel_returns_after_every_descendant_and_callback_even_racing_a_middle_cancel)
{
    static struct tree tr;
    for (int round = 0; round < 20; round++) {
        tree_build(&tr);
        pthread_barrier_init(&tr.go, NULL, 2);
        struct mid_canceller m = { &tr, false, false };
        pthread_t th;
        tu_thread_start(&th, cancel_mid, &m);
        pthread_barrier_wait(&tr.go);
        bool root_cancelled = cancel_token_cancel(tr.node[0], ETIMEDOUT);
        bool root_settled = subtree_settled(&tr, 0);
        tu_thread_join(th);
        ck_assert(root_cancelled);
        ck_assert(root_settled);
        /* A losing cancel returns false at once: no promise about callbacks. */
        if (m.cancelled)
            ck_assert(m.settled);
        if (m.cancelled) {
            /* MID won its subtree: its reason, the rest the root's. */
            ck_assert_int_eq(cancel_token_reason(tr.node[tr.n - 1]), ETIMEDOUT);
            ck_assert_int_eq(cancel_token_reason(tr.node[tr.n - 3]), EPIPE);
        } else {
            ck_assert_int_eq(cancel_token_reason(tr.node[tr.mid]), ETIMEDOUT);
        }
        for (int i = 0; i < tr.n; i++) {
            ck_assert_int_eq(atomic_load(&tr.started[i]), 1); /* exactly once */
            ck_assert(!cancel_callback_remove(&tr.cb[i]));
        }
        pthread_barrier_destroy(&tr.go);
        tree_free(&tr);
    }
}
END_TEST

/*
 * Deterministic version: thread B cancels CHILD, whose callback blocks
 * until released.  Thread A then cancels PARENT: it must not return before
 * that callback (running on B) has finished.
 */
struct blocking {
    tu_latch_t entered, release;
    _Atomic bool finished;
};

static void blocking_cb(void *arg, int reason)
{
    struct blocking *b = arg;
    (void)reason;
    tu_latch_post(&b->entered);
    tu_latch_wait(&b->release);
    atomic_store(&b->finished, true);
}

struct canceller {
    cancel_token_t *t;
    struct blocking *watch;
    bool result;
    bool watched_finished_at_return;
    _Atomic pid_t tid;
};

static void *cancel_thread(void *arg)
{
    struct canceller *c = arg;
    atomic_store(&c->tid, tu_gettid());
    c->result = cancel_token_cancel(c->t, 0);
    c->watched_finished_at_return = atomic_load(&c->watch->finished);
    return NULL;
}

START_TEST(cancel_of_parent_waits_for_a_child_callback_running_on_another_thread)
{
    cancel_token_t *parent = cancel_token_new();
    cancel_token_t *child = cancel_token_child(parent);
    struct blocking b;
    tu_latch_init(&b.entered);
    tu_latch_init(&b.release);
    atomic_init(&b.finished, false);
    cancel_callback_t cb;
    ck_assert_int_eq(cancel_callback_add(&cb, child, blocking_cb, &b), 0);

    struct canceller cb_thread = { .t = child, .watch = &b };
    struct canceller parent_thread = { .t = parent, .watch = &b };
    atomic_init(&cb_thread.tid, 0);
    atomic_init(&parent_thread.tid, 0);
    pthread_t tb, ta;
    tu_thread_start(&tb, cancel_thread, &cb_thread);
    tu_latch_wait(&b.entered);            /* the callback runs on B */
    tu_thread_start(&ta, cancel_thread, &parent_thread);
    while (atomic_load(&parent_thread.tid) == 0)
        sched_yield();
    tu_wait_until_sleeping(atomic_load(&parent_thread.tid));
    tu_latch_post(&b.release);
    tu_thread_join(ta);
    tu_thread_join(tb);
    ck_assert(cb_thread.result);
    ck_assert(parent_thread.result);
    ck_assert(parent_thread.watched_finished_at_return);
    ck_assert(cancel_token_is_cancelled(parent));
    cancel_token_unref(child);
    cancel_token_unref(parent);
}
END_TEST

/*
 * Same, but the ancestor is cancelled from inside a callback of another
 * node of the same subtree, on a third thread: the "except one running on
 * this very thread" exception covers that thread's own callback only, not
 * the one running on B.
 */
struct nested {
    cancel_token_t *top;
    struct blocking *watch;
    bool result, watched_finished_at_return;
};

static void cancel_top_cb(void *arg, int reason)
{
    struct nested *n = arg;
    (void)reason;
    n->result = cancel_token_cancel(n->top, 0);
    n->watched_finished_at_return = atomic_load(&n->watch->finished);
}

START_TEST(cancel_from_a_callback_still_waits_for_callbacks_running_on_other_threads)
{
    /* TOP -> MID -> LEAF; B cancels LEAF (blocking callback), A cancels
     * MID whose callback cancels TOP. */
    cancel_token_t *top = cancel_token_new();
    cancel_token_t *mid = cancel_token_child(top);
    cancel_token_t *leaf = cancel_token_child(mid);
    struct blocking b;
    tu_latch_init(&b.entered);
    tu_latch_init(&b.release);
    atomic_init(&b.finished, false);
    cancel_callback_t cb_leaf, cb_mid;
    ck_assert_int_eq(cancel_callback_add(&cb_leaf, leaf, blocking_cb, &b), 0);
    struct nested n = { .top = top, .watch = &b };
    ck_assert_int_eq(cancel_callback_add(&cb_mid, mid, cancel_top_cb, &n), 0);

    struct canceller leaf_thread = { .t = leaf, .watch = &b };
    struct canceller mid_thread = { .t = mid, .watch = &b };
    atomic_init(&leaf_thread.tid, 0);
    atomic_init(&mid_thread.tid, 0);
    pthread_t tb, ta;
    tu_thread_start(&tb, cancel_thread, &leaf_thread);
    tu_latch_wait(&b.entered);
    tu_thread_start(&ta, cancel_thread, &mid_thread);
    while (atomic_load(&mid_thread.tid) == 0)
        sched_yield();
    tu_wait_until_sleeping(atomic_load(&mid_thread.tid));
    tu_latch_post(&b.release);
    tu_thread_join(ta);
    tu_thread_join(tb);
    ck_assert(mid_thread.result);
    ck_assert(n.result);
    ck_assert(n.watched_finished_at_return);
    cancel_token_unref(leaf);
    cancel_token_unref(mid);
    cancel_token_unref(top);
}
END_TEST

/* A callback that cancels an ancestor of its own token on the same
 * thread returns (no self-deadlock) and the ancestor is cancelled. */
START_TEST(cancelling_an_ancestor_from_a_callback_on_the_same_thread_does_not_deadlock)
{
    cancel_token_t *top = cancel_token_new();
    cancel_token_t *mid = cancel_token_child(top);
    cancel_token_t *sib = cancel_token_child(top);
    struct blocking dummy;
    atomic_init(&dummy.finished, true);
    struct nested n = { .top = top, .watch = &dummy };
    cancel_callback_t cb;
    cancel_callback_add(&cb, mid, cancel_top_cb, &n);
    ck_assert(cancel_token_cancel(mid, EPIPE));
    ck_assert(n.result);
    ck_assert_int_eq(cancel_token_reason(top), ECANCELED);
    ck_assert_int_eq(cancel_token_reason(sib), ECANCELED);
    ck_assert_int_eq(cancel_token_reason(mid), EPIPE);
    cancel_token_unref(sib);
    cancel_token_unref(mid);
    cancel_token_unref(top);
}
END_TEST

/*
 * The canceller of CHILD borrows it: the only reference besides the armed
 * callback's belongs to the callback, which releases it.  Meanwhile
 * another thread cancels the parent and inspects the cancels under way.
 * Nothing may read the freed child (ASan).
 */
struct borrowed {
    cancel_token_t *owned;
    struct blocking *b;
};

static void release_owned_cb(void *arg, int reason)
{
    struct borrowed *bo = arg;
    (void)reason;
    tu_latch_post(&bo->b->entered);
    tu_latch_wait(&bo->b->release);
    cancel_token_unref(bo->owned);
    atomic_store(&bo->b->finished, true);
}

START_TEST(cancel_whose_callback_frees_the_token_races_an_ancestor_cancel_safely)
{
    cancel_token_t *parent = cancel_token_new();
    cancel_token_t *child = cancel_token_child(parent);
    struct blocking b;
    tu_latch_init(&b.entered);
    tu_latch_init(&b.release);
    atomic_init(&b.finished, false);
    struct borrowed bo = { child, &b };
    cancel_callback_t cb;
    ck_assert_int_eq(cancel_callback_add(&cb, child, release_owned_cb, &bo), 0);
    struct canceller child_thread = { .t = child, .watch = &b };
    struct canceller parent_thread = { .t = parent, .watch = &b };
    atomic_init(&child_thread.tid, 0);
    atomic_init(&parent_thread.tid, 0);
    pthread_t tb, ta;
    tu_thread_start(&tb, cancel_thread, &child_thread);
    tu_latch_wait(&b.entered);
    tu_thread_start(&ta, cancel_thread, &parent_thread);
    while (atomic_load(&parent_thread.tid) == 0)
        sched_yield();
    tu_wait_until_sleeping(atomic_load(&parent_thread.tid));
    tu_latch_post(&b.release);
    tu_thread_join(ta);
    tu_thread_join(tb);
    ck_assert(child_thread.result);
    ck_assert(parent_thread.result);
    ck_assert(parent_thread.watched_finished_at_return);
    ck_assert_ptr_null(parent->first_child); /* the child is gone */
    ck_assert_uint_eq(refs_of(parent), 1);
    cancel_token_unref(parent);
}
END_TEST

/*
 * Two trees P > C and Q > R.  Thread A cancels C, whose callback cancels
 * Q; thread B cancels R, whose callback cancels P; both callbacks start
 * before either cancels.  Each nested cancel would wait for the other
 * thread's callback: the library must break that cycle, not hang.
 */
struct cross {
    cancel_token_t *p, *c, *q, *r;
    tu_latch_t a_in, b_in;
    bool nested_a, nested_b;
};

static void cross_c_cb(void *arg, int reason)
{
    struct cross *x = arg;
    (void)reason;
    tu_latch_post(&x->a_in);
    tu_latch_wait(&x->b_in);
    x->nested_a = cancel_token_cancel(x->q, 0);
}

static void cross_r_cb(void *arg, int reason)
{
    struct cross *x = arg;
    (void)reason;
    tu_latch_post(&x->b_in);
    tu_latch_wait(&x->a_in);
    x->nested_b = cancel_token_cancel(x->p, 0);
}

struct plain_cancel {
    cancel_token_t *t;
    bool result;
};

static void *plain_cancel_thread(void *arg)
{
    struct plain_cancel *pc = arg;
    pc->result = cancel_token_cancel(pc->t, 0);
    return NULL;
}

START_TEST(callbacks_cancelling_each_others_ancestors_across_threads_do_not_deadlock)
{
    struct cross x;
    x.p = cancel_token_new();
    x.c = cancel_token_child(x.p);
    x.q = cancel_token_new();
    x.r = cancel_token_child(x.q);
    tu_latch_init(&x.a_in);
    tu_latch_init(&x.b_in);
    x.nested_a = x.nested_b = false;
    cancel_callback_t cb_c, cb_r;
    cancel_callback_add(&cb_c, x.c, cross_c_cb, &x);
    cancel_callback_add(&cb_r, x.r, cross_r_cb, &x);
    struct plain_cancel a = { x.c, false }, b = { x.r, false };
    pthread_t ta, tb;
    tu_thread_start(&ta, plain_cancel_thread, &a);
    tu_thread_start(&tb, plain_cancel_thread, &b);
    tu_thread_join(ta); /* hangs (test timeout) if the waits form a cycle */
    tu_thread_join(tb);
    ck_assert(a.result && b.result);
    ck_assert(x.nested_a && x.nested_b);
    cancel_token_t *all[] = { x.p, x.c, x.q, x.r };
    for (int i = 0; i < 4; i++)
        ck_assert(cancel_token_is_cancelled(all[i]));
    cancel_token_unref(x.r);
    cancel_token_unref(x.q);
    cancel_token_unref(x.c);
    cancel_token_unref(x.p);
}
END_TEST

/* ------------------------------------------------------------ allocation failure */

START_TEST(new_fails_with_enomem_when_memory_runs_out)
{
    size_t before = heap_in_use();
    mh_fail_after(1);
    errno = 0;
    cancel_token_t *t = cancel_token_new();
    int err = errno;
    mh_fail_after(0);
    ck_assert_ptr_null(t);
    ck_assert_int_eq(err, ENOMEM);
    if (!UNDER_SANITIZER)
        ck_assert_uint_eq(heap_in_use(), before);
}
END_TEST

START_TEST(child_fails_with_enomem_and_leaves_the_parent_untouched)
{
    cancel_token_t *p = cancel_token_new();
    cancel_token_t *sib = cancel_token_child(p);
    size_t before = heap_in_use();
    int failures = 0;
    cancel_token_t *c = NULL;
    /* Fail each allocation the call makes in turn, until it needs no more. */
    for (long k = 1; k < 100 && !c; k++) {
        mh_fail_after(k);
        errno = 0;
        c = cancel_token_child(p);
        int err = errno;
        long left = mh_countdown;
        mh_fail_after(0);
        /* Counted before any ck_assert: Check allocates for its own records. */
        size_t after = heap_in_use();
        if (c) {
            ck_assert_int_gt(left, 0); /* it succeeded without a failure */
            break;
        }
        failures++;
        ck_assert_int_eq(err, ENOMEM);
        ck_assert_uint_eq(refs_of(p), 1);
        ck_assert_ptr_eq(p->first_child, sib);
        ck_assert_ptr_null(sib->next_sibling);
        if (!UNDER_SANITIZER)
            ck_assert_uint_eq(after, before);
    }
    ck_assert_int_ge(failures, 1);
    ck_assert_ptr_nonnull(c);
    ck_assert(is_child_of(c, p));
    cancel_token_unref(c);
    cancel_token_unref(sib);
    cancel_token_unref(p);
}
END_TEST

static void flag_cb(void *arg, int reason)
{
    *(int *)arg = reason;
}

START_TEST(cancel_still_propagates_and_runs_callbacks_when_memory_runs_out)
{
    cancel_token_t *p = cancel_token_new();
    cancel_token_t *c = cancel_token_child(p);
    int seen = 0;
    cancel_callback_t cb;
    cancel_callback_add(&cb, c, flag_cb, &seen);
    mh_fail_after(1);
    bool ok = cancel_token_cancel(p, EPIPE);
    mh_fail_after(0);
    ck_assert(ok);
    ck_assert_int_eq(cancel_token_reason(c), EPIPE);
    ck_assert_int_eq(seen, EPIPE);
    cancel_token_unref(c);
    cancel_token_unref(p);
}
END_TEST

/* Releasing a token more often than it was referenced is the caller's
 * error: the abort names it instead of blaming the library.  (The token is
 * kept alive here by its child, so the second release reads live memory.) */
static void release_twice(void *arg)
{
    (void)arg;
    cancel_token_t *p = cancel_token_new();
    cancel_token_t *c = cancel_token_child(p);
    cancel_token_unref(p); /* C keeps P */
    cancel_token_unref(p); /* one too many */
    cancel_token_unref(c);
}

START_TEST(releasing_a_token_once_too_often_aborts_naming_the_mistake)
{
    char msg[512];
    int status = tu_run_captured(release_twice, NULL, msg, sizeof msg);
    ck_assert(WIFSIGNALED(status));
    ck_assert_int_eq(WTERMSIG(status), SIGABRT);
    ck_assert_msg(strstr(msg, "cancel_token_unref") && strstr(msg, "no reference left") &&
                  !strstr(msg, "internal invariant"), "message: %s", msg);
}
END_TEST

int main(void)
{
    cancel__token_cache_off = true; /* every token allocation is malloc's, as counted */
    Suite *s = suite_create("token");

    TCase *tc = tcase_create("basics");
    tcase_add_test(tc, new_token_is_a_live_root_with_reason_zero);
    tcase_add_test(tc, cancel_returns_true_once_and_sets_the_reason);
    tcase_add_test(tc, first_reason_wins_over_later_cancels);
    tcase_add_test(tc, reason_zero_or_negative_gives_ecanceled);
    tcase_add_test(tc, any_positive_application_reason_is_kept);
    tcase_add_test(tc, null_token_reads_never_cancelled_and_cancel_null_is_false);
    tcase_add_test(tc, child_of_null_is_a_root);
    tcase_add_test(tc, ref_keeps_a_token_alive_until_the_last_unref);
    suite_add_tcase(s, tc);

    tc = tcase_create("propagation");
    tcase_add_test(tc, cancel_flows_to_every_descendant_with_the_same_reason);
    tcase_add_test(tc, descendant_cancelled_first_keeps_its_own_reason);
    tcase_add_test(tc, child_of_cancelled_parent_is_born_cancelled_with_its_reason);
    tcase_add_test(tc, cancelling_a_child_never_touches_its_parent_or_siblings);
    suite_add_tcase(s, tc);

    tc = tcase_create("memory");
    tcase_set_timeout(tc, TU_TIMEOUT);
    tcase_add_test(tc, releasing_a_token_once_too_often_aborts_naming_the_mistake);
    tcase_add_test(tc, child_keeps_its_parent_without_a_counted_reference);
    tcase_add_test(tc, parent_does_not_keep_children_alive_and_outlives_them_as_needed);
    tcase_add_test(tc, released_ancestors_live_while_a_descendant_is_linked_and_go_with_it);
    tcase_add_test(tc, released_parent_goes_with_its_last_child_or_callback_whichever_is_last);
    tcase_add_test(tc, a_released_tokens_running_callback_keeps_it_after_its_last_child_goes);
    tcase_add_test(tc, each_callback_of_a_released_token_runs_with_the_token_alive);
    tcase_add_test(tc, released_child_leaves_its_parents_list_at_once);
    tcase_add_test(tc, releasing_children_in_any_order_keeps_the_sibling_list_intact);
    tcase_add_test(tc, root_outliving_a_million_released_children_holds_no_memory_for_them);
    tcase_add_test(tc, ten_million_deep_chain_cancels_and_frees_on_a_small_stack);
    suite_add_tcase(s, tc);

    tc = tcase_create("races");
    tcase_set_timeout(tc, TU_TIMEOUT);
    tcase_add_loop_test(tc, cancel_returns_true_exactly_once_across_racing_threads, 0, 50);
    tcase_add_loop_test(tc, cancel_returns_after_every_descendant_and_callback_even_racing_a_middle_cancel, 0, 20);
    tcase_add_loop_test(tc, cancel_of_parent_waits_for_a_child_callback_running_on_another_thread, 0, 5);
    tcase_add_loop_test(tc, cancel_from_a_callback_still_waits_for_callbacks_running_on_other_threads, 0, 5);
    tcase_add_test(tc, cancelling_an_ancestor_from_a_callback_on_the_same_thread_does_not_deadlock);
    tcase_add_loop_test(tc, cancel_whose_callback_frees_the_token_races_an_ancestor_cancel_safely, 0, 20);
    tcase_add_loop_test(tc, callbacks_cancelling_each_others_ancestors_across_threads_do_not_deadlock, 0, 10);
    suite_add_tcase(s, tc);

    tc = tcase_create("memory cache");
    tcase_add_test(tc, released_token_memory_serves_the_next_token_of_the_thread);
    tcase_add_test(tc, the_cache_keeps_a_bounded_number_of_blocks);
    tcase_add_test(tc, an_exiting_thread_hands_its_cached_blocks_back_to_malloc);
    tcase_add_test(tc, every_token_has_a_cache_line_of_its_own);
    tcase_add_test(tc, a_slab_goes_when_its_last_token_does_on_another_thread);
    suite_add_tcase(s, tc);

    tc = tcase_create("allocation failure");
    tcase_add_test(tc, new_fails_with_enomem_when_memory_runs_out);
    tcase_add_test(tc, child_fails_with_enomem_and_leaves_the_parent_untouched);
    tcase_add_test(tc, cancel_still_propagates_and_runs_callbacks_when_memory_runs_out);
    suite_add_tcase(s, tc);

    return tu_run_suite(s);
}

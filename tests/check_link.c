/*
 * check_link.c - linked tokens (cancel_token_any).
 */
#include "internal.h"
#include "testutil.h"

#include <stdlib.h>

#define MS 1000000LL

/* Armed callbacks on T, counted under the lock (white box). */
static int callbacks_on(cancel_token_t *t)
{
    int n = 0;
    cancel__token_lock(t);
    for (struct cancel_cb *cb = t->callbacks; cb; cb = cb->next)
        n++;
    cancel__token_unlock(t);
    return n;
}

static unsigned refs_of(cancel_token_t *t)
{
    return atomic_load(&t->refs);
}

static void count_run(void *arg, int reason)
{
    (void)reason;
    atomic_fetch_add((_Atomic int *)arg, 1);
}

START_TEST(any_is_cancelled_with_the_triggering_sources_reason)
{
    cancel_token_t *src[3] = { cancel_token_new(), cancel_token_new(), cancel_token_new() };
    cancel_token_t *any = cancel_token_any(src, 3);
    ck_assert_ptr_nonnull(any);
    ck_assert(!cancel_token_is_cancelled(any));
    ck_assert(cancel_token_cancel(src[1], EPIPE));
    /* Synchronous: the link's callback ran inside the source's cancel. */
    ck_assert_int_eq(cancel_token_reason(any), EPIPE);
    cancel_token_cancel(src[2], ECONNRESET);
    ck_assert_int_eq(cancel_token_reason(any), EPIPE);
    ck_assert(!cancel_token_is_cancelled(src[0]));
    ck_assert_int_eq(cancel_token_reason(src[2]), ECONNRESET);
    cancel_token_unref(any);
    for (int i = 0; i < 3; i++)
        cancel_token_unref(src[i]);
}
END_TEST

START_TEST(callbacks_on_any_have_run_when_the_sources_cancel_returns)
{
    cancel_token_t *src = cancel_token_new();
    cancel_token_t *any = cancel_token_any(&src, 1);
    cancel_token_t *below = cancel_token_child(any);
    _Atomic int runs = 0;
    cancel_callback_t cb;
    ck_assert_int_eq(cancel_callback_add(&cb, below, count_run, &runs), 0);
    cancel_token_cancel(src, 0);
    ck_assert_int_eq(atomic_load(&runs), 1);
    ck_assert_int_eq(cancel_token_reason(below), ECANCELED);
    cancel_callback_remove(&cb);
    cancel_token_unref(below);
    cancel_token_unref(any);
    cancel_token_unref(src);
}
END_TEST

START_TEST(any_with_an_already_cancelled_source_is_born_cancelled_with_its_reason)
{
    cancel_token_t *live = cancel_token_new();
    cancel_token_t *dead = cancel_token_new();
    cancel_token_cancel(dead, EHOSTDOWN);
    cancel_token_t *src[2] = { live, dead };
    cancel_token_t *any = cancel_token_any(src, 2);
    ck_assert_ptr_nonnull(any);
    ck_assert_int_eq(cancel_token_reason(any), EHOSTDOWN);
    cancel_token_cancel(live, EPIPE);
    ck_assert_int_eq(cancel_token_reason(any), EHOSTDOWN);
    cancel_token_unref(any);
    ck_assert_int_eq(callbacks_on(live), 0);
    cancel_token_unref(live);
    cancel_token_unref(dead);
}
END_TEST

START_TEST(any_of_nothing_is_cancelled_only_by_cancel)
{
    cancel_token_t *none = cancel_token_any(NULL, 0);
    ck_assert_ptr_nonnull(none);
    cancel_token_t *nulls[2] = { NULL, NULL };
    cancel_token_t *of_nulls = cancel_token_any(nulls, 2);
    ck_assert_ptr_nonnull(of_nulls);
    ck_assert(!cancel_token_is_cancelled(none));
    ck_assert(!cancel_token_is_cancelled(of_nulls));
    ck_assert(!cancel_token_deadline(of_nulls, NULL));
    ck_assert(cancel_token_cancel(none, 0));
    ck_assert(cancel_token_cancel(of_nulls, EPIPE));
    ck_assert_int_eq(cancel_token_reason(of_nulls), EPIPE);
    cancel_token_unref(none);
    cancel_token_unref(of_nulls);
}
END_TEST

START_TEST(any_with_null_tokens_and_sources_is_einval)
{
    errno = 0;
    ck_assert_ptr_null(cancel_token_any(NULL, 1));
    ck_assert_int_eq(errno, EINVAL);
}
END_TEST

START_TEST(any_that_cannot_allocate_fails_enomem_and_leaves_nothing_behind)
{
    cancel_token_t *src = cancel_token_new();
    cancel_token_t *list[1] = { src };
    /* Far more sources than memory: the arrays cannot be allocated (the
     * list itself is never read before they are).  The sanitizers abort on
     * such a request instead of failing it, so they skip that half. */
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
    errno = 0;
    ck_assert_ptr_null(cancel_token_any(list, SIZE_MAX / 128));
    ck_assert_int_eq(errno, ENOMEM);
#endif
    errno = 0;
    ck_assert_ptr_null(cancel_token_any(list, SIZE_MAX / 2));
    ck_assert_int_eq(errno, ENOMEM);
    ck_assert_int_eq(callbacks_on(src), 0);
    ck_assert_uint_eq(refs_of(src), 1);
    cancel_token_unref(src);
}
END_TEST

START_TEST(cancelling_any_never_touches_its_sources)
{
    cancel_token_t *src[2] = { cancel_token_new(), cancel_token_new() };
    cancel_token_t *any = cancel_token_any(src, 2);
    ck_assert(cancel_token_cancel(any, 0));
    ck_assert(!cancel_token_is_cancelled(src[0]));
    ck_assert(!cancel_token_is_cancelled(src[1]));
    cancel_token_unref(any);
    cancel_token_unref(src[0]);
    cancel_token_unref(src[1]);
}
END_TEST

START_TEST(any_keeps_its_sources_alive_while_it_lives)
{
    cancel_token_t *src = cancel_token_with_timeout(NULL, 30 * MS);
    cancel_token_t *any = cancel_token_any(&src, 1);
    ck_assert_uint_eq(refs_of(src), 2); /* ours and the linked token's */
    cancel_token_unref(src);
    /* The source's deadline still fires and reaches the linked token. */
    struct timespec guard = cancel__add_ns(cancel__now(), TU_WAKE_GUARD_NS);
    ck_assert_int_eq(cancel_token_wait(any, &guard), 0);
    ck_assert_int_eq(cancel_token_reason(any), ETIMEDOUT);
    cancel_token_unref(any);
}
END_TEST

START_TEST(releasing_any_leaves_no_registration_on_a_long_lived_source)
{
    cancel_token_t *source = cancel_token_new();
    cancel_token_t *other = cancel_token_new();
    for (int i = 0; i < 20000; i++) {
        cancel_token_t *src[2] = { source, other };
        cancel_token_t *any = cancel_token_any(src, 2);
        ck_assert_ptr_nonnull(any);
        cancel_token_unref(any);
    }
    ck_assert_int_eq(callbacks_on(source), 0);
    ck_assert_uint_eq(refs_of(source), 1);
    /* Cancelling the source runs exactly the one callback we add now. */
    _Atomic int runs = 0;
    cancel_callback_t cb;
    cancel_callback_add(&cb, source, count_run, &runs);
    cancel_token_cancel(source, 0);
    ck_assert_int_eq(atomic_load(&runs), 1);
    cancel_token_unref(source);
    cancel_token_unref(other);
}
END_TEST

START_TEST(any_reports_the_earliest_of_its_sources_effective_deadlines)
{
    cancel_token_t *far = cancel_token_with_timeout(NULL, 100000 * MS);
    cancel_token_t *near_parent = cancel_token_with_timeout(NULL, 50000 * MS);
    cancel_token_t *near = cancel_token_child(near_parent);
    cancel_token_t *plain = cancel_token_new();
    cancel_token_t *src[4] = { far, NULL, near, plain };
    cancel_token_t *any = cancel_token_any(src, 4);
    struct timespec x, want;
    ck_assert(cancel_token_deadline(near_parent, &want));
    ck_assert(cancel_token_deadline(any, &x));
    ck_assert_int_eq(cancel__timespec_cmp(&x, &want), 0);
    /* Below the linked token, and through a linked token of linked tokens. */
    cancel_token_t *below = cancel_token_child(any);
    cancel_token_t *outer = cancel_token_any(&below, 1);
    ck_assert(cancel_token_deadline(outer, &x));
    ck_assert_int_eq(cancel__timespec_cmp(&x, &want), 0);
    cancel_token_t *only_plain = cancel_token_any(&plain, 1);
    ck_assert(!cancel_token_deadline(only_plain, &x));
    cancel_token_unref(only_plain);
    cancel_token_unref(outer);
    cancel_token_unref(below);
    cancel_token_unref(any);
    cancel_token_unref(plain);
    cancel_token_unref(near);
    cancel_token_unref(near_parent);
    cancel_token_unref(far);
}
END_TEST

START_TEST(any_of_any_propagates_the_reason)
{
    cancel_token_t *a = cancel_token_new();
    cancel_token_t *inner = cancel_token_any(&a, 1);
    cancel_token_t *outer = cancel_token_any(&inner, 1);
    cancel_token_cancel(a, ENOLINK);
    ck_assert_int_eq(cancel_token_reason(outer), ENOLINK);
    cancel_token_unref(outer);
    cancel_token_unref(inner);
    cancel_token_unref(a);
}
END_TEST

struct race {
    cancel_token_t *source;
    cancel_token_t *any;
    tu_latch_t go;
};

static void *cancel_source(void *arg)
{
    struct race *r = arg;
    tu_latch_wait(&r->go);
    cancel_token_cancel(r->source, EPIPE);
    return NULL;
}

START_TEST(any_released_while_its_source_is_cancelled_is_safe)
{
    /* Shakes the release / fire interleavings (run under TSan and ASan). */
    for (int i = 0; i < 300; i++) {
        struct race r;
        tu_latch_init(&r.go);
        r.source = cancel_token_new();
        r.any = cancel_token_any(&r.source, 1);
        pthread_t th;
        tu_thread_start(&th, cancel_source, &r);
        tu_latch_post(&r.go);
        cancel_token_unref(r.any);
        tu_thread_join(th);
        ck_assert_int_eq(callbacks_on(r.source), 0);
        ck_assert_uint_eq(refs_of(r.source), 1);
        cancel_token_unref(r.source);
    }
}
END_TEST

static void release_in_callback(void *arg, int reason)
{
    (void)reason;
    cancel_token_unref(arg);
}

START_TEST(any_released_by_its_own_callback_during_the_sources_cancel)
{
    /* The last reference goes inside the link's own cancel, on the same
     * thread: the forget must not wait for itself. */
    cancel_token_t *src = cancel_token_new();
    cancel_token_t *any = cancel_token_any(&src, 1);
    cancel_callback_t cb;
    cancel_callback_add(&cb, any, release_in_callback, any);
    cancel_token_cancel(src, 0);
    ck_assert_int_eq(callbacks_on(src), 0);
    ck_assert_uint_eq(refs_of(src), 1);
    cancel_token_unref(src);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("link");
    TCase *tc = tcase_create("any");
    tcase_set_timeout(tc, TU_TIMEOUT);
    tcase_add_test(tc, any_is_cancelled_with_the_triggering_sources_reason);
    tcase_add_test(tc, callbacks_on_any_have_run_when_the_sources_cancel_returns);
    tcase_add_test(tc, any_with_an_already_cancelled_source_is_born_cancelled_with_its_reason);
    tcase_add_test(tc, any_of_nothing_is_cancelled_only_by_cancel);
    tcase_add_test(tc, any_with_null_tokens_and_sources_is_einval);
    tcase_add_test(tc, any_that_cannot_allocate_fails_enomem_and_leaves_nothing_behind);
    tcase_add_test(tc, cancelling_any_never_touches_its_sources);
    tcase_add_test(tc, any_keeps_its_sources_alive_while_it_lives);
    tcase_add_test(tc, releasing_any_leaves_no_registration_on_a_long_lived_source);
    tcase_add_test(tc, any_reports_the_earliest_of_its_sources_effective_deadlines);
    tcase_add_test(tc, any_of_any_propagates_the_reason);
    tcase_add_test(tc, any_released_while_its_source_is_cancelled_is_safe);
    tcase_add_test(tc, any_released_by_its_own_callback_during_the_sources_cancel);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}

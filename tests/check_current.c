/*
 * check_current.c - the calling thread's current token, cancel_check and
 * shields (SPEC.md "The current token, checks and shields").
 */
#include "internal.h"
#include "testutil.h"
#include "malloc_hook.h"

#include <malloc.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1
#else
#define UNDER_SANITIZER 0
#endif

START_TEST(thread_starts_with_no_current_token)
{
    ck_assert_ptr_null(cancel_current());
    ck_assert_int_eq(cancel_check(), 0);
}
END_TEST

START_TEST(enter_returns_the_previous_token_and_leave_restores_it)
{
    cancel_token_t *a = cancel_token_new(), *b = cancel_token_new();
    ck_assert_ptr_null(cancel_enter(a));
    ck_assert_ptr_eq(cancel_current(), a);
    cancel_token_t *prev = cancel_enter(b);
    ck_assert_ptr_eq(prev, a);
    ck_assert_ptr_eq(cancel_current(), b);
    cancel_leave(prev);
    ck_assert_ptr_eq(cancel_current(), a);
    cancel_leave(NULL);
    ck_assert_ptr_null(cancel_current());
    cancel_token_unref(b);
    cancel_token_unref(a);
}
END_TEST

START_TEST(enter_takes_no_reference)
{
    cancel_token_t *t = cancel_token_new();
    cancel_token_t *prev = cancel_enter(t);
    ck_assert_uint_eq(atomic_load(&t->refs), 1);
    cancel_leave(prev);
    ck_assert_uint_eq(atomic_load(&t->refs), 1);
    cancel_token_unref(t);
}
END_TEST

START_TEST(check_is_zero_under_a_live_current_token)
{
    cancel_token_t *t = cancel_token_new();
    cancel_token_t *prev = cancel_enter(t);
    ck_assert_int_eq(cancel_check(), 0);
    cancel_leave(prev);
    cancel_token_unref(t);
}
END_TEST

START_TEST(check_maps_etimedout_to_etimedout_and_every_other_reason_to_ecanceled)
{
    struct { int reason, expect; } cases[] = {
        { ETIMEDOUT, ETIMEDOUT }, { ECANCELED, ECANCELED }, { 0, ECANCELED },
        { EPIPE, ECANCELED }, { 123456, ECANCELED }, { -5, ECANCELED },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cancel_token_t *t = cancel_token_new();
        cancel_token_t *prev = cancel_enter(t);
        ck_assert_int_eq(cancel_check(), 0);
        cancel_token_cancel(t, cases[i].reason);
        ck_assert_int_eq(cancel_check(), cases[i].expect);
        ck_assert_int_eq(cancel_check(), cases[i].expect); /* sticky */
        cancel_leave(prev);
        ck_assert_int_eq(cancel_check(), 0);
        cancel_token_unref(t);
    }
}
END_TEST

START_TEST(check_sees_cancellation_through_an_ancestor)
{
    cancel_token_t *p = cancel_token_new();
    cancel_token_t *c = cancel_token_child(p);
    cancel_token_t *prev = cancel_enter(c);
    cancel_token_cancel(p, ETIMEDOUT);
    ck_assert_int_eq(cancel_check(), ETIMEDOUT);
    cancel_leave(prev);
    cancel_token_unref(c);
    cancel_token_unref(p);
}
END_TEST

START_TEST(enter_null_means_no_current_token)
{
    cancel_token_t *t = cancel_token_new();
    cancel_token_cancel(t, 0);
    cancel_token_t *outer = cancel_enter(t);
    ck_assert_int_eq(cancel_check(), ECANCELED);
    cancel_token_t *prev = cancel_enter(NULL);
    ck_assert_ptr_eq(prev, t);
    ck_assert_ptr_null(cancel_current());
    ck_assert_int_eq(cancel_check(), 0);
    cancel_leave(prev);
    ck_assert_int_eq(cancel_check(), ECANCELED);
    cancel_leave(outer);
    cancel_token_unref(t);
}
END_TEST

/* ------------------------------------------------------------ shields */

START_TEST(shield_hides_a_cancelled_current_token_and_end_restores_it)
{
    cancel_token_t *t = cancel_token_new();
    cancel_token_cancel(t, ETIMEDOUT);
    cancel_token_t *prev = cancel_enter(t);
    cancel_shield_begin();
    ck_assert_ptr_null(cancel_current());
    ck_assert_int_eq(cancel_check(), 0);
    cancel_shield_end();
    ck_assert_ptr_eq(cancel_current(), t);
    ck_assert_int_eq(cancel_check(), ETIMEDOUT);
    cancel_leave(prev);
    cancel_token_unref(t);
}
END_TEST

START_TEST(token_entered_inside_a_shield_is_current_and_checked)
{
    cancel_token_t *outer = cancel_token_new(), *inner = cancel_token_new();
    cancel_token_cancel(outer, 0);
    cancel_token_t *prev = cancel_enter(outer);
    cancel_shield_begin();
    cancel_token_t *in_prev = cancel_enter(inner);
    ck_assert_ptr_null(in_prev);
    ck_assert_ptr_eq(cancel_current(), inner);
    ck_assert_int_eq(cancel_check(), 0);
    cancel_token_cancel(inner, ETIMEDOUT);
    ck_assert_int_eq(cancel_check(), ETIMEDOUT);
    /* End without leaving: end still restores exactly what begin hid. */
    cancel_shield_end();
    ck_assert_ptr_eq(cancel_current(), outer);
    ck_assert_int_eq(cancel_check(), ECANCELED);
    cancel_leave(prev);
    cancel_token_unref(inner);
    cancel_token_unref(outer);
}
END_TEST

START_TEST(shields_nest_forty_deep_and_each_end_restores_its_level)
{
    enum { LEVELS = 40 };
    cancel_token_t *tok[LEVELS];
    cancel_token_t *prev = NULL;
    for (int i = 0; i < LEVELS; i++) {
        tok[i] = cancel_token_new();
        if (i % 2)
            cancel_token_cancel(tok[i], i % 4 == 1 ? ETIMEDOUT : ECANCELED);
    }
    prev = cancel_enter(tok[0]);
    for (int i = 1; i < LEVELS; i++) {
        cancel_shield_begin();
        ck_assert_ptr_null(cancel_current());
        ck_assert_int_eq(cancel_check(), 0);
        cancel_enter(tok[i]);
    }
    for (int i = LEVELS - 1; i >= 1; i--) {
        ck_assert_ptr_eq(cancel_current(), tok[i]);
        int expect = i % 2 ? (i % 4 == 1 ? ETIMEDOUT : ECANCELED) : 0;
        ck_assert_int_eq(cancel_check(), expect);
        cancel_shield_end();
    }
    ck_assert_ptr_eq(cancel_current(), tok[0]);
    cancel_leave(prev);
    ck_assert_ptr_null(cancel_current());
    for (int i = 0; i < LEVELS; i++)
        cancel_token_unref(tok[i]);
}
END_TEST

START_TEST(deep_shields_give_back_their_memory)
{
    cancel_token_t *t = cancel_token_new();
    cancel_token_t *prev = cancel_enter(t);
    /* Warm up (the first growth may allocate allocator state). */
    for (int i = 0; i < 100; i++)
        cancel_shield_begin();
    for (int i = 0; i < 100; i++)
        cancel_shield_end();
    size_t before = mallinfo2().uordblks;
    for (int round = 0; round < 100; round++) {
        for (int i = 0; i < 1000; i++)
            cancel_shield_begin();
        for (int i = 0; i < 1000; i++)
            cancel_shield_end();
    }
    size_t after = mallinfo2().uordblks;
    ck_assert_ptr_eq(cancel_current(), t);
    /* A leaked stack would be 8 KB a round; freed blocks that the allocator
     * caches per thread still count as in use, hence the slack. */
    if (!UNDER_SANITIZER)
        ck_assert_uint_le(after, before + 16 * 1024);
    cancel_leave(prev);
    cancel_token_unref(t);
}
END_TEST

START_TEST(unbalanced_shield_end_changes_nothing)
{
    cancel_token_t *t = cancel_token_new();
    cancel_token_t *prev = cancel_enter(t);
    cancel_shield_end();
    ck_assert_ptr_eq(cancel_current(), t);
    cancel_shield_begin();
    cancel_shield_end();
    cancel_shield_end();
    ck_assert_ptr_eq(cancel_current(), t);
    cancel_leave(prev);
    cancel_token_unref(t);
}
END_TEST

START_TEST(shield_still_hides_when_memory_runs_out_deep_down)
{
    enum { LEVELS = 40 };
    cancel_token_t *tok[LEVELS];
    for (int i = 0; i < LEVELS; i++) {
        tok[i] = cancel_token_new();
        cancel_token_cancel(tok[i], 0);
    }
    cancel_token_t *prev = cancel_enter(tok[0]);
    /* Every allocation from level 17 on fails; some later ones succeed. */
    for (int i = 1; i < LEVELS; i++) {
        mh_fail_after(i >= 17 && i < 30 ? 1 : 0);
        cancel_shield_begin();
        mh_fail_after(0);
        ck_assert_int_eq(cancel_check(), 0); /* hidden, whatever happened */
        cancel_enter(tok[i]);
    }
    for (int i = LEVELS - 1; i >= 1; i--) {
        cancel_shield_end();
        /* A level whose save failed restores no token, never a wrong one. */
        cancel_token_t *cur = cancel_current();
        ck_assert(cur == NULL || cur == tok[i - 1]);
        if (i <= 16)
            ck_assert_ptr_eq(cur, tok[i - 1]); /* the inline levels always */
    }
    ck_assert_ptr_eq(cancel_current(), tok[0]);
    cancel_leave(prev);
    for (int i = 0; i < LEVELS; i++)
        cancel_token_unref(tok[i]);
}
END_TEST

/* ------------------------------------------------------------ per thread */

struct other_thread {
    cancel_token_t *mine;
    cancel_token_t *seen_at_start;
    int check_at_start;
    cancel_token_t *seen_after_enter;
    int check_after_enter;
    int check_in_shield;
};

static void *other_thread_fn(void *arg)
{
    struct other_thread *o = arg;
    o->seen_at_start = cancel_current();
    o->check_at_start = cancel_check();
    cancel_enter(o->mine);
    o->seen_after_enter = cancel_current();
    o->check_after_enter = cancel_check();
    cancel_shield_begin();
    o->check_in_shield = cancel_check();
    /* Left shielded and entered on purpose: nothing leaks to other threads. */
    return NULL;
}

START_TEST(current_token_and_shields_are_per_thread)
{
    cancel_token_t *main_tok = cancel_token_new();
    cancel_token_cancel(main_tok, ETIMEDOUT);
    cancel_token_t *prev = cancel_enter(main_tok);
    struct other_thread o = { 0 };
    o.mine = cancel_token_new();
    pthread_t th;
    tu_thread_start(&th, other_thread_fn, &o);
    tu_thread_join(th);
    ck_assert_ptr_null(o.seen_at_start);
    ck_assert_int_eq(o.check_at_start, 0);
    ck_assert_ptr_eq(o.seen_after_enter, o.mine);
    ck_assert_int_eq(o.check_after_enter, 0);
    ck_assert_int_eq(o.check_in_shield, 0);
    ck_assert_ptr_eq(cancel_current(), main_tok);    /* untouched by the thread */
    ck_assert_int_eq(cancel_check(), ETIMEDOUT);
    cancel_leave(prev);
    cancel_token_unref(o.mine);
    cancel_token_unref(main_tok);
}
END_TEST

int main(void)
{
    cancel__token_cache_off = true; /* every token allocation is malloc's, as counted */
    Suite *s = suite_create("current");

    TCase *tc = tcase_create("current");
    tcase_add_test(tc, thread_starts_with_no_current_token);
    tcase_add_test(tc, enter_returns_the_previous_token_and_leave_restores_it);
    tcase_add_test(tc, enter_takes_no_reference);
    tcase_add_test(tc, check_is_zero_under_a_live_current_token);
    tcase_add_test(tc, check_maps_etimedout_to_etimedout_and_every_other_reason_to_ecanceled);
    tcase_add_test(tc, check_sees_cancellation_through_an_ancestor);
    tcase_add_test(tc, enter_null_means_no_current_token);
    suite_add_tcase(s, tc);

    tc = tcase_create("shields");
    tcase_add_test(tc, shield_hides_a_cancelled_current_token_and_end_restores_it);
    tcase_add_test(tc, token_entered_inside_a_shield_is_current_and_checked);
    tcase_add_test(tc, shields_nest_forty_deep_and_each_end_restores_its_level);
    tcase_add_test(tc, deep_shields_give_back_their_memory);
    tcase_add_test(tc, unbalanced_shield_end_changes_nothing);
    tcase_add_test(tc, shield_still_hides_when_memory_runs_out_deep_down);
    suite_add_tcase(s, tc);

    tc = tcase_create("threads");
    tcase_set_timeout(tc, TU_TIMEOUT);
    tcase_add_test(tc, current_token_and_shields_are_per_thread);
    suite_add_tcase(s, tc);

    return tu_run_suite(s);
}

/*
 * check_time.c - extreme deadlines (time.c: cancel__ns_until, cancel__add_ns).
 *
 * A deadline may be any valid timespec, {INT64_MIN, 0} and {INT64_MAX,
 * 999999999} included.  A past one returns at once; a far one waits for
 * the cancel.  Each call runs on a helper thread and the test thread waits
 * for it with a 2 s guard, so a spin or an endless sleep is an assertion,
 * not a watchdog kill.  Under UBSan a signed overflow aborts the test.
 */
#include "internal.h"
#include "testutil.h"

#include <semaphore.h>
#include <stdint.h>

enum { CALL_WAIT, CALL_SLEEP_UNTIL, CALL_DEADLINE_TOKEN };

struct call {
    int kind;
    struct timespec at;
    cancel_token_t *token;      /* cancel_token_wait's token */
    sem_t done;
    int rc;
    int err;
};

static void *call_main(void *p)
{
    struct call *c = p;
    switch (c->kind) {
    case CALL_WAIT:
        c->rc = cancel_token_wait(c->token, &c->at);
        break;
    case CALL_SLEEP_UNTIL:
        c->rc = cancel_sleep_until(&c->at);
        c->err = c->rc < 0 ? errno : 0;
        break;
    case CALL_DEADLINE_TOKEN: {
        cancel_token_t *t = cancel_token_with_deadline(NULL, &c->at);
        c->rc = t ? cancel_token_reason(t) : -1;
        c->err = t ? 0 : errno;
        cancel_token_unref(t);
        break;
    }
    }
    sem_post(&c->done);
    return NULL;
}

/* Runs C on a thread; true when it returned within the 2 s guard. */
static bool run_bounded(struct call *c)
{
    sem_init(&c->done, 0, 0);
    pthread_t th;
    tu_thread_start(&th, call_main, c);
    struct timespec guard;
    clock_gettime(CLOCK_REALTIME, &guard);
    guard.tv_sec += TU_WAKE_GUARD_NS / 1000000000;
    int r;
    while ((r = sem_timedwait(&c->done, &guard)) != 0 && errno == EINTR)
        ;
    if (r != 0)
        return false;   /* the thread is left behind: the test fails */
    tu_thread_join(th);
    return true;
}

static const struct timespec past[] = {
    { INT64_MIN, 0 },
    { INT64_MIN, 999999999 },
    { INT64_MIN + 1, 0 },
    { -1, 999999999 },
    { 0, 0 },
    { 1, 0 },
};
enum { NPAST = sizeof past / sizeof past[0] };

START_TEST(token_wait_on_a_long_past_deadline_times_out_at_once)
{
    struct call c = { .kind = CALL_WAIT, .at = past[_i] };
    c.token = cancel_token_new();
    ck_assert_msg(run_bounded(&c), "cancel_token_wait({%lld, %ld}) did not return",
                  (long long)past[_i].tv_sec, past[_i].tv_nsec);
    ck_assert_int_eq(c.rc, ETIMEDOUT);
    cancel_token_unref(c.token);
}
END_TEST

START_TEST(sleep_until_a_long_past_deadline_returns_at_once)
{
    struct call c = { .kind = CALL_SLEEP_UNTIL, .at = past[_i] };
    ck_assert_msg(run_bounded(&c), "cancel_sleep_until({%lld, %ld}) did not return",
                  (long long)past[_i].tv_sec, past[_i].tv_nsec);
    ck_assert_int_eq(c.rc, 0);
}
END_TEST

START_TEST(a_token_with_a_long_past_deadline_is_born_timed_out)
{
    struct call c = { .kind = CALL_DEADLINE_TOKEN, .at = past[_i] };
    ck_assert(run_bounded(&c));
    ck_assert_int_eq(c.err, 0);
    ck_assert_int_eq(c.rc, ETIMEDOUT);
}
END_TEST

struct canceller {
    cancel_token_t *t;
    pid_t tid;
};

static void *cancel_later(void *p)
{
    struct canceller *k = p;
    tu_wait_until_sleeping(k->tid);
    cancel_token_cancel(k->t, ECANCELED);
    return NULL;
}

struct far_wait {
    cancel_token_t *t;
    struct timespec at;
    pid_t tid;
    sem_t started;
    int rc;
};

static void *far_wait_main(void *p)
{
    struct far_wait *f = p;
    f->tid = tu_gettid();
    sem_post(&f->started);
    f->rc = cancel_token_wait(f->t, &f->at);
    return NULL;
}

START_TEST(token_wait_until_the_end_of_time_waits_for_the_cancel)
{
    struct far_wait f = { .at = { INT64_MAX, 999999999 } };
    f.t = cancel_token_new();
    f.rc = -1;
    sem_init(&f.started, 0, 0);
    pthread_t w, k;
    tu_thread_start(&w, far_wait_main, &f);
    sem_wait(&f.started);
    /* Not yet timed out: the wait is still blocked a moment later. */
    struct canceller c = { f.t, f.tid };
    int64_t t0 = tu_now_ns();
    tu_thread_start(&k, cancel_later, &c);
    tu_thread_join(k);
    tu_thread_join(w);
    ck_assert_int_eq(f.rc, 0);
    ck_assert_int_lt(tu_now_ns() - t0, TU_WAKE_GUARD_NS + 1000000000LL);
    cancel_token_unref(f.t);
}
END_TEST

START_TEST(sleep_until_the_end_of_time_ends_with_the_cancel)
{
    int64_t t0 = tu_now_ns();
    cancel_token_t *t = cancel_token_with_timeout(NULL, 20 * 1000000LL);
    cancel_token_t *prev = cancel_enter(t);
    struct timespec at = { INT64_MAX, 999999999 };
    int rc = cancel_sleep_until(&at);
    int err = errno;
    cancel_leave(prev);
    ck_assert_int_eq(rc, -1);
    ck_assert_int_eq(err, ETIMEDOUT);
    ck_assert_int_ge(tu_now_ns() - t0, 20 * 1000000LL);
    cancel_token_unref(t);
}
END_TEST

START_TEST(ns_until_saturates_instead_of_overflowing)
{
    struct timespec min = { INT64_MIN, 0 }, max = { INT64_MAX, 999999999 };
    ck_assert(cancel__ns_until(&min) == INT64_MIN);
    ck_assert(cancel__ns_until(&max) == INT64_MAX);
    struct timespec now = cancel__now();
    struct timespec soon = cancel__add_ns(now, 1000000000LL);
    int64_t left = cancel__ns_until(&soon);
    ck_assert(left > 0 && left <= 1000000000LL);
}
END_TEST

START_TEST(add_ns_saturates_at_both_ends)
{
    struct timespec t = cancel__add_ns((struct timespec){ INT64_MAX - 1, 999999999 }, 1);
    ck_assert(t.tv_sec == INT64_MAX && t.tv_nsec == 0);
    t = cancel__add_ns((struct timespec){ INT64_MAX, 999999999 }, 1);
    ck_assert(t.tv_sec == INT64_MAX && t.tv_nsec == 999999999);
    t = cancel__add_ns((struct timespec){ INT64_MAX, 0 }, 0);
    ck_assert(t.tv_sec == INT64_MAX && t.tv_nsec == 0);
    t = cancel__add_ns((struct timespec){ INT64_MAX - 10, 0 }, INT64_MAX);
    ck_assert(t.tv_sec == INT64_MAX && t.tv_nsec == 999999999);
    t = cancel__add_ns((struct timespec){ INT64_MIN + 1, 0 }, INT64_MIN);
    ck_assert(t.tv_sec == INT64_MIN && t.tv_nsec == 0);
    t = cancel__add_ns((struct timespec){ -3, 500000000 }, -1000000000LL);
    ck_assert(t.tv_sec == -4 && t.tv_nsec == 500000000);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("time");
    TCase *tc = tcase_create("extreme_deadlines");
    tcase_set_timeout(tc, TU_TIMEOUT);
    tcase_add_loop_test(tc, token_wait_on_a_long_past_deadline_times_out_at_once, 0, NPAST);
    tcase_add_loop_test(tc, sleep_until_a_long_past_deadline_returns_at_once, 0, NPAST);
    tcase_add_loop_test(tc, a_token_with_a_long_past_deadline_is_born_timed_out, 0, NPAST);
    tcase_add_test(tc, token_wait_until_the_end_of_time_waits_for_the_cancel);
    tcase_add_test(tc, sleep_until_the_end_of_time_ends_with_the_cancel);
    tcase_add_test(tc, ns_until_saturates_instead_of_overflowing);
    tcase_add_test(tc, add_ns_saturates_at_both_ends);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(suite());
}

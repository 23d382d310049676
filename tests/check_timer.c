/*
 * check_timer.c - deadlines: cancel_token_with_deadline / _with_timeout /
 * cancel_token_deadline and the library timer thread.
 *
 * Timing is asserted as lower bounds (a deadline never fires early) plus a
 * generous upper guard; the tests synchronise on the tokens themselves
 * (cancel_token_wait), never on sleeps.
 */
#include "internal.h"
#include "testutil.h"

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_THREAD__)
/* The fork tests start library threads in a child forked from a threaded
 * process, which ThreadSanitizer refuses by default. */
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
    return "die_after_fork=0";
}
#endif

#define MS 1000000LL

static int64_t ts_ns(const struct timespec *t)
{
    return (int64_t)t->tv_sec * 1000000000LL + t->tv_nsec;
}

static struct timespec in_ns(int64_t ns)
{
    return cancel__add_ns(cancel__now(), ns);
}

/* Waits (bounded by the 2 s guard) for T to be cancelled; returns wait's code. */
static int await(cancel_token_t *t)
{
    struct timespec guard = in_ns(TU_WAKE_GUARD_NS);
    return cancel_token_wait(t, &guard);
}

/* Records, in the timer thread, when the deadline fired and in what order. */
struct fired {
    pthread_mutex_t mutex;
    int n;
    int order[64];
    int64_t at[64];
    int reason[64];
    bool on_timer[64];          /* fired by the timer thread, not inline */
};

static struct fired fired = { PTHREAD_MUTEX_INITIALIZER, 0, { 0 }, { 0 }, { 0 }, { 0 } };
/* Posted by on_fire after it recorded: the test waits on it, not on the
 * token (its other callbacks may run before on_fire does). */
static tu_latch_t fired_latch;

static pthread_t test_thread;

static void fired_setup(void)
{
    test_thread = pthread_self();
    tu_latch_init(&fired_latch);
}

static void await_fired(int n)
{
    while (n-- > 0)
        tu_latch_wait(&fired_latch);
}

struct tag {
    int id;
};

static void on_fire(void *arg, int reason)
{
    const struct tag *tag = arg;
    int64_t now = tu_now_ns();
    pthread_mutex_lock(&fired.mutex);
    if (fired.n < 64) {
        fired.order[fired.n] = tag->id;
        fired.at[fired.n] = now;
        fired.reason[fired.n] = reason;
        fired.on_timer[fired.n] = !pthread_equal(pthread_self(), test_thread);
        fired.n++;
    }
    pthread_mutex_unlock(&fired.mutex);
    tu_latch_post(&fired_latch);
}

START_TEST(deadline_never_fires_before_its_deadline)
{
    struct timespec at = in_ns(50 * MS);
    cancel_token_t *t = cancel_token_with_deadline(NULL, &at);
    ck_assert_ptr_nonnull(t);
    struct tag tag = { 1 };
    cancel_callback_t cb;
    ck_assert_int_eq(cancel_callback_add(&cb, t, on_fire, &tag), 0);
    ck_assert(!cancel_token_is_cancelled(t));
    await_fired(1);
    pthread_mutex_lock(&fired.mutex);
    ck_assert_int_eq(fired.n, 1);
    int64_t fired_at = fired.at[0];
    ck_assert_int_eq(fired.reason[0], ETIMEDOUT);
    pthread_mutex_unlock(&fired.mutex);
    ck_assert_int_ge(fired_at, ts_ns(&at));
    ck_assert_int_lt(fired_at - ts_ns(&at), TU_WAKE_GUARD_NS);
    ck_assert_int_eq(await(t), 0);
    ck_assert_int_eq(cancel_token_reason(t), ETIMEDOUT);
    cancel_callback_remove(&cb);
    cancel_token_unref(t);
}
END_TEST

START_TEST(timeout_fires_with_etimedout_within_the_upper_guard)
{
    int64_t t0 = tu_now_ns();
    cancel_token_t *t = cancel_token_with_timeout(NULL, 30 * MS);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(await(t), 0);
    int64_t elapsed = tu_now_ns() - t0;
    ck_assert_int_ge(elapsed, 30 * MS);
    ck_assert_int_lt(elapsed, TU_WAKE_GUARD_NS);
    ck_assert_int_eq(cancel_token_reason(t), ETIMEDOUT);
    cancel_token_unref(t);
}
END_TEST

START_TEST(two_deadlines_fire_in_deadline_order)
{
    /* Created latest-first, so the heap, not creation order, decides. */
    struct tag late = { 2 }, early = { 1 };
    cancel_token_t *b = cancel_token_with_timeout(NULL, 80 * MS);
    cancel_token_t *a = cancel_token_with_timeout(NULL, 40 * MS);
    cancel_callback_t cba, cbb;
    cancel_callback_add(&cbb, b, on_fire, &late);
    cancel_callback_add(&cba, a, on_fire, &early);
    await_fired(2);
    pthread_mutex_lock(&fired.mutex);
    ck_assert_int_eq(fired.n, 2);
    ck_assert_int_eq(fired.order[0], 1);
    ck_assert_int_eq(fired.order[1], 2);
    ck_assert_int_le(fired.at[0], fired.at[1]);
    pthread_mutex_unlock(&fired.mutex);
    cancel_callback_remove(&cba);
    cancel_callback_remove(&cbb);
    cancel_token_unref(a);
    cancel_token_unref(b);
}
END_TEST

START_TEST(many_deadlines_in_random_order_fire_sorted_and_never_early)
{
    enum { N = 48 };
    cancel_token_t *t[N];
    struct tag tags[N];
    cancel_callback_t cb[N];
    struct timespec at[N];
    struct timespec base = in_ns(20 * MS);
    srand(42);
    for (int i = 0; i < N; i++) {
        tags[i].id = i;
        at[i] = cancel__add_ns(base, (rand() % 60) * MS + i);
        t[i] = cancel_token_with_deadline(NULL, &at[i]);
        ck_assert_ptr_nonnull(t[i]);
        cancel_callback_add(&cb[i], t[i], on_fire, &tags[i]);
    }
    await_fired(N);
    pthread_mutex_lock(&fired.mutex);
    ck_assert_int_eq(fired.n, N);
    /* A deadline that passed while the tokens were still being made (a slow
     * sanitizer run) is born cancelled and runs inline; among those the
     * timer thread fired, the order is always the deadlines' order. */
    int last = -1;
    for (int k = 0; k < N; k++) {
        int id = fired.order[k];
        ck_assert_int_ge(fired.at[k], ts_ns(&at[id]));
        if (!fired.on_timer[k])
            continue;
        if (last >= 0)
            ck_assert_int_le(ts_ns(&at[last]), ts_ns(&at[id]));
        last = id;
    }
    pthread_mutex_unlock(&fired.mutex);
    for (int i = 0; i < N; i++) {
        cancel_callback_remove(&cb[i]);
        cancel_token_unref(t[i]);
    }
}
END_TEST

START_TEST(releasing_a_token_before_its_deadline_removes_it_from_the_heap)
{
    /* Run under AddressSanitizer: a timer touching a freed token aborts. */
    enum { N = 2000 };
    size_t before = cancel__timer_pending();
    static cancel_token_t *t[N];
    for (int i = 0; i < N; i++) {
        t[i] = cancel_token_with_timeout(NULL, (1 + i % 40) * MS);
        ck_assert_ptr_nonnull(t[i]);
    }
    ck_assert_uint_ge(cancel__timer_pending(), before + 1);
    /* Release in an order that empties the heap from the middle. */
    for (int i = 0; i < N; i += 2)
        cancel_token_unref(t[i]);
    for (int i = N - 1; i > 0; i -= 2)
        cancel_token_unref(t[i]);
    ck_assert_uint_eq(cancel__timer_pending(), before);
    /* Let the released deadlines pass: the sentinel fires after all of them. */
    cancel_token_t *sentinel = cancel_token_with_timeout(NULL, 60 * MS);
    ck_assert_int_eq(await(sentinel), 0);
    ck_assert_uint_eq(cancel__timer_pending(), before);
    cancel_token_unref(sentinel);
}
END_TEST

struct churn {
    int failures;
};

static void *churn_main(void *arg)
{
    struct churn *c = arg;
    for (int i = 0; i < 3000; i++) {
        cancel_token_t *t = cancel_token_with_timeout(NULL, (i % 7) * 100000LL);
        if (!t) {
            c->failures++;
            continue;
        }
        if (i % 3 == 0)
            cancel_token_cancel(t, EPIPE);
        cancel_token_unref(t);
    }
    return NULL;
}

START_TEST(tokens_released_while_their_deadlines_fire_are_never_touched)
{
    enum { THREADS = 4 };
    pthread_t th[THREADS];
    struct churn c[THREADS] = { { 0 } };
    for (int i = 0; i < THREADS; i++)
        tu_thread_start(&th[i], churn_main, &c[i]);
    for (int i = 0; i < THREADS; i++)
        tu_thread_join(th[i]);
    for (int i = 0; i < THREADS; i++)
        ck_assert_int_eq(c[i].failures, 0);
    ck_assert_uint_eq(cancel__timer_pending(), 0);
}
END_TEST

START_TEST(child_with_later_deadline_fires_at_its_parents)
{
    int64_t t0 = tu_now_ns();
    cancel_token_t *parent = cancel_token_with_timeout(NULL, 40 * MS);
    struct timespec late = in_ns(60LL * 1000 * MS);
    cancel_token_t *child = cancel_token_with_deadline(parent, &late);
    ck_assert_ptr_nonnull(child);
    struct timespec p, c;
    ck_assert(cancel_token_deadline(parent, &p));
    ck_assert(cancel_token_deadline(child, &c));
    ck_assert_int_eq(cancel__timespec_cmp(&p, &c), 0);
    ck_assert_int_eq(await(child), 0);
    ck_assert_int_ge(tu_now_ns() - t0, 40 * MS);
    ck_assert_int_eq(cancel_token_reason(child), ETIMEDOUT);
    cancel_token_unref(child);
    cancel_token_unref(parent);
}
END_TEST

START_TEST(deadline_reports_the_earliest_over_ancestors)
{
    cancel_token_t *root = cancel_token_new();
    struct timespec x;
    ck_assert(!cancel_token_deadline(root, &x));
    ck_assert(!cancel_token_deadline(NULL, &x));

    struct timespec a = in_ns(10LL * 1000 * MS), b = in_ns(20LL * 1000 * MS);
    struct timespec c = in_ns(5LL * 1000 * MS);
    cancel_token_t *da = cancel_token_with_deadline(root, &a);
    cancel_token_t *plain = cancel_token_child(da);
    cancel_token_t *db = cancel_token_with_deadline(plain, &b);
    cancel_token_t *dc = cancel_token_with_deadline(db, &c);
    ck_assert(cancel_token_deadline(da, &x));
    ck_assert_int_eq(cancel__timespec_cmp(&x, &a), 0);
    ck_assert(cancel_token_deadline(plain, &x));
    ck_assert_int_eq(cancel__timespec_cmp(&x, &a), 0);
    ck_assert(cancel_token_deadline(db, &x));
    ck_assert_int_eq(cancel__timespec_cmp(&x, &a), 0);
    ck_assert(cancel_token_deadline(dc, &x));
    ck_assert_int_eq(cancel__timespec_cmp(&x, &c), 0);
    ck_assert(cancel_token_deadline(dc, NULL));
    cancel_token_unref(dc);
    cancel_token_unref(db);
    cancel_token_unref(plain);
    cancel_token_unref(da);
    cancel_token_unref(root);
}
END_TEST

START_TEST(past_deadline_gives_a_token_born_cancelled_with_etimedout)
{
    struct timespec past = cancel__add_ns(cancel__now(), -1000);
    cancel_token_t *t = cancel_token_with_deadline(NULL, &past);
    ck_assert_ptr_nonnull(t);
    ck_assert(cancel_token_is_cancelled(t));
    ck_assert_int_eq(cancel_token_reason(t), ETIMEDOUT);
    struct timespec x;
    ck_assert(cancel_token_deadline(t, &x));
    ck_assert_int_eq(cancel__timespec_cmp(&x, &past), 0);
    cancel_token_unref(t);

    cancel_token_t *z = cancel_token_with_timeout(NULL, 0);
    cancel_token_t *n = cancel_token_with_timeout(NULL, -5);
    ck_assert_int_eq(cancel_token_reason(z), ETIMEDOUT);
    ck_assert_int_eq(cancel_token_reason(n), ETIMEDOUT);
    cancel_token_unref(z);
    cancel_token_unref(n);
}
END_TEST

START_TEST(deadline_child_of_cancelled_parent_keeps_the_parents_reason)
{
    cancel_token_t *parent = cancel_token_new();
    cancel_token_cancel(parent, EPIPE);
    cancel_token_t *past = cancel_token_with_timeout(parent, 0);
    cancel_token_t *future = cancel_token_with_timeout(parent, 1000 * MS);
    ck_assert_int_eq(cancel_token_reason(past), EPIPE);
    ck_assert_int_eq(cancel_token_reason(future), EPIPE);
    cancel_token_unref(past);
    cancel_token_unref(future);
    cancel_token_unref(parent);
}
END_TEST

START_TEST(explicit_cancel_before_the_deadline_keeps_its_reason)
{
    cancel_token_t *t = cancel_token_with_timeout(NULL, 20 * MS);
    ck_assert(cancel_token_cancel(t, EPIPE));
    cancel_token_t *after = cancel_token_with_timeout(NULL, 60 * MS);
    ck_assert_int_eq(await(after), 0);
    ck_assert_int_eq(cancel_token_reason(t), EPIPE);
    /* And the reverse: a fired deadline is not overwritten. */
    ck_assert(!cancel_token_cancel(after, EPIPE));
    ck_assert_int_eq(cancel_token_reason(after), ETIMEDOUT);
    cancel_token_unref(after);
    cancel_token_unref(t);
}
END_TEST

START_TEST(deadline_cancels_descendants_with_etimedout)
{
    cancel_token_t *t = cancel_token_with_timeout(NULL, 20 * MS);
    cancel_token_t *c = cancel_token_child(t);
    cancel_token_t *g = cancel_token_child(c);
    ck_assert_int_eq(await(g), 0);
    ck_assert_int_eq(cancel_token_reason(g), ETIMEDOUT);
    ck_assert_int_eq(cancel_token_reason(c), ETIMEDOUT);
    cancel_token_unref(g);
    cancel_token_unref(c);
    cancel_token_unref(t);
}
END_TEST

START_TEST(bad_deadlines_are_einval)
{
    errno = 0;
    ck_assert_ptr_null(cancel_token_with_deadline(NULL, NULL));
    ck_assert_int_eq(errno, EINVAL);
    struct timespec bad = cancel__now();
    bad.tv_nsec = 1000000000L;
    errno = 0;
    ck_assert_ptr_null(cancel_token_with_deadline(NULL, &bad));
    ck_assert_int_eq(errno, EINVAL);
    bad.tv_nsec = -1;
    errno = 0;
    ck_assert_ptr_null(cancel_token_with_deadline(NULL, &bad));
    ck_assert_int_eq(errno, EINVAL);
}
END_TEST

START_TEST(huge_timeout_saturates_instead_of_overflowing)
{
    cancel_token_t *t = cancel_token_with_timeout(NULL, INT64_MAX);
    ck_assert_ptr_nonnull(t);
    ck_assert(!cancel_token_is_cancelled(t));
    struct timespec x;
    ck_assert(cancel_token_deadline(t, &x));
    ck_assert_int_gt(x.tv_sec, cancel__now().tv_sec + 1000000);
    cancel_token_unref(t);
}
END_TEST

START_TEST(timer_thread_sleeps_while_no_deadline_is_due)
{
    enum { N = 10000 };
    static cancel_token_t *t[N];
    for (int i = 0; i < N; i++)
        t[i] = cancel_token_with_timeout(NULL, 3600LL * 1000 * MS + i);
    struct timespec c0, c1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    /* This thread sleeps: whatever CPU the process burns now is the timer's. */
    struct timespec nap = { 0, 300 * MS };
    while (nanosleep(&nap, &nap) != 0)
        ;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    ck_assert_int_lt(ts_ns(&c1) - ts_ns(&c0), 30 * MS);
    for (int i = 0; i < N; i++) {
        ck_assert(!cancel_token_is_cancelled(t[i]));
        cancel_token_unref(t[i]);
    }
}
END_TEST

START_TEST(deadlines_fire_in_a_forked_child)
{
    cancel_token_t *warm = cancel_token_with_timeout(NULL, 3600LL * 1000 * MS);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        cancel_token_t *t = cancel_token_with_timeout(NULL, 20 * MS);
        struct timespec guard = in_ns(TU_WAKE_GUARD_NS);
        int rc = cancel_token_wait(t, &guard);
        int ok = rc == 0 && cancel_token_reason(t) == ETIMEDOUT;
        /* Released: memcheck follows the child and counts a leak. */
        cancel_token_unref(t);
        cancel_token_unref(warm);
        _exit(ok ? 0 : 1);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 0);
    /* The parent's timer still works too. */
    cancel_token_t *t = cancel_token_with_timeout(NULL, 10 * MS);
    ck_assert_int_eq(await(t), 0);
    cancel_token_unref(t);
    cancel_token_unref(warm);
}
END_TEST

/* ------------------------------------------------ cancel_token_set_deadline */

START_TEST(set_deadline_arms_a_plain_token_that_fires_etimedout_never_early)
{
    cancel_token_t *t = cancel_token_new();
    int64_t t0 = tu_now_ns();
    struct timespec at = in_ns(30 * MS);
    ck_assert_int_eq(cancel_token_set_deadline(t, &at), 0);
    struct timespec got;
    ck_assert(cancel_token_deadline(t, &got));
    ck_assert_int_eq(ts_ns(&got), ts_ns(&at));
    ck_assert_int_eq(await(t), 0);
    ck_assert_int_eq(cancel_token_reason(t), ETIMEDOUT);
    ck_assert_int_ge(tu_now_ns() - t0, 30 * MS);
    ck_assert_int_eq(cancel_token_reason(t), ETIMEDOUT);
    cancel_token_unref(t);
}
END_TEST

START_TEST(set_deadline_moves_a_deadline_later_and_it_does_not_fire_at_the_old_one)
{
    int64_t t0 = tu_now_ns();
    cancel_token_t *t = cancel_token_with_timeout(NULL, 200 * MS);
    struct timespec later = cancel__add_ns(cancel__now(), 400 * MS);
    ck_assert_int_eq(cancel_token_set_deadline(t, &later), 0);
    struct timespec guard = cancel__add_ns(later, -100 * MS); /* past the old one */
    ck_assert_int_eq(cancel_token_wait(t, &guard), ETIMEDOUT); /* wait timed out */
    ck_assert(!cancel_token_is_cancelled(t));
    ck_assert_int_eq(await(t), 0);
    ck_assert_int_eq(cancel_token_reason(t), ETIMEDOUT);
    ck_assert_int_ge(tu_now_ns() - t0, 400 * MS);
    cancel_token_unref(t);
}
END_TEST

START_TEST(set_deadline_moves_a_deadline_earlier)
{
    cancel_token_t *t = cancel_token_with_timeout(NULL, 60 * 1000 * MS);
    int64_t t0 = tu_now_ns();
    struct timespec sooner = in_ns(20 * MS);
    ck_assert_int_eq(cancel_token_set_deadline(t, &sooner), 0);
    ck_assert_int_eq(await(t), 0);
    ck_assert_int_eq(cancel_token_reason(t), ETIMEDOUT);
    ck_assert_int_ge(tu_now_ns() - t0, 20 * MS);
    cancel_token_unref(t);
}
END_TEST

START_TEST(set_deadline_null_removes_the_deadline)
{
    cancel_token_t *t = cancel_token_with_timeout(NULL, 300 * MS);
    size_t before = cancel__timer_pending();
    ck_assert_int_eq(cancel_token_set_deadline(t, NULL), 0);
    ck_assert_uint_eq(cancel__timer_pending(), before - 1);
    ck_assert(!cancel_token_deadline(t, NULL));
    struct timespec guard = in_ns(400 * MS); /* past the removed one */
    ck_assert_int_eq(cancel_token_wait(t, &guard), ETIMEDOUT);
    ck_assert(!cancel_token_is_cancelled(t));
    cancel_token_unref(t);
}
END_TEST

START_TEST(set_deadline_in_the_past_cancels_before_returning)
{
    cancel_token_t *t = cancel_token_new();
    struct timespec past = { 0, 0 };
    ck_assert_int_eq(cancel_token_set_deadline(t, &past), 0);
    ck_assert_int_eq(cancel_token_reason(t), ETIMEDOUT);
    cancel_token_unref(t);
    t = cancel_token_with_timeout(NULL, 60 * 1000 * MS);
    struct timespec now = cancel__now();
    ck_assert_int_eq(cancel_token_set_deadline(t, &now), 0);
    ck_assert_int_eq(cancel_token_reason(t), ETIMEDOUT);
    ck_assert_uint_eq(cancel__timer_pending(), 0);
    cancel_token_unref(t);
}
END_TEST

START_TEST(set_deadline_on_a_cancelled_token_is_ealready_and_bad_input_einval)
{
    cancel_token_t *t = cancel_token_new();
    struct timespec at = in_ns(10 * MS);
    struct timespec bad = { 1, 1000000000L };
    struct timespec neg = { 1, -1 };
    ck_assert_int_eq(cancel_token_set_deadline(NULL, &at), EINVAL);
    ck_assert_int_eq(cancel_token_set_deadline(t, &bad), EINVAL);
    ck_assert_int_eq(cancel_token_set_deadline(t, &neg), EINVAL);
    ck_assert(!cancel_token_deadline(t, NULL));
    cancel_token_cancel(t, EPIPE);
    ck_assert_int_eq(cancel_token_set_deadline(t, &at), EALREADY);
    ck_assert_int_eq(cancel_token_set_deadline(t, NULL), EALREADY);
    ck_assert_int_eq(cancel_token_reason(t), EPIPE);
    ck_assert(!cancel_token_deadline(t, NULL));
    cancel_token_unref(t);
}
END_TEST

START_TEST(set_deadline_keeps_the_effective_deadline_the_earliest_with_ancestors)
{
    cancel_token_t *parent = cancel_token_with_timeout(NULL, 1000 * MS);
    cancel_token_t *child = cancel_token_child(parent);
    struct timespec pd, got;
    ck_assert(cancel_token_deadline(parent, &pd));
    struct timespec later = in_ns(60 * 1000 * MS);
    ck_assert_int_eq(cancel_token_set_deadline(child, &later), 0);
    ck_assert(cancel_token_deadline(child, &got));
    ck_assert_int_eq(ts_ns(&got), ts_ns(&pd));
    struct timespec sooner = in_ns(10 * MS);
    ck_assert_int_eq(cancel_token_set_deadline(child, &sooner), 0);
    ck_assert(cancel_token_deadline(child, &got));
    ck_assert_int_eq(ts_ns(&got), ts_ns(&sooner));
    ck_assert_int_eq(await(child), 0);
    ck_assert_int_eq(cancel_token_reason(child), ETIMEDOUT);
    ck_assert(!cancel_token_is_cancelled(parent));
    cancel_token_unref(child);
    cancel_token_unref(parent);
}
END_TEST

START_TEST(set_deadline_racing_the_timer_firing_is_either_moved_or_ealready_and_cancelled)
{
    /* The old deadline is due about now: the move either wins (the token
     * is not cancelled before the new deadline) or loses (EALREADY, and
     * the token is cancelled when set_deadline returns). */
    cancel_token_t *t = cancel_token_with_timeout(NULL, (_i % 5) * 20000);
    for (volatile int spin = 0; spin < (_i % 7) * 5000; spin++)
        ;
    struct timespec later = in_ns(60 * 1000 * MS);
    int rc = cancel_token_set_deadline(t, &later);
    if (rc == EALREADY) {
        ck_assert_int_eq(cancel_token_reason(t), ETIMEDOUT);
    } else {
        ck_assert_int_eq(rc, 0);
        struct timespec guard = in_ns(5 * MS);
        ck_assert_int_eq(cancel_token_wait(t, &guard), ETIMEDOUT);
        ck_assert(!cancel_token_is_cancelled(t));
    }
    cancel_token_unref(t);
}
END_TEST

START_TEST(set_deadline_moves_one_of_a_hundred_thousand_pending_deadlines)
{
    enum { N = 100000 };
    cancel_token_t **ts = malloc(N * sizeof *ts);
    for (int i = 0; i < N; i++)
        ts[i] = cancel_token_with_timeout(NULL, (int64_t)(3600 + i) * 1000 * MS);
    int64_t t0 = tu_now_ns();
    for (int k = 0; k < N; k++) {
        struct timespec at = in_ns((int64_t)(3600 + (k * 7919) % N) * 1000 * MS);
        ck_assert_int_eq(cancel_token_set_deadline(ts[k], &at), 0);
    }
    int64_t per = (tu_now_ns() - t0) / N;
    ck_assert_uint_eq(cancel__timer_pending(), N);
    struct timespec soon = in_ns(10 * MS);
    ck_assert_int_eq(cancel_token_set_deadline(ts[N / 2], &soon), 0);
    ck_assert_int_eq(await(ts[N / 2]), 0);
    ck_assert_int_eq(cancel_token_reason(ts[N / 2]), ETIMEDOUT);
    ck_assert(!cancel_token_is_cancelled(ts[0]));
    for (int i = 0; i < N; i++)
        cancel_token_unref(ts[i]);
    free(ts);
    ck_assert_uint_eq(cancel__timer_pending(), 0);
    /* O(log n): a move costs microseconds, not a walk of the heap. */
    ck_assert_int_lt(per, 200 * 1000);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("timer");
    TCase *tc = tcase_create("deadlines");
    tcase_set_timeout(tc, TU_TIMEOUT);
    tcase_add_checked_fixture(tc, fired_setup, NULL);
    tcase_add_test(tc, deadline_never_fires_before_its_deadline);
    tcase_add_test(tc, timeout_fires_with_etimedout_within_the_upper_guard);
    tcase_add_test(tc, two_deadlines_fire_in_deadline_order);
    tcase_add_test(tc, many_deadlines_in_random_order_fire_sorted_and_never_early);
    tcase_add_test(tc, releasing_a_token_before_its_deadline_removes_it_from_the_heap);
    tcase_add_loop_test(tc, tokens_released_while_their_deadlines_fire_are_never_touched, 0, 3);
    tcase_add_test(tc, child_with_later_deadline_fires_at_its_parents);
    tcase_add_test(tc, deadline_reports_the_earliest_over_ancestors);
    tcase_add_test(tc, past_deadline_gives_a_token_born_cancelled_with_etimedout);
    tcase_add_test(tc, deadline_child_of_cancelled_parent_keeps_the_parents_reason);
    tcase_add_test(tc, explicit_cancel_before_the_deadline_keeps_its_reason);
    tcase_add_test(tc, deadline_cancels_descendants_with_etimedout);
    tcase_add_test(tc, bad_deadlines_are_einval);
    tcase_add_test(tc, huge_timeout_saturates_instead_of_overflowing);
    tcase_add_test(tc, timer_thread_sleeps_while_no_deadline_is_due);
    tcase_add_test(tc, deadlines_fire_in_a_forked_child);
    tcase_add_test(tc, set_deadline_arms_a_plain_token_that_fires_etimedout_never_early);
    tcase_add_test(tc, set_deadline_moves_a_deadline_later_and_it_does_not_fire_at_the_old_one);
    tcase_add_test(tc, set_deadline_moves_a_deadline_earlier);
    tcase_add_test(tc, set_deadline_null_removes_the_deadline);
    tcase_add_test(tc, set_deadline_in_the_past_cancels_before_returning);
    tcase_add_test(tc, set_deadline_on_a_cancelled_token_is_ealready_and_bad_input_einval);
    tcase_add_test(tc, set_deadline_keeps_the_effective_deadline_the_earliest_with_ancestors);
    tcase_add_loop_test(tc, set_deadline_racing_the_timer_firing_is_either_moved_or_ealready_and_cancelled, 0, 64);
    tcase_add_test(tc, set_deadline_moves_one_of_a_hundred_thousand_pending_deadlines);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}

/*
 * check_scope.c - scopes and tasks (SPEC.md, section Scopes).
 *
 * Tasks block in block_until_cancelled (a condition variable woken by a
 * callback on the task's current token) or on latches the test controls;
 * nothing sleeps hoping to be long enough.  Workers record, the test
 * thread asserts after join.
 */
#include "internal.h"
#include "testutil.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------ helpers */

struct waiter {
    pthread_mutex_t m;
    pthread_cond_t c;
    bool fired;
};

static void waiter_fire(void *arg, int reason)
{
    struct waiter *w = arg;
    (void)reason;
    pthread_mutex_lock(&w->m);
    w->fired = true;
    pthread_cond_broadcast(&w->c);
    pthread_mutex_unlock(&w->m);
}

/* Blocks until the calling thread's current token is cancelled; returns
 * what a wrapped call would (ECANCELED or ETIMEDOUT). */
static int block_until_cancelled(void)
{
    struct waiter w = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false };
    cancel_callback_t cb;
    cancel_callback_add(&cb, cancel_current(), waiter_fire, &w);
    pthread_mutex_lock(&w.m);
    while (!w.fired)
        pthread_cond_wait(&w.c, &w.m);
    pthread_mutex_unlock(&w.m);
    cancel_callback_remove(&cb);
    return cancel_check();
}

static tu_latch_t started;      /* posted by tasks once running */
static tu_latch_t release;      /* tasks waiting on it go on */
static atomic_int runs;

static void setup(void)
{
    tu_latch_init(&started);
    tu_latch_init(&release);
    atomic_store(&runs, 0);
}

static int task_block(void *arg)
{
    (void)arg;
    atomic_fetch_add(&runs, 1);
    tu_latch_post(&started);
    return block_until_cancelled();
}

static int task_return_arg(void *arg)
{
    atomic_fetch_add(&runs, 1);
    return (int)(intptr_t)arg;
}

static int task_wait_release_then_return_arg(void *arg)
{
    tu_latch_post(&started);
    tu_latch_wait(&release);
    return (int)(intptr_t)arg;
}

static struct timespec in_ns(int64_t ns)
{
    return cancel__add_ns(cancel__now(), ns);
}

/* ------------------------------------------------------------ open */

START_TEST(open_rejects_both_flags_and_unknown_bits_with_einval)
{
    errno = 0;
    ck_assert_ptr_null(cancel_scope_open(CANCEL_SCOPE_SUPERVISE | CANCEL_SCOPE_RACE));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(cancel_scope_open(0x100));
    ck_assert_int_eq(errno, EINVAL);
    cancel_scope_t *s = cancel_scope_open(CANCEL_SCOPE_RACE);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
}
END_TEST

START_TEST(empty_scope_joins_with_zero_and_null_value)
{
    cancel_scope_t *s = cancel_scope_open(0);
    void *v = &v;
    ck_assert_int_eq(cancel_scope_join(s, &v), 0);
    ck_assert_ptr_null(v);
}
END_TEST

START_TEST(open_uses_the_current_token_as_parent)
{
    cancel_token_t *root = cancel_token_new();
    cancel_token_t *prev = cancel_enter(root);
    cancel_scope_t *s = cancel_scope_open(0);
    cancel_leave(prev);
    ck_assert(!cancel_token_is_cancelled(cancel_scope_token(s)));
    cancel_token_cancel(root, EPIPE);
    ck_assert_int_eq(cancel_token_reason(cancel_scope_token(s)), EPIPE);
    ck_assert_int_eq(cancel_scope_join(s, NULL), EPIPE);
    cancel_token_unref(root);
}
END_TEST

START_TEST(open_under_cancelled_parent_gives_cancelled_scope)
{
    cancel_token_t *root = cancel_token_new();
    cancel_token_cancel(root, ETIMEDOUT);
    cancel_scope_t *s = cancel_scope_open_in(root, 0);
    ck_assert_ptr_nonnull(s);
    ck_assert(cancel_token_is_cancelled(cancel_scope_token(s)));
    ck_assert_int_eq(cancel_scope_spawn(s, task_return_arg, NULL, NULL), ECANCELED);
    ck_assert_int_eq(cancel_scope_join(s, NULL), ETIMEDOUT);
    ck_assert_int_eq(atomic_load(&runs), 0);
    cancel_token_unref(root);
}
END_TEST

START_TEST(invalid_arguments_return_einval)
{
    ck_assert_int_eq(cancel_scope_spawn(NULL, task_return_arg, NULL, NULL), EINVAL);
    cancel_scope_t *s = cancel_scope_open(0);
    ck_assert_int_eq(cancel_scope_spawn(s, NULL, NULL, NULL), EINVAL);
    ck_assert_int_eq(cancel_scope_set_limit(NULL, 1), EINVAL);
    ck_assert_int_eq(cancel_scope_set_stack_size(s, 1), EINVAL);
    ck_assert_int_eq(cancel_scope_set_stack_size(s, 0), 0);
    ck_assert_int_eq(cancel_set_default_stack_size(1), EINVAL);
    ck_assert_int_eq(cancel_scope_terminate(NULL, NULL), EINVAL);
    ck_assert_int_eq(cancel_scope_join(NULL, NULL), EINVAL);
    ck_assert_int_eq(cancel_task_join(NULL, NULL), EINVAL);
    ck_assert_int_eq(cancel_task_set_name(NULL, "x"), EINVAL);
    ck_assert_int_eq(cancel_scope_dump(NULL, 2), EINVAL);
    struct timespec bad = { 0, 2000000000L };
    ck_assert_int_eq(cancel_scope_join_until(s, &bad, NULL), EINVAL);
    cancel_task_cancel(NULL);
    cancel_scope_cancel(NULL);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
}
END_TEST

/* ------------------------------------------------------------ tokens */

struct token_probe {
    cancel_token_t *current;
    cancel_token_t *parent;
    bool cancelled_after;
};

static int task_probe_token(void *arg)
{
    struct token_probe *p = arg;
    p->current = cancel_current();
    p->parent = p->current ? p->current->parent : NULL;
    tu_latch_post(&started);
    int rc = block_until_cancelled();
    p->cancelled_after = cancel_token_is_cancelled(cancel_current());
    return rc;
}

START_TEST(task_current_token_is_a_child_of_the_scope_token)
{
    cancel_scope_t *s = cancel_scope_open(0);
    struct token_probe p = { 0 };
    cancel_task_t *t;
    ck_assert_int_eq(cancel_scope_spawn(s, task_probe_token, &p, &t), 0);
    tu_latch_wait(&started);
    cancel_token_cancel(cancel_scope_token(s), ECANCELED);
    int result = -1;
    ck_assert_int_eq(cancel_task_join(t, &result), 0);
    ck_assert_int_eq(result, ECANCELED);
    ck_assert_ptr_nonnull(p.current);
    ck_assert_ptr_ne(p.current, cancel_scope_token(s));
    ck_assert_ptr_eq(p.current, cancel_task_token(t));
    ck_assert_ptr_eq(p.parent, cancel_scope_token(s));
    ck_assert(p.cancelled_after);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    ck_assert_ptr_null(cancel_current());
}
END_TEST

START_TEST(task_cancel_cancels_only_that_task)
{
    cancel_scope_t *s = cancel_scope_open(0);
    cancel_task_t *a, *b;
    ck_assert_int_eq(cancel_scope_spawn(s, task_block, NULL, &a), 0);
    ck_assert_int_eq(cancel_scope_spawn(s, task_block, NULL, &b), 0);
    tu_latch_wait(&started);
    tu_latch_wait(&started);
    cancel_task_cancel(a);
    int result = -1;
    ck_assert_int_eq(cancel_task_join(a, &result), 0);
    ck_assert_int_eq(result, ECANCELED);
    ck_assert(!cancel_token_is_cancelled(cancel_task_token(b)));
    ck_assert(!cancel_token_is_cancelled(cancel_scope_token(s)));
    struct timespec soon = in_ns(10 * 1000000LL);
    ck_assert_int_eq(cancel_scope_join_until(s, &soon, NULL), ETIMEDOUT);
    cancel_scope_cancel(s);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
}
END_TEST

/* ------------------------------------------------------------ fail-fast */

START_TEST(first_failure_cancels_siblings_and_is_returned_by_join)
{
    cancel_scope_t *s = cancel_scope_open(0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(cancel_scope_spawn(s, task_block, NULL, NULL), 0);
    for (int i = 0; i < 3; i++)
        tu_latch_wait(&started);
    ck_assert_int_eq(cancel_scope_spawn(s, task_return_arg, (void *)(intptr_t)EPIPE, NULL), 0);
    void *v = &v;
    ck_assert_int_eq(cancel_scope_join(s, &v), EPIPE);
    ck_assert_ptr_null(v);
    ck_assert_int_eq(atomic_load(&runs), 4);
}
END_TEST

START_TEST(ecanceled_after_cancel_is_not_a_failure)
{
    cancel_scope_t *s = cancel_scope_open(0);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(cancel_scope_spawn(s, task_block, NULL, NULL), 0);
    for (int i = 0; i < 4; i++)
        tu_latch_wait(&started);
    cancel_scope_cancel(s);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
}
END_TEST

START_TEST(ecanceled_without_cancel_is_a_real_failure)
{
    cancel_scope_t *s = cancel_scope_open(0);
    ck_assert_int_eq(cancel_scope_spawn(s, task_return_arg, (void *)(intptr_t)ECANCELED, NULL), 0);
    ck_assert_int_eq(cancel_scope_join(s, NULL), ECANCELED);
}
END_TEST

START_TEST(real_failure_after_outside_cancel_is_reported)
{
    cancel_scope_t *s = cancel_scope_open(0);
    ck_assert_int_eq(cancel_scope_spawn(s, task_block, NULL, NULL), 0);
    ck_assert_int_eq(cancel_scope_spawn(s, task_wait_release_then_return_arg,
                                        (void *)(intptr_t)EIO, NULL), 0);
    tu_latch_wait(&started);
    tu_latch_wait(&started);
    ck_assert_int_eq(cancel_scope_terminate(s, &s), 0);
    tu_latch_post(&release);
    void *v = &v;
    ck_assert_int_eq(cancel_scope_join(s, &v), EIO);
    ck_assert_ptr_null(v);
}
END_TEST

START_TEST(real_failure_wins_over_parent_reason)
{
    cancel_token_t *root = cancel_token_new();
    cancel_scope_t *s = cancel_scope_open_in(root, 0);
    ck_assert_int_eq(cancel_scope_spawn(s, task_wait_release_then_return_arg,
                                        (void *)(intptr_t)EIO, NULL), 0);
    tu_latch_wait(&started);
    cancel_token_cancel(root, EPIPE);
    tu_latch_post(&release);
    ck_assert_int_eq(cancel_scope_join(s, NULL), EIO);
    cancel_token_unref(root);
}
END_TEST

START_TEST(join_returns_parent_reason_when_parent_cancelled)
{
    cancel_token_t *root = cancel_token_new();
    cancel_scope_t *s = cancel_scope_open_in(root, 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(cancel_scope_spawn(s, task_block, NULL, NULL), 0);
    for (int i = 0; i < 3; i++)
        tu_latch_wait(&started);
    cancel_token_cancel(root, ETIMEDOUT);
    ck_assert_int_eq(cancel_scope_join(s, NULL), ETIMEDOUT);
    cancel_token_unref(root);
}
END_TEST

/* Cancelling flags every task token before any callback runs, so the
 * first task to wake already sees all its siblings cancelled. */
static cancel_task_t *teardown_tasks[8];
static atomic_int teardown_seen_uncancelled;

static int task_check_siblings_on_wake(void *arg)
{
    (void)arg;
    tu_latch_post(&started);
    int rc = block_until_cancelled();
    for (int i = 0; i < 8; i++)
        if (!cancel_token_is_cancelled(cancel_task_token(teardown_tasks[i])))
            atomic_fetch_add(&teardown_seen_uncancelled, 1);
    return rc;
}

START_TEST(cancel_signals_every_task_before_any_wakes)
{
    cancel_scope_t *s = cancel_scope_open(0);
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(cancel_scope_spawn(s, task_check_siblings_on_wake, NULL,
                                            &teardown_tasks[i]), 0);
    for (int i = 0; i < 8; i++)
        tu_latch_wait(&started);
    int64_t t0 = tu_now_ns();
    cancel_scope_cancel(s);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    ck_assert_int_lt(tu_now_ns() - t0, TU_WAKE_GUARD_NS);
    ck_assert_int_eq(atomic_load(&teardown_seen_uncancelled), 0);
}
END_TEST

/* ------------------------------------------------------------ spawn */

START_TEST(spawn_on_cancelled_scope_returns_ecanceled_and_starts_nothing)
{
    cancel_scope_t *s = cancel_scope_open(0);
    cancel_scope_cancel(s);
    cancel_task_t *t = NULL;
    ck_assert_int_eq(cancel_scope_spawn(s, task_return_arg, NULL, &t), ECANCELED);
    ck_assert_ptr_null(t);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    ck_assert_int_eq(atomic_load(&runs), 0);
}
END_TEST

static int task_count_and_check(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
    return cancel_check();
}

START_TEST(spawned_task_runs_exactly_once_even_if_cancelled_before_it_starts)
{
    atomic_int counts[16];
    cancel_scope_t *s = cancel_scope_open(0);
    for (int i = 0; i < 16; i++) {
        atomic_init(&counts[i], 0);
        ck_assert_int_eq(cancel_scope_spawn(s, task_count_and_check, &counts[i], NULL),
                         i <= 8 + _i % 8 ? 0 : ECANCELED);
        if (i == 8 + _i % 8)
            cancel_scope_cancel(s);
    }
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    int total = 0;
    for (int i = 0; i < 16; i++) {
        if (i <= 8 + _i % 8)
            ck_assert_int_eq(atomic_load(&counts[i]), 1);
        total += atomic_load(&counts[i]);
    }
    ck_assert_int_eq(total, 9 + _i % 8);
}
END_TEST

struct spawner_arg {
    cancel_scope_t *s;
    int depth;
    atomic_int *count;
};

static struct spawner_arg nodes[16];
static atomic_int next_node;

static int task_spawn_children(void *p)
{
    struct spawner_arg *a = p;
    atomic_fetch_add(a->count, 1);
    if (a->depth == 0)
        return 0;
    /* The root waits until the owner has started joining. */
    if (a->depth == 3)
        tu_latch_wait(&release);
    for (int i = 0; i < 2; i++) {
        struct spawner_arg *child = &nodes[atomic_fetch_add(&next_node, 1)];
        *child = (struct spawner_arg){ a->s, a->depth - 1, a->count };
        int rc = cancel_scope_spawn(a->s, task_spawn_children, child, NULL);
        if (rc)
            return rc;
    }
    return 0;
}

START_TEST(tasks_spawn_tasks_while_the_owner_is_joining)
{
    atomic_int count;
    atomic_init(&count, 0);
    atomic_store(&next_node, 0);
    cancel_scope_t *s = cancel_scope_open(0);
    struct spawner_arg root = { s, 3, &count };
    ck_assert_int_eq(cancel_scope_spawn(s, task_spawn_children, &root, NULL), 0);
    /* A join_until that has already expired starts the join. */
    struct timespec past = in_ns(0);
    ck_assert_int_eq(cancel_scope_join_until(s, &past, NULL), ETIMEDOUT);
    /* From now on only the scope's own tasks may spawn. */
    ck_assert_int_eq(cancel_scope_spawn(s, task_return_arg, NULL, NULL), EINVAL);
    tu_latch_post(&release);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    /* 1 + 2 + 4 + 8 tasks ran, all before join returned. */
    ck_assert_int_eq(atomic_load(&count), 15);
    ck_assert_int_eq(atomic_load(&runs), 0);
}
END_TEST

/* ------------------------------------------------------------ limits */

static atomic_int running_now, running_max;

static int task_track_concurrency(void *arg)
{
    int n = atomic_fetch_add(&running_now, 1) + 1;
    int m = atomic_load(&running_max);
    while (n > m && !atomic_compare_exchange_weak(&running_max, &m, n))
        ;
    tu_latch_post(&started);
    tu_latch_wait(&release);
    atomic_fetch_sub(&running_now, 1);
    return (int)(intptr_t)arg;
}

struct bulk_spawn {
    cancel_scope_t *s;
    int n;
    int spawned;
    int rc;
};

static void *spawn_many(void *p)
{
    struct bulk_spawn *b = p;
    for (int i = 0; i < b->n; i++) {
        b->rc = cancel_scope_spawn(b->s, task_track_concurrency, NULL, NULL);
        if (b->rc)
            break;
        b->spawned++;
    }
    return NULL;
}

START_TEST(limit_caps_running_tasks_and_spawn_waits_for_a_slot)
{
    atomic_store(&running_now, 0);
    atomic_store(&running_max, 0);
    cancel_scope_t *s = cancel_scope_open(0);
    ck_assert_int_eq(cancel_scope_set_limit(s, 3), 0);
    struct bulk_spawn b = { s, 12, 0, 0 };
    pthread_t th;
    tu_thread_start(&th, spawn_many, &b);
    for (int i = 0; i < 12; i++) {
        tu_latch_wait(&started);
        tu_latch_post(&release);
    }
    tu_thread_join(th);
    ck_assert_int_eq(b.rc, 0);
    ck_assert_int_eq(b.spawned, 12);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    ck_assert_int_le(atomic_load(&running_max), 3);
    ck_assert_int_ge(atomic_load(&running_max), 1);
}
END_TEST

/* Every task waits for a cancel that only a queued (never started) task
 * would trigger: the waiting spawn must give up once the scope is
 * cancelled, and the scope must then join. */
static int task_cancel_scope(void *arg)
{
    cancel_scope_cancel(arg);
    return 0;
}

struct queued_spawn {
    cancel_scope_t *s;
    int rc;
    tu_latch_t about_to_wait;
};

static void *spawn_the_canceller(void *p)
{
    struct queued_spawn *q = p;
    tu_latch_post(&q->about_to_wait);
    q->rc = cancel_scope_spawn(q->s, task_cancel_scope, q->s, NULL);
    return NULL;
}

START_TEST(full_scope_spawn_returns_ecanceled_when_scope_is_cancelled)
{
    cancel_scope_t *s = cancel_scope_open(0);
    cancel_scope_set_limit(s, 2);
    ck_assert_int_eq(cancel_scope_spawn(s, task_block, NULL, NULL), 0);
    ck_assert_int_eq(cancel_scope_spawn(s, task_block, NULL, NULL), 0);
    tu_latch_wait(&started);
    tu_latch_wait(&started);
    struct queued_spawn q;
    q.s = s;
    q.rc = -1;
    tu_latch_init(&q.about_to_wait);
    pthread_t th;
    tu_thread_start(&th, spawn_the_canceller, &q);
    tu_latch_wait(&q.about_to_wait);
    /* Whether the spawn already waits or not, the outcome is ECANCELED. */
    cancel_scope_cancel(s);
    tu_thread_join(th);
    ck_assert_int_eq(q.rc, ECANCELED);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    ck_assert_int_eq(atomic_load(&runs), 2);
}
END_TEST

struct caller_spawn {
    cancel_scope_t *s;
    cancel_token_t *mine;
    int rc;
};

static void *spawn_under_own_token(void *p)
{
    struct caller_spawn *c = p;
    cancel_token_t *prev = cancel_enter(c->mine);
    tu_latch_post(&started);
    c->rc = cancel_scope_spawn(c->s, task_block, NULL, NULL);
    cancel_leave(prev);
    return NULL;
}

START_TEST(full_scope_spawn_returns_ecanceled_when_caller_token_is_cancelled)
{
    cancel_scope_t *s = cancel_scope_open(0);
    cancel_scope_set_limit(s, 1);
    ck_assert_int_eq(cancel_scope_spawn(s, task_block, NULL, NULL), 0);
    tu_latch_wait(&started);
    struct caller_spawn c = { s, cancel_token_new(), -1 };
    pthread_t th;
    tu_thread_start(&th, spawn_under_own_token, &c);
    tu_latch_wait(&started);
    cancel_token_cancel(c.mine, ECANCELED);
    tu_thread_join(th);
    ck_assert_int_eq(c.rc, ECANCELED);
    ck_assert(!cancel_token_is_cancelled(cancel_scope_token(s)));
    cancel_scope_cancel(s);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    ck_assert_int_eq(atomic_load(&runs), 1);
    cancel_token_unref(c.mine);
}
END_TEST

START_TEST(raising_the_limit_releases_a_waiting_spawn)
{
    cancel_scope_t *s = cancel_scope_open(0);
    cancel_scope_set_limit(s, 1);
    ck_assert_int_eq(cancel_scope_spawn(s, task_block, NULL, NULL), 0);
    tu_latch_wait(&started);
    struct bulk_spawn b = { s, 1, 0, -1 };
    pthread_t th;
    tu_thread_start(&th, spawn_many, &b);
    cancel_scope_set_limit(s, 0);
    tu_latch_wait(&started);   /* the second task runs */
    tu_latch_post(&release);
    tu_thread_join(th);
    ck_assert_int_eq(b.rc, 0);
    cancel_scope_cancel(s);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
}
END_TEST

/* ------------------------------------------------------------ terminate */

START_TEST(terminate_records_first_value_and_later_calls_return_ealready)
{
    int a, b;
    cancel_scope_t *s = cancel_scope_open(0);
    ck_assert_int_eq(cancel_scope_spawn(s, task_block, NULL, NULL), 0);
    tu_latch_wait(&started);
    ck_assert_int_eq(cancel_scope_terminate(s, &a), 0);
    ck_assert(cancel_token_is_cancelled(cancel_scope_token(s)));
    ck_assert_int_eq(cancel_token_reason(cancel_scope_token(s)), ECANCELED);
    ck_assert_int_eq(cancel_scope_terminate(s, &b), EALREADY);
    void *v = NULL;
    ck_assert_int_eq(cancel_scope_join(s, &v), 0);
    ck_assert_ptr_eq(v, &a);
}
END_TEST

START_TEST(terminate_after_cancel_still_records_value)
{
    int a;
    cancel_scope_t *s = cancel_scope_open(0);
    cancel_scope_cancel(s);
    ck_assert_int_eq(cancel_scope_terminate(s, &a), 0);
    void *v = NULL;
    ck_assert_int_eq(cancel_scope_join(s, &v), 0);
    ck_assert_ptr_eq(v, &a);
}
END_TEST

/* ------------------------------------------------------------ race */

static int task_succeed_after_release(void *arg)
{
    (void)arg;
    tu_latch_post(&started);
    tu_latch_wait(&release);
    return 0;
}

START_TEST(race_first_success_terminates_with_its_arg)
{
    int winner;
    cancel_scope_t *s = cancel_scope_open(CANCEL_SCOPE_RACE);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(cancel_scope_spawn(s, task_block, NULL, NULL), 0);
    ck_assert_int_eq(cancel_scope_spawn(s, task_return_arg, (void *)(intptr_t)EIO, NULL), 0);
    for (int i = 0; i < 3; i++)
        tu_latch_wait(&started);
    ck_assert_int_eq(cancel_scope_spawn(s, task_succeed_after_release, &winner, NULL), 0);
    tu_latch_wait(&started);
    /* The EIO failure did not cancel the siblings. */
    ck_assert(!cancel_token_is_cancelled(cancel_scope_token(s)));
    tu_latch_post(&release);
    void *v = NULL;
    ck_assert_int_eq(cancel_scope_join(s, &v), 0);
    ck_assert_ptr_eq(v, &winner);
}
END_TEST

START_TEST(race_returns_first_failure_only_when_no_task_succeeded)
{
    cancel_scope_t *s = cancel_scope_open(CANCEL_SCOPE_RACE);
    ck_assert_int_eq(cancel_scope_spawn(s, task_return_arg, (void *)(intptr_t)EIO, NULL), 0);
    ck_assert_int_eq(cancel_scope_join(s, NULL), EIO);

    s = cancel_scope_open(CANCEL_SCOPE_RACE);
    ck_assert_int_eq(cancel_scope_spawn(s, task_return_arg, (void *)(intptr_t)EIO, NULL), 0);
    ck_assert_int_eq(cancel_scope_spawn(s, task_return_arg, (void *)(intptr_t)0, NULL), 0);
    void *v = &v;
    ck_assert_int_eq(cancel_scope_join(s, &v), 0);
    ck_assert_ptr_null(v); /* the winner's arg was NULL */
}
END_TEST

START_TEST(terminate_after_race_winner_returns_ealready)
{
    cancel_scope_t *s = cancel_scope_open(CANCEL_SCOPE_RACE);
    cancel_task_t *t;
    atomic_int count;
    atomic_init(&count, 0);
    ck_assert_int_eq(cancel_scope_spawn(s, task_count_and_check, &count, &t), 0);
    ck_assert_int_eq(cancel_task_join(t, NULL), 0);
    ck_assert(cancel_token_is_cancelled(cancel_scope_token(s)));
    ck_assert_int_eq(cancel_scope_terminate(s, NULL), EALREADY);
    void *v = NULL;
    ck_assert_int_eq(cancel_scope_join(s, &v), 0);
    ck_assert_ptr_eq(v, &count);
}
END_TEST

/* ------------------------------------------------------------ supervise */

START_TEST(supervise_failures_do_not_cancel_siblings_and_results_come_from_handles)
{
    cancel_scope_t *s = cancel_scope_open(CANCEL_SCOPE_SUPERVISE);
    cancel_task_t *blocked, *failing, *ok;
    ck_assert_int_eq(cancel_scope_spawn(s, task_block, NULL, &blocked), 0);
    tu_latch_wait(&started);
    ck_assert_int_eq(cancel_scope_spawn(s, task_return_arg, (void *)(intptr_t)EIO, &failing), 0);
    ck_assert_int_eq(cancel_scope_spawn(s, task_return_arg, (void *)(intptr_t)0, &ok), 0);
    int r1 = -1, r2 = -1, r3 = -1;
    ck_assert_int_eq(cancel_task_join(failing, &r1), 0);
    ck_assert_int_eq(cancel_task_join(ok, &r2), 0);
    ck_assert_int_eq(r1, EIO);
    ck_assert_int_eq(r2, 0);
    ck_assert(!cancel_token_is_cancelled(cancel_scope_token(s)));
    ck_assert(!cancel_token_is_cancelled(cancel_task_token(blocked)));
    cancel_scope_cancel(s);
    ck_assert_int_eq(cancel_task_join(blocked, &r3), 0);
    ck_assert_int_eq(r3, ECANCELED);
    /* Joining a task again gives the same result. */
    r1 = -1;
    ck_assert_int_eq(cancel_task_join(failing, &r1), 0);
    ck_assert_int_eq(r1, EIO);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
}
END_TEST

/* ------------------------------------------------------------ join */

struct self_join {
    cancel_scope_t *s;
    cancel_task_t *self;
    tu_latch_t handle_ready;
    int scope_rc;
    int task_rc;
};

static int task_join_itself(void *p)
{
    struct self_join *j = p;
    tu_latch_wait(&j->handle_ready);
    j->scope_rc = cancel_scope_join(j->s, NULL);
    j->task_rc = cancel_task_join(j->self, NULL);
    return 0;
}

START_TEST(joining_from_inside_returns_edeadlk)
{
    cancel_scope_t *s = cancel_scope_open(0);
    struct self_join j;
    j.s = s;
    j.self = NULL;
    j.scope_rc = j.task_rc = -1;
    tu_latch_init(&j.handle_ready);
    ck_assert_int_eq(cancel_scope_spawn(s, task_join_itself, &j, &j.self), 0);
    tu_latch_post(&j.handle_ready);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    ck_assert_int_eq(j.scope_rc, EDEADLK);
    ck_assert_int_eq(j.task_rc, EDEADLK);
}
END_TEST

START_TEST(join_until_keeps_a_scope_whose_own_result_is_etimedout)
{
    /* A deadline parent that already fired: the join result is ETIMEDOUT,
     * so join_until must not free the scope (the caller cannot tell that
     * from a timeout); the second join frees it (ASan sees any misuse). */
    cancel_token_t *d = cancel_token_with_timeout(NULL, 0);
    cancel_scope_t *s = cancel_scope_open_in(d, 0);
    ck_assert_ptr_nonnull(s);
    struct timespec far;
    clock_gettime(CLOCK_MONOTONIC, &far);
    far.tv_sec += 10;
    ck_assert_int_eq(cancel_scope_join_until(s, &far, NULL), ETIMEDOUT);
    ck_assert_int_eq(cancel_scope_join(s, NULL), ETIMEDOUT);
    cancel_token_unref(d);
}
END_TEST

START_TEST(join_until_times_out_then_join_again_succeeds)
{
    cancel_scope_t *s = cancel_scope_open(0);
    cancel_task_t *t;
    ck_assert_int_eq(cancel_scope_spawn_named(s, "slow", task_wait_release_then_return_arg,
                                              (void *)(intptr_t)0, &t), 0);
    tu_latch_wait(&started);
    int64_t t0 = tu_now_ns();
    struct timespec soon = in_ns(20 * 1000000LL);
    ck_assert_int_eq(cancel_scope_join_until(s, &soon, NULL), ETIMEDOUT);
    ck_assert_int_ge(tu_now_ns() - t0, 20 * 1000000LL);
    /* Nothing was freed: the scope and the handle are still usable. */
    ck_assert(!cancel_token_is_cancelled(cancel_scope_token(s)));
    ck_assert_ptr_nonnull(cancel_task_token(t));
    soon = in_ns(1000000LL);
    ck_assert_int_eq(cancel_scope_join_until(s, &soon, NULL), ETIMEDOUT);
    tu_latch_post(&release);
    struct timespec later = in_ns(TU_WAKE_GUARD_NS);
    ck_assert_int_eq(cancel_scope_join_until(s, &later, NULL), 0);
}
END_TEST

static int task_ignore_cancel_until_release(void *arg)
{
    (void)arg;
    tu_latch_post(&started);
    block_until_cancelled();
    tu_latch_wait(&release);
    return ECANCELED;
}

START_TEST(join_is_not_cut_short_by_parent_cancellation)
{
    cancel_token_t *root = cancel_token_new();
    cancel_scope_t *s = cancel_scope_open_in(root, 0);
    ck_assert_int_eq(cancel_scope_spawn(s, task_ignore_cancel_until_release, NULL, NULL), 0);
    tu_latch_wait(&started);
    cancel_token_cancel(root, ECANCELED);
    struct timespec soon = in_ns(20 * 1000000LL);
    ck_assert_int_eq(cancel_scope_join_until(s, &soon, NULL), ETIMEDOUT);
    /* Nor by the joiner's own current token. */
    cancel_token_t *prev = cancel_enter(root);
    soon = in_ns(1000000LL);
    ck_assert_int_eq(cancel_scope_join_until(s, &soon, NULL), ETIMEDOUT);
    cancel_leave(prev);
    tu_latch_post(&release);
    ck_assert_int_eq(cancel_scope_join(s, NULL), ECANCELED);
    cancel_token_unref(root);
}
END_TEST

/* ------------------------------------------------------------ nesting */

static atomic_int nested_cancelled;

static int task_nest(void *arg)
{
    int depth = (int)(intptr_t)arg;
    if (depth == 0) {
        tu_latch_post(&started);
        int rc = block_until_cancelled();
        if (rc == ECANCELED)
            atomic_fetch_add(&nested_cancelled, 1);
        return rc;
    }
    cancel_scope_t *inner = cancel_scope_open(0);
    if (!inner)
        return ENOMEM;
    for (int i = 0; i < 2; i++)
        cancel_scope_spawn(inner, task_nest, (void *)(intptr_t)(depth - 1), NULL);
    int rc = cancel_scope_join(inner, NULL);
    if (rc == ECANCELED)
        atomic_fetch_add(&nested_cancelled, 1);
    return rc;
}

START_TEST(nested_scopes_three_deep_are_cancelled_from_the_outermost)
{
    atomic_store(&nested_cancelled, 0);
    cancel_scope_t *s = cancel_scope_open(0);
    ck_assert_int_eq(cancel_scope_spawn(s, task_nest, (void *)(intptr_t)3, NULL), 0);
    /* 3 levels of scopes below the outer one: 2^3 leaves. */
    for (int i = 0; i < 8; i++)
        tu_latch_wait(&started);
    cancel_scope_cancel(s);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    /* 8 leaves, and the inner joins (4 + 2 + 1) returned the parent's reason. */
    ck_assert_int_eq(atomic_load(&nested_cancelled), 8 + 7);
}
END_TEST

/* ------------------------------------------------------------ threads */

#if defined(__SANITIZE_THREAD__)
enum { MANY = 2000 };
#else
/* make check-valgrind sets CANCEL_VALGRIND: memcheck cannot map 10 000 threads. */
#define MANY (getenv("CANCEL_VALGRIND") ? 400 : 10000)
#endif

START_TEST(ten_thousand_tasks_block_in_one_scope_and_join_after_cancel)
{
    cancel_scope_t *s = cancel_scope_open(0);
    ck_assert_int_eq(cancel_scope_set_stack_size(s, 128 * 1024), 0);
    for (int i = 0; i < MANY; i++)
        ck_assert_int_eq(cancel_scope_spawn(s, task_block, NULL, NULL), 0);
    for (int i = 0; i < MANY; i++)
        tu_latch_wait(&started);
    ck_assert_int_ge(tu_count_threads(), MANY + 1);
    int64_t t0 = tu_now_ns();
    cancel_scope_cancel(s);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    ck_assert_int_lt(tu_now_ns() - t0, 10 * TU_WAKE_GUARD_NS);
    ck_assert_int_eq(atomic_load(&runs), MANY);
}
END_TEST

static int task_record_thread(void *arg)
{
    *(pthread_t *)arg = pthread_self();
    return 0;
}

START_TEST(sequential_tasks_reuse_the_same_thread)
{
    pthread_t seen[2];
    cancel_scope_t *s = cancel_scope_open(0);
    ck_assert_int_eq(cancel_scope_spawn(s, task_record_thread, &seen[0], NULL), 0);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    /* The worker parks itself after the join may already have returned:
     * wait (bounded) until it is idle. */
    int64_t until = tu_now_ns() + TU_WAKE_GUARD_NS;
    while (cancel__worker_idle_count() == 0 && tu_now_ns() < until)
        sched_yield();
    ck_assert_uint_ge(cancel__worker_idle_count(), 1);
    s = cancel_scope_open(0);
    ck_assert_int_eq(cancel_scope_spawn(s, task_record_thread, &seen[1], NULL), 0);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    ck_assert(pthread_equal(seen[0], seen[1]));
}
END_TEST

START_TEST(idle_worker_cache_is_bounded)
{
    /* The bound is 1024; lowered, so that memcheck (1,000 threads at most)
     * can run the test. */
    cancel__worker_max_idle = 64;
    cancel_scope_t *s = cancel_scope_open(0);
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(cancel_scope_spawn(s, task_block, NULL, NULL), 0);
    for (int i = 0; i < 100; i++)
        tu_latch_wait(&started);
    cancel_scope_cancel(s);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    /* Extra workers exit at once; wait for the threads to be gone. */
    int64_t until = tu_now_ns() + TU_WAKE_GUARD_NS;
    while (tu_count_threads() > 64 + 2 && tu_now_ns() < until)
        sched_yield();
    ck_assert_uint_le(cancel__worker_idle_count(), 64);
    ck_assert_int_le(tu_count_threads(), 64 + 2);
}
END_TEST

START_TEST(thread_creation_failure_gives_eagain_and_scope_stays_joinable)
{
    cancel_scope_t *s = cancel_scope_open(0);
    cancel_task_t *t;
    ck_assert_int_eq(cancel_scope_spawn(s, task_block, NULL, &t), 0);
    tu_latch_wait(&started);
    atomic_store(&cancel__worker_fail_next_create, 1);
    cancel_task_t *none = NULL;
    ck_assert_int_eq(cancel_scope_spawn(s, task_return_arg, NULL, &none), EAGAIN);
    ck_assert_ptr_null(none);
    ck_assert_int_eq(atomic_load(&runs), 1);
    ck_assert(!cancel_token_is_cancelled(cancel_scope_token(s)));
    cancel_scope_cancel(s);
    int r = -1;
    ck_assert_int_eq(cancel_task_join(t, &r), 0);
    ck_assert_int_eq(r, ECANCELED);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
}
END_TEST

START_TEST(process_wide_stack_size_applies_to_new_workers)
{
    ck_assert_uint_eq(cancel_default_stack_size(), 256 * 1024);
    ck_assert_int_eq(cancel_set_default_stack_size(1024 * 1024), 0);
    ck_assert_uint_eq(cancel_default_stack_size(), 1024 * 1024);
    ck_assert_int_eq(cancel_set_default_stack_size(0), 0);
    ck_assert_uint_eq(cancel_default_stack_size(), 256 * 1024);
}
END_TEST

/* ------------------------------------------------------------ diagnostics */

START_TEST(dump_lists_live_tasks_with_names_state_and_cancelled_tokens)
{
    cancel_scope_t *s = cancel_scope_open(0);
    cancel_task_t *a, *b;
    ck_assert_int_eq(cancel_scope_spawn_named(s, "reader", task_block, NULL, &a), 0);
    ck_assert_int_eq(cancel_scope_spawn(s, task_block, NULL, &b), 0);
    ck_assert_int_eq(cancel_task_set_name(b, "writer-with-a-very-long-name-that-gets-cut"), 0);
    tu_latch_wait(&started);
    tu_latch_wait(&started);
    cancel_task_cancel(a);
    ck_assert_int_eq(cancel_task_join(a, NULL), 0);

    char path[] = "/tmp/check_scope_dumpXXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    unlink(path);
    ck_assert_int_eq(cancel_scope_dump(s, fd), 0);
    CANCEL_TOKEN_CANCEL(cancel_scope_token(s), ECANCELED);
    ck_assert_int_eq(cancel_task_join(b, NULL), 0);
    ck_assert_int_eq(cancel_scope_dump(s, fd), 0);
    char buf[4096] = { 0 };
    ck_assert_int_gt(pread(fd, buf, sizeof buf - 1, 0), 0);
    close(fd);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);

    char *second = strstr(buf, "\nscope ");
    ck_assert_ptr_nonnull(second);
    *second = '\0';
    /* First dump: one live task (the finished one is not listed). */
    ck_assert_ptr_nonnull(strstr(buf, "1 live task,"));
    ck_assert_ptr_null(strstr(buf, "\"reader\""));
    ck_assert_ptr_nonnull(strstr(buf, "\"writer-with-a-very-long-name-th\""));
    ck_assert_ptr_nonnull(strstr(buf, "running"));
    ck_assert_ptr_nonnull(strstr(buf, "token live"));
    /* Second dump: the scope says it was cancelled, and from where. */
    ck_assert_ptr_nonnull(strstr(second + 1, "0 live tasks"));
    ck_assert_ptr_nonnull(strstr(second + 1, "token cancelled"));
    ck_assert_ptr_nonnull(strstr(second + 1, "check_scope.c:"));
}
END_TEST

static int task_pretend_blocked(void *arg)
{
    (void)arg;
    struct cancel_blocked *b = cancel__thread_blocked();
    atomic_store(&b->fd, 7);
    atomic_store(&b->since_ns, tu_now_ns());
    atomic_store(&b->call, "read");
    tu_latch_post(&started);
    int rc = block_until_cancelled();
    atomic_store(&b->call, NULL);
    return rc;
}

START_TEST(dump_shows_the_wrapped_call_a_task_is_blocked_in)
{
    cancel_scope_t *s = cancel_scope_open(0);
    ck_assert_int_eq(cancel_scope_spawn_named(s, "net", task_pretend_blocked, NULL, NULL), 0);
    tu_latch_wait(&started);
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(cancel_scope_dump(s, p[1]), 0);
    close(p[1]);
    char buf[1024] = { 0 };
    ck_assert_int_gt(read(p[0], buf, sizeof buf - 1), 0);
    close(p[0]);
    cancel_scope_cancel(s);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    ck_assert_ptr_nonnull(strstr(buf, "\"net\""));
    ck_assert_ptr_nonnull(strstr(buf, "blocked in read(fd 7) for "));
}
END_TEST

/* ------------------------------------------------------------ cancel_read */

struct reader {
    int fd;
    ssize_t got;
    int err;
};

static int task_read_pipe(void *arg)
{
    struct reader *r = arg;
    char c;
    r->got = cancel_read(r->fd, &c, 1);
    r->err = r->got < 0 ? errno : 0;
    return r->got < 0 ? r->err : 0;
}

enum { READERS = 64 };

START_TEST(tasks_blocked_in_cancel_read_wake_on_scope_cancel_and_leave_the_bytes)
{
    int fds[READERS][2];
    struct reader r[READERS];
    cancel_scope_t *s = cancel_scope_open(0);
    for (int i = 0; i < READERS; i++) {
        ck_assert_int_eq(pipe(fds[i]), 0);
        r[i] = (struct reader){ fds[i][0], 0, 0 };
        ck_assert_int_eq(cancel_scope_spawn(s, task_read_pipe, &r[i], NULL), 0);
    }
    /* Whether each task is already inside read or not, the outcome is the
     * same: ECANCELED and nothing consumed. */
    cancel_scope_cancel(s);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    for (int i = 0; i < READERS; i++) {
        ck_assert_int_eq(r[i].got, -1);
        ck_assert_int_eq(r[i].err, ECANCELED);
        ck_assert_int_eq(write(fds[i][1], "x", 1), 1);
        char c = 0;
        ck_assert_int_eq(read(fds[i][0], &c, 1), 1);
        ck_assert_int_eq(c, 'x');
        close(fds[i][0]);
        close(fds[i][1]);
    }
}
END_TEST

START_TEST(a_reader_that_gets_data_succeeds_while_its_siblings_are_cancelled)
{
    int a[2], b[2];
    ck_assert_int_eq(pipe(a), 0);
    ck_assert_int_eq(pipe(b), 0);
    struct reader ra = { a[0], 0, 0 }, rb = { b[0], 0, 0 };
    cancel_scope_t *s = cancel_scope_open(CANCEL_SCOPE_RACE);
    ck_assert_int_eq(cancel_scope_spawn(s, task_read_pipe, &ra, NULL), 0);
    ck_assert_int_eq(cancel_scope_spawn(s, task_read_pipe, &rb, NULL), 0);
    ck_assert_int_eq(write(b[1], "y", 1), 1);
    void *v = NULL;
    ck_assert_int_eq(cancel_scope_join(s, &v), 0);
    ck_assert_ptr_eq(v, &rb);
    ck_assert_int_eq(rb.got, 1);
    ck_assert_int_eq(ra.err, ECANCELED);
    close(a[0]); close(a[1]); close(b[0]); close(b[1]);
}
END_TEST

/* Dumps S into a string (BUF of N bytes). */
static void dump_to(cancel_scope_t *s, char *buf, size_t n)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(cancel_scope_dump(s, p[1]), 0);
    close(p[1]);
    ssize_t got = read(p[0], buf, n - 1);
    buf[got > 0 ? got : 0] = '\0';
    close(p[0]);
}

START_TEST(dump_shows_a_task_blocked_in_cancel_read_with_its_fd)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    struct reader r = { fds[0], 0, 0 };
    cancel_scope_t *s = cancel_scope_open(0);
    ck_assert_int_eq(cancel_scope_spawn_named(s, "pipe-reader", task_read_pipe, &r, NULL), 0);
    char want[64], buf[2048];
    snprintf(want, sizeof want, "blocked in read(fd %d) for ", fds[0]);
    /* The task enters read on its own schedule: look until it is there
     * (bounded by the usual guard). */
    int64_t until = tu_now_ns() + TU_WAKE_GUARD_NS;
    do {
        dump_to(s, buf, sizeof buf);
        if (strstr(buf, want))
            break;
        sched_yield();
    } while (tu_now_ns() < until);
    cancel_scope_cancel(s);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    ck_assert_ptr_nonnull(strstr(buf, "\"pipe-reader\""));
    ck_assert_ptr_nonnull(strstr(buf, want));
    ck_assert_int_eq(r.err, ECANCELED);
    close(fds[0]);
    close(fds[1]);
}
END_TEST

/* ------------------------------------------------------------ issue 11 */

struct spawner {
    cancel_scope_t *s;
    pid_t tid;
    tu_latch_t ready;
    int rc;
};

static void *spawn_into_full_scope(void *arg)
{
    struct spawner *sp = arg;
    sp->tid = tu_gettid();
    tu_latch_post(&sp->ready);
    sp->rc = cancel_scope_spawn(sp->s, task_return_arg, NULL, NULL);
    return NULL;
}

struct releaser {
    pid_t tid;
};

static void *release_when_joiner_sleeps(void *arg)
{
    struct releaser *r = arg;
    tu_wait_until_sleeping(r->tid);
    tu_latch_post(&release);
    return NULL;
}

START_TEST(join_waits_for_a_spawn_that_was_waiting_for_a_slot)
{
    cancel_scope_t *s = cancel_scope_open(0);
    ck_assert_int_eq(cancel_scope_set_limit(s, 1), 0);
    ck_assert_int_eq(cancel_scope_spawn(s, task_wait_release_then_return_arg, NULL, NULL), 0);
    tu_latch_wait(&started);
    struct spawner sp = { .s = s, .rc = -1 };
    tu_latch_init(&sp.ready);
    pthread_t x, y;
    tu_thread_start(&x, spawn_into_full_scope, &sp);
    tu_latch_wait(&sp.ready);
    tu_wait_until_sleeping(sp.tid); /* in spawn, waiting for the slot */
    struct releaser r = { tu_gettid() };
    tu_thread_start(&y, release_when_joiner_sleeps, &r);
    /* The spawn began before join: join waits for it and for its task. */
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    ck_assert_int_eq(atomic_load(&runs), 1);
    tu_thread_join(x);
    tu_thread_join(y);
    ck_assert_int_eq(sp.rc, 0);
}
END_TEST

/* Returns once S's dump shows a task blocked in read on FD (at most the
 * usual guard): the cancel then has that task's wake-up to deliver. */
static void wait_blocked_in_read(cancel_scope_t *s, int fd)
{
    char want[64], buf[2048];
    snprintf(want, sizeof want, "blocked in read(fd %d)", fd);
    int64_t until = tu_now_ns() + TU_WAKE_GUARD_NS;
    do {
        dump_to(s, buf, sizeof buf);
        if (strstr(buf, want))
            return;
        sched_yield();
    } while (tu_now_ns() < until);
}

struct joining_cb {
    cancel_scope_t *s;
    int rc;
    bool ran;
};

static void join_from_callback(void *arg, int reason)
{
    struct joining_cb *j = arg;
    (void)reason;
    j->rc = cancel_scope_join(j->s, NULL);
    j->ran = true;
}

START_TEST(callback_of_the_scope_token_that_joins_gets_edeadlk)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    struct reader r = { fds[0], 0, 0 };
    cancel_scope_t *s = cancel_scope_open_in(NULL, 0);
    ck_assert_int_eq(cancel_scope_spawn(s, task_read_pipe, &r, NULL), 0);
    wait_blocked_in_read(s, fds[0]);
    struct joining_cb j = { s, -1, false };
    cancel_callback_t cb;
    ck_assert_int_eq(cancel_callback_add(&cb, cancel_scope_token(s), join_from_callback, &j), 0);
    cancel_scope_cancel(s);
    ck_assert(j.ran);
    ck_assert_int_eq(j.rc, EDEADLK);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    ck_assert_int_eq(r.err, ECANCELED);
    close(fds[0]);
    close(fds[1]);
}
END_TEST

START_TEST(callback_of_an_ancestor_token_that_joins_gets_edeadlk)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    struct reader r = { fds[0], 0, 0 };
    cancel_token_t *root = cancel_token_new();
    cancel_token_t *mid = cancel_token_child(root);
    cancel_scope_t *s = cancel_scope_open_in(mid, 0);
    ck_assert_int_eq(cancel_scope_spawn(s, task_read_pipe, &r, NULL), 0);
    wait_blocked_in_read(s, fds[0]);
    struct joining_cb j = { s, -1, false };
    cancel_callback_t cb;
    ck_assert_int_eq(cancel_callback_add(&cb, root, join_from_callback, &j), 0);
    cancel_token_cancel(root, ECANCELED);
    ck_assert(j.ran);
    ck_assert_int_eq(j.rc, EDEADLK);
    ck_assert_int_eq(cancel_scope_join(s, NULL), ECANCELED);
    ck_assert_int_eq(r.err, ECANCELED);
    /* A join from an unrelated token's callback is not refused. */
    cancel_scope_t *s2 = cancel_scope_open_in(NULL, 0);
    cancel_token_t *other = cancel_token_new();
    struct joining_cb j2 = { s2, -1, false };
    ck_assert_int_eq(cancel_callback_add(&cb, other, join_from_callback, &j2), 0);
    cancel_token_cancel(other, ECANCELED);
    ck_assert(j2.ran);
    ck_assert_int_eq(j2.rc, 0);
    cancel_token_unref(other);
    cancel_token_unref(mid);
    cancel_token_unref(root);
    close(fds[0]);
    close(fds[1]);
}
END_TEST

/* Bug 7: A opens S2, spawns B into it and returns; S1 (and A) are freed;
 * then B opens and joins S3. */
static cancel_scope_t *orphan_scope;
static tu_latch_t orphan_go;
static int orphan_rc = -1;

static int task_b_opens_and_joins_nested(void *arg)
{
    (void)arg;
    tu_latch_wait(&orphan_go);
    cancel_scope_t *s3 = cancel_scope_open(0);
    int rc = cancel_scope_spawn(s3, task_return_arg, NULL, NULL);
    if (rc == 0)
        rc = cancel_scope_join(s3, NULL);
    else
        cancel_scope_join(s3, NULL);
    orphan_rc = rc;
    return 0;
}

static int task_a_opens_and_leaves(void *arg)
{
    (void)arg;
    orphan_scope = cancel_scope_open(0);
    return cancel_scope_spawn(orphan_scope, task_b_opens_and_joins_nested, NULL, NULL);
}

START_TEST(task_of_a_scope_whose_opener_is_freed_joins_a_nested_scope)
{
    tu_latch_init(&orphan_go);
    cancel_scope_t *s1 = cancel_scope_open(0);
    ck_assert_int_eq(cancel_scope_spawn(s1, task_a_opens_and_leaves, NULL, NULL), 0);
    ck_assert_int_eq(cancel_scope_join(s1, NULL), 0); /* frees A's record */
    /* Reuse A's memory for something else, as a busy program would. */
    void *junk[8];
    for (int i = 0; i < 8; i++) {
        junk[i] = malloc(256);
        memset(junk[i], 0x5a, 256);
    }
    tu_latch_post(&orphan_go);
    ck_assert_int_eq(cancel_scope_join(orphan_scope, NULL), 0);
    for (int i = 0; i < 8; i++)
        free(junk[i]);
    ck_assert_int_eq(orphan_rc, 0);
    ck_assert_int_eq(atomic_load(&runs), 1);
}
END_TEST

static _Atomic pid_t dead_tid;

static int task_pthread_exit(void *arg)
{
    (void)arg;
    atomic_store(&dead_tid, tu_gettid());
    tu_latch_post(&started);
    pthread_exit(NULL);
}

static int task_pthread_cancel_self(void *arg)
{
    (void)arg;
    atomic_store(&dead_tid, tu_gettid());
    tu_latch_post(&started);
    pthread_cancel(pthread_self());
    while (atomic_load(&runs) >= 0)
        pthread_testcancel();
    return 0;
}

static _Atomic pid_t later_tid;

static int task_record_tid(void *arg)
{
    (void)arg;
    atomic_store(&later_tid, tu_gettid());
    return 0;
}

static void check_thread_death(cancel_task_fn fn)
{
    cancel_scope_t *s = cancel_scope_open(0);
    ck_assert_int_eq(cancel_scope_spawn(s, task_block, NULL, NULL), 0); /* a sibling */
    tu_latch_wait(&started);
    cancel_task_t *t;
    ck_assert_int_eq(cancel_scope_spawn(s, fn, NULL, &t), 0);
    int result = -1;
    ck_assert_int_eq(cancel_task_join(t, &result), 0);
    ck_assert_int_eq(result, EOWNERDEAD);
    /* A real failure: the sibling was cancelled (fail-fast). */
    ck_assert(cancel_token_is_cancelled(cancel_scope_token(s)));
    char buf[2048], me[64];
    dump_to(s, buf, sizeof buf);
    snprintf(me, sizeof me, "task %p", (void *)t);
    ck_assert_ptr_null(strstr(buf, me)); /* no longer listed as live */
    ck_assert_int_eq(cancel_scope_join(s, NULL), EOWNERDEAD);
    /* Its thread is gone, not reused: the next task runs elsewhere. */
    cancel_scope_t *s2 = cancel_scope_open(0);
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(cancel_scope_spawn(s2, task_record_tid, NULL, NULL), 0);
        ck_assert_int_eq(cancel_scope_join(s2, NULL), 0);
        ck_assert_int_ne(atomic_load(&later_tid), atomic_load(&dead_tid));
        s2 = cancel_scope_open(0);
    }
    ck_assert_int_eq(cancel_scope_join(s2, NULL), 0);
}

START_TEST(task_that_calls_pthread_exit_finishes_with_eownerdead)
{
    check_thread_death(task_pthread_exit);
}
END_TEST

START_TEST(task_that_is_pthread_cancelled_finishes_with_eownerdead)
{
    check_thread_death(task_pthread_cancel_self);
}
END_TEST

static cancel_scope_t *own_scope;

static int task_spawn_into_own_scope(void *arg)
{
    (void)arg;
    atomic_store(&dead_tid, tu_gettid());
    tu_latch_post(&started);
    return cancel_scope_spawn(own_scope, task_return_arg, NULL, NULL);
}

START_TEST(dump_shows_a_task_waiting_in_spawn_for_a_slot_of_its_own_full_scope)
{
    own_scope = cancel_scope_open(0);
    ck_assert_int_eq(cancel_scope_set_limit(own_scope, 1), 0);
    ck_assert_int_eq(cancel_scope_spawn_named(own_scope, "spawner", task_spawn_into_own_scope,
                                              NULL, NULL), 0);
    tu_latch_wait(&started);
    char buf[2048];
    int64_t until = tu_now_ns() + TU_WAKE_GUARD_NS;
    do {
        dump_to(own_scope, buf, sizeof buf);
        if (strstr(buf, "waiting in spawn for a slot"))
            break;
        sched_yield();
    } while (tu_now_ns() < until);
    cancel_scope_cancel(own_scope);
    ck_assert_int_eq(cancel_scope_join(own_scope, NULL), 0);
    ck_assert_ptr_nonnull(strstr(buf, "\"spawner\": running"));
    ck_assert_ptr_nonnull(strstr(buf, "waiting in spawn for a slot of this full scope"));
    ck_assert_int_eq(atomic_load(&runs), 0);
}
END_TEST

/* ------------------------------------------------------------ servers */

static long records(void)
{
    /* Acquire: pairs with the release in scope.c's task_free. */
    return atomic_load_explicit(&cancel__scope_task_records, memory_order_acquire);
}

START_TEST(try_spawn_returns_ebusy_at_once_when_the_limit_is_reached)
{
    cancel_scope_t *s = cancel_scope_open(0);
    ck_assert_int_eq(cancel_scope_set_limit(s, 1), 0);
    ck_assert_int_eq(cancel_scope_try_spawn(s, task_wait_release_then_return_arg, NULL, NULL), 0);
    tu_latch_wait(&started);
    int64_t t0 = tu_now_ns();
    ck_assert_int_eq(cancel_scope_try_spawn(s, task_return_arg, NULL, NULL), EBUSY);
    ck_assert_int_lt(tu_now_ns() - t0, TU_WAKE_GUARD_NS);
    tu_latch_post(&release);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    ck_assert_int_eq(atomic_load(&runs), 0); /* the refused one never ran */
    s = cancel_scope_open(0);
    cancel_scope_cancel(s);
    ck_assert_int_eq(cancel_scope_try_spawn(s, task_return_arg, NULL, NULL), ECANCELED);
    ck_assert_int_eq(cancel_scope_try_spawn(NULL, task_return_arg, NULL, NULL), EINVAL);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
}
END_TEST

static int task_start_report(void *arg)
{
    cancel_task_started(arg);
    cancel_task_started((void *)0xdead); /* a second call does nothing */
    tu_latch_wait(&release);
    atomic_fetch_add(&runs, 1);
    return 0;
}

START_TEST(start_returns_the_ready_value_while_the_task_goes_on)
{
    cancel_scope_t *s = cancel_scope_open(0);
    void *v = NULL;
    cancel_task_t *t = NULL;
    ck_assert_int_eq(cancel_scope_start(s, task_start_report, (void *)0x1234, &v, &t), 0);
    ck_assert_ptr_eq(v, (void *)0x1234);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(atomic_load(&runs), 0); /* still running */
    tu_latch_post(&release);
    int r = -1;
    ck_assert_int_eq(cancel_task_join(t, &r), 0);
    ck_assert_int_eq(r, 0);
    ck_assert_int_eq(atomic_load(&runs), 1);
    cancel_task_started((void *)1); /* outside a task: nothing */
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
}
END_TEST

START_TEST(start_returns_the_tasks_result_or_echild_when_it_returns_before_started)
{
    cancel_scope_t *s = cancel_scope_open(CANCEL_SCOPE_SUPERVISE);
    void *v = &v;
    ck_assert_int_eq(cancel_scope_start(s, task_return_arg, (void *)(intptr_t)EPIPE, &v, NULL),
                     EPIPE);
    ck_assert_ptr_eq(v, &v);
    cancel_task_t *t = (cancel_task_t *)&v;
    ck_assert_int_eq(cancel_scope_start(s, task_return_arg, NULL, &v, &t), ECHILD);
    ck_assert_ptr_eq(t, (cancel_task_t *)&v); /* no handle on failure */
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    ck_assert_int_eq(atomic_load(&runs), 2);
    /* Not SUPERVISE: the failure also counts as the scope's. */
    s = cancel_scope_open(0);
    ck_assert_int_eq(cancel_scope_start(s, task_return_arg, (void *)(intptr_t)EIO, NULL, NULL),
                     EIO);
    ck_assert_int_eq(cancel_scope_join(s, NULL), EIO);
}
END_TEST

static int task_never_started(void *arg)
{
    (void)arg;
    tu_latch_post(&started);
    int rc = block_until_cancelled();
    atomic_fetch_add(&runs, 1);
    return rc;
}

struct starter {
    cancel_scope_t *s;
    cancel_token_t *as;   /* the starter's current token */
    int rc;
    int runs_seen;        /* RUNS when start returned */
};

static void *start_in_thread(void *arg)
{
    struct starter *st = arg;
    cancel_token_t *prev = cancel_enter(st->as);
    st->rc = cancel_scope_start(st->s, task_never_started, NULL, NULL, NULL);
    st->runs_seen = atomic_load(&runs);
    cancel_leave(prev);
    return NULL;
}

START_TEST(start_cancelled_while_waiting_cancels_the_task_waits_and_returns_ecanceled)
{
    cancel_scope_t *s = cancel_scope_open_in(NULL, 0);
    cancel_token_t *me = cancel_token_new();
    struct starter st = { s, me, -1, -1 };
    pthread_t th;
    tu_thread_start(&th, start_in_thread, &st);
    tu_latch_wait(&started);
    cancel_token_cancel(me, ECANCELED);
    tu_thread_join(th);
    ck_assert_int_eq(st.rc, ECANCELED);
    ck_assert_int_eq(st.runs_seen, 1); /* the task had ended */
    ck_assert(!cancel_token_is_cancelled(cancel_scope_token(s)));
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    cancel_token_unref(me);
}
END_TEST

START_TEST(start_under_a_deadline_returns_etimedout)
{
    cancel_scope_t *s = cancel_scope_open_in(NULL, 0);
    int64_t t0 = tu_now_ns();
    cancel_token_t *me = cancel_token_with_timeout(NULL, 20 * 1000000LL);
    cancel_token_t *prev = cancel_enter(me);
    ck_assert_int_eq(cancel_scope_start(s, task_never_started, NULL, NULL, NULL), ETIMEDOUT);
    cancel_leave(prev);
    ck_assert_int_ge(tu_now_ns() - t0, 20 * 1000000LL);
    ck_assert_int_eq(atomic_load(&runs), 1);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    cancel_token_unref(me);
}
END_TEST

START_TEST(start_returns_ecanceled_when_the_scope_is_cancelled_while_it_waits)
{
    cancel_scope_t *s = cancel_scope_open_in(NULL, 0);
    struct starter st = { s, NULL, -1, -1 };
    pthread_t th;
    tu_thread_start(&th, start_in_thread, &st);
    tu_latch_wait(&started);
    cancel_scope_cancel(s);
    tu_thread_join(th);
    ck_assert_int_eq(st.rc, ECANCELED);
    ck_assert_int_eq(st.runs_seen, 1);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
}
END_TEST

/* Loop: a start whose task fails, returns 0 without started, or is
 * cancelled, all racing the starter's wait. */
static int task_start_mode(void *arg)
{
    int mode = (int)(intptr_t)arg;
    if (mode == 0)
        return EPIPE;
    if (mode == 1)
        return 0;
    cancel_task_started((void *)7);
    return 0;
}

START_TEST(start_races_its_tasks_end_and_a_cancel)
{
    long before = records();
    cancel_scope_t *s = cancel_scope_open_in(NULL, CANCEL_SCOPE_SUPERVISE);
    int mode = _i % 3;
    int rc = cancel_scope_start(s, task_start_mode, (void *)(intptr_t)mode, NULL, NULL);
    ck_assert_int_eq(rc, mode == 0 ? EPIPE : mode == 1 ? ECHILD : 0);
    cancel_token_t *me = cancel_token_new();
    struct starter st = { s, me, -1, -1 };
    pthread_t th;
    tu_thread_start(&th, start_in_thread, &st);
    if (_i & 1)
        tu_latch_wait(&started);
    cancel_token_cancel(me, ECANCELED);
    tu_thread_join(th);
    ck_assert_int_eq(st.rc, ECANCELED);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    ck_assert_int_eq(records(), before);
    cancel_token_unref(me);
}
END_TEST

static int task_wait_turn(void *arg)
{
    tu_latch_t *turn = arg;
    tu_latch_wait(turn);
    return (int)(turn - (tu_latch_t *)0) & 0; /* 0 */
}

START_TEST(next_hands_out_finished_tasks_in_completion_order_each_once)
{
    enum { N = 5 };
    tu_latch_t turns[N];
    cancel_task_t *h[N];
    cancel_scope_t *s = cancel_scope_open(CANCEL_SCOPE_SUPERVISE);
    for (int i = 0; i < N; i++) {
        tu_latch_init(&turns[i]);
        ck_assert_int_eq(cancel_scope_spawn(s, task_wait_turn, &turns[i], &h[i]), 0);
    }
    /* A handle-less task never appears. */
    ck_assert_int_eq(cancel_scope_spawn(s, task_return_arg, NULL, NULL), 0);
    int order[N] = { 3, 0, 4, 1, 2 };
    for (int k = 0; k < N; k++) {
        tu_latch_post(&turns[order[k]]);
        cancel_task_t *t = NULL;
        int r = -1;
        ck_assert_int_eq(cancel_scope_next(s, NULL, &t, &r), 0);
        ck_assert_ptr_eq(t, h[order[k]]);
        ck_assert_int_eq(r, 0);
        int r2 = -1; /* next and task_join see the same result */
        ck_assert_int_eq(cancel_task_join(t, &r2), 0);
        ck_assert_int_eq(r2, r);
    }
    ck_assert_int_eq(cancel_scope_next(s, NULL, NULL, NULL), ECHILD);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
}
END_TEST

START_TEST(next_returns_echild_etimedout_and_is_not_cut_short_by_cancellation)
{
    cancel_scope_t *s = cancel_scope_open_in(NULL, 0);
    ck_assert_int_eq(cancel_scope_next(s, NULL, NULL, NULL), ECHILD);
    ck_assert_int_eq(cancel_scope_next(NULL, NULL, NULL, NULL), EINVAL);
    cancel_task_t *t;
    ck_assert_int_eq(cancel_scope_spawn(s, task_wait_release_then_return_arg,
                                        (void *)(intptr_t)EPIPE, &t), 0);
    tu_latch_wait(&started);
    /* The caller's own cancelled token does not cut next short. */
    cancel_token_t *me = cancel_token_new();
    cancel_token_cancel(me, ECANCELED);
    cancel_token_t *prev = cancel_enter(me);
    int64_t t0 = tu_now_ns();
    struct timespec dl = in_ns(30 * 1000000LL);
    ck_assert_int_eq(cancel_scope_next(s, &dl, NULL, NULL), ETIMEDOUT);
    ck_assert_int_ge(tu_now_ns() - t0, 30 * 1000000LL);
    tu_latch_post(&release);
    int r = -1;
    cancel_task_t *got = NULL;
    ck_assert_int_eq(cancel_scope_next(s, NULL, &got, &r), 0);
    cancel_leave(prev);
    ck_assert_ptr_eq(got, t);
    ck_assert_int_eq(r, EPIPE);
    ck_assert_int_eq(cancel_scope_next(s, NULL, NULL, NULL), ECHILD);
    ck_assert_int_eq(cancel_scope_join(s, NULL), EPIPE);
    cancel_token_unref(me);
}
END_TEST

struct nexter {
    cancel_scope_t *s;
    int rc;
    int result;
    cancel_task_t *t;
};

static void *next_in_thread(void *arg)
{
    struct nexter *n = arg;
    n->rc = cancel_scope_next(n->s, NULL, &n->t, &n->result);
    return NULL;
}

START_TEST(next_sees_a_task_that_finishes_while_it_starts_waiting)
{
    cancel_scope_t *s = cancel_scope_open(CANCEL_SCOPE_SUPERVISE);
    cancel_task_t *t;
    ck_assert_int_eq(cancel_scope_spawn(s, task_return_arg, (void *)(intptr_t)(_i + 1), &t), 0);
    struct nexter n = { s, -1, -1, NULL };
    pthread_t th;
    tu_thread_start(&th, next_in_thread, &n);
    tu_thread_join(th);
    ck_assert_int_eq(n.rc, 0);
    ck_assert_ptr_eq(n.t, t);
    ck_assert_int_eq(n.result, _i + 1);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
}
END_TEST

START_TEST(release_frees_a_finished_task_and_next_no_longer_hands_it_out)
{
    long before = records();
    cancel_scope_t *s = cancel_scope_open(0);
    cancel_task_t *t;
    ck_assert_int_eq(cancel_scope_spawn(s, task_return_arg, NULL, &t), 0);
    ck_assert_int_eq(cancel_task_join(t, NULL), 0);
    ck_assert_int_eq(records(), before + 1); /* held by its handle */
    cancel_task_release(t);
    ck_assert_int_eq(records(), before);
    ck_assert_int_eq(cancel_scope_next(s, NULL, NULL, NULL), ECHILD);
    /* A handle next handed out stays valid until released. */
    ck_assert_int_eq(cancel_scope_spawn(s, task_return_arg, NULL, &t), 0);
    cancel_task_t *got;
    ck_assert_int_eq(cancel_scope_next(s, NULL, &got, NULL), 0);
    ck_assert_ptr_eq(got, t);
    ck_assert_int_eq(records(), before + 1);
    ck_assert_ptr_nonnull(cancel_task_token(got));
    cancel_task_release(got);
    ck_assert_int_eq(records(), before);
    cancel_task_release(NULL);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
}
END_TEST

START_TEST(release_of_a_running_task_frees_it_when_it_finishes)
{
    long before = records();
    cancel_scope_t *s = cancel_scope_open(0);
    cancel_task_t *t;
    ck_assert_int_eq(cancel_scope_spawn(s, task_wait_release_then_return_arg, NULL, &t), 0);
    if (_i & 1)
        tu_latch_wait(&started);
    /* A next waiting for it gives up: nothing is left to hand out. */
    struct nexter n = { s, -1, -1, NULL };
    pthread_t th;
    tu_thread_start(&th, next_in_thread, &n);
    cancel_task_release(t);
    tu_thread_join(th);
    ck_assert_int_eq(n.rc, ECHILD);
    tu_latch_post(&release);
    /* Join waits for it anyway; afterwards nothing is left over. */
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    int64_t until = tu_now_ns() + TU_WAKE_GUARD_NS;
    while (records() != before && tu_now_ns() < until)
        sched_yield();
    ck_assert_int_eq(records(), before);
}
END_TEST

static int task_posts_then_returns(void *arg)
{
    (void)arg;
    atomic_fetch_add(&runs, 1);
    return 0;
}

START_TEST(handle_less_tasks_are_freed_as_soon_as_they_finish)
{
    long before = records();
    cancel_scope_t *s = cancel_scope_open(0);
    ck_assert_int_eq(cancel_scope_set_limit(s, 2), 0);
    for (int i = 0; i < 1000; i++)
        ck_assert_int_eq(cancel_scope_spawn(s, task_posts_then_returns, NULL, NULL), 0);
    int64_t until = tu_now_ns() + TU_WAKE_GUARD_NS;
    while ((atomic_load(&runs) < 1000 || records() != before) && tu_now_ns() < until)
        sched_yield();
    /* The scope is still open, and holds nothing of them: not even a
     * token under its own, so cancelling it walks its live tasks only. */
    ck_assert_int_eq(atomic_load(&runs), 1000);
    ck_assert_int_eq(records(), before);
    ck_assert_ptr_null(cancel_scope_token(s)->first_child);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
}
END_TEST

START_TEST(join_leaves_no_task_record_or_token_behind)
{
    long before = records();
    cancel_token_t *parent = cancel_token_new();
    cancel_scope_t *s = cancel_scope_open_in(parent, 0);
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(cancel_scope_spawn(s, task_posts_then_returns, NULL, NULL), 0);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    /* At once, not eventually: join returned, so nothing of S is left. */
    ck_assert_int_eq(records(), before);
    ck_assert_ptr_null(parent->first_child);
    cancel_token_unref(parent);
}
END_TEST

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
/* Sanitizers keep freed memory in quarantine and slow each task tenfold:
 * they run a tenth of the tasks and check the records, not the RSS. */
enum { MILLION = 100000, CHECK_RSS = 0 };
#else
enum { MILLION = 1000000, CHECK_RSS = 1 };
#endif
/* memcheck keeps freed blocks in a queue too (make check-valgrind). */
#define RSS_SEEN (CHECK_RSS && !getenv("CANCEL_VALGRIND"))

START_TEST(a_million_handle_less_tasks_through_one_scope_keep_memory_flat)
{
    long before = records();
    cancel_scope_t *s = cancel_scope_open(0);
    ck_assert_int_eq(cancel_scope_set_limit(s, 2), 0);
    long rss0 = 0, peak_records = 0;
    for (int i = 0; i < MILLION; i++) {
        ck_assert_int_eq(cancel_scope_spawn(s, task_posts_then_returns, NULL, NULL), 0);
        if (i == 20000)
            rss0 = rss_kib(); /* after the warm-up: caches and threads made */
        long r = records() - before;
        if (r > peak_records)
            peak_records = r;
    }
    long rss1 = rss_kib();
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    ck_assert_int_eq(atomic_load(&runs), MILLION);
    /* Limit 2, the one being made, and finished ones on their way out. */
    ck_assert_int_le(peak_records, 5);
    if (RSS_SEEN)
        ck_assert_int_lt(rss1 - rss0, 1024);
}
END_TEST

START_TEST(drain_refuses_new_tasks_with_eshutdown_and_leaves_running_ones_alone)
{
    cancel_scope_t *s = cancel_scope_open_in(NULL, 0);
    cancel_token_t *d = cancel_scope_drain_token(s);
    ck_assert_ptr_nonnull(d);
    ck_assert_ptr_eq(cancel_scope_drain_token(s), d);
    cancel_task_t *t;
    ck_assert_int_eq(cancel_scope_spawn(s, task_wait_release_then_return_arg, NULL, &t), 0);
    tu_latch_wait(&started);
    ck_assert_int_eq(cancel_scope_drain(s, -1), 0);
    ck_assert_int_eq(cancel_token_reason(d), ECANCELED);
    ck_assert(!cancel_token_is_cancelled(cancel_task_token(t)));
    ck_assert(!cancel_token_is_cancelled(cancel_scope_token(s)));
    ck_assert_int_eq(cancel_scope_spawn(s, task_return_arg, NULL, NULL), ESHUTDOWN);
    ck_assert_int_eq(cancel_scope_try_spawn(s, task_return_arg, NULL, NULL), ESHUTDOWN);
    ck_assert_int_eq(cancel_scope_start(s, task_return_arg, NULL, NULL, NULL), ESHUTDOWN);
    ck_assert_int_eq(cancel_scope_drain(s, -1), EALREADY); /* never is not shorter */
    tu_latch_post(&release);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    ck_assert_int_eq(atomic_load(&runs), 0);
    ck_assert_int_eq(cancel_scope_drain(NULL, 0), EINVAL);
    ck_assert_ptr_null(cancel_scope_drain_token(NULL));
}
END_TEST

/* An accept loop: waits in its scope's drain token, returns what a wrapped
 * call would. */
static int task_accept_loop(void *arg)
{
    cancel_scope_t *s = arg;
    cancel_token_t *prev = cancel_enter(cancel_scope_drain_token(s));
    tu_latch_post(&started);
    int rc = block_until_cancelled();
    cancel_leave(prev);
    return rc;
}

START_TEST(drain_stops_an_accept_loop_and_its_ecanceled_is_not_a_failure)
{
    cancel_scope_t *s = cancel_scope_open_in(NULL, 0);
    ck_assert_int_eq(cancel_scope_spawn(s, task_accept_loop, s, NULL), 0);
    tu_latch_wait(&started);
    ck_assert_int_eq(cancel_scope_drain(s, -1), 0);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
}
END_TEST

START_TEST(drain_cancels_the_scope_hard_after_the_grace_when_tasks_still_run)
{
    cancel_scope_t *s = cancel_scope_open_in(NULL, 0);
    ck_assert_int_eq(cancel_scope_spawn(s, task_block, NULL, NULL), 0);
    tu_latch_wait(&started);
    int64_t t0 = tu_now_ns();
    ck_assert_int_eq(cancel_scope_drain(s, 30 * 1000000LL), 0);
    ck_assert(!cancel_token_is_cancelled(cancel_scope_token(s)));
    struct timespec guard = in_ns(TU_WAKE_GUARD_NS);
    ck_assert_int_eq(cancel_token_wait(cancel_scope_token(s), &guard), 0);
    ck_assert_int_ge(tu_now_ns() - t0, 30 * 1000000LL);
    ck_assert_int_eq(cancel_token_reason(cancel_scope_token(s)), ECANCELED);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0); /* the hard cancel's ECANCELED */
}
END_TEST

START_TEST(drain_with_zero_grace_cancels_at_once_and_a_second_drain_only_shortens)
{
    cancel_scope_t *s = cancel_scope_open_in(NULL, 0);
    ck_assert_int_eq(cancel_scope_spawn(s, task_block, NULL, NULL), 0);
    tu_latch_wait(&started);
    ck_assert_int_eq(cancel_scope_drain(s, 3600 * 1000000000LL), 0);
    ck_assert_int_eq(cancel_scope_drain(s, 7200 * 1000000000LL), EALREADY);
    ck_assert(!cancel_token_is_cancelled(cancel_scope_token(s)));
    ck_assert_int_eq(cancel_scope_drain(s, 0), 0);
    ck_assert(cancel_token_is_cancelled(cancel_scope_token(s)));
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    /* No task left at the grace: nothing to cancel. */
    s = cancel_scope_open_in(NULL, 0);
    ck_assert_int_eq(cancel_scope_drain(s, 0), 0);
    ck_assert(!cancel_token_is_cancelled(cancel_scope_token(s)));
    ck_assert(cancel_token_is_cancelled(cancel_scope_drain_token(s)));
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
}
END_TEST

START_TEST(drain_token_is_a_child_of_the_scope_token)
{
    cancel_token_t *root = cancel_token_new();
    cancel_scope_t *s = cancel_scope_open_in(root, 0);
    cancel_token_t *d = cancel_scope_drain_token(s);
    ck_assert(!cancel_token_is_cancelled(d));
    cancel_token_cancel(root, EPIPE);
    ck_assert_int_eq(cancel_token_reason(d), EPIPE);
    ck_assert_int_eq(cancel_scope_join(s, NULL), EPIPE);
    s = cancel_scope_open_in(NULL, 0);
    d = cancel_scope_drain_token(s);
    cancel_scope_cancel(s);
    ck_assert_int_eq(cancel_token_reason(d), ECANCELED);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    /* Asked for only after the drain began: born cancelled. */
    s = cancel_scope_open_in(NULL, 0);
    ck_assert_int_eq(cancel_scope_drain(s, -1), 0);
    ck_assert_int_eq(cancel_token_reason(cancel_scope_drain_token(s)), ECANCELED);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    cancel_token_unref(root);
}
END_TEST

struct drainer {
    cancel_scope_t *s;
};

static void *drain_in_thread(void *arg)
{
    struct drainer *d = arg;
    cancel_scope_drain(d->s, -1);
    return NULL;
}

START_TEST(drain_racing_a_spawn_either_runs_the_task_or_refuses_it)
{
    cancel_scope_t *s = cancel_scope_open_in(NULL, 0);
    struct drainer d = { s };
    pthread_t th;
    tu_thread_start(&th, drain_in_thread, &d);
    int ok = 0, refused = 0;
    for (int i = 0; i < 50; i++) {
        int rc = cancel_scope_spawn(s, task_return_arg, NULL, NULL);
        ck_assert(rc == 0 || rc == ESHUTDOWN);
        ok += rc == 0;
        refused += rc == ESHUTDOWN;
    }
    tu_thread_join(th);
    ck_assert_int_eq(cancel_scope_spawn(s, task_return_arg, NULL, NULL), ESHUTDOWN);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    ck_assert_int_eq(atomic_load(&runs), ok); /* every spawn that returned 0 ran */
    ck_assert_int_eq(ok + refused, 50);
}
END_TEST

/* ------------------------------------------------------------ suite */

int main(void)
{
    Suite *suite = suite_create("scope");
    struct {
        const char *name;
        const TTest *tests[16];
    } groups[] = {
        { "open", { open_rejects_both_flags_and_unknown_bits_with_einval,
                    empty_scope_joins_with_zero_and_null_value,
                    open_uses_the_current_token_as_parent,
                    open_under_cancelled_parent_gives_cancelled_scope,
                    invalid_arguments_return_einval } },
        { "tokens", { task_current_token_is_a_child_of_the_scope_token,
                      task_cancel_cancels_only_that_task,
                      cancel_signals_every_task_before_any_wakes } },
        { "failfast", { first_failure_cancels_siblings_and_is_returned_by_join,
                        ecanceled_after_cancel_is_not_a_failure,
                        ecanceled_without_cancel_is_a_real_failure,
                        real_failure_after_outside_cancel_is_reported,
                        real_failure_wins_over_parent_reason,
                        join_returns_parent_reason_when_parent_cancelled } },
        { "spawn", { spawn_on_cancelled_scope_returns_ecanceled_and_starts_nothing,
                     tasks_spawn_tasks_while_the_owner_is_joining } },
        { "limit", { limit_caps_running_tasks_and_spawn_waits_for_a_slot,
                     full_scope_spawn_returns_ecanceled_when_scope_is_cancelled,
                     full_scope_spawn_returns_ecanceled_when_caller_token_is_cancelled,
                     raising_the_limit_releases_a_waiting_spawn } },
        { "terminate", { terminate_records_first_value_and_later_calls_return_ealready,
                         terminate_after_cancel_still_records_value,
                         race_first_success_terminates_with_its_arg,
                         race_returns_first_failure_only_when_no_task_succeeded,
                         terminate_after_race_winner_returns_ealready,
                         supervise_failures_do_not_cancel_siblings_and_results_come_from_handles } },
        { "join", { joining_from_inside_returns_edeadlk,
                    join_until_times_out_then_join_again_succeeds,
                    join_until_keeps_a_scope_whose_own_result_is_etimedout,
                    join_is_not_cut_short_by_parent_cancellation,
                    nested_scopes_three_deep_are_cancelled_from_the_outermost } },
        { "threads", { ten_thousand_tasks_block_in_one_scope_and_join_after_cancel,
                       sequential_tasks_reuse_the_same_thread,
                       idle_worker_cache_is_bounded,
                       thread_creation_failure_gives_eagain_and_scope_stays_joinable,
                       process_wide_stack_size_applies_to_new_workers } },
        { "read", { tasks_blocked_in_cancel_read_wake_on_scope_cancel_and_leave_the_bytes,
                    a_reader_that_gets_data_succeeds_while_its_siblings_are_cancelled,
                    dump_shows_a_task_blocked_in_cancel_read_with_its_fd } },
        { "diagnostics", { dump_lists_live_tasks_with_names_state_and_cancelled_tokens,
                           dump_shows_the_wrapped_call_a_task_is_blocked_in } },
        { "issue11", { join_waits_for_a_spawn_that_was_waiting_for_a_slot,
                       callback_of_the_scope_token_that_joins_gets_edeadlk,
                       callback_of_an_ancestor_token_that_joins_gets_edeadlk,
                       task_of_a_scope_whose_opener_is_freed_joins_a_nested_scope,
                       task_that_calls_pthread_exit_finishes_with_eownerdead,
                       task_that_is_pthread_cancelled_finishes_with_eownerdead,
                       dump_shows_a_task_waiting_in_spawn_for_a_slot_of_its_own_full_scope } },
        { "servers", { try_spawn_returns_ebusy_at_once_when_the_limit_is_reached,
                       start_returns_the_ready_value_while_the_task_goes_on,
                       start_returns_the_tasks_result_or_echild_when_it_returns_before_started,
                       start_cancelled_while_waiting_cancels_the_task_waits_and_returns_ecanceled,
                       start_under_a_deadline_returns_etimedout,
                       start_returns_ecanceled_when_the_scope_is_cancelled_while_it_waits,
                       next_hands_out_finished_tasks_in_completion_order_each_once,
                       next_returns_echild_etimedout_and_is_not_cut_short_by_cancellation,
                       release_frees_a_finished_task_and_next_no_longer_hands_it_out,
                       handle_less_tasks_are_freed_as_soon_as_they_finish } },
        { "drain", { drain_refuses_new_tasks_with_eshutdown_and_leaves_running_ones_alone,
                     drain_stops_an_accept_loop_and_its_ecanceled_is_not_a_failure,
                     drain_cancels_the_scope_hard_after_the_grace_when_tasks_still_run,
                     drain_with_zero_grace_cancels_at_once_and_a_second_drain_only_shortens,
                     drain_token_is_a_child_of_the_scope_token } },
        { "memory", { a_million_handle_less_tasks_through_one_scope_keep_memory_flat } },
    };
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
        TCase *tc = tcase_create(groups[g].name);
        tcase_add_checked_fixture(tc, setup, NULL);
        tcase_set_timeout(tc, TU_TIMEOUT);
        for (int i = 0; i < 16 && groups[g].tests[i]; i++)
            tcase_add_test(tc, groups[g].tests[i]);
        if (strcmp(groups[g].name, "issue11") == 0)
            tcase_add_loop_test(tc, join_waits_for_a_spawn_that_was_waiting_for_a_slot, 0, 32);
        if (strcmp(groups[g].name, "servers") == 0) {
            tcase_add_loop_test(tc, start_races_its_tasks_end_and_a_cancel, 0, 24);
            tcase_add_loop_test(tc, next_sees_a_task_that_finishes_while_it_starts_waiting, 0, 32);
            tcase_add_loop_test(tc, release_of_a_running_task_frees_it_when_it_finishes, 0, 16);
            tcase_add_loop_test(tc, join_leaves_no_task_record_or_token_behind, 0, 32);
        }
        if (strcmp(groups[g].name, "drain") == 0)
            tcase_add_loop_test(tc, drain_racing_a_spawn_either_runs_the_task_or_refuses_it, 0, 16);
        if (strcmp(groups[g].name, "memory") == 0)
            tcase_set_timeout(tc, 600); /* a million tasks on a loaded 2-core machine */
        if (g == 3)
            tcase_add_loop_test(tc, spawned_task_runs_exactly_once_even_if_cancelled_before_it_starts,
                                0, 16);
        suite_add_tcase(suite, tc);
    }
    return tu_run_suite(suite);
}

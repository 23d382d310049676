/*
 * check_callback.c - callbacks on tokens (SPEC.md "Callbacks"): add,
 * remove, exactly once, inline, the three cases of remove, what a
 * callback may do, and no allocation.
 */
#include "internal.h"
#include "testutil.h"
#include "malloc_hook.h"

#include <sched.h>
#include <sys/wait.h>
#include <string.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>


/* What a counting callback saw. */
struct seen {
    _Atomic int runs;
    int reason;
    pthread_t thread;
};

static void seen_cb(void *arg, int reason)
{
    struct seen *s = arg;
    s->reason = reason;
    s->thread = pthread_self();
    atomic_fetch_add(&s->runs, 1);
}

/* ------------------------------------------------------------ add */

START_TEST(add_on_live_token_arms_and_returns_zero)
{
    cancel_token_t *t = cancel_token_new();
    struct seen s = { 0 };
    cancel_callback_t cb;
    ck_assert_int_eq(cancel_callback_add(&cb, t, seen_cb, &s), 0);
    ck_assert_int_eq(atomic_load(&s.runs), 0);
    ck_assert(cancel_token_cancel(t, EPIPE));
    ck_assert_int_eq(atomic_load(&s.runs), 1);
    ck_assert_int_eq(s.reason, EPIPE);
    cancel_token_unref(t);
}
END_TEST

START_TEST(add_on_cancelled_token_runs_inline_in_the_calling_thread_before_returning_one)
{
    cancel_token_t *t = cancel_token_new();
    cancel_token_cancel(t, 555);
    struct seen s = { 0 };
    cancel_callback_t cb;
    ck_assert_int_eq(cancel_callback_add(&cb, t, seen_cb, &s), 1);
    ck_assert_int_eq(atomic_load(&s.runs), 1);
    ck_assert_int_eq(s.reason, 555);
    ck_assert(pthread_equal(s.thread, pthread_self()));
    ck_assert_uint_eq(atomic_load(&t->refs), 1); /* nothing armed, no reference */
    ck_assert(!cancel_callback_remove(&cb));
    cancel_token_unref(t);
}
END_TEST

START_TEST(add_on_null_token_arms_nothing_and_remove_returns_true)
{
    struct seen s = { 0 };
    cancel_callback_t cb;
    ck_assert_int_eq(cancel_callback_add(&cb, NULL, seen_cb, &s), 0);
    cancel_token_t *t = cancel_token_new();
    cancel_token_cancel(t, 0);
    cancel_token_unref(t);
    ck_assert_int_eq(atomic_load(&s.runs), 0);
    ck_assert(cancel_callback_remove(&cb));
    ck_assert(!cancel_callback_remove(&cb)); /* already removed */
    ck_assert_int_eq(atomic_load(&s.runs), 0);
}
END_TEST

START_TEST(add_with_null_cb_or_fn_fails_with_einval_and_changes_nothing)
{
    cancel_token_t *t = cancel_token_new();
    struct seen s = { 0 };
    cancel_callback_t cb;
    errno = 0;
    ck_assert_int_eq(cancel_callback_add(NULL, t, seen_cb, &s), -1);
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_int_eq(cancel_callback_add(&cb, t, NULL, &s), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_null(t->callbacks);
    ck_assert_uint_eq(atomic_load(&t->refs), 1);
    /* Also on a cancelled token: nothing runs. */
    cancel_token_cancel(t, 0);
    errno = 0;
    ck_assert_int_eq(cancel_callback_add(&cb, t, NULL, &s), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert(!cancel_callback_remove(NULL));
    ck_assert_int_eq(atomic_load(&s.runs), 0);
    cancel_token_unref(t);
}
END_TEST

START_TEST(armed_callback_keeps_its_released_token_alive_and_runs_through_the_parent)
{
    cancel_token_t *p = cancel_token_new();
    cancel_token_t *t = cancel_token_child(p);
    struct seen s = { 0 };
    cancel_callback_t cb;
    cancel_callback_add(&cb, t, seen_cb, &s);
    ck_assert_uint_eq(atomic_load(&t->refs), 1);   /* add took no reference */
    cancel_token_unref(t);                 /* the callback now holds T */
    ck_assert_ptr_eq(p->first_child, t);
    ck_assert(atomic_load(&t->refs) & CANCEL_REFS_HOLD);
    ck_assert(cancel_token_cancel(p, EPIPE));
    ck_assert_int_eq(atomic_load(&s.runs), 1);    /* ran exactly once ... */
    ck_assert_int_eq(s.reason, EPIPE);
    ck_assert_ptr_null(p->first_child);           /* ... and T went with it */
    ck_assert(!cancel_callback_remove(&cb));
    cancel_token_unref(p);
}
END_TEST

START_TEST(removing_the_last_callback_of_a_released_token_frees_it)
{
    cancel_token_t *p = cancel_token_new();
    cancel_token_t *t = cancel_token_child(p);
    struct seen s = { 0 };
    cancel_callback_t a, b;
    cancel_callback_add(&a, t, seen_cb, &s);
    cancel_callback_add(&b, t, seen_cb, &s);
    cancel_token_unref(t);
    ck_assert(cancel_callback_remove(&a));
    ck_assert_ptr_eq(p->first_child, t);          /* B still holds it */
    ck_assert(cancel_callback_remove(&b));
    ck_assert_ptr_null(p->first_child);           /* freed (ASan: no leak) */
    ck_assert(cancel_token_cancel(p, 0));
    ck_assert_int_eq(atomic_load(&s.runs), 0);
    cancel_token_unref(p);
}
END_TEST

START_TEST(a_released_token_is_freed_after_its_last_callback_runs)
{
    cancel_token_t *p = cancel_token_new();
    cancel_token_t *t = cancel_token_child(p);
    struct seen s = { 0 };
    cancel_callback_t first, second;
    cancel_callback_add(&first, t, seen_cb, &s);
    cancel_callback_add(&second, t, seen_cb, &s);
    cancel_token_unref(t);
    ck_assert(cancel_callback_remove(&second));
    ck_assert_ptr_eq(p->first_child, t);
    ck_assert(cancel_token_cancel(p, 0));
    ck_assert_int_eq(atomic_load(&s.runs), 1);
    ck_assert_ptr_null(p->first_child);
    cancel_token_unref(p);
}
END_TEST

static void remove_other(void *arg, int reason)
{
    (void)reason;
    cancel_callback_t *other = arg;
    /* OTHER is pending in this very cancel and carries its token's hold. */
    if (!cancel_callback_remove(other))
        abort();
}

START_TEST(removing_a_pending_callback_that_carries_the_hold_frees_the_token)
{
    cancel_token_t *p = cancel_token_new();
    cancel_token_t *t = cancel_token_child(p);
    struct seen s = { 0 };
    cancel_callback_t on_parent, other, carrier;
    cancel_callback_add(&other, t, seen_cb, &s);
    cancel_callback_add(&carrier, t, seen_cb, &s);   /* list head: carries the hold */
    cancel_callback_add(&on_parent, p, remove_other, &carrier);
    cancel_token_unref(t);
    ck_assert(cancel_token_cancel(p, 0));   /* p's callback runs first */
    ck_assert_int_eq(atomic_load(&s.runs), 1); /* OTHER ran, CARRIER never */
    ck_assert_ptr_null(p->first_child);
    cancel_token_unref(p);
}
END_TEST

/* ------------------------------------------------------------ running */

START_TEST(callback_runs_exactly_once_however_often_its_token_is_cancelled)
{
    cancel_token_t *p = cancel_token_new();
    cancel_token_t *c = cancel_token_child(p);
    struct seen s = { 0 };
    cancel_callback_t cb;
    cancel_callback_add(&cb, c, seen_cb, &s);
    ck_assert(cancel_token_cancel(c, EPIPE));
    ck_assert(!cancel_token_cancel(c, 0));
    ck_assert(cancel_token_cancel(p, 0));
    ck_assert_int_eq(atomic_load(&s.runs), 1);
    ck_assert_int_eq(s.reason, EPIPE);
    ck_assert(!cancel_callback_remove(&cb));
    ck_assert_int_eq(atomic_load(&s.runs), 1);
    cancel_token_unref(c);
    cancel_token_unref(p);
}
END_TEST

START_TEST(callbacks_on_every_descendant_run_with_the_ancestors_reason)
{
    cancel_token_t *p = cancel_token_new();
    cancel_token_t *c = cancel_token_child(p);
    cancel_token_t *g = cancel_token_child(c);
    struct seen s[3] = { { 0 } };
    cancel_callback_t cb[3];
    cancel_token_t *tok[3] = { p, c, g };
    for (int i = 0; i < 3; i++)
        cancel_callback_add(&cb[i], tok[i], seen_cb, &s[i]);
    /* Several on one token. */
    struct seen more[4] = { { 0 } };
    cancel_callback_t mcb[4];
    for (int i = 0; i < 4; i++)
        cancel_callback_add(&mcb[i], g, seen_cb, &more[i]);
    ck_assert(cancel_token_cancel(p, 9999));
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(atomic_load(&s[i].runs), 1);
        ck_assert_int_eq(s[i].reason, 9999);
    }
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(atomic_load(&more[i].runs), 1);
    cancel_token_unref(g);
    cancel_token_unref(c);
    cancel_token_unref(p);
}
END_TEST

struct cancel_job {
    cancel_token_t *t;
    pthread_t self;
};

static void *cancel_job_thread(void *arg)
{
    struct cancel_job *j = arg;
    j->self = pthread_self();
    cancel_token_cancel(j->t, 0);
    return NULL;
}

START_TEST(callback_runs_in_the_thread_that_cancels)
{
    cancel_token_t *p = cancel_token_new();
    cancel_token_t *c = cancel_token_child(p);
    struct seen on_p = { 0 }, on_c = { 0 };
    cancel_callback_t cbp, cbc;
    cancel_callback_add(&cbp, p, seen_cb, &on_p);
    cancel_callback_add(&cbc, c, seen_cb, &on_c);
    struct cancel_job j = { p, pthread_self() };
    pthread_t th;
    tu_thread_start(&th, cancel_job_thread, &j);
    tu_thread_join(th);
    ck_assert(pthread_equal(on_p.thread, j.self));
    ck_assert(pthread_equal(on_c.thread, j.self));
    ck_assert(!pthread_equal(on_c.thread, pthread_self()));
    cancel_token_unref(c);
    cancel_token_unref(p);
}
END_TEST

/* ------------------------------------------------------------ remove */

START_TEST(remove_before_run_returns_true_and_fn_never_runs)
{
    cancel_token_t *t = cancel_token_new();
    struct seen s = { 0 }, other = { 0 };
    cancel_callback_t cb, cb2;
    cancel_callback_add(&cb, t, seen_cb, &s);
    cancel_callback_add(&cb2, t, seen_cb, &other);
    ck_assert(cancel_callback_remove(&cb));
    ck_assert(cancel_token_cancel(t, 0));
    ck_assert_int_eq(atomic_load(&s.runs), 0);
    ck_assert_int_eq(atomic_load(&other.runs), 1); /* the list stayed intact */
    ck_assert(!cancel_callback_remove(&cb));       /* removing twice */
    cancel_token_unref(t);
}
END_TEST

START_TEST(remove_after_run_returns_false_and_twice_too)
{
    cancel_token_t *t = cancel_token_new();
    struct seen s = { 0 };
    cancel_callback_t cb;
    cancel_callback_add(&cb, t, seen_cb, &s);
    cancel_token_cancel(t, 0);
    ck_assert(!cancel_callback_remove(&cb));
    ck_assert(!cancel_callback_remove(&cb));
    ck_assert_int_eq(atomic_load(&s.runs), 1);
    cancel_token_unref(t);
}
END_TEST

START_TEST(callback_can_be_added_again_after_remove)
{
    cancel_token_t *t = cancel_token_new();
    struct seen s = { 0 };
    cancel_callback_t cb;
    for (int i = 0; i < 3; i++) {
        cancel_callback_add(&cb, t, seen_cb, &s);
        ck_assert(cancel_callback_remove(&cb));
    }
    cancel_callback_add(&cb, t, seen_cb, &s);
    cancel_token_cancel(t, 0);
    ck_assert_int_eq(atomic_load(&s.runs), 1);
    cancel_token_unref(t);
}
END_TEST

/* fn blocks on a latch; a remover thread must not return before fn ends. */
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

struct remover {
    cancel_callback_t *cb;
    struct blocking *b;
    bool result, finished_at_return;
    _Atomic pid_t tid;
};

static void *remover_thread(void *arg)
{
    struct remover *r = arg;
    atomic_store(&r->tid, tu_gettid());
    r->result = cancel_callback_remove(r->cb);
    r->finished_at_return = atomic_load(&r->b->finished);
    return NULL;
}

START_TEST(remove_of_a_callback_running_on_another_thread_waits_until_fn_returned)
{
    cancel_token_t *t = cancel_token_new();
    struct blocking b;
    tu_latch_init(&b.entered);
    tu_latch_init(&b.release);
    atomic_init(&b.finished, false);
    cancel_callback_t cb;
    cancel_callback_add(&cb, t, blocking_cb, &b);
    struct cancel_job j = { t, pthread_self() };
    pthread_t canceller, remover;
    tu_thread_start(&canceller, cancel_job_thread, &j);
    tu_latch_wait(&b.entered);
    struct remover r = { .cb = &cb, .b = &b };
    atomic_init(&r.tid, 0);
    tu_thread_start(&remover, remover_thread, &r);
    while (atomic_load(&r.tid) == 0)
        sched_yield();
    tu_wait_until_sleeping(atomic_load(&r.tid));
    tu_latch_post(&b.release);
    tu_thread_join(remover);
    tu_thread_join(canceller);
    ck_assert(!r.result);
    ck_assert(r.finished_at_return);
    cancel_token_unref(t);
}
END_TEST

/* The same when fn runs inline in add on another thread. */
struct adder {
    cancel_callback_t *cb;
    cancel_token_t *t;
    struct blocking *b;
    int result;
};

static void *adder_thread(void *arg)
{
    struct adder *a = arg;
    a->result = cancel_callback_add(a->cb, a->t, blocking_cb, a->b);
    return NULL;
}

START_TEST(remove_of_a_callback_running_inline_in_add_on_another_thread_waits)
{
    cancel_token_t *t = cancel_token_new();
    cancel_token_cancel(t, 0);
    struct blocking b;
    tu_latch_init(&b.entered);
    tu_latch_init(&b.release);
    atomic_init(&b.finished, false);
    cancel_callback_t cb;
    struct adder a = { &cb, t, &b, -2 };
    pthread_t adder, remover;
    tu_thread_start(&adder, adder_thread, &a);
    tu_latch_wait(&b.entered);
    struct remover r = { .cb = &cb, .b = &b };
    atomic_init(&r.tid, 0);
    tu_thread_start(&remover, remover_thread, &r);
    while (atomic_load(&r.tid) == 0)
        sched_yield();
    tu_wait_until_sleeping(atomic_load(&r.tid));
    tu_latch_post(&b.release);
    tu_thread_join(remover);
    tu_thread_join(adder);
    ck_assert_int_eq(a.result, 1);
    ck_assert(!r.result);
    ck_assert(r.finished_at_return);
    cancel_token_unref(t);
}
END_TEST

/* fn removes its own callback: false, at once. */
struct self_remove {
    cancel_callback_t cb;
    int calls;
    bool result;
};

static void self_remove_cb(void *arg, int reason)
{
    struct self_remove *s = arg;
    (void)reason;
    s->calls++;
    s->result = cancel_callback_remove(&s->cb);
}

START_TEST(remove_from_inside_fn_returns_false_at_once)
{
    cancel_token_t *t = cancel_token_new();
    struct self_remove s = { .calls = 0, .result = true };
    cancel_callback_add(&s.cb, t, self_remove_cb, &s);
    ck_assert(cancel_token_cancel(t, 0));
    ck_assert_int_eq(s.calls, 1);
    ck_assert(!s.result);
    ck_assert(!cancel_callback_remove(&s.cb));
    /* Inline in add, too. */
    struct self_remove s2 = { .calls = 0, .result = true };
    ck_assert_int_eq(cancel_callback_add(&s2.cb, t, self_remove_cb, &s2), 1);
    ck_assert_int_eq(s2.calls, 1);
    ck_assert(!s2.result);
    cancel_token_unref(t);
}
END_TEST

/* Two callbacks of one cancel each try to remove the other: whichever runs
 * first wins (true), the other never runs. */
struct pair {
    cancel_callback_t cb[2];
    int runs[2];
    bool removed_other[2];
};

struct pair_arg {
    struct pair *p;
    int i;
};

static void remove_other_cb(void *arg, int reason)
{
    struct pair_arg *a = arg;
    (void)reason;
    a->p->runs[a->i]++;
    a->p->removed_other[a->i] = cancel_callback_remove(&a->p->cb[1 - a->i]);
}

START_TEST(fn_may_remove_another_pending_callback_of_the_same_cancel)
{
    cancel_token_t *p = cancel_token_new();
    cancel_token_t *c = cancel_token_child(p);
    struct pair pr = { 0 };
    struct pair_arg args[2] = { { &pr, 0 }, { &pr, 1 } };
    cancel_callback_add(&pr.cb[0], p, remove_other_cb, &args[0]);
    cancel_callback_add(&pr.cb[1], c, remove_other_cb, &args[1]);
    ck_assert(cancel_token_cancel(p, 0));
    ck_assert_int_eq(pr.runs[0] + pr.runs[1], 1);
    int ran = pr.runs[0] ? 0 : 1;
    ck_assert(pr.removed_other[ran]);
    /* The removed one dropped its reference: both tokens can go. */
    ck_assert_uint_eq(atomic_load(&c->refs), 1);
    ck_assert_uint_eq(atomic_load(&p->refs), 1);
    cancel_token_unref(c);
    cancel_token_unref(p);
}
END_TEST

/* ------------------------------------------------------------ what fn may do */

/* The callback storage is the argument, freed by fn. */
struct heap_cb {
    cancel_callback_t cb;
    int *runs;
};

static void free_heap_cb(void *arg, int reason)
{
    struct heap_cb *h = arg;
    (void)reason;
    (*h->runs)++;
    free(h);
}

START_TEST(fn_may_free_its_own_storage_also_when_run_inline)
{
    cancel_token_t *t = cancel_token_new();
    int runs = 0;
    struct heap_cb *h = malloc(sizeof *h);
    h->runs = &runs;
    ck_assert_int_eq(cancel_callback_add(&h->cb, t, free_heap_cb, h), 0);
    ck_assert(cancel_token_cancel(t, 0)); /* ASan: nothing reads h after fn */
    ck_assert_int_eq(runs, 1);
    h = malloc(sizeof *h);
    h->runs = &runs;
    ck_assert_int_eq(cancel_callback_add(&h->cb, t, free_heap_cb, h), 1);
    ck_assert_int_eq(runs, 2);
    cancel_token_unref(t);
}
END_TEST

/* fn cancels another token, adds and removes callbacks, releases tokens. */
struct busy {
    cancel_token_t *other;      /* to cancel */
    cancel_token_t *live;       /* to add/remove on */
    cancel_token_t *release;    /* a reference to drop */
    struct seen on_other, on_live, inline_seen;
    int add_live, add_inline;
    bool removed_live;
};

static void busy_cb(void *arg, int reason)
{
    struct busy *b = arg;
    (void)reason;
    cancel_callback_t cb_live, cb_inline;
    b->add_live = cancel_callback_add(&cb_live, b->live, seen_cb, &b->on_live);
    b->removed_live = cancel_callback_remove(&cb_live);
    cancel_token_cancel(b->other, EPIPE);
    b->add_inline = cancel_callback_add(&cb_inline, b->other, seen_cb, &b->inline_seen);
    cancel_token_unref(b->release);
}

START_TEST(fn_may_cancel_add_remove_and_release)
{
    cancel_token_t *t = cancel_token_new();
    struct busy b = { 0 };
    b.other = cancel_token_new();
    b.live = cancel_token_new();
    b.release = cancel_token_child(b.other);
    cancel_callback_t cb_other;
    cancel_callback_add(&cb_other, b.other, seen_cb, &b.on_other);
    cancel_callback_t cb;
    cancel_callback_add(&cb, t, busy_cb, &b);
    ck_assert(cancel_token_cancel(t, 0));
    ck_assert_int_eq(b.add_live, 0);
    ck_assert(b.removed_live);
    ck_assert_int_eq(atomic_load(&b.on_live.runs), 0);
    ck_assert_int_eq(atomic_load(&b.on_other.runs), 1);   /* nested cancel ran it */
    ck_assert_int_eq(b.on_other.reason, EPIPE);
    ck_assert_int_eq(b.add_inline, 1);
    ck_assert_int_eq(atomic_load(&b.inline_seen.runs), 1);
    ck_assert_ptr_null(b.other->first_child);             /* released child is gone */
    ck_assert(!cancel_token_is_cancelled(b.live));
    cancel_token_unref(b.live);
    cancel_token_unref(b.other);
    cancel_token_unref(t);
}
END_TEST

/* The callback owns the only user reference on its own token and drops it. */
static void unref_own_cb(void *arg, int reason)
{
    struct seen *s = arg;
    (void)reason;
    atomic_fetch_add(&s->runs, 1);
}

struct own {
    cancel_token_t *t;
    int runs;
};

static void release_own_cb(void *arg, int reason)
{
    struct own *o = arg;
    (void)reason;
    o->runs++;
    cancel_token_unref(o->t); /* the last user reference */
}

START_TEST(fn_may_release_the_last_reference_of_its_own_token)
{
    cancel_token_t *p = cancel_token_new();
    cancel_token_t *t = cancel_token_child(p);
    struct own o = { t, 0 };
    cancel_callback_t cb, later;
    struct seen s = { 0 };
    cancel_callback_add(&later, t, unref_own_cb, &s);
    cancel_callback_add(&cb, t, release_own_cb, &o);
    /* Cancel through the parent (we no longer own T after this). */
    ck_assert(cancel_token_cancel(p, 0));
    ck_assert_int_eq(o.runs, 1);
    ck_assert_int_eq(atomic_load(&s.runs), 1);
    ck_assert_ptr_null(p->first_child); /* T was freed */
    /* And cancelling T itself with a borrowed pointer. */
    t = cancel_token_child(p);
    o.t = t;
    ck_assert(cancel_token_is_cancelled(t));                  /* born cancelled */
    ck_assert_int_eq(cancel_callback_add(&cb, t, release_own_cb, &o), 1);
    ck_assert_int_eq(o.runs, 2);                              /* ran inline, freed T */
    ck_assert_ptr_null(p->first_child);
    cancel_token_unref(p);

    cancel_token_t *root = cancel_token_new();
    o.t = root;
    cancel_callback_add(&cb, root, release_own_cb, &o);
    ck_assert(cancel_token_cancel(root, 0)); /* ASan: no use after free */
    ck_assert_int_eq(o.runs, 3);
}
END_TEST

/* ------------------------------------------------------------ no allocation */

START_TEST(add_and_remove_do_not_call_malloc)
{
    cancel_token_t *t = cancel_token_new();
    cancel_token_t *dead = cancel_token_new();
    cancel_token_cancel(dead, 0);
    struct seen s = { 0 };
    cancel_callback_t cb, cb2;
    /* Prove the counter counts. */
    mh_count_begin();
    void *volatile probe = malloc(16); /* volatile: not elided */
    ck_assert_int_eq(mh_count_end(), 1);
    free(probe);

    mh_count_begin();
    int a1 = cancel_callback_add(&cb, t, seen_cb, &s);      /* armed */
    bool r1 = cancel_callback_remove(&cb);                  /* pending */
    int a2 = cancel_callback_add(&cb, dead, seen_cb, &s);   /* inline */
    bool r2 = cancel_callback_remove(&cb);                  /* ran */
    int a3 = cancel_callback_add(&cb2, NULL, seen_cb, &s);  /* NULL token */
    bool r3 = cancel_callback_remove(&cb2);
    long calls = mh_count_end();
    ck_assert_int_eq(calls, 0);
    ck_assert_int_eq(a1, 0);
    ck_assert(r1);
    ck_assert_int_eq(a2, 1);
    ck_assert(!r2);
    ck_assert_int_eq(a3, 0);
    ck_assert(r3);

    /* With allocation failing outright they still work. */
    mh_fail_after(1);
    a1 = cancel_callback_add(&cb, t, seen_cb, &s);
    r1 = cancel_callback_remove(&cb);
    mh_fail_after(0);
    ck_assert_int_eq(a1, 0);
    ck_assert(r1);
    cancel_token_unref(dead);
    cancel_token_unref(t);
}
END_TEST

/* ------------------------------------------------------------ races */

/* remove racing cancel: either removed (fn never runs) or fn has finished
 * by the time remove returns. */
struct race_cb {
    _Atomic int started, finished;
};

static void race_fn(void *arg, int reason)
{
    struct race_cb *r = arg;
    (void)reason;
    atomic_fetch_add(&r->started, 1);
    sched_yield();
    atomic_fetch_add(&r->finished, 1);
}

struct race_arg {
    cancel_token_t *t;
    pthread_barrier_t *go;
};

static void *race_cancel(void *arg)
{
    struct race_arg *a = arg;
    pthread_barrier_wait(a->go);
    cancel_token_cancel(a->t, 0);
    return NULL;
}

START_TEST(remove_racing_cancel_either_removes_or_returns_after_fn_finished)
{
    enum { N = 16 };
    for (int round = 0; round < 50; round++) {
        cancel_token_t *t = cancel_token_new();
        static struct race_cb rc[N];
        cancel_callback_t cb[N];
        for (int i = 0; i < N; i++) {
            atomic_init(&rc[i].started, 0);
            atomic_init(&rc[i].finished, 0);
            cancel_callback_add(&cb[i], t, race_fn, &rc[i]);
        }
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, 2);
        struct race_arg a = { t, &go };
        pthread_t th;
        tu_thread_start(&th, race_cancel, &a);
        pthread_barrier_wait(&go);
        bool removed[N];
        int finished_at_return[N];
        for (int i = N; i-- > 0;) {
            removed[i] = cancel_callback_remove(&cb[i]);
            finished_at_return[i] = atomic_load(&rc[i].finished);
        }
        tu_thread_join(th);
        pthread_barrier_destroy(&go);
        for (int i = 0; i < N; i++) {
            if (removed[i]) {
                ck_assert_int_eq(atomic_load(&rc[i].started), 0);
            } else {
                ck_assert_int_eq(finished_at_return[i], 1);
                ck_assert_int_eq(atomic_load(&rc[i].started), 1);
            }
        }
        ck_assert_uint_eq(atomic_load(&t->refs), 1);
        cancel_token_unref(t);
    }
}
END_TEST

/* add racing cancel: the callback runs exactly once either way, and when
 * add returns 1 it has run already. */
START_TEST(add_racing_cancel_runs_exactly_once)
{
    enum { N = 16 };
    for (int round = 0; round < 50; round++) {
        cancel_token_t *t = cancel_token_new();
        static struct race_cb rc[N];
        cancel_callback_t cb[N];
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, 2);
        struct race_arg a = { t, &go };
        pthread_t th;
        tu_thread_start(&th, race_cancel, &a);
        pthread_barrier_wait(&go);
        int added[N];
        int done_at_return[N];
        for (int i = 0; i < N; i++) {
            atomic_init(&rc[i].started, 0);
            atomic_init(&rc[i].finished, 0);
            added[i] = cancel_callback_add(&cb[i], t, race_fn, &rc[i]);
            done_at_return[i] = atomic_load(&rc[i].finished);
        }
        tu_thread_join(th);
        pthread_barrier_destroy(&go);
        for (int i = 0; i < N; i++) {
            ck_assert_int_eq(atomic_load(&rc[i].started), 1);
            ck_assert_int_eq(atomic_load(&rc[i].finished), 1);
            if (added[i] == 1)
                ck_assert_int_eq(done_at_return[i], 1);
            else
                ck_assert_int_eq(added[i], 0);
            ck_assert(!cancel_callback_remove(&cb[i]));
        }
        cancel_token_unref(t);
    }
}
END_TEST

/* Adding a callback that is still armed is the caller's error: debug
 * builds abort with a message that names it (it used to link the callback
 * twice, a cycle that wedged every thread at the next cancel). */
static void add_twice(void *arg)
{
    (void)arg;
    static struct seen seen_dummy;
    /* Static: still reachable when the process aborts, so that memcheck
     * does not report the token as leaked (and exit instead of dying). */
    static cancel_token_t *t;
    static cancel_callback_t cb;
    t = cancel_token_new();
    cancel_callback_add(&cb, t, seen_cb, &seen_dummy);
    cancel_callback_add(&cb, t, seen_cb, &seen_dummy);
}

START_TEST(adding_an_armed_callback_again_aborts_naming_the_mistake)
{
    char msg[512];
    int status = tu_run_captured(add_twice, NULL, msg, sizeof msg);
    ck_assert(WIFSIGNALED(status));
    ck_assert_int_eq(WTERMSIG(status), SIGABRT);
    ck_assert_msg(strstr(msg, "cancel_callback_add") && strstr(msg, "still armed"),
                  "message: %s", msg);
}
END_TEST

int main(void)
{
    cancel__token_cache_off = true; /* every token allocation is malloc's, as counted */
    Suite *s = suite_create("callback");

    TCase *tc = tcase_create("add");
    tcase_add_test(tc, add_on_live_token_arms_and_returns_zero);
    tcase_add_test(tc, add_on_cancelled_token_runs_inline_in_the_calling_thread_before_returning_one);
    tcase_add_test(tc, add_on_null_token_arms_nothing_and_remove_returns_true);
    tcase_add_test(tc, add_with_null_cb_or_fn_fails_with_einval_and_changes_nothing);
    tcase_add_test(tc, armed_callback_keeps_its_released_token_alive_and_runs_through_the_parent);
    tcase_add_test(tc, removing_the_last_callback_of_a_released_token_frees_it);
    tcase_add_test(tc, a_released_token_is_freed_after_its_last_callback_runs);
    tcase_add_test(tc, removing_a_pending_callback_that_carries_the_hold_frees_the_token);
    tcase_add_test(tc, add_and_remove_do_not_call_malloc);
    suite_add_tcase(s, tc);

    tc = tcase_create("running");
    tcase_set_timeout(tc, TU_TIMEOUT);
    tcase_add_test(tc, callback_runs_exactly_once_however_often_its_token_is_cancelled);
    tcase_add_test(tc, callbacks_on_every_descendant_run_with_the_ancestors_reason);
    tcase_add_test(tc, callback_runs_in_the_thread_that_cancels);
    suite_add_tcase(s, tc);

    tc = tcase_create("remove");
    tcase_set_timeout(tc, TU_TIMEOUT);
    tcase_add_test(tc, remove_before_run_returns_true_and_fn_never_runs);
    tcase_add_test(tc, remove_after_run_returns_false_and_twice_too);
    tcase_add_test(tc, callback_can_be_added_again_after_remove);
    tcase_add_test(tc, adding_an_armed_callback_again_aborts_naming_the_mistake);
    tcase_add_loop_test(tc, remove_of_a_callback_running_on_another_thread_waits_until_fn_returned, 0, 5);
    tcase_add_loop_test(tc, remove_of_a_callback_running_inline_in_add_on_another_thread_waits, 0, 5);
    tcase_add_test(tc, remove_from_inside_fn_returns_false_at_once);
    tcase_add_test(tc, fn_may_remove_another_pending_callback_of_the_same_cancel);
    suite_add_tcase(s, tc);

    tc = tcase_create("what fn may do");
    tcase_set_timeout(tc, TU_TIMEOUT);
    tcase_add_test(tc, fn_may_free_its_own_storage_also_when_run_inline);
    tcase_add_test(tc, fn_may_cancel_add_remove_and_release);
    tcase_add_test(tc, fn_may_release_the_last_reference_of_its_own_token);
    suite_add_tcase(s, tc);

    tc = tcase_create("races");
    tcase_set_timeout(tc, TU_TIMEOUT);
    tcase_add_loop_test(tc, remove_racing_cancel_either_removes_or_returns_after_fn_finished, 0, 10);
    tcase_add_loop_test(tc, add_racing_cancel_runs_exactly_once, 0, 10);
    suite_add_tcase(s, tc);

    return tu_run_suite(s);
}

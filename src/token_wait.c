/*
 * token_wait.c - cancel_token_wait: block until a token is cancelled.
 *
 * The waiter lives on the caller's stack: a mutex, a CLOCK_MONOTONIC
 * condition variable and a record of what fired first.  One callback on
 * the awaited token and one on the calling thread's current token set the
 * record and signal; the thread sleeps until then or until the deadline.
 * No polling.  cancel_callback_remove waits for a callback that is still
 * running, so the stack frame outlives every callback that could touch it.
 *
 * Locks: the waiter's mutex is taken by the callbacks (which run with no
 * token lock held) and by the waiting thread, which
 * never holds it while adding or removing callbacks.
 */
#include "internal.h"

enum { FIRED_NONE, FIRED_TOKEN, FIRED_CURRENT };

struct waiter {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    int fired;                  /* FIRED_*: the first to fire; under MUTEX */
};

static void fire(struct waiter *w, int which)
{
    pthread_mutex_lock(&w->mutex);
    if (w->fired == FIRED_NONE)
        w->fired = which;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mutex);
}

static void on_token(void *arg, int reason)
{
    (void)reason;
    fire(arg, FIRED_TOKEN);
}

static void on_current(void *arg, int reason)
{
    (void)reason;
    fire(arg, FIRED_CURRENT);
}

int cancel_token_wait(cancel_token_t *t, const struct timespec *deadline)
{
    if (deadline && !cancel__timespec_valid(deadline))
        return EINVAL;
    if (cancel_token_is_cancelled(t))
        return 0;
    int rc = cancel_check();
    if (rc != 0)
        return rc;
    cancel_token_t *cur = cancel_current();
    if (!t && !deadline && !cur)
        return EINVAL; /* nothing could ever wake us */
    if (deadline && cancel__ns_until(deadline) <= 0)
        return ETIMEDOUT;

    struct waiter w;
    w.fired = FIRED_NONE;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_mutex_init(&w.mutex, NULL);
    pthread_cond_init(&w.cond, &attr);
    pthread_condattr_destroy(&attr);

    cancel_callback_t on_t, on_cur;
    /* Adding runs the callback inline when the token is already cancelled;
     * the record then says so and we do not sleep. */
    cancel_callback_add(&on_t, t, on_token, &w);
    if (cur && cur != t)
        cancel_callback_add(&on_cur, cur, on_current, &w);

    struct cancel_blocked *blocked = cancel__thread_blocked();
    /* Relaxed: only this thread writes its record. */
    const char *prev_call = atomic_load_explicit(&blocked->call, memory_order_relaxed);
    if (!prev_call) {
        /* Relaxed: published by the release of CALL below. */
        atomic_store_explicit(&blocked->fd, -1, memory_order_relaxed);
        struct timespec now = cancel__now();
        atomic_store_explicit(&blocked->since_ns,
                              (int64_t)now.tv_sec * 1000000000 + now.tv_nsec,
                              memory_order_relaxed);
        /* (D1) pairs with (D2) in scope.c: a reader that sees CALL sees FD
         * and SINCE_NS. */
        atomic_store_explicit(&blocked->call, "cancel_token_wait", memory_order_release);
    }

    bool timed_out = false;
    pthread_mutex_lock(&w.mutex);
    while (w.fired == FIRED_NONE && !timed_out) {
        if (!deadline) {
            pthread_cond_wait(&w.cond, &w.mutex);
        } else if (pthread_cond_timedwait(&w.cond, &w.mutex, deadline) == ETIMEDOUT) {
            /* Never early: trust the clock, not the return code alone. */
            timed_out = cancel__ns_until(deadline) <= 0;
        }
    }
    pthread_mutex_unlock(&w.mutex);

    if (!prev_call) /* release, as in wake.c's cancel__blocked_end */
        atomic_store_explicit(&blocked->call, NULL, memory_order_release);

    cancel_callback_remove(&on_t);
    if (cur && cur != t)
        cancel_callback_remove(&on_cur);
    /* Both callbacks are gone: nobody touches W any more. */
    pthread_cond_destroy(&w.cond);
    pthread_mutex_destroy(&w.mutex);

    switch (w.fired) {
    case FIRED_TOKEN:
        return 0;
    case FIRED_CURRENT:
        return cancel_check();
    default:
        return ETIMEDOUT;
    }
}

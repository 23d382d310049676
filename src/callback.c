/*
 * callback.c - callbacks on tokens: add, remove.
 *
 * The storage is the caller's (no allocation).  Every state change happens
 * under cancel__lock, and fn never runs under it.  Whether fn is running
 * is not kept in the callback (fn may free it) but in the list of
 * operations under way (struct cancel_op, on the runners' stacks): remove
 * looks there, and waits while another thread runs fn.
 */
#include "internal.h"

static struct cancel_cb *as_cb(cancel_callback_t *cb)
{
    return (struct cancel_cb *)(void *)cb;
}

/* Already cancelled: run fn inline, registered as running so that a remove
 * from another thread waits for it.  Out of line, so that the armed path
 * needs no stack frame. */
__attribute__((noinline)) static int run_inline_locked(struct cancel_cb *cb, int reason)
{
    cb->state = CANCEL_CB_RUNNING;
    struct cancel_op op;
    cancel__op_begin_locked(&op, NULL);
    cancel__run_callback_locked(&op, cb, reason);
    cancel__op_end_locked(&op);
    cancel__unlock();
    return 1;
}

int cancel_callback_add(cancel_callback_t *callback, cancel_token_t *t, cancel_fn fn, void *arg)
{
    if (!callback || !fn) {
        errno = EINVAL;
        return -1;
    }
    struct cancel_cb *cb = as_cb(callback);
    if (!t) {
        cb->fn = fn;
        cb->arg = arg;
        cb->token = NULL;
        cb->state = CANCEL_CB_NULL;
        return 0;
    }

    cancel__lock();
    /* The fields are written under the lock, after the lock's CAS, which
     * then need not wait for them to leave the store buffer; the links and
     * the hold only when armed (the hold: token.c, at cancel). */
    cb->fn = fn;
    cb->arg = arg;
    cb->token = t;
    int reason = atomic_load_explicit(&t->reason, memory_order_relaxed);
    if (__builtin_expect(reason != 0, 0))
        return run_inline_locked(cb, reason);
    /* No reference is taken here (it would cost two atomic operations per
     * add+remove): if the token's last reference is released while
     * callbacks are armed, they inherit it (CANCEL_REFS_HOLD). */
    cb->next = t->callbacks;
    if (cb->next)
        cb->next->prev_link = &cb->next;
    cb->prev_link = &t->callbacks;
    t->callbacks = cb;
    cb->state = CANCEL_CB_ARMED;
    cancel__unlock();
    return 0;
}

/* The operation (other than on this thread) running CB's fn, if any. */
static struct cancel_op *runner_of(const struct cancel_cb *cb, bool *self)
{
    for (struct cancel_op *op = cancel__ops_locked(); op; op = op->next)
        if (op->running == cb) {
            *self = pthread_equal(op->thread, pthread_self());
            return op;
        }
    return NULL;
}

/* Remove of a callback that is not armed: added on NULL, running or run,
 * or never added.  Out of line, so that the armed path needs no stack
 * frame. */
__attribute__((noinline)) static bool remove_unarmed_locked(struct cancel_cb *cb)
{
    switch (cb->state) {
    case CANCEL_CB_NULL:
        cb->state = CANCEL_CB_IDLE;
        cancel__unlock();
        return true;
    case CANCEL_CB_RUNNING:
        for (;;) {
            bool self = false;
            if (!runner_of(cb, &self))
                break;
            if (self) {
                /* From inside fn: waiting would wait for ourselves. */
                cancel__unlock();
                return false;
            }
            cancel__wait_key_locked(cb);
        }
        cb->state = CANCEL_CB_IDLE;
        cancel__unlock();
        return false;
    default:
        cancel__unlock();
        return false;
    }
}

/* The last armed callback of a token everyone else released goes: so does
 * the token. */
__attribute__((noinline)) static bool release_and_report_removed(cancel_token_t *t)
{
    cancel_token_unref(t);
    return true;
}

bool cancel_callback_remove(cancel_callback_t *callback)
{
    if (!callback)
        return false;
    struct cancel_cb *cb = as_cb(callback);

    cancel__lock();
    if (__builtin_expect(cb->state != CANCEL_CB_ARMED, 0))
        return remove_unarmed_locked(cb);
    /* On its token's list or on a cancel's pending list: unlink from
     * whichever (prev_link points into it). */
    *cb->prev_link = cb->next;
    if (cb->next)
        cb->next->prev_link = cb->prev_link;
    cb->state = CANCEL_CB_IDLE;
    cancel_token_t *release = cb->token /* still armed there, not pending */
                                  ? cancel__drop_hold_locked(cb->token)
                                  : cb->hold;
    cancel__unlock();
    if (__builtin_expect(release != NULL, 0))
        return release_and_report_removed(release);
    return true;
}

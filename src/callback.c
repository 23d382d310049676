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

int cancel_callback_add(cancel_callback_t *callback, cancel_token_t *t, cancel_fn fn, void *arg)
{
    if (!callback || !fn) {
        errno = EINVAL;
        return -1;
    }
    struct cancel_cb *cb = as_cb(callback);
    /* The links and the hold are written only when armed (below) or moved
     * to a cancel's pending list (token.c): fewer stores on the hot path. */
    cb->fn = fn;
    cb->arg = arg;
    cb->token = t;
    if (!t) {
        cb->state = CANCEL_CB_NULL;
        return 0;
    }

    cancel__lock();
    int reason = atomic_load_explicit(&t->reason, memory_order_relaxed);
    if (reason == 0) {
        /* No reference is taken here (it would cost two atomic operations
         * per add+remove): if the token's last reference is released while
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
    /* Already cancelled: run inline, registered as running so that a
     * remove from another thread waits for it. */
    cb->state = CANCEL_CB_RUNNING;
    struct cancel_op op;
    cancel__op_begin_locked(&op, NULL);
    cancel__run_callback_locked(&op, cb, reason);
    cancel__op_end_locked(&op);
    cancel__unlock();
    return 1;
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

bool cancel_callback_remove(cancel_callback_t *callback)
{
    if (!callback)
        return false;
    struct cancel_cb *cb = as_cb(callback);

    cancel__lock();
    if (cb->state == CANCEL_CB_ARMED) {
        /* On its token's list or on a cancel's pending list: unlink from
         * whichever (prev_link points into it).  The last callback armed on
         * a token released by everyone else takes the token with it. */
        *cb->prev_link = cb->next;
        if (cb->next)
            cb->next->prev_link = cb->prev_link;
        cb->state = CANCEL_CB_IDLE;
        cancel_token_t *release = cb->token /* still armed there, not pending */
                                      ? cancel__drop_hold_locked(cb->token)
                                      : cb->hold;
        cancel__unlock();
        if (release)
            cancel_token_unref(release);
        return true;
    }
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

/*
 * run.c - running callbacks, and waiting for the ones other threads run.
 *
 * A callback's fn may free the callback's storage, and its token may be
 * freed once fn returned, so whether fn still runs is kept in a frame on
 * the runner's stack, linked in two places while fn runs:
 *
 *  - on the token's CALLBACKS list (guarded by the token's lock, and the
 *    token is alive: the runner holds a reference), where a cancel of an
 *    ancestor finds the runs it must wait for before it returns;
 *  - on the runner's thread record (guarded by the record's lock, and
 *    records are never freed), where cancel_callback_remove finds out
 *    whether the callback it removes is still running, without touching a
 *    token that may be gone.
 *
 * Waiting for another thread's run is rare (a remove racing the cancel, or
 * two cancels of overlapping subtrees), so every such wait sleeps on one
 * process-wide mutex and condition variable, the wait graph.  A runner
 * looks at GRAPH_WAITERS (a line that only waiters write) after each run
 * and broadcasts only when someone waits.  The pairing: a waiter counts
 * itself in, then takes the lock that guards the frame it looks for (the
 * token's or the record's) to see whether the frame is still there; the
 * runner unlinks its frame under that same lock, then reads the count.
 * One of the two critical sections comes first: either the waiter sees
 * the frame gone, or the runner sees the count (the lock orders the
 * waiter's increment before the runner's load) and broadcasts, which
 * takes the graph mutex the waiter holds until it sleeps.
 *
 * Cycles.  Callbacks may cancel other trees: a callback on thread A
 * cancels an ancestor of a token whose callback runs on B, while B's
 * callback cancels an ancestor of A's.  Each would wait for the other.
 * A thread about to wait for the runs of token T first asks, under the
 * graph mutex, whether a chain of waiting threads leads from T back to
 * itself (each thread in the chain has a frame on the token that the
 * previous one waits on).  Frames of a thread that waits do not change,
 * and a thread that starts waiting later asks the same question and sees
 * us, so exactly the last thread to close a cycle declines to wait.
 */
#include "internal.h"

static pthread_mutex_t graph_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t graph_cv = PTHREAD_COND_INITIALIZER;
static struct cancel_thread *graph_waiting;     /* waiters of foreign runs */
static unsigned graph_epoch;
/* Written by waiters only; read by every runner after a run. */
static _Atomic unsigned graph_waiters __attribute__((aligned(64)));

/* Relaxed: the frame's lock orders the count (see the pairing above); a
 * count left high a moment costs a runner a spurious broadcast only. */
static void graph_enter(void)
{
    pthread_mutex_lock(&graph_mu);
    atomic_fetch_add_explicit(&graph_waiters, 1, memory_order_relaxed);
}

static void graph_leave(void)
{
    atomic_fetch_sub_explicit(&graph_waiters, 1, memory_order_relaxed);
    pthread_mutex_unlock(&graph_mu);
}

static void graph_broadcast(void)
{
    pthread_mutex_lock(&graph_mu);
    pthread_cond_broadcast(&graph_cv);
    pthread_mutex_unlock(&graph_mu);
}

bool cancel__run_callback_locked(cancel_token_t *t, struct cancel_cb *cb)
{
    CANCEL_ASSERT_HELD(&t->word);
    struct cancel_thread *me = cancel__thread_self();
    struct cancel_frame f;
    f.node.state = CANCEL_CB_FRAME;
    f.running = cb;
    f.token = t;
    f.owner = me;
    /* On the record before the claim: a remove that sees RUNNING finds
     * the frame there until fn has returned. */
    cancel__lock(&me->lock);
    f.outer = me->frames;
    me->frames = &f;
    cancel__unlock(&me->lock);
    cb->runner = me;
    uint32_t armed = CANCEL_CB_ARMED;
    /* (K1) pairs with (K2) in callback.c's cancel_callback_remove: RUNNER
     * before the state, for the remove that reads RUNNING. */
    if (!atomic_compare_exchange_strong_explicit(&cb->state, &armed, CANCEL_CB_RUNNING,
                                                 memory_order_release, memory_order_relaxed)) {
        cancel__lock(&me->lock);
        me->frames = f.outer;
        cancel__unlock(&me->lock);
        return false; /* a remove won it; it unlinks it */
    }
    /* The frame takes the callback's place, first on the token's list:
     * callbacks still to run are found after the frames.  (A fresh
     * callback, run inline by add, points at itself.) */
    *cb->prev_link = cb->next;
    if (cb->next)
        cb->next->prev_link = cb->prev_link;
    f.node.next = t->callbacks;
    if (f.node.next)
        f.node.next->prev_link = &f.node.next;
    f.node.prev_link = &t->callbacks;
    t->callbacks = &f.node;
    cancel_fn fn = cb->fn;
    void *arg = cb->arg;
    int reason = cancel__reason_locked(t);
    cancel__token_unlock(t);

    /* From here on CB belongs to FN, which may free it: never touch it again. */
    fn(arg, reason);

    /* Off both lists in one critical section of T's lock, as it went on:
     * so a fork (which waits until no token lock is held) finds each frame
     * of a thread that is gone on both lists or on neither. */
    cancel__token_lock(t);
    *f.node.prev_link = f.node.next;
    if (f.node.next)
        f.node.next->prev_link = f.node.prev_link;
    cancel__lock(&me->lock);
    me->frames = f.outer;
    cancel__unlock(&me->lock);
    /* Relaxed, under T's lock, after both unlinks: see the pairing above
     * (the record's lock orders a remove's wait, T's a cancel's). */
    if (__builtin_expect(atomic_load_explicit(&graph_waiters, memory_order_relaxed) != 0, 0)) {
        cancel__token_unlock(t);
        graph_broadcast();
        cancel__token_lock(t);
    }
    return true;
}

/* Does OWNER run CB now?  Under OWNER's record lock. */
static bool runs(struct cancel_thread *owner, const struct cancel_cb *cb)
{
    cancel__lock(&owner->lock);
    bool found = false;
    for (struct cancel_frame *f = owner->frames; f && !found; f = f->outer)
        found = f->running == cb;
    cancel__unlock(&owner->lock);
    return found;
}

bool cancel__wait_callback(const struct cancel_cb *cb)
{
    struct cancel_thread *owner = cb->runner;
    if (!runs(owner, cb))
        return true;
    if (owner == cancel__me)
        return false; /* from inside fn: waiting would wait for ourselves */
    graph_enter();
    while (runs(owner, cb))
        pthread_cond_wait(&graph_cv, &graph_mu);
    graph_leave();
    return true;
}

static bool has_frame_on(const struct cancel_thread *th, const cancel_token_t *t)
{
    for (const struct cancel_frame *f = th->frames; f; f = f->outer)
        if (f->token == t)
            return true;
    return false;
}

/* A frame of another thread than ME on T's list (T locked). */
static bool foreign_run_locked(cancel_token_t *t, const struct cancel_thread *me)
{
    for (struct cancel_cb *n = t->callbacks; n; n = n->next) {
        /* Relaxed: T's lock publishes the frames, with their state. */
        if (atomic_load_explicit(&n->state, memory_order_relaxed) != CANCEL_CB_FRAME)
            break; /* frames come first */
        if (((struct cancel_frame *)n)->owner != me)
            return true;
    }
    return false;
}

/*
 * Would ME, waiting for the runs on T, close a cycle?  Breadth first over
 * the waiting threads (graph mutex held): a waiting thread is reached when
 * it has a frame on a token that a reached thread (ME first) waits on.
 * Reaching a thread that waits for a token on which ME has a frame closes
 * the cycle.  No allocation: the marks live in the records.
 */
static bool closes_cycle(const cancel_token_t *t, struct cancel_thread *me)
{
    if (!graph_waiting)
        return false;
    unsigned epoch = ++graph_epoch;
    /* Level by level: REACHED waits on tokens whose runners we look for. */
    for (struct cancel_thread *w = graph_waiting; w; w = w->next_waiting)
        w->mark = 0;
    bool grew = true;
    const cancel_token_t *frontier_seed = t;
    while (grew) {
        grew = false;
        for (struct cancel_thread *w = graph_waiting; w; w = w->next_waiting) {
            if (w == me || w->mark == epoch)
                continue;
            /* W is reached when it runs on the seed or on a token that a
             * reached thread waits on. */
            bool reached = has_frame_on(w, frontier_seed);
            for (struct cancel_thread *r = graph_waiting; r && !reached; r = r->next_waiting)
                reached = r->mark == epoch && has_frame_on(w, r->waiting_on);
            if (!reached)
                continue;
            w->mark = epoch;
            grew = true;
            if (has_frame_on(me, w->waiting_on))
                return true;
        }
    }
    return false;
}

void cancel__wait_foreign_runs_locked(cancel_token_t *t)
{
    CANCEL_ASSERT_HELD(&t->word);
    struct cancel_thread *me = cancel__thread_self();
    if (!foreign_run_locked(t, me))
        return;
    cancel__token_unlock(t);
    graph_enter();
    me->waiting_on = t;
    me->next_waiting = graph_waiting;
    graph_waiting = me;
    cancel__token_lock(t);
    while (foreign_run_locked(t, me) && !closes_cycle(t, me)) {
        cancel__token_unlock(t);
        pthread_cond_wait(&graph_cv, &graph_mu);
        cancel__token_lock(t);
    }
    struct cancel_thread **link = &graph_waiting;
    while (*link != me)
        link = &(*link)->next_waiting;
    *link = me->next_waiting;
    me->waiting_on = NULL;
    /* A thread that declined to wait for us may be waited for by others. */
    pthread_cond_broadcast(&graph_cv);
    graph_leave();
}

/* fork.c's handlers, in the lock order: the graph mutex sits above the
 * token locks, so it is taken before the fork gate closes.  The child has
 * one thread: nobody waits, nobody runs a callback. */
void cancel__run_atfork_prepare(void)
{
    pthread_mutex_lock(&graph_mu);
}

void cancel__run_atfork_parent(void)
{
    pthread_mutex_unlock(&graph_mu);
}

void cancel__run_atfork_child(void)
{
    graph_waiting = NULL;
    atomic_store_explicit(&graph_waiters, 0, memory_order_relaxed); /* one thread */
    pthread_cond_init(&graph_cv, NULL);
    pthread_mutex_unlock(&graph_mu); /* ours since prepare */
}

void cancel__op_push(struct cancel_cancel_op *op, const cancel_token_t *root)
{
    struct cancel_thread *me = cancel__thread_self();
    op->root = root;
    op->outer = me->ops;
    me->ops = op;
}

void cancel__op_pop(struct cancel_cancel_op *op)
{
    cancel__me->ops = op->outer;
}

bool cancel__cancelling_here(const cancel_token_t *t)
{
    struct cancel_thread *me = cancel__me;
    if (!me || !t)
        return false;
    for (const struct cancel_cancel_op *op = me->ops; op; op = op->outer)
        for (const cancel_token_t *n = t; n; n = n->parent)
            if (n == op->root)
                return true;
    return false;
}

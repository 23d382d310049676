/*
 * scope.c - scopes (nurseries) and their tasks.
 *
 * A scope owns a token, a child of its parent, and every task owns a
 * token, a child of the scope's.  Cancelling the scope's token therefore
 * flags every task token in one walk of the token tree and runs, in the
 * cancelling thread, the wake callback of every task blocked in a wrapped
 * call: all tasks are signalled before anyone waits for one, and teardown
 * costs the slowest task, not the sum.
 *
 * Each task runs on a worker thread from worker.c, with its task token as
 * the thread's current token.  The scope's mutex MU guards everything in
 * the scope and its tasks that changes after spawn (states, results,
 * counts, the first failure, the terminate value, the list of task
 * records, next's queue).  COND is broadcast, when someone waits on it, on
 * every change a spawn waiting for a slot, a start, a next or a
 * cancel_task_join may wait for; IDLE_COND wakes joiners once, when the
 * last task finishes and no spawn is under way.
 *
 * Memory follows the live work: the scope lists only task records that
 * are running or still held by a handle (or by a start waiting for its
 * task).  A handle-less task unlinks itself when it finishes and frees its
 * record and its token outside MU; its token is a child of the scope's, so
 * the scope's token outlives it however late that free runs.
 *
 * Join accounts for spawns under way: SPAWNING counts the spawns (and
 * starts) that passed the "join has not begun" check and have not yet
 * either committed their task (LIVE) or given up; join frees the scope
 * only when both are zero.  A spawn never touches the scope after it has
 * decremented SPAWNING.
 *
 * "Is the caller nested inside scope S / task T" (the EDEADLK checks) is
 * answered by CHAIN nodes: small reference-counted records, one per scope
 * and one per task that opened a scope, each pointing up to its enclosing
 * one.  They outlive the scopes and task records they stand for as long as
 * something nested still refers to them, so the walk never touches freed
 * memory (a task record may be long gone while a scope it opened lives on).
 *
 * Lock order (outermost first; see "locks" in internal.h): the scope's
 * DRAIN_MU (only drain takes it, around the cancels and the set_deadline
 * it makes), then MU, then token locks (cancel_token_child and
 * cancel_callback_add on a live token may be called with MU held: they
 * run no callback), then the leaf locks (the worker cache's, taken by
 * cancel__worker_start outside MU, and the timer's).  The callbacks armed
 * here (wake_waiters, hard_cancel) take MU, and the token layer runs
 * callbacks with no token lock held; so MU is never held while cancelling
 * a token, removing a callback, setting a deadline or releasing a token
 * (each may run, or wait for, such a callback).
 */
#include "internal.h"

#include <fcntl.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum task_state { TASK_STARTING, TASK_RUNNING, TASK_DONE };

enum { NAME_MAX_LEN = 31 };

/* See "CHAIN nodes" above.  REFS: the scope or task it stands for, plus
 * one per node whose UP it is. */
struct chain {
    _Atomic unsigned refs;
    struct chain *up;
};

/* What cancel_scope_start waits for, on its caller's stack (MU). */
enum { START_WAITING, START_STARTED, START_RETURNED };
struct start_wait {
    int state;
    int result;
    void *value;
};

struct cancel_task {
    cancel_scope_t *scope;
    cancel_task_fn fn;
    void *arg;
    cancel_token_t *token;      /* the task's token; released with the record */
    _Atomic(struct chain *) node; /* made by the task's first scope open */
    /* Written and read by the worker thread only. */
    bool returned;              /* FN returned (its thread did not end inside) */
    /* Guarded by the scope's MU. */
    struct cancel_task *prev, *next; /* the scope's records */
    struct cancel_task *done_next;   /* next's queue */
    enum task_state state;
    int result;
    bool handle;                /* a handle is out (not released) */
    bool for_next;              /* next has still to hand it out */
    bool queued;                /* finished, on next's queue */
    bool start_hold;            /* cancel_scope_start still looks at it */
    struct start_wait *start;   /* the start waiting for started(), or NULL */
    cancel_scope_t *waiting_slot; /* in spawn, waiting for a slot of that scope */
    struct cancel_blocked *blocked; /* the worker thread's record while running */
    pthread_t thread;
    int64_t started_ns;
    char name[NAME_MAX_LEN + 1];
};

struct cancel_scope {
    pthread_mutex_t mu;
    pthread_mutex_t drain_mu;   /* serialises drains (see the lock order) */
    pthread_cond_t cond;        /* a task finished, a slot freed, a cancel, started */
    pthread_cond_t idle_cond;   /* LIVE and SPAWNING reached 0 */
    cancel_token_t *token;
    cancel_token_t *parent;     /* a reference, or NULL */
    struct chain *node;
    int flags;
    size_t stack_size;          /* 0: the process-wide default */
    /* Guarded by MU. */
    unsigned limit;             /* 0: none */
    _Atomic unsigned live;      /* spawned, not finished (changed under MU) */
    unsigned spawning;          /* spawns and starts under way */
    unsigned waiters;           /* threads waiting on COND */
    unsigned joiners;           /* threads waiting on IDLE_COND */
    bool joining;
    bool terminated;            /* by terminate or a RACE winner */
    bool succeeded;             /* RACE: some task returned 0 */
    _Atomic bool draining;      /* set once under MU; read anywhere: relaxed
                                 * under MU (marked MU), else (N2) */
    cancel_token_t *drain;      /* the drain token, made on demand */
    cancel_token_t *grace;      /* drain's hard-cancel timer, or NULL */
    cancel_callback_t grace_cb;
    bool grace_set;
    struct timespec grace_at;
    void *value;
    int failure;                /* first real failure, or 0 */
    unsigned for_next;          /* tasks next has still to hand out */
    struct cancel_task *tasks;  /* records running or held, newest first */
    struct cancel_task *done_head, **done_tail; /* next's queue */
    struct cancel__scope_reg reg; /* dump.c's registry of open scopes (issue 16) */
};

/* Task records allocated now, in every scope (tests watch it). */
_Atomic long cancel__scope_task_records;

/* The task running on this thread, or NULL. */
static __thread struct cancel_task *current_task;

static struct chain *chain_new(struct chain *up)
{
    struct chain *c = malloc(sizeof *c);
    if (!c)
        return NULL;
    atomic_init(&c->refs, 1);
    c->up = up;
    if (up) /* relaxed: our caller holds a reference on UP */
        atomic_fetch_add_explicit(&up->refs, 1, memory_order_relaxed);
    return c;
}

static void chain_unref(struct chain *c)
{
    /* (P3) acq_rel, pairing with itself in the other holders: whoever
     * frees a node sees every write made before the other references were
     * dropped.  A loop: deep nesting, flat stack. */
    while (c && atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1) {
        struct chain *up = c->up;
        free(c);
        c = up;
    }
}

/* The chain the calling thread stands in: its task's scope's node. */
static const struct chain *my_chain(void)
{
    return current_task ? current_task->scope->node : NULL;
}

/* Is the calling thread a task of S, or a task nested under one? */
static bool inside(const cancel_scope_t *s)
{
    for (const struct chain *c = my_chain(); c; c = c->up)
        if (c == s->node)
            return true;
    return false;
}

/* Is the calling thread TASK itself, or a task nested under it? */
static bool inside_task(const struct cancel_task *task)
{
    if (current_task == task)
        return true;
    /* (P2) pairs with (P1) in task_node (cancel_scope_open_in): the node
     * is initialised.  A node made after we read NULL cannot be in our
     * chain. */
    const struct chain *n = atomic_load_explicit(&task->node, memory_order_acquire);
    if (!n)
        return false;
    for (const struct chain *c = my_chain(); c; c = c->up)
        if (c == n)
            return true;
    return false;
}

static int64_t now_ns(void)
{
    struct timespec ts = cancel__now();
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The calling task's chain node, made on first use; NULL: out of memory. */
static struct chain *task_node(struct cancel_task *t)
{
    /* Relaxed: only T's own thread stores NODE. */
    struct chain *n = atomic_load_explicit(&t->node, memory_order_relaxed);
    if (!n) {
        n = chain_new(t->scope->node);
        /* (P1) pairs with (P2) in inside_task and cancel__scope_visit. */
        if (n)
            atomic_store_explicit(&t->node, n, memory_order_release);
    }
    return n;
}

cancel_scope_t *cancel_scope_open_in(cancel_token_t *parent, int flags)
{
    if ((flags & ~(CANCEL_SCOPE_SUPERVISE | CANCEL_SCOPE_RACE)) != 0 ||
        flags == (CANCEL_SCOPE_SUPERVISE | CANCEL_SCOPE_RACE)) {
        errno = EINVAL;
        return NULL;
    }
    cancel_scope_t *s = calloc(1, sizeof *s);
    if (!s) {
        errno = ENOMEM;
        return NULL;
    }
    struct chain *up = NULL;
    if (current_task && !(up = task_node(current_task))) {
        free(s);
        errno = ENOMEM;
        return NULL;
    }
    s->node = chain_new(up);
    if (!s->node) {
        free(s);
        errno = ENOMEM;
        return NULL;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&s->cond, &ca);
    if (rc == 0) {
        rc = pthread_cond_init(&s->idle_cond, &ca);
        if (rc)
            pthread_cond_destroy(&s->cond);
    }
    pthread_condattr_destroy(&ca);
    if (rc) {
        chain_unref(s->node);
        free(s);
        errno = ENOMEM;
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->drain_mu, NULL);
    /* A child of a cancelled parent is born cancelled: such a scope starts
     * nothing and joins with the parent's reason. */
    s->token = cancel_token_child(parent);
    if (!s->token) {
        pthread_cond_destroy(&s->cond);
        pthread_cond_destroy(&s->idle_cond);
        pthread_mutex_destroy(&s->mu);
        pthread_mutex_destroy(&s->drain_mu);
        chain_unref(s->node);
        free(s);
        errno = ENOMEM;
        return NULL;
    }
    s->parent = cancel_token_ref(parent);
    s->flags = flags;
    s->done_tail = &s->done_head;
    atomic_init(&s->draining, false);
    cancel__scope_register(&s->reg, s); /* issue 16: cancel_dump_all sees it */
    return s;
}

cancel_scope_t *cancel_scope_open(int flags)
{
    return cancel_scope_open_in(cancel_current(), flags);
}

cancel_token_t *cancel_scope_token(cancel_scope_t *s)
{
    if (!s) {
        errno = EINVAL;
        return NULL;
    }
    return s->token;
}

int cancel_scope_set_limit(cancel_scope_t *s, unsigned max_running)
{
    if (!s)
        return EINVAL;
    pthread_mutex_lock(&s->mu);
    s->limit = max_running;
    /* A raised limit frees slots for spawns already waiting. */
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

int cancel_scope_set_stack_size(cancel_scope_t *s, size_t bytes)
{
    if (!s)
        return EINVAL;
    size_t rounded;
    int rc = cancel__stack_size_check(bytes, &rounded);
    if (rc)
        return rc;
    pthread_mutex_lock(&s->mu);
    s->stack_size = rounded;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

void cancel_scope_cancel(cancel_scope_t *s)
{
    if (s)
        cancel_token_cancel(s->token, ECANCELED);
}

int cancel_scope_terminate(cancel_scope_t *s, void *value)
{
    if (!s)
        return EINVAL;
    pthread_mutex_lock(&s->mu);
    if (s->terminated) {
        pthread_mutex_unlock(&s->mu);
        return EALREADY;
    }
    s->terminated = true;
    s->value = value;
    pthread_mutex_unlock(&s->mu);
    cancel_token_cancel(s->token, ECANCELED);
    return 0;
}

/* Wakes whoever waits on COND (MU held). */
static void wake_locked(cancel_scope_t *s)
{
    CANCEL_ASSERT_MUTEX_HELD(&s->mu);
    if (s->waiters > 0)
        pthread_cond_broadcast(&s->cond);
}

/* Wakes joiners when nothing is live or under way any more (MU held). */
static void maybe_idle_locked(cancel_scope_t *s)
{
    CANCEL_ASSERT_MUTEX_HELD(&s->mu);
    if (s->live == 0 && s->spawning == 0 && s->joiners > 0)
        pthread_cond_broadcast(&s->idle_cond);
}

static void task_unlink_locked(cancel_scope_t *s, struct cancel_task *task)
{
    CANCEL_ASSERT_MUTEX_HELD(&s->mu);
    if (task->prev)
        task->prev->next = task->next;
    else
        s->tasks = task->next;
    if (task->next)
        task->next->prev = task->prev;
    task->prev = task->next = NULL;
}

static void queue_remove_locked(cancel_scope_t *s, struct cancel_task *task)
{
    CANCEL_ASSERT_MUTEX_HELD(&s->mu);
    struct cancel_task **link = &s->done_head;
    while (*link != task)
        link = &(*link)->done_next;
    *link = task->done_next;
    if (s->done_tail == &task->done_next)
        s->done_tail = link;
    task->done_next = NULL;
    task->queued = false;
}

static void task_free(struct cancel_task *task)
{
    cancel_token_unref(task->token);
    /* Relaxed: the record is ours alone; MU ordered its worker's store. */
    chain_unref(atomic_load_explicit(&task->node, memory_order_relaxed));
    free(task);
    /* (U1) pairs with the acquire in tests/check_scope.c, a test that
     * reads the count and then looks at the scope's token (the token was
     * released before). */
    atomic_fetch_sub_explicit(&cancel__scope_task_records, 1, memory_order_release);
}

/* Nobody holds a finished TASK any more: unlink it (MU held); the caller
 * frees it once MU is dropped.  True when it must. */
static bool task_unheld_locked(cancel_scope_t *s, struct cancel_task *task)
{
    CANCEL_ASSERT_MUTEX_HELD(&s->mu);
    if (task->state != TASK_DONE || task->handle || task->start_hold)
        return false;
    task_unlink_locked(s, task);
    return true;
}

/*
 * Counts a task's result RC (fail-fast, race, supervise) and cancels the
 * scope when it must.  Runs on the worker thread while the task still
 * counts as live: until it stops counting, join cannot free the scope's
 * token under us.
 */
static void task_account(struct cancel_task *task, int rc)
{
    cancel_scope_t *s = task->scope;
    /* Errors caused by cancellation (the task's, or a drain's) never count
     * as failures.  (N2) pairs with (N1) in cancel_scope_drain, though the
     * drain's ECANCELED reached us through its token's reason, stored after
     * DRAINING, and that (R1)/(R2) pair already orders the flag. */
    bool excused = (rc == ECANCELED || rc == ETIMEDOUT) &&
                   (cancel_token_is_cancelled(task->token) ||
                    atomic_load_explicit(&s->draining, memory_order_acquire));
    bool race = (s->flags & CANCEL_SCOPE_RACE) != 0;
    bool counts = race ? (rc == 0 || !excused)
                       : (rc != 0 && !excused && !(s->flags & CANCEL_SCOPE_SUPERVISE));
    if (!counts)
        return;
    bool cancel_scope_now = false;
    pthread_mutex_lock(&s->mu);
    if (race && rc == 0) {
        s->succeeded = true;
        if (!s->terminated) {
            s->terminated = true;
            s->value = task->arg;
            cancel_scope_now = true;
        }
    } else if (s->failure == 0) {
        s->failure = rc;
        cancel_scope_now = !race;
    }
    pthread_mutex_unlock(&s->mu);
    if (cancel_scope_now)
        cancel_token_cancel(s->token, ECANCELED);
}

/* Runs on the worker thread: the task itself. */
static void task_run(void *p)
{
    struct cancel_task *task = p;
    cancel_scope_t *s = task->scope;

    pthread_mutex_lock(&s->mu);
    task->state = TASK_RUNNING;
    task->blocked = cancel__thread_blocked();
    task->thread = pthread_self();
    task->started_ns = now_ns();
    pthread_mutex_unlock(&s->mu);

    struct cancel_task *prev_task = current_task;
    current_task = task;
    cancel_token_t *prev = cancel_enter(task->token);
    int rc = task->fn(task->arg);
    cancel_leave(prev);
    current_task = prev_task;
    task->returned = true;
    /* Read by others only after they saw TASK_DONE, set under MU later. */
    task->result = rc;
    task_account(task, rc);
}

/*
 * Runs on the worker thread once it is idle again: the task is over.  Also
 * runs when the thread ends inside the task's function (pthread_exit,
 * pthread_cancel; worker.c calls it from a cleanup handler): the task then
 * finishes with EOWNERDEAD, a real failure, and the thread is not reused.
 */
static void task_done(void *p)
{
    struct cancel_task *task = p;
    cancel_scope_t *s = task->scope;
    if (!task->returned) {
        current_task = NULL;
        task->result = EOWNERDEAD;
        task_account(task, EOWNERDEAD);
    }
    pthread_mutex_lock(&s->mu);
    task->state = TASK_DONE;
    task->blocked = NULL;
    task->waiting_slot = NULL;
    if (task->start) {
        /* Returned before cancel_task_started: start reports the result. */
        task->start->state = START_RETURNED;
        task->start->result = task->result;
        task->start = NULL;
    }
    if (task->for_next) {
        task->queued = true;
        *s->done_tail = task;
        s->done_tail = &task->done_next;
    }
    if (task_unheld_locked(s, task)) {
        /* A handle-less record is ours alone: free it (and release its
         * token) while it still counts as live, so that a join that
         * returns leaves no record and no token of S behind. */
        pthread_mutex_unlock(&s->mu);
        task_free(task);
        pthread_mutex_lock(&s->mu);
    }
    s->live--;
    wake_locked(s);
    maybe_idle_locked(s);
    /* After this unlock the scope may be freed at once. */
    pthread_mutex_unlock(&s->mu);
}

static void wake_waiters(void *arg, int reason)
{
    cancel_scope_t *s = arg;
    (void)reason;
    pthread_mutex_lock(&s->mu);
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

/* Arms (MU not held) the two callbacks that wake a waiter on COND when the
 * scope's token or the caller's current token MINE is cancelled. */
static void arm_wakers(cancel_scope_t *s, cancel_token_t *mine, cancel_callback_t cbs[2])
{
    cancel_callback_add(&cbs[0], s->token, wake_waiters, s);
    cancel_callback_add(&cbs[1], mine, wake_waiters, s);
}

static void disarm_wakers(cancel_callback_t cbs[2])
{
    cancel_callback_remove(&cbs[0]);
    cancel_callback_remove(&cbs[1]);
}

/* Spins (MU not held) up to about 20 us while S has LIMIT or more live
 * tasks.  Only on machines with more than one CPU. */
static void spin_until_below(cancel_scope_t *s, unsigned limit)
{
    if (cancel__ncpu() < 2)
        return;
    int64_t start = now_ns();
    /* Relaxed: a hint; the caller checks again under MU. */
    for (unsigned i = 1; atomic_load_explicit(&s->live, memory_order_relaxed) >= limit; i++) {
        if ((i & 63) == 0 && now_ns() - start > 20 * 1000)
            return;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
}

/*
 * Waits (MU held) until S has a free slot.  The wait watches the scope's
 * token and the caller's current token through callbacks that broadcast
 * COND, so it ends on cancel without polling.  Returns 0, ECANCELED,
 * ESHUTDOWN (a drain began) or, with NOWAIT, EBUSY; *ARMED tells the
 * caller to remove the callbacks once MU is dropped.
 */
static int wait_for_slot_locked(cancel_scope_t *s, bool nowait, cancel_callback_t cbs[2],
                                bool *armed)
{
    CANCEL_ASSERT_MUTEX_HELD(&s->mu);
    cancel_token_t *mine = cancel_current();
    bool spun = false;
    while (s->limit != 0 && s->live >= s->limit) {
        if (nowait)
            return EBUSY;
        if (atomic_load_explicit(&s->draining, memory_order_relaxed)) /* MU */
            return ESHUTDOWN;
        if (cancel_token_is_cancelled(s->token) || cancel_token_is_cancelled(mine))
            return ECANCELED;
        if (!spun) {
            /* Short tasks free a slot within microseconds: spin briefly
             * before arming callbacks and sleeping (a loop of spawns into
             * a full scope then costs no futex wake). */
            spun = true;
            unsigned limit = s->limit;
            pthread_mutex_unlock(&s->mu);
            spin_until_below(s, limit);
            pthread_mutex_lock(&s->mu);
            continue;
        }
        if (!*armed) {
            /* Armed without MU: a callback that fires inline takes MU. */
            pthread_mutex_unlock(&s->mu);
            arm_wakers(s, mine, cbs);
            *armed = true;
            pthread_mutex_lock(&s->mu);
            continue; /* recheck: anything may have changed meanwhile */
        }
        /* For the dump, which reads it under our own scope's MU only. */
        struct cancel_task *self = current_task && current_task->scope == s ? current_task : NULL;
        if (self)
            self->waiting_slot = s;
        s->waiters++;
        pthread_cond_wait(&s->cond, &s->mu);
        s->waiters--;
        if (self)
            self->waiting_slot = NULL;
    }
    if (atomic_load_explicit(&s->draining, memory_order_relaxed)) /* MU */
        return ESHUTDOWN;
    /* A cancel that freed the slots (its tasks ended) still wins. */
    if (cancel_token_is_cancelled(s->token) || (*armed && cancel_token_is_cancelled(mine)))
        return ECANCELED;
    return 0;
}

enum spawn_mode { SPAWN_WAIT, SPAWN_TRY };

/*
 * The one spawn behind spawn, try_spawn and start.  HANDLE: the caller
 * keeps a handle.  SW: start's wait record (the task holds it until
 * started or its end).  KEEP_SPAWNING: leave SPAWNING counted on success
 * (start drops it when it returns).  *OUT gets the task on success.
 */
static int spawn_task(cancel_scope_t *s, const char *name, cancel_task_fn fn, void *arg,
                      enum spawn_mode mode, bool handle, struct start_wait *sw,
                      struct cancel_task **out)
{
    if (!s || !fn)
        return EINVAL;
    /* (N2), an early answer without MU; checked again under MU below. */
    if (atomic_load_explicit(&s->draining, memory_order_acquire))
        return ESHUTDOWN;
    if (cancel_token_is_cancelled(s->token))
        return ECANCELED;

    struct cancel_task *task = calloc(1, sizeof *task);
    if (!task)
        return ENOMEM;
    task->scope = s;
    task->fn = fn;
    task->arg = arg;
    task->state = TASK_STARTING;
    if (name)
        snprintf(task->name, sizeof task->name, "%s", name);
    task->token = cancel_token_child(s->token);
    if (!task->token) {
        free(task);
        return ENOMEM;
    }
    /* Relaxed: a count for tests; the decrement (U1) orders the free. */
    atomic_fetch_add_explicit(&cancel__scope_task_records, 1, memory_order_relaxed);

    cancel_callback_t cbs[2];
    bool armed = false;
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    if (s->joining && !inside(s))
        rc = EINVAL; /* only the scope's own tasks may spawn once join began */
    else if (atomic_load_explicit(&s->draining, memory_order_relaxed)) /* MU */
        rc = ESHUTDOWN;
    else if (cancel_token_is_cancelled(s->token))
        rc = ECANCELED;
    if (rc) {
        pthread_mutex_unlock(&s->mu);
        task_free(task);
        return rc;
    }
    /* From here join waits for us (see SPAWNING above). */
    s->spawning++;
    for (;;) {
        rc = wait_for_slot_locked(s, mode == SPAWN_TRY, cbs, &armed);
        if (!armed)
            break;
        /* The callbacks point at S: gone before we may stop counting.  MU
         * is dropped meanwhile, so the slot is checked again after. */
        pthread_mutex_unlock(&s->mu);
        disarm_wakers(cbs);
        armed = false;
        pthread_mutex_lock(&s->mu);
        if (rc)
            break;
        if (s->limit == 0 || s->live < s->limit) {
            rc = atomic_load_explicit(&s->draining, memory_order_relaxed) /* MU */ ? ESHUTDOWN
               : cancel_token_is_cancelled(s->token) ? ECANCELED : 0;
            break;
        }
    }
    if (rc == 0) {
        s->live++;
        task->next = s->tasks;
        if (s->tasks)
            s->tasks->prev = task;
        s->tasks = task;
        task->handle = handle;
        task->for_next = handle;
        if (handle)
            s->for_next++;
        if (sw) {
            task->start = sw;
            task->start_hold = true;
        }
    }
    if (rc) {
        /* The unused record (and its token, a child of S's) goes before
         * we stop counting: a join that returns leaves nothing behind. */
        pthread_mutex_unlock(&s->mu);
        task_free(task);
        pthread_mutex_lock(&s->mu);
        s->spawning--;
        maybe_idle_locked(s);
        pthread_mutex_unlock(&s->mu);
        return rc;
    }
    if (!sw)
        s->spawning--;
    size_t stack = s->stack_size;
    pthread_mutex_unlock(&s->mu);

    /* From here the task counts as live, so join waits for it.  A started
     * job runs FN exactly once, whatever happens to the scope meanwhile. */
    if (cancel__worker_start(task_run, task_done, task, stack) != 0) {
        pthread_mutex_lock(&s->mu);
        task_unlink_locked(s, task);
        if (handle)
            s->for_next--;
        pthread_mutex_unlock(&s->mu);
        task_free(task); /* before it stops counting, as above */
        pthread_mutex_lock(&s->mu);
        s->live--;
        if (sw)
            s->spawning--;
        wake_locked(s);
        maybe_idle_locked(s);
        pthread_mutex_unlock(&s->mu);
        return EAGAIN;
    }
    *out = task;
    return 0;
}

int cancel_scope_spawn_named(cancel_scope_t *s, const char *name, cancel_task_fn fn,
                             void *arg, cancel_task_t **out)
{
    struct cancel_task *task;
    int rc = spawn_task(s, name, fn, arg, SPAWN_WAIT, out != NULL, NULL, &task);
    if (rc == 0 && out)
        *out = task;
    return rc;
}

int cancel_scope_spawn(cancel_scope_t *s, cancel_task_fn fn, void *arg, cancel_task_t **task)
{
    return cancel_scope_spawn_named(s, NULL, fn, arg, task);
}

int cancel_scope_try_spawn(cancel_scope_t *s, cancel_task_fn fn, void *arg,
                           cancel_task_t **out)
{
    struct cancel_task *task;
    int rc = spawn_task(s, NULL, fn, arg, SPAWN_TRY, out != NULL, NULL, &task);
    if (rc == 0 && out)
        *out = task;
    return rc;
}

/* Gives up a handle (MU held); true when the caller must free TASK. */
static bool release_locked(cancel_scope_t *s, struct cancel_task *task)
{
    CANCEL_ASSERT_MUTEX_HELD(&s->mu);
    if (task->for_next) {
        task->for_next = false;
        s->for_next--;
        wake_locked(s); /* a next may have nothing left to wait for */
    }
    if (task->queued)
        queue_remove_locked(s, task);
    task->handle = false;
    return task_unheld_locked(s, task);
}

int cancel_scope_start(cancel_scope_t *s, cancel_task_fn fn, void *arg, void **ready_value,
                       cancel_task_t **out)
{
    struct start_wait sw = { START_WAITING, 0, NULL };
    struct cancel_task *task;
    int rc = spawn_task(s, NULL, fn, arg, SPAWN_WAIT, out != NULL, &sw, &task);
    if (rc)
        return rc;
    /* SPAWNING still counts us: join cannot free S before we return. */
    cancel_token_t *mine = cancel_current();
    cancel_callback_t cbs[2];
    arm_wakers(s, mine, cbs);
    pthread_mutex_lock(&s->mu);
    bool cancelled = false;
    while (sw.state == START_WAITING) {
        if (cancel_token_is_cancelled(s->token) || cancel_token_is_cancelled(mine)) {
            cancelled = true;
            break;
        }
        s->waiters++;
        pthread_cond_wait(&s->cond, &s->mu);
        s->waiters--;
    }
    pthread_mutex_unlock(&s->mu);
    disarm_wakers(cbs);
    int reason = 0;
    if (cancelled) {
        /* Cancel the task and wait for its end; a started() it still makes
         * no longer counts.  The record lives on: START_HOLD. */
        reason = cancel_token_reason(mine);
        if (!reason)
            reason = cancel_token_reason(s->token);
        cancel_token_cancel(task->token, ECANCELED);
    }
    pthread_mutex_lock(&s->mu);
    while (cancelled && task->state != TASK_DONE) {
        s->waiters++;
        pthread_cond_wait(&s->cond, &s->mu);
        s->waiters--;
    }
    task->start = NULL;
    task->start_hold = false;
    if (cancelled && sw.state == START_RETURNED && sw.result != 0 && sw.result != ECANCELED &&
        sw.result != ETIMEDOUT)
        rc = sw.result; /* its own failure cancelled the scope (fail-fast) */
    else if (cancelled)
        rc = reason == ETIMEDOUT ? ETIMEDOUT : ECANCELED;
    else if (sw.state == START_RETURNED)
        rc = sw.result ? sw.result : ECHILD;
    bool free_it;
    if (rc && out)
        free_it = release_locked(s, task); /* a failed start hands out nothing */
    else
        free_it = task_unheld_locked(s, task);
    if (free_it) {
        /* Freed while SPAWNING still counts us (see task_done). */
        pthread_mutex_unlock(&s->mu);
        task_free(task);
        pthread_mutex_lock(&s->mu);
    }
    s->spawning--;
    maybe_idle_locked(s);
    pthread_mutex_unlock(&s->mu);
    if (rc == 0) {
        if (ready_value)
            *ready_value = sw.value;
        if (out)
            *out = task;
    }
    return rc;
}

void cancel_task_started(void *ready_value)
{
    struct cancel_task *task = current_task;
    if (!task)
        return;
    cancel_scope_t *s = task->scope;
    pthread_mutex_lock(&s->mu);
    struct start_wait *sw = task->start;
    if (sw) {
        sw->value = ready_value;
        sw->state = START_STARTED;
        task->start = NULL; /* a second call does nothing */
        wake_locked(s);
    }
    pthread_mutex_unlock(&s->mu);
}

int cancel_scope_next(cancel_scope_t *s, const struct timespec *deadline, cancel_task_t **out,
                      int *result)
{
    if (!s || (deadline && !cancel__timespec_valid(deadline)))
        return EINVAL;
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    while (!s->done_head) {
        if (s->for_next == 0) {
            rc = ECHILD;
            break;
        }
        s->waiters++;
        int w = deadline ? pthread_cond_timedwait(&s->cond, &s->mu, deadline)
                         : pthread_cond_wait(&s->cond, &s->mu);
        s->waiters--;
        if (w == ETIMEDOUT && !s->done_head) {
            rc = ETIMEDOUT;
            break;
        }
    }
    struct cancel_task *task = NULL;
    int res = 0;
    if (rc == 0) {
        task = s->done_head;
        queue_remove_locked(s, task);
        task->for_next = false;
        s->for_next--;
        res = task->result;
    }
    pthread_mutex_unlock(&s->mu);
    if (rc == 0) {
        if (out)
            *out = task;
        if (result)
            *result = res;
    }
    return rc;
}

void cancel_task_release(cancel_task_t *task)
{
    if (!task)
        return;
    cancel_scope_t *s = task->scope;
    pthread_mutex_lock(&s->mu);
    bool free_it = task->handle && release_locked(s, task);
    pthread_mutex_unlock(&s->mu);
    if (free_it)
        task_free(task);
}

/* Drain's grace timer: the hard cancel, when tasks still run. */
static void hard_cancel(void *arg, int reason)
{
    cancel_scope_t *s = arg;
    (void)reason;
    /* Relaxed: after the drain no task is added, so a stale count only
     * cancels a scope whose last task is ending anyway. */
    if (atomic_load_explicit(&s->live, memory_order_relaxed) > 0)
        cancel_token_cancel(s->token, ECANCELED);
}

cancel_token_t *cancel_scope_drain_token(cancel_scope_t *s)
{
    if (!s) {
        errno = EINVAL;
        return NULL;
    }
    pthread_mutex_lock(&s->mu);
    cancel_token_t *d = s->drain;
    bool made = false;
    if (!d) {
        d = s->drain = cancel_token_child(s->token);
        made = true;
    }
    bool draining = atomic_load_explicit(&s->draining, memory_order_relaxed); /* MU */
    pthread_mutex_unlock(&s->mu);
    if (!d) {
        errno = ENOMEM;
        return NULL;
    }
    /* Made after a drain began (which saw none to cancel). */
    if (made && draining)
        cancel_token_cancel(d, ECANCELED);
    return d;
}

int cancel_scope_drain(cancel_scope_t *s, int64_t grace_ns)
{
    if (!s)
        return EINVAL;
    struct timespec at = cancel__add_ns(cancel__now(), grace_ns >= 0 ? grace_ns : 0);
    pthread_mutex_lock(&s->drain_mu);
    if (!s->grace) {
        /* Its own root, so that cancelling the scope leaves it alone. */
        s->grace = cancel_token_new();
        if (!s->grace) {
            pthread_mutex_unlock(&s->drain_mu);
            return ENOMEM;
        }
        cancel_callback_add(&s->grace_cb, s->grace, hard_cancel, s);
    }
    pthread_mutex_lock(&s->mu);
    bool first = !atomic_load_explicit(&s->draining, memory_order_relaxed); /* MU */
    if (!first && (grace_ns < 0 || (s->grace_set && cancel__timespec_cmp(&at, &s->grace_at) >= 0))) {
        pthread_mutex_unlock(&s->mu);
        pthread_mutex_unlock(&s->drain_mu);
        return EALREADY;
    }
    /* (N1) pairs with (N2) in task_account and spawn_task, which read it
     * without MU: a task that sees DRAINING sees the drain as begun. */
    atomic_store_explicit(&s->draining, true, memory_order_release);
    if (grace_ns >= 0) {
        s->grace_set = true;
        s->grace_at = at;
    }
    cancel_token_t *d = s->drain;
    pthread_cond_broadcast(&s->cond); /* spawns waiting for a slot: ESHUTDOWN */
    pthread_mutex_unlock(&s->mu);
    if (first)
        cancel_token_cancel(d, ECANCELED);
    /* A past deadline (grace 0) runs hard_cancel before this returns. */
    if (grace_ns >= 0)
        cancel_token_set_deadline(s->grace, &at);
    pthread_mutex_unlock(&s->drain_mu);
    return 0;
}

static void spin_until_idle(cancel_scope_t *s)
{
    if (cancel__ncpu() < 2)
        return;
    int64_t start = now_ns();
    /* Relaxed: a hint; join checks again under MU. */
    for (unsigned i = 1; atomic_load_explicit(&s->live, memory_order_relaxed) > 0; i++) {
        if ((i & 63) == 0 && now_ns() - start > 20 * 1000)
            return;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
}

int cancel_scope_join_until(cancel_scope_t *s, const struct timespec *deadline, void **value)
{
    if (!s || (deadline && !cancel__timespec_valid(deadline)))
        return EINVAL;
    /* From a task of S, or from a callback run by the cancel of S's token
     * (or an ancestor's) that must still wake S's tasks: it would hang. */
    if (inside(s) || cancel__cancelling_here(s->token))
        return EDEADLK;

    pthread_mutex_lock(&s->mu);
    s->joining = true;
    if (s->live > 0) {
        /* Short tasks often end within microseconds: spin briefly before
         * sleeping, which saves the futex wake of a sleeping joiner. */
        pthread_mutex_unlock(&s->mu);
        spin_until_idle(s);
        pthread_mutex_lock(&s->mu);
    }
    while (s->live > 0 || s->spawning > 0) {
        int rc = 0;
        s->joiners++;
        if (deadline)
            rc = pthread_cond_timedwait(&s->idle_cond, &s->mu, deadline);
        else
            pthread_cond_wait(&s->idle_cond, &s->mu);
        s->joiners--;
        if (rc == ETIMEDOUT && (s->live > 0 || s->spawning > 0)) {
            pthread_mutex_unlock(&s->mu);
            return ETIMEDOUT;
        }
    }
    int rc = 0;
    void *v = NULL;
    int parent_reason = cancel_token_reason(s->parent);
    if (s->failure && !(s->flags & CANCEL_SCOPE_SUPERVISE) &&
        !((s->flags & CANCEL_SCOPE_RACE) && s->succeeded))
        rc = s->failure;
    else if (parent_reason)
        rc = parent_reason;
    else if (s->terminated)
        v = s->value;
    if (deadline && rc == ETIMEDOUT) {
        /* The result itself is ETIMEDOUT (a deadline parent): freeing now
         * would look like "timed out, still joinable" to the caller, who
         * would then touch a freed scope.  Keep the rule "ETIMEDOUT from
         * join_until frees nothing": the next join returns at once. */
        pthread_mutex_unlock(&s->mu);
        return ETIMEDOUT;
    }
    pthread_mutex_unlock(&s->mu);
    cancel__scope_unregister(&s->reg); /* issue 16: no dump reaches S after this */

    /* The grace timer's callback points at S: gone (and not running)
     * before S goes.  No drain can run any more (it is the caller's). */
    if (s->grace) {
        cancel_callback_remove(&s->grace_cb);
        cancel_token_unref(s->grace);
    }
    /* Every task has finished and no worker touches the scope any more. */
    struct cancel_task *task = s->tasks;
    while (task) {
        struct cancel_task *next = task->next;
        task_free(task);
        task = next;
    }
    cancel_token_unref(s->drain);
    cancel_token_unref(s->token);
    cancel_token_unref(s->parent);
    chain_unref(s->node);
    pthread_cond_destroy(&s->cond);
    pthread_cond_destroy(&s->idle_cond);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->drain_mu);
    free(s);
    if (value)
        *value = v;
    return rc;
}

int cancel_scope_join(cancel_scope_t *s, void **value)
{
    return cancel_scope_join_until(s, NULL, value);
}

int cancel_task_join(cancel_task_t *task, int *result)
{
    if (!task)
        return EINVAL;
    if (inside_task(task))
        return EDEADLK;
    cancel_scope_t *s = task->scope;
    pthread_mutex_lock(&s->mu);
    while (task->state != TASK_DONE) {
        s->waiters++;
        pthread_cond_wait(&s->cond, &s->mu);
        s->waiters--;
    }
    int rc = task->result;
    pthread_mutex_unlock(&s->mu);
    if (result)
        *result = rc;
    return 0;
}

void cancel_task_cancel(cancel_task_t *task)
{
    if (task)
        cancel_token_cancel(task->token, ECANCELED);
}

cancel_token_t *cancel_task_token(cancel_task_t *task)
{
    if (!task) {
        errno = EINVAL;
        return NULL;
    }
    return task->token;
}

int cancel_task_set_name(cancel_task_t *task, const char *name)
{
    if (!task)
        return EINVAL;
    cancel_scope_t *s = task->scope;
    pthread_mutex_lock(&s->mu);
    snprintf(task->name, sizeof task->name, "%s", name ? name : "");
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static const char *state_name(enum task_state st)
{
    switch (st) {
    case TASK_STARTING: return "starting";
    case TASK_RUNNING: return "running";
    case TASK_DONE: return "done";
    }
    return "?";
}

/* ---- Process-wide dump (issue 16): S and its live tasks, for dump.c ---- */
void cancel__scope_visit(cancel_scope_t *s, int64_t now,
                         void (*fn)(void *ctx, const struct cancel__scope_view *scope,
                                    const struct cancel__task_view *task),
                         void *ctx)
{
    pthread_mutex_lock(&s->mu);
    /* Chain nodes outlive the scopes and tasks they stand for, so the keys
     * never name a freed record: a scope's OWNER is the node of the task
     * that opened it, a task's NEST its own node (NULL until it opens one). */
    struct cancel__scope_view sv = {
        .id = s,
        .owner = s->node ? s->node->up : NULL,
        .mode = (s->flags & CANCEL_SCOPE_RACE) ? "race"
              : (s->flags & CANCEL_SCOPE_SUPERVISE) ? "supervise" : "fail-fast",
        .live = s->live,
        .limit = s->limit,
        .joining = s->joining,
        .terminated = s->terminated,
        .draining = atomic_load_explicit(&s->draining, memory_order_relaxed), /* MU */
        .failure = s->failure,
        .token = s->token,
    };
    fn(ctx, &sv, NULL);
    /* NEST: (P2) pairs with (P1) in task_node. */
    for (struct cancel_task *t = s->tasks; t; t = t->next) {
        if (t->state == TASK_DONE)
            continue;
        struct cancel__task_view tv = {
            .id = t, .nest = atomic_load_explicit(&t->node, memory_order_acquire),
            .name = t->name, .state = state_name(t->state),
            .running = t->state == TASK_RUNNING, .fd = -1, .token = t->token,
        };
        if (tv.running) {
            tv.running_ns = now - t->started_ns;
            tv.thread = t->thread;
            tv.waiting_slot = t->waiting_slot == s;
            /* The record belongs to the worker thread, which cannot exit
             * while the task is RUNNING (it needs MU to leave that state).
             * (D2) pairs with (D1) in wake.c and token_wait.c: FD and
             * SINCE_NS, loaded relaxed, are those stored before CALL. */
            tv.call = atomic_load_explicit(&t->blocked->call, memory_order_acquire);
            if (tv.call) {
                tv.fd = atomic_load_explicit(&t->blocked->fd, memory_order_relaxed);
                int64_t since = atomic_load_explicit(&t->blocked->since_ns,
                                                     memory_order_relaxed);
                tv.blocked_ns = since > 0 ? now - since : 0;
            }
        }
        fn(ctx, &sv, &tv);
    }
    pthread_mutex_unlock(&s->mu);
}

int cancel_scope_dump(cancel_scope_t *s, int fd)
{
    if (!s || fd < 0)
        return EINVAL;
    return cancel__dump_scope(s, fd);
}
/* ---- end of process-wide dump ---- */

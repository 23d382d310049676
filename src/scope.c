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
 * counts, the first failure, the terminate value).  COND is broadcast,
 * when someone waits on it, on every change a spawn waiting for a slot or
 * a cancel_task_join may wait for; IDLE_COND wakes joiners once, when the
 * last task finishes (a teardown of N tasks wakes the joiner once, not N
 * times).
 *
 * Lock order: MU, then cancel__lock (taken inside cancel_token_child and
 * friends), then worker.c's lock.  Never cancel a token or remove a
 * callback while holding MU: the callbacks we arm take MU.
 */
#include "internal.h"

#include <fcntl.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum task_state { TASK_STARTING, TASK_RUNNING, TASK_DONE };

enum { NAME_MAX_LEN = 31 };

struct cancel_task {
    cancel_scope_t *scope;
    cancel_task_fn fn;
    void *arg;
    cancel_token_t *token;      /* the task's token; released at join */
    struct cancel_task *next;   /* every task of the scope, newest first */
    /* Guarded by the scope's MU. */
    enum task_state state;
    int result;
    struct cancel_blocked *blocked; /* the worker thread's record while running */
    pthread_t thread;
    int64_t started_ns;
    char name[NAME_MAX_LEN + 1];
};

struct cancel_scope {
    pthread_mutex_t mu;
    pthread_cond_t cond;        /* a task finished, a slot freed, a cancel */
    pthread_cond_t idle_cond;   /* LIVE reached 0 */
    cancel_token_t *token;
    cancel_token_t *parent;     /* a reference, or NULL */
    struct cancel_task *owner;  /* the task that opened us, or NULL */
    int flags;
    size_t stack_size;          /* 0: the process-wide default */
    /* Guarded by MU. */
    unsigned limit;             /* 0: none */
    _Atomic unsigned live;      /* spawned, not finished (changed under MU) */
    unsigned waiters;           /* threads waiting on COND */
    unsigned joiners;           /* threads waiting on IDLE_COND */
    bool joining;
    bool terminated;            /* by terminate or a RACE winner */
    bool succeeded;             /* RACE: some task returned 0 */
    void *value;
    int failure;                /* first real failure, or 0 */
    struct cancel_task *tasks;
    struct cancel__scope_reg reg; /* dump.c's registry of open scopes (issue 16) */
};

/* The task running on this thread, or NULL. */
static __thread struct cancel_task *current_task;

/* Is the calling thread a task of S, or a task nested under one? */
static bool inside(const cancel_scope_t *s)
{
    for (const struct cancel_task *t = current_task; t; t = t->scope->owner)
        if (t->scope == s)
            return true;
    return false;
}

/* Is the calling thread TASK itself, or a task nested under it? */
static bool inside_task(const struct cancel_task *task)
{
    for (const struct cancel_task *t = current_task; t; t = t->scope->owner)
        if (t == task)
            return true;
    return false;
}

static int64_t now_ns(void)
{
    struct timespec ts = cancel__now();
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
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
        free(s);
        errno = ENOMEM;
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    /* A child of a cancelled parent is born cancelled: such a scope starts
     * nothing and joins with the parent's reason. */
    s->token = cancel_token_child(parent);
    if (!s->token) {
        pthread_cond_destroy(&s->cond);
        pthread_cond_destroy(&s->idle_cond);
        pthread_mutex_destroy(&s->mu);
        free(s);
        errno = ENOMEM;
        return NULL;
    }
    s->parent = cancel_token_ref(parent);
    s->owner = current_task;
    s->flags = flags;
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

/* Wakes whoever waits for a task to finish (MU held). */
static void task_finished_locked(cancel_scope_t *s)
{
    if (s->waiters > 0)
        pthread_cond_broadcast(&s->cond);
    if (s->live == 0 && s->joiners > 0)
        pthread_cond_broadcast(&s->idle_cond);
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
    /* Read by others only after they saw TASK_DONE, set under MU later. */
    task->result = rc;

    /* Errors caused by cancellation never count as failures. */
    bool excused = (rc == ECANCELED || rc == ETIMEDOUT) &&
                   cancel_token_is_cancelled(task->token);
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
    /* Cancel before we count as finished: until then join cannot free the
     * scope's token under us. */
    if (cancel_scope_now)
        cancel_token_cancel(s->token, ECANCELED);
}

/* Runs on the worker thread once it is idle again: the task is over. */
static void task_done(void *p)
{
    struct cancel_task *task = p;
    cancel_scope_t *s = task->scope;
    pthread_mutex_lock(&s->mu);
    task->state = TASK_DONE;
    task->blocked = NULL;
    s->live--;
    task_finished_locked(s);
    /* After this unlock the scope and the task may be freed at once. */
    pthread_mutex_unlock(&s->mu);
}

static void wake_spawners(void *arg, int reason)
{
    cancel_scope_t *s = arg;
    (void)reason;
    pthread_mutex_lock(&s->mu);
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

/*
 * Waits (MU held) until S has a free slot.  The wait watches the scope's
 * token and the caller's current token through callbacks that broadcast
 * COND, so it ends on cancel without polling.  Returns 0 or ECANCELED;
 * *ARMED tells the caller to remove the callbacks once MU is dropped.
 */
static int wait_for_slot_locked(cancel_scope_t *s, cancel_callback_t cbs[2], bool *armed)
{
    cancel_token_t *mine = cancel_current();
    while (s->limit != 0 && s->live >= s->limit) {
        if (cancel_token_is_cancelled(s->token) || cancel_token_is_cancelled(mine))
            return ECANCELED;
        if (!*armed) {
            /* Armed without MU: a callback that fires inline takes MU. */
            pthread_mutex_unlock(&s->mu);
            cancel_callback_add(&cbs[0], s->token, wake_spawners, s);
            cancel_callback_add(&cbs[1], mine, wake_spawners, s);
            *armed = true;
            pthread_mutex_lock(&s->mu);
            continue; /* recheck: anything may have changed meanwhile */
        }
        s->waiters++;
        pthread_cond_wait(&s->cond, &s->mu);
        s->waiters--;
    }
    /* A cancel that freed the slots (its tasks ended) still wins. */
    if (cancel_token_is_cancelled(s->token) || (*armed && cancel_token_is_cancelled(mine)))
        return ECANCELED;
    return 0;
}

static void task_free(struct cancel_task *task)
{
    cancel_token_unref(task->token);
    free(task);
}

int cancel_scope_spawn_named(cancel_scope_t *s, const char *name, cancel_task_fn fn,
                             void *arg, cancel_task_t **out)
{
    if (!s || !fn)
        return EINVAL;
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

    cancel_callback_t cbs[2];
    bool armed = false;
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    if (s->joining && !inside(s))
        rc = EINVAL; /* only the scope's own tasks may spawn once join began */
    else if (cancel_token_is_cancelled(s->token))
        rc = ECANCELED;
    else
        rc = wait_for_slot_locked(s, cbs, &armed);
    if (rc == 0) {
        s->live++;
        task->next = s->tasks;
        s->tasks = task;
    }
    size_t stack = s->stack_size;
    pthread_mutex_unlock(&s->mu);
    if (armed) {
        cancel_callback_remove(&cbs[0]);
        cancel_callback_remove(&cbs[1]);
    }
    if (rc) {
        task_free(task);
        return rc;
    }

    /* From here the task counts as live, so join waits for it.  A started
     * job runs FN exactly once, whatever happens to the scope meanwhile. */
    if (cancel__worker_start(task_run, task_done, task, stack) != 0) {
        pthread_mutex_lock(&s->mu);
        struct cancel_task **link = &s->tasks;
        while (*link != task)
            link = &(*link)->next;
        *link = task->next;
        s->live--;
        task_finished_locked(s);
        pthread_mutex_unlock(&s->mu);
        task_free(task);
        return EAGAIN;
    }
    if (out)
        *out = task;
    return 0;
}

int cancel_scope_spawn(cancel_scope_t *s, cancel_task_fn fn, void *arg, cancel_task_t **task)
{
    return cancel_scope_spawn_named(s, NULL, fn, arg, task);
}

static void spin_until_idle(cancel_scope_t *s)
{
    if (cancel__ncpu() < 2)
        return;
    int64_t start = now_ns();
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
    if (inside(s))
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
    while (s->live > 0) {
        int rc = 0;
        s->joiners++;
        if (deadline)
            rc = pthread_cond_timedwait(&s->idle_cond, &s->mu, deadline);
        else
            pthread_cond_wait(&s->idle_cond, &s->mu);
        s->joiners--;
        if (rc == ETIMEDOUT && s->live > 0) {
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

    /* Every task has finished and no worker touches the scope any more. */
    struct cancel_task *task = s->tasks;
    while (task) {
        struct cancel_task *next = task->next;
        task_free(task);
        task = next;
    }
    cancel_token_unref(s->token);
    cancel_token_unref(s->parent);
    pthread_cond_destroy(&s->cond);
    pthread_cond_destroy(&s->idle_cond);
    pthread_mutex_destroy(&s->mu);
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
    struct cancel__scope_view sv = {
        .id = s,
        .owner = s->owner,
        .mode = (s->flags & CANCEL_SCOPE_RACE) ? "race"
              : (s->flags & CANCEL_SCOPE_SUPERVISE) ? "supervise" : "fail-fast",
        .live = s->live,
        .limit = s->limit,
        .joining = s->joining,
        .terminated = s->terminated,
        .failure = s->failure,
        .token = s->token,
    };
    fn(ctx, &sv, NULL);
    for (struct cancel_task *t = s->tasks; t; t = t->next) {
        if (t->state == TASK_DONE)
            continue;
        struct cancel__task_view tv = {
            .id = t, .nest = t, .name = t->name, .state = state_name(t->state),
            .running = t->state == TASK_RUNNING, .fd = -1, .token = t->token,
        };
        if (tv.running) {
            tv.running_ns = now - t->started_ns;
            tv.thread = t->thread;
            /* The record belongs to the worker thread, which cannot exit
             * while the task is RUNNING (it needs MU to leave that state). */
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

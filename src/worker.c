/*
 * worker.c - the process-wide cache of reusable worker threads behind
 * scopes.
 *
 * A worker is a detached thread that runs one job, parks on the idle list,
 * runs the job's DONE hook (which may tell a joiner that the job is over:
 * the joiner's next spawn then finds this worker idle), then waits up to
 * IDLE_NS for the next job, then exits.  At most cancel__worker_max_idle
 * workers park at once; a worker that finds the list full exits at once.
 * Handing a job to an idle worker costs one mutex and one futex wake on
 * that worker's own condition variable (no thundering herd, no thread
 * creation).  The list is LIFO: the most recently parked worker
 * (warm stack, warm caches) is reused first.
 *
 * Workers are keyed by stack size: a job asking for another size than an
 * idle worker has gets a new thread.
 *
 * Lock order: worker.c's LOCK is a leaf; jobs run without it.
 *
 * fork: the child has none of the parent's workers.  fork.c holds LOCK
 * across the fork (so the list is consistent in the child's copy), and
 * the child empties the idle list: its first spawn makes a new thread
 * instead of handing the job to a parked worker that does not exist
 * there.  Workers that were running jobs belong to the parent; their
 * records are never reached from the child's list.
 */
#include "internal.h"

#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

enum {
    DEFAULT_STACK = 256 * 1024,
};
#define IDLE_NS (2 * 1000000000LL)
#define SPIN_NS (20 * 1000LL)

struct worker {
    pthread_cond_t cond;        /* signalled when JOB is handed over */
    _Atomic(void (*)(void *)) job; /* NULL while parked without work */
    bool sleeping;              /* in the cond wait (guarded by LOCK) */
    void (*done)(void *);       /* runs after JOB, once we are parked */
    void *arg;
    size_t stack_size;
    struct worker *next;        /* on the idle list */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct worker *idle;     /* guarded by LOCK */
static unsigned nidle;          /* guarded by LOCK */
static _Atomic size_t default_stack = DEFAULT_STACK;

/* How many workers may park at once (a test hook may lower it).  1024: a
 * cancel that ends a thousand tasks at once parks their workers instead
 * of making them all exit together (each exit is a madvise of its stack
 * and a TLB shootdown on every CPU, which took half the cancel->join time
 * of 1,000 blocked tasks); they leave after IDLE_NS.  Relaxed: a bound
 * read under LOCK. */
_Atomic unsigned cancel__worker_max_idle = 1024;

/* Test hook: the next that many thread creations fail with EAGAIN. */
_Atomic int cancel__worker_fail_next_create;

static size_t page_round(size_t n)
{
    long page = sysconf(_SC_PAGESIZE);
    size_t p = page > 0 ? (size_t)page : 4096;
    return (n + p - 1) / p * p;
}

int cancel__stack_size_check(size_t bytes, size_t *rounded)
{
    if (bytes == 0) {
        *rounded = 0;
        return 0;
    }
    if (bytes < (size_t)PTHREAD_STACK_MIN || bytes > ((size_t)1 << 40))
        return EINVAL;
    *rounded = page_round(bytes);
    return 0;
}

int cancel_set_default_stack_size(size_t bytes)
{
    size_t rounded;
    int rc = cancel__stack_size_check(bytes, &rounded);
    if (rc)
        return rc;
    /* Relaxed: a plain setting, read once per thread creation. */
    atomic_store_explicit(&default_stack, rounded ? rounded : (size_t)DEFAULT_STACK,
                          memory_order_relaxed);
    return 0;
}

size_t cancel_default_stack_size(void)
{
    /* Relaxed: see cancel_set_default_stack_size. */
    return atomic_load_explicit(&default_stack, memory_order_relaxed);
}

unsigned cancel__worker_idle_count(void)
{
    pthread_mutex_lock(&lock);
    unsigned n = nidle;
    pthread_mutex_unlock(&lock);
    return n;
}

/* Removes W from the idle list (LOCK held); W is on it. */
static void idle_unlink_locked(struct worker *w)
{
    struct worker **link = &idle;
    while (*link != w)
        link = &(*link)->next;
    *link = w->next;
    nidle--;
}

void cancel__worker_atfork_prepare(void)
{
    pthread_mutex_lock(&lock);
}

void cancel__worker_atfork_parent(void)
{
    pthread_mutex_unlock(&lock);
}

void cancel__worker_atfork_child(void)
{
    /* The parked records are ours to free: their threads are not here. */
    while (idle) {
        struct worker *w = idle;
        idle = w->next;
        free(w);
    }
    nidle = 0;
    pthread_mutex_unlock(&lock); /* ours since prepare: the only thread here */
}

long cancel__ncpu(void)
{
    /* Relaxed: every thread computes the same value. */
    static _Atomic long ncpu;
    long n = atomic_load_explicit(&ncpu, memory_order_relaxed);
    if (n == 0) {
        n = sysconf(_SC_NPROCESSORS_ONLN);
        n = n > 0 ? n : 1;
        atomic_store_explicit(&ncpu, n, memory_order_relaxed);
    }
    return n;
}

/* Spins up to SPIN_NS until W is handed a job; true when it was.  (J2)
 * pairs with (J1) in cancel__worker_start, the giver's store made after
 * it wrote DONE and ARG. */
static bool spin_until_job(struct worker *w)
{
    int64_t start = 0;
    for (unsigned i = 1;; i++) {
        if (atomic_load_explicit(&w->job, memory_order_acquire) != NULL)
            return true;
        if ((i & 63) == 0) {
            struct timespec now = cancel__now();
            int64_t t = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
            if (start == 0)
                start = t;
            else if (t - start > SPIN_NS)
                return false;
        }
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
}

/* How many parked workers spin now.  Relaxed: a count, read only to bound
 * it; the job hand-over is ordered by (J1)/(J2) or LOCK. */
static _Atomic unsigned spinners;

/* Spins up to SPIN_NS for a job; true when one was handed over.  Only on
 * machines with more than one CPU, and one worker at a time: the spin serves a loop of short tasks, where one
 * worker parks and the next spawn follows at once; when a cancel ends a
 * thousand tasks together, a thousand spinning workers burnt 20 ms of CPU
 * that the canceller and the finishing tasks needed. */
static bool spin_for_job(struct worker *w)
{
    if (cancel__ncpu() < 2)
        return false;
    if (atomic_fetch_add_explicit(&spinners, 1, memory_order_relaxed) != 0) {
        atomic_fetch_sub_explicit(&spinners, 1, memory_order_relaxed);
        return false;
    }
    bool got = spin_until_job(w);
    atomic_fetch_sub_explicit(&spinners, 1, memory_order_relaxed);
    return got;
}

/* [scopes hook] The thread ends inside its job (pthread_exit,
 * pthread_cancel): DONE still runs (the scope finishes the task with
 * EOWNERDEAD), and the worker, never parked, is freed and not reused. */
static void worker_died(void *p)
{
    struct worker *w = p;
    if (w->done)
        w->done(w->arg);
    pthread_cond_destroy(&w->cond);
    free(w);
}

static void *worker_main(void *p)
{
    struct worker *w = p;
    for (;;) {
        /* Relaxed: pthread_create, (J2) or LOCK ordered the giver's store. */
        void (*job)(void *) = atomic_load_explicit(&w->job, memory_order_relaxed);
        pthread_cleanup_push(worker_died, w);
        job(w->arg);
        pthread_cleanup_pop(0);
        /* [end scopes hook] */
        void (*done)(void *) = w->done;
        void *arg = w->arg;
        /* Park before DONE tells the job's owner that we finished: whoever
         * it wakes (a join) finds us idle and reuses this thread for its
         * next spawn instead of creating one. */
        pthread_mutex_lock(&lock);
        /* Relaxed: under LOCK, and no giver reads JOB. */
        atomic_store_explicit(&w->job, NULL, memory_order_relaxed);
        bool parked = nidle < atomic_load_explicit(&cancel__worker_max_idle,
                                                   memory_order_relaxed);
        if (parked) {
            w->next = idle;
            idle = w;
            nidle++;
        }
        pthread_mutex_unlock(&lock);
        if (done)
            done(arg);
        if (!parked)
            break;
        /* Spin a few microseconds first: a spawn that follows a join at
         * once (a loop of short tasks) then costs no futex wake at all. */
        if (spin_for_job(w))
            continue;
        pthread_mutex_lock(&lock);
        struct timespec until = cancel__add_ns(cancel__now(), IDLE_NS);
        /* A job may be handed over between the timeout and our relock: the
         * giver unlinks us under LOCK, so JOB decides, not the timeout.
         * Relaxed: LOCK orders the giver's store. */
        while (atomic_load_explicit(&w->job, memory_order_relaxed) == NULL) {
            w->sleeping = true;
            int rc = pthread_cond_timedwait(&w->cond, &lock, &until);
            w->sleeping = false;
            if (rc == ETIMEDOUT && atomic_load_explicit(&w->job, memory_order_relaxed) == NULL) {
                idle_unlink_locked(w);
                pthread_mutex_unlock(&lock);
                goto out;
            }
        }
        pthread_mutex_unlock(&lock);
    }
out:
    pthread_cond_destroy(&w->cond);
    free(w);
    return NULL;
}

int cancel__worker_start(void (*job)(void *), void (*done)(void *), void *arg,
                         size_t stack_size)
{
    if (stack_size == 0)
        stack_size = cancel_default_stack_size();

    pthread_mutex_lock(&lock);
    for (struct worker **link = &idle; *link; link = &(*link)->next) {
        struct worker *w = *link;
        if (w->stack_size != stack_size)
            continue;
        *link = w->next;
        nidle--;
        w->done = done;
        w->arg = arg;
        /* (J1) pairs with (J2) in spin_until_job: a spinning worker that
         * sees JOB sees DONE and ARG. */
        atomic_store_explicit(&w->job, job, memory_order_release);
        if (w->sleeping)
            pthread_cond_signal(&w->cond);
        pthread_mutex_unlock(&lock);
        return 0;
    }
    pthread_mutex_unlock(&lock);

    /* Relaxed: a test hook's counter; only its own value matters. */
    int fail = atomic_load_explicit(&cancel__worker_fail_next_create, memory_order_relaxed);
    while (fail > 0) {
        if (atomic_compare_exchange_weak_explicit(&cancel__worker_fail_next_create, &fail,
                                                  fail - 1, memory_order_relaxed,
                                                  memory_order_relaxed))
            return EAGAIN;
    }

    struct worker *w = malloc(sizeof *w);
    if (!w)
        return EAGAIN;
    /* CLOCK_MONOTONIC for the idle timeout, like every time in the library. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&w->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (rc) {
        free(w);
        return EAGAIN;
    }
    atomic_init(&w->job, job);
    w->sleeping = false;
    w->done = done;
    w->arg = arg;
    w->stack_size = stack_size;
    w->next = NULL;

    pthread_attr_t attr;
    rc = pthread_attr_init(&attr);
    if (rc == 0) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        rc = pthread_attr_setstacksize(&attr, stack_size);
        if (rc == 0) {
            pthread_t thread;
            rc = pthread_create(&thread, &attr, worker_main, w);
        }
        pthread_attr_destroy(&attr);
    }
    if (rc) {
        pthread_cond_destroy(&w->cond);
        free(w);
        return EAGAIN;
    }
    return 0;
}

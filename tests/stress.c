/*
 * stress.c - `make stress`: a randomized multi-threaded soak of the whole
 * library for STRESS_SECONDS (default 60), then invariants.
 *
 * THREADS threads loop on random operations over a shared pool of tokens:
 * create roots, children, deadline children and linked tokens, cancel
 * them (from whichever thread gets there), arm and remove callbacks, wait
 * on deadlines, and open scopes under pool tokens whose tasks move bytes
 * through socketpairs with wrapped calls while the scope, its parent or a
 * deadline cancels them.  At the end:
 *
 *  - every armed callback ran exactly once or was removed before running;
 *  - every spawned task ran once and was joined;
 *  - every byte written was read exactly once or is still in its socket
 *    (the reader checks the byte sequence, so nothing was read twice);
 *  - no descriptor is left open, and no thread but the timer thread and
 *    idle cached workers (which exit after their idle timeout).
 *
 * A second mode (STRESS_MODE=subtrees; `make stress` runs both, half the
 * time each) checks the scale design's promises under churn: OWNERS
 * threads each grow, prune and arm callbacks in a subtree of their own
 * under one shared root, while CHAOS threads cancel and release random
 * tokens that the owners published.  After an owner's cancel of its
 * subtree returns true, every node it knows of reads cancelled and every
 * callback it armed there has run (a chaos thread may be running some of
 * them: cancel waits for it); callbacks run exactly once or are removed.
 *
 * Prints operations per second.  Exit status 0 when every invariant holds.
 */
#include "internal.h"
#include "subtree.h"

#include <dirent.h>
#include <sched.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

enum { THREADS = 4, SLOTS = 16, CBS = 8, CHUNK = 512 };

static int64_t tu_now_ns_(void)
{
    struct timespec ts = cancel__now();
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int count_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* opendir's own descriptor, or nothing for tasks */
}

static struct {
    pthread_mutex_t mu;
    cancel_token_t *t;
} pool[SLOTS];

static _Atomic bool stop;
static _Atomic long ops, violations;
static _Atomic long cb_armed, cb_removed, cb_ran, cb_ran_twice;
static _Atomic long tasks_spawned, tasks_ran, tasks_joined;
static _Atomic long bytes_written, bytes_read, bytes_left;
static _Atomic int first_bad_line;

#define VIOLATION()                                                        \
    do {                                                                   \
        int none_ = 0;                                                     \
        atomic_compare_exchange_strong(&first_bad_line, &none_, __LINE__); \
        atomic_fetch_add(&violations, 1);                                  \
    } while (0)

static unsigned rnd(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return (*seed >> 8) & 0xffffff;
}

/* A reference on the token in slot I (NULL when empty). */
static cancel_token_t *pool_get(int i)
{
    pthread_mutex_lock(&pool[i].mu);
    cancel_token_t *t = cancel_token_ref(pool[i].t);
    pthread_mutex_unlock(&pool[i].mu);
    return t;
}

static void pool_put(int i, cancel_token_t *t)
{
    pthread_mutex_lock(&pool[i].mu);
    cancel_token_t *old = pool[i].t;
    pool[i].t = t;
    pthread_mutex_unlock(&pool[i].mu);
    cancel_token_unref(old);
}

struct rec {
    cancel_callback_t cb;
    _Atomic int runs;
    bool armed;
};

static void rec_fn(void *arg, int reason)
{
    struct rec *r = arg;
    if (reason <= 0)
        VIOLATION();
    if (atomic_fetch_add(&r->runs, 1) != 0)
        atomic_fetch_add(&cb_ran_twice, 1);
}

/* Settles REC: removed before running, or ran exactly once. */
static void rec_settle(struct rec *r)
{
    if (!r->armed)
        return;
    bool removed = cancel_callback_remove(&r->cb);
    int runs = atomic_load(&r->runs);
    if (removed) {
        atomic_fetch_add(&cb_removed, 1);
        if (runs != 0)
            VIOLATION();
    } else {
        atomic_fetch_add(&cb_ran, 1);
        if (runs != 1)
            VIOLATION();
    }
    r->armed = false;
}

/* ------------------------------------------------------ scopes with I/O */

struct pipe_job {
    int fd;
    size_t n;
    _Atomic size_t moved;
    unsigned char first; /* value of the first byte: byte k is first + k */
};

static int writer_task(void *arg)
{
    struct pipe_job *j = arg;
    atomic_fetch_add(&tasks_ran, 1);
    unsigned char buf[CHUNK];
    for (size_t k = 0; k < sizeof buf; k++)
        buf[k] = (unsigned char)(j->first + k);
    size_t total = 0;
    while (total < j->n) {
        size_t want = j->n - total < sizeof buf ? j->n - total : sizeof buf;
        /* Byte k of the stream is first + k: re-base the chunk. */
        for (size_t k = 0; k < want; k++)
            buf[k] = (unsigned char)(j->first + total + k);
        size_t done = 0;
        ssize_t r = cancel_write_all(j->fd, buf, want, &done);
        total += done;
        atomic_store(&j->moved, total);
        if (r < 0)
            return errno == ECANCELED || errno == ETIMEDOUT ? errno : EIO;
    }
    return 0;
}

static int reader_task(void *arg)
{
    struct pipe_job *j = arg;
    atomic_fetch_add(&tasks_ran, 1);
    unsigned char buf[CHUNK];
    size_t total = 0;
    while (total < j->n) {
        size_t want = j->n - total < sizeof buf ? j->n - total : sizeof buf;
        ssize_t r = cancel_read(j->fd, buf, want);
        if (r <= 0)
            return r < 0 && (errno == ECANCELED || errno == ETIMEDOUT) ? errno : EIO;
        for (ssize_t k = 0; k < r; k++)
            if (buf[k] != (unsigned char)(j->first + total + (size_t)k))
                VIOLATION(); /* a byte lost or read twice */
        total += (size_t)r;
        atomic_store(&j->moved, total);
    }
    return 0;
}

static int idle_task(void *arg)
{
    (void)arg;
    atomic_fetch_add(&tasks_ran, 1);
    return cancel_sleep(100 * 1000LL) < 0 ? errno : 0;
}

static void scope_round(unsigned *seed)
{
    int i = (int)(rnd(seed) % SLOTS);
    cancel_token_t *parent = pool_get(i);
    cancel_token_t *deadline = NULL;
    if (rnd(seed) % 3 == 0)
        deadline = cancel_token_with_timeout(parent, (int64_t)(rnd(seed) % 2000) * 1000);
    cancel_scope_t *s = cancel_scope_open_in(deadline ? deadline : parent,
                                             rnd(seed) % 4 == 0 ? CANCEL_SCOPE_SUPERVISE : 0);
    if (!s) {
        VIOLATION();
        goto out;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        VIOLATION();
        cancel_scope_join(s, NULL);
        goto out;
    }
    struct pipe_job w = { .fd = sv[0], .n = 1 + rnd(seed) % 300000, .first = (unsigned char)rnd(seed) };
    struct pipe_job r = { .fd = sv[1], .n = w.n, .first = w.first };
    bool wr = cancel_scope_spawn(s, writer_task, &w, NULL) == 0;
    bool rd = wr && cancel_scope_spawn(s, reader_task, &r, NULL) == 0;
    int extra = 0;
    for (unsigned k = rnd(seed) % 3; k > 0; k--)
        extra += cancel_scope_spawn(s, idle_task, NULL, NULL) == 0;
    atomic_fetch_add(&tasks_spawned, (long)wr + (long)rd + extra);
    switch (rnd(seed) % 4) {
    case 0: cancel_scope_cancel(s); break;
    case 1: cancel_token_cancel(parent, 0); break;
    case 2: cancel_scope_terminate(s, NULL); break;
    default: break;
    }
    cancel_scope_join(s, NULL);
    atomic_fetch_add(&tasks_joined, (long)wr + (long)rd + extra);
    /* What the writer put in and the reader did not take is still there. */
    size_t written = atomic_load(&w.moved), read_ = rd ? atomic_load(&r.moved) : 0;
    int fl = fcntl(sv[1], F_GETFL);
    fcntl(sv[1], F_SETFL, fl | O_NONBLOCK);
    unsigned char buf[CHUNK];
    size_t left = 0;
    for (ssize_t n; (n = read(sv[1], buf, sizeof buf)) > 0;) {
        for (ssize_t k = 0; k < n; k++)
            if (buf[k] != (unsigned char)(w.first + read_ + left + (size_t)k))
                VIOLATION();
        left += (size_t)n;
    }
    if (written != read_ + left)
        VIOLATION();
    atomic_fetch_add(&bytes_written, (long)written);
    atomic_fetch_add(&bytes_read, (long)read_);
    atomic_fetch_add(&bytes_left, (long)left);
    close(sv[0]);
    close(sv[1]);
out:
    cancel_token_unref(deadline);
    cancel_token_unref(parent);
}

/* ------------------------------------------------------------ the loop */

static void *worker(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg * 2654435761u + 1;
    struct rec recs[CBS];
    memset(recs, 0, sizeof recs);
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        int i = (int)(rnd(&seed) % SLOTS);
        unsigned op = rnd(&seed) % 100;
        if (op < 15) {
            pool_put(i, cancel_token_new());
        } else if (op < 35) {
            cancel_token_t *p = pool_get((int)(rnd(&seed) % SLOTS));
            pool_put(i, cancel_token_child(p));
            cancel_token_unref(p);
        } else if (op < 40) {
            cancel_token_t *p = pool_get((int)(rnd(&seed) % SLOTS));
            pool_put(i, cancel_token_with_timeout(p, (int64_t)(rnd(&seed) % 3000) * 1000));
            cancel_token_unref(p);
        } else if (op < 43) {
            cancel_token_t *src[2] = { pool_get((int)(rnd(&seed) % SLOTS)),
                                       pool_get((int)(rnd(&seed) % SLOTS)) };
            pool_put(i, cancel_token_any(src, 2));
            cancel_token_unref(src[0]);
            cancel_token_unref(src[1]);
        } else if (op < 58) {
            cancel_token_t *t = pool_get(i);
            bool was = cancel_token_is_cancelled(t);
            if (cancel_token_cancel(t, (int)(rnd(&seed) % 3)) && was)
                VIOLATION();
            if (t && !cancel_token_is_cancelled(t))
                VIOLATION();
            cancel_token_unref(t);
        } else if (op < 78) {
            struct rec *r = &recs[rnd(&seed) % CBS];
            rec_settle(r);
            cancel_token_t *t = pool_get(i);
            atomic_store(&r->runs, 0);
            int rc = cancel_callback_add(&r->cb, t, rec_fn, r);
            if (rc < 0 || (rc == 1 && atomic_load(&r->runs) != 1))
                VIOLATION();
            r->armed = true;
            atomic_fetch_add(&cb_armed, 1);
            cancel_token_unref(t);
        } else if (op < 88) {
            rec_settle(&recs[rnd(&seed) % CBS]);
        } else if (op < 93) {
            cancel_token_t *p = pool_get(i);
            cancel_token_t *d = cancel_token_with_timeout(p, (int64_t)(rnd(&seed) % 500) * 1000);
            if (!d || cancel_token_wait(d, NULL) != 0 || !cancel_token_is_cancelled(d))
                VIOLATION();
            cancel_token_unref(d);
            cancel_token_unref(p);
        } else {
            scope_round(&seed);
        }
        atomic_fetch_add_explicit(&ops, 1, memory_order_relaxed);
    }
    for (int k = 0; k < CBS; k++)
        rec_settle(&recs[k]);
    return NULL;
}


/* ------------------------------------------------- subtrees under churn */

enum { OWNERS = 4, CHAOS = 2, NODES = 32, SHARED = 64 };

static struct {
    pthread_mutex_t mu;
    cancel_token_t *t;
} shared_slot[SHARED];
static cancel_token_t *top;

static void publish(unsigned *seed, cancel_token_t *t)
{
    int i = (int)(rnd(seed) % SHARED);
    pthread_mutex_lock(&shared_slot[i].mu);
    cancel_token_t *old = shared_slot[i].t;
    shared_slot[i].t = cancel_token_ref(t);
    pthread_mutex_unlock(&shared_slot[i].mu);
    cancel_token_unref(old);
}

struct owned {
    cancel_token_t *node[NODES];     /* node[0]: the subtree's root */
    int n;
    struct rec recs[CBS];
    cancel_token_t *armed_on[CBS];   /* borrowed: the node a rec is armed on */
};

static void owned_reset(struct owned *o)
{
    for (int k = 0; k < CBS; k++) {
        rec_settle(&o->recs[k]);
        o->armed_on[k] = NULL;
    }
    for (int k = o->n - 1; k >= 0; k--)
        cancel_token_unref(o->node[k]);
    o->node[0] = cancel_token_child(top);
    o->n = o->node[0] ? 1 : 0;
}

static void *owner(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg * 2246822519u + 7;
    struct owned o;
    memset(&o, 0, sizeof o);
    owned_reset(&o);
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        if (o.n == 0) {
            owned_reset(&o);
            continue;
        }
        unsigned op = rnd(&seed) % 100;
        int k = (int)(rnd(&seed) % (unsigned)o.n);
        if (op < 30) {
            if (o.n < NODES) {
                bool was = cancel_token_is_cancelled(o.node[k]);
                cancel_token_t *c = cancel_token_child(o.node[k]);
                if (c && was && !cancel_token_is_cancelled(c))
                    VIOLATION(); /* born under a cancelled parent: born cancelled */
                if (c)
                    o.node[o.n++] = c;
            }
        } else if (op < 45) {
            if (k > 0) { /* release a node: its children keep it structurally */
                for (int r = 0; r < CBS; r++)
                    if (o.armed_on[r] == o.node[k]) {
                        rec_settle(&o.recs[r]);
                        o.armed_on[r] = NULL;
                    }
                cancel_token_unref(o.node[k]);
                o.node[k] = o.node[--o.n];
            }
        } else if (op < 70) {
            int r = (int)(rnd(&seed) % CBS);
            rec_settle(&o.recs[r]);
            atomic_store(&o.recs[r].runs, 0);
            int rc = cancel_callback_add(&o.recs[r].cb, o.node[k], rec_fn, &o.recs[r]);
            if (rc < 0 || (rc == 1 && atomic_load(&o.recs[r].runs) != 1))
                VIOLATION();
            o.recs[r].armed = true;
            o.armed_on[r] = o.node[k];
            atomic_fetch_add(&cb_armed, 1);
        } else if (op < 80) {
            int r = (int)(rnd(&seed) % CBS);
            rec_settle(&o.recs[r]);
            o.armed_on[r] = NULL;
        } else if (op < 90) {
            publish(&seed, o.node[k]);
        } else if (op < 97) {
            /* Cancel a node (the root now and then): when ours made the
             * transition, its whole subtree reads cancelled. */
            if (op < 95 && k == 0)
                continue;
            if (cancel_token_cancel(o.node[k], (int)(rnd(&seed) % 3)) &&
                !tu_subtree_cancelled(o.node[k]))
                VIOLATION();
        } else {
            /* The subtree's root: after our cancel returns true, every
             * callback armed anywhere below it has run. */
            if (cancel_token_cancel(o.node[0], ECANCELED)) {
                if (!tu_subtree_cancelled(o.node[0]))
                    VIOLATION();
                for (int r = 0; r < CBS; r++)
                    if (o.recs[r].armed && atomic_load(&o.recs[r].runs) != 1)
                        VIOLATION();
            }
            owned_reset(&o);
        }
        if (cancel_token_is_cancelled(o.node[0]))
            owned_reset(&o); /* a chaos thread got the root */
        atomic_fetch_add_explicit(&ops, 1, memory_order_relaxed);
    }
    for (int r = 0; r < CBS; r++)
        rec_settle(&o.recs[r]);
    for (int k = o.n - 1; k >= 0; k--)
        cancel_token_unref(o.node[k]);
    return NULL;
}

static void *chaos(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg * 3266489917u + 3;
    struct rec r;
    memset(&r, 0, sizeof r);
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        int i = (int)(rnd(&seed) % SHARED);
        pthread_mutex_lock(&shared_slot[i].mu);
        cancel_token_t *t = shared_slot[i].t;
        shared_slot[i].t = NULL; /* ours now: released below */
        pthread_mutex_unlock(&shared_slot[i].mu);
        if (!t) {
            sched_yield(); /* nothing published there yet */
            continue;
        }
        {
            unsigned op = rnd(&seed) % 100;
            if (op < 60) {
                if (cancel_token_cancel(t, EPIPE) && !tu_subtree_cancelled(t))
                    VIOLATION();
            } else if (op < 80) {
                rec_settle(&r);
                atomic_store(&r.runs, 0);
                if (cancel_callback_add(&r.cb, t, rec_fn, &r) < 0)
                    VIOLATION();
                r.armed = true;
                atomic_fetch_add(&cb_armed, 1);
                rec_settle(&r); /* before the release: T may go */
            }
            cancel_token_unref(t);
        }
        atomic_fetch_add_explicit(&ops, 1, memory_order_relaxed);
    }
    rec_settle(&r);
    return NULL;
}

static bool subtrees_mode(double seconds)
{
    atomic_store(&stop, false);
    long ops0 = ops;
    for (int i = 0; i < SHARED; i++)
        pthread_mutex_init(&shared_slot[i].mu, NULL);
    top = cancel_token_new();
    pthread_t th[OWNERS + CHAOS];
    int64_t t0 = tu_now_ns_();
    for (int i = 0; i < OWNERS + CHAOS; i++)
        if (pthread_create(&th[i], NULL, i < OWNERS ? owner : chaos,
                           (void *)(uintptr_t)(i + 1)) != 0)
            return false;
    struct timespec until = cancel__add_ns(cancel__now(), (int64_t)(seconds * 1e9));
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) != 0)
        ;
    atomic_store(&stop, true);
    for (int i = 0; i < OWNERS + CHAOS; i++)
        pthread_join(th[i], NULL);
    double took = (double)(tu_now_ns_() - t0) / 1e9;
    for (int i = 0; i < SHARED; i++) {
        cancel_token_unref(shared_slot[i].t);
        shared_slot[i].t = NULL;
    }
    /* Every subtree was released: the shared root holds no child. */
    bool empty = top->first_child == NULL;
    cancel_token_unref(top);
    printf("stress subtrees: %.1f s, %d owners + %d chaos threads, %ld ops, %.0f ops/s, "
           "root left with %s\n", took, OWNERS, CHAOS, (long)(ops - ops0),
           (double)(ops - ops0) / took, empty ? "no child" : "CHILDREN");
    return empty;
}

static void *nothing(void *arg)
{
    return arg;
}

int main(void)
{
    const char *env = getenv("STRESS_SECONDS");
    double seconds = env ? atof(env) : 60;
    if (seconds <= 0)
        seconds = 60;
    /* STRESS_MODE: "pool" (the whole library), "subtrees", or both (the
     * default), each for half the time. */
    const char *mode = getenv("STRESS_MODE");
    bool run_pool = !mode || strcmp(mode, "subtrees") != 0;
    bool run_subtrees = !mode || strcmp(mode, "pool") != 0;
    if (run_pool && run_subtrees)
        seconds /= 2;
    signal(SIGPIPE, SIG_IGN);
    /* A first thread starts what the runtime starts lazily (ThreadSanitizer's
     * background thread), so that the baseline counts it. */
    pthread_t first;
    if (pthread_create(&first, NULL, nothing, NULL) != 0 || pthread_join(first, NULL) != 0)
        return 2;
    int fds0 = count_dir("/proc/self/fd");
    int threads0 = count_dir("/proc/self/task") + 1;
    for (int i = 0; i < SLOTS; i++)
        pthread_mutex_init(&pool[i].mu, NULL);

    bool subtrees_ok = !run_subtrees || subtrees_mode(seconds);
    if (!run_pool)
        seconds = 0;
    long ops_before_pool = ops;
    atomic_store(&stop, false);
    pthread_t th[THREADS];
    int64_t t0 = tu_now_ns_();
    for (int i = 0; i < THREADS; i++)
        if (pthread_create(&th[i], NULL, worker, (void *)(uintptr_t)(i + 1)) != 0)
            return 2;
    struct timespec until = cancel__add_ns(cancel__now(), (int64_t)(seconds * 1e9));
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) != 0)
        ;
    atomic_store(&stop, true);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    double took = (double)(tu_now_ns_() - t0) / 1e9;
    for (int i = 0; i < SLOTS; i++)
        pool_put(i, NULL);

    /* Deadline tokens that the timer still holds are released when they
     * fire; after that, only idle workers (and the timer thread) remain. */
    int fds = 0, threads = 0;
    for (int w = 0; w < 500; w++) {
        fds = count_dir("/proc/self/fd");
        threads = count_dir("/proc/self/task") + 1;
        if (fds <= fds0 && threads <= threads0 + 1 + (int)cancel__worker_idle_count() &&
            cancel__timer_pending() == 0)
            break;
        usleep(10000);
    }
    long spawned = tasks_spawned, ran = tasks_ran, joined = tasks_joined;
    long pool_ops = ops - ops_before_pool;
    printf("stress: %.1f s, %d threads, %ld ops, %.0f ops/s\n", took, THREADS, pool_ops,
           took > 0 ? (double)pool_ops / took : 0.0);
    printf("stress: callbacks armed %ld = ran once %ld + removed %ld; ran twice %ld\n",
           (long)cb_armed, (long)cb_ran, (long)cb_removed, (long)cb_ran_twice);
    printf("stress: tasks spawned %ld, ran %ld, joined %ld\n", spawned, ran, joined);
    printf("stress: bytes written %ld = read %ld + left in socket %ld\n", (long)bytes_written,
           (long)bytes_read, (long)bytes_left);
    printf("stress: fds %d (start %d), threads %d (start %d, idle workers %u, timer pending %zu)\n",
           fds, fds0, threads, threads0, cancel__worker_idle_count(), cancel__timer_pending());
    /* Each mode that ran did some work (a mode that stopped at once would
     * check nothing). */
    bool worked = (!run_pool || pool_ops > 0) && (!run_subtrees || ops > pool_ops);
    bool ok = worked && violations == 0 && cb_ran_twice == 0 && cb_armed == cb_ran + cb_removed &&
              spawned == ran && ran == joined && bytes_written == bytes_read + bytes_left &&
              fds <= fds0 && threads <= threads0 + 1 + (int)cancel__worker_idle_count() &&
              subtrees_ok;
    if (violations)
        printf("stress: %ld violations, first at line %d\n", (long)violations, first_bad_line);
    printf("stress: %s\n", ok ? "PASS" : "FAIL");
    return ok ? 0 : 1;
}

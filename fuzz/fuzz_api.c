/*
 * fuzz_api.c - a libFuzzer target that reads its input as a sequence of
 * libcancel API calls on a few tokens, callbacks and a scope, bad
 * arguments included (NULL objects, bad fds, bad flags, bad times, bad
 * signal numbers, bad stack sizes).
 *
 * Each input byte pair is one call: the first byte picks the operation,
 * the second its operands (slots, reasons, flags).  Released objects are
 * used only where the API defines the result (a callback removed twice,
 * a token's callbacks after its last reference went).  Nothing may block
 * for long: blocking calls are made only when they cannot wait (data is
 * there, the current token is cancelled, the deadline is past) or under
 * a token that times out within a millisecond.
 *
 * Invariants checked after every input (a violation aborts, which
 * libFuzzer reports as a crash): every armed callback ran at most once
 * per arm and never after a remove that returned true; every spawned task
 * ran exactly once; after the final cancel every callback still armed ran;
 * the scope joined; no descriptor is left open beyond the fixed ones.
 *
 * Two self-contained sequences (operation 39) replay, without fork, the
 * scenarios of issue 11: a spawn waiting for a slot of a limited scope
 * while another thread joins it (the spawn is valid or EINVAL, never a
 * use of the freed scope), and a callback run by the cancel of a scope's
 * token, or of its parent, that joins the scope (EDEADLK, then a plain
 * join succeeds).
 *
 * Build and run with fuzz/run.sh.
 */
#define _GNU_SOURCE 1
#include "cancel.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { NTOK = 4, NCB = 4, NTASK = 8 };

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "fuzz_api: invariant broken at line %d: %s\n", __LINE__, \
                    #cond);                                                           \
            abort();                                                                  \
        }                                                                             \
    } while (0)

struct cb_slot {
    cancel_callback_t cb;
    bool armed;         /* added (returned 0 on a live token) and not yet removed */
    bool ever_added;    /* remove is defined once add was called */
    bool self_remove;   /* fn removes its own callback */
    int token;          /* slot it was armed on */
    _Atomic int runs;   /* fn runs since the last add */
    _Atomic int self_rc;
};

static cancel_token_t *tok[NTOK];
static struct cb_slot cbs[NCB];
static cancel_scope_t *scope;
static cancel_task_t *tasks[NTASK];
static int ntasks;
static _Atomic int task_runs;
static int spawned;
static bool scope_joining;    /* a join_until timed out: spawn is then EINVAL */
static bool scope_has_parent; /* join's ETIMEDOUT may then be the parent's reason */
static int pipefd[2] = { -1, -1 };
static size_t in_pipe;
static int devnull = -1;
static int fds_at_start;

static int count_fds(void)
{
    int n = 0;
    for (int fd = 0; fd < 1024; fd++)
        if (fcntl(fd, F_GETFD) >= 0)
            n++;
    return n;
}

static void cb_fn(void *arg, int reason)
{
    struct cb_slot *c = arg;
    CHECK(reason > 0);
    int runs = atomic_fetch_add(&c->runs, 1) + 1;
    CHECK(runs == 1);
    if (c->self_remove)
        atomic_store(&c->self_rc, cancel_callback_remove(&c->cb) ? 1 : 0);
}

static int task_fn(void *arg)
{
    uintptr_t code = (uintptr_t)arg;
    atomic_fetch_add(&task_runs, 1);
    if (code & 0x10) {
        /* Waits for its token for at most 1 ms; cancelled tasks return at once. */
        cancel_sleep(1000000);
    }
    if (code & 0x20)
        return cancel_check();
    return (int)(code & 0x3) == 3 ? EIO : 0;
}

static struct timespec in_ns(int64_t ns)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ns / 1000000000);
    ts.tv_nsec += (long)(ns % 1000000000);
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    } else if (ts.tv_nsec < 0) {
        ts.tv_sec--;
        ts.tv_nsec += 1000000000;
    }
    return ts;
}

static void set_token(int i, cancel_token_t *t)
{
    cancel_token_unref(tok[i]);
    tok[i] = t;
}

static cancel_token_t *pick(uint8_t b)
{
    /* One value in five is NULL: "never cancelled" wherever read. */
    unsigned k = b % (NTOK + 1);
    return k == NTOK ? NULL : tok[k];
}

static void scope_join(void)
{
    if (!scope)
        return;
    void *value = NULL;
    int rc = cancel_scope_join(scope, &value);
    CHECK(rc >= 0);
    scope = NULL;
    ntasks = 0;
    CHECK(atomic_load(&task_runs) == spawned);
}

/* ---- operation 39: the fork-free sequences of issue 11 ---- */

static _Atomic int seq_runs;
static sem_t seq_gate;          /* the slot holder waits on it */

static int seq_task(void *arg)
{
    atomic_fetch_add(&seq_runs, 1);
    if ((uintptr_t)arg & 1)
        sem_wait(&seq_gate); /* holds the slot until released */
    return 0;
}

struct seq_spawner {
    cancel_scope_t *s;
    _Atomic pid_t tid;
    int rc;
};

static void *seq_spawner_main(void *p)
{
    struct seq_spawner *sp = p;
    atomic_store(&sp->tid, (pid_t)syscall(SYS_gettid));
    sp->rc = cancel_scope_spawn(sp->s, seq_task, NULL, NULL);
    return NULL;
}

/* True once thread TID sleeps in the kernel (at most 1 s). */
static bool seq_sleeping(pid_t tid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
    for (int k = 0; k < 100000; k++) {
        FILE *f = fopen(path, "r");
        if (!f)
            return false;
        char buf[256];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        const char *paren = strrchr(buf, ')');
        if (paren && paren[1] == ' ' && paren[2] == 'S')
            return true;
        sched_yield();
    }
    return false;
}

/* A scope of limit 1, a task holding the slot, a thread waiting in spawn
 * for it (asleep there, so its spawn began before the join), then a join
 * from this thread while the slot frees: the waiting spawn is valid
 * (0, or ECANCELED after a cancel) and join waits for it. */
static void seq_limit_spawn_join(uint8_t a)
{
    cancel_scope_t *s = cancel_scope_open(0);
    if (!s)
        return;
    atomic_store(&seq_runs, 0);
    sem_init(&seq_gate, 0, 0);
    CHECK(cancel_scope_set_limit(s, 1) == 0);
    int first = cancel_scope_spawn(s, seq_task, (void *)(uintptr_t)1, NULL);
    CHECK(first == 0 || first == EAGAIN);
    struct seq_spawner sp = { .s = s, .rc = -1 };
    atomic_init(&sp.tid, 0);
    pthread_t th;
    bool threaded = first == 0 && pthread_create(&th, NULL, seq_spawner_main, &sp) == 0;
    bool waiting = false;
    if (threaded) {
        while (atomic_load(&sp.tid) == 0)
            sched_yield();
        waiting = seq_sleeping(atomic_load(&sp.tid));
        if (!waiting) {
            /* Not seen waiting: let it finish before the join. */
            sem_post(&seq_gate);
            pthread_join(th, NULL);
            threaded = false;
            CHECK(sp.rc == 0 || sp.rc == EAGAIN);
        }
    }
    if (a & 8)
        cancel_scope_cancel(s);
    if (first == 0 && (waiting || !threaded))
        sem_post(&seq_gate); /* frees the slot as the join begins */
    for (int k = 0; k < (a & 7); k++)
        sched_yield();
    int rc = cancel_scope_join(s, NULL);
    CHECK(rc >= 0);
    int expect = first == 0 ? 1 : 0;
    if (threaded) {
        pthread_join(th, NULL);
        CHECK(sp.rc == 0 || sp.rc == ECANCELED || sp.rc == EAGAIN);
    }
    if (sp.rc == 0)
        expect++;
    sem_destroy(&seq_gate);
    CHECK(atomic_load(&seq_runs) == expect);
}

static int seq_blocked_read(void *arg)
{
    (void)arg;
    atomic_fetch_add(&seq_runs, 1);
    char b;
    ssize_t r = cancel_read(pipefd[0], &b, 1);
    CHECK(r == -1 && (errno == ECANCELED || errno == ETIMEDOUT));
    return 0;
}

struct seq_joiner {
    cancel_scope_t *s;
    _Atomic int rc;
};

static void seq_join_cb(void *arg, int reason)
{
    (void)reason;
    struct seq_joiner *j = arg;
    atomic_store(&j->rc, cancel_scope_join(j->s, NULL));
}

/* A callback on the scope's token (or on its parent) joins the scope while
 * a task is blocked in a wrapped call: EDEADLK, not a hang. */
static void seq_callback_joins(uint8_t a)
{
    if (in_pipe > 0)
        return;   /* the task must block */
    bool on_parent = a & 0x10;
    cancel_token_t *parent = on_parent ? cancel_token_new() : NULL;
    if (on_parent && !parent)
        return;
    cancel_scope_t *s = on_parent ? cancel_scope_open_in(parent, 0) : cancel_scope_open(0);
    if (!s) {
        cancel_token_unref(parent);
        return;
    }
    atomic_store(&seq_runs, 0);
    int spawned_here = cancel_scope_spawn(s, seq_blocked_read, NULL, NULL) == 0;
    if (!spawned_here) {
        CHECK(cancel_scope_join(s, NULL) >= 0);
        cancel_token_unref(parent);
        return;
    }
    struct seq_joiner j = { .s = s, .rc = -1 };
    cancel_callback_t cb;
    CHECK(cancel_callback_add(&cb, on_parent ? parent : cancel_scope_token(s),
                              seq_join_cb, &j) == 0);
    if (on_parent)
        cancel_token_cancel(parent, ECANCELED);
    else
        cancel_scope_cancel(s);
    CHECK(atomic_load(&j.rc) == EDEADLK);
    cancel_callback_remove(&cb);
    CHECK(cancel_scope_join(s, NULL) >= 0);
    CHECK(atomic_load(&seq_runs) == spawned_here);
    cancel_token_unref(parent);
}

/* The two sequences need scope.c's fixes for issue 11 (bugs 1 and 6: a
 * spawn waiting for a slot during a join, a callback that joins), which
 * came with cancel_scope_try_spawn.  In a tree without them this weak
 * reference is NULL and the sequences are skipped, so that replaying the
 * corpus there does not hang. */
extern const char scope_fixes_probe __asm__("cancel_scope_try_spawn") __attribute__((weak));

static bool scope_fixes(void)
{
    return &scope_fixes_probe != NULL;
}

static void op(uint8_t code, uint8_t a)
{
    int i = a % NTOK;
    int c = (a >> 2) % NCB;
    switch (code % 40) {
    case 0:
        set_token(i, cancel_token_new());
        break;
    case 1:
        set_token(i, cancel_token_child(pick(a >> 3)));
        break;
    case 2: {
        int64_t ns = (a & 0x80) ? -(int64_t)(a & 7) : (int64_t)(a & 0x7) * 100000;
        set_token(i, cancel_token_with_timeout(pick(a >> 3), ns));
        break;
    }
    case 3: {
        struct timespec at = in_ns((int64_t)(a & 0x7) * 200000 - 400000);
        if (a & 0x80)
            at.tv_nsec = 1000000000 + (a & 0x40); /* out of range: EINVAL */
        errno = 0;
        cancel_token_t *t = cancel_token_with_deadline(pick(a >> 3), (a & 0x20) ? NULL : &at);
        if ((a & 0xa0) != 0)
            CHECK(t == NULL && errno == EINVAL);
        set_token(i, t);
        break;
    }
    case 4: {
        cancel_token_t *srcs[3] = { pick(a), pick(a >> 2), pick(a >> 4) };
        size_t n = (size_t)(a >> 6);
        errno = 0;
        cancel_token_t *t = cancel_token_any((a & 0x20) && n ? NULL : srcs, n);
        if ((a & 0x20) && n)
            CHECK(t == NULL && errno == EINVAL);
        set_token(i, t);
        break;
    }
    case 5:
        CHECK(cancel_token_ref(tok[i]) == tok[i]);
        cancel_token_unref(tok[i]);
        break;
    case 6:
        set_token(i, NULL);
        break;
    case 7: {
        bool was = cancel_token_is_cancelled(tok[i]);
        bool won = cancel_token_cancel(tok[i], (int)(int8_t)a >> 3);
        if (was || !tok[i])
            CHECK(!won);
        if (tok[i]) {
            CHECK(cancel_token_is_cancelled(tok[i]));
            CHECK(cancel_token_reason(tok[i]) > 0);
        }
        break;
    }
    case 8:
        CANCEL_TOKEN_CANCEL(pick(a), a >> 4);
        break;
    case 9: {
        pthread_t th;
        const char *file = NULL;
        int line = 0;
        int rc = cancel_token_cancelled_from(pick(a), (a & 8) ? &th : NULL,
                                             (a & 16) ? &file : NULL, (a & 32) ? &line : NULL);
        if (!pick(a))
            CHECK(rc == EINVAL);
        else if (!cancel_token_is_cancelled(pick(a)))
            CHECK(rc == ESRCH);
        else
            CHECK(rc == 0 || rc == ESRCH);
        break;
    }
    case 10: {
        cancel_token_t *t = pick(a);
        CHECK(cancel_token_is_cancelled(t) == (cancel_token_reason(t) != 0));
        struct timespec at;
        bool has = cancel_token_deadline(t, (a & 8) ? &at : &at);
        if (!t)
            CHECK(!has);
        break;
    }
    case 11: {
        /* A deadline already past, or a cancelled token: never blocks. */
        struct timespec past = in_ns(-1000);
        struct timespec bad = { 0, -1 };
        int rc = cancel_token_wait(pick(a), (a & 0x80) ? &bad : &past);
        if (a & 0x80)
            CHECK(rc == EINVAL);
        else
            CHECK(rc == 0 || rc == ETIMEDOUT || rc == ECANCELED);
        break;
    }
    case 12: {
        errno = 0;
        int fd = cancel_token_fd(pick(a));
        if (!pick(a)) {
            CHECK(fd == -1 && errno == EINVAL);
        } else if (fd >= 0) {
            struct pollfd p = { .fd = fd, .events = POLLIN, .revents = 0 };
            int r = poll(&p, 1, 0);
            CHECK(r >= 0);
            /* Readable exactly when cancelled (once the flag is visible). */
            if (r == 1)
                CHECK(cancel_token_is_cancelled(pick(a)));
        }
        break;
    }
    case 13: {
        static const int signos[] = { 0, -1, SIGKILL, SIGSTOP, 65, 1000, SIGUSR2 };
        int s = signos[(a >> 2) % 7];
        int rc = cancel_token_cancel_on_signal(pick(a), s);
        if (!pick(a) || s != SIGUSR2)
            CHECK(rc == EINVAL);
        else
            CHECK(rc == 0 || rc == ENOMEM);
        break;
    }
    case 14: {
        struct cb_slot *cb = &cbs[c];
        if (cb->armed)
            break; /* re-adding armed storage is undefined */
        int ti = a % (NTOK + 1);
        cb->self_remove = a & 0x80;
        cb->ever_added = true;
        cb->token = ti;
        atomic_store(&cb->runs, 0);
        atomic_store(&cb->self_rc, -1);
        int rc = cancel_callback_add(&cb->cb, ti == NTOK ? NULL : tok[ti], cb_fn, cb);
        if (ti == NTOK || !tok[ti]) {
            CHECK(rc == 0 && atomic_load(&cb->runs) == 0);
        } else if (rc == 1) {
            CHECK(atomic_load(&cb->runs) == 1);
            if (cb->self_remove)
                CHECK(atomic_load(&cb->self_rc) == 0); /* from inside fn: false */
        } else {
            CHECK(rc == 0);
        }
        cb->armed = true;
        break;
    }
    case 15: {
        struct cb_slot *cb = &cbs[c];
        if (!cb->ever_added)
            break;
        bool removed = cancel_callback_remove(&cb->cb);
        int runs = atomic_load(&cb->runs);
        CHECK(runs <= 1);
        if (removed)
            CHECK(runs == 0);
        else if (cb->armed)
            CHECK(runs == 1); /* false: fn ran, and has finished */
        cb->armed = false;
        break;
    }
    case 16: {
        /* Bad callback arguments: -1 and EINVAL, nothing armed. */
        if (cbs[c].armed && !(a & 1))
            break;
        errno = 0;
        int rc = cancel_callback_add((a & 1) ? NULL : &cbs[c].cb, pick(a >> 1),
                                     (a & 1) ? cb_fn : NULL, &cbs[c]);
        CHECK(rc == -1 && errno == EINVAL);
        break;
    }
    case 17: {
        /* Enter a token around a check and a wrapped call that cannot block. */
        cancel_token_t *t = pick(a);
        cancel_token_t *prev = cancel_enter(t);
        CHECK(cancel_current() == t);
        int rc = cancel_check();
        if (rc != 0)
            CHECK(rc == (cancel_token_reason(t) == ETIMEDOUT ? ETIMEDOUT : ECANCELED));
        if (a & 0x80) {
            cancel_shield_begin();
            CHECK(cancel_current() == NULL && cancel_check() == 0);
            cancel_shield_end();
        }
        char buf[8];
        ssize_t r;
        if (in_pipe > 0 || rc != 0) {
            r = cancel_read(pipefd[0], buf, sizeof buf);
            if (r > 0)
                in_pipe -= (size_t)r;
            CHECK(r > 0 || (r < 0 && (errno == ECANCELED || errno == ETIMEDOUT)));
        }
        cancel_leave(prev);
        CHECK(cancel_current() == NULL);
        break;
    }
    case 18: {
        char buf[16] = { 0 };
        if (in_pipe < 4096) {
            ssize_t r = cancel_write(pipefd[1], buf, (size_t)(a & 15) + 1);
            CHECK(r > 0);
            in_pipe += (size_t)r;
        }
        break;
    }
    case 19: {
        /* Bad descriptors: EBADF, never a hang, never a crash. */
        static const int bad[] = { -1, -2, 100000, INT32_MAX };
        int fd = bad[a & 3];
        char buf[4] = { 0 };
        errno = 0;
        switch ((a >> 2) % 8) {
        case 0: CHECK(cancel_read(fd, buf, sizeof buf) == -1 && errno == EBADF); break;
        case 1: CHECK(cancel_write(fd, buf, sizeof buf) == -1 && errno == EBADF); break;
        case 2: CHECK(cancel_recv(fd, buf, sizeof buf, 0) == -1 && errno == EBADF); break;
        case 3: CHECK(cancel_send(fd, buf, sizeof buf, 0) == -1 && errno == EBADF); break;
        case 4: CHECK(cancel_accept(fd, NULL, NULL, 0) == -1 && errno == EBADF); break;
        case 5: CHECK(cancel_pread(fd, buf, sizeof buf, 0) == -1 && errno == EBADF); break;
        case 6: {
            struct epoll_event ev;
            CHECK(cancel_epoll_wait(fd, &ev, 1, 0) == -1 && errno == EBADF);
            break;
        }
        default: {
            size_t done = 7;
            CHECK(cancel_read_full(fd, buf, sizeof buf, &done) == -1 && errno == EBADF);
            CHECK(done == 0);
            break;
        }
        }
        break;
    }
    case 20: {
        /* Bad counts and flags on a valid descriptor. */
        struct iovec iov = { .iov_base = NULL, .iov_len = 0 };
        errno = 0;
        if (a & 1)
            CHECK(cancel_readv(pipefd[0], &iov, -1) == -1 && errno == EINVAL);
        else
            CHECK(cancel_writev(devnull, &iov, (a & 2) ? 0 : 1) == 0);
        break;
    }
    case 21: {
        struct pollfd p = { .fd = (a & 1) ? -1 : pipefd[1], .events = POLLOUT, .revents = 0 };
        int r = cancel_poll((a & 2) ? NULL : &p, (a & 2) ? 0 : 1, 0);
        CHECK(r >= 0);
        break;
    }
    case 22: {
        struct timespec bad = { 0, (a & 1) ? -1 : 1000000000 };
        errno = 0;
        CHECK(cancel_sleep_until((a & 2) ? NULL : &bad) == -1 && errno == EINVAL);
        CHECK(cancel_sleep(-(int64_t)a) == 0);
        break;
    }
    case 23: {
        int flags = (a & 0x80) ? (int)(a & 0x7f) : (int)(a & 3);
        if (scope)
            break;
        errno = 0;
        cancel_scope_t *s = (a & 0x40) ? cancel_scope_open(flags)
                                       : cancel_scope_open_in(pick(a >> 2), flags);
        if (flags == 3 || (flags & ~3))
            CHECK(s == NULL && errno == EINVAL);
        scope = s;
        scope_joining = false;
        scope_has_parent = (a & 0x40) ? false : pick(a >> 2) != NULL;
        spawned = 0;
        atomic_store(&task_runs, 0);
        break;
    }
    case 24: {
        if (!scope || ntasks >= NTASK) {
            CHECK(cancel_scope_spawn(NULL, task_fn, NULL, NULL) == EINVAL);
            break;
        }
        cancel_task_t *task = NULL;
        int rc = (a & 1) ? cancel_scope_spawn_named(scope, (a & 2) ? "fuzz-task-with-a-name-longer-than-31-bytes" : NULL,
                                                   task_fn, (void *)(uintptr_t)a, &task)
                         : cancel_scope_spawn(scope, task_fn, (void *)(uintptr_t)a,
                                              (a & 4) ? &task : NULL);
        if (scope_joining)
            CHECK(rc == EINVAL || rc == ECANCELED);
        else
            CHECK(rc == 0 || rc == ECANCELED || rc == EAGAIN || rc == ENOMEM);
        if (rc == 0) {
            spawned++;
            if (task)
                tasks[ntasks++] = task;
        }
        break;
    }
    case 25:
        CHECK(cancel_scope_spawn(scope, NULL, NULL, NULL) == EINVAL);
        break;
    case 26:
        CHECK(cancel_scope_set_limit(scope, a & 3) == (scope ? 0 : EINVAL));
        break;
    case 27: {
        static const size_t sizes[] = { 0, 1, 4096, 1 << 20, (size_t)-1 };
        size_t sz = sizes[a % 5];
        int rc = cancel_scope_set_stack_size(scope, sz);
        if (!scope || sz == 1 || sz == 4096 || sz == (size_t)-1)
            CHECK(rc == EINVAL);
        else
            CHECK(rc == 0);
        rc = cancel_set_default_stack_size(sizes[(a >> 3) % 5]);
        CHECK(cancel_default_stack_size() >= 16384);
        CHECK(cancel_set_default_stack_size(0) == 0);
        break;
    }
    case 28:
        cancel_scope_cancel(scope);
        if (scope)
            CHECK(cancel_token_is_cancelled(cancel_scope_token(scope)));
        break;
    case 29: {
        int rc = cancel_scope_terminate(scope, (void *)(uintptr_t)a);
        if (!scope)
            CHECK(rc == EINVAL);
        else
            CHECK(rc == 0 || rc == EALREADY);
        break;
    }
    case 30:
        CHECK(cancel_scope_token(NULL) == NULL);
        break;
    case 31: {
        struct timespec at = in_ns(-1);
        struct timespec bad = { 0, -5 };
        if (scope && scope_has_parent && !(a & 1))
            break;
        int rc = cancel_scope_join_until(scope, (a & 1) ? &bad : &at, NULL);
        if (!scope || (a & 1)) {
            CHECK(rc == EINVAL);
        } else {
            CHECK(rc >= 0);
            scope_joining = true;
            if (rc != ETIMEDOUT) {
                scope = NULL; /* joined and freed */
                ntasks = 0;
                CHECK(atomic_load(&task_runs) == spawned);
            }
        }
        break;
    }
    case 32:
        scope_join();
        break;
    case 33: {
        int result = -1;
        cancel_task_t *t = ntasks ? tasks[a % ntasks] : NULL;
        int rc = cancel_task_join(t, (a & 0x80) ? NULL : &result);
        CHECK(rc == (t ? 0 : EINVAL));
        break;
    }
    case 34:
        cancel_task_cancel(ntasks ? tasks[a % ntasks] : NULL);
        break;
    case 35: {
        cancel_task_t *t = ntasks ? tasks[a % ntasks] : NULL;
        CHECK(cancel_task_set_name(t, (a & 1) ? NULL : "renamed") == (t ? 0 : EINVAL));
        if (t)
            CHECK(cancel_task_token(t) != NULL);
        else
            CHECK(cancel_task_token(NULL) == NULL);
        break;
    }
    case 36: {
        /* Not a closed descriptor: glibc's dprintf leaks 8 KiB per call on
         * one (see check_badinput's known bugs), which LeakSanitizer flags. */
        int fd = (a & 1) ? -1 : devnull;
        int rc = cancel_scope_dump(scope, fd);
        if (!scope || fd == -1)
            CHECK(rc == EINVAL);
        else
            CHECK(rc == 0);
        break;
    }
    case 37: {
        /* A wrapped read that must block, cut short by a 0.1 ms timeout. */
        if (in_pipe > 0)
            break;
        cancel_token_t *t = cancel_token_with_timeout(pick(a), 100000);
        if (!t)
            break;
        cancel_token_t *prev = cancel_enter(t);
        char buf[4];
        errno = 0;
        ssize_t r = cancel_read(pipefd[0], buf, sizeof buf);
        CHECK(r == -1 && (errno == ETIMEDOUT || errno == ECANCELED));
        cancel_leave(prev);
        cancel_token_unref(t);
        break;
    }
    case 38: {
        cancel_token_t *t = cancel_token_with_timeout(NULL, 50000);
        if (!t)
            break;
        CHECK(cancel_token_wait(t, NULL) == 0);
        CHECK(cancel_token_reason(t) == ETIMEDOUT);
        cancel_token_unref(t);
        break;
    }
    default:
        if (a % 4 == 1 && scope_fixes()) {
            seq_limit_spawn_join(a);
            break;
        }
        if (a % 4 == 2 && scope_fixes()) {
            seq_callback_joins(a);
            break;
        }
        cancel_token_unref(NULL);
        CHECK(!cancel_token_cancel(NULL, a));
        CHECK(cancel_token_reason(NULL) == 0);
        CHECK(cancel_token_ref(NULL) == NULL);
        break;
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    CHECK(pipe2(pipefd, O_CLOEXEC) == 0);
    devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    CHECK(devnull >= 0);
    fds_at_start = count_fds();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 512)
        return -1; /* keep each input short: the state space is small */
    for (size_t k = 0; k + 1 < size; k += 2)
        op(data[k], data[k + 1]);

    /* Teardown: join the scope, cancel everything, check exactly-once. */
    scope_join();
    for (int i = 0; i < NTOK; i++)
        cancel_token_cancel(tok[i], 0);
    for (int c = 0; c < NCB; c++) {
        struct cb_slot *cb = &cbs[c];
        if (!cb->armed)
            continue;
        int runs = atomic_load(&cb->runs);
        CHECK(runs <= 1);
        bool removed = cancel_callback_remove(&cb->cb);
        CHECK(atomic_load(&cb->runs) == (removed ? 0 : 1));
        cb->armed = false;
        cb->ever_added = false;
    }
    for (int i = 0; i < NTOK; i++)
        set_token(i, NULL);
    /* Drain the pipe so that the next input starts empty. */
    char buf[256];
    while (in_pipe > 0) {
        ssize_t r = read(pipefd[0], buf, in_pipe < sizeof buf ? in_pipe : sizeof buf);
        CHECK(r > 0);
        in_pipe -= (size_t)r;
    }
    /* Token fds are closed with their tokens; the signal pipe and the
     * wake fds of this thread and of cached workers may stay: a leak per
     * input would pass any fixed bound within a few hundred inputs. */
    CHECK(count_fds() <= fds_at_start + 200);
    return 0;
}

/*
 * check_fault.c - fault injection: every allocation (malloc, calloc,
 * realloc), wake-fd creation (eventfd, pipe2) and thread creation
 * (pthread_create) that the library makes in a scenario is made to fail,
 * one at a time, and the scenario must cope.
 *
 * How.  The program is linked with -Wl,--wrap=malloc,... (see
 * Makefile.am): the linker sends the library objects' (and this
 * file's) references to __wrap_malloc etc. below, which count the calls of
 * the calling thread and fail the N-th one; __real_malloc is the real
 * thing (glibc's, or the sanitizer's interceptor).  Check is a shared
 * library and is not affected.
 *
 * The walk.  For N = 1, 2, ... a fresh process (fork: no timer thread, no
 * worker, no wake fd yet, so the calls of every run are the same) runs the
 * scenario with the N-th call of the scenario thread made to fail.  At each
 * step the scenario checks that a call that met the failure returns the
 * documented error and left its arguments unchanged (the parent is not
 * cancelled and has no new child, no callback was left armed), then
 * retries the call, which must now succeed, and goes on to the end, where
 * it checks that everything still works (cancel reaches every token, each
 * callback ran once, tasks joined).  The walk ends at the first N that
 * the scenario never reaches.  After each run the library's live
 * allocations, open descriptors and threads must equal those of the run
 * without a failure, and the process exits through exit(), so that
 * LeakSanitizer (AddressSanitizer builds) checks for leaks too.
 *
 * The totals (scenarios, injection points by kind) are printed at the end.
 */
#include "internal.h"
#include "testutil.h"

#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>

/* ------------------------------------------------------------ the hooks */

enum { FI_NONE, FI_ALLOC, FI_FD, FI_THREAD, FI_KINDS };
static const char *const kind_name[FI_KINDS] = { "none", "alloc", "fd", "thread" };

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
int __real_eventfd(unsigned int initval, int flags);
int __real_pipe2(int fds[2], int flags);
int __real_pthread_create(pthread_t *th, const pthread_attr_t *attr,
                          void *(*fn)(void *), void *arg);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t k, size_t n);
void *__wrap_realloc(void *p, size_t n);
void __wrap_free(void *p);
int __wrap_eventfd(unsigned int initval, int flags);
int __wrap_pipe2(int fds[2], int flags);
int __wrap_pthread_create(pthread_t *th, const pthread_attr_t *attr,
                          void *(*fn)(void *), void *arg);

/* Per thread: only the scenario thread's calls are counted and failed, so
 * that the library's own threads never make a run differ from the next. */
static __thread long fi_countdown;   /* > 0: the call that brings it to 0 fails */
static __thread long fi_calls;       /* calls seen since fi_arm */
static __thread int fi_fired;        /* kind of the call that failed, FI_NONE */
static __thread bool fi_on;
/* All threads: allocations made through the hooks and not freed yet. */
static _Atomic long fi_live;

static bool fi_fail(int kind)
{
    if (!fi_on)
        return false;
    fi_calls++;
    if (fi_countdown > 0 && --fi_countdown == 0) {
        fi_fired = kind;
        return true;
    }
    return false;
}

static void fi_arm(long n)
{
    fi_countdown = n;
    fi_calls = 0;
    fi_fired = FI_NONE;
    fi_on = true;
}

static long fi_disarm(void)
{
    fi_on = false;
    fi_countdown = 0;
    return fi_calls;
}

/* The kind of failure injected since the last call (FI_NONE: none). */
static int fi_take(void)
{
    int k = fi_fired;
    fi_fired = FI_NONE;
    return k;
}

void *__wrap_malloc(size_t n)
{
    if (fi_fail(FI_ALLOC)) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = __real_malloc(n);
    if (p)
        atomic_fetch_add_explicit(&fi_live, 1, memory_order_relaxed);
    return p;
}

void *__wrap_calloc(size_t k, size_t n)
{
    if (fi_fail(FI_ALLOC)) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = __real_calloc(k, n);
    if (p)
        atomic_fetch_add_explicit(&fi_live, 1, memory_order_relaxed);
    return p;
}

void *__wrap_realloc(void *p, size_t n)
{
    if (fi_fail(FI_ALLOC)) {
        errno = ENOMEM;
        return NULL;
    }
    void *q = __real_realloc(p, n);
    if (!p && q)
        atomic_fetch_add_explicit(&fi_live, 1, memory_order_relaxed);
    else if (p && !q && n == 0)
        atomic_fetch_sub_explicit(&fi_live, 1, memory_order_relaxed);
    return q;
}

void __wrap_free(void *p)
{
    if (p)
        atomic_fetch_sub_explicit(&fi_live, 1, memory_order_relaxed);
    __real_free(p);
}

int __wrap_eventfd(unsigned int initval, int flags)
{
    if (fi_fail(FI_FD)) {
        errno = EMFILE;
        return -1;
    }
    return __real_eventfd(initval, flags);
}

int __wrap_pipe2(int fds[2], int flags)
{
    if (fi_fail(FI_FD)) {
        errno = EMFILE;
        return -1;
    }
    return __real_pipe2(fds, flags);
}

int __wrap_pthread_create(pthread_t *th, const pthread_attr_t *attr,
                          void *(*fn)(void *), void *arg)
{
    if (fi_fail(FI_THREAD))
        return EAGAIN;
    return __real_pthread_create(th, attr, fn, arg);
}

/* ------------------------------------------- one run in its own process */

/* What a run reports to the test process (a shared mapping). */
struct run_report {
    char msg[512];      /* the first broken expectation, or "" */
    int fired;          /* kind of the injected failure, FI_NONE: not reached */
    long calls;         /* hooked calls the scenario made */
    long live;          /* library allocations alive at the end */
    int fds, threads;   /* at the end */
};
static struct run_report *report;

/* Totals over the forked test processes, printed by main. */
struct totals {
    _Atomic long scenarios;
    _Atomic long points[FI_KINDS];
};
static struct totals *totals;

__attribute__((format(printf, 3, 4)))
static void run_fail(int line, const char *what, const char *fmt, ...)
{
    if (report->msg[0] == 0) {
        int k = snprintf(report->msg, sizeof report->msg, "line %d: %s:", line, what);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(report->msg + k, sizeof report->msg - (size_t)k, fmt, ap);
        va_end(ap);
    }
    fi_disarm();
    _exit(1);
}

/* Open descriptors below 10000: valgrind keeps its own at the top of the
 * range and opens some of them lazily. */
static int count_low_fds(void)
{
    int n = 0;
    for (int fd = 0; fd < 10000; fd++)
        if (fcntl(fd, F_GETFD) >= 0)
            n++;
    return n;
}

/* Not ck_assert: the run is a grandchild of Check's runner. */
#define FCHECK(cond, ...) \
    do { if (!(cond)) run_fail(__LINE__, #cond, " " __VA_ARGS__); } while (0)

/* Ran after a call that may have met the injected failure: true when it
 * did, with the error ERR seen; checks ERR is one of the documented ones. */
static bool met(int err, int e1, int e2)
{
    int k = fi_take();
    if (k == FI_NONE)
        return false;
    report->fired = k;
    FCHECK(err == e1 || err == e2, "%s failure gave error %d (%s), want %d or %d",
           kind_name[k], err, strerror(err), e1, e2);
    return true;
}

/* A token that nothing has touched: not cancelled, no child, no callback,
 * one reference (white-box: the test links the internal library). */
static void check_untouched(const cancel_token_t *t, unsigned refs, int line)
{
    if (cancel_token_is_cancelled(t))
        run_fail(line, "untouched", " token cancelled by a failed call");
    if (t->first_child)
        run_fail(line, "untouched", " failed call left a child linked");
    if (t->callbacks)
        run_fail(line, "untouched", " failed call left a callback armed");
    if (atomic_load(&t->refs) != refs)
        run_fail(line, "untouched", " failed call left %u references (want %u)", atomic_load(&t->refs), refs);
}
#define UNTOUCHED(t, refs) check_untouched((t), (refs), __LINE__)

static _Atomic int cb_runs[8];
static void count_cb(void *arg, int reason)
{
    (void)reason;
    atomic_fetch_add(&cb_runs[(intptr_t)arg], 1);
}

/* --------------------------------------------------------- the scenarios */

/* Creation of a token tree, callbacks, a recorded cancel. */
static void sc_token_tree(void)
{
    cancel_token_t *root;
    while (!(root = cancel_token_new()))
        FCHECK(met(errno, ENOMEM, ENOMEM), "new failed without an injected failure");
    cancel_token_t *mid;
    while (!(mid = cancel_token_child(root))) {
        FCHECK(met(errno, ENOMEM, ENOMEM), "child failed without an injected failure");
        UNTOUCHED(root, 1);
    }
    cancel_token_t *leaf;
    while (!(leaf = cancel_token_child(mid))) {
        FCHECK(met(errno, ENOMEM, ENOMEM));
        UNTOUCHED(mid, 1);
    }
    cancel_token_t *other;
    while (!(other = cancel_token_child(NULL)))
        FCHECK(met(errno, ENOMEM, ENOMEM));

    /* Callbacks never allocate: no injection point may fall in them. */
    cancel_callback_t cb[3];
    long before = fi_calls;
    FCHECK(cancel_callback_add(&cb[0], root, count_cb, (void *)0) == 0);
    FCHECK(cancel_callback_add(&cb[1], leaf, count_cb, (void *)1) == 0);
    FCHECK(cancel_callback_add(&cb[2], other, count_cb, (void *)2) == 0);
    FCHECK(cancel_callback_remove(&cb[2]));
    FCHECK(fi_calls == before, "callbacks made %ld hooked calls", fi_calls - before);

    /* Recording the origin allocates; out of memory it is skipped (ESRCH). */
    FCHECK(CANCEL_TOKEN_CANCEL(root, 42));
    bool lost = met(ENOMEM, ENOMEM, ENOMEM);
    const char *file = NULL;
    int rc = cancel_token_cancelled_from(leaf, NULL, &file, NULL);
    FCHECK(lost ? rc == ESRCH : (rc == 0 && file != NULL), "cancelled_from %d", rc);
    FCHECK(cancel_token_reason(leaf) == 42 && cancel_token_reason(mid) == 42);
    FCHECK(!cancel_token_is_cancelled(other));
    FCHECK(cb_runs[0] == 1 && cb_runs[1] == 1 && cb_runs[2] == 0);
    FCHECK(!cancel_callback_remove(&cb[0]) && !cancel_callback_remove(&cb[1]));
    cancel_token_unref(root);
    cancel_token_unref(mid);
    cancel_token_unref(leaf);
    cancel_token_unref(other);
}

/* Deadlines: the token, its ext, the timer thread, the timer heap. */
static void sc_deadlines(void)
{
    cancel_token_t *root;
    while (!(root = cancel_token_new()))
        FCHECK(met(errno, ENOMEM, ENOMEM));
    cancel_token_t *late;
    while (!(late = cancel_token_with_timeout(root, 3600 * 1000000000LL))) {
        FCHECK(met(errno, ENOMEM, EAGAIN));
        UNTOUCHED(root, 1);
        FCHECK(cancel__timer_pending() == 0, "a failed deadline stayed in the heap");
    }
    struct timespec at;
    FCHECK(cancel_token_deadline(late, &at));
    struct timespec soon_at = cancel__add_ns(cancel__now(), 1000000);
    cancel_token_t *soon;
    while (!(soon = cancel_token_with_deadline(root, &soon_at))) {
        FCHECK(met(errno, ENOMEM, EAGAIN));
        FCHECK(!cancel_token_is_cancelled(root) && !cancel_token_is_cancelled(late));
        FCHECK(cancel__timer_pending() == 1);
    }
    FCHECK(cancel_token_wait(soon, NULL) == 0);
    FCHECK(cancel_token_reason(soon) == ETIMEDOUT);
    FCHECK(!cancel_token_is_cancelled(late) && !cancel_token_is_cancelled(root));
    cancel_token_unref(soon);
    cancel_token_unref(late);
    FCHECK(cancel__timer_pending() == 0);
    cancel_token_unref(root);
}

/* Linked tokens: the sources array, the links, the ext, the token. */
static void sc_any(void)
{
    cancel_token_t *a = cancel_token_new(), *b;
    FCHECK(a || met(errno, ENOMEM, ENOMEM));
    if (!a)
        a = cancel_token_new();
    while (!(b = cancel_token_new()))
        FCHECK(met(errno, ENOMEM, ENOMEM));
    cancel_token_t *srcs[3] = { a, NULL, b };
    cancel_token_t *any;
    while (!(any = cancel_token_any(srcs, 3))) {
        FCHECK(met(errno, ENOMEM, ENOMEM));
        UNTOUCHED(a, 1);
        UNTOUCHED(b, 1);
    }
    FCHECK(!cancel_token_is_cancelled(any));
    FCHECK(cancel_token_cancel(b, 7));
    FCHECK(cancel_token_reason(any) == 7 && !cancel_token_is_cancelled(a));
    cancel_token_unref(any);
    UNTOUCHED(a, 1);
    cancel_token_unref(a);
    cancel_token_unref(b);
}

/* cancel_token_fd: the ext, the eventfd. */
static void sc_token_fd(void)
{
    cancel_token_t *t;
    while (!(t = cancel_token_new()))
        FCHECK(met(errno, ENOMEM, ENOMEM));
    int fd;
    while ((fd = cancel_token_fd(t)) < 0) {
        FCHECK(met(errno, ENOMEM, EMFILE));
        FCHECK(!cancel_token_is_cancelled(t));
    }
    FCHECK(cancel_token_fd(t) == fd, "the fd changed");
    struct pollfd p = { .fd = fd, .events = POLLIN, .revents = 0 };
    FCHECK(poll(&p, 1, 0) == 0, "readable before cancel");
    FCHECK(cancel_token_cancel(t, 0));
    FCHECK(poll(&p, 1, 0) == 1, "not readable after cancel");
    cancel_token_unref(t);
}

/* A wrapped read that must block: the wake fd (degraded mode without it),
 * and a poll set that needs the heap. */
static int rd_fds[2];
static cancel_token_t *rd_token;
static tu_latch_t rd_latch;
static void *rd_canceller(void *arg)
{
    (void)arg;
    tu_latch_wait(&rd_latch);
    cancel_token_cancel(rd_token, 0);
    return NULL;
}

static void sc_blocking_read(void)
{
    while (!(rd_token = cancel_token_new()))
        FCHECK(met(errno, ENOMEM, ENOMEM));
    cancel_token_t *prev = cancel_enter(rd_token);

    /* Nine descriptors plus the wake fd: the poll set is allocated. */
    struct pollfd many[9];
    for (int i = 0; i < 9; i++)
        many[i] = (struct pollfd){ .fd = rd_fds[1], .events = POLLOUT, .revents = 0 };
    int r;
    while ((r = cancel_poll(many, 9, 0)) < 0)
        FCHECK(met(errno, ENOMEM, ENOMEM), "poll: %s", strerror(errno));
    FCHECK(r == 9);

    /* The canceller runs outside the window of counted calls. */
    bool on = fi_on;
    fi_on = false;
    pthread_t th;
    tu_latch_init(&rd_latch);
    FCHECK(__real_pthread_create(&th, NULL, rd_canceller, NULL) == 0);
    fi_on = on;
    char c;
    tu_latch_post(&rd_latch);
    /* Without a wake fd (its creation failed) the read still ends: the
     * degraded mode polls the token's flag every 10 ms. */
    errno = 0;
    FCHECK(cancel_read(rd_fds[0], &c, 1) == -1 && errno == ECANCELED,
           "blocked read: errno %d", errno);
    met(0, 0, 0); /* the eventfd, if it failed, degraded silently */
    pthread_join(th, NULL);
    cancel_leave(prev);
    /* Nothing was consumed; the wrapper still works for the next reader. */
    FCHECK(write(rd_fds[1], "x", 1) == 1);
    FCHECK(cancel_read(rd_fds[0], &c, 1) == 1 && c == 'x');
    cancel_token_unref(rd_token);
    /* A wait after a degraded one creates the wake fd again (so the run
     * ends with the same descriptors as one without a failure). */
    cancel_token_t *t;
    /* Long enough that even a ThreadSanitizer build reaches the blocking
     * wait (and so creates the wake fd) before the deadline fires. */
    while (!(t = cancel_token_with_timeout(NULL, 100 * 1000000LL)))
        FCHECK(met(errno, ENOMEM, EAGAIN));
    prev = cancel_enter(t);
    errno = 0;
    FCHECK(cancel_read(rd_fds[0], &c, 1) == -1 && errno == ETIMEDOUT, "errno %d", errno);
    cancel_leave(prev);
    cancel_token_unref(t);
    /* Whether the first read blocked at all depends on timing (the
     * canceller may win), so the failed call may have been the only wake
     * fd creation.  Outside the counted window, a short sleep under a live
     * token always arms the wake fd: every run ends with the same fds. */
    on = fi_on;
    fi_on = false;
    cancel_token_t *live = cancel_token_new();
    prev = cancel_enter(live);
    FCHECK(cancel_sleep(1000000) == 0);
    cancel_leave(prev);
    cancel_token_unref(live);
    fi_on = on;
}

/* A scope with tasks: the scope, task handles, task tokens, workers and
 * their threads. */
static _Atomic int task_ran;
static int wait_task(void *arg)
{
    (void)arg;
    atomic_fetch_add(&task_ran, 1);
    int rc = cancel_token_wait(cancel_current(), NULL);
    return rc == 0 ? ECANCELED : rc;
}

static void sc_scope(void)
{
    cancel_token_t *parent;
    while (!(parent = cancel_token_new()))
        FCHECK(met(errno, ENOMEM, ENOMEM));
    cancel_scope_t *s;
    while (!(s = cancel_scope_open_in(parent, 0))) {
        FCHECK(met(errno, ENOMEM, ENOMEM));
        UNTOUCHED(parent, 1);
    }
    int spawned = 0;
    while (spawned < 3) {
        int rc = cancel_scope_spawn(s, wait_task, NULL, NULL);
        if (rc == 0) {
            spawned++;
            continue;
        }
        FCHECK(met(rc, ENOMEM, EAGAIN), "spawn: %d", rc);
        FCHECK(!cancel_token_is_cancelled(cancel_scope_token(s)), "a failed spawn cancelled the scope");
    }
    cancel_scope_cancel(s);
    int rc = cancel_scope_join(s, NULL);
    FCHECK(rc == 0, "join %d", rc);
    FCHECK(task_ran == 3, "%d tasks ran", task_ran);
    UNTOUCHED(parent, 1);
    cancel_token_unref(parent);
}

/* cancel_token_cancel_on_signal: the registration, the ext, the signal
 * pipe, the signal thread. */
static void sc_signal(void)
{
    cancel_token_t *t;
    while (!(t = cancel_token_new()))
        FCHECK(met(errno, ENOMEM, ENOMEM));
    int rc;
    while ((rc = cancel_token_cancel_on_signal(t, SIGUSR1)) != 0) {
        /* EMFILE and EAGAIN are not in the header's list: see the report. */
        int k = fi_take();
        FCHECK(k != FI_NONE, "cancel_on_signal %d without an injected failure", rc);
        report->fired = k;
        FCHECK(rc == (k == FI_ALLOC ? ENOMEM : k == FI_FD ? EMFILE : EAGAIN),
               "%s failure gave %d", kind_name[k], rc);
        FCHECK(!cancel_token_is_cancelled(t));
    }
    FCHECK(kill(getpid(), SIGUSR1) == 0);
    FCHECK(cancel_token_wait(t, NULL) == 0);
    cancel_token_unref(t);
}

/* Shields nested beyond the inline ones: their stack grows on the heap. */
static void sc_shields(void)
{
    cancel_token_t *t;
    while (!(t = cancel_token_new()))
        FCHECK(met(errno, ENOMEM, ENOMEM));
    FCHECK(cancel_token_cancel(t, 0));
    cancel_token_t *prev = cancel_enter(t);
    for (int i = 0; i < 40; i++) {
        cancel_shield_begin();
        met(0, 0, 0); /* a lost level still hides: checked below */
        FCHECK(cancel_current() == NULL && cancel_check() == 0);
    }
    for (int i = 0; i < 40; i++)
        cancel_shield_end();
    FCHECK(cancel_current() == t, "shields did not restore the token");
    FCHECK(cancel_check() == ECANCELED);
    cancel_leave(prev);
    cancel_token_unref(t);
}

struct scenario {
    const char *name;
    void (*run)(void);
};
static const struct scenario scenarios[] = {
    { "token_tree", sc_token_tree },  { "deadlines", sc_deadlines },
    { "any", sc_any },                { "token_fd", sc_token_fd },
    { "blocking_read", sc_blocking_read }, { "scope", sc_scope },
    { "signal", sc_signal },          { "shields", sc_shields },
};

/* Runs scenario I in a fresh process with the N-th hooked call failing
 * (0: none); fills *OUT.  Returns the run's exit status. */
static int run_once(int i, long n, struct run_report *out)
{
    memset(report, 0, sizeof *report);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* Counted from here: the parent's (and Check's) allocations differ
         * from one fork to the next. */
        atomic_store(&fi_live, 0);
        FCHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, rd_fds) == 0);
        fi_arm(n);
        scenarios[i].run();
        report->calls = fi_disarm();
        int k = fi_take(); /* fired in a step that absorbs it (best effort) */
        if (k != FI_NONE)
            report->fired = k;
        /* Let the workers park and the library's threads settle. */
        for (int w = 0; w < 200 && cancel__worker_idle_count() < 1 &&
                        scenarios[i].run == sc_scope; w++)
            usleep(1000);
        close(rd_fds[0]);
        close(rd_fds[1]);
        /* The timer thread may still hold (and then free) a token it just
         * fired: wait until the count has not moved for 20 ms (2 s cap). */
        long live = atomic_load(&fi_live);
        for (int stable = 0, w = 0; stable < 20 && w < 2000; w++) {
            usleep(1000);
            long now = atomic_load(&fi_live);
            stable = now == live ? stable + 1 : 0;
            live = now;
        }
        report->live = live;
        report->fds = count_low_fds();
        report->threads = tu_count_threads();
        exit(0); /* exit, not _exit: LeakSanitizer checks at exit */
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        ck_assert_int_eq(errno, EINTR);
    *out = *report;
    return status;
}

START_TEST(every_failing_call_of_a_scenario_is_survived)
{
    int i = _i;
    struct run_report base;
    int st = run_once(i, 0, &base);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s without failures: %s (status %#x)",
                  scenarios[i].name, base.msg, st);
    ck_assert_msg(base.calls > 0, "%s: the hooks saw no call: --wrap is not in effect",
                  scenarios[i].name);
    long points[FI_KINDS] = { 0 };
    long n;
    for (n = 1;; n++) {
        struct run_report r;
        st = run_once(i, n, &r);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                      "%s, call %ld failing: %s (status %#x%s)", scenarios[i].name, n, r.msg,
                      st, WIFEXITED(st) && WEXITSTATUS(st) == 23 ? ", LeakSanitizer" : "");
        if (r.fired == FI_NONE)
            break; /* the scenario makes fewer than N calls: done */
        points[r.fired]++;
        ck_assert_msg(r.live == base.live, "%s, call %ld failing: %ld allocations alive, %ld without failure",
                      scenarios[i].name, n, r.live, base.live);
        ck_assert_msg(r.fds == base.fds, "%s, call %ld failing: %d fds open, %d without failure",
                      scenarios[i].name, n, r.fds, base.fds);
        ck_assert_msg(r.threads == base.threads, "%s, call %ld failing: %d threads, %d without failure",
                      scenarios[i].name, n, r.threads, base.threads);
    }
    ck_assert_int_gt(n, 1);
    printf("fault: %-14s %3ld injection points (alloc %ld, fd %ld, thread %ld)\n",
           scenarios[i].name, n - 1, points[FI_ALLOC], points[FI_FD], points[FI_THREAD]);
    fflush(stdout);
    atomic_fetch_add(&totals->scenarios, 1);
    for (int k = 0; k < FI_KINDS; k++)
        atomic_fetch_add(&totals->points[k], points[k]);
}
END_TEST

START_TEST(the_hooks_see_the_library_calls)
{
    /* No ck_assert while armed: Check is linked statically (check_pic)
     * here, so its own allocations would be counted too. */
    fi_arm(0);
    cancel_token_t *t = cancel_token_new();
    long after_new = fi_calls;
    int fd = cancel_token_fd(t);
    long after_fd = fi_calls;
    fi_disarm();
    ck_assert_int_eq(after_new, 1);           /* the token */
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(after_fd - after_new, 2); /* the ext, the eventfd */
    cancel_token_unref(t);

    fi_arm(1);
    cancel_token_t *none = cancel_token_new();
    int err = errno;
    int kind = fi_take();
    fi_disarm();
    ck_assert_ptr_null(none);
    ck_assert_int_eq(err, ENOMEM);
    ck_assert_int_eq(kind, FI_ALLOC);
}
END_TEST

static Suite *fault_suite(void)
{
    Suite *s = suite_create("fault");
    TCase *tc = tcase_create("injection");
    tcase_set_timeout(tc, 4 * TU_TIMEOUT);
    tcase_add_test(tc, the_hooks_see_the_library_calls);
    tcase_add_loop_test(tc, every_failing_call_of_a_scenario_is_survived, 0,
                        (int)(sizeof scenarios / sizeof scenarios[0]));
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    cancel__token_cache_off = true; /* every token allocation is malloc's, as counted */
    report = mmap(NULL, sizeof *report, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    totals = mmap(NULL, sizeof *totals, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (report == MAP_FAILED || totals == MAP_FAILED)
        return EXIT_FAILURE;
    int rc = tu_run_suite(fault_suite());
    printf("fault injection: %ld scenarios, %ld injection points (alloc %ld, fd %ld, thread %ld)\n",
           totals->scenarios, totals->points[FI_ALLOC] + totals->points[FI_FD] +
           totals->points[FI_THREAD], totals->points[FI_ALLOC], totals->points[FI_FD],
           totals->points[FI_THREAD]);
    return rc;
}

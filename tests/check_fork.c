/*
 * check_fork.c - the library across fork() (SPEC "Fork"; issue 11).
 *
 * Every scenario forks from the test process and gives the child a
 * bounded time (CHILD_GUARD_S, scaled by CK_TIMEOUT_MULTIPLIER) to do its
 * work and exit: a child that hangs is killed and the test fails with an
 * assertion that says so, not with Check's watchdog.  Children report
 * through their exit status (0: every step held; otherwise the number of
 * the step that failed) and never call ck_assert.
 *
 * `check_fork --list-fds` is the program the exec test runs: it prints
 * each descriptor it has open with what it points at.
 */
#include "internal.h"
#include "testutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_THREAD__)
/* The children start library threads although they were forked from a
 * threaded process, which ThreadSanitizer refuses by default. */
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
    return "die_after_fork=0";
}
#endif

enum { CHILD_GUARD_S = 10 };

static int multiplier(void)
{
    const char *m = getenv("CK_TIMEOUT_MULTIPLIER");
    int n = m ? atoi(m) : 1;
    return n > 0 ? n : 1;
}

/* What became of a child. */
struct outcome {
    bool hung;          /* killed after the guard */
    int status;         /* waitpid's */
};

/*
 * Waits for child PID, which holds the write end of DONE_RD's pipe (closed
 * when it exits, whatever it does), at most the guard; kills it if it is
 * still there.
 */
static struct outcome await_child(pid_t pid, int done_rd)
{
    struct outcome o = { false, 0 };
    struct pollfd p = { .fd = done_rd, .events = POLLIN, .revents = 0 };
    int64_t until = tu_now_ns() + (int64_t)CHILD_GUARD_S * multiplier() * 1000000000LL;
    for (;;) {
        int64_t left = until - tu_now_ns();
        if (left <= 0) {
            o.hung = true;
            break;
        }
        int r = poll(&p, 1, (int)(left / 1000000) + 1);
        if (r > 0) {
            char b;
            ssize_t n = read(done_rd, &b, 1);
            if (n == 0)
                break;  /* EOF: the child is gone */
        } else if (r < 0 && errno != EINTR) {
            break;
        }
    }
    if (o.hung && getenv("CANCEL_FORK_BACKTRACE")) {
        /* make soak: say where the child hangs before it is killed. */
        char cmd[160];
        snprintf(cmd, sizeof cmd,
                 "gdb -p %d -batch -nx -ex 'thread apply all bt' 2>&1 | grep -E '^(#|Thread)' >&2",
                 (int)pid);
        if (system(cmd) != 0)
            fprintf(stderr, "fork soak: no backtrace of hung child %d\n", (int)pid);
    }
    if (o.hung)
        kill(pid, SIGKILL);
    close(done_rd);
    while (waitpid(pid, &o.status, 0) < 0 && errno == EINTR)
        ;
    return o;
}

/*
 * Waits (at most 2 s) until process PID sleeps in the kernel.  Used only to
 * send a signal while the child is blocked in a call, as the scenario
 * says; a correct implementation passes however early or late this
 * returns.  (ThreadSanitizer defers a signal that arrives outside a
 * blocking call until the next one returns, which would outlast the
 * guard.)
 */
static void wait_until_process_sleeps(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int64_t until = tu_now_ns() + TU_WAKE_GUARD_NS;
    while (tu_now_ns() < until) {
        FILE *f = fopen(path, "r");
        if (!f)
            return;
        char buf[512];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        const char *paren = strrchr(buf, ')');
        if (paren && paren[1] == ' ' && paren[2] == 'S')
            return;
        sched_yield();
    }
}

/*
 * AddressSanitizer (GCC 12's libasan) does not hold its allocator's locks
 * across fork: a child forked while another thread is inside malloc or
 * free may hang in the allocator (gdb shows the child's new threads in
 * SizeClassAllocator64::GetFromAllocator).  Under ASan the hammer
 * threads' allocating operations therefore run under ALLOC_GATE's read
 * side and run_child forks under its write side: children are still
 * forked while hammers are inside callback add/remove (holding the token
 * locks), never inside the allocator.  Plain and TSan builds fork at any
 * moment.
 */
#if defined(__SANITIZE_ADDRESS__)
static pthread_rwlock_t alloc_gate;
static pthread_once_t alloc_gate_once = PTHREAD_ONCE_INIT;
static void alloc_gate_init(void)
{
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    /* The forking thread must not starve behind looping readers. */
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&alloc_gate, &attr);
    pthread_rwlockattr_destroy(&attr);
}
static void alloc_begin(void)
{
    pthread_once(&alloc_gate_once, alloc_gate_init);
    pthread_rwlock_rdlock(&alloc_gate);
}
static void alloc_end(void)
{
    pthread_rwlock_unlock(&alloc_gate);
}
static _Atomic bool hammering;  /* hammers run: they sleep never, the gate covers them */

/* Every other thread asleep in the kernel (at most 2 s): a library
 * thread started just before (timer, signal, worker) may still be in
 * ASan's own thread set-up, which allocates. */
static void settle_threads(void)
{
    pid_t self = tu_gettid();
    int64_t until = tu_now_ns() + TU_WAKE_GUARD_NS;
    while (tu_now_ns() < until) {
        bool all = true;
        DIR *d = opendir("/proc/self/task");
        if (!d)
            return;
        for (struct dirent *e; all && (e = readdir(d));) {
            if (e->d_name[0] == '.' || atoi(e->d_name) == self)
                continue;
            char path[300], buf[256];
            snprintf(path, sizeof path, "/proc/self/task/%s/stat", e->d_name);
            FILE *f = fopen(path, "r");
            if (!f)
                continue;
            size_t n = fread(buf, 1, sizeof buf - 1, f);
            fclose(f);
            buf[n] = 0;
            const char *paren = strrchr(buf, ')');
            all = paren && paren[1] == ' ' && paren[2] == 'S';
        }
        closedir(d);
        if (all)
            return;
        sched_yield();
    }
}

static void fork_begin(void)
{
    pthread_once(&alloc_gate_once, alloc_gate_init);
    if (!atomic_load(&hammering))
        settle_threads();
    pthread_rwlock_wrlock(&alloc_gate);
}
#define fork_end alloc_end
#define SANITIZER_ALLOCATOR_FORK_UNSAFE 1
#else
static void alloc_begin(void) {}
static void alloc_end(void) {}
static void fork_begin(void) {}
static void fork_end(void) {}
#define SANITIZER_ALLOCATOR_FORK_UNSAFE 0
static _Atomic bool hammering;
#endif

/* Forks; the child runs FN(ARG) and exits with what it returns. */
static struct outcome run_child(int (*fn)(void *), void *arg)
{
    int done[2];
    /* No ck_assert: the soak runs this outside Check; abort fails a test. */
    if (pipe2(done, O_CLOEXEC) != 0)
        abort();
    fork_begin();
    pid_t pid = fork();
    fork_end();
    if (pid < 0)
        abort();
    if (pid == 0) {
        close(done[0]);
        _exit(fn(arg));
    }
    close(done[1]);
    return await_child(pid, done[0]);
}

static void assert_child_ok(struct outcome o, const char *what)
{
    ck_assert_msg(!o.hung, "%s: the child hung (killed after %d s)", what,
                  CHILD_GUARD_S * multiplier());
    ck_assert_msg(WIFEXITED(o.status), "%s: the child died of signal %d", what,
                  WIFSIGNALED(o.status) ? WTERMSIG(o.status) : 0);
    ck_assert_msg(WEXITSTATUS(o.status) == 0, "%s: the child failed at step %d", what,
                  WEXITSTATUS(o.status));
}

/* ------------- a callback another thread was running at the fork (core) */

/* Thread B runs a callback of T (a child of R) that blocks; the main
 * thread forks; the child cancels R.  The run walk reaches T, where B's
 * frame said "still running": B does not exist in the child, so the child
 * must not wait for it (it hung for ever, found by verify/'s review). */
struct ghost {
    cancel_token_t *r, *t;
    tu_latch_t entered, release;
};

static void ghost_fn(void *arg, int reason)
{
    struct ghost *g = arg;
    (void)reason;
    tu_latch_post(&g->entered);
    tu_latch_wait(&g->release);
}

static void *ghost_canceller(void *arg)
{
    struct ghost *g = arg;
    cancel_token_cancel(g->t, EPIPE);
    return NULL;
}

static void count_run(void *arg, int reason)
{
    (void)reason;
    (*(int *)arg)++;
}

static int ghost_child(void *arg)
{
    struct ghost *g = arg;
    if (!cancel_token_cancel(g->r, ECANCELED))
        return 1;
    if (!cancel_token_is_cancelled(g->t))
        return 2;
    cancel_callback_t cb;
    int ran = 0;
    if (cancel_callback_add(&cb, g->t, count_run, &ran) != 1 || ran != 1)
        return 3; /* T is cancelled: a new callback runs at once */
    return 0;
}

START_TEST(a_child_cancels_an_ancestor_of_a_callback_that_another_thread_was_running)
{
    struct ghost g;
    g.r = cancel_token_new();
    g.t = cancel_token_child(g.r);
    tu_latch_init(&g.entered);
    tu_latch_init(&g.release);
    cancel_callback_t cb;
    ck_assert_int_eq(cancel_callback_add(&cb, g.t, ghost_fn, &g), 0);
    pthread_t b;
    tu_thread_start(&b, ghost_canceller, &g);
    tu_latch_wait(&g.entered); /* fn runs on B, its frame on T */
    struct outcome o = run_child(ghost_child, &g);
    tu_latch_post(&g.release);
    tu_thread_join(b);
    assert_child_ok(o, "cancel of R in the child");
    ck_assert(!cancel_callback_remove(&cb));
    cancel_token_unref(g.t);
    cancel_token_unref(g.r);
}
END_TEST

/* ------------------------------------------------------ the child's work */

static int flag_task(void *arg)
{
    *(_Atomic int *)arg = 1;
    return 0;
}

static void count_cb(void *arg, int reason)
{
    (void)reason;
    (*(_Atomic int *)arg)++;
}

/* Blocks in cancel_read on an empty pipe until the scope is cancelled. */
static int blocked_read_task(void *arg)
{
    int fd = *(int *)arg;
    char b;
    ssize_t n = cancel_read(fd, &b, 1);
    return n < 0 && errno == ECANCELED ? 0 : EPROTO;
}

/*
 * Everything the SPEC says a child can do at once: tokens, deadlines,
 * callbacks, scopes, wrapped calls, a signal registration.  Returns 0, or
 * the number of the step that failed.
 */
static int use_the_library(void)
{
    /* 1-3: tokens and callbacks. */
    cancel_token_t *root = cancel_token_new();
    cancel_token_t *kid = cancel_token_child(root);
    if (!root || !kid)
        return 1;
    _Atomic int ran = 0;
    cancel_callback_t cb;
    if (cancel_callback_add(&cb, kid, count_cb, &ran) != 0)
        return 2;
    cancel_token_cancel(root, ECANCELED);
    if (ran != 1 || cancel_token_reason(kid) != ECANCELED)
        return 3;
    cancel_callback_remove(&cb);
    cancel_token_unref(kid);
    cancel_token_unref(root);

    /* 4-5: a deadline fires (the timer thread starts afresh). */
    cancel_token_t *d = cancel_token_with_timeout(NULL, 5 * 1000000LL);
    if (!d)
        return 4;
    if (cancel_token_wait(d, NULL) != 0 || cancel_token_reason(d) != ETIMEDOUT)
        return 5;
    cancel_token_unref(d);

    /* 6-7: a scope runs a task (on a new worker, not a parent's). */
    _Atomic int flag = 0;
    cancel_scope_t *s = cancel_scope_open(0);
    if (!s || cancel_scope_spawn(s, flag_task, &flag, NULL) != 0)
        return 6;
    if (cancel_scope_join(s, NULL) != 0 || flag != 1)
        return 7;

    /* 8-10: wrapped calls: one that reads, one cancelled while blocked. */
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        return 8;
    char c = 'x';
    if (write(p[1], &c, 1) != 1 || cancel_read(p[0], &c, 1) != 1)
        return 9;
    s = cancel_scope_open(0);
    if (!s || cancel_scope_spawn(s, blocked_read_task, &p[0], NULL) != 0)
        return 10;
    cancel_scope_cancel(s);
    if (cancel_scope_join(s, NULL) != 0)
        return 10;
    cancel_token_t *t = cancel_token_with_timeout(NULL, 5 * 1000000LL);
    cancel_token_t *prev = cancel_enter(t);
    ssize_t n = cancel_read(p[0], &c, 1);
    int err = errno;
    cancel_leave(prev);
    cancel_token_unref(t);
    if (n != -1 || err != ETIMEDOUT)
        return 10;
    close(p[0]);
    close(p[1]);

    /* 11-12: a signal registration of the child's own. */
    cancel_token_t *sig = cancel_token_new();
    if (cancel_token_cancel_on_signal(sig, SIGUSR1) != 0)
        return 11;
    raise(SIGUSR1);
    struct timespec guard = cancel__add_ns(cancel__now(), TU_WAKE_GUARD_NS);
    if (cancel_token_wait(sig, &guard) != 0)
        return 12;
    cancel_token_unref(sig);
    return 0;
}

static int use_the_library_child(void *arg)
{
    (void)arg;
    return use_the_library();
}

/* ------------------------------------------------- bug 2: worker cache */

START_TEST(child_first_spawn_runs_although_a_worker_was_idle_at_the_fork)
{
    /* The worker that ran this task parks on the idle list for 2 s. */
    _Atomic int flag = 0;
    cancel_scope_t *s = cancel_scope_open(0);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(cancel_scope_spawn(s, flag_task, &flag, NULL), 0);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    ck_assert_uint_ge(cancel__worker_idle_count(), 1);
    assert_child_ok(run_child(use_the_library_child, NULL), "first spawn in the child");
    /* The parent's cache still works. */
    flag = 0;
    s = cancel_scope_open(0);
    ck_assert_int_eq(cancel_scope_spawn(s, flag_task, &flag, NULL), 0);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    ck_assert_int_eq(flag, 1);
}
END_TEST

/* ------------------------------------- bug 3: locks held at the fork */

struct hammer {
    _Atomic bool stop;
    _Atomic unsigned long rounds;
    cancel_token_t *token;
};

static void nop_cb(void *arg, int reason)
{
    (void)arg;
    (void)reason;
}

/* Callback add/remove and child create/release: the token core's lock. */
static void *hammer_tokens(void *p)
{
    struct hammer *h = p;
    while (!atomic_load(&h->stop)) {
        cancel_callback_t cb;
        cancel_callback_add(&cb, h->token, nop_cb, NULL);
        cancel_callback_remove(&cb);
        alloc_begin();
        cancel_token_t *c = cancel_token_child(h->token);
        cancel_token_unref(c);
        alloc_end();
        atomic_fetch_add(&h->rounds, 1);
    }
    return NULL;
}

/* Deadlines armed, some fired, some released first: the timer's lock. */
static void *hammer_deadlines(void *p)
{
    struct hammer *h = p;
    unsigned i = 0;
    while (!atomic_load(&h->stop)) {
        /* Under ASan none fires: the timer thread would free tokens
         * outside the gate. */
        int64_t ns = SANITIZER_ALLOCATOR_FORK_UNSAFE && i % 8 ? 3600 * 1000000000LL
                                                              : (int64_t)(i % 8) * 10000;
        i++;
        alloc_begin();
        cancel_token_t *d = cancel_token_with_timeout(h->token, ns);
        cancel_token_unref(d);
        alloc_end();
        atomic_fetch_add(&h->rounds, 1);
    }
    return NULL;
}

/* Spawn and join: the worker cache's lock. */
static void *hammer_scopes(void *p)
{
    struct hammer *h = p;
    while (!atomic_load(&h->stop)) {
        _Atomic int flag = 0;
        alloc_begin();
        cancel_scope_t *s = cancel_scope_open(0);
        if (s) {
            cancel_scope_spawn(s, flag_task, &flag, NULL);
            cancel_scope_join(s, NULL);
        }
        alloc_end();
        atomic_fetch_add(&h->rounds, 1);
    }
    return NULL;
}

/* Signal registration and release: the signal module's lock. */
static void *hammer_signals(void *p)
{
    struct hammer *h = p;
    while (!atomic_load(&h->stop)) {
        alloc_begin();
        cancel_token_t *t = cancel_token_child(h->token);
        cancel_token_cancel_on_signal(t, SIGUSR2);
        cancel_token_unref(t);
        alloc_end();
        atomic_fetch_add(&h->rounds, 1);
    }
    return NULL;
}

enum { FORK_ROUNDS = 100 };

START_TEST(children_forked_while_threads_hold_library_locks_do_not_hang)
{
    void *(*const fns[])(void *) = { hammer_tokens, hammer_tokens, hammer_deadlines,
                                     hammer_scopes, hammer_signals };
    enum { N = sizeof fns / sizeof fns[0] };
    struct hammer h[N];
    pthread_t th[N];
    atomic_store(&hammering, true);
    for (int i = 0; i < N; i++) {
        atomic_init(&h[i].stop, false);
        atomic_init(&h[i].rounds, 0);
        h[i].token = cancel_token_new();
        tu_thread_start(&th[i], fns[i], &h[i]);
    }
    int hung = 0, failed = 0, last_step = 0, rounds_done = 0;
    for (int round = 0; round < FORK_ROUNDS; round++) {
        rounds_done++;
        /* Fork only while every hammer is making progress. */
        for (int i = 0; i < N; i++) {
            unsigned long r = atomic_load(&h[i].rounds);
            while (atomic_load(&h[i].rounds) == r)
                sched_yield();
        }
        struct outcome o = run_child(use_the_library_child, NULL);
        if (o.hung) {
            hung++;
            break;  /* one is enough: each costs the whole guard */
        } else if (!WIFEXITED(o.status) || WEXITSTATUS(o.status) != 0) {
            failed++;
            last_step = WIFEXITED(o.status) ? WEXITSTATUS(o.status) : -WTERMSIG(o.status);
        }
    }
    for (int i = 0; i < N; i++) {
        atomic_store(&h[i].stop, true);
        tu_thread_join(th[i]);
        cancel_token_unref(h[i].token);
    }
    ck_assert_msg(hung == 0, "a child hung after %d good ones", rounds_done - 1);
    ck_assert_msg(failed == 0, "%d of %d children failed (last: step %d)", failed,
                  FORK_ROUNDS, last_step);
}
END_TEST

/* --------------------------------- bug 4: signal registrations survive */

START_TEST(a_signal_registration_stays_in_force_in_a_child_forked_without_exec)
{
    /* Check's runner handles SIGTERM; the disposition to restore is the
     * default one, which kills. */
    signal(SIGTERM, SIG_DFL);
    cancel_token_t *root = cancel_token_new();
    ck_assert_int_eq(cancel_token_cancel_on_signal(root, SIGTERM), 0);
    int ready[2], done[2];
    ck_assert_int_eq(pipe2(ready, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(done, O_CLOEXEC), 0);
    fork_begin();
    pid_t pid = fork();
    fork_end();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(ready[0]);
        close(done[0]);
        char b = 'r';
        if (write(ready[1], &b, 1) != 1)
            _exit(1);
        /* The first SIGTERM cancels the child's copy of ROOT.  Waited for
         * with poll on its descriptor: ThreadSanitizer holds back a signal
         * that reaches a thread in pthread_cond_timedwait (which
         * cancel_token_wait uses) until the wait returns. */
        struct pollfd p = { .fd = cancel_token_fd(root), .events = POLLIN, .revents = 0 };
        if (p.fd < 0)
            _exit(5);
        int64_t until = tu_now_ns() + 4 * TU_WAKE_GUARD_NS;
        while (!cancel_token_is_cancelled(root) && tu_now_ns() < until)
            poll(&p, 1, 100);
        if (!cancel_token_is_cancelled(root))
            _exit(2);
        if (cancel_token_reason(root) != ECANCELED)
            _exit(3);
        b = 'c';
        if (write(ready[1], &b, 1) != 1)
            _exit(4);
        /* The second restores the default disposition and re-raises. */
        for (;;)
            pause();
    }
    close(ready[1]);
    close(done[1]);
    char b = 0;
    ck_assert_int_eq(read(ready[0], &b, 1), 1);
    ck_assert_int_eq(b, 'r');
    wait_until_process_sleeps(pid);
    ck_assert_int_eq(kill(pid, SIGTERM), 0);
    struct pollfd p = { .fd = ready[0], .events = POLLIN, .revents = 0 };
    int r = poll(&p, 1, CHILD_GUARD_S * multiplier() * 1000);
    bool cancelled = r == 1 && read(ready[0], &b, 1) == 1 && b == 'c';
#if defined(__SANITIZE_THREAD__)
    /* ThreadSanitizer does not deliver a signal re-raised from a handler
     * in a child forked from a threaded process (see check_signal.c): the
     * second delivery is checked by the plain and ASan runs only. */
    const int second = SIGKILL;
#else
    const int second = SIGTERM;
#endif
    if (cancelled)
        kill(pid, second);
    struct outcome o = await_child(pid, done[0]);
    close(ready[0]);
    ck_assert_msg(cancelled, "the first SIGTERM did not cancel the child's token (status %#x)",
                  o.status);
    ck_assert_msg(!o.hung, "the second SIGTERM did not end the child");
    ck_assert_msg(WIFSIGNALED(o.status) && WTERMSIG(o.status) == second,
                  "the second SIGTERM did not kill the child (status %#x)", o.status);
    /* Neither delivery reached the parent's registration. */
    ck_assert(!cancel_token_is_cancelled(root));
    cancel_token_unref(root);
}
END_TEST

/* ----------------------------------------------- the "Fork" section */

struct busy_parent {
    cancel_scope_t *scope;
    int pipe[2];
    cancel_token_t *deadline;
    cancel_token_t *sig;
};

/* The parent has every library thread running: a worker blocked in a
 * wrapped call, the timer thread with a pending deadline, the signal
 * thread. */
static void busy_parent_start(struct busy_parent *b)
{
    ck_assert_int_eq(pipe2(b->pipe, O_CLOEXEC), 0);
    b->scope = cancel_scope_open(0);
    ck_assert_ptr_nonnull(b->scope);
    ck_assert_int_eq(cancel_scope_spawn(b->scope, blocked_read_task, &b->pipe[0], NULL), 0);
    b->deadline = cancel_token_with_timeout(NULL, 3600 * 1000000000LL);
    ck_assert_ptr_nonnull(b->deadline);
    b->sig = cancel_token_new();
    ck_assert_int_eq(cancel_token_cancel_on_signal(b->sig, SIGUSR2), 0);
}

static void busy_parent_stop(struct busy_parent *b)
{
    cancel_scope_cancel(b->scope);
    ck_assert_int_eq(cancel_scope_join(b->scope, NULL), 0);
    cancel_token_unref(b->deadline);
    cancel_token_unref(b->sig);
    close(b->pipe[0]);
    close(b->pipe[1]);
}

/* ------------- a wait under the token the parent's wait left armed */

/* The parent's cancel_read blocked under T, so its wake callback stayed
 * armed on T (wake.c keeps it between waits).  The child closes the
 * inherited wake fd; its first wait under T must arm the callback again
 * with its own fd, which another thread of the child's cancel writes.
 * (The race this guards, a store of the new fd left in the store buffer
 * while the waiter reads the reason, is too narrow to force; this runs
 * the path and checks its outcome.) */
struct rearm {
    cancel_token_t *t;
    int pipe[2];
    pid_t waiter;
};

static void *rearm_writer(void *arg)
{
    struct rearm *r = arg;
    tu_wait_until_sleeping(r->waiter);
    if (write(r->pipe[1], "p", 1) != 1)
        abort();
    return NULL;
}

static void *rearm_canceller(void *arg)
{
    struct rearm *r = arg;
    tu_wait_until_sleeping(r->waiter);
    cancel_token_cancel(r->t, ECANCELED);
    return NULL;
}

static int rearm_child(void *arg)
{
    struct rearm *r = arg;
    r->waiter = tu_gettid();
    pthread_t th;
    if (pthread_create(&th, NULL, rearm_canceller, r) != 0)
        return 1;
    char c;
    ssize_t n = cancel_read(r->pipe[0], &c, 1);
    int err = errno;
    pthread_join(th, NULL);
    if (n != -1 || err != ECANCELED)
        return 2;
    /* Nothing was written: nothing was lost. */
    if (cancel_token_reason(r->t) != ECANCELED)
        return 3;
    return 0;
}

START_TEST(a_child_wait_under_the_token_the_parent_waited_on_is_woken_by_a_cancel)
{
    struct rearm r;
    r.t = cancel_token_new();
    ck_assert_int_eq(pipe2(r.pipe, O_CLOEXEC), 0);
    r.waiter = tu_gettid();
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, rearm_writer, &r), 0);
    cancel_token_t *prev = cancel_enter(r.t);
    char c;
    ck_assert_int_eq(cancel_read(r.pipe[0], &c, 1), 1); /* blocked, then the byte */
    pthread_join(th, NULL);
    assert_child_ok(run_child(rearm_child, &r), "a wait under the parent's armed token");
    ck_assert(!cancel_token_is_cancelled(r.t)); /* the child's cancel was its own */
    cancel_leave(prev);
    close(r.pipe[0]);
    close(r.pipe[1]);
    cancel_token_unref(r.t);
}
END_TEST

START_TEST(a_child_at_once_creates_tokens_deadlines_callbacks_scopes_and_makes_wrapped_calls)
{
    struct busy_parent b;
    busy_parent_start(&b);
    assert_child_ok(run_child(use_the_library_child, NULL), "the child's library calls");
    busy_parent_stop(&b);
}
END_TEST

struct armed {
    cancel_token_t *before;     /* armed by the parent */
    struct timespec before_at;
};

static int deadline_child(void *arg)
{
    struct armed *a = arg;
    /* Due after the parent's: if the child fired inherited deadlines,
     * BEFORE would be cancelled first. */
    struct timespec at = cancel__add_ns(a->before_at, 50 * 1000000LL);
    cancel_token_t *mine = cancel_token_with_deadline(NULL, &at);
    if (!mine)
        return 1;
    if (cancel_token_wait(mine, NULL) != 0 || cancel_token_reason(mine) != ETIMEDOUT)
        return 2;
    if (cancel_token_is_cancelled(a->before))
        return 3;
    if (cancel__timer_pending() != 0)
        return 4;
    cancel_token_unref(mine);
    cancel_token_unref(a->before); /* its deadline is not in the child's heap */
    return 0;
}

START_TEST(deadlines_armed_before_the_fork_do_not_fire_in_the_child_while_its_own_do)
{
    struct armed a;
    a.before = cancel_token_with_timeout(NULL, 50 * 1000000LL);
    ck_assert_ptr_nonnull(a.before);
    ck_assert(cancel_token_deadline(a.before, &a.before_at));
    struct outcome o = run_child(deadline_child, &a);
    /* It fires in the parent. */
    ck_assert_int_eq(cancel_token_wait(a.before, NULL), 0);
    ck_assert_int_eq(cancel_token_reason(a.before), ETIMEDOUT);
    cancel_token_unref(a.before);
    assert_child_ok(o, "deadlines in the child");
}
END_TEST

static int timer_child(void *arg)
{
    (void)arg;
    /* The parent's timer thread sleeps for an hour; the child's starts
     * afresh and fires this one. */
    cancel_token_t *d = cancel_token_with_timeout(NULL, 10 * 1000000LL);
    if (!d)
        return 1;
    struct timespec guard = cancel__add_ns(cancel__now(), TU_WAKE_GUARD_NS);
    if (cancel_token_wait(d, &guard) != 0 || cancel_token_reason(d) != ETIMEDOUT)
        return 2;
    cancel_token_unref(d);
    return 0;
}

START_TEST(the_timer_thread_starts_afresh_in_the_child)
{
    cancel_token_t *hour = cancel_token_with_timeout(NULL, 3600 * 1000000000LL);
    ck_assert_uint_eq(cancel__timer_pending(), 1);
    assert_child_ok(run_child(timer_child, NULL), "the child's timer");
    cancel_token_unref(hour);
}
END_TEST

static int signal_child(void *arg)
{
    (void)arg;
    /* Registered before the fork (the parent's signal thread exists), the
     * child's copy is cancelled by a delivery in the child. */
    cancel_token_t *t = arg;
    raise(SIGUSR2);
    struct timespec guard = cancel__add_ns(cancel__now(), TU_WAKE_GUARD_NS);
    if (cancel_token_wait(t, &guard) != 0)
        return 1;
    return 0;
}

START_TEST(the_signal_thread_starts_afresh_in_the_child)
{
    cancel_token_t *t = cancel_token_new();
    ck_assert_int_eq(cancel_token_cancel_on_signal(t, SIGUSR2), 0);
    assert_child_ok(run_child(signal_child, t), "the child's signal thread");
    ck_assert(!cancel_token_is_cancelled(t));
    /* And the parent's still works. */
    raise(SIGUSR2);
    struct timespec guard = cancel__add_ns(cancel__now(), TU_WAKE_GUARD_NS);
    ck_assert_int_eq(cancel_token_wait(t, &guard), 0);
    cancel_token_unref(t);
}
END_TEST

/* ------------------------------------------------------------ exec */

enum { MAX_FDS = 256 };

struct fd_entry {
    int fd;
    char target[128];
};

/* Every open fd of this process but the directory's own. */
static int list_fds(struct fd_entry *out, int max)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < max) {
        if (e->d_name[0] == '.')
            continue;
        int fd = atoi(e->d_name);
        if (fd == dirfd(d))
            continue;
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t len = readlink(path, out[n].target, sizeof out[n].target - 1);
        out[n].target[len > 0 ? len : 0] = 0;
        out[n].fd = fd;
        n++;
    }
    closedir(d);
    return n;
}

static bool listed(const struct fd_entry *set, int n, const struct fd_entry *e)
{
    for (int i = 0; i < n; i++)
        if (set[i].fd == e->fd && strcmp(set[i].target, e->target) == 0)
            return true;
    return false;
}

static int waitpid_task(void *arg)
{
    pid_t pid = *(pid_t *)arg;
    int status;
    pid_t r = cancel_waitpid(pid, &status, 0);
    return r < 0 && errno == ECANCELED ? 0 : EPROTO;
}

START_TEST(after_exec_no_descriptor_of_the_library_is_left_open)
{
    static struct fd_entry before[MAX_FDS], during[MAX_FDS];
    int nbefore = list_fds(before, MAX_FDS);
    ck_assert_int_gt(nbefore, 0);

    /* Every kind of descriptor the library makes, open at once: a token
     * fd (eventfd), wake eventfds of threads blocked in wrapped calls, the
     * signal hand-off pipe, a pidfd of a blocked cancel_waitpid. */
    cancel_token_t *t = cancel_token_new();
    ck_assert_int_ge(cancel_token_fd(t), 0);
    ck_assert_int_eq(cancel_token_cancel_on_signal(t, SIGUSR2), 0);
    cancel_token_t *d = cancel_token_with_timeout(NULL, 3600 * 1000000000LL);
    int p[2];
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    pid_t sleeper = fork();
    ck_assert_int_ge(sleeper, 0);
    if (sleeper == 0) {
        for (;;)
            pause();
    }
    cancel_scope_t *s = cancel_scope_open(0);
    ck_assert_int_eq(cancel_scope_spawn(s, blocked_read_task, &p[0], NULL), 0);
    ck_assert_int_eq(cancel_scope_spawn(s, waitpid_task, &sleeper, NULL), 0);
    /* This thread's own wake fd, made by a wrapped call that times out. */
    cancel_token_t *brief = cancel_token_with_timeout(NULL, 1000000LL);
    cancel_token_t *prev = cancel_enter(brief);
    char c;
    ck_assert_int_eq(cancel_read(p[0], &c, 1), -1);
    cancel_leave(prev);
    cancel_token_unref(brief);

    /* Wait until both tasks' wake fds (and the pidfd) exist: until the
     * number of descriptors stops being short of what they need. */
    int want = nbefore + 2 /* p */ + 1 /* token fd */ + 2 /* signal pipe */ +
               1 /* our wake fd */ + 2 /* the tasks' wake fds */ + 1 /* pidfd */;
    int ndur = 0;
    int64_t until = tu_now_ns() + TU_WAKE_GUARD_NS;
    while ((ndur = list_fds(during, MAX_FDS)) < want && tu_now_ns() < until)
        sched_yield();
    ck_assert_int_ge(ndur, want);

    int out[2];
    ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(out[1], 1);
        execl("/proc/self/exe", "check_fork", "--list-fds", (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    static char text[MAX_FDS * 160];
    size_t len = 0;
    ssize_t n;
    while ((n = read(out[0], text + len, sizeof text - 1 - len)) > 0)
        len += (size_t)n;
    text[len] = 0;
    close(out[0]);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the lister failed");

    /* The library's descriptors: open now, not before (the test's own
     * pipes are close-on-exec too, so they must not show either). */
    int leaked = 0;
    char first[160] = "";
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        struct fd_entry e;
        char *space = strchr(line, ' ');
        if (!space)
            continue;
        *space = 0;
        e.fd = atoi(line);
        snprintf(e.target, sizeof e.target, "%s", space + 1);
        if (listed(during, ndur, &e) && !listed(before, nbefore, &e)) {
            if (!leaked++)
                snprintf(first, sizeof first, "%d -> %s", e.fd, e.target);
        }
    }
    cancel_scope_cancel(s);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    kill(sleeper, SIGKILL);
    waitpid(sleeper, &status, 0);
    cancel_token_unref(d);
    cancel_token_unref(t);
    close(p[0]);
    close(p[1]);
    ck_assert_msg(leaked == 0, "%d descriptors survived exec, first %s", leaked, first);
}
END_TEST

static int print_fds(void)
{
    static struct fd_entry fds[MAX_FDS];
    int n = list_fds(fds, MAX_FDS);
    if (n < 0)
        return 1;
    for (int i = 0; i < n; i++)
        printf("%d %s\n", fds[i].fd, fds[i].target);
    return fflush(stdout) == 0 ? 0 : 1;
}

static Suite *suite(void)
{
    Suite *s = suite_create("fork");
    TCase *bugs = tcase_create("bugs");
    tcase_set_timeout(bugs, 4 * TU_TIMEOUT);
    tcase_add_test(bugs, child_first_spawn_runs_although_a_worker_was_idle_at_the_fork);
    tcase_add_test(bugs, children_forked_while_threads_hold_library_locks_do_not_hang);
    tcase_add_test(bugs, a_signal_registration_stays_in_force_in_a_child_forked_without_exec);
    tcase_add_test(bugs, a_child_cancels_an_ancestor_of_a_callback_that_another_thread_was_running);
    tcase_add_test(bugs, a_child_wait_under_the_token_the_parent_waited_on_is_woken_by_a_cancel);
    suite_add_tcase(s, bugs);

    TCase *spec = tcase_create("spec");
    tcase_set_timeout(spec, TU_TIMEOUT);
    tcase_add_test(spec, a_child_at_once_creates_tokens_deadlines_callbacks_scopes_and_makes_wrapped_calls);
    tcase_add_test(spec, deadlines_armed_before_the_fork_do_not_fire_in_the_child_while_its_own_do);
    tcase_add_test(spec, the_timer_thread_starts_afresh_in_the_child);
    tcase_add_test(spec, the_signal_thread_starts_afresh_in_the_child);
    tcase_add_test(spec, after_exec_no_descriptor_of_the_library_is_left_open);
    suite_add_tcase(s, spec);
    return s;
}

/*
 * `check_fork --soak SECONDS` (make soak): the fork scenarios for that
 * long, outside Check.  Five threads hammer the library's locks (as in
 * children_forked_while_threads_hold_library_locks_do_not_hang) while the
 * main thread forks children that use the whole library; every eighth
 * child also checks a signal registration made before the fork.  Prints
 * the figures; exit status 0 when no child hung or failed.
 */
static int signal_soak_child(void *arg)
{
    cancel_token_t *t = arg;
    raise(SIGUSR2);
    struct timespec guard = cancel__add_ns(cancel__now(), 4 * TU_WAKE_GUARD_NS);
    if (cancel_token_wait(t, &guard) != 0)
        return 20;
    return use_the_library();
}

static int soak(int seconds)
{
    void *(*const fns[])(void *) = { hammer_tokens, hammer_tokens, hammer_deadlines,
                                     hammer_scopes, hammer_signals };
    enum { N = sizeof fns / sizeof fns[0] };
    struct hammer h[N];
    pthread_t th[N];
    atomic_store(&hammering, true);
    for (int i = 0; i < N; i++) {
        atomic_init(&h[i].stop, false);
        atomic_init(&h[i].rounds, 0);
        h[i].token = cancel_token_new();
        if (pthread_create(&th[i], NULL, fns[i], &h[i]) != 0)
            return 2;
    }
    cancel_token_t *sig = cancel_token_new();
    if (cancel_token_cancel_on_signal(sig, SIGUSR2) != 0)
        return 2;
    long forks = 0, hung = 0, failed = 0;
    int last = 0;
    int64_t t0 = tu_now_ns(), end = t0 + (int64_t)seconds * 1000000000LL;
    while (tu_now_ns() < end) {
        struct outcome o = forks % 8 == 7 ? run_child(signal_soak_child, sig)
                                          : run_child(use_the_library_child, NULL);
        forks++;
        if (o.hung)
            hung++;
        else if (!WIFEXITED(o.status) || WEXITSTATUS(o.status) != 0) {
            failed++;
            last = WIFEXITED(o.status) ? WEXITSTATUS(o.status) : -WTERMSIG(o.status);
        }
    }
    unsigned long hammered = 0;
    for (int i = 0; i < N; i++) {
        atomic_store(&h[i].stop, true);
        pthread_join(th[i], NULL);
        hammered += atomic_load(&h[i].rounds);
        cancel_token_unref(h[i].token);
    }
    bool parent_ok = !cancel_token_is_cancelled(sig);
    cancel_token_unref(sig);
    double secs = (double)(tu_now_ns() - t0) / 1e9;
    printf("fork soak: %.0f s, %ld forks (%.1f/s), %ld hung, %ld failed (last step %d), "
           "%lu hammer operations (%.0f/s), parent's registration %s\n",
           secs, forks, (double)forks / secs, hung, failed, last, hammered,
           (double)hammered / secs, parent_ok ? "untouched" : "CANCELLED");
    return hung == 0 && failed == 0 && parent_ok && forks > 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--list-fds") == 0)
        return print_fds();
    if (argc == 3 && strcmp(argv[1], "--soak") == 0)
        return soak(atoi(argv[2]));
    return tu_run_suite(suite());
}

/*
 * check_sync.c - cancel_cond_wait, cancel_sem_wait, cancel_sleep,
 * cancel_sleep_until and cancel_waitpid in every state.
 */
#include "internal.h"
#include "testutil.h"

#include <fcntl.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------ fixtures */

struct fx {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    bool ready;             /* the predicate, under MUTEX */
    sem_t sem;
    pid_t child;
    int gate[2];            /* the child exits when this pipe is written */
    bool mutex_held_after;  /* cond: the worker could unlock on return */
};

enum kind { K_COND, K_SEM, K_SLEEP, K_WAITPID, K_WAITPID_ANY, NKINDS };
static const char *const names[NKINDS] = { "cond_wait", "sem_wait", "sleep", "waitpid",
                                           "waitpid(-1)" };

static void fx_setup(enum kind k, struct fx *f)
{
    memset(f, 0, sizeof *f);
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutex_init(&f->mutex, &ma);
    pthread_mutexattr_destroy(&ma);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&f->cond, &ca);
    pthread_condattr_destroy(&ca);
    sem_init(&f->sem, 0, 0);
    f->child = -1;
    if (k == K_WAITPID || k == K_WAITPID_ANY) {
        ck_assert_int_eq(pipe2(f->gate, O_CLOEXEC), 0);
        f->child = fork();
        ck_assert_int_ge(f->child, 0);
        if (f->child == 0) {
            char c;
            while (read(f->gate[0], &c, 1) < 0)
                ;
            _exit(7);
        }
        close(f->gate[0]);
    }
}

/* Lets the call complete. */
static void fx_feed(enum kind k, struct fx *f)
{
    switch (k) {
    case K_COND:
        pthread_mutex_lock(&f->mutex);
        f->ready = true;
        pthread_cond_broadcast(&f->cond);
        pthread_mutex_unlock(&f->mutex);
        break;
    case K_SEM:
        sem_post(&f->sem);
        break;
    case K_WAITPID:
    case K_WAITPID_ANY:
        if (f->gate[1] >= 0) {
            ck_assert_int_eq(write(f->gate[1], "x", 1), 1);
            close(f->gate[1]);
            f->gate[1] = -1;
        }
        break;
    default:
        break;
    }
}

/* Nothing was taken: the unit is still in the semaphore, the child unreaped. */
static bool fx_untouched(enum kind k, struct fx *f)
{
    if (k == K_SEM) {
        int v = -1;
        sem_getvalue(&f->sem, &v);
        return v == 1;
    }
    if (k == K_WAITPID || k == K_WAITPID_ANY) {
        int status = 0;
        pid_t r = waitpid(f->child, &status, 0);
        bool ok = r == f->child && WIFEXITED(status) && WEXITSTATUS(status) == 7;
        f->child = -1;
        return ok;
    }
    return true;
}

static void fx_teardown(enum kind k, struct fx *f)
{
    if (k == K_WAITPID || k == K_WAITPID_ANY) {
        fx_feed(k, f);
        if (f->child > 0)
            waitpid(f->child, NULL, 0);
    }
    pthread_mutex_destroy(&f->mutex);
    pthread_cond_destroy(&f->cond);
    sem_destroy(&f->sem);
}

/* The wrapped call; returns 0 on success or an errno value. */
static int call(enum kind k, struct fx *f, int64_t sleep_ns)
{
    switch (k) {
    case K_COND: {
        pthread_mutex_lock(&f->mutex);
        int rc = 0;
        while (!f->ready && rc == 0)
            rc = cancel_cond_wait(&f->cond, &f->mutex);
        /* An error-checking mutex: unlock succeeds only if we hold it. */
        f->mutex_held_after = pthread_mutex_unlock(&f->mutex) == 0;
        return rc;
    }
    case K_SEM:
        return cancel_sem_wait(&f->sem) == 0 ? 0 : errno;
    case K_SLEEP:
        return cancel_sleep(sleep_ns) == 0 ? 0 : errno;
    case K_WAITPID:
    case K_WAITPID_ANY: {
        int status = 0;
        pid_t r = cancel_waitpid(k == K_WAITPID ? f->child : -1, &status, 0);
        if (r < 0)
            return errno;
        if (r != f->child || !WIFEXITED(status) || WEXITSTATUS(status) != 7)
            return -100;
        f->child = -1;
        return 0;
    }
    default:
        return -1;
    }
}

struct job {
    enum kind k;
    struct fx *f;
    cancel_token_t *token;
    int64_t sleep_ns;
    tu_latch_t started;
    struct cancel_blocked *blocked;
    pthread_t thread;
    int rc;
    int64_t returned_ns;
};

static void *job_main(void *arg)
{
    struct job *j = arg;
    j->blocked = cancel__thread_blocked();
    cancel_token_t *prev = cancel_enter(j->token);
    tu_latch_post(&j->started);
    j->rc = call(j->k, j->f, j->sleep_ns);
    j->returned_ns = tu_now_ns();
    cancel_leave(prev);
    return NULL;
}

static void job_start(struct job *j, enum kind k, struct fx *f, cancel_token_t *t)
{
    memset(j, 0, sizeof *j);
    j->k = k;
    j->f = f;
    j->token = t;
    j->sleep_ns = 60 * 1000000000LL;
    tu_latch_init(&j->started);
    tu_thread_start(&j->thread, job_main, j);
    tu_latch_wait(&j->started);
}

static void job_wait_blocked(struct job *j)
{
    while (atomic_load(&j->blocked->call) == NULL)
        sched_yield();
}

/* ---------------------------------------------------------------- tests */

START_TEST(fails_at_once_and_takes_nothing_when_already_cancelled)
{
    enum kind k = (enum kind)_i;
    struct fx f;
    fx_setup(k, &f);
    fx_feed(k, &f);
    if (k == K_COND)
        f.ready = false; /* it would wait: the cancel must stop it first */
    if (k == K_WAITPID || k == K_WAITPID_ANY) {
        /* Wait for the child to be a zombie, without reaping it. */
        siginfo_t si;
        ck_assert_int_eq(waitid(P_PID, (id_t)f.child, &si, WEXITED | WNOWAIT), 0);
    }
    cancel_token_t *t = cancel_token_new();
    cancel_token_cancel(t, 0);
    cancel_token_t *prev = cancel_enter(t);
    for (int n = 0; n < 2; n++) {
        int rc = call(k, &f, 1000000);
        ck_assert_msg(rc == ECANCELED, "%s call %d gave %d", names[k], n, rc);
        if (k == K_COND)
            ck_assert(f.mutex_held_after);
    }
    cancel_leave(prev);
    ck_assert_msg(fx_untouched(k, &f), "%s took something", names[k]);
    cancel_token_unref(t);
    fx_teardown(k, &f);
}
END_TEST

START_TEST(fails_ecanceled_when_cancelled_while_blocked)
{
    enum kind k = (enum kind)(_i % NKINDS);
    struct fx f;
    fx_setup(k, &f);
    cancel_token_t *t = cancel_token_new();
    struct job j;
    job_start(&j, k, &f, t);
    if (_i >= NKINDS)
        job_wait_blocked(&j);
    int64_t t0 = tu_now_ns();
    cancel_token_cancel(t, 0);
    tu_thread_join(j.thread);
    ck_assert_msg(j.rc == ECANCELED, "%s gave %d", names[k], j.rc);
    ck_assert_int_lt(j.returned_ns - t0, TU_WAKE_GUARD_NS);
    ck_assert_ptr_null(atomic_load(&j.blocked->call));
    if (k == K_COND)
        ck_assert(f.mutex_held_after);
    fx_feed(k, &f);
    f.ready = false; /* cond: make it a call that would wait */
    cancel_token_t *prev = cancel_enter(t);
    ck_assert_int_eq(call(k, &f, 1000), ECANCELED);
    cancel_leave(prev);
    ck_assert_msg(fx_untouched(k, &f), "%s took something", names[k]);
    cancel_token_unref(t);
    fx_teardown(k, &f);
}
END_TEST

START_TEST(fails_when_an_ancestor_is_cancelled)
{
    enum kind k = (enum kind)_i;
    struct fx f;
    fx_setup(k, &f);
    cancel_token_t *root = cancel_token_new();
    cancel_token_t *leaf = cancel_token_child(root);
    struct job j;
    job_start(&j, k, &f, leaf);
    job_wait_blocked(&j);
    cancel_token_cancel(root, 0);
    tu_thread_join(j.thread);
    ck_assert_msg(j.rc == ECANCELED, "%s gave %d", names[k], j.rc);
    cancel_token_unref(leaf);
    cancel_token_unref(root);
    fx_teardown(k, &f);
}
END_TEST

START_TEST(fails_etimedout_when_the_reason_is_etimedout)
{
    enum kind k = (enum kind)_i;
    struct fx f;
    fx_setup(k, &f);
    cancel_token_t *t = cancel_token_new();
    struct job j;
    job_start(&j, k, &f, t);
    cancel_token_cancel(t, ETIMEDOUT);
    tu_thread_join(j.thread);
    ck_assert_msg(j.rc == ETIMEDOUT, "%s gave %d", names[k], j.rc);
    cancel_token_unref(t);
    fx_teardown(k, &f);
}
END_TEST

START_TEST(fails_etimedout_when_the_deadline_expires)
{
    enum kind k = (enum kind)_i;
    struct fx f;
    fx_setup(k, &f);
    const int64_t ns = 30 * 1000000LL;
    int64_t t0 = tu_now_ns();
    cancel_token_t *t = cancel_token_with_timeout(NULL, ns);
    struct job j;
    job_start(&j, k, &f, t);
    tu_thread_join(j.thread);
    ck_assert_msg(j.rc == ETIMEDOUT, "%s gave %d", names[k], j.rc);
    ck_assert_int_ge(j.returned_ns - t0, ns);
    ck_assert_int_lt(j.returned_ns - t0, ns + TU_WAKE_GUARD_NS);
    cancel_token_unref(t);
    fx_teardown(k, &f);
}
END_TEST

START_TEST(completes_normally_under_a_live_token)
{
    enum kind k = (enum kind)(_i % NKINDS);
    struct fx f;
    fx_setup(k, &f);
    cancel_token_t *t = cancel_token_new();
    struct job j;
    job_start(&j, k, &f, t);
    if (_i >= NKINDS)
        job_wait_blocked(&j);
    if (k == K_SLEEP)
        cancel_token_cancel(t, 0); /* a 60 s sleep ends only this way */
    else
        fx_feed(k, &f);
    tu_thread_join(j.thread);
    ck_assert_msg(j.rc == (k == K_SLEEP ? ECANCELED : 0), "%s gave %d", names[k], j.rc);
    if (k == K_SEM) {
        int v = -1;
        sem_getvalue(&f.sem, &v);
        ck_assert_int_eq(v, 0);
    }
    if (k == K_COND)
        ck_assert(f.mutex_held_after);
    cancel_token_unref(t);
    fx_teardown(k, &f);
}
END_TEST

static sem_t sig_seen;
static atomic_int sig_count;
static void on_usr1(int signo)
{
    (void)signo;
    atomic_fetch_add(&sig_count, 1);
    sem_post(&sig_seen);
}

START_TEST(a_signal_without_sa_restart_does_not_end_the_call)
{
    enum kind k = (enum kind)_i;
    if (k == K_SLEEP)
        return; /* covered by sleep_is_not_cut_short_by_a_signal */
    struct fx f;
    fx_setup(k, &f);
    sem_init(&sig_seen, 0, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    ck_assert_int_eq(sigaction(SIGUSR1, &sa, NULL), 0);
    cancel_token_t *t = cancel_token_new();
    struct job j;
    job_start(&j, k, &f, t);
    job_wait_blocked(&j);
    pthread_kill(j.thread, SIGUSR1);
    /* The handler normally runs at once, interrupting the wait.  Some
     * runtimes (ThreadSanitizer) defer it until the syscall returns, so we
     * bound this wait and check below that it did run. */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 1;
    while (sem_timedwait(&sig_seen, &until) != 0 && errno == EINTR)
        ;
    fx_feed(k, &f);
    tu_thread_join(j.thread);
    ck_assert_msg(j.rc == 0, "%s gave %d", names[k], j.rc);
#ifndef __SANITIZE_THREAD__ /* TSan may drop a signal deferred past the call */
    ck_assert_int_eq(atomic_load(&sig_count), 1); /* the signal did arrive */
#endif
    cancel_token_unref(t);
    fx_teardown(k, &f);
}
END_TEST

START_TEST(is_the_plain_call_under_a_shield)
{
    enum kind k = (enum kind)_i;
    struct fx f;
    fx_setup(k, &f);
    fx_feed(k, &f);
    cancel_token_t *t = cancel_token_new();
    cancel_token_cancel(t, 0);
    cancel_token_t *prev = cancel_enter(t);
    cancel_shield_begin();
    int rc = call(k, &f, 1000);
    cancel_shield_end();
    cancel_leave(prev);
    ck_assert_msg(rc == 0, "%s gave %d", names[k], rc);
    cancel_token_unref(t);
    fx_teardown(k, &f);
}
END_TEST

/* cond: a canceller that holds an error-checking mutex does not deadlock. */
START_TEST(cond_wait_cancelled_by_a_holder_of_an_errorcheck_mutex_wakes)
{
    struct fx f;
    fx_setup(K_COND, &f);
    cancel_token_t *t = cancel_token_new();
    struct job j;
    job_start(&j, K_COND, &f, t);
    if (_i % 2)
        job_wait_blocked(&j);
    pthread_mutex_lock(&f.mutex);
    cancel_token_cancel(t, 0);
    pthread_mutex_unlock(&f.mutex);
    tu_thread_join(j.thread);
    ck_assert_int_eq(j.rc, ECANCELED);
    ck_assert(f.mutex_held_after);
    cancel_token_unref(t);
    fx_teardown(K_COND, &f);
}
END_TEST

/* cond: a signal and a cancel racing never strand an uncancelled waiter. */
struct plain_waiter {
    struct fx *f;
    tu_latch_t started;
    int woke;
};

static void *plain_wait_main(void *arg)
{
    struct plain_waiter *w = arg;
    pthread_mutex_lock(&w->f->mutex);
    tu_latch_post(&w->started);
    while (!w->f->ready)
        cancel_cond_wait(&w->f->cond, &w->f->mutex);
    w->woke = 1;
    pthread_mutex_unlock(&w->f->mutex);
    return NULL;
}

START_TEST(cond_wait_passes_on_a_signal_it_took_when_cancelled)
{
    struct fx f;
    fx_setup(K_COND, &f);
    cancel_token_t *t = cancel_token_new();
    struct job j;
    job_start(&j, K_COND, &f, t);
    struct plain_waiter pw = { .f = &f };
    tu_latch_init(&pw.started);
    pthread_t th;
    tu_thread_start(&th, plain_wait_main, &pw);
    tu_latch_wait(&pw.started);
    job_wait_blocked(&j);
    pthread_mutex_lock(&f.mutex);
    f.ready = true;
    pthread_cond_signal(&f.cond); /* one waiter only: maybe the cancelled one */
    pthread_mutex_unlock(&f.mutex);
    cancel_token_cancel(t, 0);
    tu_thread_join(j.thread);
    if (j.rc == 0) {
        /* The signal went to J, which took it before seeing the cancel:
         * a legitimate consumer.  Wake the other waiter ourselves. */
        pthread_mutex_lock(&f.mutex);
        pthread_cond_signal(&f.cond);
        pthread_mutex_unlock(&f.mutex);
    }
    tu_thread_join(th); /* hangs (test timeout) if the signal was swallowed */
    ck_assert_int_eq(pw.woke, 1);
    ck_assert(j.rc == 0 || j.rc == ECANCELED);
    cancel_token_unref(t);
    fx_teardown(K_COND, &f);
}
END_TEST

START_TEST(sleep_lasts_at_least_the_duration)
{
    cancel_token_t *t = _i ? cancel_token_new() : NULL;
    cancel_token_t *prev = cancel_enter(t);
    int64_t t0 = tu_now_ns();
    ck_assert_int_eq(cancel_sleep(20 * 1000000LL), 0);
    int64_t slept = tu_now_ns() - t0;
    ck_assert_int_ge(slept, 20 * 1000000LL);
    ck_assert_int_lt(slept, TU_WAKE_GUARD_NS);
    struct timespec at = cancel__add_ns(cancel__now(), 10 * 1000000LL);
    ck_assert_int_eq(cancel_sleep_until(&at), 0);
    ck_assert_int_ge(cancel__ns_until(&at), INT64_MIN);
    ck_assert_int_le(cancel__ns_until(&at), 0);
    ck_assert_int_eq(cancel_sleep(0), 0);
    ck_assert_int_eq(cancel_sleep(-5), 0);
    errno = 0;
    ck_assert_int_eq(cancel_sleep_until(NULL), -1);
    ck_assert_int_eq(errno, EINVAL);
    struct timespec bad = { 0, 2000000000L };
    ck_assert_int_eq(cancel_sleep_until(&bad), -1);
    ck_assert_int_eq(errno, EINVAL);
    cancel_leave(prev);
    cancel_token_unref(t);
}
END_TEST

START_TEST(sleep_is_not_cut_short_by_a_signal)
{
    sem_init(&sig_seen, 0, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    ck_assert_int_eq(sigaction(SIGUSR1, &sa, NULL), 0);
    struct fx f;
    fx_setup(K_SLEEP, &f);
    cancel_token_t *t = cancel_token_new();
    struct job j;
    memset(&j, 0, sizeof j);
    j.k = K_SLEEP;
    j.f = &f;
    j.token = t;
    j.sleep_ns = 100 * 1000000LL;
    tu_latch_init(&j.started);
    int64_t t0 = tu_now_ns();
    tu_thread_start(&j.thread, job_main, &j);
    tu_latch_wait(&j.started);
    job_wait_blocked(&j);
    pthread_kill(j.thread, SIGUSR1);
    tu_thread_join(j.thread);
    ck_assert_int_eq(j.rc, 0);
    ck_assert_int_ge(j.returned_ns - t0, 100 * 1000000LL);
    cancel_token_unref(t);
    fx_teardown(K_SLEEP, &f);
}
END_TEST

START_TEST(waitpid_with_wnohang_never_waits)
{
    struct fx f;
    fx_setup(K_WAITPID, &f);
    cancel_token_t *t = cancel_token_new();
    cancel_token_t *prev = cancel_enter(t);
    int status;
    ck_assert_int_eq(cancel_waitpid(f.child, &status, WNOHANG), 0);
    fx_feed(K_WAITPID, &f);
    pid_t r;
    while ((r = cancel_waitpid(f.child, &status, WNOHANG)) == 0)
        sched_yield();
    ck_assert_int_eq(r, f.child);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 7);
    f.child = -1;
    errno = 0;
    ck_assert_int_eq(cancel_waitpid(-1, &status, 0), -1);
    ck_assert_int_eq(errno, ECHILD);
    cancel_leave(prev);
    cancel_token_unref(t);
    fx_teardown(K_WAITPID, &f);
}
END_TEST

START_TEST(sem_wait_takes_exactly_one_unit)
{
    struct fx f;
    fx_setup(K_SEM, &f);
    sem_post(&f.sem);
    sem_post(&f.sem);
    cancel_token_t *t = cancel_token_new();
    cancel_token_t *prev = cancel_enter(t);
    ck_assert_int_eq(cancel_sem_wait(&f.sem), 0);
    int v = -1;
    sem_getvalue(&f.sem, &v);
    ck_assert_int_eq(v, 1);
    cancel_leave(prev);
    cancel_token_unref(t);
    fx_teardown(K_SEM, &f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sync");
    TCase *tc = tcase_create("every wait");
    tcase_set_timeout(tc, TU_TIMEOUT);
    tcase_add_loop_test(tc, fails_at_once_and_takes_nothing_when_already_cancelled, 0, NKINDS);
    tcase_add_loop_test(tc, fails_ecanceled_when_cancelled_while_blocked, 0, 4 * NKINDS);
    tcase_add_loop_test(tc, fails_when_an_ancestor_is_cancelled, 0, NKINDS);
    tcase_add_loop_test(tc, fails_etimedout_when_the_reason_is_etimedout, 0, NKINDS);
    tcase_add_loop_test(tc, fails_etimedout_when_the_deadline_expires, 0, NKINDS);
    tcase_add_loop_test(tc, completes_normally_under_a_live_token, 0, 2 * NKINDS);
    tcase_add_loop_test(tc, a_signal_without_sa_restart_does_not_end_the_call, 0, NKINDS);
    tcase_add_loop_test(tc, is_the_plain_call_under_a_shield, 0, NKINDS);
    suite_add_tcase(s, tc);

    TCase *more = tcase_create("details");
    tcase_set_timeout(more, TU_TIMEOUT);
    tcase_add_loop_test(more, cond_wait_cancelled_by_a_holder_of_an_errorcheck_mutex_wakes, 0,
                        50);
    tcase_add_loop_test(more, cond_wait_passes_on_a_signal_it_took_when_cancelled, 0, 200);
    tcase_add_loop_test(more, sleep_lasts_at_least_the_duration, 0, 2);
    tcase_add_test(more, sleep_is_not_cut_short_by_a_signal);
    tcase_add_test(more, waitpid_with_wnohang_never_waits);
    tcase_add_test(more, sem_wait_takes_exactly_one_unit);
    suite_add_tcase(s, more);
    return tu_run_suite(s);
}

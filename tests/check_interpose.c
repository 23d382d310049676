/*
 * check_interpose.c - libcancel-interpose.so, linked into this program
 * with --no-as-needed (so that it also works under the sanitizers, whose
 * runtime must come first): plain libc names honour the current token,
 * and are exactly libc everywhere else (SPEC "Unmodified code", "Name
 * resolution").  This program links libcancel.so, not the internal
 * library: one token machinery per process, as users have it.
 */
#define _GNU_SOURCE
#include "testutil.h"

#include <cancel.h>

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>

/* ------------------------------------------------------------ helpers */

enum { C_READ, C_RECV, C_POLL, C_SELECT, C_NANOSLEEP, C_SLEEP, C_USLEEP, C_ACCEPT,
       C_WAITPID, C_EPOLL, C_PPOLL, C_COND, C_GETADDRINFO, C_GETNAMEINFO, C_SEM_TIMED,
       C_COUNT };

/* The interposer's count of calls made under an already cancelled token
 * (cancel_interpose(7)): a caller that spins on the error a cancelled
 * call gave it makes millions. */
static unsigned long interposed_calls(void)
{
    unsigned long (*f)(void) = (unsigned long (*)(void))dlsym(RTLD_DEFAULT,
                                                              "cancel__interpose_calls");
    ck_assert_ptr_nonnull(f);
    return f();
}

/*
 * A lookup written the way many callers write it: tried again while it
 * fails with EAI_AGAIN or is interrupted (EAI_SYSTEM with EINTR), up to
 * RETRY_CAP times.  A resolver path that answered a cancel with either,
 * or that retried under the cancelled token itself, would be called again
 * and again after the cancel: the tests bound that count.
 */
#define RETRY_CAP 100000
static long resolve_like_a_caller(int which)
{
    long r;
    int tries = 0;
    do {
        if (which == C_GETADDRINFO) {
            struct addrinfo *res = NULL;
            r = getaddrinfo("never.answers.invalid", "80", NULL, &res);
            if (r == 0)
                freeaddrinfo(res);
        } else {
            /* 192.0.2.1 (TEST-NET-1) is in no hosts file: a PTR query. */
            struct sockaddr_in a = { .sin_family = AF_INET,
                                     .sin_addr.s_addr = htonl(0xc0000201) };
            char host[NI_MAXHOST];
            r = getnameinfo((struct sockaddr *)&a, sizeof a, host, sizeof host, NULL, 0,
                            NI_NAMEREQD);
        }
    } while ((r == EAI_AGAIN || (r == EAI_SYSTEM && errno == EINTR)) && ++tries < RETRY_CAP);
    return r;
}

/* Under -D_FORTIFY_SOURCE=2 a read of a runtime count into a buffer of
 * known size is __read_chk. */
static volatile size_t runtime_one = 1;

struct job {
    int which;
    int fd;
    cancel_token_t *token;
    pthread_cond_t cond;
    pthread_mutex_t mutex;
    sem_t sem;
    bool clockwait;            /* C_SEM_TIMED: sem_clockwait, else sem_timedwait */
    clockid_t clock;           /* C_SEM_TIMED: the clock of the timeout */
    int64_t timeout_ns;        /* C_SEM_TIMED: from the start; 0: 10 s */
    int64_t took_ns;           /* C_SEM_TIMED: how long the call took */
    unsigned long calls_after_cancel; /* interposed_calls() from cancel to join */
    long result;
    int err;
    bool mutex_held;
    pid_t tid;
    tu_latch_t started;
    pthread_t thread;
};

static void *job_main(void *arg)
{
    struct job *j = arg;
    char buf[16];
    j->tid = tu_gettid();
    cancel_token_t *prev = cancel_enter(j->token);
    tu_latch_post(&j->started);
    errno = 0;
    switch (j->which) {
    case C_READ:
        j->result = read(j->fd, buf, runtime_one);
        break;
    case C_RECV:
        j->result = recv(j->fd, buf, sizeof buf, 0);
        break;
    case C_POLL: {
        struct pollfd p = { .fd = j->fd, .events = POLLIN, .revents = 0 };
        j->result = poll(&p, 1, -1);
        break;
    }
    case C_PPOLL: {
        struct pollfd p = { .fd = j->fd, .events = POLLIN, .revents = 0 };
        struct timespec ts = { 60, 0 };
        j->result = ppoll(&p, 1, &ts, NULL);
        break;
    }
    case C_SELECT: {
        fd_set rd;
        FD_ZERO(&rd);
        FD_SET(j->fd, &rd);
        j->result = select(j->fd + 1, &rd, NULL, NULL, NULL);
        break;
    }
    case C_NANOSLEEP: {
        struct timespec ts = { 60, 0 }, rem = { 0, 0 };
        j->result = nanosleep(&ts, &rem);
        break;
    }
    case C_SLEEP:
        j->result = sleep(60);
        break;
    case C_USLEEP:
        j->result = usleep(60 * 1000000u - 1);
        break;
    case C_ACCEPT:
        j->result = accept(j->fd, NULL, NULL);
        break;
    case C_WAITPID:
        j->result = waitpid(j->fd, NULL, 0);
        break;
    case C_EPOLL: {
        struct epoll_event ev;
        j->result = epoll_wait(j->fd, &ev, 1, -1);
        break;
    }
    case C_COND:
        pthread_mutex_lock(&j->mutex);
        j->result = pthread_cond_wait(&j->cond, &j->mutex);
        j->mutex_held = pthread_mutex_trylock(&j->mutex) == EBUSY;
        pthread_mutex_unlock(&j->mutex);
        break;
    case C_GETADDRINFO:
    case C_GETNAMEINFO:
        j->result = resolve_like_a_caller(j->which);
        break;
    case C_SEM_TIMED: {
        struct timespec at;
        clock_gettime(j->clock, &at);
        /* 10 s by default: far beyond any cancel or post of the tests, and
         * short of Check's timer, so a wait the cancel did not reach
         * fails on an assertion (ETIMEDOUT), not on the timer. */
        int64_t ns = j->timeout_ns ? j->timeout_ns : 10 * 1000000000LL;
        at.tv_sec += (time_t)(ns / 1000000000);
        at.tv_nsec += (long)(ns % 1000000000);
        if (at.tv_nsec >= 1000000000) {
            at.tv_sec++;
            at.tv_nsec -= 1000000000;
        }
        int64_t t0 = tu_now_ns();
        j->result = j->clockwait ? sem_clockwait(&j->sem, j->clock, &at)
                                 : sem_timedwait(&j->sem, &at);
        j->took_ns = tu_now_ns() - t0;
        break;
    }
    }
    j->err = errno;
    cancel_leave(prev);
    return NULL;
}

/* When not -1: a descriptor that must poll readable before the cancel. */
static int cancel_after_readable = -1;

/* Starts the job, waits until it sleeps in the kernel, cancels its token
 * and joins it; returns the nanoseconds from the cancel to the join. */
static int64_t run_cancelled_while_blocked(struct job *j)
{
    j->token = cancel_token_new();
    tu_latch_init(&j->started);
    tu_thread_start(&j->thread, job_main, j);
    tu_latch_wait(&j->started);
    tu_wait_until_sleeping(j->tid);
    if (cancel_after_readable >= 0) {
        struct pollfd p = { .fd = cancel_after_readable, .events = POLLIN, .revents = 0 };
        ck_assert_int_eq(poll(&p, 1, 10000), 1);
    }
    unsigned long calls0 = interposed_calls();
    int64_t t0 = tu_now_ns();
    cancel_token_cancel(j->token, 0);
    tu_thread_join(j->thread);
    int64_t dt = tu_now_ns() - t0;
    j->calls_after_cancel = interposed_calls() - calls0;
    cancel_token_unref(j->token);
    return dt;
}

/* At most the call itself after the cancel (if the cancel came before it
 * was made): nothing in the job calls again. */
static void check_cancelled(struct job *j, int64_t dt)
{
    ck_assert_int_eq(j->result, -1);
    ck_assert_int_eq(j->err, ECANCELED);
    ck_assert_int_lt(dt, TU_WAKE_GUARD_NS);
    ck_assert_uint_le(j->calls_after_cancel, 1);
}

/* ------------------------------------------- honours the current token */

START_TEST(plain_read_fails_ecanceled_when_cancelled_while_blocked)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    struct job j = { .which = C_READ, .fd = p[0] };
    check_cancelled(&j, run_cancelled_while_blocked(&j));
    /* Nothing was lost: a byte written now is there for the next reader. */
    ck_assert_int_eq(write(p[1], "x", 1), 1);
    char c;
    ck_assert_int_eq(read(p[0], &c, 1), 1);
    close(p[0]);
    close(p[1]);
}
END_TEST

START_TEST(plain_recv_fails_ecanceled_when_cancelled_while_blocked)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct job j = { .which = C_RECV, .fd = sv[0] };
    check_cancelled(&j, run_cancelled_while_blocked(&j));
    close(sv[0]);
    close(sv[1]);
}
END_TEST

/* poll, ppoll, select, epoll_wait: -1 with ECANCELED, never 0 or EINTR. */
START_TEST(poll_family_fails_minus_one_ecanceled_never_zero)
{
    static const int calls[] = { C_POLL, C_PPOLL, C_SELECT, C_EPOLL };
    int which = calls[_i];
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    int fd = p[0];
    if (which == C_EPOLL) {
        fd = epoll_create1(0);
        struct epoll_event ev = { .events = EPOLLIN, .data.fd = p[0] };
        ck_assert_int_eq(epoll_ctl(fd, EPOLL_CTL_ADD, p[0], &ev), 0);
    }
    struct job j = { .which = which, .fd = fd };
    check_cancelled(&j, run_cancelled_while_blocked(&j));
    if (fd != p[0])
        close(fd);
    close(p[0]);
    close(p[1]);
}
END_TEST

START_TEST(sleeps_are_cut_short_with_ecanceled)
{
    static const int calls[] = { C_NANOSLEEP, C_USLEEP, C_SLEEP };
    struct job j = { .which = calls[_i] };
    int64_t dt = run_cancelled_while_blocked(&j);
    ck_assert_int_lt(dt, TU_WAKE_GUARD_NS);
    ck_assert_int_eq(j.err, ECANCELED);
    if (j.which == C_SLEEP)
        ck_assert_int_gt(j.result, 0); /* seconds left, as after a signal */
    else
        ck_assert_int_eq(j.result, -1);
}
END_TEST

START_TEST(accept_and_waitpid_fail_ecanceled_and_take_nothing)
{
    if (_i == 0) {
        int l = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = { .sin_family = AF_INET,
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        ck_assert_int_eq(bind(l, (struct sockaddr *)&a, sizeof a), 0);
        ck_assert_int_eq(listen(l, 4), 0);
        struct job j = { .which = C_ACCEPT, .fd = l };
        check_cancelled(&j, run_cancelled_while_blocked(&j));
        close(l);
    } else {
        int p[2];
        ck_assert_int_eq(pipe(p), 0);
        pid_t child = fork();
        if (child == 0) {
            char c;
            close(p[1]);
            (void)!read(p[0], &c, 1);
            _exit(7);
        }
        close(p[0]);
        struct job j = { .which = C_WAITPID, .fd = child };
        check_cancelled(&j, run_cancelled_while_blocked(&j));
        close(p[1]);
        int st = 0;
        ck_assert_int_eq(waitpid(child, &st, 0), child); /* not reaped by the cancelled call */
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 7);
    }
}
END_TEST

START_TEST(read_under_a_cancelled_token_fails_at_once_every_time)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(write(p[1], "ab", 2), 2);
    cancel_token_t *t = cancel_token_new();
    cancel_token_cancel(t, ETIMEDOUT);
    cancel_token_t *prev = cancel_enter(t);
    char c;
    for (int k = 0; k < 2; k++) {
        errno = 0;
        ck_assert_int_eq(read(p[0], &c, 1), -1);
        ck_assert_int_eq(errno, ETIMEDOUT);
    }
    cancel_leave(prev);
    ck_assert_int_eq(read(p[0], &c, 1), 1); /* nothing was consumed */
    cancel_token_unref(t);
    close(p[0]);
    close(p[1]);
}
END_TEST

/* --------------------------------------------- exactly libc elsewhere */

START_TEST(a_shield_makes_read_the_plain_call)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(write(p[1], "a", 1), 1);
    cancel_token_t *t = cancel_token_new();
    cancel_token_cancel(t, 0);
    cancel_token_t *prev = cancel_enter(t);
    cancel_shield_begin();
    char c;
    ck_assert_int_eq(read(p[0], &c, 1), 1);
    cancel_shield_end();
    cancel_leave(prev);
    cancel_token_unref(t);
    close(p[0]);
    close(p[1]);
}
END_TEST

static void on_alarm(int signo)
{
    (void)signo;
}

static void *send_alarm(void *arg)
{
    pthread_t *target = arg;
    pid_t *tid = (pid_t *)(target + 1);
    tu_wait_until_sleeping(*tid);
    pthread_kill(*target, SIGALRM);
    return NULL;
}

/* No token: a signal without SA_RESTART interrupts read with EINTR, as libc. */
START_TEST(read_with_no_token_sees_eintr_from_sigalrm_without_sa_restart)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm; /* no SA_RESTART */
    sigemptyset(&sa.sa_mask);
    ck_assert_int_eq(sigaction(SIGALRM, &sa, NULL), 0);
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    struct { pthread_t self; pid_t tid; } me = { pthread_self(), tu_gettid() };
    pthread_t killer;
    tu_thread_start(&killer, send_alarm, &me);
    char c;
    errno = 0;
    ssize_t r = read(p[0], &c, 1);
    int err = errno;
    tu_thread_join(killer);
    ck_assert_int_eq(r, -1);
    ck_assert_int_eq(err, EINTR);
    close(p[0]);
    close(p[1]);
}
END_TEST

/* A descriptor the caller made O_NONBLOCK: EAGAIN, as libc. */
START_TEST(nonblocking_read_under_a_live_token_gives_eagain)
{
    int p[2];
    ck_assert_int_eq(pipe2(p, O_NONBLOCK), 0);
    cancel_token_t *t = cancel_token_new();
    cancel_token_t *prev = cancel_enter(t);
    char c;
    errno = 0;
    ck_assert_int_eq(read(p[0], &c, 1), -1);
    ck_assert_int_eq(errno, EAGAIN);
    cancel_leave(prev);
    cancel_token_unref(t);
    close(p[0]);
    close(p[1]);
}
END_TEST

/* SO_RCVTIMEO keeps bounding a wait under a token (EAGAIN when it expires). */
START_TEST(so_rcvtimeo_still_bounds_a_recv_under_a_token)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct timeval tv = { 0, 100 * 1000 };
    ck_assert_int_eq(setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    cancel_token_t *t = cancel_token_new();
    cancel_token_t *prev = cancel_enter(t);
    char c;
    int64_t t0 = tu_now_ns();
    errno = 0;
    ssize_t r = _i ? read(sv[0], &c, 1) : recv(sv[0], &c, 1, 0);
    int err = errno;
    int64_t dt = tu_now_ns() - t0;
    cancel_leave(prev);
    ck_assert_int_eq(r, -1);
    ck_assert_int_eq(err, EAGAIN);
    ck_assert_int_ge(dt, 90 * 1000000LL);
    ck_assert_int_lt(dt, TU_WAKE_GUARD_NS);
    cancel_token_unref(t);
    close(sv[0]);
    close(sv[1]);
}
END_TEST

/* A vfork child shares its parent's thread-local storage, current token
 * included: there the calls are the plain ones. */
START_TEST(a_vfork_child_makes_plain_calls_under_its_parents_cancelled_token)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(write(p[1], "v", 1), 1);
    cancel_token_t *t = cancel_token_new();
    cancel_token_cancel(t, 0);
    cancel_token_t *prev = cancel_enter(t);
    pid_t child = vfork();
    if (child == 0) {
        char c;
        _exit(read(p[0], &c, 1) == 1 && c == 'v' ? 0 : 1);
    }
    cancel_leave(prev);
    ck_assert_int_gt(child, 0);
    int st = 0;
    ck_assert_int_eq(waitpid(child, &st, 0), child);
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 0);
    cancel_token_unref(t);
    close(p[0]);
    close(p[1]);
}
END_TEST

/* ----------------------------------------- condition variables (opt-in) */

START_TEST(cond_wait_fails_ecanceled_with_the_mutex_held_under_sync)
{
    struct job j = { .which = C_COND };
    pthread_cond_init(&j.cond, NULL);
    pthread_mutex_init(&j.mutex, NULL);
    int64_t dt = run_cancelled_while_blocked(&j);
    ck_assert_int_lt(dt, TU_WAKE_GUARD_NS);
    ck_assert_int_eq(j.result, ECANCELED);
    ck_assert(j.mutex_held);
}
END_TEST

/* Callers linked against the old condition variable ABI reach glibc's
 * compatibility code, never ours (the version script): under a cancelled
 * token with CANCEL_INTERPOSE=sync their wait still waits for a signal. */
#if defined(__x86_64__)
int old_cond_wait(pthread_cond_t *c, pthread_mutex_t *m);
int old_cond_signal(pthread_cond_t *c);
int old_cond_destroy(pthread_cond_t *c);
__asm__(".symver old_cond_wait, pthread_cond_wait@GLIBC_2.2.5");
__asm__(".symver old_cond_destroy, pthread_cond_destroy@GLIBC_2.2.5");
__asm__(".symver old_cond_signal, pthread_cond_signal@GLIBC_2.2.5");

struct old_abi {
    pthread_cond_t cond; /* an old-ABI condvar: zero-initialised */
    pthread_mutex_t mutex;
    bool flag;
    pid_t tid;
};

static void *old_signaller(void *arg)
{
    struct old_abi *o = arg;
    tu_wait_until_sleeping(o->tid);
    pthread_mutex_lock(&o->mutex);
    o->flag = true;
    old_cond_signal(&o->cond);
    pthread_mutex_unlock(&o->mutex);
    return NULL;
}

START_TEST(an_old_abi_cond_wait_caller_is_not_captured)
{
    struct old_abi o;
    memset(&o, 0, sizeof o);
    pthread_mutex_init(&o.mutex, NULL);
    o.tid = tu_gettid();
    cancel_token_t *t = cancel_token_new();
    cancel_token_cancel(t, 0);
    cancel_token_t *prev = cancel_enter(t);
    pthread_t th;
    tu_thread_start(&th, old_signaller, &o);
    pthread_mutex_lock(&o.mutex);
    int rc = 0;
    while (!o.flag && rc == 0)
        rc = old_cond_wait(&o.cond, &o.mutex);
    pthread_mutex_unlock(&o.mutex);
    cancel_leave(prev);
    tu_thread_join(th);
    ck_assert_int_eq(rc, 0);
    ck_assert(o.flag);
    old_cond_destroy(&o.cond); /* frees what glibc's old-ABI wait allocated */
    cancel_token_unref(t);
}
END_TEST
#endif

/* ------------------------------------------------ semaphores (opt-in) */

/* The timed semaphore waits, by loop index: sem_timedwait, sem_clockwait
 * on CLOCK_MONOTONIC, sem_clockwait on CLOCK_REALTIME. */
static void sem_job(struct job *j, int i, unsigned value)
{
    static const struct { bool clockwait; clockid_t clock; } kinds[] = {
        { false, CLOCK_REALTIME }, { true, CLOCK_MONOTONIC }, { true, CLOCK_REALTIME },
    };
    j->which = C_SEM_TIMED;
    j->clockwait = kinds[i].clockwait;
    j->clock = kinds[i].clock;
    ck_assert_int_eq(sem_init(&j->sem, 0, value), 0);
}

/* The semaphore's value, and (glibc, 64-bit: the high half of its word,
 * nptl/semaphoreP.h) its count of waiters, which a wait that left
 * without undoing its own would leave behind. */
static void check_sem_idle(sem_t *sem, int value)
{
    int v = -1;
    ck_assert_int_eq(sem_getvalue(sem, &v), 0);
    ck_assert_int_eq(v, value);
#if UINTPTR_MAX == UINT64_MAX
    uint64_t word;
    memcpy(&word, sem, sizeof word);
    ck_assert_uint_eq(word >> 32, 0);
#endif
}

/* A timed wait on SEM with T current (NULL: none, so glibc's own call);
 * its result in *R, its errno in *ERR. */
static void sem_both(sem_t *sem, bool clockwait, clockid_t clock, const struct timespec *at,
                     cancel_token_t *t, int *r, int *err)
{
    cancel_token_t *prev = cancel_enter(t);
    errno = 0;
    *r = clockwait ? sem_clockwait(sem, clock, at) : sem_timedwait(sem, at);
    *err = errno;
    cancel_leave(prev);
}

START_TEST(sem_timedwait_fails_ecanceled_when_cancelled_while_blocked_and_takes_nothing)
{
    struct job j;
    memset(&j, 0, sizeof j);
    sem_job(&j, _i, 0);
    check_cancelled(&j, run_cancelled_while_blocked(&j));
    check_sem_idle(&j.sem, 0);
    /* Nothing was lost: a unit posted now is there, once. */
    ck_assert_int_eq(sem_post(&j.sem), 0);
    ck_assert_int_eq(sem_trywait(&j.sem), 0);
    ck_assert_int_eq(sem_trywait(&j.sem), -1);
    ck_assert_int_eq(errno, EAGAIN);
    sem_destroy(&j.sem);
}
END_TEST

/* Starts J under a live token of its own (J->token). */
static void start_sem_job(struct job *j)
{
    j->token = cancel_token_new();
    tu_latch_init(&j->started);
    tu_thread_start(&j->thread, job_main, j);
    tu_latch_wait(&j->started);
}

/* Joins J within the wake guard; a wait still blocked then is cancelled
 * (so the test fails on an assertion, not on Check's timer). */
static void join_sem_job(struct job *j)
{
    struct timespec limit;
    clock_gettime(CLOCK_REALTIME, &limit);
    limit.tv_sec += TU_WAKE_GUARD_NS / 1000000000;
    int rc = pthread_timedjoin_np(j->thread, NULL, &limit);
    if (rc != 0) {
        cancel_token_cancel(j->token, 0);
        tu_thread_join(j->thread);
    }
    cancel_token_unref(j->token);
    ck_assert_msg(rc == 0, "the semaphore wait was still blocked after 2 s");
}

START_TEST(sem_timedwait_times_out_with_etimedout_under_a_live_token)
{
    struct job j;
    memset(&j, 0, sizeof j);
    sem_job(&j, _i, 0);
    j.timeout_ns = 100 * 1000000LL;
    start_sem_job(&j);
    join_sem_job(&j);
    ck_assert_int_eq(j.result, -1);
    ck_assert_int_eq(j.err, ETIMEDOUT);
    ck_assert_int_ge(j.took_ns, 90 * 1000000LL);
    check_sem_idle(&j.sem, 0);
    sem_destroy(&j.sem);
}
END_TEST

START_TEST(sem_timedwait_under_a_live_token_is_woken_by_a_post_and_takes_it)
{
    struct job j;
    memset(&j, 0, sizeof j);
    sem_job(&j, _i, 0);
    start_sem_job(&j);
    tu_wait_until_sleeping(j.tid);
    ck_assert_int_eq(sem_post(&j.sem), 0);
    join_sem_job(&j);
    ck_assert_int_eq(j.result, 0);
    check_sem_idle(&j.sem, 0); /* the unit was taken, once */
    sem_destroy(&j.sem);
}
END_TEST

/* Under a cancelled token: at once, every time, with the token's errno
 * (ETIMEDOUT for a deadline), and the unit that was there is not taken. */
START_TEST(sem_timedwait_under_a_cancelled_token_fails_at_once_and_takes_nothing)
{
    sem_t sem;
    ck_assert_int_eq(sem_init(&sem, 0, 1), 0);
    struct timespec at;
    clock_gettime(CLOCK_MONOTONIC, &at);
    at.tv_sec += 60;
    for (int reason = 0; reason < 2; reason++) {
        cancel_token_t *t = cancel_token_new();
        cancel_token_cancel(t, reason ? ETIMEDOUT : 0);
        for (int k = 0; k < 2; k++) {
            int r, err;
            sem_both(&sem, true, CLOCK_MONOTONIC, &at, t, &r, &err);
            ck_assert_int_eq(r, -1);
            ck_assert_int_eq(err, reason ? ETIMEDOUT : ECANCELED);
            struct timespec rt;
            clock_gettime(CLOCK_REALTIME, &rt);
            rt.tv_sec += 60;
            sem_both(&sem, false, CLOCK_REALTIME, &rt, t, &r, &err);
            ck_assert_int_eq(r, -1);
            ck_assert_int_eq(err, reason ? ETIMEDOUT : ECANCELED);
        }
        cancel_token_unref(t);
    }
    check_sem_idle(&sem, 1);
    sem_destroy(&sem);
}
END_TEST

/*
 * Bad arguments and expired timeouts give what glibc gives, checked
 * against glibc itself (the same call with no current token) and against
 * the values glibc 2.36 gives: EINVAL for tv_nsec out of range (even with
 * a unit there, which stays) or a clock other than CLOCK_REALTIME and
 * CLOCK_MONOTONIC; a unit taken even when the time has passed;
 * ETIMEDOUT for a time passed (negative included) with no unit.
 */
START_TEST(sem_timedwait_bad_arguments_give_what_glibc_gives_under_a_token)
{
    static const struct {
        bool clockwait;
        clockid_t clock;
        struct timespec at;
        unsigned value;
        int r, err, left;
    } cases[] = {
        { false, CLOCK_REALTIME, { 0, 1000000000 }, 1, -1, EINVAL, 1 },
        { false, CLOCK_REALTIME, { 0, -1 }, 0, -1, EINVAL, 0 },
        { true, CLOCK_MONOTONIC, { 0, 1000000000 }, 1, -1, EINVAL, 1 },
        { true, CLOCK_PROCESS_CPUTIME_ID, { 0, 0 }, 1, -1, EINVAL, 1 },
        { true, CLOCK_BOOTTIME, { 0, 0 }, 0, -1, EINVAL, 0 },
        { false, CLOCK_REALTIME, { -1, 0 }, 1, 0, 0, 0 },
        { false, CLOCK_REALTIME, { -1, 0 }, 0, -1, ETIMEDOUT, 0 },
        { true, CLOCK_MONOTONIC, { 0, 0 }, 1, 0, 0, 0 },
        { true, CLOCK_MONOTONIC, { 0, 0 }, 0, -1, ETIMEDOUT, 0 },
        { true, CLOCK_REALTIME, { 1, 0 }, 0, -1, ETIMEDOUT, 0 },
    };
    cancel_token_t *t = cancel_token_new();
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        for (int with_token = 0; with_token < 2; with_token++) {
            sem_t sem;
            ck_assert_int_eq(sem_init(&sem, 0, cases[k].value), 0);
            int r, err;
            sem_both(&sem, cases[k].clockwait, cases[k].clock, &cases[k].at,
                     with_token ? t : NULL, &r, &err);
            ck_assert_msg(r == cases[k].r && (r == 0 || err == cases[k].err),
                          "case %zu %s: %d, errno %d; glibc gives %d, errno %d", k,
                          with_token ? "under a token" : "plain", r, err, cases[k].r,
                          cases[k].err);
            check_sem_idle(&sem, cases[k].left);
            sem_destroy(&sem);
        }
    }
    cancel_token_unref(t);
}
END_TEST

/*
 * Without CANCEL_INTERPOSE=sync the semaphore waits are glibc's, token or
 * not: under a cancelled token one takes the unit that is there, and one
 * with nothing there and its time passed times out.  (The opt-in is read
 * at the first such call under a token, which in fork mode is made in
 * this test's own process; had it been read before, this test would fail,
 * never pass wrongly.)
 */
START_TEST(sem_timedwait_without_the_opt_in_is_the_plain_call)
{
    ck_assert_int_eq(unsetenv("CANCEL_INTERPOSE"), 0);
    sem_t sem;
    ck_assert_int_eq(sem_init(&sem, 0, 2), 0);
    cancel_token_t *t = cancel_token_new();
    cancel_token_cancel(t, 0);
    struct timespec rt, mono;
    clock_gettime(CLOCK_REALTIME, &rt);
    clock_gettime(CLOCK_MONOTONIC, &mono);
    int r, err;
    sem_both(&sem, false, CLOCK_REALTIME, &rt, t, &r, &err);
    ck_assert_int_eq(r, 0);
    sem_both(&sem, true, CLOCK_MONOTONIC, &mono, t, &r, &err);
    ck_assert_int_eq(r, 0);
    sem_both(&sem, false, CLOCK_REALTIME, &rt, t, &r, &err);
    ck_assert_int_eq(r, -1);
    ck_assert_int_eq(err, ETIMEDOUT);
    sem_both(&sem, true, CLOCK_MONOTONIC, &mono, t, &r, &err);
    ck_assert_int_eq(r, -1);
    ck_assert_int_eq(err, ETIMEDOUT);
    cancel_token_unref(t);
    check_sem_idle(&sem, 0);
    sem_destroy(&sem);
}
END_TEST

/* --------------------------------------------------- name resolution */

/*
 * A resolver that never answers: this test process moves into private
 * mount and network namespaces (root only), brings up its own loopback,
 * binds a UDP socket on 127.0.0.1:53 that reads nothing, and bind-mounts
 * a resolv.conf naming it (timeout 30 s).  A plain lookup would block for
 * 30 s there.
 */
static int never_answering_resolver(void)
{
    if (unshare(CLONE_NEWNS | CLONE_NEWNET) != 0) {
        ck_abort_msg("unshare(CLONE_NEWNS | CLONE_NEWNET) failed (%s): the resolver test "
                     "needs root", strerror(errno));
    }
    /* "none": the kernel ignores the type of a propagation change or a
     * bind mount, but memcheck reads a NULL one as a bad pointer. */
    ck_assert_int_eq(mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL), 0);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    ck_assert_int_eq(ioctl(s, SIOCGIFFLAGS, &ifr), 0);
    ifr.ifr_flags |= IFF_UP;
    ck_assert_int_eq(ioctl(s, SIOCSIFFLAGS, &ifr), 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(53),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    ck_assert_int_eq(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    char path[] = "/tmp/check_interpose_resolvXXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    const char *conf = "nameserver 127.0.0.1\noptions timeout:30 attempts:1\n";
    ck_assert_int_eq(write(fd, conf, strlen(conf)), (ssize_t)strlen(conf));
    close(fd);
    ck_assert_int_eq(mount(path, "/etc/resolv.conf", "none", MS_BIND, NULL), 0);
    unlink(path);
    return s;
}

/*
 * A lookup under way (its query reached the stub before the cancel) was
 * cancelled: EAI_SYSTEM with ECANCELED, promptly, and no interposed call
 * at all after the cancel: the caller's retry loop (resolve_like_a_caller)
 * did not go round again, and nothing retried under the cancelled token.
 */
static void check_lookup_cancelled(struct job *j, int64_t dt)
{
    ck_assert_msg(j->calls_after_cancel == 0,
                  "%lu interposed calls after the cancel: the lookup was retried",
                  j->calls_after_cancel);
    ck_assert_int_eq(j->result, EAI_SYSTEM);
    ck_assert_int_eq(j->err, ECANCELED);
    ck_assert_int_lt(dt, TU_WAKE_GUARD_NS);
}

START_TEST(getaddrinfo_fails_eai_system_ecanceled_when_cancelled_while_resolving)
{
    int stub = never_answering_resolver();
    cancel_after_readable = stub; /* the query reached the resolver: under way */
    struct job j = { .which = C_GETADDRINFO };
    int64_t dt = run_cancelled_while_blocked(&j);
    check_lookup_cancelled(&j, dt);
    close(stub);
}
END_TEST

START_TEST(getnameinfo_fails_eai_system_ecanceled_when_cancelled_while_resolving)
{
    int stub = never_answering_resolver();
    cancel_after_readable = stub; /* the PTR query reached the resolver */
    struct job j = { .which = C_GETNAMEINFO };
    int64_t dt = run_cancelled_while_blocked(&j);
    check_lookup_cancelled(&j, dt);
    close(stub);
}
END_TEST

/*
 * The abandoned lookup finishes in the background and frees what it got:
 * after the cancel the stub answers the query (NXDOMAIN), the lookup
 * thread ends, and the thread count comes back; under ASan, LeakSanitizer
 * at this test process's exit reports anything the lookup left behind.
 */
START_TEST(an_abandoned_lookup_ends_in_the_background_and_frees_its_result)
{
    int stub = never_answering_resolver();
    int threads0 = tu_count_threads();
    cancel_after_readable = stub;
    struct job j = { .which = C_GETADDRINFO };
    int64_t dt = run_cancelled_while_blocked(&j);
    check_lookup_cancelled(&j, dt);
    /* Answer every query now: NXDOMAIN (QR set, RCODE 3). */
    int64_t until = tu_now_ns() + 10 * 1000000000LL;
    while (tu_count_threads() > threads0 && tu_now_ns() < until) {
        unsigned char q[512];
        struct sockaddr_in from;
        socklen_t len = sizeof from;
        struct pollfd p = { .fd = stub, .events = POLLIN, .revents = 0 };
        if (poll(&p, 1, 10) == 1) {
            ssize_t n = recvfrom(stub, q, sizeof q, 0, (struct sockaddr *)&from, &len);
            if (n >= 12) {
                q[2] |= 0x80;
                q[3] = (unsigned char)((q[3] & 0xf0) | 3);
                sendto(stub, q, (size_t)n, 0, (struct sockaddr *)&from, len);
            }
        }
    }
    ck_assert_int_le(tu_count_threads(), threads0);
    close(stub);
}
END_TEST

START_TEST(cancel_getaddrinfo_works_and_fails_at_once_under_a_cancelled_token)
{
    struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_NUMERICHOST };
    struct addrinfo *res = NULL;
    cancel_token_t *t = cancel_token_new();
    cancel_token_t *prev = cancel_enter(t);
    ck_assert_int_eq(cancel_getaddrinfo("127.0.0.1", "80", &hints, &res), 0);
    ck_assert_ptr_nonnull(res);
    ck_assert_int_eq(((struct sockaddr_in *)res->ai_addr)->sin_port, htons(80));
    freeaddrinfo(res);
    res = NULL;
    ck_assert_int_eq(getaddrinfo("localhost", NULL, &hints, &res), EAI_NONAME);
    cancel_token_cancel(t, 0);
    errno = 0;
    ck_assert_int_eq(cancel_getaddrinfo("127.0.0.1", "80", &hints, &res), EAI_SYSTEM);
    ck_assert_int_eq(errno, ECANCELED);
    char host[64];
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    errno = 0;
    ck_assert_int_eq(getnameinfo((struct sockaddr *)&a, sizeof a, host, sizeof host, NULL, 0,
                                 NI_NUMERICHOST),
                     EAI_SYSTEM);
    ck_assert_int_eq(errno, ECANCELED);
    cancel_leave(prev);
    ck_assert_int_eq(getnameinfo((struct sockaddr *)&a, sizeof a, host, sizeof host, NULL, 0,
                                 NI_NUMERICHOST),
                     0);
    ck_assert_str_eq(host, "127.0.0.1");
    cancel_token_unref(t);
}
END_TEST

/* ---------------------------------- a thread from a library constructor */

extern long ip_ctor_result;
extern int ip_ctor_errno, ip_ctor_pipe;
void ip_ctor_join(void);

START_TEST(a_thread_started_by_a_library_constructor_is_served)
{
    ip_ctor_join();
    ck_assert_int_eq(ip_ctor_result, -1);
    ck_assert_int_eq(ip_ctor_errno, ECANCELED);
    char c = 0;
    ck_assert_int_eq(read(ip_ctor_pipe, &c, 1), 1); /* nothing was consumed */
    ck_assert_int_eq(c, 'c');
}
END_TEST

/* ------------------------------------------------ the spin counter */

START_TEST(calls_under_a_cancelled_token_are_counted)
{
    unsigned long (*calls)(void) = (unsigned long (*)(void))dlsym(RTLD_DEFAULT,
                                                                  "cancel__interpose_calls");
    ck_assert_ptr_nonnull(calls);
    unsigned long before = calls();
    cancel_token_t *t = cancel_token_new();
    cancel_token_cancel(t, 0);
    cancel_token_t *prev = cancel_enter(t);
    for (int k = 0; k < 3; k++)
        ck_assert_int_eq(poll(NULL, 0, 0), -1);
    cancel_leave(prev);
    ck_assert_int_eq(poll(NULL, 0, 0), 0);
    ck_assert_uint_eq(calls() - before, 3);
    cancel_token_unref(t);
}
END_TEST

int main(void)
{
#if defined(__SANITIZE_THREAD__)
    /* Documented in cancel_interpose(7): ThreadSanitizer's own interceptors
     * of read, poll, pthread_cond_wait, vfork ... come first in the process
     * and run the interposer inside them, where TSan ignores the
     * synchronisation of the code they call (so it reports false races),
     * turns vfork into fork and binds old-ABI condvar callers itself.  The
     * interposer is tested plain, fortified and under ASan+UBSan instead. */
    fprintf(stderr, "check_interpose: not run under ThreadSanitizer (see cancel_interpose(7))\n");
    ip_ctor_join();
    return 77;
#endif
    ip_ctor_join(); /* before any test forks: see libip_ctor.c */
    setenv("CANCEL_INTERPOSE", "sync", 1);
    Suite *s = suite_create("interpose");
    TCase *tc = tcase_create("interpose");
    tcase_set_timeout(tc, TU_TIMEOUT);
    tcase_add_test(tc, plain_read_fails_ecanceled_when_cancelled_while_blocked);
    tcase_add_test(tc, plain_recv_fails_ecanceled_when_cancelled_while_blocked);
    tcase_add_loop_test(tc, poll_family_fails_minus_one_ecanceled_never_zero, 0, 4);
    tcase_add_loop_test(tc, sleeps_are_cut_short_with_ecanceled, 0, 3);
    tcase_add_loop_test(tc, accept_and_waitpid_fail_ecanceled_and_take_nothing, 0, 2);
    tcase_add_test(tc, read_under_a_cancelled_token_fails_at_once_every_time);
    tcase_add_test(tc, a_shield_makes_read_the_plain_call);
    tcase_add_test(tc, read_with_no_token_sees_eintr_from_sigalrm_without_sa_restart);
    tcase_add_test(tc, nonblocking_read_under_a_live_token_gives_eagain);
    tcase_add_loop_test(tc, so_rcvtimeo_still_bounds_a_recv_under_a_token, 0, 2);
    tcase_add_test(tc, a_vfork_child_makes_plain_calls_under_its_parents_cancelled_token);
    tcase_add_test(tc, cond_wait_fails_ecanceled_with_the_mutex_held_under_sync);
#if defined(__x86_64__)
    tcase_add_test(tc, an_old_abi_cond_wait_caller_is_not_captured);
#endif
    tcase_add_loop_test(tc,
                        sem_timedwait_fails_ecanceled_when_cancelled_while_blocked_and_takes_nothing,
                        0, 3);
    tcase_add_loop_test(tc, sem_timedwait_times_out_with_etimedout_under_a_live_token, 0, 3);
    tcase_add_loop_test(tc, sem_timedwait_under_a_live_token_is_woken_by_a_post_and_takes_it, 0,
                        3);
    tcase_add_test(tc, sem_timedwait_under_a_cancelled_token_fails_at_once_and_takes_nothing);
    tcase_add_test(tc, sem_timedwait_bad_arguments_give_what_glibc_gives_under_a_token);
    tcase_add_test(tc, sem_timedwait_without_the_opt_in_is_the_plain_call);
    tcase_add_test(tc, getaddrinfo_fails_eai_system_ecanceled_when_cancelled_while_resolving);
    tcase_add_test(tc, getnameinfo_fails_eai_system_ecanceled_when_cancelled_while_resolving);
    tcase_add_test(tc, cancel_getaddrinfo_works_and_fails_at_once_under_a_cancelled_token);
    tcase_add_test(tc, an_abandoned_lookup_ends_in_the_background_and_frees_its_result);
    tcase_add_test(tc, calls_under_a_cancelled_token_are_counted);
    tcase_add_test(tc, a_thread_started_by_a_library_constructor_is_served);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}

/*
 * check_exhaust.c - the library out of descriptors and out of threads.
 *
 * Each test runs in its own process (Check's fork mode), so the limits it
 * lowers and the descriptors it fills die with it.  Out of descriptors:
 * cancel_token_fd fails with EMFILE while cancelling still works, and a
 * wrapped call that must block still blocks and is still cancelled (the
 * degraded mode of src/wake.c: the token's flag is read every 10 ms).  Out
 * of threads: spawn fails with EAGAIN and the scope can still be cancelled
 * and joined.
 */
#include "internal.h"
#include "testutil.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/socket.h>

/* Lowers RLIMIT_NOFILE to 64 and fills every free descriptor below it;
 * returns how many were filled.  release_descriptors closes them again
 * (LeakSanitizer needs descriptors at exit to read /proc). */
static int filled[64];
static int nfilled;
static void release_descriptors(void)
{
    while (nfilled > 0)
        close(filled[--nfilled]);
}

static int fill_descriptors(void)
{
    struct rlimit rl;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rl.rlim_cur = 64;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    int fd;
    while ((fd = dup(0)) >= 0) {
        ck_assert_int_lt(nfilled, 64);
        filled[nfilled++] = fd;
    }
    ck_assert_int_eq(errno, EMFILE);
    return nfilled;
}

static _Atomic int cb_runs;
static void count_cb(void *arg, int reason)
{
    (void)arg;
    (void)reason;
    atomic_fetch_add(&cb_runs, 1);
}

START_TEST(token_fd_fails_emfile_out_of_descriptors_and_cancel_still_works)
{
    cancel_token_t *root = cancel_token_new();
    cancel_token_t *t = cancel_token_child(root);
    cancel_callback_t cb;
    ck_assert_int_eq(cancel_callback_add(&cb, t, count_cb, NULL), 0);
    fill_descriptors();

    errno = 0;
    ck_assert_int_eq(cancel_token_fd(t), -1);
    ck_assert_int_eq(errno, EMFILE);
    ck_assert(!cancel_token_is_cancelled(t));
    ck_assert(cancel_token_cancel(root, 0));
    ck_assert(cancel_token_is_cancelled(t));
    ck_assert_int_eq(cb_runs, 1);
    ck_assert_int_eq(cancel_token_wait(t, NULL), 0);

    /* One descriptor free again: the fd comes, already readable. */
    close(filled[--nfilled]);
    int fd = cancel_token_fd(t);
    ck_assert_int_ge(fd, 0);
    struct pollfd p = { .fd = fd, .events = POLLIN, .revents = 0 };
    ck_assert_int_eq(poll(&p, 1, 0), 1);
    cancel_token_unref(t);
    cancel_token_unref(root);
    release_descriptors();
}
END_TEST

START_TEST(cancel_on_signal_fails_emfile_out_of_descriptors_and_retry_succeeds)
{
    cancel_token_t *t = cancel_token_new();
    fill_descriptors();
    /* The first registration needs the signal pipe. */
    ck_assert_int_eq(cancel_token_cancel_on_signal(t, SIGUSR1), EMFILE);
    ck_assert(!cancel_token_is_cancelled(t));
    close(filled[--nfilled]);
    close(filled[--nfilled]);
    ck_assert_int_eq(cancel_token_cancel_on_signal(t, SIGUSR1), 0);
    ck_assert_int_eq(kill(getpid(), SIGUSR1), 0);
    ck_assert_int_eq(cancel_token_wait(t, NULL), 0);
    cancel_token_unref(t);
    release_descriptors();
}
END_TEST

struct canceller {
    tu_latch_t go;
    cancel_token_t *t;
};
static void *cancel_after_latch(void *arg)
{
    struct canceller *c = arg;
    tu_latch_wait(&c->go);
    cancel_token_cancel(c->t, 0);
    return NULL;
}

START_TEST(blocked_read_is_cancelled_out_of_descriptors)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    struct canceller c;
    tu_latch_init(&c.go);
    c.t = cancel_token_new();
    fill_descriptors();

    /* This thread has no wake fd yet and cannot make one: degraded mode. */
    pthread_t th;
    tu_thread_start(&th, cancel_after_latch, &c);
    cancel_token_t *prev = cancel_enter(c.t);
    char buf[4];
    tu_latch_post(&c.go);
    int64_t t0 = tu_now_ns();
    errno = 0;
    ssize_t r = cancel_read(sv[0], buf, sizeof buf);
    int err = errno;
    int64_t took = tu_now_ns() - t0;
    cancel_leave(prev);
    tu_thread_join(th);
    ck_assert_int_eq(r, -1);
    ck_assert_int_eq(err, ECANCELED);
    ck_assert_int_lt(took, TU_WAKE_GUARD_NS);

    /* Nothing was consumed: a byte written now is there for the next read. */
    ck_assert_int_eq(write(sv[1], "z", 1), 1);
    ck_assert_int_eq(cancel_read(sv[0], buf, 1), 1);
    ck_assert_int_eq(buf[0], 'z');
    cancel_token_unref(c.t);
    release_descriptors();
}
END_TEST

START_TEST(blocked_read_times_out_out_of_descriptors_not_before_its_deadline)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    fill_descriptors();
    int64_t t0 = tu_now_ns(); /* the deadline counts from the token's birth */
    cancel_token_t *t = cancel_token_with_timeout(NULL, 30 * 1000000LL);
    ck_assert_ptr_nonnull(t);
    cancel_token_t *prev = cancel_enter(t);
    char buf[4];
    errno = 0;
    ssize_t r = cancel_read(sv[0], buf, sizeof buf);
    int err = errno;
    int64_t took = tu_now_ns() - t0;
    cancel_leave(prev);
    ck_assert_int_eq(r, -1);
    ck_assert_int_eq(err, ETIMEDOUT);
    ck_assert_int_ge(took, 30 * 1000000LL);
    ck_assert_int_lt(took, TU_WAKE_GUARD_NS);
    cancel_token_unref(t);
    release_descriptors();
}
END_TEST

/* ------------------------------------------------------------- threads */

static int wait_for_cancel(void *arg)
{
    _Atomic int *ran = arg;
    atomic_fetch_add(ran, 1);
    int rc = cancel_token_wait(cancel_current(), NULL);
    return rc == 0 ? ECANCELED : rc;
}

static void *nothing(void *arg)
{
    return arg;
}

/* Caps the threads this process may create: RLIMIT_NPROC where it applies
 * (not to root, nor with CAP_SYS_RESOURCE), else the worker cache's test
 * hook.  Returns which. */
static const char *cap_threads(void)
{
    struct rlimit rl = { 1, 1 };
    if (setrlimit(RLIMIT_NPROC, &rl) == 0) {
        /* Does the cap bite?  Try one thread. */
        pthread_t th;
        int rc = pthread_create(&th, NULL, nothing, NULL);
        if (rc == EAGAIN)
            return "RLIMIT_NPROC";
        ck_assert_int_eq(rc, 0);
        pthread_join(th, NULL);
    }
    atomic_store(&cancel__worker_fail_next_create, 1000);
    return "test hook";
}

START_TEST(spawn_fails_eagain_out_of_threads_and_the_scope_still_cancels_and_joins)
{
    cancel_scope_t *s = cancel_scope_open_in(NULL, 0);
    ck_assert_ptr_nonnull(s);
    _Atomic int ran = 0;
    ck_assert_int_eq(cancel_scope_spawn(s, wait_for_cancel, &ran, NULL), 0);
    ck_assert_int_eq(cancel_scope_spawn(s, wait_for_cancel, &ran, NULL), 0);
    /* Both workers are busy: a third spawn needs a new thread. */
    const char *how = cap_threads();
    ck_assert_int_eq(cancel_scope_spawn(s, wait_for_cancel, &ran, NULL), EAGAIN);
    ck_assert_int_eq(cancel_scope_spawn(s, wait_for_cancel, &ran, NULL), EAGAIN);
    ck_assert_msg(!cancel_token_is_cancelled(cancel_scope_token(s)),
                  "a failed spawn cancelled the scope (cap: %s)", how);
    cancel_scope_cancel(s);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    ck_assert_int_eq(ran, 2);
}
END_TEST

static Suite *exhaust_suite(void)
{
    Suite *s = suite_create("exhaust");
    TCase *tc = tcase_create("descriptors");
    tcase_set_timeout(tc, TU_TIMEOUT);
    tcase_add_test(tc, token_fd_fails_emfile_out_of_descriptors_and_cancel_still_works);
    tcase_add_test(tc, cancel_on_signal_fails_emfile_out_of_descriptors_and_retry_succeeds);
    tcase_add_loop_test(tc, blocked_read_is_cancelled_out_of_descriptors, 0, 5);
    tcase_add_test(tc, blocked_read_times_out_out_of_descriptors_not_before_its_deadline);
    suite_add_tcase(s, tc);
    tc = tcase_create("threads");
    tcase_set_timeout(tc, TU_TIMEOUT);
    tcase_add_test(tc, spawn_fails_eagain_out_of_threads_and_the_scope_still_cancels_and_joins);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(exhaust_suite());
}

/*
 * check_signal.c - cancel_token_cancel_on_signal.
 *
 * Every test runs in its own process (Check's fork mode), so the handlers
 * it installs do not leak into other tests.  The second-delivery tests
 * fork once more: the old disposition may kill the process.
 */
#include "internal.h"
#include "testutil.h"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_THREAD__)
/* The fork tests start library threads in a child forked from a threaded
 * process, which ThreadSanitizer refuses by default. */
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
    return "die_after_fork=0";
}
#endif

static volatile sig_atomic_t recorded;
static int recorded_pipe[2] = { -1, -1 };

static void recorder(int signo)
{
    (void)signo;
    recorded++;
    if (recorded_pipe[1] >= 0) {
        char b = 'r';
        ssize_t w = write(recorded_pipe[1], &b, 1);
        (void)w;
    }
}

/* Waits (2 s guard) for the recorder to have run once more. */
static bool recorder_ran(void)
{
    struct pollfd p = { .fd = recorded_pipe[0], .events = POLLIN };
    char b;
    return poll(&p, 1, (int)(TU_WAKE_GUARD_NS / 1000000)) == 1 &&
           read(recorded_pipe[0], &b, 1) == 1;
}

static void install_recorder(int signo)
{
    struct sigaction sa;
    sa.sa_handler = recorder;
    sa.sa_flags = 0;
    sigemptyset(&sa.sa_mask);
    ck_assert_int_eq(sigaction(signo, &sa, NULL), 0);
}

static int await(cancel_token_t *t)
{
    struct timespec guard = cancel__add_ns(cancel__now(), TU_WAKE_GUARD_NS);
    return cancel_token_wait(t, &guard);
}

START_TEST(raise_cancels_the_registered_token_with_ecanceled)
{
    cancel_token_t *t = cancel_token_new();
    ck_assert_int_eq(cancel_token_cancel_on_signal(t, SIGUSR1), 0);
    ck_assert(!cancel_token_is_cancelled(t));
    ck_assert_int_eq(raise(SIGUSR1), 0);
    ck_assert_int_eq(await(t), 0);
    ck_assert_int_eq(cancel_token_reason(t), ECANCELED);
    cancel_token_unref(t);
}
END_TEST

START_TEST(kill_cancels_every_token_registered_for_the_signal)
{
    cancel_token_t *a = cancel_token_new();
    cancel_token_t *b = cancel_token_new();
    cancel_token_t *other = cancel_token_new();
    ck_assert_int_eq(cancel_token_cancel_on_signal(a, SIGUSR2), 0);
    ck_assert_int_eq(cancel_token_cancel_on_signal(b, SIGUSR2), 0);
    ck_assert_int_eq(cancel_token_cancel_on_signal(b, SIGUSR2), 0); /* twice is once */
    ck_assert_int_eq(cancel_token_cancel_on_signal(other, SIGHUP), 0);
    ck_assert_int_eq(kill(getpid(), SIGUSR2), 0);
    ck_assert_int_eq(await(a), 0);
    ck_assert_int_eq(await(b), 0);
    ck_assert_int_eq(cancel_token_reason(b), ECANCELED);
    ck_assert(!cancel_token_is_cancelled(other));
    cancel_token_unref(a);
    cancel_token_unref(b);
    cancel_token_unref(other);
}
END_TEST

static pthread_t cancelled_on;
static tu_latch_t cancelled_latch;

static void note_thread(void *arg, int reason)
{
    (void)arg;
    (void)reason;
    cancelled_on = pthread_self();
    tu_latch_post(&cancelled_latch);
}

START_TEST(the_cancel_runs_on_a_library_thread_not_in_the_handler)
{
    tu_latch_init(&cancelled_latch);
    cancel_token_t *t = cancel_token_new();
    cancel_callback_t cb;
    cancel_callback_add(&cb, t, note_thread, NULL);
    ck_assert_int_eq(cancel_token_cancel_on_signal(t, SIGUSR1), 0);
    ck_assert_int_eq(raise(SIGUSR1), 0);
    tu_latch_wait(&cancelled_latch);
    ck_assert(!pthread_equal(cancelled_on, pthread_self()));
    cancel_callback_remove(&cb);
    cancel_token_unref(t);
}
END_TEST

START_TEST(bad_signals_and_null_tokens_are_einval)
{
    cancel_token_t *t = cancel_token_new();
    ck_assert_int_eq(cancel_token_cancel_on_signal(NULL, SIGINT), EINVAL);
    ck_assert_int_eq(cancel_token_cancel_on_signal(t, SIGKILL), EINVAL);
    ck_assert_int_eq(cancel_token_cancel_on_signal(t, SIGSTOP), EINVAL);
    ck_assert_int_eq(cancel_token_cancel_on_signal(t, 0), EINVAL);
    ck_assert_int_eq(cancel_token_cancel_on_signal(t, -1), EINVAL);
    ck_assert_int_eq(cancel_token_cancel_on_signal(t, NSIG), EINVAL);
    ck_assert_int_eq(cancel_token_cancel_on_signal(t, 100000), EINVAL);
    /* State unchanged: SIGINT keeps the disposition it had. */
    struct sigaction before, now;
    sigaction(SIGINT, NULL, &before);
    ck_assert_int_eq(cancel_token_cancel_on_signal(NULL, SIGINT), EINVAL);
    sigaction(SIGINT, NULL, &now);
    ck_assert_ptr_eq((void *)now.sa_handler, (void *)before.sa_handler);
    cancel_token_unref(t);
}
END_TEST

START_TEST(freeing_the_token_ends_the_registration_and_restores_the_disposition)
{
    install_recorder(SIGUSR1);
    cancel_token_t *t = cancel_token_new();
    ck_assert_int_eq(cancel_token_cancel_on_signal(t, SIGUSR1), 0);
    struct sigaction now;
    sigaction(SIGUSR1, NULL, &now);
    ck_assert_ptr_ne((void *)now.sa_handler, (void *)recorder);
    cancel_token_unref(t);
    sigaction(SIGUSR1, NULL, &now);
    ck_assert_ptr_eq((void *)now.sa_handler, (void *)recorder);
    ck_assert_int_eq(pipe(recorded_pipe), 0);
    raise(SIGUSR1);
    ck_assert(recorder_ran());
    ck_assert_int_eq(recorded, 1);
}
END_TEST

START_TEST(a_token_registered_after_the_first_delivery_is_cancelled_at_once)
{
    cancel_token_t *first = cancel_token_new();
    ck_assert_int_eq(cancel_token_cancel_on_signal(first, SIGUSR1), 0);
    raise(SIGUSR1);
    ck_assert_int_eq(await(first), 0);
    cancel_token_t *late = cancel_token_new();
    ck_assert_int_eq(cancel_token_cancel_on_signal(late, SIGUSR1), 0);
    ck_assert_int_eq(cancel_token_reason(late), ECANCELED);
    cancel_token_unref(late);
    cancel_token_unref(first);
}
END_TEST

/* Child exit codes: 0 all good, else the step that failed. */
static int second_delivery_child(void)
{
    recorded = 0;
    if (pipe(recorded_pipe) != 0)
        return 8;
    struct sigaction sa;
    sa.sa_handler = recorder;
    sa.sa_flags = 0;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, NULL) != 0)
        return 1;
    cancel_token_t *t = cancel_token_new();
    if (cancel_token_cancel_on_signal(t, SIGUSR1) != 0)
        return 2;
    raise(SIGUSR1);
    struct timespec guard = cancel__add_ns(cancel__now(), TU_WAKE_GUARD_NS);
    if (cancel_token_wait(t, &guard) != 0)
        return 3;
    if (recorded != 0)
        return 4; /* the first delivery must not reach the old handler */
    raise(SIGUSR1);
    /* The re-raised signal goes to the old handler when ours returns
     * (before raise returns, except under ThreadSanitizer, which defers
     * handlers: hence the pipe). */
    if (!recorder_ran() || recorded != 1)
        return 5;
    struct sigaction now;
    sigaction(SIGUSR1, NULL, &now);
    if (now.sa_handler != recorder)
        return 6;
    raise(SIGUSR1);
    if (!recorder_ran() || recorded != 2)
        return 7;
    cancel_token_unref(t);
    return 0;
}

START_TEST(second_delivery_takes_the_previous_handler)
{
    /* The parent has started the signal thread: the child makes its own.
     * ThreadSanitizer cannot deliver signals properly in a child forked
     * from a threaded process, so there the parent stays single-threaded. */
    cancel_token_t *warm = cancel_token_new();
#if !defined(__SANITIZE_THREAD__)
    ck_assert_int_eq(cancel_token_cancel_on_signal(warm, SIGHUP), 0);
#endif
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(second_delivery_child());
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 0);
    ck_assert(!cancel_token_is_cancelled(warm));
    cancel_token_unref(warm);
}
END_TEST

START_TEST(second_sigterm_kills_with_the_default_disposition)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        /* The test runner's own SIGTERM handler was inherited: the
         * disposition to come back to is the default. */
        signal(SIGTERM, SIG_DFL);
        cancel_token_t *t = cancel_token_new();
        if (cancel_token_cancel_on_signal(t, SIGTERM) != 0)
            _exit(2);
        raise(SIGTERM);
        struct timespec guard = cancel__add_ns(cancel__now(), TU_WAKE_GUARD_NS);
        if (cancel_token_wait(t, &guard) != 0)
            _exit(3);
        /* Survived the first one: say so, then take the second. */
        char ok = 'y';
        if (write(fds[1], &ok, 1) != 1)
            _exit(4);
        raise(SIGTERM);
        _exit(5);
    }
    close(fds[1]);
    char got = 0;
    ck_assert_int_eq(read(fds[0], &got, 1), 1);
    ck_assert_int_eq(got, 'y');
    close(fds[0]);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFSIGNALED(status));
    ck_assert_int_eq(WTERMSIG(status), SIGTERM);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("signal");
    TCase *tc = tcase_create("cancel_on_signal");
    tcase_set_timeout(tc, TU_TIMEOUT);
    tcase_add_test(tc, raise_cancels_the_registered_token_with_ecanceled);
    tcase_add_test(tc, kill_cancels_every_token_registered_for_the_signal);
    tcase_add_test(tc, the_cancel_runs_on_a_library_thread_not_in_the_handler);
    tcase_add_test(tc, bad_signals_and_null_tokens_are_einval);
    tcase_add_test(tc, freeing_the_token_ends_the_registration_and_restores_the_disposition);
    tcase_add_test(tc, a_token_registered_after_the_first_delivery_is_cancelled_at_once);
    tcase_add_test(tc, second_delivery_takes_the_previous_handler);
    tcase_add_test(tc, second_sigterm_kills_with_the_default_disposition);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}

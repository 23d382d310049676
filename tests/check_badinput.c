/*
 * check_badinput.c - the bad input table: for each public function, what a
 * NULL, a released object (where the API defines it), a bad descriptor or
 * a bad flag gets.  Every row of the table is one test (a loop test over
 * ROWS), and `tests/check_badinput --table` prints the table in markdown
 * for the README, so the two cannot drift apart.
 *
 * "closed fd" is a descriptor number with nothing open (1000).  Wrapped
 * calls are tried both with no current token and under a live token that
 * would time out after 2 s, so that a call that waits instead of failing
 * shows as ETIMEDOUT (a hang) rather than passing.
 */
#include "internal.h"
#include "testutil.h"

#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

enum { CLOSED_FD = 1000 };

/* Checks that a -1 / errno call failed with WANT; returns NULL when it did. */
static char msgbuf[256];
static const char *want_errno(long r, int want)
{
    int err = errno;
    if (r == -1 && err == want)
        return NULL;
    snprintf(msgbuf, sizeof msgbuf, "returned %ld, errno %d (%s); want -1, errno %d (%s)", r,
             err, strerror(err), want, strerror(want));
    return msgbuf;
}
static const char *want_rc(long r, long want)
{
    if (r == want)
        return NULL;
    snprintf(msgbuf, sizeof msgbuf, "returned %ld, want %ld", r, want);
    return msgbuf;
}
static const char *want_null(const void *p, int want)
{
    int err = errno;
    if (!p && err == want)
        return NULL;
    snprintf(msgbuf, sizeof msgbuf, "returned %p, errno %d; want NULL, errno %d", p, err, want);
    return msgbuf;
}

/* Runs F under no current token, then under a token that times out in 2 s. */
#define BOTH(expr_check)                                                   \
    do {                                                                   \
        errno = 0;                                                         \
        const char *m_ = (expr_check);                                     \
        if (m_)                                                            \
            return m_;                                                     \
        cancel_token_t *t_ = cancel_token_with_timeout(NULL, 2000000000LL); \
        cancel_token_t *p_ = cancel_enter(t_);                             \
        errno = 0;                                                         \
        m_ = (expr_check);                                                 \
        cancel_leave(p_);                                                  \
        cancel_token_unref(t_);                                            \
        return m_;                                                         \
    } while (0)

static char buf[16];
static int tmp_fds[2] = { -1, -1 };
static int sock(void)
{
    if (tmp_fds[0] < 0)
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, tmp_fds), 0);
    return tmp_fds[0];
}

/* ---------------------------------------------------------------- rows */

static const char *r_child_null(void)
{
    cancel_token_t *t = cancel_token_child(NULL);
    const char *m = t && !t->parent ? NULL : "not a root";
    cancel_token_unref(t);
    return m;
}
static const char *r_deadline_null_at(void) { return want_null(cancel_token_with_deadline(NULL, NULL), EINVAL); }
static const char *r_deadline_bad_nsec(void)
{
    struct timespec at = { 1, 1000000000 };
    return want_null(cancel_token_with_deadline(NULL, &at), EINVAL);
}
static const char *r_timeout_negative(void)
{
    cancel_token_t *t = cancel_token_with_timeout(NULL, -5);
    const char *m = cancel_token_reason(t) == ETIMEDOUT ? NULL : "not born cancelled with ETIMEDOUT";
    cancel_token_unref(t);
    return m;
}
static const char *r_any_null_n(void) { return want_null(cancel_token_any(NULL, 2), EINVAL); }
static const char *r_any_null_zero(void)
{
    cancel_token_t *t = cancel_token_any(NULL, 0);
    const char *m = t && !cancel_token_is_cancelled(t) ? NULL : "not a live token";
    cancel_token_unref(t);
    return m;
}
static const char *r_ref_null(void) { return cancel_token_ref(NULL) == NULL ? NULL : "not NULL"; }
static const char *r_unref_null(void) { cancel_token_unref(NULL); return NULL; }
static const char *r_cancel_null(void) { return cancel_token_cancel(NULL, 0) ? "true" : NULL; }
static const char *r_cancel_at_null(void) { return cancel_token_cancel_at(NULL, 0, "f", 1) ? "true" : NULL; }
static const char *r_cancel_twice(void)
{
    cancel_token_t *t = cancel_token_new();
    bool first = cancel_token_cancel(t, 5), second = cancel_token_cancel(t, 6);
    const char *m = first && !second && cancel_token_reason(t) == 5 ? NULL : "second cancel changed something";
    cancel_token_unref(t);
    return m;
}
static const char *r_cancel_bad_reason(void)
{
    cancel_token_t *t = cancel_token_new();
    cancel_token_cancel(t, -7);
    const char *m = cancel_token_reason(t) == ECANCELED ? NULL : "reason is not ECANCELED";
    cancel_token_unref(t);
    return m;
}
static const char *r_from_null(void) { return want_rc(cancel_token_cancelled_from(NULL, NULL, NULL, NULL), EINVAL); }
static const char *r_from_live(void)
{
    cancel_token_t *t = cancel_token_new();
    int rc = cancel_token_cancelled_from(t, NULL, NULL, NULL);
    cancel_token_unref(t);
    return want_rc(rc, ESRCH);
}
static const char *r_is_cancelled_null(void) { return cancel_token_is_cancelled(NULL) ? "true" : NULL; }
static const char *r_reason_null(void) { return want_rc(cancel_token_reason(NULL), 0); }
static const char *r_wait_null(void) { return want_rc(cancel_token_wait(NULL, NULL), EINVAL); }
static const char *r_wait_bad_deadline(void)
{
    struct timespec at = { 0, -1 };
    cancel_token_t *t = cancel_token_new();
    int rc = cancel_token_wait(t, &at);
    cancel_token_unref(t);
    return want_rc(rc, EINVAL);
}
static const char *r_fd_null(void) { return want_errno(cancel_token_fd(NULL), EINVAL); }
static const char *r_deadline_of_null(void)
{
    struct timespec at;
    return cancel_token_deadline(NULL, &at) ? "true" : NULL;
}
static const char *r_signal_null(void) { return want_rc(cancel_token_cancel_on_signal(NULL, SIGUSR1), EINVAL); }
static const char *r_signal_bad(void)
{
    static const int bad[] = { 0, -1, SIGKILL, SIGSTOP, 65, 100000 };
    cancel_token_t *t = cancel_token_new();
    const char *m = NULL;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0] && !m; i++)
        m = want_rc(cancel_token_cancel_on_signal(t, bad[i]), EINVAL);
    cancel_token_unref(t);
    return m;
}

static void nop_cb(void *arg, int reason) { (void)arg; (void)reason; }
static const char *r_cb_add_null_cb(void)
{
    cancel_token_t *t = cancel_token_new();
    const char *m = want_errno(cancel_callback_add(NULL, t, nop_cb, NULL), EINVAL);
    if (!m && t->callbacks)
        m = "armed something";
    cancel_token_unref(t);
    return m;
}
static const char *r_cb_add_null_fn(void)
{
    cancel_callback_t cb;
    cancel_token_t *t = cancel_token_new();
    const char *m = want_errno(cancel_callback_add(&cb, t, NULL, NULL), EINVAL);
    if (!m && t->callbacks)
        m = "armed something";
    cancel_token_unref(t);
    return m;
}
static const char *r_cb_add_null_token(void)
{
    cancel_callback_t cb;
    const char *m = want_rc(cancel_callback_add(&cb, NULL, nop_cb, NULL), 0);
    if (!m && !cancel_callback_remove(&cb))
        m = "remove after add on NULL: false";
    return m;
}
static const char *r_cb_remove_twice(void)
{
    cancel_callback_t cb;
    cancel_token_t *t = cancel_token_new();
    cancel_callback_add(&cb, t, nop_cb, NULL);
    bool first = cancel_callback_remove(&cb), second = cancel_callback_remove(&cb);
    cancel_token_unref(t);
    return first && !second ? NULL : "not true then false";
}
static const char *r_cb_remove_released_token(void)
{
    cancel_callback_t cb;
    cancel_token_t *t = cancel_token_new();
    cancel_callback_add(&cb, t, nop_cb, NULL);
    cancel_token_unref(t);
    return cancel_callback_remove(&cb) ? NULL : "false";
}

static const char *r_current_none(void) { return cancel_current() == NULL && cancel_check() == 0 ? NULL : "a current token"; }
static const char *r_enter_null(void)
{
    cancel_token_t *prev = cancel_enter(NULL);
    const char *m = cancel_current() == NULL && cancel_check() == 0 ? NULL : "not NULL";
    cancel_leave(prev);
    return m;
}
static const char *r_shield_end_unbalanced(void)
{
    cancel_token_t *t = cancel_token_new();
    cancel_token_t *prev = cancel_enter(t);
    cancel_shield_end();
    const char *m = cancel_current() == t ? NULL : "the current token changed";
    cancel_leave(prev);
    cancel_token_unref(t);
    return m;
}

/* Wrapped calls on bad descriptors. */
static const char *r_read_neg(void) { BOTH(want_errno(cancel_read(-1, buf, 4), EBADF)); }
static const char *r_read_closed(void) { BOTH(want_errno(cancel_read(CLOSED_FD, buf, 4), EBADF)); }
static const char *r_write_closed(void) { BOTH(want_errno(cancel_write(CLOSED_FD, buf, 4), EBADF)); }
static const char *r_readv_closed(void)
{
    struct iovec v = { buf, 4 };
    BOTH(want_errno(cancel_readv(CLOSED_FD, &v, 1), EBADF));
}
static const char *r_readv_bad_count(void)
{
    struct iovec v = { buf, 4 };
    BOTH(want_errno(cancel_readv(sock(), &v, -1), EINVAL));
}
static const char *r_writev_closed(void)
{
    struct iovec v = { buf, 4 };
    BOTH(want_errno(cancel_writev(CLOSED_FD, &v, 1), EBADF));
}
static const char *r_pread_closed(void) { BOTH(want_errno(cancel_pread(CLOSED_FD, buf, 4, 0), EBADF)); }
static const char *r_pread_bad_offset(void) { BOTH(want_errno(cancel_pread(sock(), buf, 4, -1), EINVAL)); }
static const char *r_pwrite_closed(void) { BOTH(want_errno(cancel_pwrite(CLOSED_FD, buf, 4, 0), EBADF)); }
static const char *r_recv_closed(void) { BOTH(want_errno(cancel_recv(CLOSED_FD, buf, 4, 0), EBADF)); }
static const char *r_recv_not_socket(void) { BOTH(want_errno(cancel_recv(STDERR_FILENO, buf, 4, MSG_DONTWAIT), ENOTSOCK)); }
static const char *r_send_closed(void) { BOTH(want_errno(cancel_send(CLOSED_FD, buf, 4, 0), EBADF)); }
static const char *r_recvfrom_closed(void) { BOTH(want_errno(cancel_recvfrom(CLOSED_FD, buf, 4, 0, NULL, NULL), EBADF)); }
static const char *r_sendto_closed(void) { BOTH(want_errno(cancel_sendto(CLOSED_FD, buf, 4, 0, NULL, 0), EBADF)); }
static const char *r_recvmsg_closed(void)
{
    struct msghdr mh = { 0 };
    BOTH(want_errno(cancel_recvmsg(CLOSED_FD, &mh, 0), EBADF));
}
static const char *r_sendmsg_closed(void)
{
    struct msghdr mh = { 0 };
    BOTH(want_errno(cancel_sendmsg(CLOSED_FD, &mh, 0), EBADF));
}
static const char *r_accept_closed(void) { BOTH(want_errno(cancel_accept(CLOSED_FD, NULL, NULL, 0), EBADF)); }
static int listener(void)
{
    static int fd = -1;
    if (fd < 0) {
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(sa_family_t)), 0); /* autobind */
        ck_assert_int_eq(listen(fd, 1), 0);
    }
    return fd;
}
static const char *r_accept_bad_flag(void) { BOTH(want_errno(cancel_accept(listener(), NULL, NULL, -1), EINVAL)); }
static const char *r_accept_not_listening(void) { BOTH(want_errno(cancel_accept(sock(), NULL, NULL, 0), EINVAL)); }
static const char *r_connect_closed(void) { BOTH(want_errno(cancel_connect(CLOSED_FD, NULL, 0), EBADF)); }
static const char *r_poll_neg(void)
{
    struct pollfd p = { .fd = -1, .events = POLLIN, .revents = 0 };
    BOTH(want_rc(cancel_poll(&p, 1, 0), 0));
}
static const char *r_poll_null(void)
{
    BOTH(want_errno(cancel_poll(NULL, 1, 100), EFAULT));
}
static const char *r_poll_closed(void)
{
    struct pollfd p = { .fd = CLOSED_FD, .events = POLLIN, .revents = 0 };
    const char *m = NULL;
    errno = 0;
    if (cancel_poll(&p, 1, 0) != 1 || !(p.revents & POLLNVAL))
        m = "not 1 with POLLNVAL";
    return m;
}
static const char *r_epoll_closed(void)
{
    struct epoll_event ev;
    BOTH(want_errno(cancel_epoll_wait(CLOSED_FD, &ev, 1, 0), EBADF));
}
static const char *r_epoll_bad_max(void)
{
    struct epoll_event ev;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    errno = 0;
    const char *m = want_errno(cancel_epoll_wait(ep, &ev, 0, 0), EINVAL);
    close(ep);
    return m;
}
static const char *r_waitpid_none(void) { BOTH(want_errno(cancel_waitpid(-5, NULL, 0), ECHILD)); }
static const char *r_waitpid_bad_flag(void) { BOTH(want_errno(cancel_waitpid(-1, NULL, 0x4000000), EINVAL)); }
static const char *r_wait_fd_closed(void) { BOTH(want_errno(cancel_wait_fd(CLOSED_FD, POLLIN), EBADF)); }
static const char *r_sleep_until_null(void) { BOTH(want_errno(cancel_sleep_until(NULL), EINVAL)); }
static const char *r_sleep_until_bad(void)
{
    struct timespec at = { 0, 1000000000 };
    BOTH(want_errno(cancel_sleep_until(&at), EINVAL));
}
static const char *r_sleep_negative(void) { BOTH(want_rc(cancel_sleep(-1), 0)); }
static const char *r_read_full_closed(void)
{
    size_t done = 99;
    errno = 0;
    const char *m = want_errno(cancel_read_full(CLOSED_FD, buf, 4, &done), EBADF);
    return m ? m : done == 0 ? NULL : "*done not 0";
}
static const char *r_write_all_closed(void)
{
    size_t done = 99;
    errno = 0;
    const char *m = want_errno(cancel_write_all(CLOSED_FD, buf, 4, &done), EBADF);
    return m ? m : done == 0 ? NULL : "*done not 0";
}

/* Scopes. */
static int ok_task(void *arg) { (void)arg; return 0; }
static const char *r_open_bad_flags(void) { return want_null(cancel_scope_open(0x100), EINVAL); }
static const char *r_open_both_flags(void)
{
    return want_null(cancel_scope_open_in(NULL, CANCEL_SCOPE_SUPERVISE | CANCEL_SCOPE_RACE), EINVAL);
}
static const char *r_spawn_null(void) { return want_rc(cancel_scope_spawn(NULL, ok_task, NULL, NULL), EINVAL); }
static const char *r_spawn_null_fn(void)
{
    cancel_scope_t *s = cancel_scope_open_in(NULL, 0);
    const char *m = want_rc(cancel_scope_spawn(s, NULL, NULL, NULL), EINVAL);
    int rc = cancel_scope_join(s, NULL);
    return m ? m : want_rc(rc, 0);
}
static const char *r_spawn_named_null(void) { return want_rc(cancel_scope_spawn_named(NULL, "x", ok_task, NULL, NULL), EINVAL); }
static const char *r_spawn_cancelled(void)
{
    cancel_scope_t *s = cancel_scope_open_in(NULL, 0);
    cancel_scope_cancel(s);
    const char *m = want_rc(cancel_scope_spawn(s, ok_task, NULL, NULL), ECANCELED);
    cancel_scope_join(s, NULL);
    return m;
}
static const char *r_set_limit_null(void) { return want_rc(cancel_scope_set_limit(NULL, 1), EINVAL); }
static const char *r_stack_null(void) { return want_rc(cancel_scope_set_stack_size(NULL, 1 << 20), EINVAL); }
static const char *r_stack_small(void)
{
    cancel_scope_t *s = cancel_scope_open_in(NULL, 0);
    const char *m = want_rc(cancel_scope_set_stack_size(s, 1), EINVAL);
    cancel_scope_join(s, NULL);
    return m;
}
static const char *r_default_stack_small(void)
{
    size_t before = cancel_default_stack_size();
    const char *m = want_rc(cancel_set_default_stack_size(1), EINVAL);
    return m ? m : cancel_default_stack_size() == before ? NULL : "the default changed";
}
static const char *r_scope_cancel_null(void) { cancel_scope_cancel(NULL); return NULL; }
static const char *r_terminate_null(void) { return want_rc(cancel_scope_terminate(NULL, NULL), EINVAL); }
static const char *r_terminate_twice(void)
{
    cancel_scope_t *s = cancel_scope_open_in(NULL, 0);
    int a = cancel_scope_terminate(s, s), b = cancel_scope_terminate(s, NULL);
    void *v = NULL;
    cancel_scope_join(s, &v);
    return a == 0 && b == EALREADY && v == s ? NULL : "not 0 then EALREADY, first value kept";
}
static const char *r_scope_token_null(void) { return cancel_scope_token(NULL) == NULL ? NULL : "not NULL"; }
static const char *r_join_null(void) { return want_rc(cancel_scope_join(NULL, NULL), EINVAL); }
static const char *r_join_until_null(void) { return want_rc(cancel_scope_join_until(NULL, NULL, NULL), EINVAL); }
static const char *r_join_until_bad(void)
{
    struct timespec at = { 0, -1 };
    cancel_scope_t *s = cancel_scope_open_in(NULL, 0);
    const char *m = want_rc(cancel_scope_join_until(s, &at, NULL), EINVAL);
    int rc = cancel_scope_join(s, NULL); /* still joinable */
    return m ? m : want_rc(rc, 0);
}
static const char *r_task_join_null(void) { return want_rc(cancel_task_join(NULL, NULL), EINVAL); }
static const char *r_task_join_twice(void)
{
    cancel_scope_t *s = cancel_scope_open_in(NULL, 0);
    cancel_task_t *task;
    cancel_scope_spawn(s, ok_task, NULL, &task);
    int r1 = -1, r2 = -1;
    int a = cancel_task_join(task, &r1), b = cancel_task_join(task, &r2);
    cancel_scope_join(s, NULL);
    return a == 0 && b == 0 && r1 == 0 && r2 == 0 ? NULL : "second join differs";
}
static const char *r_task_cancel_null(void) { cancel_task_cancel(NULL); return NULL; }
static const char *r_task_token_null(void) { return cancel_task_token(NULL) == NULL ? NULL : "not NULL"; }
static const char *r_task_name_null(void) { return want_rc(cancel_task_set_name(NULL, "x"), EINVAL); }
static const char *r_dump_null(void) { return want_rc(cancel_scope_dump(NULL, STDERR_FILENO), EINVAL); }
static const char *r_dump_neg(void)
{
    cancel_scope_t *s = cancel_scope_open_in(NULL, 0);
    const char *m = want_rc(cancel_scope_dump(s, -1), EINVAL);
    cancel_scope_join(s, NULL);
    return m;
}

/* Known bugs: run only with CANCEL_TEST_KNOWN_BUGS=1 until fixed. */
static const char *r_dump_closed(void)
{
    cancel_scope_t *s = cancel_scope_open_in(NULL, 0);
    struct mallinfo2 before = mallinfo2();
    int rc = cancel_scope_dump(s, CLOSED_FD);
    struct mallinfo2 after = mallinfo2();
    cancel_scope_join(s, NULL);
    const char *m = want_rc(rc, EBADF);
    if (!m && after.uordblks > before.uordblks + 1024) {
        snprintf(msgbuf, sizeof msgbuf, "leaked %zu bytes (glibc's dprintf on a bad fd)",
                 after.uordblks - before.uordblks);
        m = msgbuf;
    }
    return m;
}
static const char *r_wait_fd_neg(void)
{
    /* With no current token this would hang for ever: only the timed try. */
    cancel_token_t *t = cancel_token_with_timeout(NULL, 200000000LL);
    cancel_token_t *p = cancel_enter(t);
    errno = 0;
    const char *m = want_errno(cancel_wait_fd(-1, POLLIN), EBADF);
    cancel_leave(p);
    cancel_token_unref(t);
    return m;
}

static const char *r_cond_wait_null(void)
{
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&mu);
    const char *m = want_rc(cancel_cond_wait(NULL, &mu), EINVAL);
    pthread_mutex_unlock(&mu);
    return m;
}
static const char *r_sem_wait_null(void) { BOTH(want_errno(cancel_sem_wait(NULL), EINVAL)); }

struct row {
    const char *fn, *input, *result;
    const char *(*check)(void);
    bool known_bug;
};

static const struct row rows[] = {
    { "cancel_token_child", "NULL parent", "a new root", r_child_null, false },
    { "cancel_token_with_deadline", "NULL at", "NULL, errno EINVAL", r_deadline_null_at, false },
    { "cancel_token_with_deadline", "tv_nsec out of range", "NULL, errno EINVAL", r_deadline_bad_nsec, false },
    { "cancel_token_with_timeout", "ns <= 0", "a token born cancelled with ETIMEDOUT", r_timeout_negative, false },
    { "cancel_token_any", "NULL tokens, n > 0", "NULL, errno EINVAL", r_any_null_n, false },
    { "cancel_token_any", "NULL tokens, n == 0", "a live token only cancel can cancel", r_any_null_zero, false },
    { "cancel_token_ref", "NULL", "NULL", r_ref_null, false },
    { "cancel_token_unref", "NULL", "nothing", r_unref_null, false },
    { "cancel_token_cancel", "NULL", "false", r_cancel_null, false },
    { "cancel_token_cancel", "reason <= 0", "cancelled with ECANCELED", r_cancel_bad_reason, false },
    { "cancel_token_cancel", "already cancelled", "false, first reason kept", r_cancel_twice, false },
    { "cancel_token_cancel_at", "NULL", "false", r_cancel_at_null, false },
    { "cancel_token_cancelled_from", "NULL", "EINVAL", r_from_null, false },
    { "cancel_token_cancelled_from", "token not cancelled", "ESRCH", r_from_live, false },
    { "cancel_token_is_cancelled", "NULL", "false", r_is_cancelled_null, false },
    { "cancel_token_reason", "NULL", "0", r_reason_null, false },
    { "cancel_token_wait", "NULL, no deadline, no current token", "EINVAL", r_wait_null, false },
    { "cancel_token_wait", "deadline tv_nsec out of range", "EINVAL", r_wait_bad_deadline, false },
    { "cancel_token_fd", "NULL", "-1, errno EINVAL", r_fd_null, false },
    { "cancel_token_deadline", "NULL", "false", r_deadline_of_null, false },
    { "cancel_token_cancel_on_signal", "NULL token", "EINVAL", r_signal_null, false },
    { "cancel_token_cancel_on_signal", "signo 0, < 0, SIGKILL, SIGSTOP, >= NSIG", "EINVAL", r_signal_bad, false },
    { "cancel_callback_add", "NULL cb", "-1, errno EINVAL, nothing armed", r_cb_add_null_cb, false },
    { "cancel_callback_add", "NULL fn", "-1, errno EINVAL, nothing armed", r_cb_add_null_fn, false },
    { "cancel_callback_add", "NULL token", "0, nothing armed (remove: true)", r_cb_add_null_token, false },
    { "cancel_callback_remove", "already removed", "false", r_cb_remove_twice, false },
    { "cancel_callback_remove", "its token released", "true (disarmed, fn never runs)", r_cb_remove_released_token, false },
    { "cancel_current / cancel_check", "no current token", "NULL / 0", r_current_none, false },
    { "cancel_enter", "NULL", "no current token", r_enter_null, false },
    { "cancel_shield_end", "without cancel_shield_begin", "nothing (current token kept)", r_shield_end_unbalanced, false },
    { "cancel_read", "fd -1", "-1, errno EBADF", r_read_neg, false },
    { "cancel_read", "closed fd", "-1, errno EBADF", r_read_closed, false },
    { "cancel_write", "closed fd", "-1, errno EBADF", r_write_closed, false },
    { "cancel_readv", "closed fd", "-1, errno EBADF", r_readv_closed, false },
    { "cancel_readv", "iovcnt < 0", "-1, errno EINVAL", r_readv_bad_count, false },
    { "cancel_writev", "closed fd", "-1, errno EBADF", r_writev_closed, false },
    { "cancel_pread", "closed fd", "-1, errno EBADF", r_pread_closed, false },
    { "cancel_pread", "offset < 0", "-1, errno EINVAL", r_pread_bad_offset, false },
    { "cancel_pwrite", "closed fd", "-1, errno EBADF", r_pwrite_closed, false },
    { "cancel_recv", "closed fd", "-1, errno EBADF", r_recv_closed, false },
    { "cancel_recv", "not a socket", "-1, errno ENOTSOCK", r_recv_not_socket, false },
    { "cancel_send", "closed fd", "-1, errno EBADF", r_send_closed, false },
    { "cancel_recvfrom", "closed fd", "-1, errno EBADF", r_recvfrom_closed, false },
    { "cancel_sendto", "closed fd", "-1, errno EBADF", r_sendto_closed, false },
    { "cancel_recvmsg", "closed fd", "-1, errno EBADF", r_recvmsg_closed, false },
    { "cancel_sendmsg", "closed fd", "-1, errno EBADF", r_sendmsg_closed, false },
    { "cancel_accept", "closed fd", "-1, errno EBADF", r_accept_closed, false },
    { "cancel_accept", "unknown flags", "-1, errno EINVAL", r_accept_bad_flag, false },
    { "cancel_accept", "socket not listening", "-1, errno EINVAL", r_accept_not_listening, false },
    { "cancel_connect", "closed fd", "-1, errno EBADF", r_connect_closed, false },
    { "cancel_poll", "fd -1 in the set", "entry ignored (as poll): 0", r_poll_neg, false },
    { "cancel_poll", "NULL fds, nfds 1", "-1, errno EFAULT (as poll)", r_poll_null, false },
    { "cancel_poll", "closed fd in the set", "1, revents POLLNVAL (as poll)", r_poll_closed, false },
    { "cancel_epoll_wait", "closed fd", "-1, errno EBADF", r_epoll_closed, false },
    { "cancel_epoll_wait", "maxevents 0", "-1, errno EINVAL", r_epoll_bad_max, false },
    { "cancel_waitpid", "no such child", "-1, errno ECHILD", r_waitpid_none, false },
    { "cancel_waitpid", "unknown options", "-1, errno EINVAL", r_waitpid_bad_flag, false },
    { "cancel_wait_fd", "closed fd", "-1, errno EBADF", r_wait_fd_closed, false },
    { "cancel_wait_fd", "fd -1", "-1, errno EBADF", r_wait_fd_neg, false },
    { "cancel_cond_wait", "NULL cond", "EINVAL", r_cond_wait_null, false },
    { "cancel_sem_wait", "NULL sem", "-1, errno EINVAL", r_sem_wait_null, false },
    { "cancel_sleep_until", "NULL", "-1, errno EINVAL", r_sleep_until_null, false },
    { "cancel_sleep_until", "tv_nsec out of range", "-1, errno EINVAL", r_sleep_until_bad, false },
    { "cancel_sleep", "ns <= 0", "0 at once", r_sleep_negative, false },
    { "cancel_read_full", "closed fd", "-1, errno EBADF, *done 0", r_read_full_closed, false },
    { "cancel_write_all", "closed fd", "-1, errno EBADF, *done 0", r_write_all_closed, false },
    { "cancel_scope_open", "unknown flag bits", "NULL, errno EINVAL", r_open_bad_flags, false },
    { "cancel_scope_open_in", "SUPERVISE and RACE", "NULL, errno EINVAL", r_open_both_flags, false },
    { "cancel_scope_spawn", "NULL scope", "EINVAL", r_spawn_null, false },
    { "cancel_scope_spawn", "NULL fn", "EINVAL (scope still joinable)", r_spawn_null_fn, false },
    { "cancel_scope_spawn", "cancelled scope", "ECANCELED", r_spawn_cancelled, false },
    { "cancel_scope_spawn_named", "NULL scope", "EINVAL", r_spawn_named_null, false },
    { "cancel_scope_set_limit", "NULL", "EINVAL", r_set_limit_null, false },
    { "cancel_scope_set_stack_size", "NULL", "EINVAL", r_stack_null, false },
    { "cancel_scope_set_stack_size", "below PTHREAD_STACK_MIN", "EINVAL", r_stack_small, false },
    { "cancel_set_default_stack_size", "below PTHREAD_STACK_MIN", "EINVAL, default unchanged", r_default_stack_small, false },
    { "cancel_scope_cancel", "NULL", "nothing", r_scope_cancel_null, false },
    { "cancel_scope_terminate", "NULL", "EINVAL", r_terminate_null, false },
    { "cancel_scope_terminate", "second call", "EALREADY, first value kept", r_terminate_twice, false },
    { "cancel_scope_token", "NULL", "NULL", r_scope_token_null, false },
    { "cancel_scope_join", "NULL", "EINVAL", r_join_null, false },
    { "cancel_scope_join_until", "NULL", "EINVAL", r_join_until_null, false },
    { "cancel_scope_join_until", "deadline tv_nsec out of range", "EINVAL (scope still joinable)", r_join_until_bad, false },
    { "cancel_task_join", "NULL", "EINVAL", r_task_join_null, false },
    { "cancel_task_join", "already joined", "0 again, same result", r_task_join_twice, false },
    { "cancel_task_cancel", "NULL", "nothing", r_task_cancel_null, false },
    { "cancel_task_token", "NULL", "NULL", r_task_token_null, false },
    { "cancel_task_set_name", "NULL task", "EINVAL", r_task_name_null, false },
    { "cancel_scope_dump", "NULL", "EINVAL", r_dump_null, false },
    { "cancel_scope_dump", "fd < 0", "EINVAL", r_dump_neg, false },
    { "cancel_scope_dump", "closed fd", "EBADF, nothing leaked", r_dump_closed, false },
};
enum { NROWS = sizeof rows / sizeof rows[0] };

static const struct row *active[NROWS];
static int nactive;

START_TEST(each_bad_input_gets_the_documented_result)
{
    const struct row *r = active[_i];
    const char *m = r->check();
    ck_assert_msg(m == NULL, "%s with %s: %s (want: %s)", r->fn, r->input, m, r->result);
}
END_TEST

int main(int argc, char **argv)
{
    cancel__token_cache_off = true; /* every token allocation is malloc's, as counted */
    bool bugs = getenv("CANCEL_TEST_KNOWN_BUGS") != NULL;
    if (argc > 1 && strcmp(argv[1], "--table") == 0) {
        printf("| function | bad input | result |\n| --- | --- | --- |\n");
        for (int i = 0; i < NROWS; i++)
            printf("| `%s` | %s | %s%s |\n", rows[i].fn, rows[i].input, rows[i].result,
                   rows[i].known_bug ? " (known bug)" : "");
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    for (int i = 0; i < NROWS; i++)
        if (!rows[i].known_bug || bugs)
            active[nactive++] = &rows[i];
    Suite *s = suite_create("badinput");
    TCase *tc = tcase_create("table");
    tcase_set_timeout(tc, TU_TIMEOUT);
    tcase_add_loop_test(tc, each_bad_input_gets_the_documented_result, 0, nactive);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}

/*
 * check_wait.c - cancel_token_wait and cancel_token_fd (poll and epoll).
 */
#include "internal.h"
#include "testutil.h"

#include <poll.h>
#include <sys/epoll.h>
#include <unistd.h>

#define MS 1000000LL

static struct timespec in_ns(int64_t ns)
{
    return cancel__add_ns(cancel__now(), ns);
}

static int callbacks_on(cancel_token_t *t)
{
    int n = 0;
    cancel__token_lock(t);
    for (struct cancel_cb *cb = t->callbacks; cb; cb = cb->next)
        n++;
    cancel__token_unlock(t);
    return n;
}

struct waiter {
    cancel_token_t *t;          /* awaited */
    cancel_token_t *current;    /* entered around the wait, or NULL */
    const struct timespec *deadline;
    tu_latch_t about_to_wait;
    int rc;
    int64_t elapsed;
};

static void *wait_main(void *arg)
{
    struct waiter *w = arg;
    cancel_token_t *prev = cancel_enter(w->current);
    tu_latch_post(&w->about_to_wait);
    int64_t t0 = tu_now_ns();
    w->rc = cancel_token_wait(w->t, w->deadline);
    w->elapsed = tu_now_ns() - t0;
    cancel_leave(prev);
    return NULL;
}

START_TEST(wait_returns_zero_at_once_when_the_token_is_already_cancelled)
{
    cancel_token_t *t = cancel_token_new();
    cancel_token_t *cur = cancel_token_new();
    cancel_token_cancel(t, EPIPE);
    cancel_token_cancel(cur, 0);
    cancel_token_t *prev = cancel_enter(cur);
    ck_assert_int_eq(cancel_token_wait(t, NULL), 0);
    struct timespec past = in_ns(-MS);
    ck_assert_int_eq(cancel_token_wait(t, &past), 0);
    cancel_leave(prev);
    cancel_token_unref(cur);
    cancel_token_unref(t);
}
END_TEST

START_TEST(wait_returns_zero_when_the_token_is_cancelled_while_blocked)
{
    struct waiter w = { .t = cancel_token_new() };
    tu_latch_init(&w.about_to_wait);
    pthread_t th;
    tu_thread_start(&th, wait_main, &w);
    tu_latch_wait(&w.about_to_wait);
    cancel_token_cancel(w.t, 0);
    tu_thread_join(th);
    ck_assert_int_eq(w.rc, 0);
    ck_assert_int_eq(callbacks_on(w.t), 0);
    cancel_token_unref(w.t);
}
END_TEST

START_TEST(wait_returns_etimedout_when_the_deadline_passes_first)
{
    cancel_token_t *t = cancel_token_new();
    struct timespec at = in_ns(40 * MS);
    int64_t t0 = tu_now_ns();
    ck_assert_int_eq(cancel_token_wait(t, &at), ETIMEDOUT);
    int64_t elapsed = tu_now_ns() - t0;
    ck_assert_int_ge(tu_now_ns(), (int64_t)at.tv_sec * 1000000000LL + at.tv_nsec);
    ck_assert_int_lt(elapsed, TU_WAKE_GUARD_NS);
    ck_assert(!cancel_token_is_cancelled(t));
    ck_assert_int_eq(callbacks_on(t), 0);
    /* A past deadline times out at once. */
    struct timespec past = in_ns(-1);
    ck_assert_int_eq(cancel_token_wait(t, &past), ETIMEDOUT);
    /* A NULL token with a deadline just sleeps until it. */
    struct timespec soon = in_ns(5 * MS);
    ck_assert_int_eq(cancel_token_wait(NULL, &soon), ETIMEDOUT);
    cancel_token_unref(t);
}
END_TEST

START_TEST(wait_returns_ecanceled_when_the_current_token_is_cancelled_first)
{
    struct waiter w = { .t = cancel_token_new(), .current = cancel_token_new() };
    tu_latch_init(&w.about_to_wait);
    pthread_t th;
    tu_thread_start(&th, wait_main, &w);
    tu_latch_wait(&w.about_to_wait);
    cancel_token_cancel(w.current, EPIPE);
    tu_thread_join(th);
    ck_assert_int_eq(w.rc, ECANCELED);
    ck_assert(!cancel_token_is_cancelled(w.t));
    ck_assert_int_eq(callbacks_on(w.t), 0);
    ck_assert_int_eq(callbacks_on(w.current), 0);
    cancel_token_unref(w.t);
    cancel_token_unref(w.current);
}
END_TEST

START_TEST(wait_returns_etimedout_when_the_current_tokens_deadline_fires)
{
    cancel_token_t *t = cancel_token_new();
    int64_t t0 = tu_now_ns();
    cancel_token_t *cur = cancel_token_with_timeout(NULL, 30 * MS);
    cancel_token_t *prev = cancel_enter(cur);
    ck_assert_int_eq(cancel_token_wait(t, NULL), ETIMEDOUT);
    ck_assert_int_ge(tu_now_ns() - t0, 30 * MS);
    ck_assert(!cancel_token_is_cancelled(t));
    /* Sticky: the next wait fails at once. */
    ck_assert_int_eq(cancel_token_wait(t, NULL), ETIMEDOUT);
    cancel_leave(prev);
    cancel_token_unref(cur);
    cancel_token_unref(t);
}
END_TEST

START_TEST(wait_under_a_shield_ignores_the_cancelled_current_token)
{
    cancel_token_t *t = cancel_token_new();
    cancel_token_t *cur = cancel_token_new();
    cancel_token_cancel(cur, 0);
    cancel_token_t *prev = cancel_enter(cur);
    ck_assert_int_eq(cancel_token_wait(t, NULL), ECANCELED);
    cancel_shield_begin();
    struct timespec at = in_ns(10 * MS);
    ck_assert_int_eq(cancel_token_wait(t, &at), ETIMEDOUT);
    cancel_shield_end();
    cancel_leave(prev);
    cancel_token_unref(cur);
    cancel_token_unref(t);
}
END_TEST

START_TEST(wait_on_the_current_token_itself_returns_zero_when_cancelled)
{
    struct waiter w = { .t = cancel_token_new() };
    w.current = w.t;
    tu_latch_init(&w.about_to_wait);
    pthread_t th;
    tu_thread_start(&th, wait_main, &w);
    tu_latch_wait(&w.about_to_wait);
    cancel_token_cancel(w.t, 0);
    tu_thread_join(th);
    ck_assert_int_eq(w.rc, 0);
    cancel_token_unref(w.t);
}
END_TEST

START_TEST(wait_with_bad_input_is_einval)
{
    cancel_token_t *t = cancel_token_new();
    struct timespec bad = { 0, 1000000000L };
    ck_assert_int_eq(cancel_token_wait(t, &bad), EINVAL);
    bad.tv_nsec = -1;
    ck_assert_int_eq(cancel_token_wait(t, &bad), EINVAL);
    /* Nothing could ever wake it. */
    ck_assert_int_eq(cancel_token_wait(NULL, NULL), EINVAL);
    cancel_token_unref(t);
}
END_TEST

START_TEST(wait_wakes_on_a_deadline_token)
{
    int64_t t0 = tu_now_ns();
    cancel_token_t *t = cancel_token_with_timeout(NULL, 20 * MS);
    ck_assert_int_eq(cancel_token_wait(t, NULL), 0);
    ck_assert_int_ge(tu_now_ns() - t0, 20 * MS);
    cancel_token_unref(t);
}
END_TEST

/* ------------------------------------------------------------------ fd */

START_TEST(fd_polls_readable_only_once_cancelled)
{
    cancel_token_t *t = cancel_token_new();
    int fd = cancel_token_fd(t);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(cancel_token_fd(t), fd); /* created once */
    struct pollfd p = { .fd = fd, .events = POLLIN };
    ck_assert_int_eq(poll(&p, 1, 0), 0);
    cancel_token_cancel(t, 0);
    ck_assert_int_eq(poll(&p, 1, 0), 1);
    ck_assert(p.revents & POLLIN);
    /* Level-triggered: still readable later. */
    ck_assert_int_eq(poll(&p, 1, 0), 1);
    cancel_token_unref(t);
}
END_TEST

START_TEST(fd_of_an_already_cancelled_token_is_readable)
{
    cancel_token_t *parent = cancel_token_new();
    cancel_token_cancel(parent, 0);
    cancel_token_t *t = cancel_token_child(parent);
    struct pollfd p = { .fd = cancel_token_fd(t), .events = POLLIN };
    ck_assert_int_ge(p.fd, 0);
    ck_assert_int_eq(poll(&p, 1, 0), 1);
    cancel_token_unref(t);
    cancel_token_unref(parent);
}
END_TEST

struct poller {
    int fd;
    bool use_epoll;
    tu_latch_t about_to_block;
    int rc;
    short revents;
};

static void *poll_main(void *arg)
{
    struct poller *p = arg;
    if (p->use_epoll) {
        int ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event ev = { .events = EPOLLIN };
        ev.data.fd = p->fd;
        epoll_ctl(ep, EPOLL_CTL_ADD, p->fd, &ev);
        tu_latch_post(&p->about_to_block);
        struct epoll_event got;
        p->rc = epoll_wait(ep, &got, 1, -1);
        p->revents = (got.events & EPOLLIN) && got.data.fd == p->fd ? POLLIN : 0;
        close(ep);
    } else {
        struct pollfd pf = { .fd = p->fd, .events = POLLIN };
        tu_latch_post(&p->about_to_block);
        p->rc = poll(&pf, 1, -1);
        p->revents = pf.revents;
    }
    return NULL;
}

static void fd_wakes_a_blocked_waiter(bool use_epoll)
{
    cancel_token_t *root = cancel_token_new();
    cancel_token_t *t = cancel_token_child(root);
    struct poller p = { .fd = cancel_token_fd(t), .use_epoll = use_epoll };
    ck_assert_int_ge(p.fd, 0);
    tu_latch_init(&p.about_to_block);
    pthread_t th;
    tu_thread_start(&th, poll_main, &p);
    tu_latch_wait(&p.about_to_block);
    cancel_token_cancel(root, 0); /* through an ancestor */
    tu_thread_join(th);
    ck_assert_int_eq(p.rc, 1);
    ck_assert(p.revents & POLLIN);
    cancel_token_unref(t);
    cancel_token_unref(root);
}

START_TEST(fd_wakes_a_thread_blocked_in_poll)
{
    fd_wakes_a_blocked_waiter(false);
}
END_TEST

START_TEST(fd_wakes_a_thread_blocked_in_epoll_wait)
{
    fd_wakes_a_blocked_waiter(true);
}
END_TEST

START_TEST(fd_becomes_readable_when_the_deadline_fires)
{
    cancel_token_t *t = cancel_token_with_timeout(NULL, 20 * MS);
    struct pollfd p = { .fd = cancel_token_fd(t), .events = POLLIN };
    struct timespec at;
    ck_assert(cancel_token_deadline(t, &at));
    ck_assert_int_eq(poll(&p, 1, (int)(TU_WAKE_GUARD_NS / MS)), 1);
    ck_assert_int_ge(tu_now_ns(), (int64_t)at.tv_sec * 1000000000LL + at.tv_nsec);
    ck_assert_int_eq(cancel_token_reason(t), ETIMEDOUT);
    cancel_token_unref(t);
}
END_TEST

START_TEST(fd_is_closed_when_the_token_is_freed)
{
    int before = tu_count_fds();
    cancel_token_t *t = cancel_token_new();
    cancel_token_t *extra = cancel_token_ref(t);
    int fd = cancel_token_fd(t);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(tu_count_fds(), before + 1);
    cancel_token_unref(t);
    ck_assert_int_eq(tu_count_fds(), before + 1); /* still referenced */
    cancel_token_unref(extra);
    ck_assert_int_eq(tu_count_fds(), before);
}
END_TEST

START_TEST(fd_of_null_is_einval)
{
    errno = 0;
    ck_assert_int_eq(cancel_token_fd(NULL), -1);
    ck_assert_int_eq(errno, EINVAL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("wait");
    TCase *tc = tcase_create("wait");
    tcase_set_timeout(tc, TU_TIMEOUT);
    tcase_add_test(tc, wait_returns_zero_at_once_when_the_token_is_already_cancelled);
    tcase_add_loop_test(tc, wait_returns_zero_when_the_token_is_cancelled_while_blocked, 0, 20);
    tcase_add_test(tc, wait_returns_etimedout_when_the_deadline_passes_first);
    tcase_add_loop_test(tc, wait_returns_ecanceled_when_the_current_token_is_cancelled_first,
                        0, 20);
    tcase_add_test(tc, wait_returns_etimedout_when_the_current_tokens_deadline_fires);
    tcase_add_test(tc, wait_under_a_shield_ignores_the_cancelled_current_token);
    tcase_add_test(tc, wait_on_the_current_token_itself_returns_zero_when_cancelled);
    tcase_add_test(tc, wait_with_bad_input_is_einval);
    tcase_add_test(tc, wait_wakes_on_a_deadline_token);
    suite_add_tcase(s, tc);

    TCase *fd = tcase_create("fd");
    tcase_set_timeout(fd, TU_TIMEOUT);
    tcase_add_test(fd, fd_polls_readable_only_once_cancelled);
    tcase_add_test(fd, fd_of_an_already_cancelled_token_is_readable);
    tcase_add_loop_test(fd, fd_wakes_a_thread_blocked_in_poll, 0, 10);
    tcase_add_loop_test(fd, fd_wakes_a_thread_blocked_in_epoll_wait, 0, 10);
    tcase_add_test(fd, fd_becomes_readable_when_the_deadline_fires);
    tcase_add_test(fd, fd_is_closed_when_the_token_is_freed);
    tcase_add_test(fd, fd_of_null_is_einval);
    suite_add_tcase(s, fd);
    return tu_run_suite(s);
}

/*
 * check_net.c - the socket wrappers over loopback TCP and UDP (127.0.0.1
 * only): connect in progress, large sends, MSG_WAITALL, datagrams.
 */
#include "internal.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/un.h>

static int tcp_listener(struct sockaddr_in *addr, int backlog)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(l, 0);
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(l, (struct sockaddr *)addr, sizeof *addr), 0);
    socklen_t len = sizeof *addr;
    ck_assert_int_eq(getsockname(l, (struct sockaddr *)addr, &len), 0);
    ck_assert_int_eq(listen(l, backlog), 0);
    return l;
}

/* A connected loopback TCP pair: *C the client end, *S the server end. */
static void tcp_pair(int *c, int *s)
{
    struct sockaddr_in a;
    int l = tcp_listener(&a, 4);
    *c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(*c, 0);
    cancel_token_t *t = cancel_token_new();
    cancel_token_t *prev = cancel_enter(t);
    ck_assert_int_eq(cancel_connect(*c, (struct sockaddr *)&a, sizeof a), 0);
    *s = cancel_accept(l, NULL, NULL, SOCK_CLOEXEC);
    ck_assert_int_ge(*s, 0);
    cancel_leave(prev);
    cancel_token_unref(t);
    close(l);
}

struct job {
    cancel_token_t *token;
    int fd;
    char *buf;
    size_t n;
    int which;
    const struct sockaddr *addr;
    socklen_t addrlen;
    ssize_t result;
    int err;
    int flags_before, flags_after;
    struct cancel_blocked *blocked;
    tu_latch_t started;
    atomic_bool done;
    pthread_t thread;
};

enum { J_CONNECT, J_SEND, J_RECV_WAITALL, J_RECVFROM };

static void *job_main(void *arg)
{
    struct job *j = arg;
    j->blocked = cancel__thread_blocked();
    cancel_token_t *prev = cancel_enter(j->token);
    j->flags_before = fcntl(j->fd, F_GETFL);
    tu_latch_post(&j->started);
    errno = 0;
    switch (j->which) {
    case J_CONNECT:
        j->result = cancel_connect(j->fd, j->addr, j->addrlen);
        break;
    case J_SEND:
        j->result = cancel_send(j->fd, j->buf, j->n, MSG_NOSIGNAL);
        break;
    case J_RECV_WAITALL:
        j->result = cancel_recv(j->fd, j->buf, j->n, MSG_WAITALL);
        break;
    case J_RECVFROM: {
        struct sockaddr_in from;
        socklen_t len = sizeof from;
        j->result = cancel_recvfrom(j->fd, j->buf, j->n, 0, (struct sockaddr *)&from, &len);
        break;
    }
    }
    j->err = errno;
    j->flags_after = fcntl(j->fd, F_GETFL);
    cancel_leave(prev);
    atomic_store(&j->done, true);
    return NULL;
}

static void job_start(struct job *j)
{
    tu_latch_init(&j->started);
    tu_thread_start(&j->thread, job_main, j);
    tu_latch_wait(&j->started);
}

static void job_wait_blocked(struct job *j)
{
    /* A call that returns without blocking ends the wait too (and fails
     * the test on its result, not on a timeout). */
    while (atomic_load(&j->blocked->call) == NULL && !atomic_load(&j->done))
        sched_yield();
}

START_TEST(connect_completes_on_loopback_and_keeps_the_flags)
{
    int c, s;
    tcp_pair(&c, &s);
    ck_assert_int_eq(fcntl(c, F_GETFL) & O_NONBLOCK, 0);
    cancel_token_t *t = cancel_token_new();
    cancel_token_t *prev = cancel_enter(t);
    ck_assert_int_eq(cancel_send(c, "hello", 5, 0), 5);
    char buf[8] = { 0 };
    ck_assert_int_eq(cancel_recv(s, buf, 5, MSG_WAITALL), 5);
    ck_assert_str_eq(buf, "hello");
    cancel_leave(prev);
    cancel_token_unref(t);
    close(c);
    close(s);
}
END_TEST

START_TEST(connect_refused_reports_econnrefused)
{
    struct sockaddr_in a;
    int l = tcp_listener(&a, 1);
    close(l); /* nothing listens on that port any more */
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cancel_token_t *t = cancel_token_new();
    cancel_token_t *prev = cancel_enter(t);
    errno = 0;
    ck_assert_int_eq(cancel_connect(c, (struct sockaddr *)&a, sizeof a), -1);
    ck_assert_int_eq(errno, ECONNREFUSED);
    cancel_leave(prev);
    cancel_token_unref(t);
    close(c);
}
END_TEST

/*
 * A listener with a full backlog that nobody accepts from: the next
 * connect stays in progress (its SYN is dropped), so it blocks until
 * cancelled.
 */
START_TEST(connect_in_progress_fails_ecanceled_and_restores_the_flags)
{
    struct sockaddr_in a;
    int l = tcp_listener(&a, 0);
    int fill[4];
    for (int k = 0; k < 4; k++) {
        fill[k] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        connect(fill[k], (struct sockaddr *)&a, sizeof a);
    }
    struct job j;
    memset(&j, 0, sizeof j);
    j.which = J_CONNECT;
    j.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    j.addr = (struct sockaddr *)&a;
    j.addrlen = sizeof a;
    j.token = cancel_token_new();
    job_start(&j);
    if (_i % 2)
        job_wait_blocked(&j);
    cancel_token_cancel(j.token, 0);
    tu_thread_join(j.thread);
    ck_assert_int_eq(j.result, -1);
    ck_assert_int_eq(j.err, ECANCELED);
    ck_assert_int_eq(j.flags_before, j.flags_after);
    ck_assert_int_eq(j.flags_after & O_NONBLOCK, 0);
    cancel_token_unref(j.token);
    close(j.fd);
    for (int k = 0; k < 4; k++)
        close(fill[k]);
    close(l);
}
END_TEST

/* A blocking send of far more than the socket buffers hold: cancelled part
 * way, it returns the count sent, and the peer receives exactly that. */
START_TEST(send_cancelled_part_way_returns_exactly_what_the_peer_gets)
{
    int c, s;
    tcp_pair(&c, &s);
    struct job j;
    memset(&j, 0, sizeof j);
    j.which = J_SEND;
    j.fd = c;
    j.n = 64 << 20;
    j.buf = malloc(j.n);
    ck_assert_ptr_nonnull(j.buf);
    memset(j.buf, 'z', j.n);
    j.token = cancel_token_new();
    job_start(&j);
    job_wait_blocked(&j);
    cancel_token_cancel(j.token, 0);
    tu_thread_join(j.thread);
    ck_assert_int_gt(j.result, 0);
    ck_assert_int_lt(j.result, (ssize_t)j.n);
    ck_assert_int_eq(j.flags_before, j.flags_after);
    shutdown(c, SHUT_WR);
    size_t got = 0;
    char buf[65536];
    ssize_t r;
    while ((r = read(s, buf, sizeof buf)) > 0)
        got += (size_t)r;
    ck_assert_uint_eq(got, (size_t)j.result);
    cancel_token_unref(j.token);
    free(j.buf);
    close(c);
    close(s);
}
END_TEST

START_TEST(recv_waitall_cancelled_part_way_returns_what_it_got)
{
    int c, s;
    tcp_pair(&c, &s);
    struct job j;
    memset(&j, 0, sizeof j);
    j.which = J_RECV_WAITALL;
    j.fd = s;
    char buf[100];
    j.buf = buf;
    j.n = sizeof buf;
    j.token = cancel_token_new();
    job_start(&j);
    ck_assert_int_eq(write(c, "0123456789", 10), 10);
    /* Wait until the ten bytes are taken and the worker waits for more. */
    for (;;) {
        int pending = -1;
        job_wait_blocked(&j);
        struct pollfd p = { s, POLLIN, 0 };
        if (poll(&p, 1, 0) == 0)
            break;
        (void)pending;
        sched_yield();
    }
    cancel_token_cancel(j.token, 0);
    tu_thread_join(j.thread);
    ck_assert_int_eq(j.result, 10);
    ck_assert_int_eq(memcmp(buf, "0123456789", 10), 0);
    cancel_token_unref(j.token);
    close(c);
    close(s);
}
END_TEST

START_TEST(udp_recvfrom_takes_one_datagram_or_none)
{
    int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(u, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    ck_assert_int_eq(getsockname(u, (struct sockaddr *)&a, &len), 0);
    int v = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    /* Cancelled while blocked: the datagram sent later is still there. */
    struct job j;
    memset(&j, 0, sizeof j);
    j.which = J_RECVFROM;
    j.fd = u;
    char buf[64];
    j.buf = buf;
    j.n = sizeof buf;
    j.token = cancel_token_new();
    job_start(&j);
    job_wait_blocked(&j);
    cancel_token_cancel(j.token, 0);
    tu_thread_join(j.thread);
    ck_assert_int_eq(j.result, -1);
    ck_assert_int_eq(j.err, ECANCELED);

    cancel_token_t *t = cancel_token_new();
    cancel_token_t *prev = cancel_enter(t);
    ck_assert_int_eq(cancel_sendto(v, "dgram", 5, 0, (struct sockaddr *)&a, sizeof a), 5);
    struct sockaddr_in from;
    len = sizeof from;
    memset(buf, 0, sizeof buf);
    ck_assert_int_eq(cancel_recvfrom(u, buf, sizeof buf, 0, (struct sockaddr *)&from, &len), 5);
    ck_assert_str_eq(buf, "dgram");
    ck_assert_uint_eq(len, sizeof from);
    ck_assert_int_eq(from.sin_addr.s_addr, htonl(INADDR_LOOPBACK));
    cancel_leave(prev);
    cancel_token_unref(t);
    cancel_token_unref(j.token);
    close(u);
    close(v);
}
END_TEST

START_TEST(sendmsg_and_recvmsg_carry_a_descriptor)
{
    int sp[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
    int p[2];
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    cancel_token_t *t = cancel_token_new();
    cancel_token_t *prev = cancel_enter(t);
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec v = { "m", 1 };
    struct msghdr m = { .msg_iov = &v, .msg_iovlen = 1, .msg_control = ctl.buf,
                        .msg_controllen = sizeof ctl.buf };
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &p[1], sizeof(int));
    ck_assert_int_eq(cancel_sendmsg(sp[0], &m, 0), 1);

    char c = 0;
    struct iovec rv = { &c, 1 };
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } rctl;
    struct msghdr rm = { .msg_iov = &rv, .msg_iovlen = 1, .msg_control = rctl.buf,
                         .msg_controllen = sizeof rctl.buf };
    ck_assert_int_eq(cancel_recvmsg(sp[1], &rm, 0), 1);
    ck_assert_int_eq(c, 'm');
    struct cmsghdr *rc = CMSG_FIRSTHDR(&rm);
    ck_assert_ptr_nonnull(rc);
    int got;
    memcpy(&got, CMSG_DATA(rc), sizeof got);
    ck_assert_int_eq(write(got, "q", 1), 1);
    ck_assert_int_eq(read(p[0], &c, 1), 1);
    ck_assert_int_eq(c, 'q');
    cancel_leave(prev);
    cancel_token_unref(t);
    close(got);
    close(p[0]);
    close(p[1]);
    close(sp[0]);
    close(sp[1]);
}
END_TEST

/*
 * A blocking AF_UNIX connect to a listener whose backlog is full: the
 * plain call blocks until the listener accepts, so the wrapper must wait
 * too (not report EAGAIN), complete once there is room, and still fail
 * with ECANCELED when cancelled while it waits.
 */
static int unix_listener_full(struct sockaddr_un *a, int *fill)
{
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    snprintf(a->sun_path, sizeof a->sun_path, "/tmp/check_net.%d.%ld", (int)getpid(),
             (long)tu_now_ns());
    int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(l, 0);
    ck_assert_int_eq(bind(l, (struct sockaddr *)a, sizeof *a), 0);
    ck_assert_int_eq(listen(l, 0), 0);
    *fill = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    ck_assert_int_eq(connect(*fill, (struct sockaddr *)a, sizeof *a), 0);
    /* The backlog is now full: a further non-blocking connect says so. */
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    ck_assert_int_eq(connect(probe, (struct sockaddr *)a, sizeof *a), -1);
    ck_assert_int_eq(errno, EAGAIN);
    close(probe);
    return l;
}

START_TEST(unix_connect_to_a_full_backlog_waits_until_accepted)
{
    struct sockaddr_un a;
    int fill;
    int l = unix_listener_full(&a, &fill);
    struct job j;
    memset(&j, 0, sizeof j);
    j.which = J_CONNECT;
    j.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    j.addr = (struct sockaddr *)&a;
    j.addrlen = sizeof a;
    j.token = cancel_token_new();
    job_start(&j);
    job_wait_blocked(&j);
    /* Make room: the waiting connect must now complete. */
    int s1 = accept(l, NULL, NULL);
    ck_assert_int_ge(s1, 0);
    tu_thread_join(j.thread);
    ck_assert_int_eq(j.result, 0);
    ck_assert_int_eq(j.flags_after & O_NONBLOCK, 0);
    int s2 = accept(l, NULL, NULL);
    ck_assert_int_ge(s2, 0);
    ck_assert_int_eq(write(j.fd, "u", 1), 1);
    char c = 0;
    ck_assert_int_eq(read(s2, &c, 1), 1);
    ck_assert_int_eq(c, 'u');
    cancel_token_unref(j.token);
    close(s1);
    close(s2);
    close(j.fd);
    close(fill);
    close(l);
    unlink(a.sun_path);
}
END_TEST

START_TEST(unix_connect_to_a_full_backlog_fails_ecanceled_when_cancelled)
{
    struct sockaddr_un a;
    int fill;
    int l = unix_listener_full(&a, &fill);
    struct job j;
    memset(&j, 0, sizeof j);
    j.which = J_CONNECT;
    j.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    j.addr = (struct sockaddr *)&a;
    j.addrlen = sizeof a;
    j.token = cancel_token_new();
    job_start(&j);
    job_wait_blocked(&j);
    int64_t t0 = tu_now_ns();
    cancel_token_cancel(j.token, 0);
    tu_thread_join(j.thread);
    ck_assert_int_lt(tu_now_ns() - t0, TU_WAKE_GUARD_NS);
    ck_assert_int_eq(j.result, -1);
    ck_assert_int_eq(j.err, ECANCELED);
    ck_assert_int_eq(j.flags_after & O_NONBLOCK, 0);
    cancel_token_unref(j.token);
    close(j.fd);
    close(fill);
    close(l);
    unlink(a.sun_path);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("net");
    TCase *tc = tcase_create("loopback");
    tcase_set_timeout(tc, TU_TIMEOUT);
    tcase_add_test(tc, connect_completes_on_loopback_and_keeps_the_flags);
    tcase_add_test(tc, connect_refused_reports_econnrefused);
    tcase_add_loop_test(tc, connect_in_progress_fails_ecanceled_and_restores_the_flags, 0, 10);
    tcase_add_loop_test(tc, send_cancelled_part_way_returns_exactly_what_the_peer_gets, 0, 5);
    tcase_add_test(tc, recv_waitall_cancelled_part_way_returns_what_it_got);
    tcase_add_test(tc, udp_recvfrom_takes_one_datagram_or_none);
    tcase_add_test(tc, sendmsg_and_recvmsg_carry_a_descriptor);
    tcase_add_test(tc, unix_connect_to_a_full_backlog_waits_until_accepted);
    tcase_add_test(tc, unix_connect_to_a_full_backlog_fails_ecanceled_when_cancelled);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}

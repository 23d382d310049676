/*
 * check_io.c - the descriptor wrappers, every one in every state.
 *
 * A table lists each blocking wrapper with a fixture: a descriptor on
 * which it blocks (an empty pipe or socketpair, a full one for writes, a
 * listening loopback socket for accept), a way to let it complete (feed),
 * and a way to see that nothing moved.  Each test is a loop test over the
 * table (_i indexes it), so a state is checked for every wrapper.
 */
#include "internal.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

enum res { R_PIPE, R_SOCK, R_LISTEN, R_EPOLL };

struct fx {
    int rd, wr;             /* the two ends (R_LISTEN: listener, -1) */
    int ep;                 /* epoll fd (R_EPOLL) */
    struct sockaddr_in addr;
    char byte;
    int accepted;
    int fill;               /* bytes put in to fill it (writers) */
    int ydrained;           /* the op's bytes drained along with the fill */
};

struct op {
    const char *name;
    enum res res;
    bool out;               /* waits for room rather than data */
    bool consumes;          /* success takes the fed item */
    long ok;                /* result on success */
    long (*call)(struct fx *f);
};

static long op_read(struct fx *f) { return cancel_read(f->rd, &f->byte, 1); }
static long op_readv(struct fx *f)
{
    struct iovec v = { &f->byte, 1 };
    return cancel_readv(f->rd, &v, 1);
}
static long op_read_full(struct fx *f)
{
    size_t done = 99;
    long r = cancel_read_full(f->rd, &f->byte, 1, &done);
    return r >= 0 && done != (size_t)r ? -100 : r;
}
static long op_recv(struct fx *f) { return cancel_recv(f->rd, &f->byte, 1, 0); }
static long op_recvfrom(struct fx *f)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    return cancel_recvfrom(f->rd, &f->byte, 1, 0, (struct sockaddr *)&ss, &len);
}
static long op_recvmsg(struct fx *f)
{
    struct iovec v = { &f->byte, 1 };
    struct msghdr m = { .msg_iov = &v, .msg_iovlen = 1 };
    return cancel_recvmsg(f->rd, &m, 0);
}
static long op_accept(struct fx *f)
{
    int c = cancel_accept(f->rd, NULL, NULL, SOCK_CLOEXEC);
    if (c >= 0) {
        close(c);
        return 0;
    }
    return -1;
}
static long op_poll(struct fx *f)
{
    struct pollfd p = { f->rd, POLLIN, 0 };
    long r = cancel_poll(&p, 1, -1);
    return r == 1 && !(p.revents & POLLIN) ? -100 : r;
}
static long op_poll_timeout(struct fx *f)
{
    struct pollfd p = { f->rd, POLLIN, 0 };
    return cancel_poll(&p, 1, 60000);
}
static long op_epoll(struct fx *f)
{
    struct epoll_event ev;
    return cancel_epoll_wait(f->ep, &ev, 1, -1);
}
static long op_wait_fd(struct fx *f) { return cancel_wait_fd(f->rd, POLLIN); }
static long op_write(struct fx *f) { return cancel_write(f->wr, "y", 1); }
static long op_writev(struct fx *f)
{
    struct iovec v = { "y", 1 };
    return cancel_writev(f->wr, &v, 1);
}
static long op_write_all(struct fx *f)
{
    size_t done = 99;
    long r = cancel_write_all(f->wr, "y", 1, &done);
    return r >= 0 && done != (size_t)r ? -100 : r;
}
static long op_send(struct fx *f) { return cancel_send(f->wr, "y", 1, 0); }
static long op_sendto(struct fx *f) { return cancel_sendto(f->wr, "y", 1, 0, NULL, 0); }
static long op_sendmsg(struct fx *f)
{
    struct iovec v = { "y", 1 };
    struct msghdr m = { .msg_iov = &v, .msg_iovlen = 1 };
    return cancel_sendmsg(f->wr, &m, 0);
}

static const struct op ops[] = {
    { "read", R_PIPE, false, true, 1, op_read },
    { "readv", R_PIPE, false, true, 1, op_readv },
    { "read_full", R_PIPE, false, true, 1, op_read_full },
    { "read on a socket", R_SOCK, false, true, 1, op_read },
    { "recv", R_SOCK, false, true, 1, op_recv },
    { "recvfrom", R_SOCK, false, true, 1, op_recvfrom },
    { "recvmsg", R_SOCK, false, true, 1, op_recvmsg },
    { "accept", R_LISTEN, false, true, 0, op_accept },
    { "poll", R_PIPE, false, false, 1, op_poll },
    { "poll with a timeout", R_SOCK, false, false, 1, op_poll_timeout },
    { "epoll_wait", R_EPOLL, false, false, 1, op_epoll },
    { "wait_fd", R_PIPE, false, false, 0, op_wait_fd },
    { "write", R_PIPE, true, true, 1, op_write },
    { "writev", R_PIPE, true, true, 1, op_writev },
    { "write_all", R_PIPE, true, true, 1, op_write_all },
    { "write on a socket", R_SOCK, true, true, 1, op_write },
    { "send", R_SOCK, true, true, 1, op_send },
    { "sendto", R_SOCK, true, true, 1, op_sendto },
    { "sendmsg", R_SOCK, true, true, 1, op_sendmsg },
};
#define NOPS ((int)(sizeof ops / sizeof ops[0]))

/* Indices of the ops that take data (for the race test). */
static bool takes_bytes(const struct op *o)
{
    return !o->out && o->consumes && o->res != R_LISTEN;
}

static void set_nonblock(int fd, bool on)
{
    int fl = fcntl(fd, F_GETFL);
    ck_assert_int_ge(fl, 0);
    ck_assert_int_eq(fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK), 0);
}

static void fx_setup(const struct op *o, struct fx *f)
{
    memset(f, 0, sizeof *f);
    f->ep = -1;
    f->accepted = -1;
    int p[2];
    if (o->res == R_PIPE || o->res == R_EPOLL) {
        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    } else if (o->res == R_SOCK) {
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p), 0);
    } else {
        p[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(p[0], 0);
        f->addr.sin_family = AF_INET;
        f->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ck_assert_int_eq(bind(p[0], (struct sockaddr *)&f->addr, sizeof f->addr), 0);
        socklen_t len = sizeof f->addr;
        ck_assert_int_eq(getsockname(p[0], (struct sockaddr *)&f->addr, &len), 0);
        ck_assert_int_eq(listen(p[0], 8), 0);
        p[1] = -1;
    }
    f->rd = p[0];
    f->wr = p[1];
    if (o->res == R_EPOLL) {
        f->ep = epoll_create1(EPOLL_CLOEXEC);
        ck_assert_int_ge(f->ep, 0);
        struct epoll_event ev = { .events = EPOLLIN, .data.fd = f->rd };
        ck_assert_int_eq(epoll_ctl(f->ep, EPOLL_CTL_ADD, f->rd, &ev), 0);
    }
    if (o->out) {
        /* Fill the writer's side until a write would block. */
        set_nonblock(f->wr, true);
        char chunk[4096];
        memset(chunk, 'f', sizeof chunk);
        for (;;) {
            ssize_t w = write(f->wr, chunk, sizeof chunk);
            if (w < 0) {
                ck_assert_int_eq(errno, EAGAIN);
                break;
            }
            f->fill += (int)w;
        }
        for (;;) {
            ssize_t w = write(f->wr, chunk, 1);
            if (w < 0)
                break;
            f->fill += (int)w;
        }
        set_nonblock(f->wr, false);
    }
}

static void fx_teardown(struct fx *f)
{
    if (f->rd >= 0)
        close(f->rd);
    if (f->wr >= 0)
        close(f->wr);
    if (f->ep >= 0)
        close(f->ep);
    if (f->accepted >= 0)
        close(f->accepted);
}

/* The fd whose flags the op must leave alone. */
static int op_fd(const struct op *o, struct fx *f)
{
    return o->out ? f->wr : f->rd;
}

/* Drains everything readable from FD without blocking; counts bytes equal to C. */
static int drain_count(int fd, char c, int *total)
{
    int n = 0, all = 0;
    char buf[4096];
    for (;;) {
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, 0) != 1 || !(p.revents & POLLIN))
            break;
        ssize_t r = read(fd, buf, sizeof buf);
        if (r <= 0)
            break;
        for (ssize_t i = 0; i < r; i++)
            n += buf[i] == c;
        all += (int)r;
    }
    if (total)
        *total = all;
    return n;
}

/* Makes the op able to complete: data, room or a pending connection. */
static void fx_feed(const struct op *o, struct fx *f)
{
    if (o->res == R_LISTEN) {
        int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(c, 0);
        ck_assert_int_eq(connect(c, (struct sockaddr *)&f->addr, sizeof f->addr), 0);
        f->wr = c;
    } else if (o->out) {
        int total = 0;
        f->ydrained += drain_count(f->rd, 'y', &total);
        ck_assert_int_eq(total - f->ydrained, f->fill);
        f->fill = 0;
    } else {
        ck_assert_int_eq(write(f->wr, "x", 1), 1);
    }
}

/* True when the fed item is still there: the op moved nothing. */
static bool fx_untouched(const struct op *o, struct fx *f)
{
    if (o->res == R_LISTEN) {
        int c = accept4(f->rd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0)
            return false;
        close(c);
        return true;
    }
    if (o->out)
        return drain_count(f->rd, 'y', NULL) + f->ydrained == 0;
    char c = 0;
    struct pollfd p = { f->rd, POLLIN, 0 };
    return poll(&p, 1, 0) == 1 && read(f->rd, &c, 1) == 1 && c == 'x';
}

/* ------------------------------------------------------------- workers */

struct job {
    const struct op *op;
    struct fx *f;
    cancel_token_t *token;
    tu_latch_t started;
    long result;
    int err;
    int flags_before, flags_after;
    struct cancel_blocked *blocked;
    pthread_t thread;
    int64_t returned_ns;
};

static void *job_main(void *arg)
{
    struct job *j = arg;
    j->blocked = cancel__thread_blocked();
    cancel_token_t *prev = cancel_enter(j->token);
    j->flags_before = fcntl(op_fd(j->op, j->f), F_GETFL);
    tu_latch_post(&j->started);
    errno = 0;
    j->result = j->op->call(j->f);
    j->err = errno;
    j->returned_ns = tu_now_ns();
    j->flags_after = fcntl(op_fd(j->op, j->f), F_GETFL);
    cancel_leave(prev);
    return NULL;
}

static void job_start(struct job *j, const struct op *o, struct fx *f, cancel_token_t *t)
{
    memset(j, 0, sizeof *j);
    j->op = o;
    j->f = f;
    j->token = t;
    tu_latch_init(&j->started);
    tu_thread_start(&j->thread, job_main, j);
    tu_latch_wait(&j->started);
}

/* Waits until the worker is inside a wrapped wait (its blocked record). */
static void job_wait_blocked(struct job *j)
{
    while (atomic_load(&j->blocked->call) == NULL)
        sched_yield();
}

/* ---------------------------------------------------------------- tests */

START_TEST(fails_before_any_io_when_already_cancelled)
{
    const struct op *o = &ops[_i];
    struct fx f;
    fx_setup(o, &f);
    fx_feed(o, &f);
    cancel_token_t *t = cancel_token_new();
    cancel_token_cancel(t, 0);
    cancel_token_t *prev = cancel_enter(t);
    for (int k = 0; k < 2; k++) {
        errno = 0;
        long r = o->call(&f);
        ck_assert_msg(r == -1 && errno == ECANCELED, "%s: call %d gave %ld errno %d",
                      o->name, k, r, errno);
    }
    cancel_leave(prev);
    ck_assert_msg(fx_untouched(o, &f), "%s moved something", o->name);
    cancel_token_unref(t);
    fx_teardown(&f);
}
END_TEST

START_TEST(fails_ecanceled_when_cancelled_while_blocked)
{
    const struct op *o = &ops[_i];
    struct fx f;
    fx_setup(o, &f);
    cancel_token_t *t = cancel_token_new();
    struct job j;
    job_start(&j, o, &f, t);
    /* Half of the runs cancel while the worker is surely inside the wait,
     * the other half as soon as it has started (inside or not yet). */
    if (_i % 2 == 0)
        job_wait_blocked(&j);
    int64_t t0 = tu_now_ns();
    cancel_token_cancel(t, 0);
    tu_thread_join(j.thread);
    ck_assert_msg(j.result == -1 && j.err == ECANCELED, "%s gave %ld errno %d", o->name,
                  j.result, j.err);
    ck_assert_int_lt(j.returned_ns - t0, TU_WAKE_GUARD_NS);
    ck_assert_int_eq(j.flags_before, j.flags_after);
    ck_assert_ptr_null(atomic_load(&j.blocked->call));
    /* Cancellation is sticky, and what arrives later is left alone. */
    fx_feed(o, &f);
    cancel_token_t *prev = cancel_enter(t);
    errno = 0;
    ck_assert_int_eq(o->call(&f), -1);
    ck_assert_int_eq(errno, ECANCELED);
    cancel_leave(prev);
    ck_assert_msg(fx_untouched(o, &f), "%s moved something", o->name);
    cancel_token_unref(t);
    fx_teardown(&f);
}
END_TEST

START_TEST(fails_when_an_ancestor_is_cancelled)
{
    const struct op *o = &ops[_i];
    struct fx f;
    fx_setup(o, &f);
    cancel_token_t *root = cancel_token_new();
    cancel_token_t *mid = cancel_token_child(root);
    cancel_token_t *leaf = cancel_token_child(mid);
    struct job j;
    job_start(&j, o, &f, leaf);
    job_wait_blocked(&j);
    cancel_token_cancel(root, 0);
    tu_thread_join(j.thread);
    ck_assert_msg(j.result == -1 && j.err == ECANCELED, "%s gave %ld errno %d", o->name,
                  j.result, j.err);
    fx_feed(o, &f);
    ck_assert(fx_untouched(o, &f));
    cancel_token_unref(leaf);
    cancel_token_unref(mid);
    cancel_token_unref(root);
    fx_teardown(&f);
}
END_TEST

START_TEST(fails_etimedout_when_the_reason_is_etimedout)
{
    const struct op *o = &ops[_i];
    struct fx f;
    fx_setup(o, &f);
    cancel_token_t *t = cancel_token_new();
    struct job j;
    job_start(&j, o, &f, t);
    cancel_token_cancel(t, ETIMEDOUT);
    tu_thread_join(j.thread);
    ck_assert_msg(j.result == -1 && j.err == ETIMEDOUT, "%s gave %ld errno %d", o->name,
                  j.result, j.err);
    cancel_token_unref(t);
    fx_teardown(&f);
}
END_TEST

START_TEST(fails_etimedout_when_the_deadline_expires)
{
    const struct op *o = &ops[_i];
    struct fx f;
    fx_setup(o, &f);
    const int64_t ns = 30 * 1000000LL;
    int64_t t0 = tu_now_ns();
    cancel_token_t *t = cancel_token_with_timeout(NULL, ns);
    ck_assert_ptr_nonnull(t);
    struct job j;
    job_start(&j, o, &f, t);
    tu_thread_join(j.thread);
    ck_assert_msg(j.result == -1 && j.err == ETIMEDOUT, "%s gave %ld errno %d", o->name,
                  j.result, j.err);
    ck_assert_int_ge(j.returned_ns - t0, ns);
    ck_assert_int_lt(j.returned_ns - t0, ns + TU_WAKE_GUARD_NS);
    fx_feed(o, &f);
    ck_assert(fx_untouched(o, &f));
    cancel_token_unref(t);
    fx_teardown(&f);
}
END_TEST

START_TEST(completes_when_ready_under_a_live_token)
{
    const struct op *o = &ops[_i];
    struct fx f;
    fx_setup(o, &f);
    cancel_token_t *t = cancel_token_new();
    struct job j;
    job_start(&j, o, &f, t);
    if (_i % 2 == 0)
        job_wait_blocked(&j);
    fx_feed(o, &f);
    tu_thread_join(j.thread);
    ck_assert_msg(j.result == o->ok, "%s gave %ld errno %d", o->name, j.result, j.err);
    if (!o->out && o->consumes && o->res != R_LISTEN)
        ck_assert_int_eq(f.byte, 'x');
    ck_assert_int_eq(j.flags_before, j.flags_after);
    if (o->out)
        ck_assert_int_eq(drain_count(f.rd, 'y', NULL) + f.ydrained, 1);
    else if (!o->consumes)
        ck_assert(fx_untouched(o, &f));   /* waiting consumed nothing */
    cancel_token_unref(t);
    fx_teardown(&f);
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
    const struct op *o = &ops[_i];
    struct fx f;
    fx_setup(o, &f);
    sem_init(&sig_seen, 0, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: the syscall fails with EINTR */
    ck_assert_int_eq(sigaction(SIGUSR1, &sa, NULL), 0);
    cancel_token_t *t = cancel_token_new();
    struct job j;
    job_start(&j, o, &f, t);
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
    fx_feed(o, &f);
    tu_thread_join(j.thread);
    ck_assert_msg(j.result == o->ok, "%s gave %ld errno %d", o->name, j.result, j.err);
    ck_assert_int_eq(j.flags_before, j.flags_after);
#ifndef __SANITIZE_THREAD__ /* TSan may drop a signal deferred past the call */
    ck_assert_int_eq(atomic_load(&sig_count), 1); /* the signal did arrive */
#endif
    cancel_token_unref(t);
    fx_teardown(&f);
}
END_TEST

START_TEST(is_the_plain_call_under_a_shield)
{
    const struct op *o = &ops[_i];
    struct fx f;
    fx_setup(o, &f);
    fx_feed(o, &f);
    cancel_token_t *t = cancel_token_new();
    cancel_token_cancel(t, 0);
    cancel_token_t *prev = cancel_enter(t);
    cancel_shield_begin();
    ck_assert_ptr_null(cancel_current());
    long r = o->call(&f);
    cancel_shield_end();
    ck_assert_ptr_eq(cancel_current(), t);
    cancel_leave(prev);
    ck_assert_msg(r == o->ok, "%s gave %ld errno %d", o->name, r, errno);
    cancel_token_unref(t);
    fx_teardown(&f);
}
END_TEST

START_TEST(is_the_plain_call_with_no_current_token)
{
    const struct op *o = &ops[_i];
    struct fx f;
    fx_setup(o, &f);
    fx_feed(o, &f);
    ck_assert_ptr_null(cancel_current());
    long r = o->call(&f);
    ck_assert_msg(r == o->ok, "%s gave %ld errno %d", o->name, r, errno);
    fx_teardown(&f);
}
END_TEST

START_TEST(never_waits_on_an_o_nonblock_descriptor)
{
    const struct op *o = &ops[_i];
    if (!o->consumes)
        return; /* poll, epoll_wait and wait_fd wait whatever the flags */
    struct fx f;
    fx_setup(o, &f);
    set_nonblock(op_fd(o, &f), true);
    int before = fcntl(op_fd(o, &f), F_GETFL);
    cancel_token_t *t = cancel_token_new();
    cancel_token_t *prev = cancel_enter(t);
    errno = 0;
    long r = o->call(&f);
    ck_assert_msg(r == -1 && errno == EAGAIN, "%s gave %ld errno %d", o->name, r, errno);
    cancel_token_cancel(t, 0);
    errno = 0;
    r = o->call(&f);
    ck_assert_msg(r == -1 && errno == ECANCELED, "%s gave %ld errno %d", o->name, r, errno);
    cancel_leave(prev);
    ck_assert_int_eq(fcntl(op_fd(o, &f), F_GETFL), before);
    cancel_token_unref(t);
    fx_teardown(&f);
}
END_TEST

/* Data and cancel race: the byte is read exactly once, by the wrapper or
 * by the plain read afterwards. */
START_TEST(every_byte_is_read_exactly_once_when_data_and_cancel_race)
{
    const struct op *o = &ops[_i];
    if (!takes_bytes(o))
        return;
    int rounds = o->call == op_read ? 2000 : 300;
    struct fx f;
    fx_setup(o, &f);
    for (int k = 0; k < rounds; k++) {
        cancel_token_t *t = cancel_token_new();
        struct job j;
        f.byte = 0;
        job_start(&j, o, &f, t);
        ck_assert_int_eq(write(f.wr, "x", 1), 1);
        cancel_token_cancel(t, 0);
        tu_thread_join(j.thread);
        int by_wrapper = j.result == 1 && f.byte == 'x';
        ck_assert_msg(by_wrapper || (j.result == -1 && j.err == ECANCELED),
                      "%s round %d gave %ld errno %d", o->name, k, j.result, j.err);
        int left = drain_count(f.rd, 'x', NULL);
        ck_assert_msg(by_wrapper + left == 1, "%s round %d: wrapper %d, left %d", o->name, k,
                      by_wrapper, left);
        cancel_token_unref(t);
    }
    fx_teardown(&f);
}
END_TEST

/* ----------------------------------------------- beyond the table */

struct writer {
    int fd;
    char *buf;
    size_t n;
    size_t done;
    ssize_t result;
    int err;
    cancel_token_t *token;
    struct cancel_blocked *blocked;
    tu_latch_t started;
    bool all;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    w->blocked = cancel__thread_blocked();
    cancel_token_t *prev = cancel_enter(w->token);
    tu_latch_post(&w->started);
    errno = 0;
    if (w->all)
        w->result = cancel_write_all(w->fd, w->buf, w->n, &w->done);
    else
        w->result = cancel_write(w->fd, w->buf, w->n);
    w->err = errno;
    cancel_leave(prev);
    return NULL;
}

static void big_write_cancelled(bool all)
{
    int p[2];
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    struct writer w;
    memset(&w, 0, sizeof w);
    w.fd = p[1];
    w.n = 4 << 20;
    w.buf = malloc(w.n);
    ck_assert_ptr_nonnull(w.buf);
    memset(w.buf, 'y', w.n);
    w.token = cancel_token_new();
    w.all = all;
    tu_latch_init(&w.started);
    pthread_t th;
    tu_thread_start(&th, writer_main, &w);
    tu_latch_wait(&w.started);
    /* Let part of it through, then cancel once the writer waits again. */
    char buf[1000];
    size_t drained = 0;
    while (atomic_load(&w.blocked->call) == NULL)
        sched_yield();
    for (int k = 0; k < 10; k++) {
        ssize_t r = read(p[0], buf, sizeof buf);
        ck_assert_int_gt(r, 0);
        drained += (size_t)r;
    }
    while (atomic_load(&w.blocked->call) == NULL)
        sched_yield();
    cancel_token_cancel(w.token, 0);
    tu_thread_join(th);
    int total = 0;
    drain_count(p[0], 'y', &total);
    drained += (size_t)total;
    if (all) {
        ck_assert_int_eq(w.result, -1);
        ck_assert_int_eq(w.err, ECANCELED);
        ck_assert_uint_eq(w.done, drained);
    } else {
        /* A blocking write cancelled part way returns the count written. */
        ck_assert_int_gt(w.result, 0);
        ck_assert_uint_eq((size_t)w.result, drained);
    }
    ck_assert_uint_gt(drained, 0);
    ck_assert_uint_lt(drained, w.n);
    cancel_token_unref(w.token);
    free(w.buf);
    close(p[0]);
    close(p[1]);
}

START_TEST(write_all_cancelled_on_a_full_pipe_reports_exactly_what_was_written)
{
    big_write_cancelled(true);
}
END_TEST

START_TEST(write_cancelled_part_way_returns_the_count_written)
{
    big_write_cancelled(false);
}
END_TEST

static char tmpl[] = "/tmp/check_io_XXXXXX";

static int temp_file(size_t size)
{
    char name[sizeof tmpl];
    memcpy(name, tmpl, sizeof tmpl);
    int fd = mkstemp(name);
    ck_assert_int_ge(fd, 0);
    unlink(name);
    if (size) {
        char *buf = malloc(size);
        ck_assert_ptr_nonnull(buf);
        for (size_t i = 0; i < size; i++)
            buf[i] = (char)(i * 7);
        ck_assert_int_eq(write(fd, buf, size), (ssize_t)size);
        free(buf);
        ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
    }
    return fd;
}

START_TEST(regular_files_move_in_chunks_of_at_most_one_mib)
{
    size_t size = 3 << 20;
    int fd = temp_file(size);
    char *buf = malloc(size);
    cancel_token_t *t = cancel_token_new();
    cancel_token_t *prev = cancel_enter(t);
    ssize_t r = cancel_read(fd, buf, size);
    ck_assert_int_gt(r, 0);
    ck_assert_int_le(r, 1 << 20);
    r = cancel_pread(fd, buf, size, 5);
    ck_assert_int_gt(r, 0);
    ck_assert_int_le(r, 1 << 20);
    ck_assert_int_eq(buf[0], (char)(5 * 7));
    size_t done = 0;
    ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
    ck_assert_int_eq(cancel_read_full(fd, buf, size, &done), (ssize_t)size);
    ck_assert_uint_eq(done, size);
    for (size_t i = 0; i < size; i += 4099)
        ck_assert_int_eq(buf[i], (char)(i * 7));
    /* At end of file read_full returns what there was. */
    ck_assert_int_eq(lseek(fd, (off_t)size - 10, SEEK_SET), (off_t)size - 10);
    ck_assert_int_eq(cancel_read_full(fd, buf, 100, &done), 10);
    ck_assert_uint_eq(done, 10);
    /* Writes of more than a chunk go out whole. */
    int out = temp_file(0);
    ck_assert_int_eq(cancel_write(out, buf, size), (ssize_t)size);
    ck_assert_int_eq(cancel_pwrite(out, "abc", 3, 1), 3);
    char back[4] = { 0 };
    ck_assert_int_eq(pread(out, back, 3, 1), 3);
    ck_assert_str_eq(back, "abc");
    struct stat st;
    ck_assert_int_eq(fstat(out, &st), 0);
    ck_assert_int_eq(st.st_size, (off_t)size);
    cancel_leave(prev);
    cancel_token_unref(t);
    free(buf);
    close(fd);
    close(out);
}
END_TEST

START_TEST(regular_file_calls_fail_before_any_io_when_cancelled)
{
    int fd = temp_file(100);
    cancel_token_t *t = cancel_token_new();
    cancel_token_cancel(t, ETIMEDOUT);
    cancel_token_t *prev = cancel_enter(t);
    char buf[10];
    errno = 0;
    ck_assert_int_eq(cancel_read(fd, buf, 10), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_eq(cancel_pread(fd, buf, 10, 0), -1);
    ck_assert_int_eq(cancel_write(fd, buf, 10), -1);
    ck_assert_int_eq(cancel_pwrite(fd, buf, 10, 0), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    size_t done = 7;
    ck_assert_int_eq(cancel_write_all(fd, buf, 10, &done), -1);
    ck_assert_uint_eq(done, 0);
    cancel_leave(prev);
    /* The file position did not move: nothing was read or written. */
    ck_assert_int_eq(lseek(fd, 0, SEEK_CUR), 0);
    struct stat st;
    ck_assert_int_eq(fstat(fd, &st), 0);
    ck_assert_int_eq(st.st_size, 100);
    cancel_token_unref(t);
    close(fd);
}
END_TEST

START_TEST(poll_and_epoll_wait_time_out_like_the_plain_calls)
{
    int p[2];
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    cancel_token_t *t = cancel_token_new();
    cancel_token_t *prev = cancel_enter(t);
    struct pollfd pf = { p[0], POLLIN, 0 };
    int64_t t0 = tu_now_ns();
    ck_assert_int_eq(cancel_poll(&pf, 1, 20), 0);
    ck_assert_int_ge(tu_now_ns() - t0, 20 * 1000000LL);
    ck_assert_int_eq(cancel_poll(&pf, 1, 0), 0);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = p[0] };
    ck_assert_int_eq(epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev), 0);
    t0 = tu_now_ns();
    ck_assert_int_eq(cancel_epoll_wait(ep, &ev, 1, 20), 0);
    ck_assert_int_ge(tu_now_ns() - t0, 20 * 1000000LL);
    ck_assert_int_eq(cancel_epoll_wait(ep, &ev, 1, 0), 0);
    errno = 0;
    ck_assert_int_eq(cancel_epoll_wait(ep, &ev, 0, 10), -1);
    ck_assert_int_eq(errno, EINVAL);
    cancel_leave(prev);
    cancel_token_unref(t);
    close(ep);
    close(p[0]);
    close(p[1]);
}
END_TEST

START_TEST(wait_fd_reports_end_of_file_and_bad_descriptors)
{
    int p[2];
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    cancel_token_t *t = cancel_token_new();
    cancel_token_t *prev = cancel_enter(t);
    close(p[1]);
    ck_assert_int_eq(cancel_wait_fd(p[0], POLLIN), 0);
    close(p[0]);
    errno = 0;
    ck_assert_int_eq(cancel_wait_fd(p[0], POLLIN), -1);
    ck_assert_int_eq(errno, EBADF);
    cancel_leave(prev);
    cancel_token_unref(t);
}
END_TEST

struct canceller {
    cancel_token_t *t;
    struct cancel_blocked *b;
};

static void *cancel_when_blocked(void *arg)
{
    struct canceller *c = arg;
    while (atomic_load(&c->b->call) == NULL)
        sched_yield();
    cancel_token_cancel(c->t, 0);
    return NULL;
}

static void *waiter_thread(void *arg)
{
    (void)arg;
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        return (void *)1;
    struct canceller c = { cancel_token_new(), cancel__thread_blocked() };
    pthread_t th;
    pthread_create(&th, NULL, cancel_when_blocked, &c);
    cancel_token_t *prev = cancel_enter(c.t);
    char byte;
    ssize_t r = cancel_read(p[0], &byte, 1);
    int err = errno;
    cancel_leave(prev);
    pthread_join(th, NULL);
    cancel_token_unref(c.t);
    close(p[0]);
    close(p[1]);
    return (r == -1 && err == ECANCELED) ? NULL : (void *)1;
}

START_TEST(no_wake_fd_leaks_across_thread_exits)
{
    /* Warm up whatever the library creates once per process. */
    pthread_t th;
    tu_thread_start(&th, waiter_thread, NULL);
    ck_assert_ptr_null(tu_thread_join(th));
    int before = tu_count_fds();
    for (int k = 0; k < 20; k++) {
        tu_thread_start(&th, waiter_thread, NULL);
        ck_assert_ptr_null(tu_thread_join(th));
    }
    ck_assert_int_eq(tu_count_fds(), before);
}
END_TEST

START_TEST(bad_arguments_get_the_plain_errors)
{
    cancel_token_t *t = cancel_token_new();
    cancel_token_t *prev = cancel_enter(t);
    char c;
    errno = 0;
    ck_assert_int_eq(cancel_read(-1, &c, 1), -1);
    ck_assert_int_eq(errno, EBADF);
    errno = 0;
    ck_assert_int_eq(cancel_write(-1, &c, 1), -1);
    ck_assert_int_eq(errno, EBADF);
    struct iovec v = { &c, 1 };
    errno = 0;
    ck_assert_int_eq(cancel_readv(0, &v, -1), -1);
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_int_eq(cancel_recv(-1, &c, 1, 0), -1);
    ck_assert_int_eq(errno, EBADF);
    int p[2];
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    errno = 0;
    ck_assert_int_eq(cancel_recv(p[0], &c, 1, 0), -1);
    ck_assert_int_eq(errno, ENOTSOCK);
    errno = 0;
    ck_assert_int_eq(cancel_pread(p[0], &c, 1, 0), -1);
    ck_assert_int_eq(errno, ESPIPE);
    close(p[0]);
    close(p[1]);
    cancel_leave(prev);
    cancel_token_unref(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("io");
    TCase *tc = tcase_create("every wrapper");
    tcase_set_timeout(tc, TU_TIMEOUT);
    tcase_add_loop_test(tc, fails_before_any_io_when_already_cancelled, 0, NOPS);
    tcase_add_loop_test(tc, fails_ecanceled_when_cancelled_while_blocked, 0, NOPS);
    tcase_add_loop_test(tc, fails_when_an_ancestor_is_cancelled, 0, NOPS);
    tcase_add_loop_test(tc, fails_etimedout_when_the_reason_is_etimedout, 0, NOPS);
    tcase_add_loop_test(tc, fails_etimedout_when_the_deadline_expires, 0, NOPS);
    tcase_add_loop_test(tc, completes_when_ready_under_a_live_token, 0, NOPS);
    tcase_add_loop_test(tc, a_signal_without_sa_restart_does_not_end_the_call, 0, NOPS);
    tcase_add_loop_test(tc, is_the_plain_call_under_a_shield, 0, NOPS);
    tcase_add_loop_test(tc, is_the_plain_call_with_no_current_token, 0, NOPS);
    tcase_add_loop_test(tc, never_waits_on_an_o_nonblock_descriptor, 0, NOPS);
    suite_add_tcase(s, tc);

    TCase *race = tcase_create("races");
    tcase_set_timeout(race, TU_TIMEOUT * 4);
    tcase_add_loop_test(race, every_byte_is_read_exactly_once_when_data_and_cancel_race, 0,
                        NOPS);
    suite_add_tcase(s, race);

    TCase *more = tcase_create("files and loops");
    tcase_set_timeout(more, TU_TIMEOUT);
    tcase_add_loop_test(more, write_all_cancelled_on_a_full_pipe_reports_exactly_what_was_written,
                        0, 20);
    tcase_add_loop_test(more, write_cancelled_part_way_returns_the_count_written, 0, 20);
    tcase_add_test(more, regular_files_move_in_chunks_of_at_most_one_mib);
    tcase_add_test(more, regular_file_calls_fail_before_any_io_when_cancelled);
    tcase_add_test(more, poll_and_epoll_wait_time_out_like_the_plain_calls);
    tcase_add_test(more, wait_fd_reports_end_of_file_and_bad_descriptors);
    tcase_add_test(more, no_wake_fd_leaks_across_thread_exits);
    tcase_add_test(more, bad_arguments_get_the_plain_errors);
    suite_add_tcase(s, more);
    return tu_run_suite(s);
}

/*
 * bench_io.c - wrapped blocking calls: how fast a cancel wakes a blocked
 * thread, and what the wrappers cost when nothing blocks.
 *
 * Wake latency (cancel -> the blocked call has returned), p50 and p99:
 *   io_wake_cancel_read      cancel_read on an empty pipe, token cancelled
 *   io_wake_raw_eventfd      hand-written: poll on {pipe, eventfd}, eventfd written
 *   io_wake_pthread_cancel   read on an empty pipe, pthread_cancel, to the cleanup handler
 *   io_wake_poll_100ms_flag  poll with a 100 ms timeout and a flag check
 * the woken thread on the other CPU than the canceller (see pin_to), and
 * the first three again with both on one CPU (..._same_cpu).
 * Ping-pong (issue 12): two threads pass a byte back and forth over two
 * pipes, so that every read blocks; us per round trip with cancel_read
 * under a live token, with a hand-rolled ppoll(fd, eventfd) + read, and
 * with plain read, in the same run (ratio against the hand-rolled one).
 * `bench_io pingpong MODE N` runs one variant alone (for strace -c and
 * callgrind): MODE 0 cancel_read, 1 ppoll+eventfd, 2 read.
 * Built a second time as bench_io_interposed (-DBENCH_INTERPOSED, linked
 * with libcancel-interpose.so and libpq), it measures the interposer
 * (issue 14) instead: a plain read with no current token through the
 * interposer vs glibc's own read (found with dlsym on the libc handle), in
 * the same run; the wake latency of a plain recv blocked under a token vs
 * cancel_recv's; and, when CANCEL_BENCH_PG names a PostgreSQL server
 * (bench/with_pg.sh starts a private one), cancel -> return of a PQexec
 * blocked on the server in pg_sleep.
 * Fast paths (ns per call, data already there):
 *   cancel_read / read on a pipe, cancel_recv / recv on a socketpair, under a
 *   live token and with no current token.
 */
#define _GNU_SOURCE 1
#include "bench.h"

#include <cancel.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define WAKE_ITERS 1000
#define SLOW_ITERS 20

/* Busy-waits NS nanoseconds, so that the sleeper is surely asleep in the kernel. */
static void spin_ns(int64_t ns)
{
    int64_t end = bench_now_ns() + ns;
    while (bench_now_ns() < end)
        ;
}

static void report_latency(const char *name, double *v, int n, double *p50, double *p99)
{
    char buf[128];
    *p99 = bench_quantile(v, n, 0.99);
    *p50 = bench_quantile(v, n, 0.5);
    snprintf(buf, sizeof buf, "%s_p50", name);
    bench_print(buf, *p50 / 1000.0, "us");
    snprintf(buf, sizeof buf, "%s_p99", name);
    bench_print(buf, *p99 / 1000.0, "us");
}

/* ------------------------------------------------ placement */

/* The wake-up figures put the canceller on CPU 0 and the thread it wakes
 * on WAKEE_CPU, the same for every variant: on a virtual machine, waking a
 * thread whose CPU went idle costs far more than waking one that shares
 * the canceller's, and a fresh thread per round (pthread_cancel's) would
 * otherwise land where a long-lived one (ours, the raw eventfd's) does
 * not.  Across CPUs (1) is the server's case; on the same CPU (0) the
 * figure is the software path alone, with no idle CPU to wake.  No-op on
 * one CPU. */
static int wakee_cpu = 1;

static void pin_to(int cpu)
{
    if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

/* ------------------------------------------------ cancel_read wake */

struct waker {
    int pipe[2];
    int efd;
    sem_t go, armed, done;
    cancel_token_t *token;
    _Atomic int64_t returned;
    _Atomic int stop;
    int mode;               /* 0: cancel_read, 1: raw eventfd+poll */
};

static void *wake_worker(void *arg)
{
    struct waker *w = arg;
    char c;
    pin_to(wakee_cpu);
    for (;;) {
        sem_wait(&w->go);
        if (atomic_load(&w->stop))
            return NULL;
        if (w->mode == 0) {
            cancel_token_t *prev = cancel_enter(w->token);
            sem_post(&w->armed);
            ssize_t r = cancel_read(w->pipe[0], &c, 1);
            atomic_store(&w->returned, bench_now_ns());
            (void)r;
            cancel_leave(prev);
        } else {
            struct pollfd p[2] = { { w->pipe[0], POLLIN, 0 }, { w->efd, POLLIN, 0 } };
            sem_post(&w->armed);
            poll(p, 2, -1);
            atomic_store(&w->returned, bench_now_ns());
            uint64_t v;
            ssize_t r = read(w->efd, &v, sizeof v);
            (void)r;
        }
        sem_post(&w->done);
    }
}

static void wake_run(int mode, double *lat, int n)
{
    struct waker w;
    memset(&w, 0, sizeof w);
    if (pipe(w.pipe) != 0)
        exit(1);
    w.efd = eventfd(0, EFD_CLOEXEC);
    w.mode = mode;
    sem_init(&w.go, 0, 0);
    sem_init(&w.armed, 0, 0);
    sem_init(&w.done, 0, 0);
    pthread_t th;
    pthread_create(&th, NULL, wake_worker, &w);
    for (int i = 0; i < n; i++) {
        if (mode == 0)
            w.token = cancel_token_new();
        sem_post(&w.go);
        sem_wait(&w.armed);
        spin_ns(50000);
        int64_t t0 = bench_now_ns();
        if (mode == 0) {
            cancel_token_cancel(w.token, 0);
        } else {
            uint64_t one = 1;
            ssize_t r = write(w.efd, &one, sizeof one);
            (void)r;
        }
        sem_wait(&w.done);
        lat[i] = (double)(atomic_load(&w.returned) - t0);
        if (mode == 0)
            cancel_token_unref(w.token);
    }
    atomic_store(&w.stop, 1);
    sem_post(&w.go);
    pthread_join(th, NULL);
    close(w.pipe[0]);
    close(w.pipe[1]);
    close(w.efd);
}

/* ------------------------------------------------ pthread_cancel */

struct pc {
    int fd;
    sem_t armed;
    _Atomic int64_t cleaned;
};

static void pc_cleanup(void *arg)
{
    struct pc *p = arg;
    atomic_store(&p->cleaned, bench_now_ns());
}

static void *pc_worker(void *arg)
{
    struct pc *p = arg;
    char c;
    pin_to(wakee_cpu);
    pthread_cleanup_push(pc_cleanup, p);
    sem_post(&p->armed);
    for (;;) {
        ssize_t r = read(p->fd, &c, 1);
        (void)r;
    }
    pthread_cleanup_pop(0);
    return NULL;
}

static void pthread_cancel_run(double *lat, int n)
{
    int fds[2];
    if (pipe(fds) != 0)
        exit(1);
    for (int i = 0; i < n; i++) {
        struct pc p = { .fd = fds[0] };
        sem_init(&p.armed, 0, 0);
        pthread_t th;
        pthread_create(&th, NULL, pc_worker, &p);
        sem_wait(&p.armed);
        spin_ns(50000);
        int64_t t0 = bench_now_ns();
        pthread_cancel(th);
        pthread_join(th, NULL);
        lat[i] = (double)(atomic_load(&p.cleaned) - t0);
        sem_destroy(&p.armed);
    }
    close(fds[0]);
    close(fds[1]);
}

/* ------------------------------------------------ poll + flag */

struct pf {
    int fd;
    sem_t armed;
    _Atomic int flag;
    _Atomic int64_t noticed;
};

static void *pf_worker(void *arg)
{
    struct pf *p = arg;
    struct pollfd q = { p->fd, POLLIN, 0 };
    sem_post(&p->armed);
    while (!atomic_load(&p->flag))
        poll(&q, 1, 100);
    atomic_store(&p->noticed, bench_now_ns());
    return NULL;
}

static void poll_flag_run(double *lat, int n)
{
    int fds[2];
    if (pipe(fds) != 0)
        exit(1);
    for (int i = 0; i < n; i++) {
        struct pf p = { .fd = fds[0] };
        sem_init(&p.armed, 0, 0);
        pthread_t th;
        pthread_create(&th, NULL, pf_worker, &p);
        sem_wait(&p.armed);
        /* Cancel at a point spread over the 100 ms period. */
        spin_ns(50000 + (int64_t)(i * 7919 % 100) * 1000000 / 1);
        int64_t t0 = bench_now_ns();
        atomic_store(&p.flag, 1);
        pthread_join(th, NULL);
        lat[i] = (double)(atomic_load(&p.noticed) - t0);
        sem_destroy(&p.armed);
    }
    close(fds[0]);
    close(fds[1]);
}

/* ------------------------------------------------ ping-pong */

enum { PP_CANCEL, PP_HAND, PP_PLAIN };

struct pingpong {
    int in, out, efd, mode, n;
    cancel_token_t *token;
};

/* One byte in, one byte out, N times (the first side starts by writing). */
static void *pp_side(void *arg)
{
    struct pingpong *p = arg;
    cancel_token_t *prev = cancel_enter(p->token);
    char c = 'p';
    bool first = p->n < 0;
    int n = first ? -p->n : p->n;
    for (int i = 0; i < n; i++) {
        if (first && write(p->out, &c, 1) != 1)
            exit(1);
        ssize_t r;
        switch (p->mode) {
        case PP_CANCEL:
            r = cancel_read(p->in, &c, 1);
            break;
        case PP_HAND: {
            struct pollfd f[2] = { { p->in, POLLIN, 0 }, { p->efd, POLLIN, 0 } };
            if (ppoll(f, 2, NULL, NULL) < 0 || (f[1].revents & POLLIN))
                exit(1);
            r = read(p->in, &c, 1);
            break;
        }
        default:
            r = read(p->in, &c, 1);
            break;
        }
        if (r != 1)
            exit(1);
        if (!first && write(p->out, &c, 1) != 1)
            exit(1);
    }
    cancel_leave(prev);
    return NULL;
}

/* us per round trip of ping-pong in MODE over N round trips. */
static double pingpong_run(int mode, int n)
{
    int a[2], b[2];
    if (pipe(a) != 0 || pipe(b) != 0)
        exit(1);
    cancel_token_t *ta = cancel_token_new(), *tb = cancel_token_new();
    struct pingpong x = { .in = b[0], .out = a[1], .mode = mode, .n = -n,
                          .efd = eventfd(0, EFD_CLOEXEC), .token = mode == PP_CANCEL ? ta : NULL };
    struct pingpong y = { .in = a[0], .out = b[1], .mode = mode, .n = n,
                          .efd = eventfd(0, EFD_CLOEXEC), .token = mode == PP_CANCEL ? tb : NULL };
    pthread_t tx, ty;
    int64_t t0 = bench_now_ns();
    pthread_create(&ty, NULL, pp_side, &y);
    pthread_create(&tx, NULL, pp_side, &x);
    pthread_join(tx, NULL);
    pthread_join(ty, NULL);
    double us = (double)(bench_now_ns() - t0) / n / 1000.0;
    close(a[0]), close(a[1]), close(b[0]), close(b[1]), close(x.efd), close(y.efd);
    cancel_token_unref(ta);
    cancel_token_unref(tb);
    return us;
}

#define PP_N 4000
#define PP_REPS 21

/* Short runs of the three variants in rotating order, medians of each:
 * drifts of a shared machine hit all three alike. */
static void pingpong_bench(void)
{
    double v[3][PP_REPS];
    for (int rep = 0; rep < PP_REPS; rep++)
        for (int k = 0; k < 3; k++) {
            int m = (rep + k) % 3;
            v[m][rep] = pingpong_run(m, PP_N);
        }
    double c = bench_median(v[PP_CANCEL], PP_REPS);
    double h = bench_median(v[PP_HAND], PP_REPS);
    double r = bench_median(v[PP_PLAIN], PP_REPS);
    bench_print("io_pingpong_cancel_read", c, "us");
    bench_print("io_pingpong_ppoll_eventfd", h, "us");
    bench_print("io_pingpong_read", r, "us");
    bench_ratio("io_pingpong_cancel_read_vs_ppoll_eventfd", c, h);
    bench_ratio("io_pingpong_cancel_read_vs_read", c, r);
}

/* ------------------------------------------------ fast paths */

enum { FAST_N = 50000 };
#ifdef BENCH_INTERPOSED
enum { IP_N = 5000 };
#endif

/* ns per one-byte read from FD (pre-filled through the writer end W). */
static double per_read_once(int fd, int w, int kind)
{
    static char fill[FAST_N];
    ssize_t put = 0;
    while (put < FAST_N) {
        ssize_t r = write(w, fill + put, (size_t)(FAST_N - put));
        if (r <= 0)
            exit(1);
        put += r;
    }
    char c;
    int64_t t0 = bench_now_ns();
    for (int i = 0; i < FAST_N; i++) {
        ssize_t r;
        switch (kind) {
        case 0: r = read(fd, &c, 1); break;
        case 1: r = cancel_read(fd, &c, 1); break;
        case 2: r = recv(fd, &c, 1, 0); break;
        default: r = cancel_recv(fd, &c, 1, 0); break;
        }
        BENCH_KEEP(r);
    }
    return (double)(bench_now_ns() - t0) / FAST_N;
}

#ifdef BENCH_INTERPOSED
#include <dlfcn.h>
#include <libpq-fe.h>

static ssize_t (*libc_read)(int, void *, size_t);

/* ns per one-byte read, through the interposer (KIND 0) or glibc's own (1). */
static double per_read_interposed(int fd, int w, int kind)
{
    static char fill[IP_N];
    ssize_t put = 0;
    while (put < IP_N) {
        ssize_t r = write(w, fill + put, (size_t)(IP_N - put));
        if (r <= 0)
            exit(1);
        put += r;
    }
    char c;
    int64_t t0 = bench_now_ns();
    for (int i = 0; i < IP_N; i++) {
        ssize_t r = kind == 0 ? read(fd, &c, 1) : libc_read(fd, &c, 1);
        BENCH_KEEP(r);
    }
    return (double)(bench_now_ns() - t0) / IP_N;
}

struct recv_waker {
    int sv[2];
    sem_t go, armed;
    cancel_token_t *token;
    _Atomic int64_t returned;
    int mode; /* 0: interposed recv, 1: cancel_recv */
    bool stop;
};

static void *recv_worker(void *arg)
{
    struct recv_waker *w = arg;
    char c;
    for (;;) {
        sem_wait(&w->go);
        if (w->stop)
            return NULL;
        cancel_token_t *prev = cancel_enter(w->token);
        sem_post(&w->armed);
        ssize_t r = w->mode == 0 ? recv(w->sv[0], &c, 1, 0) : cancel_recv(w->sv[0], &c, 1, 0);
        atomic_store(&w->returned, bench_now_ns());
        BENCH_KEEP(r);
        cancel_leave(prev);
    }
}

/* Cancel -> return of a recv blocked under a token, N times, in MODE. */
static void recv_wake_run(int mode, double *lat, int n)
{
    struct recv_waker w = { .mode = mode };
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, w.sv) != 0)
        exit(1);
    sem_init(&w.go, 0, 0);
    sem_init(&w.armed, 0, 0);
    pthread_t th;
    pthread_create(&th, NULL, recv_worker, &w);
    for (int i = 0; i < n; i++) {
        w.token = cancel_token_new();
        atomic_store(&w.returned, 0);
        sem_post(&w.go);
        sem_wait(&w.armed);
        spin_ns(50 * 1000); /* asleep in ppoll by now */
        int64_t t0 = bench_now_ns();
        cancel_token_cancel(w.token, 0);
        while (atomic_load(&w.returned) == 0)
            ;
        lat[i] = (double)(atomic_load(&w.returned) - t0);
        cancel_token_unref(w.token);
    }
    w.stop = true;
    sem_post(&w.go);
    pthread_join(th, NULL);
    close(w.sv[0]);
    close(w.sv[1]);
}

struct pq_job {
    PGconn *conn;
    cancel_token_t *token;
    sem_t started;
    _Atomic int64_t returned;
};

static void *pq_worker(void *arg)
{
    struct pq_job *j = arg;
    cancel_token_t *prev = cancel_enter(j->token);
    sem_post(&j->started);
    PGresult *r = PQexec(j->conn, "SELECT pg_sleep(60)");
    atomic_store(&j->returned, bench_now_ns());
    PQclear(r);
    cancel_leave(prev);
    return NULL;
}

/* Cancel -> return of PQexec blocked on the server, N times. */
static bool pq_run(const char *conninfo, double *lat, int n)
{
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "bench_io_interposed: %s", PQerrorMessage(c));
        PQfinish(c);
        return false;
    }
    for (int i = 0; i < n; i++) {
        struct pq_job j = { .conn = c, .token = cancel_token_new() };
        sem_init(&j.started, 0, 0);
        pthread_t th;
        pthread_create(&th, NULL, pq_worker, &j);
        sem_wait(&j.started);
        usleep(20 * 1000); /* the query is on the server by now */
        int64_t t0 = bench_now_ns();
        cancel_token_cancel(j.token, 0);
        pthread_join(th, NULL);
        lat[i] = (double)(atomic_load(&j.returned) - t0);
        cancel_token_unref(j.token);
        PQreset(c); /* the documented rule after a cancelled call */
    }
    PQfinish(c);
    return true;
}

static int interposed_main(void)
{
    void *libc = dlopen("libc.so.6", RTLD_NOLOAD | RTLD_LAZY);
    libc_read = libc ? (ssize_t (*)(int, void *, size_t))dlsym(libc, "read") : NULL;
    if (!libc_read)
        return 1;
    int pp[2];
    if (pipe(pp) != 0)
        return 1;
    fcntl(pp[1], F_SETPIPE_SZ, 1 << 20);
    /* Many short blocks, alternating, so that the machine's drifts (a
     * shared VM) hit both alike; the median block of each. */
    enum { BLOCKS = 101 };
    static double v[2][BLOCKS];
    for (int rep = 0; rep < BLOCKS; rep++) {
        v[rep & 1][rep] = per_read_interposed(pp[0], pp[1], rep & 1);
        v[!(rep & 1)][rep] = per_read_interposed(pp[0], pp[1], !(rep & 1));
    }
    double ip = bench_median(v[0], BLOCKS), lc = bench_median(v[1], BLOCKS);
    bench_print("interpose_read_no_token", ip, "ns");
    bench_print("interpose_libc_read", lc, "ns");
    bench_ratio("interpose_read_no_token_vs_libc_read", ip, lc);

    static double lat[WAKE_ITERS];
    double r50, r99, c50, c99;
    recv_wake_run(1, lat, WAKE_ITERS);
    report_latency("interpose_wake_cancel_recv", lat, WAKE_ITERS, &c50, &c99);
    recv_wake_run(0, lat, WAKE_ITERS);
    report_latency("interpose_wake_recv", lat, WAKE_ITERS, &r50, &r99);
    bench_ratio("interpose_wake_recv_vs_cancel_recv_p50", r50, c50);

    const char *pg = getenv("CANCEL_BENCH_PG");
    if (pg && *pg) {
        double pl[20], p50, p99;
        if (pq_run(pg, pl, 20))
            report_latency("interpose_pqexec_cancel_to_return", pl, 20, &p50, &p99);
    }
    return 0;
}
#endif

int main(int argc, char **argv)
{
    static double lat[WAKE_ITERS];
    double p50, p99;

#ifdef BENCH_INTERPOSED
    (void)argc, (void)argv, (void)lat, (void)p50, (void)p99;
    return interposed_main();
#endif
    if (argc == 4 && strcmp(argv[1], "pingpong") == 0) {
        printf("%.2f us\n", pingpong_run(atoi(argv[2]), atoi(argv[3])));
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "pingpong") == 0) {
        pingpong_bench();
        return 0;
    }
    pingpong_bench();

    cpu_set_t all;
    pthread_getaffinity_np(pthread_self(), sizeof all, &all);
    pin_to(0);
    wakee_cpu = 0;
    wake_run(1, lat, WAKE_ITERS);
    double raw50s, raw99s, p50s, p99s, pc50s, pc99s;
    report_latency("io_wake_raw_eventfd_same_cpu", lat, WAKE_ITERS, &raw50s, &raw99s);
    wake_run(0, lat, WAKE_ITERS);
    report_latency("io_wake_cancel_read_same_cpu", lat, WAKE_ITERS, &p50s, &p99s);
    pthread_cancel_run(lat, WAKE_ITERS);
    report_latency("io_wake_pthread_cancel_same_cpu", lat, WAKE_ITERS, &pc50s, &pc99s);
    bench_ratio("io_wake_cancel_read_vs_raw_eventfd_same_cpu_p50", p50s, raw50s);
    bench_ratio("io_wake_cancel_read_vs_pthread_cancel_same_cpu_p50", p50s, pc50s);
    wakee_cpu = 1;
    wake_run(1, lat, WAKE_ITERS);
    double raw50, raw99;
    report_latency("io_wake_raw_eventfd", lat, WAKE_ITERS, &raw50, &raw99);

    wake_run(0, lat, WAKE_ITERS);
    report_latency("io_wake_cancel_read", lat, WAKE_ITERS, &p50, &p99);

    pthread_cancel_run(lat, WAKE_ITERS);
    double pc50, pc99;
    report_latency("io_wake_pthread_cancel", lat, WAKE_ITERS, &pc50, &pc99);
    pthread_setaffinity_np(pthread_self(), sizeof all, &all);

    poll_flag_run(lat, SLOW_ITERS);
    double pf50, pf99;
    report_latency("io_wake_poll_100ms_flag", lat, SLOW_ITERS, &pf50, &pf99);

    bench_ratio("io_wake_cancel_read_vs_raw_eventfd_p50", p50, raw50);
    bench_ratio("io_wake_cancel_read_vs_pthread_cancel_p50", p50, pc50);
    bench_ratio("io_wake_cancel_read_vs_poll_100ms_flag_p50", p50, pf50);

    /* Fast paths: data already there. */
    int pp[2], sp[2];
    if (pipe(pp) != 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, sp) != 0)
        return 1;
    int sz = 1 << 20;
    setsockopt(sp[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    setsockopt(sp[1], SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    fcntl(pp[1], F_SETPIPE_SZ, 1 << 20);

    /* The variants alternate within each repetition, so that drifts in
     * machine speed hit all of them alike. */
    double v[6][BENCH_REPS];
    cancel_token_t *t = cancel_token_new();
    for (int rep = 0; rep < BENCH_REPS; rep++) {
        v[0][rep] = per_read_once(pp[0], pp[1], 0);
        v[1][rep] = per_read_once(sp[1], sp[0], 2);
        v[2][rep] = per_read_once(pp[0], pp[1], 1);
        v[3][rep] = per_read_once(sp[1], sp[0], 3);
        cancel_token_t *prev = cancel_enter(t);
        v[4][rep] = per_read_once(pp[0], pp[1], 1);
        v[5][rep] = per_read_once(sp[1], sp[0], 3);
        cancel_leave(prev);
    }
    cancel_token_unref(t);
    double plain_read = bench_median(v[0], BENCH_REPS);
    double plain_recv = bench_median(v[1], BENCH_REPS);
    double none_read = bench_median(v[2], BENCH_REPS);
    double none_recv = bench_median(v[3], BENCH_REPS);
    double tok_read = bench_median(v[4], BENCH_REPS);
    double tok_recv = bench_median(v[5], BENCH_REPS);

    bench_print("io_read_plain", plain_read, "ns");
    bench_print("io_cancel_read_token_data_ready", tok_read, "ns");
    bench_print("io_cancel_read_no_token", none_read, "ns");
    bench_print("io_recv_plain", plain_recv, "ns");
    bench_print("io_cancel_recv_token_data_ready", tok_recv, "ns");
    bench_print("io_cancel_recv_no_token", none_recv, "ns");
    bench_ratio("io_cancel_read_token_vs_read", tok_read, plain_read);
    bench_ratio("io_cancel_recv_token_vs_recv", tok_recv, plain_recv);
    bench_ratio("io_cancel_read_no_token_vs_read", none_read, plain_read);
    bench_ratio("io_cancel_recv_no_token_vs_recv", none_recv, plain_recv);
    return 0;
}

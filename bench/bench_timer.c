/*
 * bench_timer.c - deadlines: cost, lateness, and a million pending ones.
 *
 *  1. Creating and releasing a deadline token before it fires, against the
 *     naive per-token timer (timerfd_create + timerfd_settime + close),
 *     measured here: the ratio's goal is at most 0.1x.
 *  2. Lateness (fired time minus deadline) of 1000 timers, p50 and p99 in
 *     microseconds, measured in a callback on the timer thread.
 *  3. A million pending deadlines: bytes per deadline token (mallinfo2)
 *     and CPU used by the process, whose only other thread sleeps, while
 *     none is due (the timer thread must sleep, not spin).
 *  4. Moving a deadline with cancel_token_set_deadline, against releasing
 *     a deadline token and making a new one, and against timerfd_settime.
 *
 * Every figure is the median of BENCH_REPS (7) or 5 repetitions.
 */
#include "config.h"
#include "bench.h"

#include <cancel.h>

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define MS 1000000LL

static double per_op(int64_t t0, int n)
{
    return (double)(bench_now_ns() - t0) / n;
}

static double deadline_create_release(cancel_token_t *parent, int n)
{
    int64_t t0 = bench_now_ns();
    for (int i = 0; i < n; i++) {
        cancel_token_t *t = cancel_token_with_timeout(parent, 10000 * MS);
        BENCH_KEEP(t);
        cancel_token_unref(t);
    }
    return per_op(t0, n);
}

static double timerfd_create_settime_close(int n)
{
    int64_t t0 = bench_now_ns();
    for (int i = 0; i < n; i++) {
        int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
        struct itimerspec its = { { 0, 0 }, { 10, 0 } };
        timerfd_settime(fd, 0, &its, NULL);
        close(fd);
    }
    return per_op(t0, n);
}

static void bench_create_release(void)
{
    enum { N = 200000 };
    double root[BENCH_REPS], child[BENCH_REPS], tfd[BENCH_REPS];
    cancel_token_t *parent = cancel_token_new();
    deadline_create_release(parent, N / 10); /* warm up: starts the timer thread */
    for (int r = 0; r < BENCH_REPS; r++) {
        root[r] = deadline_create_release(NULL, N);
        child[r] = deadline_create_release(parent, N);
        tfd[r] = timerfd_create_settime_close(N / 10);
    }
    cancel_token_unref(parent);
    double ours = bench_median(child, BENCH_REPS);
    double anchor = bench_median(tfd, BENCH_REPS);
    bench_print("deadline_root_create_release", bench_median(root, BENCH_REPS), "ns/op");
    bench_print("deadline_child_create_release", ours, "ns/op");
    bench_print("timerfd_create_settime_close", anchor, "ns/op");
    bench_ratio("deadline_vs_timerfd", ours, anchor);
}

/* ------------------------------------------------------------ lateness */

enum { TIMERS = 1000 };

struct lateness {
    int64_t deadline[TIMERS];
    int64_t fired[TIMERS];
    _Atomic int done;
    pthread_mutex_t mutex;
    pthread_cond_t all_done;
};

struct slot {
    struct lateness *l;
    int i;
};

static void record(void *arg, int reason)
{
    (void)reason;
    struct slot *s = arg;
    s->l->fired[s->i] = bench_now_ns();
    if (atomic_fetch_add(&s->l->done, 1) + 1 == TIMERS) {
        pthread_mutex_lock(&s->l->mutex);
        pthread_cond_signal(&s->l->all_done);
        pthread_mutex_unlock(&s->l->mutex);
    }
}

static void lateness_once(double *p50, double *p99)
{
    static struct lateness l;
    static struct slot slots[TIMERS];
    static cancel_token_t *tokens[TIMERS];
    static cancel_callback_t cbs[TIMERS];
    atomic_store(&l.done, 0);
    pthread_mutex_init(&l.mutex, NULL);
    pthread_cond_init(&l.all_done, NULL);
    int64_t start = bench_now_ns() + 5 * MS;
    for (int i = 0; i < TIMERS; i++) {
        /* 100 us apart, in a scrambled creation order. */
        int k = (i * 7919) % TIMERS;
        int64_t at = start + (int64_t)k * 100000;
        struct timespec ts = { at / 1000000000LL, at % 1000000000LL };
        l.deadline[i] = at;
        slots[i].l = &l;
        slots[i].i = i;
        tokens[i] = cancel_token_with_deadline(NULL, &ts);
        cancel_callback_add(&cbs[i], tokens[i], record, &slots[i]);
    }
    pthread_mutex_lock(&l.mutex);
    while (atomic_load(&l.done) < TIMERS)
        pthread_cond_wait(&l.all_done, &l.mutex);
    pthread_mutex_unlock(&l.mutex);
    static double late[TIMERS];
    for (int i = 0; i < TIMERS; i++) {
        late[i] = (double)(l.fired[i] - l.deadline[i]) / 1000.0;
        cancel_callback_remove(&cbs[i]);
        cancel_token_unref(tokens[i]);
    }
    *p50 = bench_quantile(late, TIMERS, 0.5);
    *p99 = bench_quantile(late, TIMERS, 0.99);
    pthread_cond_destroy(&l.all_done);
    pthread_mutex_destroy(&l.mutex);
}

static void bench_lateness(void)
{
    enum { REPS = 5 };
    double p50[REPS], p99[REPS];
    for (int r = 0; r < REPS; r++)
        lateness_once(&p50[r], &p99[r]);
    bench_print("deadline_lateness_p50", bench_median(p50, REPS), "us");
    bench_print("deadline_lateness_p99", bench_median(p99, REPS), "us");
}

/* ------------------------------------------------- a million pending */

static int64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void bench_million(void)
{
    enum { N = 1000000, REPS = 5 };
    cancel_token_t **t = malloc(N * sizeof *t);
    if (!t)
        return;
#ifdef HAVE_MALLINFO2
    size_t before = mallinfo2().uordblks;
#endif
    int64_t t0 = bench_now_ns();
    uint64_t x = 88172645463325252ULL;
    for (int i = 0; i < N; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17; /* xorshift: deadlines in random order, an hour away */
        t[i] = cancel_token_with_timeout(NULL, 3600LL * 1000 * MS + (int64_t)(x % (600LL * 1000 * MS)));
    }
    double create = per_op(t0, N);
#ifdef HAVE_MALLINFO2
    size_t after = mallinfo2().uordblks;
    bench_print("pending_deadline_memory", (double)(after - before) / N, "bytes/token");
#endif
    bench_print("pending_deadline_create_1m_heap", create, "ns/op");

    double cpu[REPS];
    for (int r = 0; r < REPS; r++) {
        int64_t c0 = cpu_ns();
        struct timespec nap = { 1, 0 };
        while (nanosleep(&nap, &nap) != 0 && errno == EINTR)
            ;
        cpu[r] = (double)(cpu_ns() - c0) / 1000.0;
    }
    bench_print("pending_1m_timer_cpu", bench_median(cpu, REPS), "us/s");

    t0 = bench_now_ns();
    for (int i = 0; i < N; i++)
        cancel_token_unref(t[i]);
    bench_print("pending_deadline_release_1m_heap", per_op(t0, N), "ns/op");
    free(t);
}

/*
 * 4. Moving a deadline (the idle timeout of a connection, once per
 *    request): cancel_token_set_deadline on one long-lived token, against
 *    releasing the old deadline token and making a new one, and against
 *    timerfd_settime on one timerfd.  1,000 other deadlines are pending;
 *    each move is later than the last (now + the idle timeout, per
 *    request), as a server's are.
 */
static void bench_move(void)
{
    enum { N = 200000, PENDING = 1000 };
    cancel_token_t *others[PENDING];
    for (int i = 0; i < PENDING; i++)
        others[i] = cancel_token_with_timeout(NULL, (3600 + i) * 1000 * MS);
    cancel_token_t *conn = cancel_token_new();
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    double move[BENCH_REPS], renew[BENCH_REPS], tfd_move[BENCH_REPS];
    for (int r = 0; r < BENCH_REPS; r++) {
        struct timespec base;
        clock_gettime(CLOCK_MONOTONIC, &base);
        base.tv_sec += 1000;
        int64_t t0 = bench_now_ns();
        for (int i = 0; i < N; i++) {
            struct timespec at = { base.tv_sec + i / 1000, (i % 1000) * 1000L };
            cancel_token_set_deadline(conn, &at);
        }
        move[r] = per_op(t0, N);

        cancel_token_t *cur = cancel_token_with_deadline(conn, &base);
        t0 = bench_now_ns();
        for (int i = 0; i < N; i++) {
            struct timespec at = { base.tv_sec + i / 1000, (i % 1000) * 1000L };
            cancel_token_unref(cur);
            cur = cancel_token_with_deadline(conn, &at);
        }
        renew[r] = per_op(t0, N);
        cancel_token_unref(cur);

        t0 = bench_now_ns();
        for (int i = 0; i < N; i++) {
            struct itimerspec its = { { 0, 0 }, { base.tv_sec + i / 1000, (i % 1000) * 1000L } };
            timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
        }
        tfd_move[r] = per_op(t0, N);
    }
    double a = bench_median(move, BENCH_REPS);
    double b = bench_median(renew, BENCH_REPS);
    double c = bench_median(tfd_move, BENCH_REPS);
    bench_print("set_deadline_move", a, "ns");
    bench_print("anchor_release_new_deadline_token", b, "ns");
    bench_print("anchor_timerfd_settime", c, "ns");
    bench_ratio("ratio_set_deadline_vs_new_token", a, b);
    bench_ratio("ratio_set_deadline_vs_timerfd", a, c);
    close(tfd);
    cancel_token_unref(conn);
    for (int i = 0; i < PENDING; i++)
        cancel_token_unref(others[i]);
}

int main(void)
{
    bench_create_release();
    bench_lateness();
    bench_million();
    bench_move();
    return 0;
}

/*
 * bench_scope.c - scopes against plain pthreads, in the same program.
 *
 *  scope_spawn_join          open + spawn of a trivial task + join (ns)
 *  anchor_pthread_create_join  pthread_create + pthread_join (ns)
 *  scope_teardown_1000_read  1,000 tasks blocked in cancel_read on pipes:
 *                            cancel -> join returns (us)
 *  anchor_pthread_cancel_1000_read  1,000 threads blocked in read:
 *                            pthread_cancel each, then pthread_join each (us)
 *  scope_teardown_1_read / anchor_pthread_cancel_1_read: the same, one task
 *  scope_blocked_task_memory RSS per task blocked in cancel_read (KiB)
 *  anchor_blocked_thread_memory RSS per pthread blocked in read (KiB)
 *  scope_idle_worker_memory  RSS per idle cached worker thread (KiB)
 *
 * The anchor threads get the same stack size as the scope's workers.
 */
#define _GNU_SOURCE
#include <cancel.h>

#include "bench.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

enum { SPAWN_ITERS = 2000, MANY = 1000 };

static atomic_int entered;

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench_scope: %s: %s\n", what, strerror(rc));
    exit(1);
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (!f)
        return 0;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = 0;
    fclose(f);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static int count_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    struct dirent *e;
    if (!d)
        return 0;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static void settle(int64_t ns)
{
    struct timespec ts = { (time_t)(ns / 1000000000), (long)(ns % 1000000000) };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ------------------------------------------------------------ spawn+join */

static int trivial(void *arg)
{
    BENCH_KEEP(arg);
    return 0;
}

static void *trivial_thread(void *arg)
{
    BENCH_KEEP(arg);
    return NULL;
}

static void bench_spawn_join(pthread_attr_t *attr)
{
    double ours[BENCH_REPS], anchor[BENCH_REPS];
    for (int r = 0; r < BENCH_REPS; r++) {
        int64_t t0 = bench_now_ns();
        for (int i = 0; i < SPAWN_ITERS; i++) {
            cancel_scope_t *s = cancel_scope_open(0);
            int rc = cancel_scope_spawn(s, trivial, NULL, NULL);
            if (rc)
                die("spawn", rc);
            cancel_scope_join(s, NULL);
        }
        ours[r] = (double)(bench_now_ns() - t0) / SPAWN_ITERS;

        t0 = bench_now_ns();
        for (int i = 0; i < SPAWN_ITERS; i++) {
            pthread_t th;
            int rc = pthread_create(&th, attr, trivial_thread, NULL);
            if (rc)
                die("pthread_create", rc);
            pthread_join(th, NULL);
        }
        anchor[r] = (double)(bench_now_ns() - t0) / SPAWN_ITERS;
    }
    double a = bench_median(ours, BENCH_REPS), b = bench_median(anchor, BENCH_REPS);
    bench_print("scope_spawn_join", a, "ns");
    bench_print("anchor_pthread_create_join", b, "ns");
    bench_ratio("ratio_spawn_join", a, b);
}

/* ------------------------------------------------------------ teardown */

static int task_read(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char c;
    atomic_fetch_add(&entered, 1);
    return cancel_read(fd, &c, 1) < 0 ? errno : 0;
}

static void *thread_read(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char c;
    atomic_fetch_add(&entered, 1);
    for (;;)
        if (read(fd, &c, 1) >= 0 || errno != EINTR)
            break;
    return NULL;
}

/* Waits until N tasks or threads said they are about to read, then gives
 * them time to get into the call. */
static void wait_entered(int n)
{
    while (atomic_load(&entered) < n)
        settle(100000);
    settle(20 * 1000000LL);
}

static double scope_teardown(int n, int (*fds)[2], long *rss_delta)
{
    atomic_store(&entered, 0);
    long before = rss_kib();
    cancel_scope_t *s = cancel_scope_open(0);
    for (int i = 0; i < n; i++) {
        int rc = cancel_scope_spawn(s, task_read, (void *)(intptr_t)fds[i][0], NULL);
        if (rc)
            die("spawn", rc);
    }
    wait_entered(n);
    if (rss_delta)
        *rss_delta = rss_kib() - before;
    int64_t t0 = bench_now_ns();
    cancel_scope_cancel(s);
    cancel_scope_join(s, NULL);
    return (double)(bench_now_ns() - t0) / 1000.0;
}

static double pthread_teardown(int n, int (*fds)[2], pthread_attr_t *attr,
                               pthread_t *threads, long *rss_delta)
{
    atomic_store(&entered, 0);
    long before = rss_kib();
    for (int i = 0; i < n; i++) {
        int rc = pthread_create(&threads[i], attr, thread_read, (void *)(intptr_t)fds[i][0]);
        if (rc)
            die("pthread_create", rc);
    }
    wait_entered(n);
    if (rss_delta)
        *rss_delta = rss_kib() - before;
    int64_t t0 = bench_now_ns();
    for (int i = 0; i < n; i++)
        pthread_cancel(threads[i]);
    for (int i = 0; i < n; i++)
        pthread_join(threads[i], NULL);
    return (double)(bench_now_ns() - t0) / 1000.0;
}

static void bench_teardown(int n, const char *ours_name, const char *anchor_name,
                           const char *ratio_name, pthread_attr_t *attr, bool memory)
{
    int (*fds)[2] = calloc((size_t)n, sizeof *fds);
    pthread_t *threads = calloc((size_t)n, sizeof *threads);
    if (!fds || !threads)
        die("calloc", ENOMEM);
    for (int i = 0; i < n; i++)
        if (pipe(fds[i]) != 0)
            die("pipe", errno);
    double ours[BENCH_REPS], anchor[BENCH_REPS];
    double mem_ours[BENCH_REPS], mem_anchor[BENCH_REPS];
    for (int r = 0; r < BENCH_REPS; r++) {
        long d1 = 0, d2 = 0;
        ours[r] = scope_teardown(n, fds, &d1);
        anchor[r] = pthread_teardown(n, fds, attr, threads, &d2);
        mem_ours[r] = (double)d1 / n;
        mem_anchor[r] = (double)d2 / n;
    }
    double a = bench_median(ours, BENCH_REPS), b = bench_median(anchor, BENCH_REPS);
    bench_print(ours_name, a, "us");
    bench_print(anchor_name, b, "us");
    bench_ratio(ratio_name, a, b);
    if (memory) {
        /* The first repetition creates the threads; later ones reuse the
         * scope's cached workers (and their already-touched stacks), so the
         * median of the deltas is the steady state.  Report the first
         * (cold) figure too. */
        double cold = mem_ours[0];
        bench_print("scope_blocked_task_memory", bench_median(mem_ours, BENCH_REPS), "KiB");
        bench_print("scope_blocked_task_memory_cold", cold, "KiB");
        bench_print("anchor_blocked_thread_memory", bench_median(mem_anchor, BENCH_REPS), "KiB");
    }
    for (int i = 0; i < n; i++) {
        close(fds[i][0]);
        close(fds[i][1]);
    }
    free(fds);
    free(threads);
}

/* ------------------------------------------------------------ idle memory */

static atomic_int gate;

static int task_wait_gate(void *arg)
{
    BENCH_KEEP(arg);
    atomic_fetch_add(&entered, 1);
    while (!atomic_load(&gate))
        settle(100000);
    return 0;
}

static void bench_idle_memory(void)
{
    /* Let earlier workers expire so that the ones measured here are new. */
    int base = 1;
    while (count_threads() > base)
        settle(10 * 1000000LL);
    long before = rss_kib();
    atomic_store(&entered, 0);
    atomic_store(&gate, 0);
    enum { IDLE = 64 };
    cancel_scope_t *s = cancel_scope_open(0);
    for (int i = 0; i < IDLE; i++)
        cancel_scope_spawn(s, task_wait_gate, NULL, NULL);
    while (atomic_load(&entered) < IDLE)
        settle(100000);
    atomic_store(&gate, 1);
    cancel_scope_join(s, NULL);
    settle(20 * 1000000LL);
    bench_print("scope_idle_worker_memory", (double)(rss_kib() - before) / IDLE, "KiB");
}

int main(void)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, cancel_default_stack_size());

    bench_spawn_join(&attr);
    bench_teardown(1, "scope_teardown_1_read", "anchor_pthread_cancel_1_read",
                   "ratio_teardown_1_read", &attr, false);
    bench_teardown(MANY, "scope_teardown_1000_read", "anchor_pthread_cancel_1000_read",
                   "ratio_teardown_1000_read", &attr, true);
    bench_idle_memory();
    pthread_attr_destroy(&attr);
    return 0;
}

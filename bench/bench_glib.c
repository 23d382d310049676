/*
 * bench_glib.c - the GLib anchor: libcancel against GLib's GCancellable,
 * the same workload in the same process (built when GIO is found).
 *
 *   is_cancelled          cancel_token_is_cancelled (inline) vs
 *                         g_cancellable_is_cancelled, ns per call
 *   callback add+remove   cancel_callback_add + _remove vs
 *                         g_cancellable_connect + g_cancellable_disconnect
 *   cancel, 100 handlers  cancel_token_cancel with 100 callbacks vs
 *                         g_cancellable_cancel with 100 handlers (the cancel only)
 *   child                 cancel_token_child + unref vs a child emulated
 *                         with a handler on the parent (new GCancellable,
 *                         connect; disconnect, unref)
 *   wake p50              a thread blocked in cancel_recv vs in
 *                         g_socket_receive on an empty socket: from the
 *                         cancel to the call's return
 *
 * Each figure is the median of BENCH_REPS runs; each ratio (ours / GLib's)
 * is printed by this program, which measured both.
 */
#define _GNU_SOURCE 1
#include "bench.h"

#include <cancel.h>
#include <gio/gio.h>

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#define FAST_ITERS 20000000
#define CB_ITERS 200000
#define CHILD_ITERS 200000
#define HANDLERS 100
#define CANCEL_ROUNDS 200
#define WAKE_ITERS 300

static void noop_cb(void *arg, int reason)
{
    (void)arg;
    (void)reason;
}

static void noop_handler(GCancellable *c, gpointer data)
{
    (void)c;
    (void)data;
}

typedef double (*measure_fn)(void);

/* Median over BENCH_REPS runs of FN. */
static double median_of(measure_fn fn)
{
    double v[BENCH_REPS];
    for (int i = 0; i < BENCH_REPS; i++)
        v[i] = fn();
    return bench_median(v, BENCH_REPS);
}

static void pair(const char *ours_name, measure_fn ours, const char *glib_name,
                 measure_fn glib, const char *ratio_name, const char *unit)
{
    double a = median_of(ours), b = median_of(glib);
    bench_print(ours_name, a, unit);
    bench_print(glib_name, b, unit);
    bench_ratio(ratio_name, a, b);
}

/* ------------------------------------------------------------ is_cancelled */

static double ours_is_cancelled(void)
{
    cancel_token_t *t = cancel_token_new();
    int64_t t0 = bench_now_ns();
    long n = 0;
    for (long i = 0; i < FAST_ITERS; i++) {
        n += cancel_token_is_cancelled(t);
        BENCH_KEEP(n);
    }
    int64_t t1 = bench_now_ns();
    cancel_token_unref(t);
    return (double)(t1 - t0) / FAST_ITERS;
}

static double glib_is_cancelled(void)
{
    GCancellable *c = g_cancellable_new();
    int64_t t0 = bench_now_ns();
    long n = 0;
    for (long i = 0; i < FAST_ITERS; i++) {
        n += g_cancellable_is_cancelled(c);
        BENCH_KEEP(n);
    }
    int64_t t1 = bench_now_ns();
    g_object_unref(c);
    return (double)(t1 - t0) / FAST_ITERS;
}

/* ------------------------------------------------------------ add+remove */

static double ours_add_remove(void)
{
    cancel_token_t *t = cancel_token_new();
    cancel_callback_t cb;
    int64_t t0 = bench_now_ns();
    for (int i = 0; i < CB_ITERS; i++) {
        cancel_callback_add(&cb, t, noop_cb, NULL);
        cancel_callback_remove(&cb);
    }
    int64_t t1 = bench_now_ns();
    cancel_token_unref(t);
    return (double)(t1 - t0) / CB_ITERS;
}

static double glib_connect_disconnect(void)
{
    GCancellable *c = g_cancellable_new();
    int64_t t0 = bench_now_ns();
    for (int i = 0; i < CB_ITERS; i++) {
        gulong id = g_cancellable_connect(c, G_CALLBACK(noop_handler), NULL, NULL);
        g_cancellable_disconnect(c, id);
    }
    int64_t t1 = bench_now_ns();
    g_object_unref(c);
    return (double)(t1 - t0) / CB_ITERS;
}

/* ------------------------------------------------------------ cancel, 100 handlers */

/* The median round (a round is one cancel of a fresh token), in us. */
static double ours_cancel_100(void)
{
    static cancel_callback_t cbs[HANDLERS];
    static double v[CANCEL_ROUNDS];
    for (int r = 0; r < CANCEL_ROUNDS; r++) {
        cancel_token_t *t = cancel_token_new();
        for (int i = 0; i < HANDLERS; i++)
            cancel_callback_add(&cbs[i], t, noop_cb, NULL);
        int64_t t0 = bench_now_ns();
        cancel_token_cancel(t, ECANCELED);
        v[r] = (double)(bench_now_ns() - t0) / 1000.0;
        cancel_token_unref(t);
    }
    return bench_median(v, CANCEL_ROUNDS);
}

static double glib_cancel_100(void)
{
    static double v[CANCEL_ROUNDS];
    for (int r = 0; r < CANCEL_ROUNDS; r++) {
        GCancellable *c = g_cancellable_new();
        for (int i = 0; i < HANDLERS; i++)
            g_cancellable_connect(c, G_CALLBACK(noop_handler), NULL, NULL);
        int64_t t0 = bench_now_ns();
        g_cancellable_cancel(c);
        v[r] = (double)(bench_now_ns() - t0) / 1000.0;
        g_object_unref(c);
    }
    return bench_median(v, CANCEL_ROUNDS);
}

/* ------------------------------------------------------------ child */

static double ours_child(void)
{
    cancel_token_t *parent = cancel_token_new();
    int64_t t0 = bench_now_ns();
    for (int i = 0; i < CHILD_ITERS; i++)
        cancel_token_unref(cancel_token_child(parent));
    int64_t t1 = bench_now_ns();
    cancel_token_unref(parent);
    return (double)(t1 - t0) / CHILD_ITERS;
}

static void cancel_child_handler(GCancellable *parent, gpointer child)
{
    (void)parent;
    g_cancellable_cancel(child);
}

static double glib_child(void)
{
    GCancellable *parent = g_cancellable_new();
    int64_t t0 = bench_now_ns();
    for (int i = 0; i < CHILD_ITERS; i++) {
        GCancellable *child = g_cancellable_new();
        gulong id = g_cancellable_connect(parent, G_CALLBACK(cancel_child_handler), child, NULL);
        g_cancellable_disconnect(parent, id);
        g_object_unref(child);
    }
    int64_t t1 = bench_now_ns();
    g_object_unref(parent);
    return (double)(t1 - t0) / CHILD_ITERS;
}

/* ------------------------------------------------------------ wake */

/* Busy-waits NS nanoseconds, so that the sleeper is surely asleep in the kernel. */
static void spin_ns(int64_t ns)
{
    int64_t end = bench_now_ns() + ns;
    while (bench_now_ns() < end)
        ;
}

struct waker {
    int sv[2];
    GSocket *sock;
    bool use_glib;
    sem_t go, done;
    cancel_token_t *token;      /* this round's */
    GCancellable *gc;           /* this round's */
    _Atomic int64_t returned;
    _Atomic int stop;
    int failures;               /* the call returned something else than cancelled */
};

static void *wake_main(void *arg)
{
    struct waker *w = arg;
    for (;;) {
        sem_wait(&w->go);
        if (atomic_load(&w->stop))
            return NULL;
        char b;
        bool ok;
        if (w->use_glib) {
            GError *err = NULL;
            gssize n = g_socket_receive(w->sock, &b, 1, w->gc, &err);
            ok = n < 0 && g_error_matches(err, G_IO_ERROR, G_IO_ERROR_CANCELLED);
            g_clear_error(&err);
        } else {
            cancel_token_t *prev = cancel_enter(w->token);
            ssize_t n = cancel_recv(w->sv[0], &b, 1, 0);
            ok = n < 0 && errno == ECANCELED;
            cancel_leave(prev);
        }
        atomic_store(&w->returned, bench_now_ns());
        if (!ok)
            w->failures++;
        sem_post(&w->done);
    }
}

static double wake_p50(bool use_glib)
{
    struct waker w = { .use_glib = use_glib };
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, w.sv) != 0)
        abort();
    /* GSocket makes its descriptor non-blocking: cancel_recv gets a
     * socketpair of its own, left blocking. */
    if (use_glib)
        w.sock = g_socket_new_from_fd(w.sv[0], NULL);
    sem_init(&w.go, 0, 0);
    sem_init(&w.done, 0, 0);
    pthread_t th;
    pthread_create(&th, NULL, wake_main, &w);
    double *lat = malloc(sizeof *lat * WAKE_ITERS);
    for (int i = 0; i < WAKE_ITERS; i++) {
        if (use_glib)
            w.gc = g_cancellable_new();
        else
            w.token = cancel_token_new();
        sem_post(&w.go);
        spin_ns(200 * 1000);
        int64_t t0 = bench_now_ns();
        if (use_glib)
            g_cancellable_cancel(w.gc);
        else
            cancel_token_cancel(w.token, ECANCELED);
        sem_wait(&w.done);
        lat[i] = (double)(atomic_load(&w.returned) - t0);
        if (use_glib)
            g_object_unref(w.gc);
        else
            cancel_token_unref(w.token);
    }
    atomic_store(&w.stop, 1);
    sem_post(&w.go);
    pthread_join(th, NULL);
    if (w.failures)
        fprintf(stderr, "bench_glib: %d wake-ups were not cancellations\n", w.failures);
    double p50 = bench_quantile(lat, WAKE_ITERS, 0.5) / 1000.0;
    free(lat);
    if (w.sock)
        g_object_unref(w.sock); /* closes sv[0] */
    else
        close(w.sv[0]);
    close(w.sv[1]);
    return p50;
}

/* Three runs each (every run is 300 wake-ups), median of the three. */
static double median3_wake(bool use_glib)
{
    double v[3];
    for (int i = 0; i < 3; i++)
        v[i] = wake_p50(use_glib);
    return bench_median(v, 3);
}

int main(void)
{
    pair("glib_ours_is_cancelled", ours_is_cancelled, "glib_anchor_g_cancellable_is_cancelled",
         glib_is_cancelled, "ratio_glib_is_cancelled", "ns");
    pair("glib_ours_callback_add_remove", ours_add_remove,
         "glib_anchor_connect_disconnect", glib_connect_disconnect,
         "ratio_glib_callback_add_remove", "ns");
    pair("glib_ours_cancel_100_callbacks", ours_cancel_100,
         "glib_anchor_cancel_100_handlers", glib_cancel_100,
         "ratio_glib_cancel_100", "us");
    pair("glib_ours_child_create_release", ours_child,
         "glib_anchor_child_emulated", glib_child,
         "ratio_glib_child", "ns");
    double a = median3_wake(false), b = median3_wake(true);
    bench_print("glib_ours_cancel_recv_wake_p50", a, "us");
    bench_print("glib_anchor_g_socket_receive_wake_p50", b, "us");
    bench_ratio("ratio_glib_wake_p50", a, b);
    return 0;
}

/*
 * bench_token.c - the token core: is_cancelled, child create+release,
 * callback add+remove, cancel with callbacks, cancelling a large tree, a
 * ten-million-deep chain, memory per child.  The C++20 std::stop_token
 * figures come from bench/anchor_stop_token.cpp, run in the same
 * `make bench`; bench/ratios.txt pairs them.
 */
#include "config.h"
#include "bench.h"

#include <cancel.h>
#include <malloc.h>
#include <pthread.h>
#include <stdbool.h>

enum { SPIN = 20000000, CHILDREN = 1000000, CALLBACKS = 100, TREE = 100000 };

static double per_op_ns(int64_t t0, int64_t t1, long n)
{
    return (double)(t1 - t0) / (double)n;
}

static double bench_is_cancelled(void)
{
    double v[BENCH_REPS];
    cancel_token_t *t = cancel_token_new();
    for (int r = 0; r < BENCH_REPS; r++) {
        long hits = 0;
        int64_t t0 = bench_now_ns();
        for (long i = 0; i < SPIN; i++) {
            hits += cancel_token_is_cancelled(t);
            BENCH_KEEP(hits);
        }
        v[r] = per_op_ns(t0, bench_now_ns(), SPIN);
    }
    cancel_token_unref(t);
    return bench_median(v, BENCH_REPS);
}

/* The exported function, through the PLT, for users who take its address. */
static double bench_is_cancelled_call(void)
{
    double v[BENCH_REPS];
    cancel_token_t *t = cancel_token_new();
    bool (*volatile fn)(const cancel_token_t *) = (cancel_token_is_cancelled);
    bool (*call)(const cancel_token_t *) = fn;
    for (int r = 0; r < BENCH_REPS; r++) {
        long hits = 0;
        int64_t t0 = bench_now_ns();
        for (long i = 0; i < SPIN; i++) {
            hits += call(t);
            BENCH_KEEP(hits);
        }
        v[r] = per_op_ns(t0, bench_now_ns(), SPIN);
    }
    cancel_token_unref(t);
    return bench_median(v, BENCH_REPS);
}

static double bench_child(void)
{
    double v[BENCH_REPS];
    cancel_token_t *root = cancel_token_new();
    for (int r = 0; r < BENCH_REPS; r++) {
        int64_t t0 = bench_now_ns();
        for (long i = 0; i < CHILDREN; i++) {
            cancel_token_t *c = cancel_token_child(root);
            BENCH_KEEP(c);
            cancel_token_unref(c);
        }
        v[r] = per_op_ns(t0, bench_now_ns(), CHILDREN);
    }
    cancel_token_unref(root);
    return bench_median(v, BENCH_REPS);
}

static double bench_child_memory(void)
{
    enum { N = 100000 };
    static cancel_token_t *kids[N];
    cancel_token_t *root = cancel_token_new();
    size_t before = mallinfo2().uordblks;
    for (int i = 0; i < N; i++)
        kids[i] = cancel_token_child(root);
    size_t after = mallinfo2().uordblks;
    for (int i = 0; i < N; i++)
        cancel_token_unref(kids[i]);
    cancel_token_unref(root);
    return (double)(after - before) / N;
}

static void noop(void *arg, int reason)
{
    (void)arg;
    (void)reason;
}

static double bench_callback(void)
{
    double v[BENCH_REPS];
    cancel_token_t *t = cancel_token_new();
    cancel_callback_t cb;
    for (int r = 0; r < BENCH_REPS; r++) {
        int64_t t0 = bench_now_ns();
        for (long i = 0; i < CHILDREN; i++) {
            cancel_callback_add(&cb, t, noop, NULL);
            cancel_callback_remove(&cb);
        }
        v[r] = per_op_ns(t0, bench_now_ns(), CHILDREN);
    }
    cancel_token_unref(t);
    return bench_median(v, BENCH_REPS);
}

/* Add+remove from CONTENDERS threads at once on one token: every
 * operation takes the library lock, so this is its contended cost (wall
 * time over all the threads' operations). */
enum { CONTENDERS = 4, CONTENDED_OPS = 500000 };

static pthread_barrier_t contended_start;

static void *contended_worker(void *arg)
{
    cancel_token_t *t = arg;
    cancel_callback_t cb;
    pthread_barrier_wait(&contended_start);
    for (long i = 0; i < CONTENDED_OPS; i++) {
        cancel_callback_add(&cb, t, noop, NULL);
        cancel_callback_remove(&cb);
    }
    return NULL;
}

static double bench_callback_contended(void)
{
    double v[BENCH_REPS];
    cancel_token_t *t = cancel_token_new();
    for (int r = 0; r < BENCH_REPS; r++) {
        pthread_t th[CONTENDERS];
        pthread_barrier_init(&contended_start, NULL, CONTENDERS + 1);
        for (int i = 0; i < CONTENDERS; i++)
            pthread_create(&th[i], NULL, contended_worker, t);
        pthread_barrier_wait(&contended_start);
        int64_t t0 = bench_now_ns();
        for (int i = 0; i < CONTENDERS; i++)
            pthread_join(th[i], NULL);
        v[r] = per_op_ns(t0, bench_now_ns(), (long)CONTENDERS * CONTENDED_OPS);
        pthread_barrier_destroy(&contended_start);
    }
    cancel_token_unref(t);
    return bench_median(v, BENCH_REPS);
}

static void *idle_thread(void *arg)
{
    return arg;
}

/* Cancel of a token with 100 callbacks, in a process that has created a thread. */
static double bench_cancel_callbacks(void)
{
    enum { ROUNDS = 2000 };
    static double v[ROUNDS];
    static cancel_callback_t cbs[CALLBACKS];
    pthread_t th;
    pthread_create(&th, NULL, idle_thread, NULL);
    pthread_join(th, NULL);
    for (int r = 0; r < ROUNDS; r++) {
        cancel_token_t *t = cancel_token_new();
        for (int i = 0; i < CALLBACKS; i++)
            cancel_callback_add(&cbs[i], t, noop, NULL);
        int64_t t0 = bench_now_ns();
        cancel_token_cancel(t, 0);
        v[r] = (double)(bench_now_ns() - t0);
        cancel_token_unref(t);
    }
    return bench_median(v, ROUNDS);
}

static cancel_token_t **build_tree(cancel_token_t *root, int n)
{
    cancel_token_t **nodes = malloc((size_t)n * sizeof *nodes);
    nodes[0] = root;
    for (int i = 1; i < n; i++)
        nodes[i] = cancel_token_child(nodes[(i - 1) / 10]);
    return nodes;
}

static double bench_tree(void)
{
    double v[BENCH_REPS];
    for (int r = 0; r < BENCH_REPS; r++) {
        cancel_token_t **nodes = build_tree(cancel_token_new(), TREE);
        int64_t t0 = bench_now_ns();
        cancel_token_cancel(nodes[0], 0);
        v[r] = (double)(bench_now_ns() - t0) / 1000.0;
        for (int i = TREE - 1; i >= 0; i--)
            cancel_token_unref(nodes[i]);
        free(nodes);
    }
    return bench_median(v, BENCH_REPS);
}

/* A chain ten million deep: cancel, then free it by releasing the leaf. */
static void bench_chain(double *cancel_ms, double *free_ms)
{
    enum { DEPTH = 10000000 };
    cancel_token_t *root = cancel_token_new();
    cancel_token_t *t = cancel_token_ref(root);
    for (int i = 0; i < DEPTH; i++) {
        cancel_token_t *c = cancel_token_child(t);
        cancel_token_unref(t); /* the child's reference keeps it */
        t = c;
    }
    int64_t t0 = bench_now_ns();
    cancel_token_cancel(root, 0);
    int64_t t1 = bench_now_ns();
    cancel_token_unref(root);
    cancel_token_unref(t);
    int64_t t2 = bench_now_ns();
    *cancel_ms = (double)(t1 - t0) / 1e6;
    *free_ms = (double)(t2 - t1) / 1e6;
}


/*
 * Scale (SPEC "Scale: unrelated work never meets").  THREADS threads run
 * OPS operations each, started together; the figure is the wall time
 * divided by OPS, the cost each thread sees per operation (on its own
 * token or root: "own"), or divided by THREADS * OPS when they share one
 * ("shared").  bench/anchor_stop_token.cpp runs the same with
 * std::stop_token; bench/ratios.txt pairs them.
 */
enum { SCALE_OPS = 1000000 };

struct scale_arg {
    cancel_token_t *token;      /* the thread's own, or the shared one */
    bool child;                 /* create+release children, else add+remove callbacks */
    pthread_barrier_t *start;
};

static void *scale_worker(void *p)
{
    struct scale_arg *a = p;
    cancel_callback_t cb;
    pthread_barrier_wait(a->start);
    if (a->child) {
        for (long i = 0; i < SCALE_OPS; i++) {
            cancel_token_t *c = cancel_token_child(a->token);
            BENCH_KEEP(c);
            cancel_token_unref(c);
        }
    } else {
        for (long i = 0; i < SCALE_OPS; i++) {
            cancel_callback_add(&cb, a->token, noop, NULL);
            cancel_callback_remove(&cb);
        }
    }
    return NULL;
}

/* Per-operation ns: wall / OPS (own tokens) or wall / (THREADS * OPS) (shared). */
static double bench_scale(int threads, bool shared, bool child)
{
    double v[BENCH_REPS];
    enum { MAX_THREADS = 8 };
    cancel_token_t *tokens[MAX_THREADS];
    for (int i = 0; i < threads; i++)
        tokens[i] = shared && i > 0 ? cancel_token_ref(tokens[0]) : cancel_token_new();
    for (int r = 0; r < BENCH_REPS; r++) {
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
        pthread_t th[MAX_THREADS];
        struct scale_arg args[MAX_THREADS];
        for (int i = 0; i < threads; i++) {
            args[i] = (struct scale_arg){ tokens[i], child, &start };
            pthread_create(&th[i], NULL, scale_worker, &args[i]);
        }
        pthread_barrier_wait(&start);
        int64_t t0 = bench_now_ns();
        for (int i = 0; i < threads; i++)
            pthread_join(th[i], NULL);
        v[r] = per_op_ns(t0, bench_now_ns(), shared ? (long)threads * SCALE_OPS : SCALE_OPS);
        pthread_barrier_destroy(&start);
    }
    for (int i = 0; i < threads; i++)
        cancel_token_unref(tokens[i]);
    return bench_median(v, BENCH_REPS);
}

static void bench_scale_all(void)
{
    double cb1 = bench_scale(1, false, false), cb2 = bench_scale(2, false, false);
    bench_print("scale_callback_own_1_thread", cb1, "ns");
    bench_print("scale_callback_own_2_threads", cb2, "ns");
    bench_ratio("scale_callback_own_slowdown", cb2, cb1);
    double ch1 = bench_scale(1, false, true), ch2 = bench_scale(2, false, true);
    bench_print("scale_child_own_1_thread", ch1, "ns");
    bench_print("scale_child_own_2_threads", ch2, "ns");
    bench_ratio("scale_child_own_slowdown", ch2, ch1);
    bench_print("scale_child_shared_2_threads", bench_scale(2, true, true), "ns");
    bench_print("scale_callback_shared_2_threads", bench_scale(2, true, false), "ns");
    bench_print("scale_callback_shared_4_threads", bench_scale(4, true, false), "ns");
    bench_print("scale_callback_shared_8_threads", bench_scale(8, true, false), "ns");
}

int main(void)
{
    bench_print("token_is_cancelled", bench_is_cancelled(), "ns");
    bench_print("token_is_cancelled_call", bench_is_cancelled_call(), "ns");
    bench_print("token_child_create_release", bench_child(), "ns");
    bench_print("token_child_memory", bench_child_memory(), "bytes");
    bench_print("callback_add_remove", bench_callback(), "ns");
    bench_print("callback_add_remove_4_threads", bench_callback_contended(), "ns");
    bench_print("cancel_100_callbacks", bench_cancel_callbacks(), "ns");
    bench_print("cancel_tree_100k", bench_tree(), "us");
    double cancel_ms, free_ms;
    bench_chain(&cancel_ms, &free_ms);
    bench_print("chain_10M_cancel", cancel_ms, "ms");
    bench_print("chain_10M_free", free_ms, "ms");
    bench_scale_all();
    return 0;
}

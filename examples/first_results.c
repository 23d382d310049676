/*
 * first_results.c - take the first K of N results, in completion order,
 * and cancel the rest.
 *
 * What it shows:
 *
 *  - cancel_scope_next hands out finished tasks in the order they finished
 *    (Swift's TaskGroup.next, .NET's Task.WhenEach): the caller handles
 *    each result as soon as it exists, not in spawn order.
 *  - Once K results are in, cancel_scope_cancel tells the others to stop;
 *    each is blocked in cancel_sleep (standing for a query to a slow
 *    replica) and wakes at once with ECANCELED.  The join then costs the
 *    slowest cancelled task's wake-up, not its whole run.
 *  - Each handle that next gave out is released once read: the scope holds
 *    memory only for what is still running.
 *
 * Usage: first_results [N [K]]   (defaults: 8 3)
 * Worker i takes 100 ms * ((3 * i) % N + 1), so the finishing order is not
 * the spawn order.  Prints one line per result taken, then a summary.
 */
#include <cancel.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MAX_WORKERS = 64 };

struct query {
    int id;
    int64_t cost_ns;
    int value;          /* the answer, written before the task returns 0 */
};

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* A query to a replica that answers after COST_NS, unless cancelled. */
static int ask_replica(void *arg)
{
    struct query *q = arg;
    if (cancel_sleep(q->cost_ns) != 0)
        return errno; /* ECANCELED: the caller had enough answers */
    q->value = q->id * q->id;
    return 0;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 8;
    int k = argc > 2 ? atoi(argv[2]) : 3;
    if (n < 1 || n > MAX_WORKERS || k < 1 || k > n) {
        fprintf(stderr, "usage: %s [N [K]] with 1 <= K <= N <= %d\n", argv[0], MAX_WORKERS);
        return 2;
    }

    /* SUPERVISE: a replica that fails is skipped, not fatal. */
    cancel_scope_t *s = cancel_scope_open(CANCEL_SCOPE_SUPERVISE);
    if (!s) {
        perror("cancel_scope_open");
        return 1;
    }
    struct query q[MAX_WORKERS];
    cancel_task_t *task_of[MAX_WORKERS];
    int64_t t0 = now_ns();
    for (int i = 0; i < n; i++) {
        q[i] = (struct query){ .id = i, .cost_ns = 100000000LL * ((3 * i) % n + 1) };
        int rc = cancel_scope_spawn(s, ask_replica, &q[i], &task_of[i]);
        if (rc != 0) {
            fprintf(stderr, "spawn: %s\n", strerror(rc));
            return 1;
        }
    }

    /* The first K answers, in the order they arrive. */
    int taken = 0;
    while (taken < k) {
        cancel_task_t *t;
        int result;
        int rc = cancel_scope_next(s, NULL, &t, &result);
        if (rc == ECHILD)
            break; /* every task has been handed out */
        int i = 0;
        while (task_of[i] != t)
            i++;
        if (result == 0) {
            taken++;
            printf("result %d: replica %d answered %d after %lld ms\n", taken, i, q[i].value,
                   (long long)((now_ns() - t0) / 1000000));
        } else {
            printf("replica %d failed: %s\n", i, strerror(result));
        }
        cancel_task_release(t);
        task_of[i] = NULL;
    }

    /* Enough: the others stop now, and join waits only for their wake-up. */
    cancel_scope_cancel(s);
    int cancelled = 0, late = 0;
    for (;;) {
        cancel_task_t *t;
        int result;
        if (cancel_scope_next(s, NULL, &t, &result) != 0)
            break;
        cancelled += result == ECANCELED;
        late += result == 0; /* answered before the cancel reached it */
        cancel_task_release(t);
    }
    int rc = cancel_scope_join(s, NULL);
    printf("took %d of %d results, cancelled %d replicas (%d answered too late), "
           "done after %lld ms\n", taken, n, cancelled, late,
           (long long)((now_ns() - t0) / 1000000));
    return rc == 0 && taken == k ? 0 : 1;
}

/*
 * monitor.c - every task examines one integer; the first negative one
 * terminates the scope (as in the moro crate's "monitor" example).
 *
 * Tasks that are still working when the scope terminates see their token
 * cancelled and stop early.  The scope's join gives back the terminate
 * value: a pointer to the negative integer that stopped the monitor.
 *
 * Usage: monitor [int...]   (default: 3 1 4 1 -5 9 2 6)
 */
#include <cancel.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct item {
    cancel_scope_t *scope;
    int value;
};

static int examine(void *arg)
{
    struct item *it = arg;
    /* Pretend each value takes a while to examine (longer for larger
     * values).  The wait ends early when this task's current token is
     * cancelled: the task then stops with ECANCELED, which is not a
     * failure once the scope was cancelled. */
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    int64_t ns = (int64_t)abs(it->value) * 10 * 1000000LL;
    until.tv_sec += ns / 1000000000LL;
    until.tv_nsec += ns % 1000000000LL;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    cancel_token_wait(NULL, &until);
    if (cancel_check() != 0)
        return ECANCELED;
    if (it->value < 0) {
        /* Only the first terminate counts; later ones get EALREADY. */
        if (cancel_scope_terminate(it->scope, it) == 0)
            printf("task for %d: negative, terminating the scope\n", it->value);
        return 0;
    }
    printf("task for %d: fine\n", it->value);
    return 0;
}

int main(int argc, char **argv)
{
    static const int defaults[] = { 3, 1, 4, 1, -5, 9, 2, 6 };
    int n = argc > 1 ? argc - 1 : (int)(sizeof defaults / sizeof defaults[0]);
    struct item *items = calloc((size_t)n, sizeof *items);
    if (!items)
        return 1;

    cancel_scope_t *scope = cancel_scope_open(0);
    if (!scope) {
        perror("cancel_scope_open");
        return 1;
    }
    for (int i = 0; i < n; i++) {
        items[i].scope = scope;
        items[i].value = argc > 1 ? atoi(argv[i + 1]) : defaults[i];
        int rc = cancel_scope_spawn(scope, examine, &items[i], NULL);
        if (rc != 0) {
            /* ECANCELED: a negative value already terminated the scope. */
            if (rc != ECANCELED)
                fprintf(stderr, "spawn: %s\n", strerror(rc));
            break;
        }
    }
    void *value = NULL;
    int rc = cancel_scope_join(scope, &value);
    if (rc != 0)
        printf("monitor failed: %s\n", strerror(rc));
    else if (value)
        printf("monitor stopped by %d\n", ((struct item *)value)->value);
    else
        printf("monitor: every value is fine\n");
    free(items);
    return rc == 0 ? 0 : 1;
}

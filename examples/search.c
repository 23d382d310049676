/*
 * search.c - first-match parallel search with CANCEL_SCOPE_RACE.
 *
 * The haystack is split into slices, one task each.  The first task that
 * finds the needle returns 0: under CANCEL_SCOPE_RACE that terminates the
 * scope with the task's argument as the value, and every other task sees
 * its current token cancelled at its next cancel_check and gives up.  A
 * task that finds nothing returns ENOENT; join reports that only when no
 * task succeeded.
 *
 * Usage: search [needle [size]]   (default: 424242 in 0..9999999, shuffled)
 */
#include <cancel.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { SLICES = 8 };

struct slice {
    const unsigned *data;
    size_t begin, end;
    unsigned needle;
    size_t found;           /* index of the match, when this slice won */
};

static int scan(void *arg)
{
    struct slice *sl = arg;
    for (size_t i = sl->begin; i < sl->end; i++) {
        /* Check for cancellation every 64 Ki elements: cheap (one atomic
         * load) and prompt enough. */
        if ((i & 0xffff) == 0 && cancel_check() != 0)
            return ECANCELED;
        if (sl->data[i] == sl->needle) {
            sl->found = i;
            return 0;
        }
    }
    return ENOENT;
}

int main(int argc, char **argv)
{
    unsigned needle = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 424242u;
    size_t n = argc > 2 ? (size_t)strtoull(argv[2], NULL, 10) : 10000000u;
    unsigned *data = malloc(n * sizeof *data);
    if (!data)
        return 1;
    for (size_t i = 0; i < n; i++)
        data[i] = (unsigned)i;
    srand(1);
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)rand() % i;
        unsigned t = data[i - 1];
        data[i - 1] = data[j];
        data[j] = t;
    }

    struct slice slices[SLICES];
    cancel_scope_t *scope = cancel_scope_open(CANCEL_SCOPE_RACE);
    if (!scope) {
        perror("cancel_scope_open");
        return 1;
    }
    for (int i = 0; i < SLICES; i++) {
        slices[i] = (struct slice){ data, n * (size_t)i / SLICES,
                                    n * (size_t)(i + 1) / SLICES, needle, 0 };
        char name[24];
        snprintf(name, sizeof name, "slice-%d", i);
        if (cancel_scope_spawn_named(scope, name, scan, &slices[i], NULL) != 0)
            break; /* ECANCELED: some slice already found it */
    }
    void *winner = NULL;
    int rc = cancel_scope_join(scope, &winner);
    if (rc == 0 && winner) {
        struct slice *sl = winner;
        printf("found %u at index %zu (slice %d)\n", needle, sl->found,
               (int)(sl - slices));
    } else {
        printf("%u not found: %s\n", needle, strerror(rc ? rc : ENOENT));
    }
    free(data);
    return rc == 0 ? 0 : 1;
}

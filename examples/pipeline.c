/*
 * pipeline.c - a bounded-concurrency pipeline with a deadline on the run.
 *
 * Stage 1 reads job lines from standard input (a pipe, say); stage 2 runs
 * each job as a task of one scope, at most --limit at once; stage 3
 * prints the results in input order.
 *
 * What it shows:
 *
 *  - cancel_scope_set_limit: once LIMIT tasks run, cancel_scope_spawn
 *    waits for a free slot.  The reader stops reading while it waits, the
 *    pipe fills up and the producer blocks: back-pressure for free.
 *  - A deadline on the whole run: main enters a token from
 *    cancel_token_with_timeout as its current token, and
 *    cancel_scope_open(0) opens the scope under the current token.  When
 *    the deadline fires every job is cancelled with ETIMEDOUT, wherever it
 *    is (here in cancel_sleep, standing for real work).
 *  - The reader runs under the scope's token, so whatever stops the
 *    scope (the deadline, or a job failing: fail-fast) also wakes the
 *    reader, even blocked in cancel_read on a pipe that stays silent, and
 *    a spawn waiting for a slot gives up.
 *
 * Input: one job a line, "NAME MS" (work MS milliseconds) or "NAME fail"
 * (fail with EIO, which cancels the other jobs).
 *
 * Usage: pipeline [--limit N] [--deadline-ms MS] < jobs
 * Default: --limit 2, no deadline.  Exit status 0 when every job was done,
 * else 1.  Try:  printf 'a 100\nb 300\nc 100\n' | pipeline --deadline-ms 250
 */
#include <cancel.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MS 1000000LL

enum state { NOT_STARTED, DONE, FAILED, CANCELLED };

struct job {
    int line;
    char name[32];
    long ms;                /* work to do, or -1: fail */
    /* Written by the job's task, read by main after join. */
    enum state state;
    int err;
};

static atomic_int running;  /* jobs running now */
static atomic_int peak;     /* the most that ever ran at once */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Stage 2: one job. */
static int work(void *arg)
{
    struct job *j = arg;
    int now = atomic_fetch_add(&running, 1) + 1;
    int seen = atomic_load(&peak);
    while (now > seen && !atomic_compare_exchange_weak(&peak, &seen, now))
        ;
    if (j->ms < 0) {
        j->state = FAILED;
        j->err = EIO;
    } else if (cancel_sleep(j->ms * MS) < 0) {
        /* The "work" was cut short: ECANCELED when a sibling failed,
         * ETIMEDOUT when the deadline fired.  Returning that error after
         * the cancellation is not a failure of this job. */
        j->state = CANCELLED;
        j->err = errno;
    } else {
        j->state = DONE;
    }
    atomic_fetch_sub(&running, 1);
    return j->err;
}

/* Parses "NAME MS" or "NAME fail" into J; false when the line is neither. */
static bool parse(char *text, struct job *j)
{
    char what[32];
    if (sscanf(text, "%31s %31s", j->name, what) != 2)
        return false;
    if (strcmp(what, "fail") == 0) {
        j->ms = -1;
        return true;
    }
    char *end;
    j->ms = strtol(what, &end, 10);
    return *end == '\0' && j->ms >= 0;
}

struct jobs {
    struct job **v;
    size_t n, cap;
};

/* Hands one line to the scope; false when the pipeline is stopping. */
static bool submit(cancel_scope_t *s, struct jobs *jobs, char *text, int line)
{
    struct job *j = calloc(1, sizeof *j);
    if (!j)
        return false;
    j->line = line;
    if (!parse(text, j)) {
        fprintf(stderr, "line %d: expected \"NAME MS\" or \"NAME fail\"\n", line);
        free(j);
        return true;
    }
    if (jobs->n == jobs->cap) {
        size_t cap = jobs->cap ? 2 * jobs->cap : 16;
        struct job **v = realloc(jobs->v, cap * sizeof *v);
        if (!v) {
            free(j);
            return false;
        }
        jobs->v = v;
        jobs->cap = cap;
    }
    jobs->v[jobs->n++] = j;
    /* With LIMIT jobs running this waits for one to finish.  The wait is
     * cancel-aware: ECANCELED once the scope is cancelled (nothing starts,
     * the job stays NOT_STARTED). */
    return cancel_scope_spawn(s, work, j, NULL) == 0;
}

/* Stage 1: reads lines from FD and submits them; returns the read error
 * that stopped it (0 at end of input). */
static int read_jobs(int fd, cancel_scope_t *s, struct jobs *jobs)
{
    char buf[4096];
    size_t len = 0;
    int line = 0;
    for (;;) {
        ssize_t n = cancel_read(fd, buf + len, sizeof buf - 1 - len);
        if (n < 0)
            return errno;
        if (n == 0) {
            if (len > 0) {          /* a last line without a newline */
                buf[len] = '\0';
                submit(s, jobs, buf, ++line);
            }
            return 0;
        }
        len += (size_t)n;
        char *start = buf, *nl;
        while ((nl = memchr(start, '\n', len - (size_t)(start - buf)))) {
            *nl = '\0';
            if (!submit(s, jobs, start, ++line))
                return ECANCELED;
            start = nl + 1;
        }
        len -= (size_t)(start - buf);
        memmove(buf, start, len);
        if (len == sizeof buf - 1)
            len = 0;                /* an absurdly long line: drop it */
    }
}

int main(int argc, char **argv)
{
    unsigned limit = 2;
    long deadline_ms = -1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc) {
            limit = (unsigned)atoi(argv[++i]);
        } else if (strcmp(argv[i], "--deadline-ms") == 0 && i + 1 < argc) {
            deadline_ms = atol(argv[++i]);
        } else {
            fprintf(stderr, "usage: %s [--limit N] [--deadline-ms MS] < jobs\n", argv[0]);
            return 2;
        }
    }

    int64_t t0 = now_ns();
    /* The run's token: a deadline, or a plain root when there is none. */
    cancel_token_t *run = deadline_ms >= 0 ? cancel_token_with_timeout(NULL, deadline_ms * MS)
                                           : cancel_token_new();
    if (!run) {
        perror("cancel_token_with_timeout");
        return 1;
    }
    cancel_token_t *prev = cancel_enter(run);

    /* Opened under the current token: the deadline cancels the scope. */
    cancel_scope_t *s = cancel_scope_open(0);
    if (!s || cancel_scope_set_limit(s, limit) != 0) {
        perror("cancel_scope_open");
        return 1;
    }

    /* Read under the scope's token: a failing job stops the reading too. */
    struct jobs jobs = { 0 };
    cancel_token_t *outer = cancel_enter(cancel_scope_token(s));
    int read_err = read_jobs(STDIN_FILENO, s, &jobs);
    cancel_leave(outer);

    int rc = cancel_scope_join(s, NULL);
    cancel_leave(prev);
    int64_t elapsed_ms = (now_ns() - t0) / MS;

    /* Stage 3: the results, in input order. */
    int count[4] = { 0 };
    const char *first_failed = NULL;
    for (size_t i = 0; i < jobs.n; i++) {
        struct job *j = jobs.v[i];
        count[j->state]++;
        printf("job %d %s: ", j->line, j->name);
        switch (j->state) {
        case NOT_STARTED:
            printf("never started (the pipeline stopped first)\n");
            break;
        case DONE:
            printf("done (%ld ms of work)\n", j->ms);
            break;
        case FAILED:
            printf("failed: %s\n", strerror(j->err));
            if (!first_failed)
                first_failed = j->name;
            break;
        case CANCELLED:
            printf("cancelled (%s)\n", j->err == ETIMEDOUT ? "ETIMEDOUT" : "ECANCELED");
            break;
        }
    }
    if (read_err == ETIMEDOUT || read_err == ECANCELED)
        printf("input: reading stopped (%s)\n", read_err == ETIMEDOUT ? "ETIMEDOUT" : "ECANCELED");
    printf("%zu job%s: %d done, %d failed, %d cancelled, %d never started; "
           "at most %d at once (limit %u); %lld ms\n",
           jobs.n, jobs.n == 1 ? "" : "s", count[DONE], count[FAILED], count[CANCELLED], count[NOT_STARTED],
           atomic_load(&peak), limit, (long long)elapsed_ms);
    if (rc == 0)
        printf("pipeline: complete\n");
    else if (rc == ETIMEDOUT)
        printf("pipeline: deadline of %ld ms exceeded (ETIMEDOUT)\n", deadline_ms);
    else
        printf("pipeline: failed: job %s: %s\n", first_failed ? first_failed : "?",
               strerror(rc));

    for (size_t i = 0; i < jobs.n; i++)
        free(jobs.v[i]);
    free(jobs.v);
    cancel_token_unref(run);
    return rc == 0 ? 0 : 1;
}

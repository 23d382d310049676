/*
 * demo.c - libcancel in a few seconds.
 *
 * Four scenes, each with what it costs:
 *   1. tasks blocked in cancel_read on idle sockets, woken by one cancel;
 *   2. a deadline firing under a task blocked in a read;
 *   3. a failing task cancelling its siblings (fail-fast);
 *   4. cancel_scope_terminate ending a parallel search early.
 * Every scope is joined: the demo ends by checking that every task ran to
 * completion and that no descriptor leaked.
 */
#define _GNU_SOURCE 1 /* dirfd, readlink */
#include <cancel.h>

#include <dirent.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { READERS = 4, SEARCHERS = 4, HAYSTACK = 40000000 };

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t t0;
static atomic_int tasks_run;

static void say(const char *fmt, const char *what)
{
    printf("[%8.3f ms] ", (double)(now_ns() - t0) / 1e6);
    printf(fmt, what);
    putchar('\n');
}

/* ---------------------------------------------------------------- reader */

struct reader {
    int fd;
    int result;           /* errno of the read, or 0 */
    int64_t returned_ns;  /* when cancel_read came back */
};

static int read_task(void *arg)
{
    struct reader *r = arg;
    char buf[64];
    atomic_fetch_add(&tasks_run, 1);
    ssize_t n = cancel_read(r->fd, buf, sizeof buf); /* nobody ever writes */
    r->returned_ns = now_ns();
    r->result = n < 0 ? errno : 0;
    return r->result;
}

static int fail_task(void *arg)
{
    atomic_fetch_add(&tasks_run, 1);
    cancel_sleep(*(int64_t *)arg);
    return EPROTO; /* a real failure: the siblings are cancelled */
}

static void open_socketpairs(int (*pairs)[2], int n)
{
    for (int i = 0; i < n; i++)
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pairs[i]) != 0) {
            perror("socketpair");
            exit(1);
        }
}

static void close_socketpairs(int (*pairs)[2], int n)
{
    for (int i = 0; i < n; i++) {
        close(pairs[i][0]);
        close(pairs[i][1]);
    }
}

static double worst_wake_us(struct reader *r, int n, int64_t cancelled_ns)
{
    int64_t worst = 0;
    for (int i = 0; i < n; i++)
        if (r[i].returned_ns - cancelled_ns > worst)
            worst = r[i].returned_ns - cancelled_ns;
    return (double)worst / 1e3;
}

/* Waits until every reader's thread is inside a wrapped call. */
static void wait_until_blocked(cancel_scope_t *s)
{
    (void)s;
    /* A short grace period is enough for a demo (a task that has not yet
     * blocked returns at once anyway); the tests use handshakes. */
    cancel_sleep(20 * 1000000LL);
}

static void scene_blocked_readers(void)
{
    int pairs[READERS][2];
    struct reader r[READERS];
    open_socketpairs(pairs, READERS);
    cancel_scope_t *s = cancel_scope_open(0);
    for (int i = 0; i < READERS; i++) {
        r[i] = (struct reader){pairs[i][0], 0, 0};
        cancel_scope_spawn(s, read_task, &r[i], NULL);
    }
    say("1. %s", "four tasks block in cancel_read on idle sockets");
    wait_until_blocked(s);
    int64_t cancelled = now_ns();
    cancel_scope_cancel(s);
    int rc = cancel_scope_join(s, NULL);
    char line[512];
    snprintf(line, sizeof line,
             "   cancel_scope_cancel: all %d returned %s, slowest wake %.1f us; join -> %d",
             READERS, r[0].result == ECANCELED ? "ECANCELED" : strerror(r[0].result),
             worst_wake_us(r, READERS, cancelled), rc);
    say("%s", line);
    close_socketpairs(pairs, READERS);
}

static void scene_deadline(void)
{
    int pair[2][2];
    open_socketpairs(pair, 1);
    const int64_t timeout = 150 * 1000000LL;
    cancel_token_t *deadline = cancel_token_with_timeout(NULL, timeout);
    struct reader r = {pair[0][0], 0, 0};
    say("2. %s", "a task reads under a 150 ms deadline");
    int64_t start = now_ns();
    cancel_scope_t *s = cancel_scope_open_in(deadline, 0);
    cancel_scope_spawn(s, read_task, &r, NULL);
    int rc = cancel_scope_join(s, NULL);
    char line[512];
    snprintf(line, sizeof line,
             "   the read returned %s after %.3f ms (%.1f us after the deadline); join -> %s",
             strerror(r.result), (double)(r.returned_ns - start) / 1e6,
             (double)(r.returned_ns - start - timeout) / 1e3, strerror(rc));
    say("%s", line);
    cancel_token_unref(deadline);
    close_socketpairs(pair, 1);
}

static void scene_fail_fast(void)
{
    int pairs[2][2];
    struct reader r[2];
    open_socketpairs(pairs, 2);
    int64_t fail_after = 50 * 1000000LL;
    cancel_scope_t *s = cancel_scope_open(0);
    for (int i = 0; i < 2; i++) {
        r[i] = (struct reader){pairs[i][0], 0, 0};
        cancel_scope_spawn(s, read_task, &r[i], NULL);
    }
    say("3. %s", "two readers block; a third task fails with EPROTO after 50 ms");
    int64_t start = now_ns();
    cancel_scope_spawn(s, fail_task, &fail_after, NULL);
    int rc = cancel_scope_join(s, NULL);
    char line[512];
    snprintf(line, sizeof line,
             "   the failure cancelled both readers (%s) %.3f ms in; join -> %s (the real error)",
             strerror(r[0].result), (double)(r[0].returned_ns - start) / 1e6, strerror(rc));
    say("%s", line);
    close_socketpairs(pairs, 2);
}

/* ---------------------------------------------------------------- search */

struct slice {
    const unsigned *hay;
    size_t begin, end;
    unsigned needle;
    cancel_scope_t *scope;
    size_t found_at;
    size_t examined;
};

static int search_task(void *arg)
{
    struct slice *sl = arg;
    atomic_fetch_add(&tasks_run, 1);
    for (size_t i = sl->begin; i < sl->end; i++) {
        /* Check every 4096 items: one atomic load, no syscall. */
        if ((i & 4095) == 0 && cancel_check() != 0)
            return ECANCELED;
        sl->examined++;
        if (sl->hay[i] == sl->needle) {
            sl->found_at = i;
            cancel_scope_terminate(sl->scope, sl);
            return 0;
        }
    }
    return 0;
}

static void scene_terminate(void)
{
    say("4. %s", "four tasks search 40 million numbers for 42");
    unsigned *hay = malloc(HAYSTACK * sizeof *hay);
    if (!hay) {
        perror("malloc");
        exit(1);
    }
    for (size_t i = 0; i < HAYSTACK; i++)
        hay[i] = (unsigned)(i * 2654435761u) | 1u;
    size_t where = HAYSTACK / SEARCHERS + HAYSTACK / (SEARCHERS * 10);
    hay[where] = 42;
    struct slice sl[SEARCHERS];
    cancel_scope_t *s = cancel_scope_open(0);
    for (int i = 0; i < SEARCHERS; i++) {
        sl[i] = (struct slice){hay, (size_t)i * (HAYSTACK / SEARCHERS),
                               (size_t)(i + 1) * (HAYSTACK / SEARCHERS), 42, s, 0, 0};
        cancel_scope_spawn(s, search_task, &sl[i], NULL);
    }
    void *value = NULL;
    int rc = cancel_scope_join(s, &value);
    size_t examined = 0;
    for (int i = 0; i < SEARCHERS; i++)
        examined += sl[i].examined;
    struct slice *winner = value;
    char line[512];
    snprintf(line, sizeof line,
             "   found at %zu; cancel_scope_terminate stopped the others: %.1f%% of the numbers examined; join -> %d",
             winner ? winner->found_at : (size_t)0, 100.0 * (double)examined / HAYSTACK, rc);
    say("%s", line);
    free(hay);
}

/* Descriptors the program owns: sockets, pipes, files.  Idle worker
 * threads keep their wake eventfds for the next task (they go when the
 * threads exit), so those are not counted. */
static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (!d)
        return -1;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        char path[300], target[64];
        if (e->d_name[0] == '.' || atoi(e->d_name) == dirfd(d))
            continue;
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t len = readlink(path, target, sizeof target - 1);
        target[len > 0 ? len : 0] = '\0';
        n += strstr(target, "eventfd") == NULL;
    }
    closedir(d);
    return n;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    int fds_before = count_fds();
    t0 = now_ns();
    printf("libcancel demo: cooperative cancellation for threads\n\n");
    scene_blocked_readers();
    scene_deadline();
    scene_fail_fast();
    scene_terminate();
    int fds_after = count_fds();
    printf("\nEvery scope joined all its tasks (%d tasks ran); descriptors before %d, after %d: %s.\n",
           atomic_load(&tasks_run), fds_before, fds_after,
           fds_after == fds_before ? "nothing leaked" : "LEAK");
    return fds_after == fds_before ? 0 : 1;
}

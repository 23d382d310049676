/*
 * race_connect.c - Happy Eyeballs (RFC 8305) with a CANCEL_SCOPE_RACE scope.
 *
 * A client that knows several addresses for one service should not try
 * them one after the other (a dead address costs a whole TCP timeout), nor
 * all at once (a burst of connections for one).  RFC 8305 staggers them:
 * attempt i+1 starts 250 ms after attempt i started, or as soon as attempt
 * i failed, and the first connection that works cancels all the others.
 *
 * What it shows:
 *
 *  - One task per attempt in a CANCEL_SCOPE_RACE scope: the first task
 *    that returns 0 terminates the scope with its argument as the value;
 *    failures (a refused connection) do not stop the race.
 *  - The losers are cancelled wherever they are: blocked in cancel_connect
 *    (an address that never answers), blocked in cancel_read (a server
 *    that is slow to greet), or still waiting for their turn in
 *    cancel_token_wait.  Each one closes its own socket; join returns when
 *    all of them have.
 *  - Plain tokens as one-shot events between tasks (attempt i "started",
 *    attempt i "failed"), waited for with a deadline (the 250 ms stagger).
 *  - A deadline on the whole race: the scope is opened under a token from
 *    cancel_token_with_timeout, so no address list can make it hang.
 *
 * The addresses are local listeners the program makes itself on
 * 127.0.0.1 (port 0), one of four kinds:
 *   refused    a bound socket that does not listen: connect fails at once
 *   blackhole  a listener whose accept queue is full: the SYN is dropped
 *              and connect hangs (as for an address that is down)
 *   slow       a listener that greets each client after 2 s
 *   fast       a listener that greets at once
 * An attempt succeeds when it is connected and has read the greeting (as
 * a TLS client would have to before it can use the connection).
 *
 * Usage: race_connect [--deadline-ms MS] [KIND...]
 * Default: --deadline-ms 5000 refused blackhole slow fast fast
 * Exit status: 0 when an attempt won, 1 when none did.
 */
#include <cancel.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MS 1000000LL                    /* nanoseconds in a millisecond */
#define ATTEMPT_DELAY (250 * MS)        /* RFC 8305 "Connection Attempt Delay" */
#define SLOW_GREETING (2000 * MS)

enum kind { REFUSED, BLACKHOLE, SLOW, FAST };
static const char *const kind_names[] = { "refused", "blackhole", "slow", "fast" };

struct target {
    enum kind kind;
    int index;
    int fd;                 /* the bound or listening socket */
    int filler;             /* BLACKHOLE: the connection that fills the queue */
    unsigned short port;
};

enum outcome { WAITING, FAILED, CANCELLED, CONNECTED };

struct attempt {
    int index;
    struct target *target;
    struct attempt *prev;       /* NULL for the first attempt */
    cancel_token_t *started;    /* cancelled (used as an event) once started */
    cancel_token_t *failed;     /* cancelled once this attempt has failed */
    int64_t t0;                 /* when the race began */
    /* Written by the attempt's task, read by main after join. */
    int64_t start_ns, end_ns;   /* relative to t0; start_ns -1: never started */
    enum outcome outcome;
    const char *where;          /* where a cancellation caught it */
    int err;
    int fd;                     /* the connection, when CONNECTED */
    char greeting[64];
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static struct timespec to_timespec(int64_t ns)
{
    struct timespec ts = { .tv_sec = ns / 1000000000LL, .tv_nsec = ns % 1000000000LL };
    return ts;
}

static struct sockaddr_in loopback(unsigned short port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

/* Records how the attempt ended and returns the task's result. */
static int finish(struct attempt *a, enum outcome outcome, int err, const char *where)
{
    a->end_ns = now_ns() - a->t0;
    a->outcome = outcome;
    a->err = err;
    a->where = where;
    if (outcome == FAILED)
        cancel_token_cancel(a->failed, 0);  /* the next attempt may go now */
    return err;
}

/* Waits for this attempt's turn: 0, or the cancellation error. */
static int wait_turn(struct attempt *a)
{
    struct attempt *prev = a->prev;
    if (!prev)
        return 0;
    /* cancel_token_wait returns 0 when the token it waits for is
     * cancelled, and fails when the calling thread's current token (this
     * task's) is cancelled first: that is the race being over. */
    int rc = cancel_token_wait(prev->started, NULL);
    if (rc != 0)
        return rc;
    /* PREV->start_ns was written before PREV->started was cancelled, and
     * the wait returning 0 saw that cancel: the value is visible. */
    struct timespec turn = to_timespec(a->t0 + prev->start_ns + ATTEMPT_DELAY);
    rc = cancel_token_wait(prev->failed, &turn);
    if (rc == ETIMEDOUT && cancel_check() == 0)
        rc = 0;     /* our DEADLINE passed, not the race's: our turn */
    return rc;
}

/* One attempt: wait for its turn, connect, read the greeting. */
static int attempt(void *arg)
{
    struct attempt *a = arg;
    int rc = wait_turn(a);
    if (rc != 0)
        return finish(a, CANCELLED, rc, "before it started");
    a->start_ns = now_ns() - a->t0;
    cancel_token_cancel(a->started, 0);

    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return finish(a, FAILED, errno, "socket");
    struct sockaddr_in addr = loopback(a->target->port);
    if (cancel_connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        int err = errno;
        close(fd);
        if (err == ECANCELED || err == ETIMEDOUT)
            return finish(a, CANCELLED, err, "while connecting");
        return finish(a, FAILED, err, "connect");
    }
    ssize_t n = cancel_read(fd, a->greeting, sizeof a->greeting - 1);
    if (n <= 0) {
        int err = n == 0 ? ECONNRESET : errno;
        close(fd);
        if (err == ECANCELED || err == ETIMEDOUT)
            return finish(a, CANCELLED, err, "while waiting for the greeting");
        return finish(a, FAILED, err, "greeting");
    }
    a->greeting[n] = '\0';
    a->greeting[strcspn(a->greeting, "\r\n")] = '\0';
    a->fd = fd;
    /* Returning 0 under CANCEL_SCOPE_RACE: if we are first, the scope is
     * terminated with A as its value and every other attempt is cancelled. */
    return finish(a, CONNECTED, 0, NULL);
}

/* A slow or fast server: greet every client (slow: after 2 s), close. */
static int server(void *arg)
{
    struct target *t = arg;
    char hello[64];
    int len = snprintf(hello, sizeof hello, "hello from target %d (%s)\n", t->index,
                       kind_names[t->kind]);
    for (;;) {
        int c = cancel_accept(t->fd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == ECANCELED)
                return 0;
            continue;
        }
        if (t->kind == SLOW && cancel_sleep(SLOW_GREETING) < 0) {
            close(c);
            return 0;       /* cancelled while taking its time */
        }
        cancel_write_all(c, hello, (size_t)len, NULL);
        close(c);
    }
}

static int make_target(struct target *t, enum kind kind, int index)
{
    t->kind = kind;
    t->index = index;
    t->filler = -1;
    t->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = loopback(0);
    socklen_t len = sizeof a;
    if (t->fd < 0 || bind(t->fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(t->fd, (struct sockaddr *)&a, &len) < 0)
        return -1;
    t->port = ntohs(a.sin_port);
    if (kind == REFUSED)
        return 0;   /* bound (so no one else takes the port), not listening */
    /* Backlog 0: the accept queue holds one connection.  For a blackhole,
     * fill it and never accept: the kernel then drops new SYNs. */
    if (listen(t->fd, kind == BLACKHOLE ? 0 : 16) < 0)
        return -1;
    if (kind == BLACKHOLE) {
        t->filler = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (t->filler < 0 || connect(t->filler, (struct sockaddr *)&a, sizeof a) < 0)
            return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    int64_t deadline_ns = 5000 * MS;
    enum kind kinds[16];
    int n = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--deadline-ms") == 0 && i + 1 < argc) {
            deadline_ns = atoll(argv[++i]) * MS;
            continue;
        }
        int k = 0;
        while (k < 4 && strcmp(argv[i], kind_names[k]) != 0)
            k++;
        if (k == 4 || n == 16) {
            fprintf(stderr, "usage: %s [--deadline-ms MS] [refused|blackhole|slow|fast]...\n",
                    argv[0]);
            return 2;
        }
        kinds[n++] = (enum kind)k;
    }
    if (n == 0) {
        static const enum kind defaults[] = { REFUSED, BLACKHOLE, SLOW, FAST, FAST };
        n = 5;
        memcpy(kinds, defaults, sizeof defaults);
    }

    struct target targets[16];
    struct attempt attempts[16];
    memset(attempts, 0, sizeof attempts);

    /* The servers run in a scope of their own, torn down after the race. */
    cancel_scope_t *servers = cancel_scope_open_in(NULL, CANCEL_SCOPE_SUPERVISE);
    if (!servers)
        return 1;
    printf("race_connect: %d addresses; attempt i+1 starts %lld ms after attempt i, "
           "or as soon as it fails\n", n, (long long)(ATTEMPT_DELAY / MS));
    for (int i = 0; i < n; i++) {
        if (make_target(&targets[i], kinds[i], i) < 0) {
            perror("listener");
            return 1;
        }
        printf("  target %d: 127.0.0.1:%u %s\n", i, (unsigned)targets[i].port,
               kind_names[kinds[i]]);
        if ((kinds[i] == SLOW || kinds[i] == FAST) &&
            cancel_scope_spawn(servers, server, &targets[i], NULL) != 0)
            return 1;
    }
    fflush(stdout);

    /* The race: one task per attempt, under a deadline for the whole. */
    int64_t t0 = now_ns();     /* before the deadline starts counting */
    cancel_token_t *deadline = cancel_token_with_timeout(NULL, deadline_ns);
    cancel_scope_t *race = deadline ? cancel_scope_open_in(deadline, CANCEL_SCOPE_RACE) : NULL;
    if (!race)
        return 1;
    for (int i = 0; i < n; i++) {
        struct attempt *a = &attempts[i];
        a->index = i;
        a->target = &targets[i];
        a->prev = i > 0 ? &attempts[i - 1] : NULL;
        a->started = cancel_token_new();
        a->failed = cancel_token_new();
        a->t0 = t0;
        a->start_ns = -1;
        a->fd = -1;
        if (!a->started || !a->failed || cancel_scope_spawn(race, attempt, a, NULL) != 0) {
            /* Cannot happen this early (nothing has won yet); if it did,
             * the attempts already spawned are still joined below. */
            a->outcome = FAILED;
            a->err = ENOMEM;
            cancel_scope_cancel(race);
            break;
        }
    }
    void *value = NULL;
    int rc = cancel_scope_join(race, &value);
    struct attempt *winner = value;
    int64_t elapsed = now_ns() - t0;

    for (int i = 0; i < n; i++) {
        struct attempt *a = &attempts[i];
        printf("attempt %d -> target %d (%s): ", i, i, kind_names[a->target->kind]);
        if (a->start_ns >= 0)
            printf("started at %lld ms, ", (long long)(a->start_ns / MS));
        long long end = (long long)(a->end_ns / MS);
        switch (a->outcome) {
        case WAITING:
            printf("never spawned\n");
            break;
        case FAILED:
            printf("failed at %lld ms: %s: %s\n", end, a->where, strerror(a->err));
            break;
        case CANCELLED:
            printf("cancelled at %lld ms %s (%s)\n", end, a->where,
                   a->err == ETIMEDOUT ? "ETIMEDOUT" : "ECANCELED");
            break;
        case CONNECTED:
            printf("%s at %lld ms: \"%s\"\n", a == winner ? "WON" : "connected too, lost",
                   end, a->greeting);
            break;
        }
        if (a->fd >= 0)
            close(a->fd);       /* a real client would use the winner's */
        cancel_token_unref(a->started);
        cancel_token_unref(a->failed);
    }
    if (winner) {
        int cancelled = 0;
        for (int i = 0; i < n; i++)
            cancelled += attempts[i].outcome == CANCELLED;
        printf("winner: attempt %d (%s) after %lld ms; %d other attempt%s cancelled\n",
               winner->index, kind_names[winner->target->kind],
               (long long)(winner->end_ns / MS), cancelled, cancelled == 1 ? "" : "s");
    } else {
        printf("no winner after %lld ms: %s\n", (long long)(elapsed / MS),
               rc == ETIMEDOUT ? "the deadline fired (ETIMEDOUT)" : strerror(rc));
    }

    /* Tear down the servers: the slow one may still be taking its time. */
    cancel_scope_cancel(servers);
    cancel_scope_join(servers, NULL);
    for (int i = 0; i < n; i++) {
        close(targets[i].fd);
        if (targets[i].filler >= 0)
            close(targets[i].filler);
    }
    cancel_token_unref(deadline);
    return winner ? 0 : 1;
}

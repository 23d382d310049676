/*
 * unmodified.c - code that knows nothing of libcancel, stopped by one
 * cancel (run with libcancel-interpose.so; see cancel_interpose(7)).
 *
 * What it shows:
 *
 *  - client() below is an ordinary blocking client loop: connect, send a
 *    line, recv the answer, usleep, again; plain libc calls only, as a
 *    database or HTTP client library would make them.  It stands for code
 *    you cannot change.
 *  - A pool of such clients runs as tasks of one scope.  Half of them talk
 *    to an echo server, half to a "black hole" that accepts connections
 *    and never answers (their recv would block for ever).
 *  - One cancel_scope_cancel stops them all: under the interposer every
 *    plain blocking call of a task fails with ECANCELED once the task's
 *    token is cancelled, the loop's own error path returns, and the scope
 *    joins every task.  The program prints how long that took.
 *
 * Usage: unmodified [--clients N] [--run-ms MS]
 * Prints one line per client ("client K: stopped after R round trips:
 * Operation canceled") and a summary; exit status 0 when every client
 * was stopped by the cancel.
 */
#define _GNU_SOURCE
#include <cancel.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

/* ----------------------------------------- the code you cannot change */

struct client {
    int id;
    int port;
    long trips;      /* round trips completed */
    int err;         /* errno that ended the loop */
};

/* A plain blocking client: no libcancel call anywhere in it. */
static int client(void *arg)
{
    struct client *c = arg;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)c->port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        c->err = errno;
        goto out;
    }
    for (;;) {
        char line[64], reply[64];
        int n = snprintf(line, sizeof line, "ping %d %ld\n", c->id, c->trips);
        if (send(fd, line, (size_t)n, MSG_NOSIGNAL) != n) {
            c->err = errno;
            break;
        }
        ssize_t got = recv(fd, reply, sizeof reply, 0);
        if (got <= 0) {
            c->err = got == 0 ? EPIPE : errno;
            break;
        }
        c->trips++;
        if (usleep(10 * 1000) != 0) {
            c->err = errno;
            break;
        }
    }
out:
    if (fd >= 0)
        close(fd);
    return 0;
}

/* ------------------------------------------------------- the servers */

static int listener(int *port)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 64) != 0 ||
        getsockname(l, (struct sockaddr *)&a, &len) != 0) {
        perror("listener");
        exit(2);
    }
    *port = ntohs(a.sin_port);
    return l;
}

/* An echo server in one task, a plain poll loop, also stopped by a cancel. */
static int echo_server(void *arg)
{
    int l = *(int *)arg;
    struct pollfd p[128] = { { .fd = l, .events = POLLIN } };
    nfds_t n = 1;
    while (poll(p, n, -1) > 0) {
        for (nfds_t i = n; i-- > 1;) {
            if (!p[i].revents)
                continue;
            char buf[256];
            ssize_t r = recv(p[i].fd, buf, sizeof buf, 0);
            if (r <= 0 || send(p[i].fd, buf, (size_t)r, MSG_NOSIGNAL) != r) {
                close(p[i].fd);
                p[i] = p[--n];
            }
        }
        if ((p[0].revents & POLLIN) && n < 128) {
            int c = accept(l, NULL, NULL);
            if (c >= 0)
                p[n++] = (struct pollfd){ .fd = c, .events = POLLIN };
        }
    }
    for (nfds_t i = 1; i < n; i++)
        close(p[i].fd);
    return 0;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    int nclients = 8, run_ms = 300;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--clients") == 0)
            nclients = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--run-ms") == 0)
            run_ms = atoi(argv[i + 1]);
    }
    if (nclients < 1 || nclients > 100) {
        fprintf(stderr, "usage: unmodified [--clients 1..100] [--run-ms MS]\n");
        return 2;
    }
    int echo_port, hole_port;
    int echo_l = listener(&echo_port);
    int hole_l = listener(&hole_port); /* accepts (the kernel's backlog), never answers */

    cancel_scope_t *servers = cancel_scope_open(0);
    cancel_scope_spawn(servers, echo_server, &echo_l, NULL);

    struct client *cs = calloc((size_t)nclients, sizeof *cs);
    cancel_scope_t *pool = cancel_scope_open(0);
    for (int i = 0; i < nclients; i++) {
        cs[i] = (struct client){ .id = i, .port = i % 2 ? hole_port : echo_port };
        cancel_scope_spawn(pool, client, &cs[i], NULL);
    }
    usleep((useconds_t)run_ms * 1000); /* no current token here: the plain sleep */

    double t0 = now_ms();
    cancel_scope_cancel(pool);           /* the one cancel */
    cancel_scope_join(pool, NULL);
    double dt = now_ms() - t0;

    int stopped = 0;
    for (int i = 0; i < nclients; i++) {
        printf("client %d (%s): stopped after %ld round trips: %s\n", i,
               i % 2 ? "black hole" : "echo", cs[i].trips, strerror(cs[i].err));
        stopped += cs[i].err == ECANCELED;
    }
    printf("%d of %d plain blocking clients stopped by one cancel_scope_cancel in %.1f ms\n",
           stopped, nclients, dt);
    cancel_scope_cancel(servers);
    cancel_scope_join(servers, NULL);
    close(echo_l);
    close(hole_l);
    free(cs);
    return stopped == nclients ? 0 : 1;
}

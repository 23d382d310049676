/*
 * echo_server.c - the model server: a TCP echo server that runs for days
 * in flat memory, drops idle clients, and stops in two phases.
 *
 * What it shows:
 *
 *  - One long-lived scope holds the whole server.  The listener is started
 *    with cancel_scope_start: main goes on only once the listener has
 *    bound its socket, and learns the port from cancel_task_started.
 *  - One handle-less task per connection: each is freed, with its token,
 *    as soon as it returns, so a server that has served a million
 *    connections holds memory only for the open ones.
 *  - Idle timeout: each connection keeps one token of its own and moves
 *    its deadline once per request with cancel_token_set_deadline (no new
 *    token, no timer per request).  A client that sends nothing for
 *    --idle-ms is dropped: its cancel_read fails with ETIMEDOUT.
 *  - Two-phase stop.  The first SIGINT or SIGTERM cancels a root token
 *    (cancel_token_cancel_on_signal); main then drains the scope: the
 *    listener, which accepts inside the scope's drain token, stops
 *    accepting at once; open connections go on being served; after
 *    --grace-ms the scope is cancelled hard and every connection still
 *    open wakes with ECANCELED and closes.  A second signal falls back to
 *    the default disposition: the process dies (the escape hatch when a
 *    task ignores cancellation; after the grace and 2 s more the server
 *    lists those tasks with cancel_scope_dump).
 *  - SIGQUIT writes the whole process's scopes and tasks to stderr
 *    (cancel_dump_on_signal), as Go prints its goroutines.
 *
 * Usage: echo_server [--port N] [--idle-ms MS] [--grace-ms MS] [--quiet]
 * Prints "listening on 127.0.0.1:PORT" once it is ready (PORT 0, the
 * default, picks a free port).  --quiet drops the per-connection lines.
 * Try it with nc 127.0.0.1 PORT.
 */
#include <cancel.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct server {
    cancel_scope_t *scope;
    unsigned short port;            /* asked for (0: any) */
    int64_t idle_ns;
    bool quiet;
    atomic_uint accepted;           /* connections handed to a task */
    atomic_uint closed_by_client;   /* ... that ended at end of file */
    atomic_uint idle_dropped;       /* ... that the idle timeout ended */
    atomic_uint cut;                /* ... that the hard cancel ended */
    atomic_uint failed;             /* ... that ended on an error */
    atomic_ullong bytes;            /* bytes echoed */
};

struct conn {
    struct server *srv;
    int fd;
    unsigned id;
};

/* printf and flush at once: the output is often a file or a pipe. */
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
}

static unsigned open_connections(struct server *srv)
{
    return atomic_load(&srv->accepted) - atomic_load(&srv->closed_by_client) -
           atomic_load(&srv->idle_dropped) - atomic_load(&srv->cut) -
           atomic_load(&srv->failed);
}

static struct timespec after_ns(int64_t ns)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += (time_t)(ns / 1000000000);
    t.tv_nsec += (long)(ns % 1000000000);
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

/* One connection: echo until the client closes, goes idle, or the server
 * stops hard. */
static int serve(void *arg)
{
    struct conn *c = arg;
    struct server *srv = c->srv;
    char buf[4096];
    int err = 0;

    /* The idle timer: a child of this task's token, so the hard cancel
     * still reaches every call made under it. */
    cancel_token_t *idle = cancel_token_child(cancel_current());
    cancel_token_t *prev = cancel_enter(idle);
    for (;;) {
        /* One deadline move per request, not a new token. */
        struct timespec at = after_ns(srv->idle_ns);
        cancel_token_set_deadline(idle, &at);
        ssize_t n = cancel_read(c->fd, buf, sizeof buf);
        if (n == 0)
            break;
        if (n < 0) {
            err = errno;
            break;
        }
        if (cancel_write_all(c->fd, buf, (size_t)n, NULL) < 0) {
            err = errno;
            break;
        }
        atomic_fetch_add(&srv->bytes, (unsigned long long)n);
    }
    cancel_leave(prev);
    cancel_token_unref(idle);

    const char *how;
    if (err == 0) {
        atomic_fetch_add(&srv->closed_by_client, 1);
        how = "closed by the client";
    } else if (err == ETIMEDOUT) {
        atomic_fetch_add(&srv->idle_dropped, 1);
        how = "idle timeout, dropped";
    } else if (err == ECANCELED) {
        atomic_fetch_add(&srv->cut, 1);
        how = "cut at the end of the grace";
    } else {
        atomic_fetch_add(&srv->failed, 1);
        how = strerror(err);
    }
    if (!srv->quiet)
        say("connection %u: %s\n", c->id, how);
    close(c->fd);
    free(c);
    /* The idle timeout and the hard cancel are how connections end, not
     * failures; a real error (ECONNRESET) is this task's result, and under
     * CANCEL_SCOPE_SUPERVISE it does not bring the server down. */
    return err == ETIMEDOUT || err == ECANCELED ? 0 : err;
}

static int listen_on(unsigned short port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 128) < 0) {
        int err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    return fd;
}

/* The listener: binds, reports its port to cancel_scope_start, then
 * accepts until the drain begins, one handle-less task per connection. */
static int listener(void *arg)
{
    struct server *srv = arg;
    int lfd = listen_on(srv->port);
    if (lfd < 0)
        return errno; /* start returns it: main reports the bind error */
    struct sockaddr_in a;
    socklen_t alen = sizeof a;
    getsockname(lfd, (struct sockaddr *)&a, &alen);
    cancel_task_started((void *)(uintptr_t)ntohs(a.sin_port));

    /* Accept inside the drain token: the drain stops this loop at once,
     * while the connections (under the scope's token) go on. */
    cancel_token_t *prev = cancel_enter(cancel_scope_drain_token(srv->scope));
    int rc = 0;
    for (;;) {
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        int fd = cancel_accept(lfd, (struct sockaddr *)&peer, &len, SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            if (err == ECANCELED) {
                say("listener: draining, stopped accepting\n");
                break;
            }
            if (err == ECONNABORTED || err == EMFILE || err == ENFILE || err == EINTR)
                continue;
            say("listener: accept: %s\n", strerror(err));
            rc = err;
            break;
        }
        struct conn *c = malloc(sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->srv = srv;
        c->fd = fd;
        c->id = atomic_fetch_add(&srv->accepted, 1) + 1;
        if (!srv->quiet)
            say("connection %u: from %s:%u\n", c->id, inet_ntoa(peer.sin_addr),
                (unsigned)ntohs(peer.sin_port));
        char name[32];
        snprintf(name, sizeof name, "connection %u", c->id);
        /* No handle: the task's memory goes when it returns.  A drain (or
         * a cancel) that came first starts nothing: the socket is ours. */
        int s = cancel_scope_spawn_named(srv->scope, name, serve, c, NULL);
        if (s != 0) {
            atomic_fetch_sub(&srv->accepted, 1);
            close(fd);
            free(c);
            if (s == ESHUTDOWN || s == ECANCELED)
                break;
        }
    }
    cancel_leave(prev);
    close(lfd);
    return rc;
}

int main(int argc, char **argv)
{
    struct server srv = { .idle_ns = 10 * 1000000000LL };
    int64_t grace_ns = 5 * 1000000000LL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            srv.port = (unsigned short)atoi(argv[++i]);
        } else if (strcmp(argv[i], "--idle-ms") == 0 && i + 1 < argc) {
            srv.idle_ns = atoll(argv[++i]) * 1000000LL;
        } else if (strcmp(argv[i], "--grace-ms") == 0 && i + 1 < argc) {
            grace_ns = atoll(argv[++i]) * 1000000LL;
        } else if (strcmp(argv[i], "--quiet") == 0) {
            srv.quiet = true;
        } else {
            fprintf(stderr, "usage: %s [--port N] [--idle-ms MS] [--grace-ms MS] [--quiet]\n",
                    argv[0]);
            return 2;
        }
    }

    /* The second signal restores the disposition it had before, so make
     * that the default one: a shell starts background jobs with SIGINT
     * ignored, and there the second Ctrl-C would do nothing. */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGPIPE, SIG_IGN);   /* a client gone mid-write: EPIPE, not death */

    /* STOP stands for "the server should stop".  The first SIGINT or
     * SIGTERM cancels it (on a library thread; the handler only hands
     * off).  It is not the scope's parent: stopping is a drain, not a
     * hard cancel. */
    cancel_token_t *stop = cancel_token_new();
    if (!stop || cancel_token_cancel_on_signal(stop, SIGINT) != 0 ||
        cancel_token_cancel_on_signal(stop, SIGTERM) != 0) {
        perror("cancel_token_cancel_on_signal");
        return 1;
    }
    /* kill -QUIT prints every scope and task of the server (issue 16). */
    cancel_dump_on_signal(SIGQUIT, STDERR_FILENO);

    /* SUPERVISE: one connection failing (a reset, say) is that
     * connection's business, not a reason to stop the server. */
    srv.scope = cancel_scope_open_in(NULL, CANCEL_SCOPE_SUPERVISE);
    if (!srv.scope) {
        perror("cancel_scope_open_in");
        return 1;
    }
    void *ready = NULL;
    int rc = cancel_scope_start(srv.scope, listener, &srv, &ready, NULL);
    if (rc != 0) {
        fprintf(stderr, "listener: %s\n", strerror(rc));
        cancel_scope_cancel(srv.scope);
        cancel_scope_join(srv.scope, NULL);
        cancel_token_unref(stop);
        return 1;
    }
    say("listening on 127.0.0.1:%u (idle timeout %lld ms, grace %lld ms)\n",
        (unsigned)(uintptr_t)ready, (long long)(srv.idle_ns / 1000000),
        (long long)(grace_ns / 1000000));

    /* Nothing to do until a signal, or until the server falls over (the
     * listener's failure cancels the scope). */
    cancel_token_t *either[2] = { stop, cancel_scope_token(srv.scope) };
    cancel_token_t *any = cancel_token_any(either, 2);
    cancel_token_wait(any, NULL);
    cancel_token_unref(any);
    if (cancel_token_is_cancelled(stop))
        say("signal: draining, %u connection%s open, grace %lld ms\n", open_connections(&srv),
            open_connections(&srv) == 1 ? "" : "s", (long long)(grace_ns / 1000000));

    /* Phase one: stop accepting, let open connections finish; phase two,
     * after the grace: cancel the rest hard. */
    cancel_scope_drain(srv.scope, grace_ns);
    struct timespec until = after_ns(grace_ns + 2 * 1000000000LL);
    rc = cancel_scope_join_until(srv.scope, &until, NULL);
    if (rc == ETIMEDOUT) {
        say("still waiting 2 s after the grace for tasks that ignore cancellation:\n");
        cancel_scope_dump(srv.scope, STDOUT_FILENO);
        say("signal again to kill the server\n");
        rc = cancel_scope_join(srv.scope, NULL);
    }
    unsigned n = atomic_load(&srv.accepted);
    say("joined %u connection%s (%u closed by the client, %u idle, %u cut at the grace, "
        "%u failed), echoed %llu bytes\n",
        n, n == 1 ? "" : "s", atomic_load(&srv.closed_by_client),
        atomic_load(&srv.idle_dropped), atomic_load(&srv.cut), atomic_load(&srv.failed),
        atomic_load(&srv.bytes));
    /* Freeing STOP ends the signal registrations. */
    cancel_token_unref(stop);
    return rc == 0 ? 0 : 1;
}

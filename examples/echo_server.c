/*
 * echo_server.c - a TCP echo server whose Ctrl-C is a clean shutdown.
 *
 * What it shows:
 *
 *  - One scope holds the whole server: a listener task blocked in
 *    cancel_accept, and one task per connection blocked in cancel_read.
 *    Tasks spawn tasks (the listener spawns the connections) and the scope
 *    still joins them all.
 *  - The scope lives under a root token that the first SIGINT cancels
 *    (cancel_token_cancel_on_signal).  Every task is blocked in a wrapped
 *    call; each one wakes with ECANCELED, closes its socket and returns,
 *    and the join gives the number of connections it joined.  No flag is
 *    polled, no socket is closed under another thread's feet, nothing
 *    leaks.
 *  - A second SIGINT falls back to the signal's previous disposition
 *    (here the default: the process dies).  That is the way out when a
 *    task ignores cancellation: run with --stubborn to make connections
 *    shield themselves from cancellation; after 2 s the server then lists
 *    the tasks it is still waiting for (cancel_scope_dump) and asks for a
 *    second Ctrl-C.
 *
 * Usage: echo_server [--port N] [--stubborn]
 * Prints "listening on 127.0.0.1:PORT" once it is ready (PORT 0, the
 * default, picks a free port).  Try it with nc 127.0.0.1 PORT.
 */
#include <cancel.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct server {
    cancel_scope_t *scope;
    int listen_fd;
    bool stubborn;
    atomic_uint accepted;           /* connections handed to a task */
    atomic_uint closed_by_client;   /* ... that ended at end of file */
    atomic_uint cancelled;          /* ... that the shutdown ended */
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

/* One connection: echo until the client closes, or the server shuts down. */
static int serve(void *arg)
{
    struct conn *c = arg;
    struct server *srv = c->srv;
    char buf[4096];
    int err = 0;

    /* --stubborn: behave like code that knows nothing of cancellation.
     * Inside a shield cancel_read is the plain read(2): the shutdown
     * cannot wake it, and only the second Ctrl-C ends the process. */
    if (srv->stubborn)
        cancel_shield_begin();
    for (;;) {
        /* Blocks until the client sends something, closes, or this task's
         * token (a child of the server scope's) is cancelled. */
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
    if (srv->stubborn)
        cancel_shield_end();

    if (err == 0) {
        atomic_fetch_add(&srv->closed_by_client, 1);
        say("connection %u: closed by the client\n", c->id);
    } else if (err == ECANCELED) {
        atomic_fetch_add(&srv->cancelled, 1);
        say("connection %u: cancelled while blocked in cancel_read\n", c->id);
    } else {
        say("connection %u: %s\n", c->id, strerror(err));
    }
    close(c->fd);
    free(c);
    /* ECANCELED after a cancel is not a failure; a real error (say
     * ECONNRESET) is this task's result, and under CANCEL_SCOPE_SUPERVISE
     * it does not bring the server down. */
    return err;
}

/* The listener: accept until cancelled, one task per connection. */
static int listener(void *arg)
{
    struct server *srv = arg;
    for (;;) {
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        int fd = cancel_accept(srv->listen_fd, (struct sockaddr *)&peer, &len, SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            if (err == ECANCELED) {
                say("listener: cancelled while blocked in cancel_accept\n");
                return 0;
            }
            if (err == ECONNABORTED || err == EMFILE || err == ENFILE)
                continue;
            /* Anything else is fatal for the server: cancel the scope, so
             * main stops waiting and everyone else goes home too. */
            say("listener: accept: %s\n", strerror(err));
            cancel_scope_cancel(srv->scope);
            return err;
        }
        struct conn *c = malloc(sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->srv = srv;
        c->fd = fd;
        c->id = atomic_fetch_add(&srv->accepted, 1) + 1;
        char name[32];
        snprintf(name, sizeof name, "connection %u", c->id);
        say("connection %u: from %s:%u\n", c->id, inet_ntoa(peer.sin_addr),
            (unsigned)ntohs(peer.sin_port));
        /* A task may spawn into its own scope.  Once the scope is
         * cancelled spawn starts nothing (ECANCELED): the connection was
         * never handed over, so it is still ours to close. */
        int rc = cancel_scope_spawn_named(srv->scope, name, serve, c, NULL);
        if (rc != 0) {
            atomic_fetch_sub(&srv->accepted, 1);
            close(fd);
            free(c);
            if (rc == ECANCELED)
                return 0;
        }
    }
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
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 64) < 0) {
        int err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    return fd;
}

int main(int argc, char **argv)
{
    unsigned short port = 0;
    bool stubborn = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            port = (unsigned short)atoi(argv[++i]);
        } else if (strcmp(argv[i], "--stubborn") == 0) {
            stubborn = true;
        } else {
            fprintf(stderr, "usage: %s [--port N] [--stubborn]\n", argv[0]);
            return 2;
        }
    }

    /* The second SIGINT restores the disposition SIGINT had before, so
     * make that the default one: a shell starts background jobs with
     * SIGINT ignored, and there the second Ctrl-C would do nothing. */
    signal(SIGINT, SIG_DFL);
    signal(SIGPIPE, SIG_IGN);   /* a client gone mid-write: EPIPE, not death */

    /* The root token stands for "the server should run".  The first
     * SIGINT cancels it (on a library thread; the handler only hands off),
     * and with it the scope below and every task's token. */
    cancel_token_t *root = cancel_token_new();
    if (!root || cancel_token_cancel_on_signal(root, SIGINT) != 0) {
        perror("cancel_token_cancel_on_signal");
        return 1;
    }

    struct server srv = { .stubborn = stubborn };
    srv.listen_fd = listen_on(port);
    if (srv.listen_fd < 0) {
        perror("listen");
        cancel_token_unref(root);
        return 1;
    }
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    getsockname(srv.listen_fd, (struct sockaddr *)&a, &len);

    /* SUPERVISE: one connection failing (a reset, say) is that
     * connection's business, not a reason to stop the server. */
    srv.scope = cancel_scope_open_in(root, CANCEL_SCOPE_SUPERVISE);
    if (!srv.scope || cancel_scope_spawn_named(srv.scope, "listener", listener, &srv, NULL)) {
        perror("cancel_scope_spawn");
        return 1;
    }
    say("listening on 127.0.0.1:%u%s\n", (unsigned)ntohs(a.sin_port),
        stubborn ? " (stubborn: connections ignore cancellation)" : "");

    /* Nothing to do until the scope is cancelled: by SIGINT through the
     * root, or by the listener giving up. */
    cancel_token_wait(cancel_scope_token(srv.scope), NULL);
    if (cancel_token_is_cancelled(root))
        say("SIGINT: shutting down (%u connections open)\n",
            atomic_load(&srv.accepted) - atomic_load(&srv.closed_by_client));

    /* Every task has been told; give them 2 s, then explain who is late. */
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += 2;
    int rc = cancel_scope_join_until(srv.scope, &until, NULL);
    if (rc == ETIMEDOUT) {
        say("still waiting after 2 s for tasks that ignore cancellation:\n");
        cancel_scope_dump(srv.scope, STDOUT_FILENO);
        say("press Ctrl-C again to kill the server\n");
        rc = cancel_scope_join(srv.scope, NULL);
    }
    /* Under SUPERVISE join reports the parent's reason: ECANCELED here is
     * the shutdown we asked for. */
    unsigned n = atomic_load(&srv.accepted);
    say("joined %u connection%s (%u closed by the client, %u cancelled while open), "
        "echoed %llu bytes\n",
        n, n == 1 ? "" : "s", atomic_load(&srv.closed_by_client),
        atomic_load(&srv.cancelled), atomic_load(&srv.bytes));
    close(srv.listen_fd);
    /* Freeing the root ends the SIGINT registration (the default
     * disposition is back). */
    bool by_signal = cancel_token_is_cancelled(root);
    cancel_token_unref(root);
    return (rc == 0 || (rc == ECANCELED && by_signal)) ? 0 : 1;
}

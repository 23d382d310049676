/*
 * event_loop.c - a token's file descriptor in an epoll loop.
 *
 * Not every program blocks in one call per thread: event loops (epoll,
 * libuv, libevent, GLib) wait for many descriptors at once in one thread.
 * cancel_token_fd gives such a loop a descriptor that polls readable once
 * the token is cancelled, so cancellation is one more event next to the
 * sockets, whatever cancels the token: a signal, a deadline, another
 * thread, a parent token.
 *
 * What it shows:
 *
 *  - A single-threaded line echo server on 127.0.0.1, written with the
 *    plain epoll API (non-blocking sockets, epoll_wait with no timeout).
 *    The loop knows nothing of libcancel but one descriptor.
 *  - The token is a child of a root that SIGINT and SIGTERM cancel
 *    (cancel_token_cancel_on_signal), with a deadline when --deadline-ms
 *    is given (cancel_token_with_timeout): whichever comes first makes
 *    the descriptor readable and the loop stops; cancel_token_reason says
 *    why (ECANCELED: a signal; ETIMEDOUT: the deadline).
 *  - The descriptor belongs to the token: the loop never reads or closes
 *    it, and it goes away with the token's last reference.
 *
 * Usage: event_loop [--deadline-ms MS]
 * Prints "listening on 127.0.0.1:PORT", serves until the token fires,
 * closes the connections still open and prints a summary.  Exit status 0
 * on a clean stop.  Try it with nc 127.0.0.1 PORT, then Ctrl-C.
 */
#define _GNU_SOURCE     /* accept4 */
#include <cancel.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CONNS 256

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int listen_loopback(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = { .sin_family = AF_INET };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 64) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        close(fd);
        return -1;
    }
    printf("listening on 127.0.0.1:%u\n", (unsigned)ntohs(a.sin_port));
    fflush(stdout);
    return fd;
}

int main(int argc, char **argv)
{
    long deadline_ms = -1;
    if (argc == 3 && strcmp(argv[1], "--deadline-ms") == 0) {
        deadline_ms = atol(argv[2]);
    } else if (argc != 1) {
        fprintf(stderr, "usage: %s [--deadline-ms MS]\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    /* The loop's token: cancelled by the first SIGINT or SIGTERM through
     * the root, or by its own deadline. */
    int64_t t0 = now_ms();
    cancel_token_t *root = cancel_token_new();
    if (!root || cancel_token_cancel_on_signal(root, SIGINT) != 0 ||
        cancel_token_cancel_on_signal(root, SIGTERM) != 0) {
        perror("cancel_token_cancel_on_signal");
        return 1;
    }
    cancel_token_t *stop = deadline_ms >= 0
                               ? cancel_token_with_timeout(root, deadline_ms * 1000000LL)
                               : cancel_token_child(root);
    int token_fd = stop ? cancel_token_fd(stop) : -1;
    if (token_fd < 0) {
        perror("cancel_token_fd");
        return 1;
    }

    int lfd = listen_loopback();
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (lfd < 0 || ep < 0) {
        perror("listen");
        return 1;
    }
    struct epoll_event ev = { .events = EPOLLIN };
    ev.data.fd = token_fd;
    epoll_ctl(ep, EPOLL_CTL_ADD, token_fd, &ev);
    ev.data.fd = lfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);

    int conns[MAX_CONNS];
    int nconns = 0;
    unsigned served = 0, closed_by_client = 0;
    unsigned long long bytes = 0;
    bool stopping = false;
    while (!stopping) {
        struct epoll_event events[16];
        /* The plain call, no timeout: the deadline is the token's business. */
        int n = epoll_wait(ep, events, 16, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("epoll_wait");
            break;
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == token_fd) {
                /* Level-triggered and never drained: it stays readable.
                 * Finish this batch, then leave the loop. */
                stopping = true;
            } else if (fd == lfd) {
                int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (c < 0)
                    continue;
                if (nconns == MAX_CONNS) {
                    close(c);
                    continue;
                }
                ev.data.fd = c;
                epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
                conns[nconns++] = c;
                served++;
                printf("connection %u: open\n", served);
                fflush(stdout);
            } else {
                char buf[4096];
                ssize_t r = read(fd, buf, sizeof buf);
                if (r < 0 && (errno == EAGAIN || errno == EINTR))
                    continue;
                /* Echo.  Lines are short and the peer reads its echo before
                 * sending more, so the socket buffer always has room; a
                 * client that does not drain it is dropped. */
                if (r > 0 && send(fd, buf, (size_t)r, MSG_NOSIGNAL) == r) {
                    bytes += (unsigned long long)r;
                    continue;
                }
                if (r == 0)
                    closed_by_client++;
                epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                close(fd);
                for (int k = 0; k < nconns; k++) {
                    if (conns[k] == fd) {
                        conns[k] = conns[--nconns];
                        break;
                    }
                }
            }
        }
    }

    int reason = cancel_token_reason(stop);
    printf("stopped after %lld ms: the token fired (%s)\n", (long long)(now_ms() - t0),
           reason == ETIMEDOUT ? "ETIMEDOUT: the deadline"
           : reason == ECANCELED ? "ECANCELED: a signal" : "?");
    printf("closing %d open connection%s\n", nconns, nconns == 1 ? "" : "s");
    for (int k = 0; k < nconns; k++)
        close(conns[k]);
    printf("served %u connection%s (%u closed by the client), echoed %llu bytes\n", served,
           served == 1 ? "" : "s", closed_by_client, bytes);
    close(ep);
    close(lfd);
    /* The token's descriptor is closed with the token, never by us. */
    cancel_token_unref(stop);
    cancel_token_unref(root);
    return reason ? 0 : 1;
}

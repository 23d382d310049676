/*
 * echo_client.c - a line client for echo_server and event_loop, and a
 * client that never hangs.
 *
 * What it shows: a deadline on a whole program.  main enters a token that
 * cancels itself after --timeout-ms (default 10000) as the thread's current
 * token; from then on every wrapped call (cancel_connect, cancel_read,
 * cancel_write_all) fails with ETIMEDOUT once the deadline has passed,
 * without a timeout argument anywhere.
 *
 * Usage: echo_client [--idle] [--timeout-ms MS] [--connections N]
 *                    [--pause-file F] PORT [LINE...]
 * Connects to 127.0.0.1:PORT, sends each LINE with a newline, and checks
 * that the same line comes back ("echo ok: LINE").  With --idle it then
 * stays connected ("idle") until the server closes the connection
 * ("closed by the server").  Exit status 0 when every echo matched (and,
 * with --idle, the server closed the connection), else 1.
 * --connections N does all that N times, one connection after the other
 * (the deadline covers them all)
 * (the echo_server test's load).  --pause-file F: after the first echo,
 * print "paused" and wait until the file F exists before sending the rest
 * (a client in the middle of its requests).
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

/* Reads one line (without its newline) into BUF; 1, 0 at end of file, -1. */
static int read_line(int fd, char *buf, size_t size)
{
    size_t len = 0;
    for (;;) {
        char ch;
        ssize_t n = cancel_read(fd, &ch, 1);
        if (n <= 0)
            return n == 0 && len == 0 ? 0 : -1;
        if (ch == '\n')
            break;
        if (len + 1 < size)
            buf[len++] = ch;
    }
    buf[len] = '\0';
    return 1;
}

static const char *pause_file;  /* --pause-file */
static bool quiet_echo;         /* --connections: one summary line */

/* Waits (cancel-aware, bounded by the program's deadline) for PATH. */
static int wait_for_file(const char *path)
{
    while (access(path, F_OK) != 0)
        if (cancel_sleep(20 * 1000000LL) != 0)
            return -1;
    return 0;
}

static int run(int port, bool idle, char **lines, int nlines)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("socket");
        return 1;
    }
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((unsigned short)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (cancel_connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("connect");
        close(fd);
        return 1;
    }
    int status = 0;
    for (int i = 0; i < nlines && status == 0; i++) {
        char back[1024];
        size_t len = strlen(lines[i]);
        if (cancel_write_all(fd, lines[i], len, NULL) < 0 ||
            cancel_write_all(fd, "\n", 1, NULL) < 0) {
            perror("write");
            status = 1;
        } else if (read_line(fd, back, sizeof back) != 1) {
            printf("no echo for: %s (%s)\n", lines[i], strerror(errno));
            status = 1;
        } else if (strcmp(back, lines[i]) != 0) {
            printf("wrong echo for: %s: got %s\n", lines[i], back);
            status = 1;
        } else if (!quiet_echo) {
            printf("echo ok: %s\n", back);
        }
        fflush(stdout);
        if (i == 0 && pause_file && status == 0) {
            printf("paused\n");
            fflush(stdout);
            if (wait_for_file(pause_file) != 0) {
                printf("pause: %s\n", strerror(errno));
                status = 1;
            }
        }
    }
    if (status == 0 && idle) {
        printf("idle\n");
        fflush(stdout);
        char ch;
        ssize_t n = cancel_read(fd, &ch, 1);
        if (n == 0) {
            printf("closed by the server\n");
        } else {
            printf("idle connection ended: %s\n", n < 0 ? strerror(errno) : "unexpected data");
            status = 1;
        }
    }
    close(fd);
    return status;
}

int main(int argc, char **argv)
{
    bool idle = false;
    long timeout_ms = 10000;
    long connections = 1;
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--idle") == 0)
            idle = true;
        else if (strcmp(argv[i], "--timeout-ms") == 0 && i + 1 < argc)
            timeout_ms = atol(argv[++i]);
        else if (strcmp(argv[i], "--connections") == 0 && i + 1 < argc)
            connections = atol(argv[++i]);
        else if (strcmp(argv[i], "--pause-file") == 0 && i + 1 < argc)
            pause_file = argv[++i];
        else
            break;
    }
    if (i >= argc) {
        fprintf(stderr, "usage: %s [--idle] [--timeout-ms MS] [--connections N] "
                "[--pause-file F] PORT [LINE...]\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[i++]);

    /* The deadline covers everything below: while it is the current token,
     * every wrapped call on this thread is bounded by it. */
    cancel_token_t *deadline = cancel_token_with_timeout(NULL, timeout_ms * 1000000LL);
    if (!deadline) {
        perror("cancel_token_with_timeout");
        return 1;
    }
    cancel_token_t *prev = cancel_enter(deadline);
    int status = 0;
    quiet_echo = connections > 1;
    long done = 0;
    for (; done < connections && status == 0; done++)
        status = run(port, idle, argv + i, argc - i);
    if (connections > 1)
        printf("%ld connection%s %s\n", done, done == 1 ? "" : "s", status ? "failed" : "ok");
    cancel_leave(prev);
    cancel_token_unref(deadline);
    return status;
}

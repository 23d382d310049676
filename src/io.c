/*
 * io.c - the descriptor wrappers (read, write, recv, accept, poll, ...),
 * built on the wait of wake.c.
 *
 * Shape of every wrapper, under a current token T:
 *
 *   loop: T cancelled?  -> fail (ECANCELED / ETIMEDOUT), nothing moved
 *         try the call without blocking (preadv2/pwritev2 RWF_NOWAIT,
 *           MSG_DONTWAIT on sockets, poll with timeout 0 where neither
 *           exists) -> moved something or failed: return it
 *         would block: O_NONBLOCK descriptor -> EAGAIN, as the plain call
 *                      else wait (wake.c) for readiness | T | deadline
 *
 * The non-blocking attempt never changes the descriptor's flags (RWF_NOWAIT
 * and MSG_DONTWAIT are per call).  With no current token (or under a
 * shield) each wrapper is the plain call with EINTR retried.  Regular files
 * and block devices cannot be woken by anything: their transfers go in
 * chunks of at most 1 MiB with T read between chunks.
 *
 * Descriptors that refuse RWF_NOWAIT (some character devices) take the
 * poll-then-call path: if another thread drains the descriptor between the
 * poll and the call, the call blocks like the plain call would, and a
 * cancel is noticed only when it returns.  Writes on that path are limited
 * to PIPE_BUF bytes, which POLLOUT guarantees room for on pipes and FIFOs.
 * accept has no per-call non-blocking flag and always takes that path.
 */
#include "internal.h"

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

/* Largest transfer on a descriptor between two reads of the token. */
#define CHUNK ((size_t)1 << 20)

/* The cancellation error of T, or 0 (one acquire load). */
static inline int cancelled(cancel_token_t *t)
{
    int reason = cancel_token_reason(t);
    return reason ? cancel__reason_errno(reason) : 0;
}

static bool fd_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && (fl & O_NONBLOCK);
}

/* Regular files and block devices: readiness means nothing there. */
static bool fd_unwakeable(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode));
}

/* Waits for EVENTS on FD under T; 0 when ready, else -1 with errno. */
static int wait_one(cancel_token_t *t, int fd, short events, const char *call)
{
    struct pollfd p = { .fd = fd, .events = events, .revents = 0 };
    int rc = cancel__wait_ready(t, &p, 1, NULL, call);
    if (rc < 0) {
        errno = -rc;
        return -1;
    }
    if (p.revents & POLLNVAL) {
        errno = EBADF;
        return -1;
    }
    return 0;
}

/*
 * After a socket call made with MSG_DONTWAIT failed with ERR: 0 to try it
 * again (EINTR, or the socket is now ready), else the errno to report (its
 * own error, EAGAIN where the plain call would not have blocked, or the
 * cancellation that ended the wait).
 */
static int socket_retry(cancel_token_t *t, int fd, int flags, int err, short events,
                        const char *call)
{
    if (err == EINTR)
        return 0;
    if (err != EAGAIN || (flags & MSG_DONTWAIT) || fd_nonblocking(fd))
        return err;
    return wait_one(t, fd, events, call) < 0 ? errno : 0;
}

/* ---------------------------------------------------------------- iovecs */

/* Sum of the lengths; false (EINVAL) on a bad count or an overflow. */
static bool iov_total(const struct iovec *iov, int iovcnt, size_t *total)
{
    if (iovcnt < 0 || iovcnt > IOV_MAX || (iovcnt > 0 && !iov))
        return false;
    size_t sum = 0;
    for (int i = 0; i < iovcnt; i++) {
        if (iov[i].iov_len > (size_t)SSIZE_MAX - sum)
            return false;
        sum += iov[i].iov_len;
    }
    *total = sum;
    return true;
}

/* A window over IOV skipping SKIP bytes and holding at most MAX. */
struct window {
    struct iovec local[8];
    struct iovec *v;
    int n;
};

static bool window_init(struct window *w, int iovcnt)
{
    w->v = w->local;
    w->n = 0;
    if (iovcnt > (int)(sizeof w->local / sizeof w->local[0])) {
        w->v = malloc((size_t)iovcnt * sizeof *w->v);
        if (!w->v) {
            errno = ENOMEM;
            return false;
        }
    }
    return true;
}

static void window_free(struct window *w)
{
    if (w->v != w->local)
        free(w->v);
}

static void window_set(struct window *w, const struct iovec *iov, int iovcnt, size_t skip,
                       size_t max)
{
    w->n = 0;
    for (int i = 0; i < iovcnt && max > 0; i++) {
        size_t len = iov[i].iov_len;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        size_t take = len - skip < max ? len - skip : max;
        w->v[w->n].iov_base = (char *)iov[i].iov_base + skip;
        w->v[w->n].iov_len = take;
        w->n++;
        max -= take;
        skip = 0;
    }
}

/* ---------------------------------------------------- read / write family */

static ssize_t rw_plain(bool out, int fd, const struct iovec *iov, int n, off_t off, bool pos)
{
    ssize_t r;
    do {
        if (out)
            r = pos ? pwritev(fd, iov, n, off) : writev(fd, iov, n);
        else
            r = pos ? preadv(fd, iov, n, off) : readv(fd, iov, n);
    } while (r < 0 && errno == EINTR);
    return r;
}

static ssize_t rw_nowait(bool out, int fd, const struct iovec *iov, int n, off_t off, bool pos)
{
    off_t at = pos ? off : -1;
    return out ? pwritev2(fd, iov, n, at, RWF_NOWAIT) : preadv2(fd, iov, n, at, RWF_NOWAIT);
}

/*
 * Reads once (a short count is fine), or writes until all of IOV is out or
 * T fires (returning the count written, when there is one).
 */
static ssize_t rw_cancel(cancel_token_t *t, bool out, int fd, const struct iovec *iov,
                         int iovcnt, off_t off, bool pos, const char *call)
{
    size_t want;
    if (!iov_total(iov, iovcnt, &want) || (pos && off < 0)) {
        errno = EINVAL;
        return -1;
    }
    struct window w;
    if (!window_init(&w, iovcnt))
        return -1;
    size_t done = 0;
    bool nowait = true;    /* false once the descriptor refused RWF_NOWAIT */
    int file = -1;         /* regular file or block device: 1, else 0, -1 unknown */
    ssize_t result;
    int err = 0;
    for (;;) {
        if ((err = cancelled(t)) != 0)
            break;
        off_t at = pos ? off + (off_t)done : 0;
        ssize_t r;
        if (nowait) {
            window_set(&w, iov, iovcnt, done, CHUNK);
            r = rw_nowait(out, fd, w.v, w.n, at, pos);
            if (r < 0 && errno == EAGAIN) {
                if (file < 0)
                    file = fd_unwakeable(fd);
                if (file) {
                    r = rw_plain(out, fd, w.v, w.n, at, pos);  /* one chunk */
                } else if (fd_nonblocking(fd)) {
                    err = EAGAIN;
                    break;
                } else {
                    if (wait_one(t, fd, out ? POLLOUT : POLLIN, call) < 0) {
                        err = errno;
                        break;
                    }
                    continue;
                }
            } else if (r < 0 && (errno == EOPNOTSUPP || errno == EINVAL || errno == ENOSYS)) {
                nowait = false;
                continue;
            }
        } else {
            /* Poll, then call: for descriptors without RWF_NOWAIT. */
            if (file < 0)
                file = fd_unwakeable(fd);
            window_set(&w, iov, iovcnt, done, file || !out ? CHUNK : PIPE_BUF);
            if (!file && !fd_nonblocking(fd) &&
                wait_one(t, fd, out ? POLLOUT : POLLIN, call) < 0) {
                err = errno;
                break;
            }
            if ((err = cancelled(t)) != 0)
                break;
            r = rw_plain(out, fd, w.v, w.n, at, pos);
        }
        if (r < 0) {
            if (errno == EINTR)
                continue;
            err = errno;
            break;
        }
        done += (size_t)r;
        if (!out || r == 0 || done == want)
            break;
    }
    window_free(&w);
    /* Progress wins: what moved is reported; the next call sees T. */
    if (done > 0 || err == 0)
        result = (ssize_t)done;
    else {
        errno = err;
        result = -1;
    }
    return result;
}

ssize_t cancel_read(int fd, void *buf, size_t n)
{
    cancel_token_t *t = cancel_current();
    if (!t) {
        ssize_t r;
        do
            r = read(fd, buf, n);
        while (r < 0 && errno == EINTR);
        return r;
    }
    int err = cancelled(t);
    if (err) {
        errno = err;
        return -1;
    }
    /* Fast path: data already there costs one syscall and no lock. */
    struct iovec v = { .iov_base = buf, .iov_len = n < CHUNK ? n : CHUNK };
    ssize_t r = preadv2(fd, &v, 1, -1, RWF_NOWAIT);
    if (r >= 0)
        return r;
    v.iov_len = n;
    return rw_cancel(t, false, fd, &v, 1, 0, false, "read");
}

ssize_t cancel_write(int fd, const void *buf, size_t n)
{
    cancel_token_t *t = cancel_current();
    if (!t) {
        ssize_t r;
        do
            r = write(fd, buf, n);
        while (r < 0 && errno == EINTR);
        return r;
    }
    struct iovec v = { .iov_base = (void *)buf, .iov_len = n };
    return rw_cancel(t, true, fd, &v, 1, 0, false, "write");
}

ssize_t cancel_readv(int fd, const struct iovec *iov, int iovcnt)
{
    cancel_token_t *t = cancel_current();
    if (!t)
        return rw_plain(false, fd, iov, iovcnt, 0, false);
    return rw_cancel(t, false, fd, iov, iovcnt, 0, false, "readv");
}

ssize_t cancel_writev(int fd, const struct iovec *iov, int iovcnt)
{
    cancel_token_t *t = cancel_current();
    if (!t)
        return rw_plain(true, fd, iov, iovcnt, 0, false);
    return rw_cancel(t, true, fd, iov, iovcnt, 0, false, "writev");
}

ssize_t cancel_pread(int fd, void *buf, size_t n, off_t offset)
{
    struct iovec v = { .iov_base = buf, .iov_len = n };
    cancel_token_t *t = cancel_current();
    if (!t)
        return rw_plain(false, fd, &v, 1, offset, true);
    return rw_cancel(t, false, fd, &v, 1, offset, true, "pread");
}

ssize_t cancel_pwrite(int fd, const void *buf, size_t n, off_t offset)
{
    struct iovec v = { .iov_base = (void *)buf, .iov_len = n };
    cancel_token_t *t = cancel_current();
    if (!t)
        return rw_plain(true, fd, &v, 1, offset, true);
    return rw_cancel(t, true, fd, &v, 1, offset, true, "pwrite");
}

/* ------------------------------------------------------------- sockets */

static bool sock_stream(int fd)
{
    int type = 0;
    socklen_t len = sizeof type;
    return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_STREAM;
}

/*
 * recv/recvfrom: MSG_DONTWAIT per call.  MSG_WAITALL on a stream socket
 * loops until N bytes, end of stream or T (progress wins).
 */
static ssize_t recv_cancel(cancel_token_t *t, int fd, void *buf, size_t n, int flags,
                           struct sockaddr *addr, socklen_t *addrlen, const char *call)
{
    size_t got = 0;
    bool waitall = (flags & MSG_WAITALL) && !(flags & MSG_DONTWAIT);
    int err;
    for (;;) {
        if ((err = cancelled(t)) != 0)
            break;
        ssize_t r = recvfrom(fd, (char *)buf + got, n - got, flags | MSG_DONTWAIT, addr, addrlen);
        if (r >= 0) {
            got += (size_t)r;
            if (!waitall || r == 0 || got == n || !sock_stream(fd))
                return (ssize_t)got;
            continue;
        }
        if ((err = socket_retry(t, fd, flags, errno, POLLIN, call)) != 0)
            break;
    }
    if (got > 0)
        return (ssize_t)got;
    errno = err;
    return -1;
}

ssize_t cancel_recv(int fd, void *buf, size_t n, int flags)
{
    return cancel_recvfrom(fd, buf, n, flags, NULL, NULL);
}

ssize_t cancel_recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *addr,
                        socklen_t *addrlen)
{
    cancel_token_t *t = cancel_current();
    if (!t) {
        ssize_t r;
        do
            r = recvfrom(fd, buf, n, flags, addr, addrlen);
        while (r < 0 && errno == EINTR);
        return r;
    }
    int err = cancelled(t);
    if (err) {
        errno = err;
        return -1;
    }
    /* Fast path: data already there, one syscall, no lock. */
    if (!(flags & MSG_WAITALL)) {
        ssize_t r = recvfrom(fd, buf, n, flags | MSG_DONTWAIT, addr, addrlen);
        if (r >= 0 || (errno != EAGAIN && errno != EINTR))
            return r;
    }
    return recv_cancel(t, fd, buf, n, flags, addr, addrlen, addr ? "recvfrom" : "recv");
}

ssize_t cancel_recvmsg(int fd, struct msghdr *msg, int flags)
{
    cancel_token_t *t = cancel_current();
    ssize_t r;
    if (!t) {
        do
            r = recvmsg(fd, msg, flags);
        while (r < 0 && errno == EINTR);
        return r;
    }
    for (;;) {
        int err = cancelled(t);
        if (err) {
            errno = err;
            return -1;
        }
        r = recvmsg(fd, msg, flags | MSG_DONTWAIT);
        if (r >= 0)
            return r;
        if ((err = socket_retry(t, fd, flags, errno, POLLIN, "recvmsg")) != 0) {
            errno = err;
            return -1;
        }
    }
}

/*
 * sendmsg until every byte is out (stream sockets may take part of it),
 * T fires (the count sent is returned when there is one) or an error.
 * Ancillary data goes with the first part only.
 */
static ssize_t send_cancel(cancel_token_t *t, int fd, const struct msghdr *msg, int flags,
                           const char *call)
{
    size_t want;
    if (!iov_total(msg->msg_iov, (int)msg->msg_iovlen, &want)) {
        errno = EINVAL;
        return -1;
    }
    struct window w;
    if (!window_init(&w, (int)msg->msg_iovlen))
        return -1;
    struct msghdr m = *msg;
    size_t done = 0;
    int err = 0;
    for (;;) {
        if ((err = cancelled(t)) != 0)
            break;
        window_set(&w, msg->msg_iov, (int)msg->msg_iovlen, done, SIZE_MAX);
        m.msg_iov = w.v;
        m.msg_iovlen = (size_t)w.n;
        ssize_t r = sendmsg(fd, &m, flags | MSG_DONTWAIT);
        if (r >= 0) {
            done += (size_t)r;
            m.msg_control = NULL;
            m.msg_controllen = 0;
            if (done >= want || r == 0)
                break;
            continue;
        }
        if ((err = socket_retry(t, fd, flags, errno, POLLOUT, call)) != 0)
            break;
    }
    window_free(&w);
    if (done > 0 || err == 0)
        return (ssize_t)done;
    errno = err;
    return -1;
}

ssize_t cancel_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    cancel_token_t *t = cancel_current();
    if (!t || !msg) {
        ssize_t r;
        do
            r = sendmsg(fd, msg, flags);
        while (r < 0 && errno == EINTR);
        return r;
    }
    return send_cancel(t, fd, msg, flags, "sendmsg");
}

ssize_t cancel_sendto(int fd, const void *buf, size_t n, int flags,
                      const struct sockaddr *addr, socklen_t addrlen)
{
    cancel_token_t *t = cancel_current();
    ssize_t r;
    if (!t) {
        do
            r = sendto(fd, buf, n, flags, addr, addrlen);
        while (r < 0 && errno == EINTR);
        return r;
    }
    int err = cancelled(t);
    if (err) {
        errno = err;
        return -1;
    }
    /* Fast path: all of it fits at once. */
    r = sendto(fd, buf, n, flags | MSG_DONTWAIT, addr, addrlen);
    if ((r >= 0 && (size_t)r == n) || (r < 0 && errno != EAGAIN && errno != EINTR))
        return r;
    if (r > 0 && (flags & MSG_DONTWAIT))
        return r;
    size_t sent = r > 0 ? (size_t)r : 0;
    struct iovec v = { .iov_base = (char *)buf + sent, .iov_len = n - sent };
    struct msghdr m = { .msg_name = (void *)addr, .msg_namelen = addr ? addrlen : 0,
                        .msg_iov = &v, .msg_iovlen = 1 };
    ssize_t rest = send_cancel(t, fd, &m, flags, addr ? "sendto" : "send");
    if (rest < 0)
        return sent > 0 ? (ssize_t)sent : -1;
    return (ssize_t)sent + rest;
}

ssize_t cancel_send(int fd, const void *buf, size_t n, int flags)
{
    return cancel_sendto(fd, buf, n, flags, NULL, 0);
}

/* ------------------------------------------------------ accept, connect */

int cancel_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
    cancel_token_t *t = cancel_current();
    int r;
    if (!t) {
        do
            r = accept4(fd, addr, addrlen, flags);
        while (r < 0 && errno == EINTR);
        return r;
    }
    bool nonblocking = false, checked = false;
    for (;;) {
        int err = cancelled(t);
        if (err) {
            errno = err;
            return -1;
        }
        if (!checked) {
            /* We poll before the first accept4, so the errors it would
             * give at once (bad flags, a socket not listening) must be
             * found here, or we would wait for a connection instead. */
            int listening = 0;
            socklen_t len = sizeof listening;
            if (flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)) {
                errno = EINVAL;
                return -1;
            }
            if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0)
                return -1; /* EBADF, ENOTSOCK */
            if (!listening) {
                errno = EINVAL;
                return -1;
            }
            nonblocking = fd_nonblocking(fd);
            checked = true;
        }
        if (!nonblocking) {
            /* No per-call non-blocking accept: poll, then call. */
            struct pollfd p = { .fd = fd, .events = POLLIN, .revents = 0 };
            int ready = poll(&p, 1, 0);
            if (ready < 0 && errno == EINTR)
                continue;
            if (ready == 0) {
                if (wait_one(t, fd, POLLIN, "accept") < 0)
                    return -1;
                continue;
            }
        }
        r = accept4(fd, addr, addrlen, flags);
        if (r >= 0 || errno != EINTR)
            return r;
    }
}

/* The outcome of an asynchronous connect once the socket is writable. */
static int connect_result(int fd)
{
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
        return -1;
    if (soerr) {
        errno = soerr;
        return -1;
    }
    return 0;
}

int cancel_connect(int fd, const struct sockaddr *addr, socklen_t addrlen)
{
    cancel_token_t *t = cancel_current();
    int err = cancelled(t);
    if (err) {
        errno = err;
        return -1;
    }
    int fl = t ? fcntl(fd, F_GETFL) : -1;
    if (!t || fl < 0 || (fl & O_NONBLOCK)) {
        /* Plain connect.  After EINTR the connection goes on in the
         * background: wait for it instead of calling connect again. */
        if (connect(fd, addr, addrlen) == 0)
            return 0;
        if (errno != EINTR)
            return -1;
        struct pollfd p = { .fd = fd, .events = POLLOUT, .revents = 0 };
        int rc = cancel__wait_ready(t, &p, 1, NULL, "connect");
        if (rc < 0) {
            errno = -rc;
            return -1;
        }
        return connect_result(fd);
    }
    /*
     * The documented exception to "flags are never changed": O_NONBLOCK is
     * set around the connect call only, and restored before anything else.
     * A local (AF_UNIX) listener with a full backlog makes a non-blocking
     * connect fail with EAGAIN where the plain call blocks until there is
     * room; nothing polls ready for that event (the socket polls writable
     * at once), so we retry after cancel-aware sleeps that grow from 50 us
     * to 10 ms: a cancel still ends the wait at once.
     */
    int64_t backoff = 50 * 1000;
    int rc, saved;
    for (;;) {
        if (fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
            return -1;
        rc = connect(fd, addr, addrlen);
        saved = errno;
        fcntl(fd, F_SETFL, fl);
        if (rc == 0)
            return 0;
        if (saved != EAGAIN)
            break;
        struct timespec at = cancel__add_ns(cancel__now(), backoff);
        int w = cancel__wait_ready(t, NULL, 0, &at, "connect");
        if (w < 0) {
            errno = -w;
            return -1;
        }
        if (backoff < 10 * 1000 * 1000)
            backoff *= 2;
    }
    if (saved != EINPROGRESS && saved != EINTR) {
        errno = saved;
        return -1;
    }
    if (wait_one(t, fd, POLLOUT, "connect") < 0)
        return -1; /* cancelled in progress: the caller closes the socket */
    return connect_result(fd);
}

/* ------------------------------------------------- poll, epoll, wait_fd */

int cancel_poll(struct pollfd *fds, nfds_t nfds, int timeout_ms)
{
    cancel_token_t *t = cancel_current();
    int err = cancelled(t);
    if (err) {
        errno = err;
        return -1;
    }
    if (nfds > 0 && !fds) {
        errno = EFAULT;  /* as poll: the array is read before any wait */
        return -1;
    }
    if (timeout_ms == 0) {
        int r;
        do
            r = poll(fds, nfds, 0);
        while (r < 0 && errno == EINTR);
        return r;
    }
    struct timespec at = { 0, 0 };
    if (timeout_ms > 0)
        at = cancel__add_ns(cancel__now(), (int64_t)timeout_ms * 1000000);
    int rc = cancel__wait_ready(t, fds, nfds, timeout_ms > 0 ? &at : NULL, "poll");
    if (rc < 0) {
        errno = -rc;
        return -1;
    }
    return rc;
}

int cancel_epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout_ms)
{
    cancel_token_t *t = cancel_current();
    struct timespec at = { 0, 0 };
    if (timeout_ms > 0)
        at = cancel__add_ns(cancel__now(), (int64_t)timeout_ms * 1000000);
    for (;;) {
        int err = cancelled(t);
        if (err) {
            errno = err;
            return -1;
        }
        int ms = timeout_ms;
        if (t)
            ms = 0;      /* never block inside epoll_wait: it consumes events */
        else if (timeout_ms > 0) {
            int64_t left = cancel__ns_until(&at);
            ms = left <= 0 ? 0 : (int)((left + 999999) / 1000000);
        }
        int r = epoll_wait(epfd, events, maxevents, ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r != 0 || timeout_ms == 0 || !t)
            return r;
        /* The epoll fd polls readable when events are pending; wait for that
         * without taking them, so a cancel leaves every event queued. */
        struct pollfd p = { .fd = epfd, .events = POLLIN, .revents = 0 };
        int rc = cancel__wait_ready(t, &p, 1, timeout_ms > 0 ? &at : NULL, "epoll_wait");
        if (rc < 0) {
            errno = -rc;
            return -1;
        }
        if (rc == 0)
            return 0;
        if (p.revents & POLLNVAL) {
            errno = EBADF;
            return -1;
        }
    }
}

int cancel_wait_fd(int fd, short events)
{
    cancel_token_t *t = cancel_current();
    int err = cancelled(t);
    if (err) {
        errno = err;
        return -1;
    }
    if (fd < 0) {
        /* poll ignores negative descriptors: it would wait for ever. */
        errno = EBADF;
        return -1;
    }
    return wait_one(t, fd, events, "wait_fd");
}

/* ------------------------------------------------------ loop wrappers */

ssize_t cancel_read_full(int fd, void *buf, size_t n, size_t *done)
{
    size_t got = 0;
    ssize_t result = 0;
    if (n > SSIZE_MAX) {
        errno = EINVAL;
        result = -1;
    }
    while (result == 0 && got < n) {
        ssize_t r = cancel_read(fd, (char *)buf + got, n - got);
        if (r < 0)
            result = -1;
        else if (r == 0)
            break;      /* end of file */
        else
            got += (size_t)r;
    }
    if (done)
        *done = got;
    return result < 0 ? -1 : (ssize_t)got;
}

ssize_t cancel_write_all(int fd, const void *buf, size_t n, size_t *done)
{
    size_t put = 0;
    ssize_t result = 0;
    if (n > SSIZE_MAX) {
        errno = EINVAL;
        result = -1;
    }
    while (result == 0 && put < n) {
        ssize_t r = cancel_write(fd, (const char *)buf + put, n - put);
        if (r < 0)
            result = -1;
        else if (r == 0) {
            errno = EIO;    /* a write that takes nothing would loop forever */
            result = -1;
        } else
            put += (size_t)r;
    }
    if (done)
        *done = put;
    return result < 0 ? -1 : (ssize_t)put;
}

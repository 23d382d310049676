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
 *
 * Conventions (interpose.h): everything below the public functions returns
 * a result >= 0 or -errno; each public function is one IO_BEGIN, the
 * plain call (CANCEL_PLAIN) when there is no current token or the token
 * path, and one conversion.  A wait on a socket is bounded by its
 * SO_RCVTIMEO / SO_SNDTIMEO, as the plain call is, and then fails with
 * EAGAIN.
 */
#include "interpose.h"

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

/* Largest transfer on a descriptor between two reads of the token. */
#define CHUNK ((size_t)1 << 20)

__thread unsigned cancel__io_depth __attribute__((tls_model("initial-exec")));

#define cancelled cancel__cancelled

/* Runs BODY (an expression giving >= 0 or -errno) inside the library. */
#define EDGE(type, body)                                                   \
    do {                                                                   \
        IO_BEGIN();                                                        \
        type r_ = (body);                                                  \
        IO_END();                                                          \
        return (type)cancel__ret(r_);                                      \
    } while (0)

static bool fd_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && (fl & O_NONBLOCK);
}

/* The socket's SO_RCVTIMEO (POLLIN) or SO_SNDTIMEO as a deadline; false
 * when it has none (or FD is no socket). */
static bool sock_timeo(int fd, short events, struct timespec *at)
{
    struct timeval tv = { 0, 0 };
    socklen_t len = sizeof tv;
    if (getsockopt(fd, SOL_SOCKET, events & POLLIN ? SO_RCVTIMEO : SO_SNDTIMEO, &tv, &len) < 0 ||
        (tv.tv_sec == 0 && tv.tv_usec == 0))
        return false;
    *at = cancel__add_ns(cancel__now(), (int64_t)tv.tv_sec * 1000000000 + tv.tv_usec * 1000);
    return true;
}

/*
 * Waits for EVENTS on FD under T: 0 when ready, else -errno.  SOCK: FD is
 * a socket (1), is not (0), or unknown (-1, asked only when needed), so
 * that its timeout bounds the wait (-EAGAIN when it expires).
 */
static int wait_one(cancel_token_t *t, int fd, short events, int sock, const char *call)
{
    struct pollfd p = { .fd = fd, .events = events, .revents = 0 };
    struct timespec at;
    bool timed = sock != 0 && sock_timeo(fd, events, &at);
    int rc = cancel__wait_ready(t, &p, 1, timed ? &at : NULL, call);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return -EAGAIN; /* SO_RCVTIMEO / SO_SNDTIMEO expired */
    return (p.revents & POLLNVAL) ? -EBADF : 0;
}

/*
 * After a socket call made with MSG_DONTWAIT failed with -ERR: 0 to try it
 * again (EINTR, or the socket is now ready), else the -errno to report (its
 * own error, EAGAIN where the plain call would not have blocked, or the
 * cancellation that ended the wait).
 */
static int socket_retry(cancel_token_t *t, int fd, int flags, int err, short events,
                        const char *call)
{
    if (err == EINTR)
        return 0;
    if (err != EAGAIN || (flags & MSG_DONTWAIT) || fd_nonblocking(fd))
        return -err;
    return wait_one(t, fd, events, 1, call);
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
        if (!w->v)
            return false;
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
    if (out)
        return CANCEL_PLAIN(ssize_t, pos ? pwritev(fd, iov, n, off) : writev(fd, iov, n));
    return CANCEL_PLAIN(ssize_t, pos ? preadv(fd, iov, n, off) : readv(fd, iov, n));
}

static ssize_t rw_nowait(bool out, int fd, const struct iovec *iov, int n, off_t off, bool pos)
{
    off_t at = pos ? off : -1;
    ssize_t r = out ? pwritev2(fd, iov, n, at, RWF_NOWAIT) : preadv2(fd, iov, n, at, RWF_NOWAIT);
    return r < 0 ? -errno : r;
}

/*
 * What kind of descriptor, found at most once per call and only when a
 * wait looms.  The blocking path is the hot one of a server (issue 12:
 * every extra system call there shows), so the kind is not asked with
 * fstat when the F_GETFL flags, which the O_NONBLOCK rule needs anyway,
 * already say enough: a descriptor open for reading or writing only is a
 * pipe, FIFO, character device or file, never a socket.  A file then
 * shows itself by polling ready while RWF_NOWAIT still says EAGAIN (data
 * not in the page cache), and only then is fstat asked.
 */
enum kind { K_UNKNOWN, K_ASSUMED, K_FILE, K_SOCK, K_OTHER };

static enum kind fd_kind(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return K_OTHER;
    if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))
        return K_FILE; /* readiness means nothing there */
    return S_ISSOCK(st.st_mode) ? K_SOCK : K_OTHER;
}

/* The kind from the descriptor's flags FL where they suffice (see above). */
static enum kind fd_kind_from_flags(int fd, int fl)
{
    return (fl & O_ACCMODE) == O_RDWR ? fd_kind(fd) : K_ASSUMED;
}

/*
 * Reads once (a short count is fine), or writes until all of IOV is out or
 * T fires (returning the count written, when there is one).  TRIED: the
 * caller's own non-blocking attempt already found nothing to move.
 */
static ssize_t rw_cancel(cancel_token_t *t, bool out, int fd, const struct iovec *iov,
                         int iovcnt, off_t off, bool pos, bool tried, const char *call)
{
    size_t want;
    if (!iov_total(iov, iovcnt, &want) || (pos && off < 0))
        return -EINVAL;
    struct window w;
    if (!window_init(&w, iovcnt))
        return -ENOMEM;
    size_t done = 0;
    bool nowait = true;    /* false once the descriptor refused RWF_NOWAIT */
    bool polled = false;   /* the last wait said ready */
    enum kind kind = K_UNKNOWN;
    int fl = -1;           /* F_GETFL, asked once */
    int err = 0;
    for (;;) {
        if ((err = cancelled(t)) != 0)
            break;
        off_t at = pos ? off + (off_t)done : 0;
        ssize_t r;
        if (nowait) {
            window_set(&w, iov, iovcnt, done, CHUNK);
            r = tried ? -EAGAIN : rw_nowait(out, fd, w.v, w.n, at, pos);
            tried = false;
            if (r == -EAGAIN) {
                if (fl < 0 && (fl = fcntl(fd, F_GETFL)) >= 0 && (fl & O_NONBLOCK)) {
                    err = EAGAIN;
                    break;
                }
                if (kind == K_UNKNOWN)
                    kind = fd_kind_from_flags(fd, fl);
                else if (kind == K_ASSUMED && polled)
                    kind = fd_kind(fd); /* ready, yet nothing: a file? */
                if (kind == K_FILE) {
                    r = rw_plain(out, fd, w.v, w.n, at, pos);  /* one chunk */
                } else {
                    int rc = wait_one(t, fd, out ? POLLOUT : POLLIN, kind == K_SOCK, call);
                    if (rc < 0) {
                        err = -rc;
                        break;
                    }
                    polled = true;
                    continue;
                }
            } else if (r == -EOPNOTSUPP || r == -EINVAL || r == -ENOSYS) {
                nowait = false;
                continue;
            }
        } else {
            /* Poll, then call: for descriptors without RWF_NOWAIT. */
            if (kind == K_UNKNOWN || kind == K_ASSUMED)
                kind = fd_kind(fd);
            if (fl < 0)
                fl = fcntl(fd, F_GETFL);
            window_set(&w, iov, iovcnt, done, kind == K_FILE || !out ? CHUNK : PIPE_BUF);
            if (kind != K_FILE && !(fl >= 0 && (fl & O_NONBLOCK))) {
                int rc = wait_one(t, fd, out ? POLLOUT : POLLIN, kind == K_SOCK, call);
                if (rc < 0) {
                    err = -rc;
                    break;
                }
            }
            if ((err = cancelled(t)) != 0)
                break;
            r = rw_plain(out, fd, w.v, w.n, at, pos);
        }
        polled = false;
        if (r < 0) {
            if (r == -EINTR)
                continue;
            err = (int)-r;
            break;
        }
        done += (size_t)r;
        if (!out || r == 0 || done == want)
            break;
    }
    window_free(&w);
    /* Progress wins: what moved is reported; the next call sees T. */
    return done > 0 || err == 0 ? (ssize_t)done : -err;
}

static ssize_t read_t(cancel_token_t *t, int fd, void *buf, size_t n)
{
    int err = cancelled(t);
    if (err)
        return -err;
    /* Fast path: data already there costs one syscall and no lock. */
    struct iovec v = { .iov_base = buf, .iov_len = n < CHUNK ? n : CHUNK };
    ssize_t r = preadv2(fd, &v, 1, -1, RWF_NOWAIT);
    if (r >= 0)
        return r;
    bool tried = errno == EAGAIN;
    v.iov_len = n;
    return rw_cancel(t, false, fd, &v, 1, 0, false, tried, "read");
}

ssize_t cancel_read(int fd, void *buf, size_t n)
{
    cancel_token_t *t = cancel_current();
    EDGE(ssize_t, t ? read_t(t, fd, buf, n) : CANCEL_PLAIN(ssize_t, read(fd, buf, n)));
}

ssize_t cancel_write(int fd, const void *buf, size_t n)
{
    cancel_token_t *t = cancel_current();
    struct iovec v = { .iov_base = (void *)buf, .iov_len = n };
    EDGE(ssize_t, t ? rw_cancel(t, true, fd, &v, 1, 0, false, false, "write")
                    : CANCEL_PLAIN(ssize_t, write(fd, buf, n)));
}

/* The read/write family under T, for the interposer (-errno). */
ssize_t cancel__rw(cancel_token_t *t, bool out, int fd, const struct iovec *iov, int iovcnt,
                   off_t off, bool pos)
{
    IO_BEGIN();
    ssize_t r = rw_cancel(t, out, fd, iov, iovcnt, off, pos, false, out ? "write" : "read");
    IO_END();
    return r;
}

/* The vector and positioned forms: one body, the plain call in rw_plain. */
static ssize_t rw_edge(bool out, int fd, const struct iovec *iov, int iovcnt, off_t off,
                       bool pos, const char *call)
{
    cancel_token_t *t = cancel_current();
    EDGE(ssize_t, t ? rw_cancel(t, out, fd, iov, iovcnt, off, pos, false, call)
                    : rw_plain(out, fd, iov, iovcnt, off, pos));
}

ssize_t cancel_readv(int fd, const struct iovec *iov, int iovcnt)
{
    return rw_edge(false, fd, iov, iovcnt, 0, false, "readv");
}

ssize_t cancel_writev(int fd, const struct iovec *iov, int iovcnt)
{
    return rw_edge(true, fd, iov, iovcnt, 0, false, "writev");
}

ssize_t cancel_pread(int fd, void *buf, size_t n, off_t offset)
{
    struct iovec v = { .iov_base = buf, .iov_len = n };
    return rw_edge(false, fd, &v, 1, offset, true, "pread");
}

ssize_t cancel_pwrite(int fd, const void *buf, size_t n, off_t offset)
{
    struct iovec v = { .iov_base = (void *)buf, .iov_len = n };
    return rw_edge(true, fd, &v, 1, offset, true, "pwrite");
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
static ssize_t recv_t(cancel_token_t *t, int fd, void *buf, size_t n, int flags,
                      struct sockaddr *addr, socklen_t *addrlen)
{
    size_t got = 0;
    bool waitall = (flags & MSG_WAITALL) && !(flags & MSG_DONTWAIT);
    const char *call = addr ? "recvfrom" : "recv";
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
        if ((err = -socket_retry(t, fd, flags, errno, POLLIN, call)) != 0)
            break;
    }
    return got > 0 ? (ssize_t)got : -err;
}

ssize_t cancel_recv(int fd, void *buf, size_t n, int flags)
{
    return cancel_recvfrom(fd, buf, n, flags, NULL, NULL);
}

ssize_t cancel_recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *addr,
                        socklen_t *addrlen)
{
    cancel_token_t *t = cancel_current();
    EDGE(ssize_t, t ? recv_t(t, fd, buf, n, flags, addr, addrlen)
                    : CANCEL_PLAIN(ssize_t, recvfrom(fd, buf, n, flags, addr, addrlen)));
}

static ssize_t recvmsg_t(cancel_token_t *t, int fd, struct msghdr *msg, int flags)
{
    for (;;) {
        int err = cancelled(t);
        if (err)
            return -err;
        ssize_t r = recvmsg(fd, msg, flags | MSG_DONTWAIT);
        if (r >= 0)
            return r;
        if ((err = socket_retry(t, fd, flags, errno, POLLIN, "recvmsg")) != 0)
            return err;
    }
}

ssize_t cancel_recvmsg(int fd, struct msghdr *msg, int flags)
{
    cancel_token_t *t = cancel_current();
    EDGE(ssize_t, t ? recvmsg_t(t, fd, msg, flags)
                    : CANCEL_PLAIN(ssize_t, recvmsg(fd, msg, flags)));
}

/*
 * sendmsg until every byte is out (stream sockets may take part of it),
 * T fires (the count sent is returned when there is one) or an error.
 * Ancillary data goes with the first part only.
 */
static ssize_t send_t(cancel_token_t *t, int fd, const struct msghdr *msg, int flags,
                      const char *call)
{
    int err = cancelled(t);
    if (err)
        return -err;
    size_t want;
    if (!iov_total(msg->msg_iov, (int)msg->msg_iovlen, &want))
        return -EINVAL;
    /* Fast path: all of it fits at once. */
    ssize_t r = sendmsg(fd, msg, flags | MSG_DONTWAIT);
    if (r >= 0 && ((size_t)r == want || (flags & MSG_DONTWAIT)))
        return r;
    if (r < 0 && errno != EAGAIN && errno != EINTR)
        return -errno;
    struct window w;
    if (!window_init(&w, (int)msg->msg_iovlen))
        return -ENOMEM;
    struct msghdr m = *msg;
    size_t done = r > 0 ? (size_t)r : 0;
    err = 0;
    if (done > 0) {
        m.msg_control = NULL;
        m.msg_controllen = 0;
    }
    for (;;) {
        if ((err = -socket_retry(t, fd, flags, EAGAIN, POLLOUT, call)) != 0 ||
            (err = cancelled(t)) != 0)
            break;
        window_set(&w, msg->msg_iov, (int)msg->msg_iovlen, done, SIZE_MAX);
        m.msg_iov = w.v;
        m.msg_iovlen = (size_t)w.n;
        r = sendmsg(fd, &m, flags | MSG_DONTWAIT);
        if (r >= 0) {
            done += (size_t)r;
            m.msg_control = NULL;
            m.msg_controllen = 0;
            if (done >= want || r == 0)
                break;
        } else if (errno != EAGAIN && errno != EINTR) {
            err = errno;
            break;
        }
    }
    window_free(&w);
    return done > 0 || err == 0 ? (ssize_t)done : -err;
}

ssize_t cancel_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    cancel_token_t *t = msg ? cancel_current() : NULL;
    EDGE(ssize_t, t ? send_t(t, fd, msg, flags, "sendmsg")
                    : CANCEL_PLAIN(ssize_t, sendmsg(fd, msg, flags)));
}

ssize_t cancel_sendto(int fd, const void *buf, size_t n, int flags,
                      const struct sockaddr *addr, socklen_t addrlen)
{
    cancel_token_t *t = cancel_current();
    struct iovec v = { .iov_base = (void *)buf, .iov_len = n };
    struct msghdr m = { .msg_name = (void *)addr, .msg_namelen = addr ? addrlen : 0,
                        .msg_iov = &v, .msg_iovlen = 1 };
    EDGE(ssize_t, t ? send_t(t, fd, &m, flags, addr ? "sendto" : "send")
                    : CANCEL_PLAIN(ssize_t, sendto(fd, buf, n, flags, addr, addrlen)));
}

ssize_t cancel_send(int fd, const void *buf, size_t n, int flags)
{
    return cancel_sendto(fd, buf, n, flags, NULL, 0);
}

/* ------------------------------------------------------ accept, connect */

static int accept_t(cancel_token_t *t, int fd, struct sockaddr *addr, socklen_t *addrlen,
                    int flags)
{
    int err = cancelled(t);
    if (err)
        return -err;
    /* We poll before the first accept4, so the errors it would give at
     * once (bad flags, a socket not listening) must be found here, or we
     * would wait for a connection instead. */
    int listening = 0;
    socklen_t len = sizeof listening;
    if (flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC))
        return -EINVAL;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0)
        return -errno; /* EBADF, ENOTSOCK */
    if (!listening)
        return -EINVAL;
    bool nonblocking = fd_nonblocking(fd);
    for (;;) {
        if ((err = cancelled(t)) != 0)
            return -err;
        if (!nonblocking) {
            /* No per-call non-blocking accept: poll, then call. */
            struct pollfd p = { .fd = fd, .events = POLLIN, .revents = 0 };
            int ready = poll(&p, 1, 0);
            if (ready < 0 && errno == EINTR)
                continue;
            if (ready == 0) {
                int rc = wait_one(t, fd, POLLIN, 1, "accept");
                if (rc < 0)
                    return rc;
                continue;
            }
        }
        int r = accept4(fd, addr, addrlen, flags);
        if (r >= 0 || errno != EINTR)
            return r < 0 ? -errno : r;
    }
}

int cancel_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
    cancel_token_t *t = cancel_current();
    EDGE(int, t ? accept_t(t, fd, addr, addrlen, flags)
                : CANCEL_PLAIN(int, accept4(fd, addr, addrlen, flags)));
}

/* The outcome of an asynchronous connect once the socket is writable. */
static int connect_result(int fd)
{
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
        return -errno;
    return -soerr;
}

static int connect_t(cancel_token_t *t, int fd, const struct sockaddr *addr, socklen_t addrlen)
{
    int err = cancelled(t);
    if (err)
        return -err;
    int fl = t ? fcntl(fd, F_GETFL) : -1;
    if (!t || fl < 0 || (fl & O_NONBLOCK)) {
        /* Plain connect.  After EINTR the connection goes on in the
         * background: wait for it instead of calling connect again. */
        if (connect(fd, addr, addrlen) == 0)
            return 0;
        if (errno != EINTR)
            return -errno;
        struct pollfd p = { .fd = fd, .events = POLLOUT, .revents = 0 };
        int rc = cancel__wait_ready(t, &p, 1, NULL, "connect");
        return rc < 0 ? rc : connect_result(fd);
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
            return -errno;
        rc = connect(fd, addr, addrlen);
        saved = errno;
        fcntl(fd, F_SETFL, fl);
        if (rc == 0)
            return 0;
        if (saved != EAGAIN)
            break;
        struct timespec at = cancel__add_ns(cancel__now(), backoff);
        int w = cancel__wait_ready(t, NULL, 0, &at, "connect");
        if (w < 0)
            return w;
        if (backoff < 10 * 1000 * 1000)
            backoff *= 2;
    }
    if (saved != EINPROGRESS && saved != EINTR)
        return -saved;
    rc = wait_one(t, fd, POLLOUT, 1, "connect");
    if (rc < 0)
        return rc; /* cancelled in progress: the caller closes the socket */
    return connect_result(fd);
}

int cancel_connect(int fd, const struct sockaddr *addr, socklen_t addrlen)
{
    EDGE(int, connect_t(cancel_current(), fd, addr, addrlen));
}

/* ------------------------------------------------- poll, epoll, wait_fd */

int cancel__ppoll(cancel_token_t *t, struct pollfd *fds, nfds_t nfds,
                  const struct timespec *rel, const sigset_t *mask)
{
    int err = cancelled(t);
    if (err)
        return -err;
    if (nfds > 0 && !fds)
        return -EFAULT; /* as poll: the array is read before any wait */
    if (rel && rel->tv_sec == 0 && rel->tv_nsec == 0)
        return CANCEL_PLAIN(int, ppoll(fds, nfds, rel, mask));
    if (rel && !cancel__timespec_valid(rel))
        return -EINVAL;
    struct timespec at = { 0, 0 };
    if (rel)
        at = cancel__add_ns(cancel__now(), (int64_t)rel->tv_sec * 1000000000 + rel->tv_nsec);
    return cancel__wait_ready_mask(t, fds, nfds, rel ? &at : NULL, mask, "poll");
}

int cancel_poll(struct pollfd *fds, nfds_t nfds, int timeout_ms)
{
    struct timespec rel = { timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000 };
    EDGE(int, cancel__ppoll(cancel_current(), fds, nfds, timeout_ms >= 0 ? &rel : NULL, NULL));
}

int cancel__epoll_pwait(cancel_token_t *t, int epfd, struct epoll_event *events,
                        int maxevents, int timeout_ms, const sigset_t *mask)
{
    struct timespec at = { 0, 0 };
    if (timeout_ms > 0)
        at = cancel__add_ns(cancel__now(), (int64_t)timeout_ms * 1000000);
    for (;;) {
        int err = cancelled(t);
        if (err)
            return -err;
        int ms = timeout_ms;
        if (t)
            ms = 0;      /* never block inside epoll_wait: it consumes events */
        else if (timeout_ms > 0) {
            int64_t left = cancel__ns_until(&at);
            ms = left <= 0 ? 0 : (int)((left + 999999) / 1000000);
        }
        int r = epoll_pwait(epfd, events, maxevents, ms, mask);
        if (r < 0 && errno == EINTR)
            continue;
        if (r != 0 || timeout_ms == 0 || !t)
            return r < 0 ? -errno : r;
        /* The epoll fd polls readable when events are pending; wait for that
         * without taking them, so a cancel leaves every event queued. */
        struct pollfd p = { .fd = epfd, .events = POLLIN, .revents = 0 };
        int rc = cancel__wait_ready_mask(t, &p, 1, timeout_ms > 0 ? &at : NULL, mask,
                                         "epoll_wait");
        if (rc <= 0)
            return rc;
        if (p.revents & POLLNVAL)
            return -EBADF;
    }
}

int cancel_epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout_ms)
{
    EDGE(int, cancel__epoll_pwait(cancel_current(), epfd, events, maxevents, timeout_ms, NULL));
}

static int wait_fd_t(cancel_token_t *t, int fd, short events)
{
    int err = cancelled(t);
    if (err)
        return -err;
    if (fd < 0)
        return -EBADF; /* poll ignores negative descriptors: it would wait for ever */
    return wait_one(t, fd, events, 0, "wait_fd");
}

int cancel_wait_fd(int fd, short events)
{
    EDGE(int, wait_fd_t(cancel_current(), fd, events));
}

/* ------------------------------------------------------ loop wrappers */

/* Moves all N bytes with cancel_read or cancel_write; see read_full(3). */
static ssize_t loop_all(bool out, int fd, void *buf, size_t n, size_t *done)
{
    size_t moved = 0;
    ssize_t result = 0;
    if (n > SSIZE_MAX) {
        errno = EINVAL;
        result = -1;
    }
    while (result == 0 && moved < n) {
        ssize_t r = out ? cancel_write(fd, (const char *)buf + moved, n - moved)
                        : cancel_read(fd, (char *)buf + moved, n - moved);
        if (r < 0)
            result = -1;
        else if (r == 0 && !out)
            break;      /* end of file */
        else if (r == 0) {
            errno = EIO;    /* a write that takes nothing would loop forever */
            result = -1;
        } else
            moved += (size_t)r;
    }
    if (done)
        *done = moved;
    return result < 0 ? -1 : (ssize_t)moved;
}

ssize_t cancel_read_full(int fd, void *buf, size_t n, size_t *done)
{
    return loop_all(false, fd, buf, n, done);
}

ssize_t cancel_write_all(int fd, const void *buf, size_t n, size_t *done)
{
    return loop_all(true, fd, (void *)buf, n, done);
}

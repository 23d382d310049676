/*
 * interpose.c - libcancel-interpose.so: the blocking libc calls of code
 * that knows nothing of libcancel honour the calling thread's current
 * token (SPEC "Unmodified code"; cancel_interpose(7)).
 *
 * Each exported libc name asks libcancel, through its one private table
 * (cancel__interpose_api, interpose.h), for the token to honour: NULL when
 * the thread has none, is shielded, or is inside libcancel's own wrappers
 * (the re-entry guard).  With NULL the call goes straight to the next
 * definition of the name (libc's, or a sanitizer's interceptor's), found
 * lazily with dlsym(RTLD_NEXT) so that a thread started by another
 * library's constructor, before ours ran, is served too: same result,
 * same errno, EINTR included.  With a token the call goes through the
 * same code as the cancel_* wrapper of that name.
 *
 * A vfork child shares its parent's memory, thread-local storage
 * included, so it would see the parent's current token: a token is
 * honoured only in the process that resolved our pid (refreshed in
 * fork children by an atfork handler), which costs one getpid() on the
 * token path only.
 *
 * Condition variables and semaphores (sem_wait, sem_timedwait,
 * sem_clockwait) only with CANCEL_INTERPOSE=sync: their callers often
 * ignore the result and would spin.  The semaphore names stay unversioned:
 * glibc has one semaphore ABI on 64-bit targets (sem_wait@GLIBC_2.2.5 and
 * sem_wait@@GLIBC_2.34 are the same code).  The condition
 * variable names are bound to glibc's current ABI by the version script
 * (interpose.map), so that callers linked against the old ABI
 * (pthread_cond_wait@GLIBC_2.2.5) go on using glibc's compatibility code
 * and never reach us; the next definition is looked up with dlvsym for
 * the same version.  libcancel's own condition variable waits (scope
 * joins) are recognised by their return address and passed through.
 */
#include "interpose.h"

#include <dlfcn.h>
#include <link.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>

#define EXPORT __attribute__((visibility("default")))

extern void __chk_fail(void) __attribute__((noreturn));
/* glibc's fortified entry points (no header declares them). */
ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen);
ssize_t __pread_chk(int fd, void *buf, size_t n, off_t off, size_t buflen);
ssize_t __pread64_chk(int fd, void *buf, size_t n, off_t off, size_t buflen);
ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags);
ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags,
                       struct sockaddr *addr, socklen_t *addrlen);
int __poll_chk(struct pollfd *fds, nfds_t n, int ms, size_t fdslen);
int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *rel, const sigset_t *mask,
                size_t fdslen);

/* ------------------------------------------------------ the next definition */

static void *next_sym(const char *name, const char *version)
{
    void *p = version ? dlvsym(RTLD_NEXT, name, version) : dlsym(RTLD_NEXT, name);
    if (!p)
        p = dlsym(RTLD_NEXT, name);
    if (!p)
        abort(); /* no libc definition: nothing sensible to call */
    return p;
}

/* REAL(name): the next definition of NAME, resolved once (a race resolves
 * the same pointer twice: harmless).  Relaxed: the pointer is the whole
 * message; the code it names was mapped before we were. */
#define NEXT(ret, name, version, ...)                                      \
    static _Atomic(ret(*)(__VA_ARGS__)) next_##name;                       \
    static inline ret (*real_##name(void))(__VA_ARGS__)                    \
    {                                                                      \
        ret (*p)(__VA_ARGS__) =                                            \
            atomic_load_explicit(&next_##name, memory_order_relaxed);      \
        if (!p) {                                                          \
            p = (ret(*)(__VA_ARGS__))next_sym(#name, version);             \
            atomic_store_explicit(&next_##name, p, memory_order_relaxed);  \
        }                                                                  \
        return p;                                                          \
    }

NEXT(ssize_t, read, NULL, int, void *, size_t)
NEXT(ssize_t, readv, NULL, int, const struct iovec *, int)
NEXT(ssize_t, pread, NULL, int, void *, size_t, off_t)
NEXT(ssize_t, pread64, NULL, int, void *, size_t, off_t)
NEXT(ssize_t, preadv, NULL, int, const struct iovec *, int, off_t)
NEXT(ssize_t, preadv64, NULL, int, const struct iovec *, int, off_t)
NEXT(ssize_t, write, NULL, int, const void *, size_t)
NEXT(ssize_t, writev, NULL, int, const struct iovec *, int)
NEXT(ssize_t, pwrite, NULL, int, const void *, size_t, off_t)
NEXT(ssize_t, pwrite64, NULL, int, const void *, size_t, off_t)
NEXT(ssize_t, pwritev, NULL, int, const struct iovec *, int, off_t)
NEXT(ssize_t, pwritev64, NULL, int, const struct iovec *, int, off_t)
NEXT(ssize_t, recv, NULL, int, void *, size_t, int)
NEXT(ssize_t, recvfrom, NULL, int, void *, size_t, int, struct sockaddr *, socklen_t *)
NEXT(ssize_t, recvmsg, NULL, int, struct msghdr *, int)
NEXT(ssize_t, send, NULL, int, const void *, size_t, int)
NEXT(ssize_t, sendto, NULL, int, const void *, size_t, int, const struct sockaddr *, socklen_t)
NEXT(ssize_t, sendmsg, NULL, int, const struct msghdr *, int)
NEXT(int, accept, NULL, int, struct sockaddr *, socklen_t *)
NEXT(int, accept4, NULL, int, struct sockaddr *, socklen_t *, int)
NEXT(int, connect, NULL, int, const struct sockaddr *, socklen_t)
NEXT(int, poll, NULL, struct pollfd *, nfds_t, int)
NEXT(int, ppoll, NULL, struct pollfd *, nfds_t, const struct timespec *, const sigset_t *)
NEXT(int, select, NULL, int, fd_set *, fd_set *, fd_set *, struct timeval *)
NEXT(int, pselect, NULL, int, fd_set *, fd_set *, fd_set *, const struct timespec *,
     const sigset_t *)
NEXT(int, epoll_wait, NULL, int, struct epoll_event *, int, int)
NEXT(int, epoll_pwait, NULL, int, struct epoll_event *, int, int, const sigset_t *)
NEXT(int, nanosleep, NULL, const struct timespec *, struct timespec *)
NEXT(int, clock_nanosleep, NULL, clockid_t, int, const struct timespec *, struct timespec *)
NEXT(unsigned, sleep, NULL, unsigned)
NEXT(int, usleep, NULL, useconds_t)
NEXT(pid_t, wait, NULL, int *)
NEXT(pid_t, waitpid, NULL, pid_t, int *, int)
NEXT(int, getaddrinfo, NULL, const char *, const char *, const struct addrinfo *,
     struct addrinfo **)
NEXT(int, getnameinfo, NULL, const struct sockaddr *, socklen_t, char *, socklen_t, char *,
     socklen_t, int)
NEXT(ssize_t, __read_chk, NULL, int, void *, size_t, size_t)
NEXT(ssize_t, __pread_chk, NULL, int, void *, size_t, off_t, size_t)
NEXT(ssize_t, __pread64_chk, NULL, int, void *, size_t, off_t, size_t)
NEXT(ssize_t, __recv_chk, NULL, int, void *, size_t, size_t, int)
NEXT(ssize_t, __recvfrom_chk, NULL, int, void *, size_t, size_t, int, struct sockaddr *,
     socklen_t *)
NEXT(int, __poll_chk, NULL, struct pollfd *, nfds_t, int, size_t)
NEXT(int, __ppoll_chk, NULL, struct pollfd *, nfds_t, const struct timespec *,
     const sigset_t *, size_t)
NEXT(int, pthread_cond_wait, "GLIBC_2.3.2", pthread_cond_t *, pthread_mutex_t *)
NEXT(int, pthread_cond_timedwait, "GLIBC_2.3.2", pthread_cond_t *, pthread_mutex_t *,
     const struct timespec *)
NEXT(int, pthread_cond_clockwait, NULL, pthread_cond_t *, pthread_mutex_t *, clockid_t,
     const struct timespec *)
NEXT(int, sem_wait, NULL, sem_t *)
NEXT(int, sem_timedwait, NULL, sem_t *, const struct timespec *)
#ifdef HAVE_SEM_CLOCKWAIT
NEXT(int, sem_clockwait, NULL, sem_t *, clockid_t, const struct timespec *)
#endif

/* ----------------------------------------------------- which token, if any */

static _Atomic pid_t self_pid;
static const struct cancel_interpose_api *api_get(void);

/* Relaxed: stored at load time and in a fork child before it has a second
 * thread; pthread_create orders it for later threads. */
static void atfork_child(void)
{
    atomic_store_explicit(&self_pid, getpid(), memory_order_relaxed);
}

__attribute__((constructor)) static void interpose_init(void)
{
    atomic_store_explicit(&self_pid, getpid(), memory_order_relaxed);
    pthread_atfork(NULL, NULL, atfork_child);
    (void)api_get();
}

/*
 * Interposed calls made under an already cancelled token, process-wide:
 * the acceptance tests read it (dlsym "cancel__interpose_calls") to show
 * that a library stops after a cancel instead of spinning on its error.
 * Counted on that path only, so the no-token path pays nothing.
 */
static _Atomic unsigned long calls_cancelled;

EXPORT unsigned long cancel__interpose_calls(void);
EXPORT unsigned long cancel__interpose_calls(void)
{
    /* Relaxed, like the increment: a statistic read only by tests. */
    return atomic_load_explicit(&calls_cancelled, memory_order_relaxed);
}

/* libcancel's table (interpose.h), fetched once. */
static const struct cancel_interpose_api *api_table;

static const struct cancel_interpose_api *api_get(void)
{
    /* Relaxed: the table is a constant of libcancel's image, complete before
     * any thread could load the pointer. */
    const struct cancel_interpose_api *a = __atomic_load_n(&api_table, __ATOMIC_RELAXED);
    if (__builtin_expect(!a, 0)) {
        a = cancel__interpose_api();
        if (a->version != CANCEL_INTERPOSE_API_VERSION)
            abort(); /* a libcancel of another layout: nothing safe to call */
        __atomic_store_n(&api_table, a, __ATOMIC_RELAXED);
    }
    return a;
}
#define API (*api_get())

/* The token an interposed call honours, or NULL: the plain libc call. */
static inline cancel_token_t *token(void)
{
    cancel_token_t *t = API.token();
    if (__builtin_expect(t == NULL, 1))
        return NULL;
    /* A vfork child runs in its parent's memory and sees its token.
     * Relaxed: see atfork_child. */
    pid_t self = atomic_load_explicit(&self_pid, memory_order_relaxed);
    if (self != 0 && getpid() != self)
        return NULL;
    if (cancel_token_is_cancelled(t)) /* relaxed: a statistic for tests */
        atomic_fetch_add_explicit(&calls_cancelled, 1, memory_order_relaxed);
    return t;
}

/* -errno to -1 with errno. */
#define RET(type, expr) return (type)cancel__ret((long)(expr))

/* ------------------------------------------------------- read / write */

EXPORT ssize_t read(int fd, void *buf, size_t n)
{
    if (!token())
        return real_read()(fd, buf, n);
    return cancel_read(fd, buf, n);
}

EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
    if (!token())
        return real___read_chk()(fd, buf, n, buflen);
    if (n > buflen)
        __chk_fail();
    return cancel_read(fd, buf, n);
}

EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
    if (!token())
        return real_write()(fd, buf, n);
    return cancel_write(fd, buf, n);
}

EXPORT ssize_t readv(int fd, const struct iovec *iov, int iovcnt)
{
    if (!token())
        return real_readv()(fd, iov, iovcnt);
    return cancel_readv(fd, iov, iovcnt);
}

EXPORT ssize_t writev(int fd, const struct iovec *iov, int iovcnt)
{
    if (!token())
        return real_writev()(fd, iov, iovcnt);
    return cancel_writev(fd, iov, iovcnt);
}

#define POSITIONED(name, out, ret_call, ...)                               \
    EXPORT ssize_t name(int fd, __VA_ARGS__, off_t off)                    \
    {                                                                      \
        cancel_token_t *t = token();                                       \
        if (!t)                                                            \
            return ret_call;                                               \
        RET(ssize_t, API.rw(t, out, fd, IOV, IOVCNT, off, true)); \
    }

#define IOV (&(struct iovec){ .iov_base = (void *)buf, .iov_len = n })
#define IOVCNT 1
POSITIONED(pread, false, real_pread()(fd, buf, n, off), void *buf, size_t n)
POSITIONED(pread64, false, real_pread64()(fd, buf, n, off), void *buf, size_t n)
POSITIONED(pwrite, true, real_pwrite()(fd, buf, n, off), const void *buf, size_t n)
POSITIONED(pwrite64, true, real_pwrite64()(fd, buf, n, off), const void *buf, size_t n)
#undef IOV
#undef IOVCNT
#define IOV iov
#define IOVCNT iovcnt
POSITIONED(preadv, false, real_preadv()(fd, iov, iovcnt, off), const struct iovec *iov, int iovcnt)
POSITIONED(preadv64, false, real_preadv64()(fd, iov, iovcnt, off), const struct iovec *iov,
           int iovcnt)
POSITIONED(pwritev, true, real_pwritev()(fd, iov, iovcnt, off), const struct iovec *iov, int iovcnt)
POSITIONED(pwritev64, true, real_pwritev64()(fd, iov, iovcnt, off), const struct iovec *iov,
           int iovcnt)
#undef IOV
#undef IOVCNT

static ssize_t pread_chk(int fd, void *buf, size_t n, off_t off, size_t buflen, bool is64)
{
    cancel_token_t *t = token();
    if (!t)
        return is64 ? real___pread64_chk()(fd, buf, n, off, buflen)
                    : real___pread_chk()(fd, buf, n, off, buflen);
    if (n > buflen)
        __chk_fail();
    struct iovec v = { .iov_base = buf, .iov_len = n };
    RET(ssize_t, API.rw(t, false, fd, &v, 1, off, true));
}

EXPORT ssize_t __pread_chk(int fd, void *buf, size_t n, off_t off, size_t buflen)
{
    return pread_chk(fd, buf, n, off, buflen, false);
}

EXPORT ssize_t __pread64_chk(int fd, void *buf, size_t n, off_t off, size_t buflen)
{
    return pread_chk(fd, buf, n, off, buflen, true);
}

/* ------------------------------------------------------------- sockets */

EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags)
{
    if (!token())
        return real_recv()(fd, buf, n, flags);
    return cancel_recv(fd, buf, n, flags);
}

EXPORT ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags)
{
    if (!token())
        return real___recv_chk()(fd, buf, n, buflen, flags);
    if (n > buflen)
        __chk_fail();
    return cancel_recv(fd, buf, n, flags);
}

EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *addr,
                        socklen_t *addrlen)
{
    if (!token())
        return real_recvfrom()(fd, buf, n, flags, addr, addrlen);
    return cancel_recvfrom(fd, buf, n, flags, addr, addrlen);
}

EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags,
                              struct sockaddr *addr, socklen_t *addrlen)
{
    if (!token())
        return real___recvfrom_chk()(fd, buf, n, buflen, flags, addr, addrlen);
    if (n > buflen)
        __chk_fail();
    return cancel_recvfrom(fd, buf, n, flags, addr, addrlen);
}

EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    if (!token())
        return real_recvmsg()(fd, msg, flags);
    return cancel_recvmsg(fd, msg, flags);
}

EXPORT ssize_t send(int fd, const void *buf, size_t n, int flags)
{
    if (!token())
        return real_send()(fd, buf, n, flags);
    return cancel_send(fd, buf, n, flags);
}

EXPORT ssize_t sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *addr,
                      socklen_t addrlen)
{
    if (!token())
        return real_sendto()(fd, buf, n, flags, addr, addrlen);
    return cancel_sendto(fd, buf, n, flags, addr, addrlen);
}

EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    if (!token())
        return real_sendmsg()(fd, msg, flags);
    return cancel_sendmsg(fd, msg, flags);
}

EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
    if (!token())
        return real_accept()(fd, addr, addrlen);
    return cancel_accept(fd, addr, addrlen, 0);
}

EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
    if (!token())
        return real_accept4()(fd, addr, addrlen, flags);
    return cancel_accept(fd, addr, addrlen, flags);
}

EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t addrlen)
{
    if (!token())
        return real_connect()(fd, addr, addrlen);
    return cancel_connect(fd, addr, addrlen);
}

/* ------------------------------------------------- poll, select, epoll */

static struct timespec ms_to_ts(int ms)
{
    return (struct timespec){ ms / 1000, (long)(ms % 1000) * 1000000 };
}

EXPORT int poll(struct pollfd *fds, nfds_t n, int ms)
{
    cancel_token_t *t = token();
    if (!t)
        return real_poll()(fds, n, ms);
    struct timespec rel = ms_to_ts(ms);
    RET(int, API.ppoll(t, fds, n, ms >= 0 ? &rel : NULL, NULL));
}

EXPORT int __poll_chk(struct pollfd *fds, nfds_t n, int ms, size_t fdslen)
{
    cancel_token_t *t = token();
    if (!t)
        return real___poll_chk()(fds, n, ms, fdslen);
    if (fdslen / sizeof *fds < n)
        __chk_fail();
    struct timespec rel = ms_to_ts(ms);
    RET(int, API.ppoll(t, fds, n, ms >= 0 ? &rel : NULL, NULL));
}

EXPORT int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *rel, const sigset_t *mask)
{
    cancel_token_t *t = token();
    if (!t)
        return real_ppoll()(fds, n, rel, mask);
    RET(int, API.ppoll(t, fds, n, rel, mask));
}

EXPORT int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *rel,
                       const sigset_t *mask, size_t fdslen)
{
    cancel_token_t *t = token();
    if (!t)
        return real___ppoll_chk()(fds, n, rel, mask, fdslen);
    if (fdslen / sizeof *fds < n)
        __chk_fail();
    RET(int, API.ppoll(t, fds, n, rel, mask));
}

/*
 * select and pselect under T: the sets become a pollfd array (at most
 * FD_SETSIZE entries), waited on as poll, and the ready bits are written
 * back.  Linux's select also writes the time left into *TV.
 */
static int select_t(cancel_token_t *t, int nfds, fd_set *rd, fd_set *wr, fd_set *ex,
                    const struct timespec *rel, const sigset_t *mask, struct timeval *tv)
{
    if (nfds < 0 || nfds > FD_SETSIZE)
        return -EINVAL;
    struct pollfd p[FD_SETSIZE];
    nfds_t n = 0;
    for (int fd = 0; fd < nfds; fd++) {
        short ev = (short)((rd && FD_ISSET(fd, rd) ? POLLIN : 0) |
                           (wr && FD_ISSET(fd, wr) ? POLLOUT : 0) |
                           (ex && FD_ISSET(fd, ex) ? POLLPRI : 0));
        if (ev)
            p[n++] = (struct pollfd){ .fd = fd, .events = ev, .revents = 0 };
    }
    struct timespec start = cancel__now();
    int r = API.ppoll(t, p, n, rel, mask);
    if (tv && rel) {
        int64_t left = (int64_t)rel->tv_sec * 1000000000 + rel->tv_nsec -
                       (-cancel__ns_until(&start));
        if (left < 0)
            left = 0;
        tv->tv_sec = (time_t)(left / 1000000000);
        tv->tv_usec = (suseconds_t)(left % 1000000000 / 1000);
    }
    if (r < 0)
        return r;
    for (nfds_t i = 0; i < n; i++)
        if (p[i].revents & POLLNVAL)
            return -EBADF;
    int count = 0;
    for (nfds_t i = 0, j = 0; (int)j < nfds; j++) {
        int fd = (int)j;
        bool here = i < n && p[i].fd == fd;
        short rev = here ? p[i].revents : 0;
        if (here)
            i++;
        if (rd && FD_ISSET(fd, rd)) {
            if (rev & (POLLIN | POLLHUP | POLLERR))
                count++;
            else
                FD_CLR(fd, rd);
        }
        if (wr && FD_ISSET(fd, wr)) {
            if (rev & (POLLOUT | POLLERR))
                count++;
            else
                FD_CLR(fd, wr);
        }
        if (ex && FD_ISSET(fd, ex)) {
            if (rev & POLLPRI)
                count++;
            else
                FD_CLR(fd, ex);
        }
    }
    return count;
}

EXPORT int select(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, struct timeval *tv)
{
    cancel_token_t *t = token();
    if (!t)
        return real_select()(nfds, rd, wr, ex, tv);
    if (tv && (tv->tv_sec < 0 || tv->tv_usec < 0 || tv->tv_usec >= 1000000)) {
        errno = EINVAL;
        return -1;
    }
    struct timespec rel = { tv ? tv->tv_sec : 0, tv ? tv->tv_usec * 1000 : 0 };
    RET(int, select_t(t, nfds, rd, wr, ex, tv ? &rel : NULL, NULL, tv));
}

EXPORT int pselect(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, const struct timespec *ts,
                   const sigset_t *mask)
{
    cancel_token_t *t = token();
    if (!t)
        return real_pselect()(nfds, rd, wr, ex, ts, mask);
    RET(int, select_t(t, nfds, rd, wr, ex, ts, mask, NULL));
}

EXPORT int epoll_wait(int epfd, struct epoll_event *ev, int max, int ms)
{
    cancel_token_t *t = token();
    if (!t)
        return real_epoll_wait()(epfd, ev, max, ms);
    RET(int, API.epoll_pwait(t, epfd, ev, max, ms, NULL));
}

EXPORT int epoll_pwait(int epfd, struct epoll_event *ev, int max, int ms, const sigset_t *mask)
{
    cancel_token_t *t = token();
    if (!t)
        return real_epoll_pwait()(epfd, ev, max, ms, mask);
    RET(int, API.epoll_pwait(t, epfd, ev, max, ms, mask));
}

/* --------------------------------------------------------------- sleeps */

/* Sleeps until the monotonic AT under T; on a cancel, *REM (when not NULL)
 * gets the time left.  0 or -errno. */
static int sleep_t(cancel_token_t *t, struct timespec at, struct timespec *rem)
{
    int rc = API.sleep_until(t, &at);
    if (rc < 0 && rem) {
        int64_t left = cancel__ns_until(&at);
        if (left < 0)
            left = 0;
        rem->tv_sec = (time_t)(left / 1000000000);
        rem->tv_nsec = (long)(left % 1000000000);
    }
    return rc;
}

static struct timespec after(int64_t ns)
{
    return cancel__add_ns(cancel__now(), ns);
}

EXPORT int nanosleep(const struct timespec *req, struct timespec *rem)
{
    cancel_token_t *t = token();
    if (!t || !req)
        return real_nanosleep()(req, rem);
    if (!cancel__timespec_valid(req)) {
        errno = EINVAL;
        return -1;
    }
    RET(int, sleep_t(t, after((int64_t)req->tv_sec * 1000000000 + req->tv_nsec), rem));
}

EXPORT int clock_nanosleep(clockid_t clock, int flags, const struct timespec *req,
                           struct timespec *rem)
{
    cancel_token_t *t = token();
    if (!t || !req || (clock != CLOCK_MONOTONIC && clock != CLOCK_REALTIME &&
                       clock != CLOCK_BOOTTIME))
        return real_clock_nanosleep()(clock, flags, req, rem);
    if (!cancel__timespec_valid(req))
        return EINVAL;
    int64_t ns = (int64_t)req->tv_sec * 1000000000 + req->tv_nsec;
    if (flags & TIMER_ABSTIME) {
        struct timespec now;
        clock_gettime(clock, &now);
        ns -= (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
        rem = NULL; /* an absolute sleep reports no remainder */
    }
    int rc = sleep_t(t, after(ns > 0 ? ns : 0), rem);
    return rc < 0 ? -rc : 0;
}

EXPORT unsigned sleep(unsigned seconds)
{
    cancel_token_t *t = token();
    if (!t)
        return real_sleep()(seconds);
    struct timespec rem = { 0, 0 };
    int rc = sleep_t(t, after((int64_t)seconds * 1000000000), &rem);
    if (rc < 0) {
        errno = -rc;
        return (unsigned)rem.tv_sec + (rem.tv_nsec > 0);
    }
    return 0;
}

EXPORT int usleep(useconds_t us)
{
    cancel_token_t *t = token();
    if (!t)
        return real_usleep()(us);
    RET(int, sleep_t(t, after((int64_t)us * 1000), NULL));
}

/* ------------------------------------------------------------- children */

EXPORT pid_t wait(int *status)
{
    if (!token())
        return real_wait()(status);
    return cancel_waitpid(-1, status, 0);
}

EXPORT pid_t waitpid(pid_t pid, int *status, int options)
{
    if (!token())
        return real_waitpid()(pid, status, options);
    return cancel_waitpid(pid, status, options);
}

/* ------------------------------------------------------- name resolution */

EXPORT int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                       struct addrinfo **res)
{
    if (!token())
        return real_getaddrinfo()(node, service, hints, res);
    return cancel_getaddrinfo(node, service, hints, res);
}

EXPORT int getnameinfo(const struct sockaddr *sa, socklen_t salen, char *host,
                       socklen_t hostlen, char *serv, socklen_t servlen, int flags)
{
    cancel_token_t *t = token();
    if (!t)
        return real_getnameinfo()(sa, salen, host, hostlen, serv, servlen, flags);
    return API.getnameinfo(t, sa, salen, host, hostlen, serv, servlen,
                                             (int)flags);
}

/* ------------------------------------- condition variables and semaphores */

/* CANCEL_INTERPOSE contains "sync": 1; not: 0; not read yet: -1. */
static _Atomic int sync_mode = -1;

static bool sync_enabled(void)
{
    /* Relaxed: every thread computes the same value. */
    int m = atomic_load_explicit(&sync_mode, memory_order_relaxed);
    if (m < 0) {
        const char *env = getenv("CANCEL_INTERPOSE");
        m = env && strstr(env, "sync") != NULL;
        atomic_store_explicit(&sync_mode, m, memory_order_relaxed);
    }
    return m;
}

/* libcancel's text, to recognise its own condition variable waits. */
static uintptr_t lib_lo, lib_hi;
static pthread_once_t lib_once = PTHREAD_ONCE_INIT;

static int find_lib(struct dl_phdr_info *info, size_t size, void *base)
{
    (void)size;
    if ((void *)info->dlpi_addr != base)
        return 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
            continue;
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        if (!lib_lo || lo < lib_lo)
            lib_lo = lo;
        if (lo + ph->p_memsz > lib_hi)
            lib_hi = lo + ph->p_memsz;
    }
    return 1;
}

static void lib_range(void)
{
    Dl_info info;
    if (dladdr((void *)cancel_current, &info) && info.dli_fbase)
        dl_iterate_phdr(find_lib, info.dli_fbase);
}

static bool from_libcancel(void *ret)
{
    pthread_once(&lib_once, lib_range);
    return (uintptr_t)ret >= lib_lo && (uintptr_t)ret < lib_hi;
}

/* The token a condition variable or semaphore wait honours, or NULL. */
static cancel_token_t *sync_token(void *ret)
{
    cancel_token_t *t = token();
    if (!t || !sync_enabled() || from_libcancel(ret))
        return NULL;
    return t;
}

EXPORT int pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m)
{
    cancel_token_t *t = sync_token(__builtin_return_address(0));
    if (!t)
        return real_pthread_cond_wait()(c, m);
    return API.cond_wait(t, c, m, NULL, (clockid_t)-1);
}

EXPORT int pthread_cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m,
                                  const struct timespec *at)
{
    cancel_token_t *t = sync_token(__builtin_return_address(0));
    if (!t)
        return real_pthread_cond_timedwait()(c, m, at);
    return API.cond_wait(t, c, m, at, (clockid_t)-1);
}

EXPORT int pthread_cond_clockwait(pthread_cond_t *c, pthread_mutex_t *m, clockid_t clock,
                                  const struct timespec *at)
{
    cancel_token_t *t = sync_token(__builtin_return_address(0));
    if (!t)
        return real_pthread_cond_clockwait()(c, m, clock, at);
    return API.cond_wait(t, c, m, at, clock);
}

EXPORT int sem_wait(sem_t *sem)
{
    cancel_token_t *t = sync_token(__builtin_return_address(0));
    if (!t)
        return real_sem_wait()(sem);
    return cancel_sem_wait(sem);
}

/* A NULL ABSTIME would crash glibc; here it is a caller mistake that
 * fails (bad input never crashes), not an untimed wait.  glibc declares
 * it nonnull: the empty asm keeps the compiler from assuming so. */
static inline const struct timespec *maybe_null(const struct timespec *p)
{
    __asm__("" : "+r"(p));
    return p;
}

EXPORT int sem_timedwait(sem_t *sem, const struct timespec *at)
{
    cancel_token_t *t = sync_token(__builtin_return_address(0));
    if (!t)
        return real_sem_timedwait()(sem, at);
    at = maybe_null(at);
    RET(int, at ? API.sem_wait(t, sem, at, CLOCK_REALTIME) : -EINVAL);
}

/* glibc 2.30 and later. */
#ifdef HAVE_SEM_CLOCKWAIT
EXPORT int sem_clockwait(sem_t *sem, clockid_t clock, const struct timespec *at)
{
    cancel_token_t *t = sync_token(__builtin_return_address(0));
    if (!t)
        return real_sem_clockwait()(sem, clock, at);
    at = maybe_null(at);
    RET(int, at ? API.sem_wait(t, sem, at, clock) : -EINVAL);
}
#endif

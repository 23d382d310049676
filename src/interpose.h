/*
 * interpose.h - what the wrapper layer shares with its two callers: the
 * public cancel_* functions and libcancel-interpose.so (interpose.c).
 *
 * Conventions.  Inside the layer every function returns a result >= 0 or
 * -errno; the public edge converts once (cancel__ret), as musl's
 * syscall_ret does.  Each public wrapper runs between IO_BEGIN and IO_END,
 * which count the thread's depth inside the library: while it is non-zero,
 * the interposer passes every libc call it sees straight to libc, so the
 * library's own ppoll/read/write/recvfrom never re-enter it.  The wake
 * fds are written and read with eventfd_write/eventfd_read, which glibc
 * implements with its internal __write/__read: those never reach an
 * interposer, even from a cancelling thread that is outside any wrapper.
 */
#ifndef CANCEL_INTERPOSE_H
#define CANCEL_INTERPOSE_H

#include "internal.h"

#include <netdb.h>
#include <signal.h>

/* Depth of the calling thread inside the library's wrappers (io.c). */
extern __thread unsigned cancel__io_depth __attribute__((tls_model("initial-exec")));

#define IO_BEGIN() (cancel__io_depth++)
#define IO_END() (cancel__io_depth--)

/* -errno to the read convention: -1 with errno. */
static inline long cancel__ret(long r)
{
    if (r < 0) {
        errno = (int)-r;
        return -1;
    }
    return r;
}

/* The plain call with EINTR retried, as -errno: the one no-token path. */
#define CANCEL_PLAIN(type, call)                                           \
    ({                                                                     \
        type p_;                                                           \
        do                                                                 \
            p_ = (call);                                                   \
        while (p_ < 0 && errno == EINTR);                                  \
        p_ < 0 ? (type)-errno : p_;                                        \
    })

/* The cancellation error of T, or 0 (one acquire load). */
static inline int cancel__cancelled(cancel_token_t *t)
{
    int reason = cancel_token_reason(t);
    return reason ? cancel__reason_errno(reason) : 0;
}

/* wake.c: cancel__wait_ready with a signal mask for ppoll (NULL: none). */
int cancel__wait_ready_mask(cancel_token_t *t, struct pollfd *fds, nfds_t n,
                            const struct timespec *deadline, const sigset_t *mask,
                            const char *call);

/*
 * The entry points libcancel-interpose.so needs beyond the public API.
 * libcancel exports one function that returns this table
 * (cancel__interpose_api) and nothing else that is not public; VERSION
 * changes whenever the layout does.
 * Every function returns >= 0 or -errno and runs inside IO_BEGIN/IO_END.
 */
#define CANCEL_INTERPOSE_API_VERSION 2
struct cancel_interpose_api {
    int version;
    /* The current token when an interposed call should honour it: not
     * inside the library, not shielded; NULL otherwise. */
    cancel_token_t *(*token)(void);
    int (*ppoll)(cancel_token_t *t, struct pollfd *fds, nfds_t n, const struct timespec *rel,
                 const sigset_t *mask);
    int (*epoll_pwait)(cancel_token_t *t, int epfd, struct epoll_event *ev, int max, int ms,
                       const sigset_t *mask);
    int (*sleep_until)(cancel_token_t *t, const struct timespec *at);
    int (*cond_wait)(cancel_token_t *t, pthread_cond_t *c, pthread_mutex_t *m,
                     const struct timespec *abstime, clockid_t clock);
    ssize_t (*rw)(cancel_token_t *t, bool out, int fd, const struct iovec *iov, int iovcnt,
                  off_t off, bool pos);
    int (*getnameinfo)(cancel_token_t *t, const struct sockaddr *sa, socklen_t salen,
                       char *host, socklen_t hostlen, char *serv, socklen_t servlen,
                       int flags);
    /* sem_timedwait (CLOCK_REALTIME) and sem_clockwait: cancel__sem_wait. */
    int (*sem_wait)(cancel_token_t *t, sem_t *sem, const struct timespec *abstime,
                    clockid_t clock);
};
const struct cancel_interpose_api *cancel__interpose_api(void);

/* sync.c: pthread_cond_wait (ABSTIME NULL), or the timed wait on CLOCK (-1:
 * the condition variable's own clock, as pthread_cond_timedwait) under T,
 * pthread style. */
int cancel__cond_wait(cancel_token_t *t, pthread_cond_t *cond, pthread_mutex_t *mutex,
                      const struct timespec *abstime, clockid_t clock);
/* sync.c: sem_wait (ABSTIME NULL), or the wait until ABSTIME on CLOCK
 * (CLOCK_REALTIME or CLOCK_MONOTONIC; EINVAL otherwise, or for an ABSTIME
 * with tv_nsec out of range, as glibc) under T: 0 or -errno, ETIMEDOUT
 * when ABSTIME passed.  T NULL: the plain call, EINTR retried. */
int cancel__sem_wait(cancel_token_t *t, sem_t *sem, const struct timespec *abstime,
                     clockid_t clock);
/* io.c: the read/write family under T (-errno; runs inside IO_BEGIN). */
ssize_t cancel__rw(cancel_token_t *t, bool out, int fd, const struct iovec *iov, int iovcnt,
                   off_t off, bool pos);
/* io.c: poll / epoll_wait under T with a mask (-errno). */
int cancel__ppoll(cancel_token_t *t, struct pollfd *fds, nfds_t n, const struct timespec *rel,
                  const sigset_t *mask);
int cancel__epoll_pwait(cancel_token_t *t, int epfd, struct epoll_event *ev, int max, int ms,
                        const sigset_t *mask);
/* resolve.c: getnameinfo under T (EAI_* codes, EAI_SYSTEM with errno). */
int cancel__getnameinfo(cancel_token_t *t, const struct sockaddr *sa, socklen_t salen,
                        char *host, socklen_t hostlen, char *serv, socklen_t servlen,
                        int flags);

#endif

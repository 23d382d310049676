/*
 * interpose_api.c - the table through which libcancel-interpose.so reaches
 * the wrapper layer's entry points that the public API does not have
 * (a signal mask for ppoll and epoll_pwait, timed condition and semaphore
 * waits, getnameinfo), and the re-entry guard's view of the current token.
 * Each entry runs inside IO_BEGIN/IO_END, like a public wrapper.
 */
#include "interpose.h"

static cancel_token_t *interpose_token(void)
{
    return cancel__io_depth ? NULL : cancel_current();
}

static int interpose_sleep_until(cancel_token_t *t, const struct timespec *at)
{
    IO_BEGIN();
    int rc = cancel__wait_ready(t, NULL, 0, at, "sleep");
    IO_END();
    return rc < 0 ? rc : 0;
}

static int interpose_cond_wait(cancel_token_t *t, pthread_cond_t *c, pthread_mutex_t *m,
                               const struct timespec *abstime, clockid_t clock)
{
    IO_BEGIN();
    int rc = cancel__cond_wait(t, c, m, abstime, clock);
    IO_END();
    return rc;
}

static int interpose_ppoll(cancel_token_t *t, struct pollfd *fds, nfds_t n,
                           const struct timespec *rel, const sigset_t *mask)
{
    IO_BEGIN();
    int rc = cancel__ppoll(t, fds, n, rel, mask);
    IO_END();
    return rc;
}

static int interpose_epoll_pwait(cancel_token_t *t, int epfd, struct epoll_event *ev, int max,
                                 int ms, const sigset_t *mask)
{
    IO_BEGIN();
    int rc = cancel__epoll_pwait(t, epfd, ev, max, ms, mask);
    IO_END();
    return rc;
}

static int interpose_getnameinfo(cancel_token_t *t, const struct sockaddr *sa, socklen_t salen,
                                 char *host, socklen_t hostlen, char *serv, socklen_t servlen,
                                 int flags)
{
    IO_BEGIN();
    int rc = cancel__getnameinfo(t, sa, salen, host, hostlen, serv, servlen, flags);
    IO_END();
    return rc;
}

static int interpose_sem_wait(cancel_token_t *t, sem_t *sem, const struct timespec *abstime,
                              clockid_t clock)
{
    IO_BEGIN();
    int rc = cancel__sem_wait(t, sem, abstime, clock);
    IO_END();
    return rc;
}

static const struct cancel_interpose_api api = {
    .version = CANCEL_INTERPOSE_API_VERSION,
    .token = interpose_token,
    .ppoll = interpose_ppoll,
    .epoll_pwait = interpose_epoll_pwait,
    .sleep_until = interpose_sleep_until,
    .cond_wait = interpose_cond_wait,
    .rw = cancel__rw,
    .getnameinfo = interpose_getnameinfo,
    .sem_wait = interpose_sem_wait,
};

/* The one non-public export (tests/exports.sh allows it): see interpose.h. */
__attribute__((visibility("default"))) const struct cancel_interpose_api *
cancel__interpose_api(void)
{
    return &api;
}

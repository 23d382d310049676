/*
 * sync.c - cancel-aware waits that are not on a descriptor: condition
 * variables, semaphores, sleeps, child processes.
 *
 * cancel_cond_wait.  The only thing that wakes a thread in
 * pthread_cond_wait is the condition variable.  A callback that broadcasts
 * without holding the mutex can fire after the waiter checked the token
 * and before it is inside pthread_cond_wait (the waiter holds the mutex
 * all along that window), and the broadcast is lost.  So the callback
 * takes the mutex, then broadcasts: holding the mutex, it knows the waiter
 * is either inside pthread_cond_wait (and is woken) or has not checked the
 * token yet (and will see it).  This is exact, at one price: a thread that
 * cancels the token while holding that very mutex would wait for itself.
 * An error-checking mutex makes that case safe (the lock fails with EDEADLK,
 * and a canceller that holds the mutex rules the window out, so the
 * broadcast alone is exact), and a recursive one simply recurses; with a
 * normal mutex it deadlocks, and the man page states the rule.  The waiter
 * removes its callback with the mutex released (unlock, remove, lock), so
 * a callback waiting for the mutex never waits for the waiter.  A waiter
 * that was woken and still reports cancellation passes a signal on, so a
 * pthread_cond_signal meant for some waiter is never swallowed.
 *
 * cancel_sem_wait.  A semaphore can only be woken by sem_post, which
 * grants a unit that another waiter could take: no exact wake exists in
 * the POSIX API.  On glibc and Linux, sem_futex.c waits on the semaphore's
 * own futex word and a wake word at once (exact and prompt).  Elsewhere
 * the wait is sem_clockwait in slices of SEM_SLICE_NS with the token read
 * between slices: cancellation is noticed within one slice.  No unit is
 * ever taken on a cancelled return.  The same code serves the interposed
 * sem_timedwait and sem_clockwait (cancel__sem_wait with an absolute
 * timeout): the futex wait takes the timeout itself, and the last slice
 * ends at it.
 *
 * cancel_waitpid.  For one child (pid > 0) without WUNTRACED/WCONTINUED,
 * the wait is on a pidfd (pidfd_open), which polls readable when the child
 * exits, and the child is then reaped with WNOHANG.  Other forms (any
 * child, a process group, stop and continue events) or a kernel without
 * pidfd_open poll with WNOHANG every WAITPID_SLICE_NS, waiting on the wake
 * fd in between, so cancellation is still prompt.
 */
#include "interpose.h"

#include <unistd.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define SEM_SLICE_NS (5 * 1000000LL)
#define WAITPID_SLICE_NS (10 * 1000000LL)

/* ---------------------------------------------------------------- cond */

struct cond_waiter {
    pthread_cond_t *cond;
    pthread_mutex_t *mutex;
    pthread_t thread;
};

static void cond_wake(void *arg, int reason)
{
    (void)reason;
    struct cond_waiter *w = arg;
    /* Run inline by the waiter's own add (it holds the mutex): nothing to wake. */
    if (pthread_equal(pthread_self(), w->thread))
        return;
    int rc = pthread_mutex_lock(w->mutex);
    pthread_cond_broadcast(w->cond);
    if (rc == 0)
        pthread_mutex_unlock(w->mutex);
}

/*
 * pthread_cond_wait (ABSTIME NULL) or the timed wait on CLOCK under T,
 * pthread style.  T NULL: the plain call.
 */
int cancel__cond_wait(cancel_token_t *t, pthread_cond_t *cond, pthread_mutex_t *mutex,
                      const struct timespec *abstime, clockid_t clock)
{
    if (!cond || !mutex)
        return EINVAL; /* bad input never crashes (pthread's would) */
#define COND_PLAIN()                                                       \
    (!abstime ? pthread_cond_wait(cond, mutex)                             \
     : clock == (clockid_t)-1 ? pthread_cond_timedwait(cond, mutex, abstime) \
                              : pthread_cond_clockwait(cond, mutex, clock, abstime))
    if (!t)
        return COND_PLAIN();
    int reason = cancel_token_reason(t);
    if (reason)
        return cancel__reason_errno(reason);

    struct cond_waiter w = { .cond = cond, .mutex = mutex, .thread = pthread_self() };
    cancel_callback_t cb;
    if (cancel_callback_add(&cb, t, cond_wake, &w) == 1)
        return cancel__reason_errno(cancel_token_reason(t));
    cancel__blocked_begin("cond_wait", -1);
    int rc = COND_PLAIN();
#undef COND_PLAIN
    cancel__blocked_end();
    if (rc != 0 && rc != ETIMEDOUT) {
        /* Bad arguments: the mutex state is whatever pthread left it in. */
        cancel_callback_remove(&cb);
        return rc;
    }
    /* The callback may be waiting for the mutex we hold again: remove it
     * with the mutex released, so that it can finish. */
    pthread_mutex_unlock(mutex);
    cancel_callback_remove(&cb);
    pthread_mutex_lock(mutex);
    reason = cancel_token_reason(t);
    if (reason) {
        /* We may have taken a pthread_cond_signal meant for a waiter that
         * is not cancelled: pass it on (a spurious wakeup is allowed). */
        if (rc == 0)
            pthread_cond_signal(cond);
        return cancel__reason_errno(reason);
    }
    return rc;
}

int cancel_cond_wait(pthread_cond_t *cond, pthread_mutex_t *mutex)
{
    cancel_token_t *t = cancel_current();
    IO_BEGIN();
    int rc = cancel__cond_wait(t, cond, mutex, NULL, CLOCK_MONOTONIC);
    IO_END();
    return rc;
}

/* ----------------------------------------------------------------- sem */

int cancel_sem_wait(sem_t *sem)
{
    cancel_token_t *t = cancel_current();
    IO_BEGIN();
    int r = cancel__sem_wait(t, sem, NULL, CLOCK_REALTIME);
    IO_END();
    return (int)cancel__ret(r);
}

/* Whether AT on CLOCK has passed. */
static bool sem_expired(clockid_t clock, const struct timespec *at)
{
    struct timespec now;
    clock_gettime(clock, &now);
    return now.tv_sec > at->tv_sec || (now.tv_sec == at->tv_sec && now.tv_nsec >= at->tv_nsec);
}

/*
 * sem_wait (ABSTIME NULL), or sem_timedwait / sem_clockwait until ABSTIME
 * on CLOCK, under T: 0 or -errno.  A timed wait fails with ETIMEDOUT once
 * ABSTIME has passed and no unit could be taken, as glibc's does; its
 * checks of CLOCK and ABSTIME come first, as glibc's do.
 */
int cancel__sem_wait(cancel_token_t *t, sem_t *sem, const struct timespec *abstime,
                     clockid_t clock)
{
    if (!sem)
        return -EINVAL;
    if (abstime && ((clock != CLOCK_REALTIME && clock != CLOCK_MONOTONIC) ||
                    !cancel__timespec_valid(abstime)))
        return -EINVAL;
    if (!t)
        return abstime ? CANCEL_PLAIN(int, sem_clockwait(sem, clock, abstime))
                       : CANCEL_PLAIN(int, sem_wait(sem));
    int r;
    bool blocked = false;
    for (;;) {
        int reason = cancel_token_reason(t);
        if (reason) {
            r = -1;
            errno = cancel__reason_errno(reason);
            break;
        }
        if (!blocked) {
            r = sem_trywait(sem);
            if (r == 0 || errno != EAGAIN)
                break;
            if (abstime && sem_expired(clock, abstime)) {
                errno = ETIMEDOUT;
                break;
            }
            cancel__blocked_begin("sem_wait", -1);
            blocked = true;
            int exact = cancel__sem_wait_exact(sem, t, abstime, clock);
            if (exact != -ENOSYS) {
                r = exact == 0 ? 0 : -1;
                if (exact < 0)
                    errno = -exact;
                break;
            }
        }
        /* A slice, cut short at ABSTIME: the last one times the wait out. */
        struct timespec at;
        clockid_t on = abstime ? clock : CLOCK_MONOTONIC;
        clock_gettime(on, &at);
        at = cancel__add_ns(at, SEM_SLICE_NS);
        bool last = abstime && (abstime->tv_sec < at.tv_sec ||
                                (abstime->tv_sec == at.tv_sec && abstime->tv_nsec <= at.tv_nsec));
        r = sem_clockwait(sem, on, last ? abstime : &at);
        if (r == 0 || (errno != ETIMEDOUT && errno != EINTR) || (last && errno == ETIMEDOUT))
            break;
    }
    r = r < 0 ? -errno : r;
    if (blocked)
        cancel__blocked_end();
    return r;
}

/* --------------------------------------------------------------- sleep */

static int sleep_until_t(cancel_token_t *t, const struct timespec *at)
{
    if (!cancel__timespec_valid(at))
        return -EINVAL;
    int rc = cancel__wait_ready(t, NULL, 0, at, "sleep");
    return rc < 0 ? rc : 0;
}

int cancel_sleep_until(const struct timespec *at)
{
    cancel_token_t *t = cancel_current();
    IO_BEGIN();
    int rc = sleep_until_t(t, at);
    IO_END();
    return (int)cancel__ret(rc);
}

int cancel_sleep(int64_t ns)
{
    struct timespec at = cancel__add_ns(cancel__now(), ns > 0 ? ns : 0);
    return cancel_sleep_until(&at);
}

/* ------------------------------------------------------------- waitpid */

static int pidfd_open_(pid_t pid)
{
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

static pid_t waitpid_t(cancel_token_t *t, pid_t pid, int *status, int options)
{
    for (;;) {
        int err = cancel__cancelled(t);
        if (err)
            return -err;
        pid_t r = waitpid(pid, status, options | WNOHANG);
        if (r < 0 && errno == EINTR)
            continue;
        if (r != 0 || (options & WNOHANG))
            return r < 0 ? -errno : r;
        int rc;
        int pfd = -1;
        if (pid > 0 && !(options & (WUNTRACED | WCONTINUED)))
            pfd = pidfd_open_(pid);
        if (pfd >= 0) {
            /* Readable once the child exits; the reap itself is the WNOHANG above. */
            struct pollfd p = { .fd = pfd, .events = POLLIN, .revents = 0 };
            rc = cancel__wait_ready(t, &p, 1, NULL, "waitpid");
            close(pfd);
        } else {
            struct timespec at = cancel__add_ns(cancel__now(), WAITPID_SLICE_NS);
            rc = cancel__wait_ready(t, NULL, 0, &at, "waitpid");
        }
        if (rc < 0)
            return rc;
    }
}

pid_t cancel_waitpid(pid_t pid, int *status, int options)
{
    cancel_token_t *t = cancel_current();
    IO_BEGIN();
    pid_t r = t ? waitpid_t(t, pid, status, options)
                : CANCEL_PLAIN(pid_t, waitpid(pid, status, options));
    IO_END();
    return (pid_t)cancel__ret(r);
}

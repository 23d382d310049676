/*
 * compat.c - the bodies of compat.h's shims (empty with glibc).
 */
#include "config.h"
#include "compat.h" /* config.h includes it too, except in fuzz/run.sh's build */

#ifndef HAVE_PREADV2
#include <sys/syscall.h>
#include <unistd.h>

/* The offset goes as two longs, low then high (the kernel's pos_from_hilo;
 * on 64-bit the high half is ignored), as musl passes it. */
ssize_t cancel__preadv2(int fd, const struct iovec *iov, int n, off_t off, int flags)
{
    return syscall(SYS_preadv2, fd, iov, n, (long)off, (long)((unsigned long long)off >> 32), flags);
}

ssize_t cancel__pwritev2(int fd, const struct iovec *iov, int n, off_t off, int flags)
{
    return syscall(SYS_pwritev2, fd, iov, n, (long)off, (long)((unsigned long long)off >> 32), flags);
}
#endif

#if !defined(HAVE_SEM_CLOCKWAIT) || !defined(HAVE_PTHREAD_COND_CLOCKWAIT)
/* The CLOCK_REALTIME instant that is AT on CLOCK, in *OUT; returns OUT, or
 * AT itself when CLOCK is CLOCK_REALTIME.  A past AT gives now.  Saturates
 * instead of overflowing for a far AT. */
static const struct timespec *realtime_of(clockid_t clock, const struct timespec *at,
                                          struct timespec *out)
{
    if (clock == CLOCK_REALTIME)
        return at;
    struct timespec now, real;
    clock_gettime(clock, &now);
    clock_gettime(CLOCK_REALTIME, &real);
    long long s = (long long)at->tv_sec - (long long)now.tv_sec;
    long long ns = (long long)at->tv_nsec - (long long)now.tv_nsec;
    if (s < 0 || (s == 0 && ns < 0))
        s = ns = 0;
    if (s > (long long)1 << 40)
        s = (long long)1 << 40;
    ns += real.tv_nsec;
    s += real.tv_sec + ns / 1000000000LL;
    ns %= 1000000000LL;
    if (ns < 0) {
        ns += 1000000000LL;
        s--;
    }
    out->tv_sec = (time_t)s;
    out->tv_nsec = (long)ns;
    return out;
}
#endif

#ifndef HAVE_SEM_CLOCKWAIT
int cancel__sem_clockwait(sem_t *sem, clockid_t clock, const struct timespec *at)
{
    struct timespec abs;
    return sem_timedwait(sem, realtime_of(clock, at, &abs));
}
#endif

#ifndef HAVE_PTHREAD_COND_CLOCKWAIT
int cancel__pthread_cond_clockwait(pthread_cond_t *cond, pthread_mutex_t *mutex, clockid_t clock,
                                   const struct timespec *at)
{
    struct timespec abs;
    return pthread_cond_timedwait(cond, mutex, realtime_of(clock, at, &abs));
}
#endif

/* ISO C wants a translation unit to declare something. */
typedef int cancel__compat_unused;

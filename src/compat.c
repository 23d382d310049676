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

#ifndef HAVE_SEM_CLOCKWAIT
int cancel__sem_clockwait(sem_t *sem, clockid_t clock, const struct timespec *at)
{
    struct timespec now, real, abs;
    if (clock != CLOCK_REALTIME) {
        clock_gettime(clock, &now);
        clock_gettime(CLOCK_REALTIME, &real);
        long long ns = (at->tv_sec - now.tv_sec) * 1000000000LL + (at->tv_nsec - now.tv_nsec);
        if (ns < 0)
            ns = 0;
        ns += real.tv_nsec;
        abs.tv_sec = real.tv_sec + (time_t)(ns / 1000000000LL);
        abs.tv_nsec = (long)(ns % 1000000000LL);
        at = &abs;
    }
    return sem_timedwait(sem, at);
}
#endif

/* ISO C wants a translation unit to declare something. */
typedef int cancel__compat_unused;

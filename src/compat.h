/*
 * compat.h - shims for the calls a C library may lack: musl (1.2.3) has
 * no preadv2/pwritev2, no sem_clockwait and no pthread_cond_clockwait.  Included at the bottom of config.h (see
 * configure.ac, AH_BOTTOM), so every source sees it before its first
 * system header; with glibc it declares nothing.
 */
#ifndef CANCEL_COMPAT_H
#define CANCEL_COMPAT_H

#ifndef HAVE_PREADV2
#include <sys/types.h>
#include <sys/uio.h>

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008 /* include/uapi/linux/fs.h */
#endif

/* The system calls themselves (Linux 4.6, RWF_NOWAIT 4.14), as musl 1.2.5
 * wraps them.  Hidden (-fvisibility=hidden): never exported. */
ssize_t cancel__preadv2(int fd, const struct iovec *iov, int n, off_t off, int flags);
ssize_t cancel__pwritev2(int fd, const struct iovec *iov, int n, off_t off, int flags);
#define preadv2 cancel__preadv2
#define pwritev2 cancel__pwritev2
#endif

#ifndef HAVE_SEM_CLOCKWAIT
#include <semaphore.h>
#include <time.h>
/* sem_timedwait on the CLOCK_REALTIME instant that is AT on CLOCK (used
 * for bounded slices only, so a clock step costs at most one slice). */
int cancel__sem_clockwait(sem_t *sem, clockid_t clock, const struct timespec *at);
#define sem_clockwait cancel__sem_clockwait
#endif

#ifndef HAVE_PTHREAD_COND_CLOCKWAIT
#include <pthread.h>
#include <time.h>
/* pthread_cond_timedwait on the CLOCK_REALTIME instant that is AT on CLOCK:
 * right for a condition variable with the default clock (CLOCK_REALTIME),
 * which is what POSIX gives without pthread_condattr_setclock. */
int cancel__pthread_cond_clockwait(pthread_cond_t *cond, pthread_mutex_t *mutex, clockid_t clock,
                                   const struct timespec *at);
#define pthread_cond_clockwait cancel__pthread_cond_clockwait
#endif

#endif

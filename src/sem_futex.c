/*
 * sem_futex.c - an exact, prompt cancel_sem_wait on glibc and Linux.
 *
 * POSIX gives no way to wake one semaphore waiter without granting it a
 * unit.  On glibc with 64-bit atomics a sem_t is a 64-bit word (the value
 * in the low 32 bits, the number of waiters in the high 32) that sem_post
 * increments, then futex-wakes the value word when the waiter count is not
 * zero.  We wait the way glibc's own sem_wait does (count ourselves as a
 * waiter, take a unit with a CAS when the value is positive, else sleep on
 * the value word), but with futex_waitv on two words: the value word and a
 * per-thread wake word that a cancel callback sets to 1 before waking it.
 *
 * No lost wakeup: the callback stores 1 in the wake word before its wake,
 * and futex_waitv returns at once when a word differs from its expected
 * value, so a cancel that lands between our check of the token and the
 * sleep is seen by the sleep itself.  No unit is taken on a cancelled
 * return; a unit posted at the same time is taken (progress wins).  A
 * timed wait (the interposed sem_timedwait and sem_clockwait) passes its
 * absolute timeout to futex_waitv, which takes the same two clocks.
 *
 * Anywhere else (another libc, 32-bit, a kernel without futex_waitv, a
 * ThreadSanitizer build) this
 * returns -ENOSYS and sync.c falls back to waiting in slices.
 */
#include "internal.h"

#include <limits.h>
#include <semaphore.h>
#include <unistd.h>
#include <linux/futex.h>
#include <sys/syscall.h>

/* ThreadSanitizer models sem_post/sem_wait by interception and cannot see
 * the ordering our CAS on the semaphore word gives: there, fall back. */
#if defined(__GLIBC__) && defined(SYS_futex_waitv) && defined(FUTEX_32) && \
    UINTPTR_MAX == UINT64_MAX && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && \
    !defined(__SANITIZE_THREAD__)

/* glibc's struct new_sem with 64-bit atomics (nptl/semaphoreP.h). */
struct glibc_sem {
    _Atomic uint64_t data;
    int private_flag; /* 0 for a process-private semaphore, FUTEX_PRIVATE_FLAG
                       * for a shared one: glibc's flag is inverted */
    int pad;
};
_Static_assert(sizeof(struct glibc_sem) <= sizeof(sem_t), "sem_t layout");
#define SEM_VALUE_MASK 0xffffffffull
#define SEM_ONE_WAITER (1ull << 32)

static __thread _Atomic uint32_t wake_word;

static void wake_sem_waiter(void *arg, int reason)
{
    (void)reason;
    _Atomic uint32_t *word = arg;
    /* Release with no acquire partner, more than needed: only futex_waitv
     * compares the word; the waiter learns of the cancel from the reason,
     * (R2), which the cancel stored before running us. */
    atomic_store_explicit(word, 1, memory_order_release);
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

int cancel__sem_wait_exact(sem_t *sem, cancel_token_t *t, const struct timespec *abstime,
                           clockid_t clock)
{
    struct glibc_sem *s = (struct glibc_sem *)(void *)sem;
    unsigned value_flags = FUTEX_32 | ((unsigned)s->private_flag ^ FUTEX_PRIVATE_FLAG);
    struct futex_waitv waits[2] = {
        { .val = 0, .uaddr = (uintptr_t)&s->data, .flags = value_flags },
        { .val = 0, .uaddr = (uintptr_t)&wake_word, .flags = FUTEX_32 | FUTEX_PRIVATE_FLAG },
    };
    /* Relaxed: ours, and no callback is armed on it yet. */
    atomic_store_explicit(&wake_word, 0, memory_order_relaxed);
    cancel_callback_t cb;
    if (cancel_callback_add(&cb, t, wake_sem_waiter, (void *)&wake_word) == 1)
        return -cancel__reason_errno(cancel_token_reason(t));

    /* Counted as a waiter, sem_post wakes the value word for us.  Acquire
     * is more than needed (glibc's __new_sem_wait_slow adds itself
     * relaxed): the CAS below, (Q1), takes the unit and acquires it. */
    uint64_t d = atomic_fetch_add_explicit(&s->data, SEM_ONE_WAITER, memory_order_acquire) +
                 SEM_ONE_WAITER;
    int rc;
    bool timed_out = false;
    for (;;) {
        if ((d & SEM_VALUE_MASK) > 0) {
            /* (Q1) pairs with the release CAS of glibc's sem_post: the
             * poster's writes are visible once we hold its unit. */
            if (atomic_compare_exchange_weak_explicit(&s->data, &d,
                                                      d - 1 - SEM_ONE_WAITER,
                                                      memory_order_acquire,
                                                      memory_order_relaxed)) {
                rc = 0;
                break;
            }
            continue;
        }
        int reason = cancel_token_reason(t);
        if (reason || timed_out) {
            /* Relaxed, here and below: leaving takes no unit (glibc's
             * timeout path does the same). */
            atomic_fetch_sub_explicit(&s->data, SEM_ONE_WAITER, memory_order_relaxed);
            rc = reason ? -cancel__reason_errno(reason) : -ETIMEDOUT;
            break;
        }
        /* ABSTIME (when not NULL) is absolute on CLOCK, which sync.c has
         * checked to be CLOCK_REALTIME or CLOCK_MONOTONIC, as futex_waitv
         * takes them. */
        long r = syscall(SYS_futex_waitv, waits, 2, 0, abstime, clock);
        if (r < 0 && errno == ETIMEDOUT) {
            timed_out = true; /* a unit posted meanwhile is still taken */
        } else if (r < 0 && errno != EAGAIN && errno != EINTR) {
            /* ENOSYS (no futex_waitv) or a timeout the kernel refuses:
             * never retried, which would spin. */
            atomic_fetch_sub_explicit(&s->data, SEM_ONE_WAITER, memory_order_relaxed);
            rc = -errno;
            break;
        }
        d = atomic_load_explicit(&s->data, memory_order_relaxed); /* (Q1) acquires */
    }
    /* The callback may still be running: remove waits for it, so it never
     * touches the wake word of a later wait. */
    cancel_callback_remove(&cb);
    return rc;
}

#else

int cancel__sem_wait_exact(sem_t *sem, cancel_token_t *t, const struct timespec *abstime,
                           clockid_t clock)
{
    (void)sem;
    (void)t;
    (void)abstime;
    (void)clock;
    return -ENOSYS;
}

#endif

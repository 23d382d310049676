/*
 * lock.c - the library lock (cancel__lock) and its wait queue.
 *
 * A futex mutex in the classic three-state form (0 free, 1 held, 2 held
 * with possible sleepers; Drepper, "Futexes Are Tricky"), inlined in
 * internal.h for the uncontended path: one CAS to lock, one exchange to
 * unlock, no call into libpthread.  Critical sections are short except a
 * cancel's walk of a large subtree, so contenders spin briefly and then
 * sleep in the kernel.
 *
 * The wait queue is a sequence counter: a waiter reads it under the lock,
 * unlocks and sleeps only while it is unchanged; a broadcast bumps it under
 * the lock before waking, so no wakeup between the unlock and the sleep is
 * lost.  Waiters re-check their condition (spurious wakeups are allowed).
 */
#include "internal.h"

#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

_Atomic int cancel__lock_word;
static _Atomic unsigned wait_seq;
static unsigned waiters; /* guarded by the lock */

static void futex_wait(_Atomic int *word, int expected)
{
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake(_Atomic int *word, int n)
{
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

void cancel__lock_slow(void)
{
    for (int spin = 0; spin < 100; spin++) {
        int expected = 0;
        if (atomic_load_explicit(&cancel__lock_word, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_weak_explicit(&cancel__lock_word, &expected, 1,
                                                  memory_order_acquire,
                                                  memory_order_relaxed))
            return;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
    /* Mark the lock contended before sleeping, so that the holder's unlock
     * wakes us; taking it as 2 is safe (at worst one needless wake). */
    while (atomic_exchange_explicit(&cancel__lock_word, 2, memory_order_acquire) != 0)
        futex_wait(&cancel__lock_word, 2);
}

void cancel__unlock_wake(void)
{
    futex_wake(&cancel__lock_word, 1);
}

void cancel__wait_locked(void)
{
    unsigned seq = atomic_load_explicit(&wait_seq, memory_order_relaxed);
    waiters++;
    cancel__unlock();
    syscall(SYS_futex, &wait_seq, FUTEX_WAIT_PRIVATE, seq, NULL, NULL, 0);
    cancel__lock();
    waiters--;
}

/* A broadcast with no waiter is one comparison: no syscall. */
void cancel__broadcast_locked(void)
{
    if (waiters == 0)
        return;
    atomic_fetch_add_explicit(&wait_seq, 1, memory_order_relaxed);
    syscall(SYS_futex, &wait_seq, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

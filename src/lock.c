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
 * Waiting threads queue a record on their own stack, with the key they
 * wait for (NULL: any change).  A broadcast wakes every record; a keyed
 * wake (a callback finished) wakes only the threads waiting for that
 * callback, so tearing down N blocked waits costs N wakes, not N squared.
 * A record is marked woken under the lock before the futex wake, and its
 * owner unlinks it only after re-taking the lock, so no wake-up between
 * the unlock and the sleep is lost and no wake touches a dead record.
 * Waiters re-check their condition (spurious wakeups are allowed).
 */
#include "internal.h"

#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

_Atomic int cancel__lock_word;

struct waiter {
    const void *key;
    _Atomic int woken;
    struct waiter *next;
};
static struct waiter *waiting; /* guarded by the lock */

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

void cancel__wait_key_locked(const void *key)
{
    struct waiter self = {key, 0, waiting};
    waiting = &self;
    cancel__unlock();
    while (atomic_load_explicit(&self.woken, memory_order_acquire) == 0)
        futex_wait(&self.woken, 0);
    cancel__lock();
    struct waiter **link = &waiting;
    while (*link != &self)
        link = &(*link)->next;
    *link = self.next;
}

void cancel__wait_locked(void)
{
    cancel__wait_key_locked(NULL);
}

static void wake_locked(struct waiter *w)
{
    if (atomic_load_explicit(&w->woken, memory_order_relaxed))
        return;
    atomic_store_explicit(&w->woken, 1, memory_order_release);
    futex_wake(&w->woken, 1);
}

/* Wakes every waiter.  With none, one comparison: no syscall. */
void cancel__broadcast_locked(void)
{
    for (struct waiter *w = waiting; w; w = w->next)
        wake_locked(w);
}

/* Wakes the waiters for KEY only. */
void cancel__wake_key_locked(const void *key)
{
    for (struct waiter *w = waiting; w; w = w->next)
        if (w->key == key)
            wake_locked(w);
}

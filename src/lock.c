/*
 * lock.c - the library lock (cancel__lock) and its wait queue.
 *
 * A futex lock whose uncontended path, inlined in internal.h, is one CAS
 * to lock and a plain store plus a plain load to unlock: add+remove of a
 * callback, or create+release of a child, takes the lock twice, and an
 * atomic exchange per unlock (the classic three-state futex mutex,
 * Drepper's "Futexes Are Tricky") costs a third of the whole operation.
 *
 * The unlocker stores 0, then reads SLEEPERS and wakes one if it is not
 * zero.  A contender first spins, then counts itself in SLEEPERS, then
 * issues membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED), then tries the lock
 * once more, and only then sleeps in FUTEX_WAIT on the held word.  The
 * membarrier runs a full memory barrier on every CPU that runs one of our
 * threads, so any unlocker either published its store before it (our
 * retry sees the lock free) or reads SLEEPERS after it (and wakes us): the
 * store-load reordering that would lose the wake-up cannot straddle it.
 * This is the asymmetric Dekker pattern (userspace RCU, folly's
 * asymmetricHeavyBarrier): the rare path pays microseconds so that the
 * common path pays no fence.  Where membarrier is missing, unlock pays a
 * real fence instead (cancel__lock_fenced); should the barrier ever fail
 * later, the sleeper sleeps at most a millisecond at a time, so a wake-up
 * can be late but never lost.
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
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

struct cancel_lock cancel__lock_state __attribute__((aligned(64)));
bool cancel__lock_fenced = true;

struct waiter {
    const void *key;
    _Atomic int woken;
    struct waiter *next;
};
static struct waiter *waiting; /* guarded by the lock */

static void futex_wait(_Atomic int *word, int expected, const struct timespec *timeout)
{
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, expected, timeout, NULL, 0);
}

static void futex_wake(_Atomic int *word, int n)
{
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

static long membarrier(int cmd)
{
#ifdef SYS_membarrier
    return syscall(SYS_membarrier, cmd, 0, 0);
#else
    (void)cmd;
    errno = ENOSYS;
    return -1;
#endif
}

/* Before any thread can take the lock: choose how unlock orders itself. */
__attribute__((constructor)) static void lock_init(void)
{
    int saved = errno;
    if (membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0)
        cancel__lock_fenced = false;
    errno = saved;
}

/* Orders our SLEEPERS increment before every unlocker's next load of it;
 * false when that could not be done. */
static bool heavy_barrier(void)
{
    if (cancel__lock_fenced)
        return true; /* unlockers fence themselves; our seq_cst ops do the rest */
    int saved = errno;
    bool ok = membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0;
    errno = saved;
    return ok;
}

static bool try_lock(void)
{
    int expected = 0;
    return atomic_compare_exchange_strong_explicit(&cancel__lock_state.held, &expected, 1,
                                                   memory_order_seq_cst,
                                                   memory_order_seq_cst);
}

void cancel__lock_slow(void)
{
    for (int spin = 0; spin < 100; spin++) {
        if (atomic_load_explicit(&cancel__lock_state.held, memory_order_relaxed) == 0 &&
            try_lock())
            return;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
    int saved = errno;
    atomic_fetch_add_explicit(&cancel__lock_state.sleepers, 1, memory_order_seq_cst);
    for (;;) {
        bool ordered = heavy_barrier();
        if (try_lock())
            break;
        static const struct timespec late = {0, 1000000};
        futex_wait(&cancel__lock_state.held, 1, ordered ? NULL : &late);
    }
    atomic_fetch_sub_explicit(&cancel__lock_state.sleepers, 1, memory_order_relaxed);
    errno = saved;
}

void cancel__unlock_wake(void)
{
    int saved = errno;
    futex_wake(&cancel__lock_state.held, 1);
    errno = saved;
}

void cancel__wait_key_locked(const void *key)
{
    struct waiter self = {key, 0, waiting};
    waiting = &self;
    cancel__unlock();
    while (atomic_load_explicit(&self.woken, memory_order_acquire) == 0)
        futex_wait(&self.woken, 0, NULL);
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

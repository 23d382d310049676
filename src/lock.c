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
 * zero.  A contender first spins and yields (see cancel__lock_slow), then
 * counts itself in SLEEPERS, then
 * issues membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) if it made the
 * count non-zero, and only then tries the lock and sleeps in FUTEX_WAIT
 * on the held word until it gets it.  The membarrier runs a full memory barrier on every CPU that runs
 * one of our threads, so any unlocker either published its store before
 * it (our try sees the lock free) or reads SLEEPERS after our increment
 * (and wakes us): the store-load reordering that would lose the wake-up
 * cannot straddle it.  This is the asymmetric Dekker pattern (userspace
 * RCU, folly's asymmetricHeavyBarrier): the rare path pays microseconds
 * so that the common path pays no fence.  Where membarrier is
 * unavailable, a sleeper sleeps a millisecond at a time: a wake-up can be
 * late there, never lost.  verify/lock.pml checks all of this under a
 * store-buffer (TSO) model, and that dropping the barrier or loading
 * before storing loses a wake-up.
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
#include <sched.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#if __has_include(<linux/membarrier.h>)
#include <linux/membarrier.h>
#else
#define MEMBARRIER_CMD_PRIVATE_EXPEDITED (1 << 3)
#define MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED (1 << 4)
#endif

struct cancel_lock cancel__lock_state __attribute__((aligned(64)));

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

/* Registration for MEMBARRIER_CMD_PRIVATE_EXPEDITED, once per process:
 * 0 not tried, 1 registered, 2 unavailable.  Tried at load time, while
 * the process is likely single-threaded (registering later makes the
 * kernel wait for an RCU grace period); a contender retries if that has
 * not happened yet.  fork keeps the registration. */
static _Atomic int barrier_state;

static bool barrier_register(void)
{
    int state = atomic_load_explicit(&barrier_state, memory_order_acquire);
    if (state == 0) {
        state = membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0 ? 1 : 2;
        atomic_store_explicit(&barrier_state, state, memory_order_release);
    }
    return state == 1;
}

/* --- fork hook (reliab, issue 11; called by fork.c in the lock order) ---
 * The forking thread holds the lock across fork(), so no other thread is
 * inside a critical section when the child's copy is made. */
void cancel__lock_atfork_prepare(void)
{
    cancel__lock();
}

void cancel__lock_atfork_parent(void)
{
    cancel__unlock();
}

/* A child of a fork has one thread: the lock is free, nobody sleeps for it
 * (a count inherited from a sleeper would make every unlock a syscall) and
 * nobody waits on the queue (its records were other threads' stacks). */
void cancel__lock_atfork_child(void)
{
    waiting = NULL;
    atomic_store_explicit(&cancel__lock_state.sleepers, 0, memory_order_relaxed);
    atomic_store_explicit(&cancel__lock_state.held, 0, memory_order_relaxed);
}
/* --- end of fork hook --- */

__attribute__((constructor)) static void lock_init(void)
{
    int saved = errno;
    barrier_register();
    cancel__fork_init(); /* fork hook (reliab, issue 11) */
    errno = saved;
}

/*
 * Makes our SLEEPERS increment and every unlocker's store of HELD meet:
 * after it, an unlock either is visible to our next try or reads SLEEPERS
 * after our increment.  Once is enough: we stay counted until we own the
 * lock, and every later unlock reads the count after the increment.
 * False where membarrier is unavailable (kernels before 4.14, seccomp
 * filters that refuse it): the caller then sleeps a millisecond at a time,
 * so that a wake-up lost to a store buffer is only late.
 */
static bool heavy_barrier(void)
{
    int saved = errno;
    bool ok = membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0;
    errno = saved;
    return ok;
}

static bool try_lock(void)
{
    int expected = 0;
    return atomic_compare_exchange_strong_explicit(&cancel__lock_state.held, &expected, 1,
                                                   memory_order_acquire,
                                                   memory_order_relaxed);
}

static bool try_lock_if_free(void)
{
    return atomic_load_explicit(&cancel__lock_state.held, memory_order_relaxed) == 0 &&
           try_lock();
}

/*
 * Contention.  Critical sections are tens of nanoseconds (a cancel's walk
 * of a large subtree is the exception), so a contender first spins, then
 * yields the CPU a few times (the holder may be preempted: on a loaded
 * machine yielding lets it run; on an idle one it lets the holder finish a
 * run of operations without the cache line bouncing), and only then sleeps
 * in the kernel.  A sleeper costs every unlock a FUTEX_WAKE system call
 * until it is gone: sleeping early made eight threads hammering add and
 * remove on two cores four times slower than yielding (bench: see the
 * README).
 */
enum { LOCK_SPINS = 100, LOCK_YIELDS = 32 };

void cancel__lock_slow(void)
{
    for (int spin = 0; spin < LOCK_SPINS; spin++) {
        if (try_lock_if_free())
            return;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
    for (int yield = 0; yield < LOCK_YIELDS; yield++) {
        sched_yield();
        if (try_lock_if_free())
            return;
    }
    int saved = errno;
    /* Only the contender that makes the count non-zero needs the barrier:
     * a later one joins a count that an unlocker either reads (and wakes
     * someone, who wakes the next when it unlocks) or read before the
     * first contender counted itself, whose barrier then publishes that
     * unlocker's store before the first contender's try; and nobody leaves
     * the count before it owns the lock.  Under contention this saves one
     * round of inter-processor interrupts per sleeper. */
    int before = atomic_fetch_add_explicit(&cancel__lock_state.sleepers, 1,
                                           memory_order_seq_cst);
    static const struct timespec late = {0, 1000000};
    bool ordered = barrier_register();
    if (ordered && before == 0)
        ordered = heavy_barrier();
    const struct timespec *timeout = ordered ? NULL : &late;
    while (!try_lock())
        futex_wait(&cancel__lock_state.held, 1, timeout);
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
    int saved = errno;
    cancel__unlock();
    while (atomic_load_explicit(&self.woken, memory_order_acquire) == 0)
        futex_wait(&self.woken, 0, NULL);
    errno = saved;
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

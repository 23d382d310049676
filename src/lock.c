/*
 * lock.c - the library's locks, and the fork gate in front of them.
 *
 * Every token has its own lock: bit 31 of its reason word (reasons are
 * positive ints), so that a token stays 56 bytes and operations on
 * unrelated tokens never write a common cache line.  The uncontended
 * path, inlined in internal.h, is one CAS to lock and a plain store plus a
 * plain load to unlock: add + remove of a callback, or create + release of
 * a child, takes a lock twice, and an atomic exchange per unlock (the
 * classic three-state futex mutex, Drepper's "Futexes Are Tricky") would
 * cost a third of the whole operation.  A plain store is possible because
 * only the holder ever writes the word (the reason changes under the lock).
 *
 * Who sleeps for a lock is counted not in the lock but in a parking bucket
 * that its address hashes to (256 buckets, a cache line each, as in
 * WebKit's ParkingLot): only threads about to sleep write them, so an
 * unlock reads a line that nobody writes while there is no contention.
 * The unlocker stores the word without the lock bit, then reads its
 * bucket and wakes one sleeper on the word if the count is not zero.  A
 * contender first spins and yields (see cancel__lock_slow), then counts
 * itself in the bucket, then issues membarrier(MEMBARRIER_CMD_PRIVATE_
 * EXPEDITED), and only then tries the lock and sleeps in FUTEX_WAIT on the
 * word until it gets it.  The membarrier runs a full memory barrier on
 * every CPU that runs one of our threads, so any unlocker either published
 * its store before it (our try sees the lock free) or reads the bucket
 * after our increment (and wakes us): the store-load reordering that would
 * lose the wake-up cannot straddle it.  This is the asymmetric Dekker
 * pattern (userspace RCU, folly's asymmetricHeavyBarrier): the rare path
 * pays microseconds so that the common path pays no fence.  Every sleeper
 * issues its own barrier: a bucket is shared by unrelated locks, so a
 * count that is already non-zero says nothing about this lock's unlocker
 * (verify/lock.pml has the seeded bug that skipping it loses a wake-up).
 * Where membarrier is unavailable, a sleeper sleeps a millisecond at a
 * time: a wake-up can be late there, never lost.  A collision in a bucket
 * only costs an unrelated unlocker a spurious FUTEX_WAKE while someone
 * sleeps.
 *
 * The fork gate.  A thread that takes its first token lock stores its
 * depth (a plain store to its own record) and then loads the gate flag,
 * which only fork writes; the fork prepare handler closes the gate, issues
 * the same membarrier, and then waits until every registered thread's
 * depth reads zero.  The same asymmetric pairing (G1)/(G2) as above: a
 * thread either saw the gate closed (and waits outside, holding nothing)
 * or its depth is visible to the handler, which waits for it to leave.
 * Token locks are held only for short sections that never block on
 * anything but another token lock, so the wait ends; and the child starts
 * with no token lock held by a thread that is gone.
 */
#include "internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
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

static void futex_wait(_Atomic uint32_t *word, uint32_t expected, const struct timespec *timeout)
{
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, expected, timeout, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *word, int n)
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
    /* (M2) pairs with (M1): a thread that reads 1 issues its barriers
     * after the registration (kernel state, no data of ours). */
    int state = atomic_load_explicit(&barrier_state, memory_order_acquire);
    if (state == 0) {
        state = membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0 ? 1 : 2;
        /* (M1) pairs with (M2).  Two threads may both register: harmless. */
        atomic_store_explicit(&barrier_state, state, memory_order_release);
    }
    return state == 1;
}

/*
 * Makes our increment (a sleeper's count, or the closed gate) and every
 * other thread's plain store (an unlock, a depth) meet: after it, such a
 * thread either published its store before it or reads our increment.
 * False where membarrier is unavailable (kernels before 4.14, seccomp
 * filters that refuse it): callers then poll, so that an ordering lost to
 * a store buffer only makes them late.
 */
static bool heavy_barrier(void)
{
    int saved = errno;
    bool ok = barrier_register() && membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0;
    errno = saved;
    return ok;
}

struct cancel_parking cancel__parking[CANCEL_PARKING_BUCKETS] __attribute__((aligned(64)));

/* The load is a relaxed peek; (L5) the CAS pairs with (L3) in internal.h. */
static bool try_lock(_Atomic int *word)
{
    int w = atomic_load_explicit(word, memory_order_relaxed);
    return !(w & CANCEL_LOCKED) &&
           atomic_compare_exchange_strong_explicit(word, &w, w | CANCEL_LOCKED,
                                                   memory_order_acquire,
                                                   memory_order_relaxed);
}

/*
 * Contention.  Critical sections are tens of nanoseconds (a cancel's walk
 * of a large subtree is the exception), so a contender yields the CPU,
 * many times, before it sleeps in the kernel, and never spins.  Spinning
 * is what made two threads adding and removing callbacks on one token
 * cost 110 ns an operation against std::stop_callback's 41 (libstdc++
 * yields at once too): each spinning load pulls the token's line away from
 * the holder, who writes it again a few nanoseconds later, so the line
 * bounces on every operation.  A contender inside sched_yield touches
 * nothing, and the holder runs a burst of operations on a line it keeps:
 * 26 ns an operation with 2, 4 or 8 threads on 2 cores (bench_token's
 * scale_callback_shared_*), and 38 ns instead of 112 for children of one
 * root.  Where other threads are runnable, yielding also lets a preempted
 * holder finish.  A sleeper costs every unlock of a lock in its bucket a
 * FUTEX_WAKE system call until it is gone, so sleeping comes last: after
 * LOCK_YIELDS yields (a few hundred microseconds), which only a long
 * cancel walk or a holder that was descheduled outlasts.
 */
enum { LOCK_YIELDS = 256 };

void cancel__lock_slow(_Atomic int *word)
{
    if (try_lock(word))
        return; /* a cancelled token: the fast path expected 0 */
    for (int yield = 0; yield < LOCK_YIELDS; yield++) {
        sched_yield();
        if (try_lock(word))
            return;
    }
    int saved = errno;
    struct cancel_parking *bucket = cancel__bucket(word);
    /* (L2) pairs with (L1) in internal.h. */
    atomic_fetch_add_explicit(&bucket->sleepers, 1, memory_order_seq_cst);
    static const struct timespec late = {0, 1000000};
    const struct timespec *timeout = heavy_barrier() ? NULL : &late;
    for (;;) {
        /* A relaxed peek; (L6) the CAS pairs with (L3) in internal.h. */
        int w = atomic_load_explicit(word, memory_order_relaxed);
        if (!(w & CANCEL_LOCKED)) {
            if (atomic_compare_exchange_strong_explicit(word, &w, w | CANCEL_LOCKED,
                                                        memory_order_acquire,
                                                        memory_order_relaxed))
                break;
            continue;
        }
        futex_wait((_Atomic uint32_t *)word, (uint32_t)w, timeout);
    }
    /* Relaxed: a count still high costs an unlocker a spurious wake only. */
    atomic_fetch_sub_explicit(&bucket->sleepers, 1, memory_order_relaxed);
    errno = saved;
}

void cancel__unlock_wake(_Atomic int *word)
{
    int saved = errno;
    futex_wake((_Atomic uint32_t *)word, 1);
    errno = saved;
}

/* ------------------------------------------------ thread records and the fork gate */

__thread struct cancel_thread *cancel__me __attribute__((tls_model("initial-exec")));
/* The gate flag has its cache line to itself: every thread reads it, only
 * fork writes it. */
_Atomic int cancel__gate_closed __attribute__((aligned(64)));

/* Every thread that ever took a library lock has a record here.  Records
 * are never freed (a fork handler or a remove may read one whose thread is
 * gone): an exiting thread's record is marked free and adopted by the next
 * new thread. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cancel_thread *registry;
static pthread_key_t record_key;
static bool record_key_ok;
/* With no memory for a record, a thread registers its own static TLS one,
 * unlinked again by record_release (a lock taken by a destructor after
 * that would need a fifth round of destructors to be noticed: accepted). */
static __thread struct cancel_thread record_own __attribute__((tls_model("initial-exec")));

/* Thread exit (the key's destructor): the record is free for another. */
static void record_release(void *arg)
{
    struct cancel_thread *rec = arg;
    /* Relaxed: our own depth. */
    CANCEL_ASSERT(atomic_load_explicit(&rec->depth, memory_order_relaxed) == 0);
    cancel__me = NULL;
    pthread_mutex_lock(&registry_lock);
    rec->in_use = false;
    if (rec->tls_own) {
        struct cancel_thread **link = &registry;
        while (*link != rec)
            link = &(*link)->next;
        *link = rec->next;
    }
    pthread_mutex_unlock(&registry_lock);
}

static void record_adopt(void)
{
    int saved = errno;
    pthread_mutex_lock(&registry_lock);
    struct cancel_thread *rec = registry;
    while (rec && rec->in_use)
        rec = rec->next;
    if (!rec) {
        rec = aligned_alloc(64, sizeof *rec);
        if (rec)
            memset(rec, 0, sizeof *rec);
        else {
            rec = &record_own;
            rec->tls_own = true;
        }
        rec->next = registry;
        registry = rec;
    }
    rec->in_use = true;
    rec->frames = NULL;
    rec->ops = NULL;
    rec->waiting_on = NULL;
    pthread_mutex_unlock(&registry_lock);
    if (record_key_ok)
        pthread_setspecific(record_key, rec);
    cancel__me = rec;
    errno = saved;
}

struct cancel_thread *cancel__thread_self(void)
{
    if (!cancel__me)
        record_adopt();
    return cancel__me;
}

static void gate_wait_open(void)
{
    int saved = errno;
    /* (G7) pairs with (G6): the parent's fork handlers are done. */
    while (atomic_load_explicit(&cancel__gate_closed, memory_order_acquire))
        futex_wait((_Atomic uint32_t *)&cancel__gate_closed, 1, NULL);
    errno = saved;
}

/* The first lock of a thread without a record, or the gate found closed. */
void cancel__gate_enter_slow(void)
{
    if (!cancel__me) {
        record_adopt();
        cancel__gate_enter();
        return;
    }
    /* We counted ourselves in at depth 0: leave, wait outside, come in
     * again.  (G4) pairs with (G5), like (G3) in internal.h. */
    atomic_store_explicit(&cancel__me->depth, 0, memory_order_release);
    gate_wait_open();
    cancel__gate_enter();
}

/* fork.c's prepare handler, in the lock order (the signal lock is taken
 * before, the leaf locks after).  (G2) pairs with (G1) in internal.h. */
void cancel__lock_atfork_prepare(void)
{
    atomic_store_explicit(&cancel__gate_closed, 1, memory_order_seq_cst);
    bool ordered = heavy_barrier();
    pthread_mutex_lock(&registry_lock);
    struct cancel_thread *self = cancel__me;
    for (struct cancel_thread *rec = registry; rec; rec = rec->next) {
        if (rec == self)
            continue;
        /* Without membarrier a thread's depth store may still sit in its
         * store buffer when we read zero; polling a little longer makes
         * that window the buffer's drain time (cancel(7) says so).  (G5)
         * pairs with (G3) in internal.h and (G4): a thread's sections are
         * over once its depth reads zero. */
        for (int quiet = 0; quiet < (ordered ? 1 : 3); quiet++) {
            while (atomic_load_explicit(&rec->depth, memory_order_acquire) != 0)
                sched_yield();
            if (!ordered)
                sched_yield();
        }
    }
    /* REGISTRY_LOCK stays held across the fork: no thread adopts a record
     * meanwhile, and the child re-initialises it. */
}

void cancel__lock_atfork_parent(void)
{
    pthread_mutex_unlock(&registry_lock);
    /* (G6) pairs with (G7). */
    atomic_store_explicit(&cancel__gate_closed, 0, memory_order_release);
    futex_wake((_Atomic uint32_t *)&cancel__gate_closed, INT_MAX);
}

/* The child has one thread: every other record's thread is gone, so their
 * records are free again (the TLS ones unlinked), and nobody sleeps for
 * any lock, nor runs any callback. */
void cancel__lock_atfork_child(void)
{
    struct cancel_thread *self = cancel__me;
    struct cancel_thread **link = &registry;
    while (*link) {
        struct cancel_thread *rec = *link;
        if (rec == self) {
            link = &rec->next;
            continue;
        }
        /* A callback that thread was running never finishes here: take its
         * frames off their tokens' lists (its stack is still mapped), or a
         * cancel of an ancestor would wait for it for ever.  The reference
         * that thread held on the token is lost with it, like any other. */
        for (struct cancel_frame *f = rec->frames; f; f = f->outer) {
            *f->node.prev_link = f->node.next;
            if (f->node.next)
                f->node.next->prev_link = f->node.prev_link;
        }
        if (rec->tls_own) {
            /* Another thread's TLS: its memory may serve a new thread. */
            *link = rec->next;
            continue;
        }
        rec->in_use = false;
        /* Relaxed, here and below: the child has one thread. */
        atomic_store_explicit(&rec->depth, 0, memory_order_relaxed);
        atomic_store_explicit(&rec->lock, 0, memory_order_relaxed);
        rec->frames = NULL;
        link = &rec->next;
    }
    pthread_mutex_unlock(&registry_lock); /* ours since prepare */
    /* Nobody sleeps for any lock in the child. */
    for (int i = 0; i < CANCEL_PARKING_BUCKETS; i++)
        atomic_store_explicit(&cancel__parking[i].sleepers, 0, memory_order_relaxed);
    atomic_store_explicit(&cancel__gate_closed, 0, memory_order_relaxed);
}

__attribute__((constructor)) static void lock_init(void)
{
    int saved = errno;
    barrier_register();
    record_key_ok = pthread_key_create(&record_key, record_release) == 0;
    record_adopt(); /* the loading thread's: later heap counts start with it */
    cancel__fork_init(); /* fork.c: the one atfork registration, in the lock order */
    errno = saved;
}

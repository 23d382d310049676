/*
 * lock.pml - the per-token lock under x86-TSO (Promela, for spin): mutual
 * exclusion, and no lost wake-up although unlock stores and then loads
 * with no fence between, and although the sleeper count it loads lives in
 * a parking bucket that unrelated locks share (the asymmetric Dekker
 * pattern of src/lock.c).
 *
 * Mirrors, function by function:
 *   src/internal.h  cancel__lock (the fast-path CAS 0 -> LOCKED on the
 *                   token's reason word), cancel__unlock (release store of
 *                   the word with bit 31 cleared, compiler barrier, relaxed
 *                   load of cancel__bucket(word)->sleepers), cancel__bucket
 *   src/lock.c      cancel__lock_slow (try, yield, count in the
 *                   bucket, heavy barrier, then try_lock / FUTEX_WAIT on
 *                   the word until it gets the lock, uncount), heavy_barrier
 *                   (membarrier PRIVATE_EXPEDITED), try_lock, futex_wait,
 *                   cancel__unlock_wake, futex_wake
 *
 * What is modelled.  Two locks, A and B (two tokens' reason words), whose
 * addresses hash to the same parking bucket: one SLEEPERS count for both.
 * NTHREAD threads (4 by default: threads 1 and 3 take A, 2 and 4 take B)
 * each take and release their lock NITER times (2 by default: about 5
 * million states), with a critical section between.  The reason bits are left out (the holder
 * alone changes them: they only make a FUTEX_WAIT return EAGAIN).
 * Memory is x86-TSO: each thread has a store buffer, and the one plain
 * store of the protocol, unlock's word = free, goes into it (a single slot
 * per thread suffices: the thread's next lock is a locked CAS, which drains
 * it first).  A load by the storing thread sees its own buffered store;
 * every other thread reads memory until the buffer drains, which a
 * separate process does at any time.  So unlock's later load of SLEEPERS
 * can read a value older than its store: the one reordering TSO allows.
 * The read-modify-writes (the CASes, the fetch_add/fetch_sub of SLEEPERS:
 * lock-prefixed on x86) drain their thread's buffer and then act on memory
 * atomically, and so do the futex system calls.  membarrier drains every
 * thread's buffer at one instant.  FUTEX_WAIT(word, LOCKED) compares the
 * word in memory and queues the caller if equal, in one step;
 * FUTEX_WAKE(word, 1) unqueues one thread queued on that word (not on the
 * other lock of the bucket), if there is one.  A sleeper may also return
 * once spuriously (EINTR) in the whole run.  The yields of
 * cancel__lock_slow are one try, or none: a failed try changes nothing.
 *
 * Not modelled: weaker memory models than TSO (the compiler barrier keeps
 * the store before the load in program order there too, and membarrier's
 * barriers order them the same way); the degraded mode without membarrier
 * (a 1 ms timed sleep: late, never lost); the fork gate (verify/fork.pml).
 *
 * Properties (all checked exhaustively; see verify/run.sh):
 *   L1 mutual exclusion per lock: at most one thread in each lock's
 *      critical section, and its word is locked there.
 *   L2 no lost wake-up: every thread finishes: no invalid end state (a
 *      thread asleep in FUTEX_WAIT for good while its lock is free), and
 *      the LTL property all_done, <> (done == NTHREAD).
 *   L3 clean end: SLEEPERS back to 0, nobody queued, both locks free once
 *      the last buffered store has drained.
 *
 * Every contender that is about to sleep issues membarrier after counting
 * itself and before its first try: after it, any unlocker of its lock
 * either published its store (the try sees the lock free) or loads the
 * bucket after the increment (and wakes it).  With a bucket shared by
 * unrelated locks, a count that is already non-zero may be another lock's
 * sleepers, so it tells nothing about this lock's unlocker.
 *
 * Seeded bugs, to show the model can fail (run.sh expects errors):
 *   -DBROKEN_NO_BARRIER  heavy_barrier does nothing.  spin: "invalid end
 *              state": the unlocker's store of A sits in its buffer, its
 *              load of SLEEPERS reads 0; the contender counts itself, its
 *              try and FUTEX_WAIT read A locked and it sleeps; the store
 *              drains, and no wake ever comes.
 *   -DBROKEN_FIRST_ONLY  the design before buckets were shared: only the
 *              sleeper that makes the count non-zero issues membarrier.
 *              spin: "invalid end state": A's unlocker buffers its store
 *              and reads SLEEPERS == 0; a contender for B counts itself
 *              (first) but has not issued its barrier yet; a contender for
 *              A counts itself second, skips the barrier, reads A locked
 *              from memory and sleeps; A's store drains; the B contender's
 *              barrier, later, wakes nobody on A.
 *   -DBROKEN_LOAD_FIRST  unlock loads SLEEPERS before it stores the word
 *              (what the compiler may do without the signal fence).
 *              spin: "invalid end state", membarrier or not.
 */

#ifndef NTHREAD
#define NTHREAD  4
#endif
#ifndef NITER
#define NITER    2
#endif
#define NPROC    6          /* init, up to 4 threads (_pid 1..), the drainer */

/* lockof(p): thread p takes lock A (0) if odd, B (1) if even. */
#define lockof(p) (1 - ((p) % 2))

/* ---- two token words (lock bit only), one shared parking bucket ---- */
bit  held[2];               /* bit 31 of the word, in memory */
byte sleepers;              /* the bucket's count, for both locks */

/* ---- x86-TSO: each thread's store buffer (one pending word = free) ---- */
bit  sb_held[NPROC];

/* ---- the kernel's futex wait queues, one per word ---- */
bit  queued[NPROC];         /* queued on held[lockof(_pid)] */
bit  spurious = 1;          /* spurious FUTEX_WAIT returns left in the run */

/* ---- observers ---- */
byte in_cs[2];
byte done;

inline drain_own()
{
    if
    :: sb_held[_pid] -> held[lockof(_pid)] = 0; sb_held[_pid] = 0
    :: else
    fi
}

/* membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED): a full barrier on every
 * thread of the process, at one instant. */
inline membarrier()
{
    d_step {
        k = 1;
        do
        :: k <= NTHREAD ->
            if
            :: sb_held[k] -> held[lockof(k)] = 0; sb_held[k] = 0
            :: else
            fi;
            k++
        :: else -> break
        od;
        k = 0
    }
}

/* try_lock, and the fast path's CAS: lock cmpxchg on the word. */
inline cas_lock(got)
{
    atomic {
        drain_own();
        if
        :: held[lockof(_pid)] == 0 -> held[lockof(_pid)] = 1; got = 1
        :: else -> got = 0
        fi
    }
}

inline heavy_barrier()
{
#ifdef BROKEN_NO_BARRIER
    skip
#else
    membarrier()
#endif
}

/* futex_wait(word, LOCKED, NULL) */
inline futex_wait_held()
{
    atomic {
        drain_own();
        if
        :: held[lockof(_pid)] == 1 -> queued[_pid] = 1
        :: else
        fi
    };
    if
    :: !queued[_pid]
    :: atomic { spurious && queued[_pid] -> spurious = 0; queued[_pid] = 0 }
    fi
}

/* cancel__unlock_wake -> futex_wake(word, 1): one thread queued on OUR
 * word, any of them; a sleeper on the other lock of the bucket stays. */
inline futex_wake_held()
{
    atomic {
        drain_own();
        if
        :: queued[1] && lockof(1) == lockof(_pid) -> queued[1] = 0
        :: queued[2] && lockof(2) == lockof(_pid) -> queued[2] = 0
#if NTHREAD > 2
        :: queued[3] && lockof(3) == lockof(_pid) -> queued[3] = 0
#endif
#if NTHREAD > 3
        :: queued[4] && lockof(4) == lockof(_pid) -> queued[4] = 0
#endif
        :: else
        fi
    }
}

/* cancel__lock (internal.h) and cancel__lock_slow (lock.c). */
inline lock()
{
    cas_lock(got);                      /* the inline fast path */
    if
    :: got
    :: else ->
        if
        :: cas_lock(got)                /* try_lock, spins, yields */
        :: skip
        fi;
        if
        :: got
        :: else ->
            atomic { drain_own(); first = (sleepers == 0); sleepers++ };  /* fetch_add */
#ifdef BROKEN_FIRST_ONLY
            if
            :: first -> heavy_barrier()
            :: else
            fi;
#else
            heavy_barrier();            /* every sleeper: the bucket is shared */
#endif
            do
            :: true ->
                cas_lock(got);
                if
                :: got -> break
                :: else
                fi;
                futex_wait_held()
            od;
            atomic { drain_own(); sleepers-- }          /* fetch_sub */
        fi
    fi
}

/* cancel__unlock (internal.h). */
inline unlock()
{
    assert(held[lockof(_pid)] == 1 && !sb_held[_pid]);
#ifdef BROKEN_LOAD_FIRST
    s = sleepers;                       /* hoisted above the store */
    sb_held[_pid] = 1;
#else
    sb_held[_pid] = 1;                  /* release store: into the buffer */
    s = sleepers;                       /* relaxed load of the bucket */
#endif
    if
    :: s > 0 -> futex_wake_held()
    :: else
    fi;
    s = 0
}

proctype thread()
{
    byte i, k, s;
    bit  got, first;

    do
    :: i < NITER ->
        lock();
        got = 0; first = 0;
        in_cs[lockof(_pid)]++;
        assert(in_cs[lockof(_pid)] == 1 && held[lockof(_pid)] == 1 && !sb_held[_pid]); /* L1 */
        in_cs[lockof(_pid)]--;
        unlock();
        i++
    :: else -> break
    od;
    done++
}

proctype drainer()
{
end:
    do
    :: d_step { sb_held[1] -> held[lockof(1)] = 0; sb_held[1] = 0 }
    :: d_step { sb_held[2] -> held[lockof(2)] = 0; sb_held[2] = 0 }
#if NTHREAD > 2
    :: d_step { sb_held[3] -> held[lockof(3)] = 0; sb_held[3] = 0 }
#endif
#if NTHREAD > 3
    :: d_step { sb_held[4] -> held[lockof(4)] = 0; sb_held[4] = 0 }
#endif
    od
}

init {
    byte k;
    assert(NTHREAD >= 2 && NTHREAD <= 4);
    atomic {
        k = 0;
        do
        :: k < NTHREAD -> run thread(); k++
        :: else -> break
        od;
        run drainer();
        k = 0
    }
    done == NTHREAD;
    /* L3 */
    assert(sleepers == 0 && in_cs[0] == 0 && in_cs[1] == 0);
    assert(!queued[1] && !queued[2] && !queued[3] && !queued[4]);
    assert(held[0] == 0 || sb_held[1] || sb_held[3]);
    assert(held[1] == 0 || sb_held[2] || sb_held[4])
}

ltl all_done { <> (done == NTHREAD) }

/*
 * lock.pml - the library lock under x86-TSO (Promela, for spin): mutual
 * exclusion, and no lost wake-up although unlock stores and then loads
 * with no fence between (the asymmetric Dekker pattern of src/lock.c).
 *
 * Mirrors, function by function:
 *   src/internal.h  cancel__lock (the fast-path CAS), cancel__unlock
 *                   (release store of HELD, compiler barrier, relaxed
 *                   load of SLEEPERS)
 *   src/lock.c      cancel__lock_slow (spin, count in SLEEPERS, one heavy
 *                   barrier, then try_lock / FUTEX_WAIT until it gets the
 *                   lock, uncount), heavy_barrier (membarrier
 *                   PRIVATE_EXPEDITED), try_lock, futex_wait,
 *                   cancel__unlock_wake, futex_wake
 *
 * What is modelled.  NTHREAD threads (3 by default) each take and release
 * the lock NITER times (3 by default), with a critical section between
 * (-DNTHREAD=2..4 and -DNITER=n change them: 4 threads twice each is
 * about 5 million states).
 * Memory is x86-TSO: each thread has a store buffer, and the one plain
 * store of the protocol, unlock's HELD = 0, goes into it (a single slot
 * per thread suffices: the thread's next lock is a locked CAS, which drains
 * it first).  A load by the storing thread sees its own buffered store
 * (store forwarding); every other thread reads memory until the buffer
 * drains, which a separate process does at any time.  So unlock's later
 * load of SLEEPERS can read a value older than its store of HELD: the one
 * reordering TSO allows.  The read-modify-writes (the CAS of lock and
 * try_lock, the fetch_add/fetch_sub of SLEEPERS: lock-prefixed on x86)
 * drain their thread's buffer and then act on memory atomically, and so
 * do the futex system calls (the kernel's futex code has full barriers
 * before it reads the word or the wait queue).  membarrier drains every
 * thread's buffer at one instant: the kernel runs a full barrier on each
 * CPU that runs one of our threads (the others get one from the context
 * switch) before the call returns; the caller does nothing meanwhile, so
 * one instant is as good as one per CPU.  FUTEX_WAIT(HELD, 1) compares
 * the word in memory with 1 and queues the caller if equal, in one step;
 * FUTEX_WAKE(HELD, 1) unqueues one queued thread, any of them, if there
 * is one.  A sleeper may also return once spuriously (EINTR) in the whole
 * run.  The spins and yields of cancel__lock_slow are one try at any
 * time, or none: a failed try changes nothing, so only when the spinning
 * ends matters.
 *
 * Not modelled: weaker memory models than TSO (on arm64 or POWER the
 * compiler barrier likewise keeps the store before the load in program
 * order, and membarrier's barriers order them in the same way); the
 * degraded mode where membarrier is unavailable (the sleeper waits at
 * most 1 ms at a time: wake-ups can be late, never lost, but a timed wait
 * makes waiting look like spinning to spin); the critical
 * section's own loads and stores (acquire/release through the lock, as in
 * the other models); the wait queue of lock.c (cancel__wait_key_locked and
 * the wakes: a separate futex word, covered by callback.pml and
 * wakeup.pml).
 *
 * Properties (all checked exhaustively; see verify/run.sh):
 *   L1 mutual exclusion: at most one thread in the critical section
 *      (assert in it), and the lock word is 1 there.
 *   L2 no lost wake-up: every thread finishes all its iterations: no
 *      invalid end state (a thread asleep in FUTEX_WAIT for good while the
 *      lock is free, or held by a thread that finished), and the LTL
 *      property all_done, <> (done == NTHREAD) (no livelock either).
 *   L3 clean end: SLEEPERS back to 0, nobody queued on the futex, and the
 *      lock free once the last buffered store has drained.
 *
 * A contender issues membarrier once, after counting itself and before
 * its first try, and only if it made the count non-zero: it stays
 * counted until it owns the lock, so every later unlock reads the count
 * after the increment, and a later contender joins a count whose first
 * member's barrier already published any unlock that read it as zero.
 * The default is 3 threads with 3 iterations each; 4 threads with 2 each
 * (-DNTHREAD=4 -DNITER=2, 5.6 million states) also verifies.
 *
 * Seeded bugs, to show the model can fail (run.sh expects errors):
 *   -DBROKEN_NO_BARRIER  the contender skips membarrier (heavy_barrier
 *              does nothing) while unlock still has no fence.  spin:
 *              "invalid end state": the unlocker's HELD = 0 sits in its
 *              store buffer, its load of SLEEPERS reads 0 (the contender
 *              has not counted itself yet); the contender counts itself,
 *              its CAS and FUTEX_WAIT read HELD == 1 from memory and it
 *              sleeps; the store drains, and no wake ever comes.
 *   -DBROKEN_LATER_BARRIER  the barrier is issued by the contenders that
 *              find the count already non-zero instead of by the one that
 *              makes it so: the first contender loses its wake-up as with
 *              no barrier at all.
 *   -DBROKEN_LOAD_FIRST  unlock loads SLEEPERS before it stores HELD (what
 *              the compiler may do to a relaxed load after a release
 *              store without the compiler barrier between them).  spin:
 *              "invalid end state", membarrier or not: the load reads 0,
 *              the contender counts itself, its membarrier finds nothing
 *              buffered, it reads HELD == 1 and sleeps; then the store.
 */

#ifndef NTHREAD
#define NTHREAD  3
#endif
#ifndef NITER
#define NITER    3
#endif
#define NPROC    6          /* init, up to 4 threads (_pid 1..), the drainer */

/* ---- struct cancel_lock, in memory ---- */
bit  held;                  /* 0 free, 1 held */
byte sleepers;              /* threads counted in SLEEPERS */

/* ---- x86-TSO: each thread's store buffer (one pending HELD = 0) ---- */
bit  sb_held[NPROC];

/* ---- the kernel's futex wait queue on HELD ---- */
bit  queued[NPROC];
bit  spurious = 1;          /* spurious FUTEX_WAIT returns left in the run */

/* ---- observers ---- */
byte in_cs;                 /* threads in the critical section */
byte done;                  /* threads that finished */

/* Commit this thread's buffered store (a locked instruction, a fence, or
 * the barriers in the futex code do this first). */
inline drain_own()
{
    if
    :: sb_held[_pid] -> held = 0; sb_held[_pid] = 0
    :: else
    fi
}

/* membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED): a full barrier on every
 * thread of the process. */
inline membarrier()
{
    d_step {
        k = 1;
        do
        :: k <= NTHREAD ->
            if
            :: sb_held[k] -> held = 0; sb_held[k] = 0
            :: else
            fi;
            k++
        :: else -> break
        od;
        k = 0
    }
}

/* try_lock, and the fast path's CAS: lock cmpxchg on HELD, 0 -> 1. */
inline cas_lock(got)
{
    atomic {
        drain_own();
        if
        :: held == 0 -> held = 1; got = 1
        :: else -> got = 0
        fi
    }
}

/* heavy_barrier: membarrier (or, seeded bug, nothing). */
inline heavy_barrier()
{
#ifdef BROKEN_NO_BARRIER
    skip
#else
    membarrier()
#endif
}

/* futex_wait(&held, 1, NULL): sleep only if HELD is still 1, checked in
 * the kernel against the wait queue, so a wake after the check finds us
 * queued.  Returns when woken, spuriously once, or at once (EAGAIN). */
inline futex_wait_held()
{
    atomic {
        drain_own();
        if
        :: held == 1 -> queued[_pid] = 1
        :: else
        fi
    };
    if
    :: !queued[_pid]
    :: atomic { spurious && queued[_pid] -> spurious = 0; queued[_pid] = 0 }
    fi
}

/* cancel__unlock_wake -> futex_wake(&held, 1): one queued thread, any. */
inline futex_wake_held()
{
    atomic {
        drain_own();
        if
        :: queued[1] -> queued[1] = 0
        :: queued[2] -> queued[2] = 0
#if NTHREAD > 2
        :: queued[3] -> queued[3] = 0
#endif
#if NTHREAD > 3
        :: queued[4] -> queued[4] = 0
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
        /* 100 spins: a relaxed load of 0 and a CAS that wins, or not. */
        if
        :: cas_lock(got)
        :: skip
        fi;
        if
        :: got
        :: else ->
            atomic { drain_own(); first = (sleepers == 0); sleepers++ };  /* fetch_add */
#ifdef BROKEN_LATER_BARRIER
            first = !first;
#endif
            if
            :: first -> heavy_barrier()         /* only who made the count non-zero */
            :: else
            fi;
            do
            :: true ->
                cas_lock(got);                          /* try_lock */
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
    assert(held == 1 && !sb_held[_pid]);
#ifdef BROKEN_LOAD_FIRST
    s = sleepers;                       /* hoisted above the store */
    sb_held[_pid] = 1;                  /* release store: into the buffer */
#else
    sb_held[_pid] = 1;                  /* release store: into the buffer */
    s = sleepers;                       /* relaxed load, from memory */
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
        got = 0;
        in_cs++;
        assert(in_cs == 1 && held == 1 && !sb_held[_pid]);     /* L1 */
        in_cs--;
        unlock();
        i++
    :: else -> break
    od;
    done++
}

/* Buffered stores reach memory at any time. */
proctype drainer()
{
    byte k;
end:
    do
    :: d_step { sb_held[1] -> held = 0; sb_held[1] = 0 }
    :: d_step { sb_held[2] -> held = 0; sb_held[2] = 0 }
#if NTHREAD > 2
    :: d_step { sb_held[3] -> held = 0; sb_held[3] = 0 }
#endif
#if NTHREAD > 3
    :: d_step { sb_held[4] -> held = 0; sb_held[4] = 0 }
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
    assert(sleepers == 0 && in_cs == 0);
    assert(!queued[1] && !queued[2] && !queued[3] && !queued[4]);
    assert(held == 0 || sb_held[1] || sb_held[2] || sb_held[3] || sb_held[4])
}

/* L2: every thread finishes (no lost wake-up, no livelock; deadlocks
 * too, by stuttering). */
ltl all_done { <> (done == NTHREAD) }

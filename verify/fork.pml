/*
 * fork.pml - the fork gate under x86-TSO (Promela, for spin): once the
 * prepare handler's scan has passed, no thread holds a token lock or the
 * wait graph's mutex, and none takes one until the parent handler opens
 * the gate.
 *
 * Mirrors, function by function:
 *   src/internal.h  cancel__gate_enter (relaxed store of depth + 1 to the
 *                   thread's own record, signal fence, relaxed load of
 *                   cancel__gate_closed, only at depth 0), cancel__gate_
 *                   leave (release store of depth - 1), cancel__lock and
 *                   cancel__unlock around them
 *   src/lock.c      cancel__gate_enter_slow (depth back to 0, wait for the
 *                   gate to open, enter again), gate_wait_open,
 *                   cancel__lock_atfork_prepare (seq_cst store closing the
 *                   gate, heavy_barrier, the scan of every other record's
 *                   depth until it reads 0), cancel__lock_atfork_parent
 *   src/run.c       cancel__run_atfork_prepare/parent (the graph mutex,
 *                   taken before the gate closes), and the one path that
 *                   holds it while taking a token or record lock at depth
 *                   0 (graph_enter or a return from pthread_cond_wait, then
 *                   cancel__token_lock or runs())
 *
 * What is modelled.  Two threads, each NITER times (2 by default) either
 * taking the graph mutex and then a token lock, or taking a token lock and,
 * nested inside it, a second one (a flag walk's parent and
 * child: the nested lock does not look at the gate), each thread on its
 * own tokens (the locks themselves are covered by lock.pml), and a forking
 * thread that forks once: prepare, then fork at any later instant, then
 * the parent handler.  Memory is x86-TSO: each thread's plain stores (its
 * depth, its unlock of each word) go into its store buffer, a FIFO that a
 * drainer empties into memory at any time; a thread's own loads forward
 * from it.  Locked instructions (the lock CAS, the seq_cst store of the
 * gate) drain their thread's buffer first.  membarrier drains every
 * buffer at one instant.  What the child inherits is memory at the fork
 * instant: a token word still locked there is a lock whose holder is gone.
 *
 * Properties (all checked exhaustively; see verify/run.sh):
 *   F1 at the fork instant no token word in memory is locked and no thread
 *      is inside a token lock's critical section (assert in the forker).
 *   F3 at the fork instant nobody but the forker holds the graph mutex.
 *   F2 no deadlock: every thread finishes (no invalid end state), and the
 *      LTL property all_done.
 *
 * Seeded bug (run.sh expects an error):
 *   -DBROKEN_NO_BARRIER  prepare closes the gate and scans without
 *              membarrier.  spin: "assertion violated": a thread's depth
 *              store sits in its store buffer while its gate load reads
 *              the gate open; the scan reads depth 0 and passes; the
 *              thread's CAS takes the lock, and the fork copies it locked.
 *
 *   -DBROKEN_GRAPH_NOT_TAKEN  no prepare handler takes run.c's graph
 *              mutex (the code before commit 7fe9cbd).  spin: "assertion
 *              violated" (F3): a thread holds the mutex (graph_enter) and
 *              then, taking a token or record lock at depth 0, finds the
 *              gate closed and waits outside for as long as the fork takes;
 *              the scan passes it, and the child inherits the mutex locked
 *              by a thread it does not have.
 */

#ifndef NITER
#define NITER 2
#endif
#define NT     2            /* lock-taking threads: _pid 1 and 2 */
#define SBN    5            /* store buffer slots per thread */

/* A buffered store: what it writes. */
#define ST_D0    1          /* depth = 0 */
#define ST_D1    2          /* depth = 1 */
#define ST_D2    3          /* depth = 2 */
#define ST_W0    4          /* outer token word = unlocked */
#define ST_W1    5          /* inner token word = unlocked */

byte depth[NT + 1];         /* each record's depth, in memory */
bit  word[2 * (NT + 1)];    /* token words: 2p outer, 2p + 1 inner */
bit  gate;                  /* cancel__gate_closed */
bit  in_cs[NT + 1];         /* thread holds a token lock (by its program) */
byte sb[(NT + 1) * SBN];    /* store buffers, FIFO, 0: empty slot */
byte sbn[NT + 1];
byte done;
bit  forked;
byte gmu;                   /* run.c's graph mutex, holder _pid */

inline commit(p, v)
{
    if
    :: v == ST_D0 -> depth[p] = 0
    :: v == ST_D1 -> depth[p] = 1
    :: v == ST_D2 -> depth[p] = 2
    :: v == ST_W0 -> word[2 * p] = 0
    :: v == ST_W1 -> word[2 * p + 1] = 0
    fi
}

/* Drain P's oldest buffered store (blocks while there is none). */
inline drain_one(p)
{
    d_step {
        sbn[p] > 0;
        commit(p, sb[p * SBN]);
        sb[p * SBN] = sb[p * SBN + 1]; sb[p * SBN + 1] = sb[p * SBN + 2];
        sb[p * SBN + 2] = sb[p * SBN + 3]; sb[p * SBN + 3] = sb[p * SBN + 4];
        sb[p * SBN + 4] = 0;
        sbn[p]--
    }
}

inline drain_all(p)
{
    do
    :: sbn[p] > 0 -> drain_one(p)
    :: else -> break
    od
}

/* A plain store by thread P: into its buffer (waits while it is full:
 * the hardware drains it). */
inline store_p(p, v)
{
    d_step { sbn[p] < SBN -> sb[p * SBN + sbn[p]] = v; sbn[p]++ }
}

inline store(v)
{
    if
    :: _pid == 1 -> store_p(1, v)
    :: else -> store_p(2, v)
    fi
}

/* membarrier: every buffer drained at one instant. */
inline membarrier()
{
    atomic { drain_all(1); drain_all(2) }
}

/* cancel__gate_enter at depth 0, with cancel__gate_enter_slow: the load
 * reads memory (nobody but fork writes the gate; our own buffer never
 * holds it). */
inline gate_enter0()
{
    do
    :: true ->
        store(ST_D1);                   /* (G1) depth = 1, relaxed */
        if                              /* signal fence; relaxed load */
        :: gate == 0 -> break
        :: else ->
            store(ST_D0);               /* gate_enter_slow: leave, */
            gate == 0                   /* gate_wait_open (FUTEX_WAIT), */
        fi                              /* and enter again */
    od
}

/* The lock CAS on word W (0 -> 1): a locked instruction, after draining. */
inline cas(w)
{
    atomic {
        if
        :: _pid == 1 -> drain_all(1)
        :: else -> drain_all(2)
        fi;
        assert(word[w] == 0); word[w] = 1
    }
}

proctype thread()
{
    byte i;
    do
    :: i < NITER ->
        /* run.c: graph_enter, then a token or record lock at depth 0 */
        atomic { gmu == 0 -> gmu = _pid };
        gate_enter0();
        cas(2 * _pid);
        in_cs[_pid] = 1;
        in_cs[_pid] = 0;
        store(ST_W0);
        store(ST_D0);
        gmu = 0;                        /* graph_leave */
        i++
    :: i < NITER ->
        gate_enter0();
        cas(2 * _pid);                  /* cancel__lock of the outer token */
        in_cs[_pid] = 1;
        store(ST_D2);                   /* nested: depth 2, no gate look */
        cas(2 * _pid + 1);
        store(ST_W1);                   /* cancel__unlock of the inner one */
        store(ST_D1);                   /* gate_leave: release store */
        in_cs[_pid] = 0;
        store(ST_W0);                   /* unlock of the outer one */
        store(ST_D0);
        i++
    :: else -> break
    od;
    done++
}

proctype forker()
{
#ifndef BROKEN_GRAPH_NOT_TAKEN
    atomic { gmu == 0 -> gmu = _pid };  /* cancel__run_atfork_prepare */
#endif
    /* cancel__lock_atfork_prepare */
    atomic { gate = 1 };                /* seq_cst store: drained at once */
#ifndef BROKEN_NO_BARRIER
    membarrier();
#endif
    depth[1] == 0;                      /* the scan: yield until 0 */
    depth[2] == 0;
    /* fork(), at any instant from here on: F1 */
    atomic {
        assert(!in_cs[1] && !in_cs[2]);
        assert(!word[2] && !word[3] && !word[4] && !word[5]);
        assert(gmu == 0 || gmu == _pid);        /* F3 */
        forked = 1
    };
    /* cancel__lock_atfork_parent */
    gate = 0;
#ifndef BROKEN_GRAPH_NOT_TAKEN
    gmu = 0;                            /* cancel__run_atfork_parent */
#endif
    done++
}

proctype drainer()
{
end:
    do
    :: drain_one(1)
    :: drain_one(2)
    od
}

init {
    atomic {
        run thread(); run thread(); run forker(); run drainer()
    };
    done == NT + 1;
    assert(forked)
}

ltl all_done { <> (done == NT + 1) }

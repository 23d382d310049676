/*
 * callback.pml - callback add/remove against cancel (Promela, for spin).
 *
 * Mirrors, function by function:
 *   src/callback.c  cancel_callback_add, cancel_callback_remove, runner_of
 *   src/token.c     cancel_token_cancel_at, transition_locked,
 *                   cancel__run_callback_locked, cancel__op_begin_locked,
 *                   cancel__op_end_locked
 *   src/lock.c      cancel__lock, cancel__unlock, cancel__wait_locked,
 *                   cancel__broadcast_locked
 *
 * What is modelled.  One token (never freed: its owners hold references),
 * two callbacks cb 0 and cb 1, each owned by its own thread, and two
 * threads that cancel the token at the same time.  Everything the C code
 * guards with cancel__lock is guarded here by LOCK; what it does with the
 * lock dropped (running fn) is done here with LOCK free, so spin explores
 * every interleaving of the unlocked parts.  Each fn runs in the thread
 * that runs it in C (the cancelling thread, or the adder on the inline
 * path), because remove's "called from inside fn" test is a thread
 * identity test (pthread_equal on the op record).  fn may remove itself
 * (SPEC: returns false at once) and, in the "fn frees" ownership mode, free
 * its own storage (SPEC: the library never touches cb after fn returns).
 *
 * Abstractions.  The token's callback list and a cancel's pending list are
 * kept as one location per callback (LOC_TOKEN, LOC_PENDING): C unlinks in
 * O(1) through prev_link, which the model does not need.  A cancel runs
 * its pending callbacks in list order; here it picks any pending one, a
 * superset of the orders C can produce.  The wait queue (a futex on a
 * sequence counter) is "sleep until the counter moved", plus at most one
 * spurious wakeup (EINTR) in the whole run so that the re-check loops are
 * exercised without making waiting look like spinning to spin.
 *
 * Properties (all checked exhaustively; see verify/run.sh):
 *   P1 exactly once: at the end, a callback whose remove returned true ran
 *      0 times, any other ran exactly once (the token is always cancelled);
 *      fn never runs twice (assert in fn).
 *   P2 no use after remove / after free: every access the library makes to
 *      a callback's storage asserts the storage is not freed; the owner
 *      frees it right after remove returns (or fn frees it itself), so a
 *      fn that is still running or starts later, or a list that still
 *      links the callback, trips the assertion.  A remove that unlinks a
 *      callback from a cancel's pending list (whose head lives on the
 *      cancelling thread's stack) finds that cancel still under way.
 *   P3 remove waits: when remove returns in another thread no op records
 *      the callback as running.
 *   P4 remove from inside fn returns false at once: it never reaches the
 *      wait, and returns false.
 *   P5 inline path: add on a cancelled token returns 1 after running fn
 *      once in the adder's own thread; add returning 0 means fn has not run
 *      in the adder's thread.
 *   P6 the reason is set once: exactly one of the two cancels transitions
 *      the token (returns true), the other returns false.
 *   P7 no deadlock: spin's invalid end states (a thread stuck in lock,
 *      in the wait queue or in remove), and the LTL property all_return:
 *      every thread eventually returns (no livelock in the wait loops).
 *
 * Seeded bugs, to show the model can fail (run.sh expects errors):
 *   -DBROKEN_NOWAIT  remove of a RUNNING callback returns without waiting.
 *                    spin: "assertion violated (who==255)", P3: the owner's
 *                    remove returned while a cancel still ran fn (the owner
 *                    would free cb under it).
 *   -DBROKEN_SELF    remove does not test for its own thread.  spin:
 *                    "assertion violated (!(in_fn[_pid])||...)", P4: a fn
 *                    that removes itself goes to wait for itself (without
 *                    that assertion: an invalid end state, a deadlock).
 *   -DBROKEN_TOUCH   the cancelling thread writes the callback after fn
 *                    returns.  spin: "assertion violated !(freed[cb])",
 *                    P2: a fn that freed its own storage (SPEC allows it).
 */

#define NCB      2          /* callbacks */
#define NPROC    6          /* init, 2 cancellers, 2 owners, spare */
#define NOBODY   255

/* struct cancel_cb.state (CANCEL_CB_*); UNSET: storage not yet armed. */
#define ST_UNSET   0
#define ST_ARMED   1
#define ST_RUNNING 2
#define ST_IDLE    3

/* Where an armed callback is linked. */
#define LOC_NONE    0
#define LOC_TOKEN   1       /* t->callbacks */
#define LOC_PENDING 2       /* a cancel's struct pending */

/* Ownership modes of an owner thread. */
#define MODE_REMOVE  0      /* add; remove; remove again; free */
#define MODE_FNFREES 1      /* add; never remove; fn frees its own storage */

/* ---- cancel__lock and the wait queue (lock.c) ---- */
byte lock_holder;           /* 0: free, else _pid + 1 */
byte wait_seq;              /* wait_seq: bumped by a broadcast */
byte waiters;
byte spurious = 1;          /* spurious wakeups left in the run */

/* ---- the token ---- */
bit  reason;                /* t->reason != 0 */
byte transitions;           /* cancels that returned true */
byte pending_owner;         /* _pid whose stack holds the pending list */

/* ---- callbacks ---- */
byte state[NCB];
byte loc[NCB];
byte mode[NCB];
bit  freed[NCB];            /* the owner (or fn) released the storage */
byte runs[NCB];             /* times fn started */
byte ran_on[NCB];           /* _pid fn last ran on */
bit  removed_true[NCB];     /* the owner's remove returned true */

/* ---- struct cancel_op records: one per thread (ops list) ---- */
bit  op_active[NPROC];
byte op_running[NPROC];     /* callback index + 1, 0: none */
bit  in_fn[NPROC];          /* this thread is inside a fn */

byte done;                  /* threads that returned */

inline lock()
{
    atomic { lock_holder == 0 -> lock_holder = _pid + 1 }
}

inline unlock()
{
    assert(lock_holder == _pid + 1);
    lock_holder = 0
}

/* cancel__wait_locked: read the counter under the lock, unlock, sleep while
 * it is unchanged (FUTEX_WAIT returns at once if it already moved). */
inline wait_locked()
{
    seq = wait_seq;
    waiters++;
    unlock();
    if
    :: wait_seq != seq
    :: atomic { spurious > 0 -> spurious-- }
    fi;
    lock();
    waiters--
}

/* cancel__broadcast_locked */
inline broadcast_locked()
{
    if
    :: waiters > 0 -> wait_seq++
    :: else
    fi
}

/* The library reads or writes callback CB's storage. */
inline touch(cb)
{
    assert(!freed[cb])
}

/* Every callback still linked on a list is live (neighbours' prev_link and
 * next are written when a list changes). */
inline lists_live()
{
    assert((loc[0] == LOC_NONE || !freed[0]) && (loc[1] == LOC_NONE || !freed[1]))
}

inline op_begin()
{
    op_active[_pid] = 1;
    op_running[_pid] = 0
}

inline op_end()
{
    op_active[_pid] = 0;
    broadcast_locked()
}

/* runner_of: the thread whose op runs CB's fn, or NOBODY. */
inline runner_of(cb, who)
{
    d_step {
        who = NOBODY;
        k = 0;
        do
        :: k < NPROC && op_active[k] && op_running[k] == cb + 1 -> who = k; break
        :: k < NPROC && !(op_active[k] && op_running[k] == cb + 1) -> k++
        :: k >= NPROC -> break
        od;
        k = 0
    }
}

/* cancel_callback_remove(cb) -> res */
inline cb_remove(cb, res)
{
    lock();
    touch(cb);
    if
    :: state[cb] == ST_ARMED && loc[cb] == LOC_TOKEN ->
        loc[cb] = LOC_NONE;             /* unlinked from t->callbacks */
        lists_live();
        state[cb] = ST_IDLE;
        res = true
    :: state[cb] == ST_ARMED && loc[cb] == LOC_PENDING ->
        /* prev_link may point at pending.head, on the canceller's stack. */
        assert(op_active[pending_owner]);
        loc[cb] = LOC_NONE;             /* unlinked from a cancel's pending list */
        lists_live();
        state[cb] = ST_IDLE;
        res = true
    :: state[cb] == ST_RUNNING ->
#ifdef BROKEN_NOWAIT
        state[cb] = ST_IDLE;
#else
        self = false;
        do
        :: true ->
            runner_of(cb, who);
            if
            :: who == NOBODY -> break
#ifndef BROKEN_SELF
            :: who == _pid -> self = true; break     /* from inside fn */
#endif
            :: else ->
                assert(!in_fn[_pid] || op_running[_pid] != cb + 1);  /* P4 */
                wait_locked()
            fi
        od;
        if
        :: !self -> state[cb] = ST_IDLE
        :: else
        fi;
#endif
        res = false
    :: state[cb] == ST_IDLE || state[cb] == ST_UNSET ->
        res = false
    fi;
    unlock()
}

/* The user's fn, run by the thread that runs it in C. */
inline fn(cb)
{
    assert(!freed[cb]);                                 /* P2 */
    runs[cb]++;
    assert(runs[cb] == 1);                              /* P1: at most once */
    ran_on[cb] = _pid;
    in_fn[_pid] = 1;
    if
    :: true ->                                          /* removes itself */
        cb_remove(cb, fres);
        assert(fres == false)                           /* P4 */
    :: true
    fi;
    in_fn[_pid] = 0;
    assert(!freed[cb]);                                 /* P2: still ours */
    if
    :: mode[cb] == MODE_FNFREES -> freed[cb] = 1        /* fn frees its cb */
    :: else
    fi
}

/* cancel__run_callback_locked: called and returns with the lock held. */
inline run_callback_locked(cb)
{
    touch(cb);                          /* fn = cb->fn; arg = cb->arg */
    op_running[_pid] = cb + 1;
    unlock();
    fn(cb);                             /* cb may be freed from here on */
    lock();
#ifdef BROKEN_TOUCH
    touch(cb);                          /* e.g. cb->state = ST_IDLE */
#endif
    op_running[_pid] = 0;
    broadcast_locked()
}

/* cancel_callback_add(cb, t, fn, arg) -> res */
inline cb_add(cb, res)
{
    touch(cb);                          /* fn, arg, token, next, prev_link */
    lock();
    if
    :: reason == 0 ->
        loc[cb] = LOC_TOKEN;            /* pushed on t->callbacks */
        state[cb] = ST_ARMED;
        unlock();
        res = 0
    :: else ->                          /* already cancelled: run inline */
        state[cb] = ST_RUNNING;
        op_begin();
        run_callback_locked(cb);
        op_end();
        unlock();
        res = 1
    fi
}

/* transition_locked for the one token: set the reason once, move its
 * callbacks to the pending list. */
inline transition_locked()
{
    assert(reason == 0);                                /* P6 */
    reason = 1;
    pending_owner = _pid;
    k = 0;
    do
    :: k < NCB && loc[k] == LOC_TOKEN ->
        touch(k);                       /* last->reason = reason; links */
        loc[k] = LOC_PENDING;
        k++
    :: k < NCB && loc[k] != LOC_TOKEN -> k++
    :: k >= NCB -> break
    od;
    k = 0;
    lists_live()
}

/* cancel_token_cancel_at(t, ECANCELED) */
proctype canceller()
{
    byte k, cb, seq, who, fres;
    bool self;

    if
    :: reason != 0 -> goto out          /* the acquire load before the lock */
    :: else
    fi;
    lock();
    if
    :: reason != 0 -> unlock(); goto out
    :: else
    fi;
    op_begin();
    transition_locked();
    transitions++;
    /* walk_locked: the token has no children. */
    do
    :: true ->
        if                              /* pop under the lock, each time */
        :: loc[0] == LOC_PENDING -> cb = 0
        :: loc[1] == LOC_PENDING -> cb = 1
        :: else -> break
        fi;
        touch(cb);                      /* pending.head = cb->next */
        loc[cb] = LOC_NONE;
        lists_live();
        state[cb] = ST_RUNNING;
        run_callback_locked(cb)
    od;
    op_end();
    unlock();
out:
    done++
}

/* A thread that owns callback CB's storage. */
proctype owner(byte cb)
{
    byte k, res, seq, who, fres;
    bool self;

    cb_add(cb, res);
    if                                                  /* P5 */
    :: res == 1 -> assert(runs[cb] == 1 && ran_on[cb] == _pid)
    :: res == 0 -> assert(runs[cb] == 0 || ran_on[cb] != _pid)
    fi;
    if
    :: mode[cb] == MODE_REMOVE ->
        cb_remove(cb, res);
        removed_true[cb] = res;
        runner_of(cb, who);
        assert(who == NOBODY);                          /* P3 */
        cb_remove(cb, res);
        assert(res == false);           /* removing twice returns false */
        freed[cb] = 1
    :: else
    fi;
    done++
}

init {
    /* Each owner picks how it manages its storage. */
    if
    :: mode[0] = MODE_REMOVE
    :: mode[0] = MODE_FNFREES
    fi;
    if
    :: mode[1] = MODE_REMOVE
    :: mode[1] = MODE_FNFREES
    fi;
    atomic {
        run canceller();
        run canceller();
        run owner(0);
        run owner(1)
    }
    done == 4;
    /* P1: exactly once unless removed; P6: one transition. */
    assert(removed_true[0] && runs[0] == 0 || !removed_true[0] && runs[0] == 1);
    assert(removed_true[1] && runs[1] == 0 || !removed_true[1] && runs[1] == 1);
    assert(transitions == 1);
    assert(lock_holder == 0 && waiters == 0);
    assert(!op_active[1] && !op_active[2] && !op_active[3] && !op_active[4])
}

/* P7: every thread returns (no livelock; deadlocks too, by stuttering). */
ltl all_return { <> (done == 4) }

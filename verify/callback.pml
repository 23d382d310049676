/*
 * callback.pml - the callback protocol of the per-token core (Promela,
 * for spin): who runs or removes an armed callback, waiting for a run
 * under way, and when the callback's and the token's memory may go.
 *
 * Mirrors, function by function:
 *   src/callback.c  cancel_callback_add (armed, or run_inline_locked on a
 *                   cancelled token), cancel_callback_remove (the CAS
 *                   ARMED -> REMOVING before the token lock, then unlink,
 *                   cancel__drop_hold_locked, unref), remove_unarmed
 *   src/run.c       cancel__run_callback_locked (frame pushed on the
 *                   thread record under the record lock, RUNNER, the CAS
 *                   ARMED -> RUNNING, the frame replaces the callback on
 *                   the token's list, fn with the token unlocked, token
 *                   frame unlinked and record frame popped under T's lock,
 *                   GRAPH_WAITERS read
 *                   under the token lock, graph_broadcast),
 *                   cancel__wait_callback and runs (the record's frames,
 *                   never the token), cancel__wait_foreign_runs_locked and
 *                   foreign_run_locked, graph_enter, graph_leave
 *   src/token.c     cancel_token_cancel_at (flag, reference, run walk),
 *                   run_subtree and run_node_locked for a leaf (claim the
 *                   listed ARMED callbacks, wait for foreign runs, drop
 *                   the hold), cancel_token_unref and release_locked
 *                   (CANCEL_REFS_HOLD: listed callbacks keep a released
 *                   token), token_free
 *   src/internal.h  cancel__drop_hold_locked
 *
 * What is modelled.  One token T (a root: its children are tree.pml's
 * business), NCB callbacks (2 by default), each owned by its own thread,
 * and a cancelling thread.  T starts with a reference for each of them.
 * Each owner picks what its fn does (returns; removes its own callback
 * from inside; frees the callback's storage, in which case the owner never
 * touches it again), adds its callback (armed, or run inline if the cancel
 * came first), maybe releases its reference at once (then the listed
 * callback alone keeps T), removes the callback (unless fn frees it),
 * frees its storage, and releases its reference if it still has it.  The
 * canceller cancels T and releases its reference.  Memory is valid/freed
 * flags: the token is freed when its count reaches 0, a callback when its
 * owner (or fn) frees it; every access the library makes asserts the
 * memory is valid, locking T included (a lock on a freed token is a use
 * after free even while it waits).  Locks (T's, each record's, the graph
 * mutex) are test-and-set: critical sections whose accesses are all
 * guarded by the lock are one atomic step.  The condition variable is a
 * flag per waiter: cond_wait clears the mutex and sets it in one step, a
 * broadcast clears them all, a waiter wakes once its flag is clear and the
 * mutex free, or spuriously (once in the whole run).  A cancel picks any armed listed callback, a superset of the
 * list order C uses.  Sequentially consistent: every atomic the protocol
 * relies on is acquire/release or under a lock.
 *
 * Properties (all checked exhaustively; see verify/run.sh):
 *   C1 exactly once: fn never starts twice (assert in fn); at the end a
 *      callback whose remove returned true never ran, any other ran once.
 *   C2 after remove returns (in the owner) fn is not running and never
 *      starts (asserts at the return and at fn's start).
 *   C3 self-remove from inside fn returns false at once: never waits.
 *   C4 no use after free: no access to a freed callback (after fn freed
 *      it, or after the owner freed it) or to the freed token.
 *   C5 no leak: at the end T is freed (every reference and the hold gone).
 *   C6 no lost wake-up, no deadlock: no invalid end state (a remover or a
 *      canceller asleep on the condition variable for good, a thread stuck
 *      on a lock), nobody left counted in GRAPH_WAITERS; and the LTL
 *      property all_done: every thread returns.
 *
 * Seeded bugs (run.sh expects errors):
 *   -DBROKEN_LOCK_FIRST  remove locks the token before its CAS.  spin:
 *              "assertion violated (tok_valid)": the cancel ran the
 *              callback, fn returned, the run walk dropped the hold and
 *              every reference went: T is freed, and remove locks it.
 *   -DBROKEN_LATE_FRAME  the runner pushes its record frame after the
 *              CAS.  spin: "assertion violated": remove reads RUNNING,
 *              finds no frame on the runner's record, returns false, and
 *              the owner frees the callback while fn is about to run.
 *   -DBROKEN_EARLY_WAITERS  the runner reads GRAPH_WAITERS before it
 *              unlinks its frames.  spin: "invalid end state": it reads 0,
 *              the remover counts itself in, finds the frame, sleeps; the
 *              runner unlinks the frame and broadcasts nothing.
 */

#ifndef NCB
#define NCB      2
#endif
#define NPROC    5          /* init, the canceller (1), owners (2..), at most 3 */
#define CANCELLER 1

/* struct cancel_cb.state */
#define ST_UNSET    0
#define ST_ARMED    1
#define ST_REMOVING 2
#define ST_RUNNING  3
#define ST_IDLE     4

/* What an owner's fn does. */
#define FN_RETURNS  0
#define FN_SELF_REMOVE 1
#define FN_FREES    2

/* ---- the token ---- */
bit  tok_valid = 1;
bit  reason;
byte refs = NCB + 1;        /* the count (REFS & CANCEL_REFS_COUNT) */
bit  hold;                  /* CANCEL_REFS_HOLD */
byte tlock;                 /* 0 free, else the holder's _pid */
bit  listed[NCB];           /* on T's CALLBACKS list */
bit  tframe[NPROC];         /* the thread's run frame on T's list */

/* ---- callbacks ---- */
byte state[NCB];
byte runner[NCB];
bit  cb_valid[NCB];
byte mode[NCB];
byte ran[NCB];              /* times fn started */
bit  running[NCB];          /* fn between start and return */
bit  gone[NCB];             /* the owner's remove returned */
bit  removed_true[NCB];

/* ---- thread records ---- */
byte rlock[NPROC];          /* record lock, 0 free, else holder's _pid */
byte rframe[NPROC];         /* FRAMES: callback + 1 that it runs, 0 none */
bit  infn[NPROC];

/* ---- the wait graph ---- */
byte gmu;                   /* graph mutex holder, 0 free */
byte gwaiters;              /* GRAPH_WAITERS */
bit  spurious = 1;          /* spurious pthread_cond_wait returns left */
bit  cvw[NPROC];            /* asleep on the condition variable */

byte done;

#define anyframe (tframe[1] || tframe[2] || tframe[3] || tframe[4])
#define anylisted (listed[0] || listed[NCB - 1])
#define foreign(me) ((tframe[1] && me != 1) || (tframe[2] && me != 2) || \
                     (tframe[3] && me != 3) || (tframe[4] && me != 4))

inline tok_lock()
{
    assert(tok_valid);
    atomic { tlock == 0 -> assert(tok_valid); tlock = _pid }
}

inline tok_unlock()
{
    assert(tlock == _pid && tok_valid);
    tlock = 0
}

inline gmu_lock()
{
    atomic { gmu == 0 -> gmu = _pid }
}

/* pthread_cond_wait(&graph_cv, &graph_mu) */
inline cond_wait()
{
    atomic { assert(gmu == _pid); cvw[_pid] = 1; gmu = 0 };
    if                                  /* woken, or spuriously once per run */
    :: atomic { !cvw[_pid] && gmu == 0 -> gmu = _pid }
    :: atomic { spurious && gmu == 0 -> spurious = 0; cvw[_pid] = 0; gmu = _pid }
    fi
}

/* pthread_cond_broadcast, graph mutex held */
inline broadcast()
{
    d_step { assert(gmu == _pid); cvw[0] = 0; cvw[1] = 0; cvw[2] = 0; cvw[3] = 0; cvw[4] = 0 }
}

inline graph_broadcast()
{
    gmu_lock(); broadcast(); gmu = 0
}

inline graph_enter()
{
    atomic { gmu == 0 -> gmu = _pid; gwaiters++ }
}

inline graph_leave()
{
    atomic { gwaiters--; gmu = 0 }
}

/* runs(owner, cb): under the owner's record lock. */
inline runs(o, cb, found)
{
    atomic { rlock[o] == 0 -> found = (rframe[o] == cb + 1) }
}

/* Push/pop our record frame: one critical section of the record lock. */
inline rec_push(cb)
{
    atomic { rlock[_pid] == 0 -> rframe[_pid] = cb + 1 }
}

inline rec_pop()
{
    atomic { rlock[_pid] == 0 -> rframe[_pid] = 0 }
}

/* cancel__drop_hold_locked (T locked) */
inline drop_hold(f)
{
    d_step {
        assert(tlock == _pid);
        if
        :: hold && !anylisted && !anyframe -> hold = 0; f = 1
        :: else -> f = 0
        fi
    }
}

/* cancel_token_unref(T), T a root */
inline unref()
{
    atomic {
        assert(tok_valid);
        if
        :: refs > 1 -> refs--; u_last = 0
        :: else -> u_last = 1
        fi
    };
    if
    :: u_last ->
        tok_lock();
        d_step {                        /* release_locked */
            assert(refs == 1 && !hold); /* else released_twice */
            if
            :: anylisted || anyframe -> hold = 1; u_dead = 0
            :: else -> refs = 0; u_dead = 1
            fi
        };
        tok_unlock();
        if
        :: u_dead -> tok_valid = 0      /* token_free */
        :: else
        fi;
        u_dead = 0; u_last = 0
    :: else
    fi
}

/* The callback's fn, on the runner's thread. */
inline fn(cb)
{
    d_step {
        assert(!gone[cb]);              /* C2: never starts after remove returned */
        assert(ran[cb] == 0);           /* C1 */
        ran[cb] = 1; running[cb] = 1
    };
    if
    :: mode[cb] == FN_SELF_REMOVE ->
        infn[_pid] = 1;
        remove(cb, f_res);
        assert(!f_res);                 /* C3 */
        infn[_pid] = 0
    :: mode[cb] == FN_FREES -> cb_valid[cb] = 0
    :: else
    fi;
    running[cb] = 0
}

/* cancel__wait_callback(cb) -> ok (false: fn runs on this very thread) */
inline wait_callback(cb, ok)
{
    atomic { assert(cb_valid[cb]); w_o = runner[cb] };
    runs(w_o, cb, w_f);
    if
    :: !w_f -> ok = 1
    :: w_f && w_o == _pid -> ok = 0
    :: w_f && w_o != _pid ->
        assert(!infn[_pid]);            /* C3: self-remove never waits */
        graph_enter();
        do
        :: true ->
            runs(w_o, cb, w_f);
            if
            :: w_f -> cond_wait()
            :: else -> break
            fi
        od;
        graph_leave();
        ok = 1
    fi;
    w_o = 0; w_f = 0
}

/* cancel_callback_remove(cb) -> res */
inline remove(cb, res)
{
#ifdef BROKEN_LOCK_FIRST
    atomic { assert(cb_valid[cb]) };    /* t = cb->token */
    tok_lock();
#endif
    atomic {
        assert(cb_valid[cb]);
        r_s = state[cb];
        if
        :: r_s == ST_ARMED -> state[cb] = ST_REMOVING
        :: else
        fi
    };
    if
    :: r_s == ST_ARMED ->
#ifndef BROKEN_LOCK_FIRST
        tok_lock();
#endif
        d_step { assert(cb_valid[cb]); listed[cb] = 0; state[cb] = ST_IDLE };
        drop_hold(r_f);
        tok_unlock();
        if
        :: r_f -> unref()               /* release_and_report_removed */
        :: else
        fi;
        res = 1
    :: r_s == ST_RUNNING ->
#ifdef BROKEN_LOCK_FIRST
        tok_unlock();
#endif
        wait_callback(cb, r_f);         /* remove_unarmed */
        if
        :: r_f -> atomic { assert(cb_valid[cb]); state[cb] = ST_IDLE }
        :: else
        fi;
        res = 0
    :: else ->
#ifdef BROKEN_LOCK_FIRST
        tok_unlock();
#endif
        res = 0
    fi;
    r_s = 0; r_f = 0
}

/* cancel__run_callback_locked(T, cb) -> rc_ok (T locked, referenced) */
inline run_callback(cb)
{
    assert(tlock == _pid && tok_valid);
#ifndef BROKEN_LATE_FRAME
    rec_push(cb);                       /* on the record before the claim */
#endif
    atomic {
        assert(cb_valid[cb]);
        runner[cb] = _pid;
        if
        :: state[cb] == ST_ARMED -> state[cb] = ST_RUNNING; rc_ok = 1
        :: else -> rc_ok = 0
        fi
    };
    if
    :: !rc_ok ->
#ifndef BROKEN_LATE_FRAME
        rec_pop()
#else
        skip
#endif
    :: rc_ok ->
#ifdef BROKEN_LATE_FRAME
        rec_push(cb);
#endif
        /* the frame takes the callback's place; read fn, arg, reason */
        d_step { assert(cb_valid[cb] && tok_valid); listed[cb] = 0; tframe[_pid] = 1 };
        tok_unlock();
        fn(cb);                         /* CB is FN's from here on */
#ifdef BROKEN_EARLY_WAITERS
        rc_w = gwaiters;
#endif
        tok_lock();
        tframe[_pid] = 0;
        rec_pop();                      /* both unlinks in one section of T's lock */
#ifndef BROKEN_EARLY_WAITERS
        rc_w = gwaiters;                /* under T's lock, after the unlinks */
#endif
        if
        :: rc_w -> tok_unlock(); graph_broadcast(); tok_lock()
        :: else
        fi;
        rc_w = 0
    fi
}

/* cancel__wait_foreign_runs_locked(T) */
inline wait_foreign_runs()
{
    if
    :: foreign(_pid) ->
        tok_unlock();
        graph_enter();
        tok_lock();
        do
        :: foreign(_pid) -> tok_unlock(); cond_wait(); tok_lock()
        :: else -> break
        od;
        broadcast();
        graph_leave()
    :: else
    fi
}

proctype canceller()
{
    byte rc_ok, rc_w, f_res, r_s, r_f, w_o, w_f, u_last, u_dead;
    bit  dorun;

    atomic { assert(tok_valid); !reason };  /* the unlocked fast check */
    tok_lock();
    reason = 1;                         /* flag_locked */
    dorun = anylisted || anyframe;
    if
    :: dorun ->
        atomic { assert(tok_valid && refs > 0); refs++ };  /* cancel_token_ref */
        tok_unlock();
        /* run_subtree(T) of a leaf: run_node_locked */
        tok_lock();
        do
        :: atomic { listed[0] && state[0] == ST_ARMED } -> run_callback(0)
        :: atomic { listed[NCB - 1] && state[NCB - 1] == ST_ARMED } -> run_callback(NCB - 1)
        :: else -> break
        od;
        wait_foreign_runs();
        drop_hold(r_f);
        if
        :: r_f -> d_step { assert(refs > 1); refs-- }
        :: else
        fi;
        tok_unlock();
        unref()                         /* the run walk's reference */
    :: else -> tok_unlock()
    fi;
    unref();                            /* the caller's */
    done++
}

proctype owner(byte cb)
{
    byte rc_ok, rc_w, f_res, r_s, r_f, w_o, w_f, u_last, u_dead, res;
    bit  early;

    cb_valid[cb] = 1;
    if
    :: mode[cb] = FN_RETURNS
    :: mode[cb] = FN_SELF_REMOVE
    :: mode[cb] = FN_FREES
    fi;
    /* cancel_callback_add */
    tok_lock();
    if
    :: reason ->                        /* run_inline_locked */
        atomic { assert(tok_valid && refs > 0); refs++ };
        state[cb] = ST_ARMED;           /* linked to itself: not listed */
        run_callback(cb);
        tok_unlock();
        unref()
    :: else ->
        d_step { listed[cb] = 1; state[cb] = ST_ARMED };
        tok_unlock()
    fi;
    if
    :: early = 1; unref()               /* the listed callback keeps T */
    :: early = 0
    fi;
    if
    :: mode[cb] != FN_FREES ->
        remove(cb, res);
        d_step {
            assert(!running[cb]);       /* C2 */
            gone[cb] = 1;
            removed_true[cb] = res;
            assert(!res || ran[cb] == 0);
            cb_valid[cb] = 0            /* the owner frees the storage */
        }
    :: else
    fi;
    if
    :: !early -> unref()
    :: else
    fi;
    done++
}

init {
    byte i;
    assert(NCB == 1 || NCB == 2); /* anylisted and the canceller name both */
    atomic {
        run canceller();
        i = 0;
        do
        :: i < NCB -> run owner(i); i++
        :: else -> break
        od
    };
    done == NCB + 1;
    assert(!tok_valid);                 /* C5 */
    assert(gwaiters == 0 && gmu == 0);
    i = 0;
    do
    :: i < NCB ->
        assert(removed_true[i] && ran[i] == 0 || !removed_true[i] && ran[i] == 1);  /* C1 */
        i++
    :: else -> break
    od
}

ltl all_done { <> (done == NCB + 1) }

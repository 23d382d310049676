/*
 * wakeup.pml - a blocking wrapper against a concurrent cancel (Promela,
 * for spin): no lost wakeup, whether the cancel lands before, during or
 * after the waiter's check.
 *
 * Mirrors, function by function:
 *   src/wake.c      cancel__wait_ready (fast-path reason check, add, ppoll
 *                   loop, remove, drain), wake_cb, drain
 *   src/io.c        cancel_read, rw_cancel, wait_one: check the token, read
 *                   without blocking (RWF_NOWAIT), else wait and loop
 *   src/callback.c  cancel_callback_add, cancel_callback_remove (as seen
 *                   from the waiter: add reads the reason and links the
 *                   callback in one critical section of the token lock)
 *   src/token.c     cancel_token_cancel_at (the reason set under the token
 *                   lock, callbacks run with it dropped)
 *   The token core is abstracted as it was before the per-token rewrite
 *   (one lock, a pending list, an op record naming the running callback):
 *   what the wake protocol relies on (reason and list under one lock,
 *   remove waits for a running fn) is unchanged, and the per-token
 *   protocol itself is checked by callback.pml, tree.pml and lock.pml.
 *
 * What is modelled.  A waiter thread makes two consecutive wrapped reads
 * (cancel_read of one byte) on one data fd under its current token.  Each
 * read loops as rw_cancel does: check the token, read without blocking,
 * else wait (cancel__wait_ready) and go round.  The waits share the
 * thread's eventfd (the wake fd) and reuse one callback storage (a stack
 * slot).  A
 * writer thread writes the data fd (a byte counter) 0, 1 or 2 times; a
 * canceller thread cancels the token or not.  init picks every scenario in
 * which each wait has a reason to return: two writes, or a cancel, or both.
 * The eventfd is a counter: wake_cb adds 1, drain sets it to 0, and ppoll
 * returns when it is non-zero or the data fd has bytes (a level, not an
 * edge: that is why no wakeup can be lost between "checked" and "asleep").
 * ppoll may return once spuriously (EINTR) in the whole run.  Token core:
 * as in callback.pml (one lock, the reason set once under it, callbacks
 * moved to the canceller's pending list under it and run with it dropped,
 * the running callback recorded in the canceller's op record).
 *
 * Not modelled: the degraded mode without an eventfd (10 ms polling),
 * deadlines (a deadline is a cancel by the timer thread: same protocol),
 * weak memory (every atomic the protocol relies on is acquire/release or
 * under the lock; spin explores sequentially consistent interleavings).
 *
 * Properties (all checked exhaustively; see verify/run.sh):
 *   W1 no lost wakeup: the waiter always returns from both reads, in every
 *      scenario: no invalid end state (the waiter stuck in ppoll) and the
 *      LTL property terminates, <> waiter_done (no livelock either).
 *   W2 ECANCELED consumes nothing: a read that fails with ECANCELED leaves
 *      every byte in the fd and the token is really cancelled; a read that
 *      returns data took exactly one byte; at the end written == consumed
 *      + left in the fd.
 *   W3 no stale wake: the eventfd counter is 0 when each wait starts and
 *      when it returns, so the second wait cannot be woken by the first's.
 *   W4 no use after remove: the library touches the callback storage only
 *      during the wait that armed it, and wake_cb writes only for that
 *      wait.
 *   W5 sticky: a read that starts after the cancel returned fails with
 *      ECANCELED; with no cancel both reads return data.
 *
 * The seeded bug (-DBROKEN): check-then-register without the lock.  The
 * waiter decides from its unlocked fast-path check that the token is live
 * and links the callback without looking at the reason again under the
 * lock.  A cancel that lands between the check and the link finds no
 * callback to run; the waiter then sleeps in ppoll forever.  spin finds it
 * in a few milliseconds (run.sh expects it):
 *     safety run:   pan:1: invalid end state (at depth 94)
 *     liveness run: pan:1: acceptance cycle
 * The safety trail (spin -DBROKEN -t -p wakeup.pml), scenario "one write
 * and a cancel": the first read takes the byte without waiting; the
 * second read finds the token live and the fd empty, and wait_ready's
 * unlocked check reads the token live; the cancel then runs to the end
 * (reason set, no callback on the list, nothing to run); the waiter links
 * its callback and sleeps in ppoll with the eventfd at 0 and no byte to
 * come.  The correct add (reason read under the lock that the cancel holds
 * while it sets the reason and takes the list) leaves no such window.
 */

#define NPROC    5          /* init, waiter, writer, canceller, spare */
#define NOBODY   255

#define ST_UNSET   0
#define ST_ARMED   1
#define ST_RUNNING 2
#define ST_IDLE    3

#define LOC_NONE    0
#define LOC_TOKEN   1
#define LOC_PENDING 2

#define READY     1
#define ECANCELED 2

/* ---- cancel__lock and the wait queue (lock.c) ---- */
byte lock_holder;           /* 0: free, else _pid + 1 */
byte wait_seq;
byte waiters;

/* ---- the token ---- */
bit  reason;
bit  cancel_returned;       /* cancel_token_cancel returned true */

/* ---- the waiter's callback (one stack slot, reused by each wait) ---- */
byte state;
byte loc;
bit  cb_live;               /* inside the wait that armed it */
byte cb_gen;                /* which wait armed it (1, 2) */

/* ---- struct cancel_op records: one per thread ---- */
bit  op_active[NPROC];
bit  op_running[NPROC];     /* runs the waiter's callback */

/* ---- file descriptors ---- */
byte efd;                   /* the waiter's eventfd counter */
byte data;                  /* bytes in the data fd */
byte written;
byte consumed;
bit  eintr = 1;             /* spurious ppoll returns left in the run */

/* ---- scenario and outcome ---- */
byte n_writes;
bit  do_cancel;
byte result[2];
bit  waiter_done;

inline lock()
{
    atomic { lock_holder == 0 -> lock_holder = _pid + 1 }
}

inline unlock()
{
    assert(lock_holder == _pid + 1);
    lock_holder = 0
}

inline wait_locked()
{
    seq = wait_seq;
    waiters++;
    unlock();
    wait_seq != seq;
    lock();
    waiters--
}

inline broadcast_locked()
{
    if
    :: waiters > 0 -> wait_seq++
    :: else
    fi
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

/* runner_of(cb): the waiter's callback is the only one. */
inline runner_of(who)
{
    d_step {
        who = NOBODY;
        k = 0;
        do
        :: k < NPROC && op_active[k] && op_running[k] -> who = k; break
        :: k < NPROC && !(op_active[k] && op_running[k]) -> k++
        :: k >= NPROC -> break
        od;
        k = 0
    }
}

/* wake_cb: write 1 to the waiter's eventfd.  GEN: the arming it was run for. */
inline wake_cb(gen)
{
    assert(cb_live && gen == cb_gen);                   /* W4 */
    efd++
}

/* cancel__run_callback_locked for the waiter's callback. */
inline run_callback_locked()
{
    assert(cb_live);                                    /* W4: reads fn, arg */
    gen = cb_gen;
    op_running[_pid] = 1;
    unlock();
    wake_cb(gen);
    lock();
    op_running[_pid] = 0;
    broadcast_locked()
}

/* cancel_token_cancel_at(t, ECANCELED) */
proctype canceller()
{
    byte k, gen;

    if
    :: reason != 0 -> goto out
    :: else
    fi;
    lock();
    if
    :: reason != 0 -> unlock(); goto out
    :: else
    fi;
    op_begin();
    /* transition_locked: set the reason, take the token's callbacks. */
    reason = 1;
    if
    :: loc == LOC_TOKEN -> assert(cb_live); loc = LOC_PENDING
    :: else
    fi;
    /* Pop under the lock, run with it dropped. */
    if
    :: loc == LOC_PENDING ->
        assert(cb_live);
        loc = LOC_NONE;
        state = ST_RUNNING;
        run_callback_locked()
    :: else
    fi;
    op_end();
    unlock();
    cancel_returned = 1;
out:
    skip
}

proctype writer()
{
    byte i;
    do
    :: i < n_writes -> atomic { data++; written++ }; i++
    :: else -> break
    od
}

proctype waiter()
{
    byte k, w, who, seq, gen;
    bit  added, rdy, removed, sticky;
    byte wres;
    byte got;

    w = 0;
    do
    :: w < 2 ->
        /* ---- cancel_read -> rw_cancel (io.c) ---- */
        sticky = cancel_returned;
        got = consumed;
        do
        :: true ->
            if                                          /* cancelled(t) */
            :: reason != 0 -> result[w] = ECANCELED; break
            :: else
            fi;
            /* The read that never blocks (RWF_NOWAIT): data, or EAGAIN. */
            atomic {
                if
                :: data > 0 -> data--; consumed++; rdy = 1
                :: else -> rdy = 0
                fi
            };
            if
            :: rdy -> result[w] = READY; break
            :: else
            fi;
            /* ---- wait_one -> cancel__wait_ready(t, {fd, POLLIN}) (wake.c) ---- */
            assert(efd == 0);                           /* W3 */
            if
            :: reason != 0 -> wres = ECANCELED          /* its own first check */
            :: else ->
                /* cancel_callback_add(&cb, t, wake_cb, efd) */
                cb_gen = w + 1;
                cb_live = 1;
                lock();
#ifdef BROKEN
                /* Registers on the strength of the unlocked check above. */
                loc = LOC_TOKEN;
                state = ST_ARMED;
                unlock();
                added = 0;
#else
                if
                :: reason == 0 ->
                    loc = LOC_TOKEN;
                    state = ST_ARMED;
                    unlock();
                    added = 0
                :: else ->              /* cancelled since the check: inline */
                    state = ST_RUNNING;
                    op_begin();
                    run_callback_locked();
                    op_end();
                    unlock();
                    added = 1
                fi;
#endif
                if
                :: added == 1 ->
                    efd = 0;            /* drain */
                    cb_live = 0;
                    wres = ECANCELED
                :: else ->
                    /* ppoll on {data fd, eventfd}; then the reason wins. */
                    do
                    :: true ->
                        if
                        :: atomic { efd > 0 || data > 0 -> rdy = (data > 0) }
                        :: atomic { eintr > 0 -> eintr--; rdy = 0 }  /* -1, EINTR */
                        fi;
                        if
                        :: reason != 0 -> wres = ECANCELED; break
                        :: reason == 0 && rdy -> wres = READY; break
                        :: reason == 0 && !rdy -> skip  /* EINTR, or look again */
                        fi
                    od;
                    /* cancel_callback_remove(&cb): false means wake_cb ran. */
                    lock();
                    assert(cb_live);
                    if
                    :: state == ST_ARMED ->
                        loc = LOC_NONE;
                        state = ST_IDLE;
                        removed = 1
                    :: state == ST_RUNNING ->
                        do
                        :: true ->
                            runner_of(who);
                            if
                            :: who == NOBODY -> break
                            :: else -> assert(who != _pid); wait_locked()
                            fi
                        od;
                        state = ST_IDLE;
                        removed = 0
                    fi;
                    unlock();
                    if
                    :: !removed -> efd = 0      /* drain */
                    :: else
                    fi;
                    cb_live = 0
                fi
            fi;
            assert(efd == 0);                           /* W3 */
            if
            :: wres == ECANCELED -> result[w] = ECANCELED; break
            :: else                     /* ready: read again */
            fi
        od;
        if
        :: result[w] == ECANCELED ->
            assert(reason != 0 && consumed == got)      /* W2 */
        :: result[w] == READY ->
            assert(consumed == got + 1)                 /* W2 */
        fi;
        assert(!sticky || result[w] == ECANCELED);      /* W5 */
        w++
    :: else -> break
    od;
    waiter_done = 1
}

init {
    /* Every scenario in which each wait has something to return for. */
    if
    :: n_writes = 2; do_cancel = 0
    :: n_writes = 2; do_cancel = 1
    :: n_writes = 1; do_cancel = 1
    :: n_writes = 0; do_cancel = 1
    fi;
    atomic {
        run waiter();
        run writer();
        if
        :: do_cancel -> run canceller()
        :: else
        fi
    }
    waiter_done;
    assert(written == consumed + data);                 /* W2 */
    assert(do_cancel || result[0] == READY && result[1] == READY);   /* W5 */
    assert(efd == 0)                                    /* W3 */
}

/* W1: the waiter always returns (both reads), deadlock or livelock alike. */
ltl terminates { <> waiter_done }

/*
 * tree.pml - cancel's two walks over a subtree against concurrent child
 * create and release and a concurrent cancel of an overlapping subtree
 * (Promela, for spin).
 *
 * Mirrors, function by function:
 *   src/token.c     cancel_token_cancel_at (unlocked check, lock, flag,
 *                   flag walk, reference, run walk), flag_locked,
 *                   flag_subtree_locked (ancestor-first path locks, skips
 *                   a subtree another cancel flagged but asks for the run
 *                   walk), run_subtree (a reference on the node it stands
 *                   on, ref_listed_locked / cancel__token_try_ref under
 *                   the parent's lock), run_node_locked (claim and run the
 *                   listed callbacks, wait for foreign runs, drop the
 *                   hold), cancel_token_child, cancel_token_unref and
 *                   release_locked (parent's lock, then the child's; the
 *                   count reaches 0 only under both; CANCEL_REFS_HOLD for
 *                   linked children and listed callbacks; the loop up the
 *                   chain), token_free
 *   src/run.c       cancel__run_callback_locked (claim, the frame on the
 *                   token, fn unlocked, unlink, GRAPH_WAITERS under the
 *                   token lock), cancel__wait_foreign_runs_locked,
 *                   foreign_run_locked, graph_enter/leave/broadcast
 *   src/internal.h  cancel__drop_hold_locked
 *
 * What is modelled.  A tree R -> {A, B}, A -> {G}; G has one armed
 * callback.  Thread 1 cancels R, thread 2 cancels A (an overlapping
 * subtree), thread 3 creates a child N of A, then releases B, G, N and A
 * (its references; thread 2 holds another one on A, thread 1 the only one
 * on R), while the cancels walk.  Each cancelling thread releases its
 * reference after its cancel returns, so at the end everything must be
 * freed, through the holds.  Lists are first_child/next_sibling arrays as
 * in C (the unlink searches the predecessor instead of keeping
 * prev_link).  Memory is valid/freed flags: every access to a node (its
 * lock, its links, its count) asserts it is valid.  Locks are
 * test-and-set per node; critical sections whose accesses are all
 * guarded by the locks held are single steps.  The callback protocol
 * itself (remove, record frames) is callback.pml's; the wait graph is
 * the same mutex, flag-per-waiter condition variable (one spurious
 * wake-up per run) and GRAPH_WAITERS count.  fn here only marks itself running: callbacks that cancel other
 * trees (the cycle check, closes_cycle) are not modelled.
 *
 * Properties (all checked exhaustively; see verify/run.sh):
 *   T1 a cancel that returns true returns only after every node then
 *      linked in its subtree reads cancelled and the callback of G has run
 *      to completion (assert at the return).
 *   T2 the callback runs exactly once (assert in fn, and at the end).
 *   T3 no use after free of any node (asserts at every access), and a
 *      count reaches 0 only under the parent's lock and the node's own.
 *   T4 no leak: at the end every node is freed.
 *   T5 no deadlock, no lost wake-up: no invalid end state, and the LTL
 *      property all_done.
 *
 * Seeded bugs (run.sh expects errors):
 *   -DBROKEN_SKIP_FLAGGED  the flag walk, meeting a subtree another cancel
 *              flagged, does not ask for the run walk.  spin: "assertion
 *              violated" (T1): cancel(A) flagged A and G and is about to
 *              run G's callback; cancel(R) flags R and B, skips A and, with
 *              no callback of its own, returns before the callback ran.
 *   -DBROKEN_RELEASE_NO_PARENT_LOCK  release takes only the child's lock
 *              to unlink it from its parent's list (and the parent's only
 *              afterwards, to drop the parent's hold).  spin: "assertion
 *              violated (...valid...)": A's last release unlinks A from R
 *              while cancel(R), holding R's lock, sees R with no child,
 *              returns and frees R; the release then locks R, freed under
 *              it (a walker stepping to a freed B is the same bug).
 */

#define NONE  7
#define R     0
#define A     1
#define B     2
#define G     3
#define N     4
#define NPROC 4             /* init, cancel(R), cancel(A), the creator/releaser */

#define ST_ARMED   1
#define ST_RUNNING 2

/* ---- nodes (arrays of 8 so that index NONE is harmless) ---- */
bit  valid[8];
bit  linked[8];             /* on its parent's list */
bit  reason[8];
byte refs[8];
bit  hold[8];
byte lockh[8];              /* lock holder _pid, 0 free */
byte parent[8];
byte first_child[8];
byte next_sibling[8];

/* ---- G's callback, and the run frame ---- */
byte cbstate = ST_ARMED;
bit  cblisted = 1;          /* on G's CALLBACKS */
byte ran;
bit  running;
byte frame_node = NONE;     /* the token whose list holds the frame */
byte frame_owner;

/* ---- the wait graph ---- */
byte gmu;
byte gwaiters;
bit  spurious = 1;          /* spurious pthread_cond_wait returns left */
bit  cvw[NPROC];

byte done;

#define has_callbacks(t) ((t == G && cblisted) || frame_node == t)
#define foreign(t) (frame_node == t && frame_owner != _pid)
/* Linked in T's subtree (depth at most 2 below T). */
#define insub(n, t) (valid[n] && (n == t || linked[n] && (parent[n] == t || \
                     linked[parent[n]] && parent[parent[n]] == t)))

inline lock(n)
{
    assert(valid[n]);
    atomic { lockh[n] == 0 -> assert(valid[n]); lockh[n] = _pid }
}

inline unlock(n)
{
    assert(lockh[n] == _pid && valid[n]);
    lockh[n] = 0
}

inline cond_wait()
{
    atomic { assert(gmu == _pid); cvw[_pid] = 1; gmu = 0 };
    if                                  /* woken, or spuriously once per run */
    :: atomic { !cvw[_pid] && gmu == 0 -> gmu = _pid }
    :: atomic { spurious && gmu == 0 -> spurious = 0; cvw[_pid] = 0; gmu = _pid }
    fi
}

inline broadcast()
{
    d_step { assert(gmu == _pid); cvw[1] = 0; cvw[2] = 0; cvw[3] = 0 }
}

inline graph_broadcast()
{
    atomic { gmu == 0 -> gmu = _pid }; broadcast(); gmu = 0
}

/* cancel__drop_hold_locked(t) -> f */
inline drop_hold(t, f)
{
    d_step {
        assert(lockh[t] == _pid && valid[t]);
        if
        :: hold[t] && !has_callbacks(t) && first_child[t] == NONE -> hold[t] = 0; f = 1
        :: else -> f = 0
        fi
    }
}

/* cancel_token_ref: the caller holds a counted reference. */
inline ref(t)
{
    atomic { assert(valid[t] && refs[t] > 0); refs[t]++ }
}

/* cancel_token_unref(x): the fast path, then the loop up the chain. */
inline unref(x)
{
    u_t = x;
    atomic {
        assert(valid[u_t]);
        if
        :: refs[u_t] > 1 -> refs[u_t]--; u_t = NONE
        :: else -> assert(refs[u_t] == 1 && !hold[u_t])     /* else released_twice */
        fi
    };
    do
    :: u_t == NONE -> break
    :: else ->
        atomic { assert(valid[u_t]); u_p = parent[u_t] };
#ifndef BROKEN_RELEASE_NO_PARENT_LOCK
        if
        :: u_p != NONE -> lock(u_p)
        :: else
        fi;
#endif
        lock(u_t);
        d_step {                        /* release_locked */
            if
            :: refs[u_t] > 1 -> refs[u_t]--; u_dead = 0     /* a try_ref meanwhile */
            :: else ->
                assert(refs[u_t] == 1 && !hold[u_t]);
                if
                :: has_callbacks(u_t) || first_child[u_t] != NONE -> hold[u_t] = 1; u_dead = 0
                :: else ->
#ifndef BROKEN_RELEASE_NO_PARENT_LOCK
                    assert(u_p == NONE || lockh[u_p] == _pid);  /* T3: both locks */
#endif
                    refs[u_t] = 0; u_dead = 1;
                    if
                    :: u_p != NONE ->
                        assert(valid[u_p]);
                        linked[u_t] = 0;
                        if
                        :: first_child[u_p] == u_t -> first_child[u_p] = next_sibling[u_t]
                        :: else ->
                            u_q = first_child[u_p];
                            do
                            :: next_sibling[u_q] == u_t ->
                                next_sibling[u_q] = next_sibling[u_t]; break
                            :: else -> u_q = next_sibling[u_q]
                            od
                        fi
                    :: else
                    fi
                fi
            fi
        };
        unlock(u_t);
        u_n = NONE;
        if
        :: u_dead && u_p != NONE ->
#ifdef BROKEN_RELEASE_NO_PARENT_LOCK
            lock(u_p);
#endif
            drop_hold(u_p, u_f);
#ifdef BROKEN_RELEASE_NO_PARENT_LOCK
            unlock(u_p);
#endif
            if
            :: u_f -> u_n = u_p
            :: else
            fi
        :: else
        fi;
#ifndef BROKEN_RELEASE_NO_PARENT_LOCK
        if
        :: u_p != NONE -> unlock(u_p)
        :: else
        fi;
#endif
        if
        :: u_dead -> valid[u_t] = 0     /* token_free */
        :: else
        fi;
        u_t = u_n
    od;
    u_p = 0; u_q = 0; u_n = 0; u_dead = 0; u_f = 0
}

/* fn of G's callback. */
inline fn()
{
    d_step { assert(ran == 0); ran = 1; running = 1 };     /* T2 */
    running = 0
}

/* cancel__run_callback_locked(t, G's callback), t locked and referenced */
inline run_callback(t)
{
    atomic {
        if
        :: cbstate == ST_ARMED -> cbstate = ST_RUNNING; rc_ok = 1
        :: else -> rc_ok = 0
        fi
    };
    if
    :: rc_ok ->
        d_step { assert(lockh[t] == _pid); cblisted = 0; frame_node = t; frame_owner = _pid };
        unlock(t);
        fn();
        lock(t);
        frame_node = NONE;
        rc_w = gwaiters;                /* under T's lock, after the unlink */
        if
        :: rc_w -> unlock(t); graph_broadcast(); lock(t)
        :: else
        fi;
        rc_w = 0
    :: else
    fi;
    rc_ok = 0
}

inline wait_foreign_runs(t)
{
    if
    :: foreign(t) ->
        unlock(t);
        atomic { gmu == 0 -> gmu = _pid; gwaiters++ };     /* graph_enter */
        lock(t);
        do
        :: foreign(t) -> unlock(t); cond_wait(); lock(t)
        :: else -> break
        od;
        broadcast();
        atomic { gwaiters--; gmu = 0 }                      /* graph_leave */
    :: else
    fi
}

/* run_node_locked(t) */
inline run_node(t)
{
    do
    :: atomic { t == G && cblisted && cbstate == ST_ARMED } -> run_callback(t)
    :: else -> break
    od;
    wait_foreign_runs(t);
    drop_hold(t, u_f);
    if
    :: u_f -> d_step { assert(refs[t] > 1); refs[t]-- }
    :: else
    fi;
    u_f = 0
}

/* ref_listed_locked(c0) -> res (the parent locked) */
inline ref_listed(c0, res)
{
    res = c0;
    do
    :: res == NONE -> break
    :: else ->
        atomic {
            assert(valid[res]);
            if
            :: refs[res] > 0 -> refs[res]++; break
            :: else -> res = next_sibling[res]
            fi
        }
    od
}

/* flag_subtree_locked(root) -> dorun |= ... (root locked, flagged) */
inline flag_subtree(root)
{
    node = root;
    atomic { assert(valid[node]); child = first_child[node] };
    do
    :: child != NONE ->
        lock(child);
        if
        :: reason[child] ->
#ifndef BROKEN_SKIP_FLAGGED
            dorun = 1;                  /* another cancel's subtree */
#endif
            unlock(child);
            atomic { assert(valid[child]); child = next_sibling[child] }
        :: else ->
            d_step { reason[child] = 1; dorun = dorun || has_callbacks(child) };
            node = child;
            child = first_child[node]
        fi
    :: child == NONE && node == root -> break
    :: child == NONE && node != root ->
        atomic { assert(valid[node]); child = next_sibling[node]; p = parent[node] };
        unlock(node);
        node = p
    od
}

/* run_subtree(root), root referenced by the caller */
inline run_subtree(root)
{
    node = root;
    do
    :: true ->
        lock(node);
        run_node(node);
        ref_listed(first_child[node], next);
        unlock(node);
        if
        :: next != NONE && node != root -> unref(node)
        :: else
        fi;
        do
        :: next == NONE && node == root -> goto walked
        :: next == NONE && node != root ->
            atomic { assert(valid[node]); p = parent[node] };
            lock(p);
            atomic { assert(valid[node]); c = next_sibling[node] };
            ref_listed(c, next);
            if
            :: next == NONE && p != root -> ref(p)
            :: else
            fi;
            unlock(p);
            unref(node);
            if
            :: next == NONE -> node = p
            :: else
            fi
        :: else -> break
        od;
        node = next
    od;
walked:
    skip
}

/* cancel_token_cancel(t) -> won */
inline cancel(t)
{
    won = 0;
    atomic { assert(valid[t]); won = reason[t] };  /* the unlocked check */
    if
    :: won -> won = 0                   /* false at once */
    :: else -> lock(t)
    fi;
    if
    :: lockh[t] != _pid
    :: lockh[t] == _pid && reason[t] -> unlock(t)
    :: lockh[t] == _pid && !reason[t] ->
        won = 1;
        d_step { reason[t] = 1; dorun = has_callbacks(t) };    /* flag_locked */
        flag_subtree(t);
        if
        :: !dorun -> unlock(t)
        :: else ->
            ref(t);
            unlock(t);
            run_subtree(t);
            unref(t)
        fi
    fi;
    /* T1 */
    d_step {
        assert(!won || (ran == 1 && !running));
        assert(!won || !insub(R, t) || reason[R]);
        assert(!won || !insub(A, t) || reason[A]);
        assert(!won || !insub(B, t) || reason[B]);
        assert(!won || !insub(G, t) || reason[G]);
        assert(!won || !insub(N, t) || reason[N])
    }
}

proctype canceller(byte t)
{
    byte node, child, p, c, next, rc_ok, rc_w, u_t, u_p, u_q, u_n;
    bit  dorun, won, u_dead, u_f;

    cancel(t);
    unref(t);
    done++
}

proctype user()
{
    byte u_t, u_p, u_q, u_n;
    bit  u_dead, u_f;

    /* cancel_token_child(A) */
    d_step { valid[N] = 1; refs[N] = 1; parent[N] = A; first_child[N] = NONE };
    lock(A);
    d_step {
        reason[N] = reason[A];
        next_sibling[N] = first_child[A];
        first_child[A] = N;
        linked[N] = 1
    };
    unlock(A);
    unref(B);
    unref(G);
    unref(N);
    unref(A);
    done++
}

init {
    d_step {
        valid[R] = 1; valid[A] = 1; valid[B] = 1; valid[G] = 1;
        linked[A] = 1; linked[B] = 1; linked[G] = 1;
        refs[R] = 1; refs[A] = 2; refs[B] = 1; refs[G] = 1;
        parent[R] = NONE; parent[A] = R; parent[B] = R; parent[G] = A; parent[N] = NONE;
        first_child[R] = A; first_child[A] = G; first_child[B] = NONE;
        first_child[G] = NONE; first_child[N] = NONE;
        next_sibling[R] = NONE; next_sibling[A] = B; next_sibling[B] = NONE;
        next_sibling[G] = NONE; next_sibling[N] = NONE
    };
    atomic { run canceller(R); run canceller(A); run user() };
    done == 3;
    /* T2, T4 */
    assert(ran == 1 && !running);
    assert(!valid[R] && !valid[A] && !valid[B] && !valid[G] && !valid[N]);
    assert(gwaiters == 0 && gmu == 0)
}

ltl all_done { <> (done == 3) }

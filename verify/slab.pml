/*
 * slab.pml - the token slabs' give-back count (Promela, for spin).
 *
 * What it models (src/token_mem.c):
 *   carve            the carver hands out the blocks of its slab in order
 *                    (writing each block's tail, which is a use of the
 *                    slab's memory)
 *   slab_abandon     when the carver moves on to a new slab or exits, it
 *                    gives back the blocks it never carved
 *   block_give_back  any thread that frees a block (its cache full, or at
 *                    its exit) gives back one
 *   slab_give_back   atomic_fetch_sub of N from LIVE (set to SLAB_BLOCKS
 *                    when the slab is made); whoever brings it to zero
 *                    frees the slab
 * A slab of B blocks: the carver carves some (it may stop at any point),
 * hands each to one of two other threads or frees it itself (now, or
 * after it abandoned the slab), then abandons; the other threads free
 * what they were handed.  Interleavings are spin's; the count is an
 * atomic read-modify-write, so memory order plays no part here: (S1) in
 * token_mem.c is acq_rel only so that every giver's writes to its blocks
 * happen before the free.
 *
 * Properties:
 *   - the slab is freed at most once, and never while a block of it is
 *     still being used (assertions: no double free, no use after free);
 *   - once every thread is done, the slab has been freed (no leak:
 *     a slab whose blocks all came back is not left allocated).
 *
 * Seeded bugs (verify/run.sh expects each to be caught):
 *   -DBROKEN_ABANDON_ALL   abandon gives back every block, carved or not:
 *                          a handed-out block is used after the free.
 *   -DBROKEN_NO_ABANDON    abandon gives back nothing: the slab leaks.
 *   -DBROKEN_SPLIT_SUB     the give-back reads LIVE and stores LIVE - N in
 *                          two steps: two givers race, one decrement is
 *                          lost, the slab leaks (or is freed twice).
 */

#define B 3
#define NONE 255

byte live;          /* blocks not given back */
byte frees;         /* times the slab was freed */
bit carver_done;
byte done;
chan handoff = [B] of { byte };

inline use_block(i)
{
    assert(frees == 0)
}

inline give_back(n)
{
#ifdef BROKEN_SPLIT_SUB
    old = live;
    live = old - (n);
#else
    d_step { old = live; live = live - (n) }
#endif
    if
    :: old == (n) -> assert(frees == 0); frees++
    :: else -> skip
    fi
}

proctype carver()
{
    byte i = 0;
    byte kept = NONE;   /* a block it frees only after abandoning the slab */
    byte old;
    do
    :: i < B ->
        use_block(i);   /* the tail's index */
        if
        :: handoff!i
        :: use_block(i); give_back(1)
        :: kept == NONE -> kept = i
        fi;
        i++
    :: break            /* a new slab, or the thread exits */
    od;
#if defined(BROKEN_ABANDON_ALL)
    give_back(B);
#elif defined(BROKEN_NO_ABANDON)
    skip;
#else
    if
    :: i < B -> give_back(B - i)
    :: else -> skip
    fi;
#endif
    if
    :: kept != NONE -> use_block(kept); give_back(1)
    :: else -> skip
    fi;
    carver_done = 1;
    done++
}

proctype freer()
{
    byte b;
    byte old;
    do
    :: handoff?b -> use_block(b); give_back(1)
    :: carver_done && empty(handoff) -> break
    od;
    done++
}

init
{
    live = B;
    atomic {
        run carver();
        run freer();
        run freer()
    };
    done == 3;
    assert(frees == 1)  /* every block came back: the slab is gone */
}

/* Liveness: every run ends with the slab freed. */
ltl slab_freed { <> (frees == 1) }

/*
 * callback.c - callbacks on tokens: add, remove.
 *
 * The storage is the caller's (no allocation).  An armed callback sits on
 * its token's list, guarded by the token's lock, and keeps nothing but
 * its place there: no reference (if the token's last reference is
 * released while callbacks are armed, they inherit it: CANCEL_REFS_HOLD).
 *
 * Who gets an armed callback, a cancel (to run it) or a remove (to take it
 * off), is decided by one CAS on its STATE: ARMED -> RUNNING by the cancel,
 * under the token's lock (run.c, token.c), or ARMED -> REMOVING by the
 * remove, before it takes the lock.  The remove must decide first: once a
 * cancel has run the callback, the token may be freed, and a remove that
 * only then took the token's lock would touch freed memory.  A callback
 * that a remove won stays listed, and so keeps the token alive, until the
 * remove unlinks it; a cancel skips it.  A callback that a cancel won is
 * never touched by remove again: it asks the runner's thread record
 * whether fn still runs (run.c).
 *
 * fn never runs under a lock.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>

static struct cancel_cb *as_cb(cancel_callback_t *cb)
{
    return (struct cancel_cb *)(void *)cb;
}

/* Adding a callback that is still armed would link it twice and turn the
 * token's list into a cycle: a caller error that no return code can undo
 * (the first registration is live), caught in debug builds. */
__attribute__((noinline, noreturn)) static void double_add(void)
{
    fprintf(stderr, "libcancel: cancel_callback_add: this callback is still armed "
                    "(added twice without cancel_callback_remove in between)\n");
    abort();
}

#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
/* Whether memcheck knows the fields that armed_already reads as defined:
 * a fresh callback is uninitialised stack, and reading it is fine here
 * (any garbage fails the test) but memcheck would report the branch. */
__attribute__((noinline)) static bool defined_for_memcheck(const struct cancel_cb *cb)
{
    unsigned char vbits[sizeof *cb];
    if (VALGRIND_GET_VBITS(cb, vbits, sizeof *cb) != 1)
        return false;
    for (size_t i = 0; i < sizeof vbits; i++)
        if (vbits[i])
            return false;
    return true;
}
#else
static bool defined_for_memcheck(const struct cancel_cb *cb)
{
    (void)cb;
    return true;
}
#endif

/* Relaxed: the caller's own callback, which only its own add arms. */
static inline bool armed_already(const struct cancel_cb *cb)
{
    if (__builtin_expect(cancel__under_valgrind, 0) && !defined_for_memcheck(cb))
        return false;
    return atomic_load_explicit(&((struct cancel_cb *)cb)->state, memory_order_relaxed) ==
               CANCEL_CB_ARMED &&
           cb->token && cb->prev_link && *cb->prev_link == cb;
}

/* Already cancelled: run fn inline, with a frame on the token so that a
 * remove from another thread waits for it.  A reference keeps the token
 * for the frame's unlink, since fn may release the caller's.  Out of
 * line, so that the armed path needs no stack frame. */
__attribute__((noinline)) static int run_inline_locked(struct cancel_cb *cb, cancel_token_t *t)
{
    CANCEL_ASSERT_HELD(&t->word);
    cancel_token_ref(t);
    /* Fresh: nobody else may touch CB while it is being added.  Linked to
     * itself, so that the run's unlink from the list is a no-op. */
    cb->next = NULL;
    cb->prev_link = &cb->next;
    atomic_store_explicit(&cb->state, CANCEL_CB_ARMED, memory_order_relaxed);
    cancel__run_callback_locked(t, cb);
    cancel__token_unlock(t);
    cancel_token_unref(t);
    return 1;
}

int cancel_callback_add(cancel_callback_t *callback, cancel_token_t *t, cancel_fn fn, void *arg)
{
    if (!callback || !fn) {
        errno = EINVAL;
        return -1;
    }
    struct cancel_cb *cb = as_cb(callback);
#ifndef NDEBUG
    if (armed_already(cb))
        double_add();
#endif
    cb->fn = fn;
    cb->arg = arg;
    cb->token = t;
    if (!t) {
        /* Relaxed: on no token, no other thread ever sees it. */
        atomic_store_explicit(&cb->state, CANCEL_CB_NULL, memory_order_relaxed);
        return 0;
    }

    cancel__token_lock(t);
    if (__builtin_expect(cancel__reason_locked(t) != 0, 0))
        return run_inline_locked(cb, t);
    cb->next = t->callbacks;
    if (cb->next)
        cb->next->prev_link = &cb->next;
    cb->prev_link = &t->callbacks;
    t->callbacks = cb;
    /* Relaxed: the token's lock publishes the links to the cancel that
     * takes it; a remove of this callback is the caller's, after us. */
    atomic_store_explicit(&cb->state, CANCEL_CB_ARMED, memory_order_relaxed);
    cancel__token_unlock(t);
    return 0;
}

/* The last dependent of a token everyone else released goes: so does the
 * token.  Out of line: the armed path needs no stack frame. */
__attribute__((noinline)) static bool release_and_report_removed(cancel_token_t *t)
{
    cancel_token_unref(t);
    return true;
}

/* Remove of a callback that a cancel won, or that is not armed at all. */
__attribute__((noinline)) static bool remove_unarmed(struct cancel_cb *cb, uint32_t state)
{
    /* Relaxed stores of IDLE: no cancel reaches CB any more, and the
     * caller owns it again. */
    switch (state) {
    case CANCEL_CB_NULL:
        atomic_store_explicit(&cb->state, CANCEL_CB_IDLE, memory_order_relaxed);
        return true;
    case CANCEL_CB_RUNNING:
        /* The failed CAS's acquire read RUNNING with its RUNNER. */
        if (!cancel__wait_callback(cb))
            return false; /* from inside fn: it is still running */
        atomic_store_explicit(&cb->state, CANCEL_CB_IDLE, memory_order_relaxed);
        return false;
    default:
        return false;
    }
}

bool cancel_callback_remove(cancel_callback_t *callback)
{
    if (!callback)
        return false;
    struct cancel_cb *cb = as_cb(callback);
    uint32_t state = CANCEL_CB_ARMED;
    /* (K2) pairs with (K1) in run.c: acquire on failure reads a cancel's
     * RUNNING with its RUNNER.  On success it pairs with nothing (ARMED is
     * stored relaxed; the failure order may not be stronger): the token's
     * lock, taken next, orders the rest. */
    if (__builtin_expect(!atomic_compare_exchange_strong_explicit(
                             &cb->state, &state, CANCEL_CB_REMOVING,
                             memory_order_acquire, memory_order_acquire), 0))
        return remove_unarmed(cb, state);
    /* We won: CB stays on its token's list until we unlink it, and keeps
     * the token alive meanwhile (the token's hold counts listed callbacks). */
    cancel_token_t *t = cb->token;
    cancel__token_lock(t);
    *cb->prev_link = cb->next;
    if (cb->next)
        cb->next->prev_link = cb->prev_link;
    /* Relaxed: unlinked under the lock, so no cancel looks at it again. */
    atomic_store_explicit(&cb->state, CANCEL_CB_IDLE, memory_order_relaxed);
    cancel_token_t *release = cancel__drop_hold_locked(t);
    cancel__token_unlock(t);
    if (__builtin_expect(release != NULL, 0))
        return release_and_report_removed(release);
    return true;
}

/*
 * current.c - the calling thread's current token, checks and shields.
 *
 * Plain thread-local state: nothing here is shared between threads.  A
 * shield saves the current token on a per-thread stack and clears it;
 * ending the shield restores it.  The stack lives in the thread's own
 * storage for the first levels and grows on the heap beyond them.
 */
#include "internal.h"

#include <stdlib.h>

enum { INLINE_SHIELDS = 16 };

struct shield_stack {
    size_t depth;
    size_t capacity;            /* of HEAP; 0 while only INLINE is used */
    cancel_token_t *inline_saved[INLINE_SHIELDS];
    cancel_token_t **heap;
    size_t lost;                /* levels that could not be saved (no memory) */
};

/* interpose hook: initial-exec, like the token cache's TLS: cancel_current()
 * is read on every interposed call and wrapped call (no __tls_get_addr). */
static __thread cancel_token_t *current __attribute__((tls_model("initial-exec")));
static __thread struct shield_stack shields;
static __thread struct cancel_blocked blocked;

struct cancel_blocked *cancel__thread_blocked(void)
{
    return &blocked;
}

cancel_token_t *cancel_current(void)
{
    return current;
}

cancel_token_t *cancel_enter(cancel_token_t *t)
{
    cancel_token_t *prev = current;
    current = t;
    return prev;
}

void cancel_leave(cancel_token_t *prev)
{
    current = prev;
}

int cancel_check(void)
{
    int reason = cancel_token_reason(current);
    if (reason == 0)
        return 0;
    return reason == ETIMEDOUT ? ETIMEDOUT : ECANCELED;
}

static bool shield_push(cancel_token_t *t)
{
    struct shield_stack *s = &shields;
    if (s->depth < INLINE_SHIELDS) {
        s->inline_saved[s->depth++] = t;
        return true;
    }
    size_t i = s->depth - INLINE_SHIELDS;
    if (i == s->capacity) {
        size_t cap = s->capacity ? s->capacity * 2 : 16;
        cancel_token_t **grown = realloc(s->heap, cap * sizeof *grown);
        if (!grown)
            return false;
        s->heap = grown;
        s->capacity = cap;
    }
    s->heap[i] = t;
    s->depth++;
    return true;
}

void cancel_shield_begin(void)
{
    /* Out of memory at more than 16 nested shields: the shield still hides
     * (cleanup must not be cancelled), and its end restores no token.  Once
     * a level is lost, deeper ones are counted as lost too (not pushed), so
     * that the lost levels are always the innermost ones and each end pops
     * what its own begin saved. */
    if (shields.lost > 0 || !shield_push(current))
        shields.lost++;
    current = NULL;
}

void cancel_shield_end(void)
{
    struct shield_stack *s = &shields;
    if (s->lost > 0) {
        s->lost--;
        current = NULL;
        return;
    }
    if (s->depth == 0)
        return; /* unbalanced end: nothing was hidden */
    size_t i = --s->depth;
    current = i < INLINE_SHIELDS ? s->inline_saved[i] : s->heap[i - INLINE_SHIELDS];
    if (s->depth == INLINE_SHIELDS && s->heap) {
        free(s->heap);
        s->heap = NULL;
        s->capacity = 0;
    }
}

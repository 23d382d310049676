/*
 * subtree.h - white-box check shared by check_stress.c and stress.c.
 */
#ifndef CANCEL_TEST_SUBTREE_H
#define CANCEL_TEST_SUBTREE_H

#include "internal.h"

/* Whether T and every descendant read cancelled, walked as cancel's flag
 * walk does: holding the locks of the path from T down. */
static inline bool tu_subtree_cancelled(cancel_token_t *t)
{
    cancel__token_lock(t);
    bool ok = cancel__reason_locked(t) != 0;
    cancel_token_t *node = t, *child = t->first_child;
    for (;;) {
        if (child) {
            cancel__token_lock(child);
            ok = ok && cancel__reason_locked(child) != 0;
            node = child;
            child = node->first_child;
            continue;
        }
        if (node == t)
            break;
        child = node->next_sibling;
        cancel_token_t *parent = node->parent;
        cancel__token_unlock(node);
        node = parent;
    }
    cancel__token_unlock(t);
    return ok;
}

#endif

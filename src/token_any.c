/*
 * token_any.c - linked tokens (cancel_token_any).
 *
 * A linked token is a root whose EXT holds its sources (a reference on
 * each) and one callback armed on each source.  The callback cancels the
 * linked token with the source's reason.  It must not hold a reference on
 * the linked token, or a source that outlives it would keep it alive for
 * ever: its argument is the raw pointer, and cancel__link_forget, run when
 * the linked token's last reference goes, removes every callback (remove
 * waits for one that is running) before the token is freed.  So a running
 * callback always sees valid memory; it takes a reference with
 * cancel__token_try_ref, and a token that is already dying has nobody left
 * to observe its cancellation, so the callback then does nothing.
 *
 * Locks: none of our own; cancel_callback_add/remove take the sources' locks.
 */
#include "internal.h"

#include <stdlib.h>

static void link_fire(void *arg, int reason)
{
    cancel_token_t *t = arg;
    if (!cancel__token_try_ref(t))
        return;
    cancel_token_cancel(t, reason);
    cancel_token_unref(t);
}

cancel_token_t *cancel_token_any(cancel_token_t *const *tokens, size_t n)
{
    if (n > 0 && !tokens) {
        errno = EINVAL;
        return NULL;
    }
    cancel_token_t *t = cancel_token_new();
    if (!t || n == 0)
        return t;

    /* Everything is allocated before anything is registered, so a failure
     * leaves no reference taken and no callback armed. */
    cancel_token_t **sources = NULL;
    cancel_callback_t *links = NULL;
    struct token_ext *ext = NULL;
    if (n <= SIZE_MAX / sizeof *links) {
        sources = malloc(n * sizeof *sources);
        links = calloc(n, sizeof *links);
    }
    if (sources && links)
        ext = cancel__token_ext(t);
    if (!ext) {
        free(sources);
        free(links);
        cancel_token_unref(t);
        errno = ENOMEM;
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        sources[i] = cancel_token_ref(tokens[i]);
    /* Before T is handed out; cancel_token_deadline reads them later. */
    ext->link.sources = sources;
    ext->link.links = links;
    ext->link.nsources = n;

    /* A source that is already cancelled runs link_fire inline: the token
     * is born cancelled with the first such source's reason (the first
     * reason wins; the later adds are then harmless). */
    for (size_t i = 0; i < n; i++)
        if (sources[i])
            cancel_callback_add(&links[i], sources[i], link_fire, t);
    return t;
}

void cancel__link_forget(cancel_token_t *t, struct token_link *ext)
{
    (void)t;
    if (ext->nsources == 0)
        return;
    /* Remove first: after this loop no callback can reach T. */
    for (size_t i = 0; i < ext->nsources; i++)
        if (ext->sources[i])
            cancel_callback_remove(&ext->links[i]);
    for (size_t i = 0; i < ext->nsources; i++)
        cancel_token_unref(ext->sources[i]);
    free(ext->sources);
    free(ext->links);
    ext->sources = NULL;
    ext->links = NULL;
    ext->nsources = 0;
}

/*
 * glib.c - libcancel-glib: tokens and GLib's GCancellable, each cancelling
 * the other.
 *
 * Token -> GCancellable (cancel_gcancellable_new): a libcancel callback on
 * the token cancels the GCancellable through a GWeakRef, so the token never
 * keeps the GCancellable alive.  The GCancellable's finalize removes the
 * callback (qdata destroy notify).  The link is shared by the two sides
 * and freed by whichever is done last (an atomic count of two).
 *
 * GCancellable -> token (cancel_token_from_gcancellable): one handler per
 * GCancellable, connected once, cancels a root token kept with it (qdata);
 * every token handed out is a child of that root, so releasing one frees it
 * at once and nothing accumulates on a long-lived GCancellable.  We never
 * disconnect: the handler goes with the GCancellable's finalize, and
 * g_cancellable_disconnect deadlocks when called from inside a handler.
 *
 * The current token's GCancellable (cancel_gcancellable_current) lives in
 * the token itself, in libcancel's extension attachment: cancelled with
 * the token, released when the token is freed, without keeping it alive.
 *
 * Locks: our own locks are pthread mutexes (visible to ThreadSanitizer,
 * which does not see GLib's futex-based GMutex).  SRC->MU guards SRC->ROOT
 * only and is never held while calling into GLib or cancelling a token.
 * GLib's handlers may run under GLib's own locks: cancelling a token from
 * one runs libcancel's callbacks, which may cancel other GCancellables
 * (g_cancellable_cancel of a cancelled one returns at once).
 */
#define _GNU_SOURCE 1
#include "cancel-glib.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

/* The one libcancel hook we use beyond <cancel.h> (src/internal.h). */
void *cancel_token_attachment_(cancel_token_t *t, const void *key,
                               void *(*make)(void *arg), void *arg,
                               cancel_fn on_cancel, void (*release)(void *obj));

/* ---------------------------------------------- token -> GCancellable */

struct link {
    cancel_callback_t cb;       /* armed on the token */
    GWeakRef weak;              /* the GCancellable */
    _Atomic int refs;           /* the callback's and the GCancellable's */
};

/* GLib quarks for our qdata, made once. */
static GQuark link_q, src_q;
static pthread_once_t quarks_once = PTHREAD_ONCE_INIT;

static void quarks_init(void)
{
    link_q = g_quark_from_static_string("cancel-glib-link");
    src_q = g_quark_from_static_string("cancel-glib-src");
}

static GQuark link_quark(void)
{
    pthread_once(&quarks_once, quarks_init);
    return link_q;
}

static void link_unref(struct link *l)
{
    /* (H1) acq_rel, pairing with itself on the other side: its last use
     * happens before the free. */
    if (atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel) == 1) {
        g_weak_ref_clear(&l->weak);
        free(l);
    }
}

/* The token was cancelled: cancel the GCancellable if it still lives.  The
 * library never touches CB after we return, so we may free it here. */
static void link_fire(void *arg, int reason)
{
    struct link *l = arg;
    (void)reason;
    GCancellable *c = g_weak_ref_get(&l->weak);
    if (c) {
        g_cancellable_cancel(c);
        /* May be the last reference: then link_gone runs inside us, its
         * remove returns false at once, and our unref below frees L. */
        g_object_unref(c);
    }
    link_unref(l);
}

/* The GCancellable is being finalized. */
static void link_gone(gpointer data)
{
    struct link *l = data;
    /* True: the callback will never run, its share is ours to drop.  False:
     * it has run (or runs on this very thread) and drops its own share. */
    if (cancel_callback_remove(&l->cb))
        link_unref(l);
    link_unref(l);
}

GCancellable *cancel_gcancellable_new(cancel_token_t *t)
{
    GCancellable *c = g_cancellable_new();
    if (!t)
        return c;
    struct link *l = calloc(1, sizeof *l);
    if (!l) {
        g_object_unref(c);
        errno = ENOMEM;
        return NULL;
    }
    g_weak_ref_init(&l->weak, c);
    atomic_init(&l->refs, 2);
    g_object_set_qdata_full(G_OBJECT(c), link_quark(), l, link_gone);
    /* Already cancelled: link_fire runs here and cancels C at once. */
    cancel_callback_add(&l->cb, t, link_fire, l);
    return c;
}

/* ---------------------------------------------- GCancellable -> token */

struct src {
    pthread_mutex_t mu;
    cancel_token_t *root;       /* guarded by MU; our reference */
};

static GQuark src_quark(void)
{
    pthread_once(&quarks_once, quarks_init);
    return src_q;
}

/* GCancellable::cancelled, in the thread that cancels C (maybe under one of
 * GLib's locks).  Also called again after a g_cancellable_reset. */
static void src_fire(GCancellable *c, gpointer data)
{
    struct src *s = data;
    (void)c;
    pthread_mutex_lock(&s->mu);
    cancel_token_t *root = cancel_token_ref(s->root);
    pthread_mutex_unlock(&s->mu);
    CANCEL_TOKEN_CANCEL(root, ECANCELED);
    cancel_token_unref(root);
}

/* C is being finalized; its handler is already gone (dispose). */
static void src_free(gpointer data)
{
    struct src *s = data;
    cancel_token_unref(s->root);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* C's SRC, made and connected on first use.  Only the thread that
 * published it connects the handler: one handler per GCancellable. */
static struct src *src_of(GCancellable *c)
{
    struct src *s = g_object_get_qdata(G_OBJECT(c), src_quark());
    if (s)
        return s;
    s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->root = cancel_token_new();
    if (!s->root) {
        free(s);
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    if (!g_object_replace_qdata(G_OBJECT(c), src_quark(), NULL, s, src_free, NULL)) {
        src_free(s);
        return g_object_get_qdata(G_OBJECT(c), src_quark());
    }
    /* Connected even when C is already cancelled (g_cancellable_connect
     * would not connect then), so that a cancel after a reset reaches us.
     * A cancel before the connect reached nobody: the check after it
     * delivers that one (twice is harmless). */
    g_signal_connect(c, "cancelled", G_CALLBACK(src_fire), s);
    if (g_cancellable_is_cancelled(c))
        src_fire(c, s);
    return s;
}

cancel_token_t *cancel_token_from_gcancellable(GCancellable *c)
{
    if (!c)
        return cancel_token_new();
    if (!G_IS_CANCELLABLE(c)) {
        errno = EINVAL;
        return NULL;
    }
    struct src *s = src_of(c);
    if (!s) {
        errno = ENOMEM;
        return NULL;
    }
    cancel_token_t *fresh = NULL, *old = NULL;
    pthread_mutex_lock(&s->mu);
    if (cancel_token_is_cancelled(s->root) && !g_cancellable_is_cancelled(c)) {
        /* C was reset since its cancel: a new root for the new round. */
        fresh = cancel_token_new();
        if (fresh) {
            old = s->root;
            s->root = fresh;
        }
    }
    cancel_token_t *root = cancel_token_ref(s->root);
    pthread_mutex_unlock(&s->mu);
    cancel_token_unref(old);
    /* A cancel of C that our handler has not delivered yet (it may be
     * running in another thread): born cancelled all the same. */
    if (g_cancellable_is_cancelled(c))
        CANCEL_TOKEN_CANCEL(root, ECANCELED);
    cancel_token_t *t = cancel_token_child(root);
    int saved = errno;
    cancel_token_unref(root);
    if (!t)
        errno = saved;
    return t;
}

/* ------------------------------------------ the current token's one */

static const char current_key[] = "cancel-glib-current";

static void *current_make(void *arg)
{
    (void)arg;
    return g_cancellable_new();
}

static void current_fire(void *obj, int reason)
{
    (void)reason;
    g_cancellable_cancel(obj);
}

static void current_release(void *obj)
{
    g_object_unref(obj);
}

GCancellable *cancel_gcancellable_current(void)
{
    cancel_token_t *t = cancel_current();
    if (!t)
        return NULL;
    GCancellable *c = cancel_token_attachment_(t, current_key, current_make, NULL,
                                               current_fire, current_release);
    if (!c)
        return NULL;
    /* Cancelled before the attachment existed, so current_fire never runs
     * for it; cancelling an already cancelled one returns at once. */
    if (cancel_token_is_cancelled(t))
        g_cancellable_cancel(c);
    return c;
}

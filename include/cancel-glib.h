/*
 * cancel-glib.h - libcancel and GLib's GCancellable, each cancelling the
 * other (library libcancel-glib; pkg-config cancel-glib).
 *
 * Code that runs in a libcancel task passes cancel_gcancellable_current()
 * to GIO calls, which are then cancelled with the task; code that holds a
 * GCancellable makes a token of it for libcancel's wrapped calls and
 * scopes.  Either side may be released first: nothing leaks and nothing is
 * used after it is freed.  No function here calls g_cancellable_disconnect
 * (which deadlocks from inside a "cancelled" handler), so each may be
 * called, and any token may be cancelled, from inside a GLib handler.
 * See cancel_gcancellable_new(3).
 */
#ifndef CANCEL_GLIB_H
#define CANCEL_GLIB_H

#include <cancel.h>
#include <gio/gio.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * cancel_gcancellable_new - a new GCancellable (the caller's reference)
 * that is cancelled when T is, in the thread that cancels T, or at once
 * when T already is.  T NULL gives a GCancellable that only
 * g_cancellable_cancel cancels.  The link is a callback armed on T, which
 * keeps T alive until the GCancellable is finalized or T is cancelled:
 * release them in either order.  After T's cancel has reached it,
 * g_cancellable_reset makes it a plain GCancellable.  Returns NULL with
 * errno ENOMEM when memory runs out.  Thread safety: any thread.
 */
CANCEL_API GCancellable *cancel_gcancellable_new(cancel_token_t *t);

/*
 * cancel_token_from_gcancellable - a new token (the caller's reference)
 * cancelled with ECANCELED when C is, in the thread that calls
 * g_cancellable_cancel (inside GLib's "cancelled" emission), or born
 * cancelled when C already is.  Each such token is a child of one root
 * token kept with C (one handler on C, however many tokens: releasing a
 * token frees it at once); the root is released when C is finalized, and
 * replaced after g_cancellable_reset.  C NULL (GIO's "not cancellable")
 * gives a new root token.  Returns NULL with errno EINVAL (C is not a
 * GCancellable) or ENOMEM.  Thread safety: any thread, GLib handlers
 * included.
 */
CANCEL_API cancel_token_t *cancel_token_from_gcancellable(GCancellable *c);

/*
 * cancel_gcancellable_current - the calling thread's current token's
 * GCancellable, for the GIO calls of a task: made on the first call for
 * that token, the same object on every later call, cancelled when the token
 * is (at once if it already is), and released when the token is freed.
 * Borrowed: valid while the token lives (g_object_ref it to keep it
 * longer).  NULL when there is no current token (or inside a shield), and
 * NULL with errno ENOMEM when memory runs out.  Thread safety: any thread.
 */
CANCEL_API GCancellable *cancel_gcancellable_current(void);

#ifdef __cplusplus
}
#endif

#endif /* CANCEL_GLIB_H */

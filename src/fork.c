/*
 * fork.c - the library's one pthread_atfork registration.
 *
 * fork() may be called from any thread while others are inside the
 * library.  The child has one thread: a lock another thread held at the
 * fork would stay held for ever, and a library thread (worker, timer,
 * signal hand-off) the parent counted on does not exist there.  So before
 * the fork the forking thread takes every process-wide library lock, in
 * the lock order of internal.h; after it the parent releases them, and the
 * child resets each module (locks free, no thread counted on) and
 * restarts what must run at once (the signal thread, when registrations
 * are in force).
 *
 * One registration, not one per module: pthread_atfork runs prepare
 * handlers in the reverse order of registration, and modules register
 * lazily, so separate registrations would take the locks in whatever
 * order the modules happened to be first used.
 *
 * Lock order taken here: the registry of open scopes (dump.c, issue 16:
 * outermost, it is held while scopes' locks are taken), the signal lock
 * (never held with another), the
 * wait graph's mutex (run.c), the token locks (lock.c closes the fork gate and waits until no thread holds
 * one), the timer lock, the worker cache's lock.
 * Per-object locks (a scope's, a waiter's) are not taken: objects in use
 * by other threads at the fork belong to the parent (cancel(7), FORK).
 */
#include "internal.h"

static void prepare(void)
{
    cancel__dump_atfork_prepare();   /* issue 16: the scope registry, outermost */
    cancel__signal_atfork_prepare();
    cancel__run_atfork_prepare();
    cancel__lock_atfork_prepare();
    cancel__timer_atfork_prepare();
    cancel__worker_atfork_prepare();
}

static void parent(void)
{
    cancel__worker_atfork_parent();
    cancel__timer_atfork_parent();
    cancel__lock_atfork_parent();
    cancel__run_atfork_parent();
    cancel__signal_atfork_parent();
    cancel__dump_atfork_parent();    /* issue 16 */
}

static void child(void)
{
    cancel__worker_atfork_child();
    cancel__timer_atfork_child();
    cancel__lock_atfork_child();
    cancel__run_atfork_child();
    cancel__signal_atfork_child();
    cancel__dump_atfork_child();     /* issue 16 */
}

/* Called once at load time by lock.c's constructor: lock.o is in every
 * program that uses the library, so a static link pulls this file in too
 * (a constructor of its own would be dropped with an unreferenced
 * object). */
void cancel__fork_init(void)
{
    /* Only ENOMEM is possible; the library then works, but not across fork. */
    pthread_atfork(prepare, parent, child);
}

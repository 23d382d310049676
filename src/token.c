/*
 * token.c - the token tree: create, reference, cancel, propagate, free.
 *
 * Every token has its own lock (lock.c), which guards its callback list,
 * its list of children and its reason transition.  Readers of the reason
 * never take it: the reason word is written once, under the lock, with
 * release order, and read with acquire order.  Callbacks run with no lock
 * held.  Nothing here is process-wide: operations on unrelated tokens
 * share no memory that they write.
 *
 * Cancel is two walks over the subtree, both iterative (first_child /
 * next_sibling / parent links: no recursion, no allocation).
 *
 * The flag walk holds the locks from the root down to the node it
 * visits (ancestor before descendant, the one order token locks are ever
 * taken in), and flags each node that is not cancelled yet.  A child
 * created meanwhile copies its parent's reason under the parent's lock, so
 * it is born cancelled; a child being released waits for its parent's
 * lock; a callback added to a flagged node runs inline.  A subtree that is
 * already cancelled belongs to the cancel that flagged it, which held its
 * root's lock until that subtree was flagged: the walk skips it, and
 * after the walk every descendant reads cancelled.
 *
 * The run walk, needed only when the flag walk met a callback or a
 * subtree that another cancel flagged, visits every node again without
 * holding any lock while callbacks run.  It holds a reference on the node
 * it stands on, which keeps that node linked and so, structurally, every
 * ancestor up to the root.  At each node it claims and runs the callbacks
 * still listed (run.c; another cancel of an overlapping subtree may run
 * some of them: each runs once, whoever claims it) and then waits for the
 * ones other threads are still running there, so that when cancel returns
 * every callback of the subtree has run to completion.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/eventfd.h>

void cancel__assert_failed(const char *what, const char *file, int line)
{
    fprintf(stderr, "libcancel: internal invariant broken at %s:%d: %s\n", file, line, what);
    abort();
}

/* The caller released a token it no longer held: its mistake, named. */
__attribute__((noinline, noreturn)) static void released_twice(const cancel_token_t *t)
{
    fprintf(stderr, "libcancel: cancel_token_unref(%p): the token has no reference left "
                    "(released more often than created or referenced)\n", (const void *)t);
    abort();
}

struct token_ext *cancel__token_ext(cancel_token_t *t)
{
    /* (E2) pairs with (E1) below: the EXT's fields are initialised. */
    struct token_ext *ext = atomic_load_explicit(&t->ext, memory_order_acquire);
    if (ext)
        return ext;
    /* Allocated before the lock: no lock is held across malloc. */
    struct token_ext *fresh = calloc(1, sizeof *fresh);
    if (!fresh)
        return NULL;
    fresh->fd = -1;
    fresh->deadline.heap_index = SIZE_MAX;
    struct token_ext *none = NULL;
    /* (E1) pairs with (E2) here, in token_free, flag_locked,
     * cancelled_from, the attachment and timer.c: a reader that loads EXT
     * without the lock sees it initialised.  A loser's acquire reads the
     * winner's. */
    if (atomic_compare_exchange_strong_explicit(&t->ext, &none, fresh, memory_order_acq_rel,
                                                memory_order_acquire))
        return fresh;
    free(fresh);
    return none;
}

static cancel_token_t *token_alloc(void)
{
    cancel_token_t *t = cancel__token_mem_alloc();
    if (!t) {
        errno = ENOMEM;
        return NULL;
    }
    atomic_init(&t->word, 0);
    atomic_init(&t->refs, 1);
    t->parent = NULL;
    t->first_child = NULL;
    t->next_sibling = NULL;
    t->prev_link = NULL;
    t->callbacks = NULL;
    atomic_init(&t->ext, NULL);
    return t;
}

cancel_token_t *cancel_token_new(void)
{
    return token_alloc();
}

cancel_token_t *cancel_token_child(cancel_token_t *parent)
{
    cancel_token_t *t = token_alloc();
    if (!t || !parent)
        return t;
    t->parent = parent; /* no reference: a linked child keeps it (see release) */
    cancel__token_lock(parent);
    /* Under the lock: a concurrent cancel of PARENT either sees us linked
     * and flags us, or flagged PARENT before we copy its reason.  Relaxed:
     * T is unpublished until PARENT's unlock and our return. */
    atomic_store_explicit(&t->word, cancel__reason_locked(parent), memory_order_relaxed);
    t->next_sibling = parent->first_child;
    if (t->next_sibling)
        t->next_sibling->prev_link = &t->next_sibling;
    t->prev_link = &parent->first_child;
    parent->first_child = t;
    cancel__token_unlock(parent);
    return t;
}

cancel_token_t *cancel_token_ref(cancel_token_t *t)
{
    if (t) {
        /* Relaxed: the caller already holds a reference, so the object is
         * published to this thread; only the count itself changes. */
        unsigned old = atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
        CANCEL_ASSERT((old & CANCEL_REFS_COUNT) > 0);
    }
    return t;
}

bool cancel__token_try_ref(cancel_token_t *t)
{
    /* Never from zero: a count reaches zero only under the token's lock
     * (and its parent's), when the token is already being freed.  The load
     * is a peek; (C3) the CAS pairs with (C1), as a release's acquire does,
     * though the lock through which the caller found T already orders
     * what it reads. */
    unsigned n = atomic_load_explicit(&t->refs, memory_order_relaxed);
    while ((n & CANCEL_REFS_COUNT) != 0) {
        if (atomic_compare_exchange_weak_explicit(&t->refs, &n, n + 1,
                                                  memory_order_acquire,
                                                  memory_order_relaxed))
            return true;
    }
    return false;
}

/* ---- Extension attachment (libcancel-glib, issue 16; see internal.h) ---- */
/* Called as T is freed: its ON_CANCEL, if it ran, ran during a cancel that
 * held a reference on T, so RELEASE comes after it. */
static void attach_release(struct token_ext *ext)
{
    /* (X2) pairs with (X1) in cancel_token_attachment_. */
    struct cancel_attach *a = atomic_load_explicit(&ext->attach, memory_order_acquire);
    if (a) {
        a->release(a->obj);
        free(a);
    }
}

/* T locked and being flagged: the attachment's callback joins T's list as
 * an armed callback, so that the run walk runs it like the others (with a
 * reference on T) and T is not freed before it has run. */
static void attach_list_locked(cancel_token_t *t, struct token_ext *ext)
{
    /* Relaxed: stored under T's lock, which we hold. */
    struct cancel_attach *a = atomic_load_explicit(&ext->attach, memory_order_relaxed);
    if (!a)
        return;
    struct cancel_cb *cb = &a->cb;
    cb->token = t;
    cb->next = t->callbacks;
    if (cb->next)
        cb->next->prev_link = &cb->next;
    cb->prev_link = &t->callbacks;
    t->callbacks = cb;
    /* Relaxed: T's lock publishes it to the run walk. */
    atomic_store_explicit(&cb->state, CANCEL_CB_ARMED, memory_order_relaxed);
}
/* ---- end of extension attachment ---- */

/* Frees T, already unlinked and unreachable, outside the lock. */
static void token_free(cancel_token_t *t)
{
    /* (E2) pairs with (E1) in cancel__token_ext. */
    struct token_ext *ext = atomic_load_explicit(&t->ext, memory_order_acquire);
    if (ext) {
        /* Registrations that could still reach T end before T goes: each of
         * them reaches T only through cancel__token_try_ref, which fails
         * from now on. */
        cancel__timer_forget(t, &ext->deadline);
        cancel__link_forget(t, &ext->link);
        cancel__signal_forget(t, &ext->signal);
        if (ext->fd >= 0)
            close(ext->fd);
        attach_release(ext);
        free(ext);
    }
    cancel__token_mem_free(t);
}

/*
 * Releases the last counted reference of T, under its parent's lock (when
 * it has a parent) and its own, so that exactly one thread decides T's
 * fate and a walker holding the parent's lock never meets a child half
 * gone.  A token that still has dependents (callbacks listed on it, or
 * linked children) is not freed: its last reference passes to them
 * (CANCEL_REFS_HOLD), as an armed std::stop_callback keeps its state
 * alive, without add, remove, child create or child release paying an
 * atomic reference each.  Returns true when T is dead and unlinked.
 */
static bool release_locked(cancel_token_t *t)
{
    CANCEL_ASSERT_HELD(&t->word);
    /* (C2) pairs with (C1) in cancel_token_unref, here and in
     * run_node_locked: the other holders' writes happen before our free. */
    unsigned n = atomic_load_explicit(&t->refs, memory_order_acquire);
    for (;;) {
        if ((n & CANCEL_REFS_COUNT) > 1) {
            /* Someone took a reference (try_ref) meanwhile: not the last.
             * (C1), a release like cancel_token_unref's. */
            if (atomic_compare_exchange_weak_explicit(&t->refs, &n, n - 1,
                                                      memory_order_acq_rel,
                                                      memory_order_acquire))
                return false;
            continue;
        }
        if (n != 1)
            released_twice(t);
        if (t->callbacks || t->first_child) {
            /* Our reference passes to the dependents: acq_rel as the
             * release it stands for, though T's lock, under which the
             * hold is dropped, orders it as well. */
            if (atomic_compare_exchange_weak_explicit(&t->refs, &n, n | CANCEL_REFS_HOLD,
                                                      memory_order_acq_rel,
                                                      memory_order_acquire))
                return false;
            continue;
        }
        /* Who takes a reference without holding one (try_ref): a run walk,
         * on a listed child, under the child's parent's lock, which we
         * hold; and the timer, signal and link modules, on a token with an
         * EXT.  Without one, the count holds still: a plain store, one
         * atomic read-modify-write less on every child release.  (The
         * acquire load above read every other holder's acq_rel release,
         * and with it any EXT they made: the EXT load may be relaxed.) */
        if (!atomic_load_explicit(&t->ext, memory_order_relaxed)) {
            atomic_store_explicit(&t->refs, 0, memory_order_relaxed);
            break;
        }
        /* (C2), as above: a try_ref may still race us to the end. */
        if (atomic_compare_exchange_weak_explicit(&t->refs, &n, 0, memory_order_acq_rel,
                                                  memory_order_acquire))
            break;
    }
    if (t->parent) {
        *t->prev_link = t->next_sibling;
        if (t->next_sibling)
            t->next_sibling->prev_link = t->prev_link;
    }
    return true;
}

void cancel_token_unref(cancel_token_t *t)
{
    if (!t)
        return;
    /* Not the last reference: one CAS after a relaxed peek.  (C1) pairs
     * with (C2) in release_locked: acq_rel (not release plus a fence,
     * which ThreadSanitizer does not model) orders our writes before the
     * eventual free and makes others' visible to it. */
    unsigned n = atomic_load_explicit(&t->refs, memory_order_relaxed);
    while ((n & CANCEL_REFS_COUNT) > 1)
        if (atomic_compare_exchange_weak_explicit(&t->refs, &n, n - 1, memory_order_acq_rel,
                                                  memory_order_relaxed))
            return;
    if ((n & CANCEL_REFS_COUNT) != 1)
        released_twice(t);

    /* Freeing a leaf can orphan an ancestor that only its children kept
     * alive, and so on up: a loop, not recursion, so that the last leaf of
     * a ten-million-deep chain frees the chain in constant stack.  Each
     * step holds the parent's lock, then the token's (ancestor first). */
    while (t) {
        cancel_token_t *parent = t->parent;
        if (parent)
            cancel__token_lock(parent);
        cancel__token_lock(t);
        bool dead = release_locked(t);
        cancel__token_unlock(t);
        cancel_token_t *next = dead && parent ? cancel__drop_hold_locked(parent) : NULL;
        if (parent)
            cancel__token_unlock(parent);
        if (dead)
            token_free(t);
        t = next;
    }
}

/* Flags T with REASON (T locked) and wakes its fd; returns whether T has
 * callbacks left for the run walk. */
static bool flag_locked(cancel_token_t *t, int reason)
{
    CANCEL_ASSERT_HELD(&t->word);
    /* (R1) pairs with (R2) in internal.h and (R3) in cancel.h: whatever
     * precedes the flag (the origin) is visible to a reader whose acquire
     * load sees it.  The lock bit stays set. */
    atomic_store_explicit(&t->word, reason | CANCEL_LOCKED, memory_order_release);
    /* (E2) pairs with (E1): EXT may be made without T's lock. */
    struct token_ext *ext = atomic_load_explicit(&t->ext, memory_order_acquire);
    if (ext && ext->fd >= 0) {
        /* interpose hook: glibc's eventfd_write never reaches the
         * interposer (this runs with the token locked); see interpose.h. */
        while (eventfd_write(ext->fd, 1) < 0 && errno == EINTR)
            ;
    }
    if (ext)
        attach_list_locked(t, ext); /* issue 16 */
    return t->callbacks != NULL;
}

/*
 * The flag walk (ROOT locked and just flagged; returns with it locked):
 * locks each child before looking at it and keeps the locks of the path
 * from ROOT down, so that the node's list of children holds still while
 * its subtree is walked.  Returns whether the run walk is needed.
 */
static bool flag_subtree_locked(cancel_token_t *root, int reason)
{
    CANCEL_ASSERT_HELD(&root->word);
    bool run = false;
    cancel_token_t *node = root;
    cancel_token_t *child = root->first_child;
    for (;;) {
        if (child) {
            cancel__token_lock(child);
            if (cancel__reason_locked(child) != 0) {
                /* Another cancel's subtree: flagged, but maybe still running. */
                run = true;
                cancel__token_unlock(child);
                child = child->next_sibling;
                continue;
            }
            run |= flag_locked(child, reason);
            node = child;
            child = node->first_child;
            continue;
        }
        if (node == root)
            return run;
        child = node->next_sibling; /* guarded by the parent's lock, still held */
        cancel_token_t *parent = node->parent;
        cancel__token_unlock(node);
        node = parent;
    }
}

/* The first child from C on that we can take a reference on (the parent
 * locked: a listed child's count is never zero, but be safe). */
static cancel_token_t *ref_listed_locked(cancel_token_t *c)
{
    if (c)
        CANCEL_ASSERT_HELD(&c->parent->word);
    for (; c; c = c->next_sibling)
        if (cancel__token_try_ref(c))
            return c;
    return NULL;
}

/* Claims and runs T's listed callbacks (T locked and referenced), then
 * waits for the ones other threads run on T. */
static void run_node_locked(cancel_token_t *t)
{
    CANCEL_ASSERT_HELD(&t->word);
    for (;;) {
        struct cancel_cb *cb = t->callbacks;
        /* Relaxed: a hint under T's lock; the claim's CAS decides. */
        while (cb && atomic_load_explicit(&cb->state, memory_order_relaxed) != CANCEL_CB_ARMED)
            cb = cb->next; /* frames of runs under way, callbacks a remove won */
        if (!cb)
            break;
        cancel__run_callback_locked(t, cb); /* false: a remove won it, and unlinks it */
    }
    cancel__wait_foreign_runs_locked(t);
    /* The callbacks kept a released T alive: they are all gone now. */
    if (cancel__drop_hold_locked(t)) {
        /* The hold's reference; ours keeps the count above zero.  (C1),
         * a release like cancel_token_unref's. */
        unsigned old = atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel);
        CANCEL_ASSERT((old & CANCEL_REFS_COUNT) > 1);
    }
}

/* The run walk over ROOT's subtree (ROOT referenced by the caller, no lock
 * held); holds a reference on the node it stands on, none on the rest. */
static void run_subtree(cancel_token_t *root)
{
    cancel_token_t *node = root;
    for (;;) {
        cancel__token_lock(node);
        run_node_locked(node);
        cancel_token_t *next = ref_listed_locked(node->first_child);
        cancel__token_unlock(node);
        if (next && node != root)
            cancel_token_unref(node); /* NEXT, linked to it, keeps it now */
        /* No child left to visit: the next sibling of NODE or of the
         * nearest ancestor that has one. */
        while (!next) {
            if (node == root)
                return;
            cancel_token_t *parent = node->parent; /* alive: NODE is linked to it */
            cancel__token_lock(parent);
            next = ref_listed_locked(node->next_sibling);
            if (!next && parent != root)
                cancel_token_ref(parent); /* counted: NODE, a linked child, holds it */
            cancel__token_unlock(parent);
            cancel_token_unref(node);
            if (!next)
                node = parent;
        }
        node = next;
    }
}

bool cancel_token_cancel_at(cancel_token_t *t, int reason, const char *file, int line)
{
    if (!t)
        return false;
    if (reason <= 0)
        reason = ECANCELED;
    if (cancel__reason_of(t) != 0)
        return false;
    /* Before the lock (it allocates): the origin of a cancel that then
     * loses is never read, since only a winner's flag publishes it. */
    struct token_ext *ext = cancel__token_ext(t); /* NULL: cancelled_from says ESRCH */

    cancel__token_lock(t);
    if (cancel__reason_locked(t) != 0) {
        cancel__token_unlock(t);
        return false;
    }
    if (ext) {
        ext->origin.has_origin = true;
        ext->origin.thread = pthread_self();
        ext->origin.file = file;
        ext->origin.line = line;
    }
    bool run = flag_locked(t, reason);
    run |= flag_subtree_locked(t, reason);
    if (!run) {
        cancel__token_unlock(t);
        return true;
    }
    /* The run walk holds a reference on its root: a callback may release
     * the caller's last one. */
    cancel_token_ref(t);
    cancel__token_unlock(t);
    struct cancel_cancel_op op;
    cancel__op_push(&op, t);
    run_subtree(t);
    cancel__op_pop(&op);
    cancel_token_unref(t);
    return true;
}

bool cancel_token_cancel(cancel_token_t *t, int reason)
{
    return cancel_token_cancel_at(t, reason, NULL, 0);
}

int cancel_token_cancelled_from(const cancel_token_t *t, pthread_t *thread,
                                const char **file, int *line)
{
    if (!t)
        return EINVAL;
    /* The origin is recorded on the token a cancel started from, before
     * its reason's release store: walk up to the nearest cancelled
     * ancestor that has one.  Ancestors are alive while T is. */
    for (const cancel_token_t *n = t;
         n && cancel__reason_of(n); n = n->parent) {
        /* (E2) pairs with (E1) in cancel__token_ext. */
        struct token_ext *ext = atomic_load_explicit(&n->ext, memory_order_acquire);
        if (ext && ext->origin.has_origin) {
            if (thread)
                *thread = ext->origin.thread;
            if (file)
                *file = ext->origin.file;
            if (line)
                *line = ext->origin.line;
            return 0;
        }
    }
    return ESRCH;
}

bool cancel_token_is_cancelled(const cancel_token_t *t)
{
    return t && cancel__reason_of(t) != 0;
}

int cancel_token_reason(const cancel_token_t *t)
{
    return t ? cancel__reason_of(t) : 0;
}

int cancel_token_fd(cancel_token_t *t)
{
    if (!t) {
        errno = EINVAL;
        return -1;
    }
    struct token_ext *ext = cancel__token_ext(t);
    if (!ext) {
        errno = ENOMEM;
        return -1;
    }
    cancel__token_lock(t);
    if (ext->fd < 0) {
        int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (fd < 0) {
            int saved = errno;
            cancel__token_unlock(t);
            errno = saved;
            return -1;
        }
        /* Created under the lock, so a cancel either writes it or has
         * already flagged the token, in which case we write it here. */
        if (cancel__reason_locked(t) != 0)
            (void)eventfd_write(fd, 1); /* interpose hook: see interpose.h */
        ext->fd = fd;
    }
    int fd = ext->fd;
    cancel__token_unlock(t);
    return fd;
}

/* ---- Extension attachment (libcancel-glib, issue 16; see internal.h) ---- */
CANCEL_API void *cancel_token_attachment_(cancel_token_t *t, const void *key,
                                          void *(*make)(void *arg), void *arg,
                                          cancel_fn on_cancel, void (*release)(void *obj))
{
    if (!t || !make || !on_cancel || !release) {
        errno = EINVAL;
        return NULL;
    }
    /* Fast path, no lock: (E2) pairs with (E1) in cancel__token_ext, and
     * (X2) with (X1) below: the attachment's fields are set. */
    struct token_ext *ext = atomic_load_explicit(&t->ext, memory_order_acquire);
    struct cancel_attach *a = ext ? atomic_load_explicit(&ext->attach, memory_order_acquire)
                                  : NULL;
    if (!a) {
        /* MAKE runs with no lock held (it may call anything); a loser of a
         * race to attach releases its own object. */
        void *obj = make(arg);
        if (!obj) {
            errno = ENOMEM;
            return NULL;
        }
        struct cancel_attach *mine = calloc(1, sizeof *mine);
        ext = mine ? cancel__token_ext(t) : NULL;
        if (ext) {
            mine->cb.fn = on_cancel;
            mine->cb.arg = obj;
            atomic_init(&mine->cb.state, CANCEL_CB_IDLE);
            mine->key = key;
            mine->obj = obj;
            mine->release = release;
            /* Under T's lock: a cancel flags T either after this store (and
             * lists the callback) or before it (the caller sees T
             * cancelled and cancels OBJ itself). */
            cancel__token_lock(t);
            /* Relaxed: every store of ATTACH is under T's lock. */
            a = atomic_load_explicit(&ext->attach, memory_order_relaxed);
            if (!a) {
                /* (X1) pairs with (X2) above and in attach_release. */
                atomic_store_explicit(&ext->attach, mine, memory_order_release);
                a = mine;
                mine = NULL;
                obj = NULL;
            }
            cancel__token_unlock(t);
        }
        free(mine);
        if (obj)
            release(obj);
        if (!a) {
            errno = ENOMEM;
            return NULL;
        }
    }
    if (a->key != key) {
        errno = EBUSY;
        return NULL;
    }
    return a->obj;
}
/* ---- end of extension attachment ---- */

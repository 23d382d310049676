/*
 * token.c - the token tree: create, reference, cancel, propagate, free.
 *
 * One mutex, cancel__lock, guards every tree's links, every reason
 * transition and every callback list.  Readers of the reason never take
 * it: the reason word is written once, under the lock, with release
 * order, and read with acquire order.  Callbacks run with the lock
 * dropped.
 *
 * Cancelling walks the subtree iteratively (first_child / next_sibling /
 * parent links, no recursion, no allocation) while holding the lock, so
 * after the walk every descendant reads cancelled.  The walk stops at a
 * descendant that is already cancelled: the cancel that flagged it owns
 * that subtree.  If that cancel is still running its callbacks on another
 * thread, we wait for it before returning (see wait_for_nested_ops), which
 * gives "every callback has run" without two walks ever sharing a subtree.
 * A cancel that waits only ever waits for cancels rooted strictly below
 * its own root; a cycle needs callbacks that cancel across trees, and the
 * last thread to close one does not wait (see wait_for_nested_ops).
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/eventfd.h>

static struct cancel_op *ops;     /* cancels and inline callbacks under way */

void cancel__assert_failed(const char *what, const char *file, int line)
{
    fprintf(stderr, "libcancel: internal invariant broken at %s:%d: %s\n", file, line, what);
    abort();
}

struct cancel_op *cancel__ops_locked(void)
{
    return ops;
}

void cancel__op_begin_locked(struct cancel_op *op, cancel_token_t *root)
{
    op->root = root;
    op->thread = pthread_self();
    op->running = NULL;
    op->waiting_under = NULL;
    op->mark = false;
    op->next = ops;
    ops = op;
}

void cancel__op_end_locked(struct cancel_op *op)
{
    struct cancel_op **link = &ops;
    while (*link != op)
        link = &(*link)->next;
    *link = op->next;
    cancel__broadcast_locked();
}

void cancel__run_callback_locked(struct cancel_op *op, struct cancel_cb *cb, int reason)
{
    cancel_fn fn = cb->fn;
    void *arg = cb->arg;
    op->running = cb;
    cancel__unlock();
    /* From here on CB belongs to FN, which may free it: never touch it again. */
    fn(arg, reason);
    cancel__lock();
    op->running = NULL;
    /* Only removers of this very callback wait for it (callback.c). */
    cancel__wake_key_locked(cb);
}

struct token_ext *cancel__token_ext_locked(cancel_token_t *t)
{
    struct token_ext *ext = atomic_load_explicit(&t->ext, memory_order_relaxed);
    if (ext)
        return ext;
    ext = calloc(1, sizeof *ext);
    if (!ext)
        return NULL;
    ext->fd = -1;
    ext->heap_index = SIZE_MAX;
    /* Release: a reader that loads EXT without the lock sees it initialised. */
    atomic_store_explicit(&t->ext, ext, memory_order_release);
    return ext;
}

static cancel_token_t *token_alloc(void)
{
    cancel_token_t *t = cancel__token_mem_alloc();
    if (!t) {
        errno = ENOMEM;
        return NULL;
    }
    atomic_init(&t->reason, 0);
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
    t->parent = parent; /* no reference: a linked child keeps it (see release_locked) */
    cancel__lock();
    /* Under the lock: a concurrent cancel of PARENT either sees us linked
     * and flags us, or flagged PARENT before we copy its reason. */
    atomic_store_explicit(&t->reason,
                          atomic_load_explicit(&parent->reason, memory_order_relaxed),
                          memory_order_relaxed);
    t->next_sibling = parent->first_child;
    if (t->next_sibling)
        t->next_sibling->prev_link = &t->next_sibling;
    t->prev_link = &parent->first_child;
    parent->first_child = t;
    cancel__unlock();
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
    /* Never from zero: a count reaches zero only under the lock, when the
     * token is already being freed. */
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
/* Its pending run holds a reference, so RELEASE comes after ON_CANCEL. */
static void attach_release(struct token_ext *ext)
{
    struct cancel_attach *a = atomic_load_explicit(&ext->attach, memory_order_relaxed);
    if (a) {
        a->release(a->obj);
        free(a);
    }
}
/* ---- end of extension attachment ---- */

/* Frees T, already unlinked and unreachable, outside the lock. */
static void token_free(cancel_token_t *t)
{
    struct token_ext *ext = atomic_load_explicit(&t->ext, memory_order_acquire);
    if (ext) {
        /* Registrations that could still reach T end before T goes: each of
         * them reaches T only through cancel__token_try_ref, which fails
         * from now on. */
        cancel__timer_forget(t, ext);
        cancel__link_forget(t, ext);
        cancel__signal_forget(t, ext);
        if (ext->fd >= 0)
            close(ext->fd);
        attach_release(ext);
        free(ext);
    }
    cancel__token_mem_free(t);
}

/*
 * Releases one counted reference of T under the lock, the last one
 * included, so that exactly one thread decides T's fate.  A token that
 * still has dependents (armed callbacks or linked children) is not freed:
 * its last reference passes to them (CANCEL_REFS_HOLD), as an armed
 * std::stop_callback keeps its state alive, without add, remove, child
 * create or child release paying an atomic reference each.  Returns true
 * when T is dead and unlinked from its parent.
 */
static bool release_locked(cancel_token_t *t)
{
    /* Acquire: the other holders' writes (their releases were acq_rel)
     * happen before our free. */
    unsigned n = atomic_load_explicit(&t->refs, memory_order_acquire);
    for (;;) {
        if ((n & CANCEL_REFS_COUNT) > 1) {
            /* Someone took a reference (try_ref) meanwhile: not the last. */
            if (atomic_compare_exchange_weak_explicit(&t->refs, &n, n - 1,
                                                      memory_order_acq_rel,
                                                      memory_order_acquire))
                return false;
            continue;
        }
        /* The hold is released only after cancel__drop_hold_locked cleared it. */
        CANCEL_ASSERT(n == 1);
        if (t->callbacks || t->first_child) {
            if (atomic_compare_exchange_weak_explicit(&t->refs, &n, n | CANCEL_REFS_HOLD,
                                                      memory_order_acq_rel,
                                                      memory_order_acquire))
                return false;
            continue;
        }
        if (!atomic_load_explicit(&t->ext, memory_order_relaxed)) {
            /* Only registrations kept in an EXT (timer, link, signal) take
             * references without holding one (try_ref), and an EXT is only
             * created under the lock: nobody else can touch the count. */
            atomic_store_explicit(&t->refs, 0, memory_order_relaxed);
            break;
        }
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
    /* Not the last reference: one CAS.  acq_rel (not release plus a fence,
     * which ThreadSanitizer does not model) orders our writes before the
     * eventual free and makes others' visible to it. */
    unsigned n = atomic_load_explicit(&t->refs, memory_order_relaxed);
    while ((n & CANCEL_REFS_COUNT) > 1)
        if (atomic_compare_exchange_weak_explicit(&t->refs, &n, n - 1, memory_order_acq_rel,
                                                  memory_order_relaxed))
            return;
    CANCEL_ASSERT((n & CANCEL_REFS_COUNT) == 1);

    /* Freeing a leaf can orphan an ancestor that only its children kept
     * alive, and so on up: a loop, not recursion, so that the last leaf of
     * a ten-million-deep chain frees the chain in constant stack.  The dead
     * are chained through next_sibling and freed once the lock is dropped
     * (their release hooks take other locks). */
    cancel_token_t *dead = NULL;
    cancel__lock();
    while (t && release_locked(t)) {
        cancel_token_t *parent = t->parent;
        t->next_sibling = dead;
        dead = t;
        t = parent ? cancel__drop_hold_locked(parent) : NULL;
    }
    cancel__unlock();
    while (dead) {
        cancel_token_t *next = dead->next_sibling;
        token_free(dead);
        dead = next;
    }
}

/* The callbacks a cancel collected, in the order they will run. */
struct pending {
    struct cancel_cb *head;
    struct cancel_cb **tail; /* the last callback's next, or &head */
};

/* ---- Extension attachment (libcancel-glib, issue 16; see internal.h) ---- */
/* Runs A's ON_CANCEL with this cancel's callbacks.  It takes a reference of
 * its own (T is reachable, so its count is not zero), dropped after it ran. */
static void attach_pend_locked(cancel_token_t *t, struct cancel_attach *a, int reason,
                               struct pending *pending)
{
    struct cancel_cb *cb = &a->cb;
    cb->reason = reason;
    cb->token = NULL;
    cb->hold = t;
    cb->next = NULL;
    cb->prev_link = pending->tail;
    *pending->tail = cb;
    pending->tail = &cb->next;
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
}
/* ---- end of extension attachment ---- */

/* Flags T with REASON and appends its armed callbacks to PENDING, so that
 * callbacks run in walk order: a token's before its descendants'. */
static void transition_locked(cancel_token_t *t, int reason, struct pending *pending)
{
    atomic_store_explicit(&t->reason, reason, memory_order_release);
    struct token_ext *ext = atomic_load_explicit(&t->ext, memory_order_relaxed);
    if (ext && ext->fd >= 0) {
        uint64_t one = 1;
        ssize_t w;
        do
            w = write(ext->fd, &one, sizeof one);
        while (w < 0 && errno == EINTR);
    }
    /* Relaxed: stored under the lock we hold (issue 16's attachment). */
    struct cancel_attach *attach =
        ext ? atomic_load_explicit(&ext->attach, memory_order_relaxed) : NULL;
    if (attach)
        attach_pend_locked(t, attach, reason, pending);
    struct cancel_cb *list = t->callbacks;
    if (!list)
        return;
    t->callbacks = NULL;
    /* Each callback keeps a valid prev_link, so that cancel_callback_remove
     * can still unlink it from the pending list. */
    list->prev_link = pending->tail;
    *pending->tail = list;
    /* If the callbacks kept T alive (everyone else released it), each
     * pending one keeps it until it has run or been removed, so that any
     * fn may still look at its token; the hold itself stays while linked
     * children share it. */
    bool held = atomic_load_explicit(&t->refs, memory_order_relaxed) & CANCEL_REFS_HOLD;
    unsigned n = 0;
    struct cancel_cb *last = list;
    for (;; last = last->next, n++) {
        last->reason = reason;
        last->token = NULL; /* pending: no longer armed on T (see remove) */
        last->hold = held ? t : NULL;
        if (!last->next)
            break;
    }
    pending->tail = &last->next;
    if (held) {
        /* n + 1 callbacks, n + 1 references: the hold's own, when no child
         * shares it any more, and new ones for the rest (the count never
         * drops to zero meanwhile: no try_ref can fail). */
        unsigned more = n + 1;
        if (cancel__drop_hold_locked(t))
            more--;
        atomic_fetch_add_explicit(&t->refs, more, memory_order_relaxed);
    }
}

/*
 * Is a cancel of another thread under way?  Checked when the walk meets an
 * already-cancelled child: that cancel may be rooted at the child or
 * anywhere below it, and also when the child's own cancel runs on this
 * very thread (we are inside one of its callbacks) while another thread
 * still runs callbacks further down.  wait_for_nested_ops then looks at
 * exactly the ones under our root.
 */
static bool foreign_op_under_way(void)
{
    pthread_t self = pthread_self();
    for (struct cancel_op *op = ops; op; op = op->next)
        if (op->root && !pthread_equal(op->thread, self))
            return true;
    return false;
}

static bool is_strict_descendant(const cancel_token_t *t, const cancel_token_t *root)
{
    for (t = t->parent; t; t = t->parent)
        if (t == root)
            return true;
    return false;
}

/* Flags every not-yet-cancelled node under ROOT; returns whether an
 * already-cancelled subtree still belongs to a cancel under way elsewhere. */
static bool walk_locked(cancel_token_t *root, struct pending *pending)
{
    bool nested_elsewhere = false;
    cancel_token_t *node = root;
    cancel_token_t *child = root->first_child;
    for (;;) {
        if (child) {
            if (atomic_load_explicit(&child->reason, memory_order_relaxed) != 0) {
                if (!nested_elsewhere && foreign_op_under_way())
                    nested_elsewhere = true;
                child = child->next_sibling;
                continue;
            }
            transition_locked(child, atomic_load_explicit(&node->reason,
                                                          memory_order_relaxed), pending);
            node = child;
            child = node->first_child;
            continue;
        }
        if (node == root)
            return nested_elsewhere;
        child = node->next_sibling;
        node = node->parent;
    }
}

/*
 * Does THREAD wait, directly or through other threads, for a cancel that
 * runs on SELF?  An edge goes from a thread waiting in wait_for_nested_ops
 * below some token to every other thread with a cancel rooted there.
 * Marks threads reached (through their ops) until nothing changes; no
 * allocation, no recursion; the op list is short.
 */
static bool waits_for(pthread_t thread, pthread_t self)
{
    for (struct cancel_op *o = ops; o; o = o->next)
        o->mark = pthread_equal(o->thread, thread);
    for (bool changed = true; changed;) {
        changed = false;
        for (struct cancel_op *w = ops; w; w = w->next) {
            if (!w->mark || !w->waiting_under)
                continue;
            for (struct cancel_op *o = ops; o; o = o->next) {
                if (o->mark || !o->root || pthread_equal(o->thread, w->thread) ||
                    !is_strict_descendant(o->root, w->waiting_under))
                    continue;
                if (pthread_equal(o->thread, self))
                    return true;
                for (struct cancel_op *m = ops; m; m = m->next)
                    if (pthread_equal(m->thread, o->thread))
                        m->mark = true;
                changed = true;
            }
        }
    }
    return false;
}

/*
 * Waits until no other thread's cancel rooted under OP's root is under
 * way.  The one exception breaks a cycle that callbacks can build across
 * trees (a callback of thread A cancels an ancestor of a token whose
 * callback runs on B, while B's callback cancels an ancestor of A's): we
 * do not wait for a thread that already waits for us.
 */
static void wait_for_nested_ops(struct cancel_op *me)
{
    pthread_t self = pthread_self();
    const cancel_token_t *root = me->root;
    me->waiting_under = root; /* seen by other threads' cycle checks */
    for (;;) {
        bool busy = false;
        for (struct cancel_op *op = ops; op && !busy; op = op->next)
            busy = op->root && !pthread_equal(op->thread, self) &&
                   is_strict_descendant(op->root, root) && !waits_for(op->thread, self);
        if (!busy)
            break;
        cancel__wait_locked();
    }
    me->waiting_under = NULL;
}

static void record_origin_locked(cancel_token_t *t, const char *file, int line)
{
    struct token_ext *ext = cancel__token_ext_locked(t);
    if (!ext)
        return; /* best effort: cancelled_from will answer ESRCH */
    ext->has_origin = true;
    ext->origin_thread = pthread_self();
    ext->origin_file = file;
    ext->origin_line = line;
}

bool cancel_token_cancel_at(cancel_token_t *t, int reason, const char *file, int line)
{
    if (!t)
        return false;
    if (reason <= 0)
        reason = ECANCELED;
    if (atomic_load_explicit(&t->reason, memory_order_acquire) != 0)
        return false;

    cancel__lock();
    if (atomic_load_explicit(&t->reason, memory_order_relaxed) != 0) {
        cancel__unlock();
        return false;
    }
    /* The op holds a reference on its root while it is listed: a callback
     * may release the caller's last one, and other threads' cancels follow
     * op.root's parent links (is_strict_descendant) until we unlist it. */
    cancel_token_ref(t);
    struct cancel_op op;
    cancel__op_begin_locked(&op, t);
    record_origin_locked(t, file, line);

    struct pending pending = {NULL, &pending.head};
    transition_locked(t, reason, &pending);
    bool nested_elsewhere = walk_locked(t, &pending);

    /* Run what we collected, one at a time, with the lock dropped.  Another
     * thread may unlink a pending callback meanwhile (remove), so we pop
     * under the lock each time. */
    struct cancel_cb *cb;
    while ((cb = pending.head) != NULL) {
        pending.head = cb->next;
        if (pending.head)
            pending.head->prev_link = &pending.head;
        cb->state = CANCEL_CB_RUNNING;
        cancel_token_t *hold = cb->hold;
        cancel__run_callback_locked(&op, cb, cb->reason);
        if (hold) {
            cancel__unlock();
            cancel_token_unref(hold);
            cancel__lock();
        }
    }
    if (nested_elsewhere)
        wait_for_nested_ops(&op);
    cancel__op_end_locked(&op);
    cancel__unlock();
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
    if (atomic_load_explicit(&t->reason, memory_order_acquire) == 0)
        return ESRCH;
    int rc = ESRCH;
    cancel__lock();
    /* The origin is recorded on the token a cancel started from; walk up to
     * the nearest cancelled ancestor that has one. */
    for (const cancel_token_t *n = t; n && atomic_load_explicit(&n->reason,
                                                               memory_order_relaxed);
         n = n->parent) {
        struct token_ext *ext = atomic_load_explicit(&n->ext, memory_order_relaxed);
        if (ext && ext->has_origin) {
            if (thread)
                *thread = ext->origin_thread;
            if (file)
                *file = ext->origin_file;
            if (line)
                *line = ext->origin_line;
            rc = 0;
            break;
        }
    }
    cancel__unlock();
    return rc;
}

bool cancel_token_is_cancelled(const cancel_token_t *t)
{
    return t && atomic_load_explicit(&t->reason, memory_order_acquire) != 0;
}

int cancel_token_reason(const cancel_token_t *t)
{
    return t ? atomic_load_explicit(&t->reason, memory_order_acquire) : 0;
}

int cancel_token_fd(cancel_token_t *t)
{
    if (!t) {
        errno = EINVAL;
        return -1;
    }
    cancel__lock();
    struct token_ext *ext = cancel__token_ext_locked(t);
    if (!ext) {
        cancel__unlock();
        errno = ENOMEM;
        return -1;
    }
    if (ext->fd < 0) {
        int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (fd < 0) {
            int saved = errno;
            cancel__unlock();
            errno = saved;
            return -1;
        }
        /* Created under the lock, so a cancel either writes it or has
         * already flagged the token, in which case we write it here. */
        if (atomic_load_explicit(&t->reason, memory_order_relaxed) != 0) {
            uint64_t one = 1;
            ssize_t w = write(fd, &one, sizeof one);
            (void)w;
        }
        ext->fd = fd;
    }
    int fd = ext->fd;
    cancel__unlock();
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
    /* Fast path, no lock: (B) these acquire loads pair with (A) below and
     * with the release store of EXT in cancel__token_ext_locked. */
    struct token_ext *ext = atomic_load_explicit(&t->ext, memory_order_acquire);
    struct cancel_attach *a = ext ? atomic_load_explicit(&ext->attach, memory_order_acquire)
                                  : NULL;
    if (!a) {
        /* MAKE runs outside the lock (it may call anything); a loser of a
         * race to attach releases its own object. */
        void *obj = make(arg);
        if (!obj) {
            errno = ENOMEM;
            return NULL;
        }
        struct cancel_attach *mine = calloc(1, sizeof *mine);
        cancel__lock();
        ext = mine ? cancel__token_ext_locked(t) : NULL;
        a = ext ? atomic_load_explicit(&ext->attach, memory_order_relaxed) : NULL;
        if (ext && !a) {
            mine->cb.fn = on_cancel;
            mine->cb.arg = obj;
            mine->cb.state = CANCEL_CB_IDLE;
            mine->key = key;
            mine->obj = obj;
            mine->release = release;
            /* (A) pairs with (B) above. */
            atomic_store_explicit(&ext->attach, mine, memory_order_release);
            a = mine;
            mine = NULL;
            obj = NULL;
        }
        cancel__unlock();
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

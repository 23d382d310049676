/*
 * timer.c - deadlines: one library timer thread, a heap of deadlines.
 *
 * A deadline token is a child (cancel_token_child) whose EXT carries the
 * absolute CLOCK_MONOTONIC deadline.  While it is pending it sits in a
 * binary min-heap ordered by deadline; EXT->heap_index is its slot there
 * (SIZE_MAX when it is not in the heap), so releasing a token removes its
 * deadline in O(log n).
 *
 * One timer thread per process, started on first use, sleeps on a
 * CLOCK_MONOTONIC condition variable until the earliest deadline: it never
 * polls, and a million pending deadlines cost it nothing until one is due.
 * It is woken only when a new deadline is earlier than the one it sleeps
 * until (WAKE_AT), so creating and releasing deadline tokens that never
 * fire makes no syscall (see APPOINTMENT in timer_main).
 *
 * Lock order: the timer lock is a leaf (internal.h): no token lock is held
 * when it is taken, and it is never held while taking one.  The timer thread therefore pops a due token under the
 * timer lock, takes a reference (cancel__token_try_ref: a token whose count
 * already reached zero is dying, and its cancel__timer_forget, waiting for
 * the timer lock, will find it gone), drops the timer lock and only then
 * cancels it.  A token stays valid while it is in the heap because its
 * destruction must take the timer lock to remove it.
 *
 * cancel_token_set_deadline arms, moves or removes a token's own deadline
 * at any time: the EXT's DEADLINE (HAS_DEADLINE, AT, HEAP_INDEX) is
 * therefore guarded by the timer lock once the token has been handed out
 * (before, its creator writes it alone).  Moving takes the timer lock
 * only, no token lock (the EXT itself is made once, lock-free, when the
 * token has none).  A deadline that has already passed when someone tries
 * to move it has fired (or is firing on the timer thread): the move then
 * cancels the token itself, so that "EALREADY" always means "cancelled
 * when this returns".
 */
#include "internal.h"

#include <stdlib.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif

struct heap_entry {
    cancel_token_t *token;
    struct token_deadline *dl;  /* the token's deadline (in its EXT) */
};

static pthread_once_t timer_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t timer_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t timer_cond;       /* CLOCK_MONOTONIC; see timer_init */
static int timer_init_error;

/* Guarded by timer_lock. */
static bool started;                    /* the thread runs (reset in a forked child) */
static struct heap_entry *heap;
static size_t heap_len, heap_cap;
/* When the timer thread will wake on its own: NEVER while it waits with no
 * deadline, ZERO while it is awake (it re-reads the heap before sleeping,
 * so nobody needs to wake it). */
static struct timespec wake_at;

static const struct timespec NEVER = { INT64_MAX, 999999999L };
static const struct timespec ZERO = { 0, 0 };

/* --- fork hook (reliab, issue 11; called by fork.c in the lock order) --- */
void cancel__timer_atfork_prepare(void)
{
    pthread_mutex_lock(&timer_lock);
}

void cancel__timer_atfork_parent(void)
{
    pthread_mutex_unlock(&timer_lock);
}

/* The child has no timer thread: the next deadline starts one.  Deadlines
 * armed before the fork do not fire in the child (their waiters were the
 * parent's threads): the heap is emptied, so a deadline the child arms is
 * the first the new thread sees.  The condvar may have had a waiter in the
 * parent: it is made anew.  The lock is ours since prepare. */
void cancel__timer_atfork_child(void)
{
    for (size_t i = 0; i < heap_len; i++)
        heap[i].dl->heap_index = SIZE_MAX;
    heap_len = 0;
    started = false;
    wake_at = NEVER;
    if (timer_init_error == 0) {
        pthread_condattr_t attr;
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&timer_cond, &attr);
        pthread_condattr_destroy(&attr);
    }
    pthread_mutex_unlock(&timer_lock); /* ours since prepare */
}
/* --- end of fork hook --- */

static void timer_init(void)
{
    pthread_condattr_t attr;
    int rc = pthread_condattr_init(&attr);
    if (rc == 0) {
        rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        if (rc == 0)
            rc = pthread_cond_init(&timer_cond, &attr);
        pthread_condattr_destroy(&attr);
    }
    timer_init_error = rc;
    wake_at = NEVER;
}

static bool earlier(const struct heap_entry *a, const struct heap_entry *b)
{
    return cancel__timespec_cmp(&a->dl->at, &b->dl->at) < 0;
}

static void heap_set(size_t i, struct heap_entry e)
{
    heap[i] = e;
    e.dl->heap_index = i;
}

static void sift_up(size_t i)
{
    struct heap_entry e = heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!earlier(&e, &heap[parent]))
            break;
        heap_set(i, heap[parent]);
        i = parent;
    }
    heap_set(i, e);
}

static void sift_down(size_t i)
{
    struct heap_entry e = heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= heap_len)
            break;
        if (child + 1 < heap_len && earlier(&heap[child + 1], &heap[child]))
            child++;
        if (!earlier(&heap[child], &e))
            break;
        heap_set(i, heap[child]);
        i = child;
    }
    heap_set(i, e);
}

/* Removes slot I: the last entry fills the hole and moves up or down. */
static void heap_remove(size_t i)
{
    CANCEL_ASSERT(i < heap_len);
    heap[i].dl->heap_index = SIZE_MAX;
    heap_len--;
    if (i == heap_len)
        return;
    heap[i] = heap[heap_len];
    heap[i].dl->heap_index = i;
    if (i > 0 && earlier(&heap[i], &heap[(i - 1) / 2]))
        sift_up(i);
    else
        sift_down(i);
}

static void *timer_main(void *arg)
{
    (void)arg;
#if defined(__linux__) && defined(PR_SET_TIMERSLACK)
    /* The default 50 us slack would be added to every deadline's lateness. */
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
#endif
    /* The last time we slept until.  When the heap empties before then we
     * keep that appointment instead of sleeping for ever: tokens created
     * and released before they fire (the common case) then never need to
     * wake us, as their deadlines are later than it. */
    struct timespec appointment = NEVER;
    pthread_mutex_lock(&timer_lock);
    for (;;) {
        struct timespec now = cancel__now();
        if (heap_len == 0) {
            if (cancel__timespec_cmp(&now, &appointment) < 0) {
                wake_at = appointment;
                pthread_cond_timedwait(&timer_cond, &timer_lock, &wake_at);
            } else {
                wake_at = appointment = NEVER;
                pthread_cond_wait(&timer_cond, &timer_lock);
            }
            wake_at = ZERO;
            continue;
        }
        struct heap_entry top = heap[0];
        /* Never early: fire only once the monotonic clock reached it. */
        if (cancel__timespec_cmp(&now, &top.dl->at) < 0) {
            wake_at = appointment = top.dl->at;
            pthread_cond_timedwait(&timer_cond, &timer_lock, &wake_at);
            wake_at = ZERO;
            continue;
        }
        heap_remove(0);
        if (!cancel__token_try_ref(top.token))
            continue; /* dying: its forget waits for our lock, finds it gone */
        pthread_mutex_unlock(&timer_lock);
        cancel_token_cancel(top.token, ETIMEDOUT);
        cancel_token_unref(top.token);
        pthread_mutex_lock(&timer_lock);
    }
    return NULL;
}

/* Starts the timer thread unless it runs; called with timer_lock held. */
static int ensure_started_locked(void)
{
    CANCEL_ASSERT_MUTEX_HELD(&timer_lock);
    if (started)
        return 0;
    if (timer_init_error)
        return timer_init_error;
    int rc = cancel__start_service_thread(timer_main, NULL, 64 * 1024);
    if (rc == 0) {
        started = true;
        wake_at = ZERO; /* it reads the heap before its first sleep */
    }
    return rc;
}

/* Puts T (whose EXT holds the deadline) in the heap; 0 or an errno. */
static int timer_add(cancel_token_t *t, struct token_deadline *dl)
{
    pthread_once(&timer_once, timer_init);
    pthread_mutex_lock(&timer_lock);
    int rc = ensure_started_locked();
    if (rc == 0 && heap_len == heap_cap) {
        size_t cap = heap_cap ? heap_cap * 2 : 64;
        struct heap_entry *grown = realloc(heap, cap * sizeof *grown);
        if (grown) {
            heap = grown;
            heap_cap = cap;
        } else {
            rc = ENOMEM;
        }
    }
    if (rc == 0) {
        heap_len++;
        heap_set(heap_len - 1, (struct heap_entry){ t, dl });
        sift_up(heap_len - 1);
        /* Wake the thread only when it would sleep past this deadline. */
        if (cancel__timespec_cmp(&dl->at, &wake_at) < 0)
            pthread_cond_signal(&timer_cond);
    }
    pthread_mutex_unlock(&timer_lock);
    return rc;
}

void cancel__timer_forget(cancel_token_t *t, struct token_deadline *dl)
{
    if (!dl->has_deadline)
        return;
    pthread_mutex_lock(&timer_lock);
    if (dl->heap_index != SIZE_MAX) {
        CANCEL_ASSERT(heap[dl->heap_index].token == t);
        heap_remove(dl->heap_index);
    }
    pthread_mutex_unlock(&timer_lock);
}

size_t cancel__timer_pending(void)
{
    pthread_mutex_lock(&timer_lock);
    size_t n = heap_len;
    pthread_mutex_unlock(&timer_lock);
    return n;
}

/* The deadline child; FUTURE: the caller knows *AT is still to come (a
 * positive timeout just computed from the clock), which saves a clock read. */
static cancel_token_t *deadline_child(cancel_token_t *parent, const struct timespec *at,
                                      bool future)
{
    cancel_token_t *t = cancel_token_child(parent);
    if (!t)
        return NULL;
    /* Written before the token is handed out: no lock needed, and readers
     * (cancel_token_deadline) see it through whatever hands T to them (the
     * EXT's release, (E1), comes before these stores). */
    struct token_ext *ext = cancel__token_ext(t);
    if (ext) {
        ext->deadline.has_deadline = true;
        ext->deadline.at = *at;
        ext->deadline.heap_index = SIZE_MAX;
    }
    if (!ext) {
        cancel_token_unref(t);
        errno = ENOMEM;
        return NULL;
    }
    /* Born cancelled by its parent: the first reason wins, nothing to arm. */
    if (cancel_token_is_cancelled(t))
        return t;
    if (!future) {
        struct timespec now = cancel__now();
        if (cancel__timespec_cmp(&now, at) >= 0) {
            cancel_token_cancel(t, ETIMEDOUT);
            return t;
        }
    }
    int rc = timer_add(t, &ext->deadline);
    if (rc != 0) {
        cancel_token_unref(t);
        errno = rc;
        return NULL;
    }
    return t;
}

cancel_token_t *cancel_token_with_deadline(cancel_token_t *parent, const struct timespec *at)
{
    if (!cancel__timespec_valid(at)) {
        errno = EINVAL;
        return NULL;
    }
    return deadline_child(parent, at, false);
}

cancel_token_t *cancel_token_with_timeout(cancel_token_t *parent, int64_t ns)
{
    struct timespec at = cancel__now();
    if (ns <= 0)
        return deadline_child(parent, &at, false); /* born cancelled */
    at = cancel__add_ns(at, ns); /* saturates: a huge timeout is "never" */
    return deadline_child(parent, &at, true);
}

/* Grows the heap by one free slot if full (timer_lock held); 0 or ENOMEM. */
static int heap_reserve_locked(void)
{
    CANCEL_ASSERT_MUTEX_HELD(&timer_lock);
    if (heap_len < heap_cap)
        return 0;
    size_t cap = heap_cap ? heap_cap * 2 : 64;
    struct heap_entry *grown = realloc(heap, cap * sizeof *grown);
    if (!grown)
        return ENOMEM;
    heap = grown;
    heap_cap = cap;
    return 0;
}

int cancel_token_set_deadline(cancel_token_t *t, const struct timespec *at)
{
    if (!t || (at && !cancel__timespec_valid(at)))
        return EINVAL;
    if (cancel_token_is_cancelled(t))
        return EALREADY;
    struct token_ext *ext = cancel__token_ext(t);
    if (!ext)
        return ENOMEM;
    struct token_deadline *dl = &ext->deadline;
    pthread_once(&timer_once, timer_init);
    int rc = 0;
    bool fire = false;
    pthread_mutex_lock(&timer_lock);
    /* Read under the lock: the timer thread pops a token only once its
     * deadline is at or before the clock, under this lock, so a token it
     * popped (and is about to cancel) reads as due here, never as "not in
     * the heap, to be re-armed". */
    struct timespec now = cancel__now();
    bool in_heap = dl->has_deadline && dl->heap_index != SIZE_MAX;
    if (dl->has_deadline && cancel__timespec_cmp(&dl->at, &now) <= 0) {
        /* Due: fired, or about to on the timer thread; we finish it. */
        if (in_heap)
            heap_remove(dl->heap_index);
        fire = true;
        rc = EALREADY;
    } else if (!at) {
        if (in_heap)
            heap_remove(dl->heap_index);
        dl->has_deadline = false;
    } else if (cancel__timespec_cmp(at, &now) <= 0) {
        if (in_heap)
            heap_remove(dl->heap_index);
        dl->has_deadline = true;
        dl->at = *at;
        dl->heap_index = SIZE_MAX;
        fire = true;
    } else if (in_heap) {
        size_t i = dl->heap_index;
        dl->at = *at;
        if (i > 0 && earlier(&heap[i], &heap[(i - 1) / 2]))
            sift_up(i);
        else
            sift_down(i);
    } else if ((rc = ensure_started_locked()) == 0 && (rc = heap_reserve_locked()) == 0) {
        dl->has_deadline = true;
        dl->at = *at;
        heap_len++;
        heap_set(heap_len - 1, (struct heap_entry){ t, dl });
        sift_up(heap_len - 1);
    }
    /* Wake the thread only when it would sleep past this deadline; a later
     * one it finds when it wakes for the old one (its appointment). */
    if (rc == 0 && !fire && at && cancel__timespec_cmp(at, &wake_at) < 0)
        pthread_cond_signal(&timer_cond);
    pthread_mutex_unlock(&timer_lock);
    if (fire)
        cancel_token_cancel(t, ETIMEDOUT);
    return rc;
}

/*
 * The effective deadline: the earliest over T, its ancestors and, for a
 * linked token met on the way, its sources' effective deadlines.  Parent
 * chains are walked in a loop; sources are kept on an explicit stack, so
 * no depth recurses on the C stack.  Deadlines are read under the timer
 * lock (set_deadline moves them); the links are written before the token
 * is handed out and never change.
 */
bool cancel_token_deadline(const cancel_token_t *t, struct timespec *at)
{
    if (!t)
        return false;
    enum { INLINE = 32 };
    const cancel_token_t *inline_stack[INLINE];
    const cancel_token_t **stack = inline_stack;
    size_t depth = 0, cap = INLINE;
    bool found = false;
    struct timespec best = NEVER;

    stack[depth++] = t;
    /* set_deadline may move a deadline meanwhile: read them under the
     * timer lock (a leaf, which token operations never take). */
    pthread_once(&timer_once, timer_init);
    pthread_mutex_lock(&timer_lock);
    while (depth > 0) {
        for (const cancel_token_t *n = stack[--depth]; n; n = n->parent) {
            /* (E2) pairs with (E1) in token.c: the EXT is initialised. */
            struct token_ext *ext = atomic_load_explicit(
                &n->ext, memory_order_acquire);
            if (!ext)
                continue;
            if (ext->deadline.has_deadline &&
                (!found || cancel__timespec_cmp(&ext->deadline.at, &best) < 0)) {
                best = ext->deadline.at;
                found = true;
            }
            for (size_t i = 0; i < ext->link.nsources; i++) {
                if (!ext->link.sources[i])
                    continue;
                if (depth == cap) {
                    size_t ncap = cap * 2;
                    const cancel_token_t **grown = malloc(ncap * sizeof *grown);
                    if (!grown)
                        continue; /* out of memory: that source is not consulted */
                    for (size_t k = 0; k < depth; k++)
                        grown[k] = stack[k];
                    if (stack != inline_stack)
                        free(stack);
                    stack = grown;
                    cap = ncap;
                }
                stack[depth++] = ext->link.sources[i];
            }
        }
    }
    pthread_mutex_unlock(&timer_lock);
    if (stack != inline_stack)
        free(stack);
    if (found && at)
        *at = best;
    return found;
}

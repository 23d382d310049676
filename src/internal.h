/*
 * internal.h - what libcancel's modules share and users never see.
 *
 * Lock order (outermost first): cancel__lock, then the timer lock
 * (timer.c), then nothing.  Callbacks never run under cancel__lock.
 */
#ifndef CANCEL_INTERNAL_H
#define CANCEL_INTERNAL_H

#include "config.h"

#define CANCEL_NO_INLINE 1
#include "cancel.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

/* Broken internal invariants abort, in every build; caller mistakes never do. */
#define CANCEL_ASSERT(cond) \
    do { if (!(cond)) cancel__assert_failed(#cond, __FILE__, __LINE__); } while (0)
void cancel__assert_failed(const char *what, const char *file, int line)
    __attribute__((noreturn));

struct cancel_cb;
struct token_ext;

/*
 * A token is 56 bytes (a 64-byte malloc chunk): everything a plain child
 * needs.  What only some tokens use (deadline, fd, links, signals, where it
 * was cancelled from) lives in EXT, allocated on demand.
 *
 * REASON is written only under cancel__lock, once, from 0 to a positive
 * value; it is read anywhere with an acquire load (the header's fast path
 * reads it as the object's first int).  The tree links and CALLBACKS are
 * guarded by cancel__lock.
 */
struct cancel_token {
    _Atomic int reason;             /* must stay first: part of the ABI */
    _Atomic unsigned refs;
    struct cancel_token *parent;    /* alive while we are linked to it */
    struct cancel_token *first_child;
    struct cancel_token *next_sibling;
    struct cancel_token **prev_link; /* the pointer that points at us */
    struct cancel_cb *callbacks;    /* armed, not yet run */
    _Atomic(struct token_ext *) ext;
};

/*
 * REFS: the reference count in the low 31 bits.  CANCEL_REFS_HOLD marks
 * one counted reference as held by the token's dependents (armed callbacks
 * and linked children, which take no reference of their own): set when
 * the last other reference is released while some are left, dropped
 * (cancel__drop_hold_locked) when the last of them goes.  The count
 * reaches zero only under cancel__lock.
 */
#define CANCEL_REFS_HOLD 0x80000000u
#define CANCEL_REFS_COUNT 0x7fffffffu

/* Clears T's hold when no callback is armed on it and no child is linked
 * to it any more; returns T when the caller must release that reference
 * (cancel_token_unref once unlocked), else NULL.  Inline: every callback
 * remove asks. */
static inline cancel_token_t *cancel__drop_hold_locked(cancel_token_t *t)
{
    unsigned n = atomic_load_explicit(&t->refs, memory_order_relaxed);
    if (!(n & CANCEL_REFS_HOLD) || t->callbacks || t->first_child)
        return NULL;
    atomic_fetch_and_explicit(&t->refs, ~CANCEL_REFS_HOLD, memory_order_relaxed);
    return t;
}

/* Optional parts of a token; see cancel__token_ext. */
struct token_ext {
    /* Where the cancel came from (cancel_token_cancelled_from). */
    bool has_origin;
    pthread_t origin_thread;
    const char *origin_file;
    int origin_line;
    /* cancel_token_fd's eventfd, or -1; written once on cancel. */
    int fd;
    /* Deadline (timer.c): absolute CLOCK_MONOTONIC, heap slot or SIZE_MAX. */
    bool has_deadline;
    struct timespec deadline;
    size_t heap_index;
    /* Linked token (link.c): its sources and one callback on each. */
    size_t nsources;
    cancel_token_t **sources;
    cancel_callback_t *links;
    /* Signal registrations (signal.c) that name this token. */
    bool on_signal;
    /* An extension library's object (cancel_token_attachment_, below):
     * stored once under cancel__lock with release order, read with acquire
     * loads without the lock (token.c). */
    _Atomic(struct cancel_attach *) attach;
};

/* The internal view of cancel_callback_t. */
struct cancel_cb {
    struct cancel_cb *next;
    struct cancel_cb **prev_link;
    cancel_token_t *token;
    cancel_fn fn;
    void *arg;
    uint32_t state;
    int reason;                     /* copied at cancel: the token may be gone by fn */
    cancel_token_t *hold;           /* on a cancel's pending list: the token whose
                                     * callbacks' reference this one carries */
};
/* Callback states: odd values, so that storage never armed is unlikely to
 * pass for an armed callback. */
enum {
    CANCEL_CB_ARMED = 0x41524d45u,   /* on a token's list or a cancel's pending list */
    CANCEL_CB_RUNNING = 0x52554e4fu, /* fn was handed the callback; it may be done */
    CANCEL_CB_NULL = 0x4e554c4du,    /* added on a NULL token: nothing armed */
    CANCEL_CB_IDLE = 0x49444c45u,    /* removed, or run and then removed */
};
_Static_assert(sizeof(struct cancel_cb) <= sizeof(cancel_callback_t),
               "cancel_callback_t too small");

/*
 * The one lock that guards token trees and callback lists (lock.c).  Its
 * unlock is a plain store and a plain load (no atomic read-modify-write):
 * see lock.c for why that cannot lose a sleeper's wake-up.
 */
struct cancel_lock {
    _Atomic int held;       /* 0 free, 1 held */
    _Atomic int sleepers;   /* threads that may sleep in the kernel for it */
};
extern struct cancel_lock cancel__lock_state;
void cancel__lock_slow(void);
void cancel__unlock_wake(void);

static inline void cancel__lock(void)
{
    int expected = 0;
    if (!atomic_compare_exchange_strong_explicit(&cancel__lock_state.held, &expected, 1,
                                                 memory_order_acquire, memory_order_relaxed))
        cancel__lock_slow();
}

static inline void cancel__unlock(void)
{
    atomic_store_explicit(&cancel__lock_state.held, 0, memory_order_release);
    /* The store must stay before the load in program order (a relaxed
     * load may otherwise move up); the sleeper's membarrier supplies the
     * hardware fence between them. */
    atomic_signal_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&cancel__lock_state.sleepers, memory_order_relaxed))
        cancel__unlock_wake();
}

/* The token's EXT, allocated (under cancel__lock) when missing; NULL: ENOMEM. */
struct token_ext *cancel__token_ext_locked(cancel_token_t *t);

/* Token memory (token_mem.c): a block of sizeof(cancel_token_t) bytes from
 * a per-thread cache in front of malloc (NULL: out of memory), and back. */
void *cancel__token_mem_alloc(void);
void cancel__token_mem_free(void *block);
/* Tests that count allocations set it first; under valgrind it is set. */
extern _Atomic bool cancel__token_cache_off;
unsigned cancel__token_cache_count(void);   /* this thread's cached blocks */

/* Take a reference unless the count already reached zero (the token is being freed). */
bool cancel__token_try_ref(cancel_token_t *t);

/* Release hooks run when a token with an EXT is freed, outside cancel__lock. */
void cancel__timer_forget(cancel_token_t *t, struct token_ext *ext);
void cancel__link_forget(cancel_token_t *t, struct token_ext *ext);
void cancel__signal_forget(cancel_token_t *t, struct token_ext *ext);

/* ---- Extension attachment (libcancel-glib, issue 16) ------------------
 * One object per token for a library built on libcancel (libcancel-glib
 * keeps the token's GCancellable there).  Unlike a callback it does not keep
 * the token alive: ON_CANCEL(obj, reason) runs once, like a callback, when
 * the token is cancelled, and RELEASE(obj) runs when the token is freed
 * (outside cancel__lock, after ON_CANCEL has returned).  The first call for
 * T makes the object with MAKE(ARG) (outside the lock; a racing loser's
 * object is released at once) and returns it; later calls with the same
 * KEY return it (borrowed: valid while T lives).  NULL with errno ENOMEM
 * (MAKE returned NULL, or memory ran out), EINVAL (T NULL) or EBUSY (T
 * carries another KEY's object).  The caller handles a T cancelled before
 * the object was attached (ON_CANCEL does not run then): it checks
 * cancel_token_is_cancelled after the call.  Exported for libcancel-glib
 * (a separate library) under a cancel_ name, but not public API: it is not
 * in <cancel.h>. */
struct cancel_attach {
    struct cancel_cb cb;            /* put on a cancel's pending list */
    const void *key;
    void *obj;
    void (*release)(void *obj);
};
CANCEL_API void *cancel_token_attachment_(cancel_token_t *t, const void *key,
                                          void *(*make)(void *arg), void *arg,
                                          cancel_fn on_cancel, void (*release)(void *obj));
/* ---- end of extension attachment -------------------------------------- */

/* ---- Process-wide dump (dump.c, issue 16) ------------------------------
 * Every open scope is on one registry (dump.c), added at open and removed
 * before it is freed, under a process-wide mutex: scope open and join pay
 * one uncontended lock each, which is off SPEC's "Scale" paths (callbacks,
 * children, cancel and wake-ups never take it).  Lock order: the registry
 * lock, then a scope's MU, then cancel__lock. */
struct cancel__scope_reg {
    struct cancel__scope_reg *prev, *next;
    cancel_scope_t *scope;
};
void cancel__scope_register(struct cancel__scope_reg *reg, cancel_scope_t *s);
void cancel__scope_unregister(struct cancel__scope_reg *reg);

/* One scope, or one of its live tasks, as cancel__scope_visit shows it. */
struct cancel__scope_view {
    const void *id;                 /* the scope */
    const void *owner;              /* the NEST of the task that opened it, or NULL */
    const char *mode;               /* "fail-fast", "supervise", "race" */
    unsigned live, limit;
    bool joining, terminated, draining;
    int failure;
    cancel_token_t *token;          /* valid during the visit */
};
struct cancel__task_view {
    const void *id;                 /* the task */
    const void *nest;               /* what scopes opened inside it carry as OWNER */
    const char *name;               /* "" when unnamed; valid during the visit */
    const char *state;              /* "starting", "running" */
    bool running;
    int64_t running_ns;
    pthread_t thread;
    bool waiting_slot;              /* in spawn, waiting for a slot of this scope */
    const char *call;               /* the wrapped call it is blocked in, or NULL */
    int fd;                         /* that call's descriptor, or -1 */
    int64_t blocked_ns;
    cancel_token_t *token;          /* valid during the visit */
};
/* Calls FN once for S (TASK NULL), then once per live task, with S's MU
 * taken (scope.c): FN must not take MU; it may read tokens.  NOW: the
 * CLOCK_MONOTONIC nanoseconds the durations are counted to. */
void cancel__scope_visit(cancel_scope_t *s, int64_t now,
                         void (*fn)(void *ctx, const struct cancel__scope_view *scope,
                                    const struct cancel__task_view *task),
                         void *ctx);
/* cancel_scope_dump's text, written by dump.c. */
int cancel__dump_scope(cancel_scope_t *s, int fd);
/* ---- end of process-wide dump ------------------------------------------ */

/* Deadlines waiting in the timer heap (timer.c; for tests and benchmarks). */
size_t cancel__timer_pending(void);

/* Callback running bookkeeping shared by token.c and callback.c. */
struct cancel_op {
    cancel_token_t *root;            /* token this cancel transitioned, or NULL */
    pthread_t thread;
    const struct cancel_cb *running; /* callback whose fn runs now, or NULL */
    struct cancel_op *next;
    const cancel_token_t *waiting_under; /* waiting for cancels below it (token.c) */
    bool mark;                       /* scratch for token.c's cycle check */
};
void cancel__op_begin_locked(struct cancel_op *op, cancel_token_t *root);
void cancel__op_end_locked(struct cancel_op *op);
/* Runs CB's fn outside the lock (called and returns with the lock held). */
void cancel__run_callback_locked(struct cancel_op *op, struct cancel_cb *cb, int reason);
void cancel__wait_locked(void);
/* Waits until cancel__wake_key_locked(KEY) or a broadcast (lock.c). */
void cancel__wait_key_locked(const void *key);
void cancel__wake_key_locked(const void *key);
void cancel__broadcast_locked(void);
struct cancel_op *cancel__ops_locked(void);

/*
 * What a thread is blocked in, for scope diagnostics: the wrapped-call
 * layer (wake.c) fills its own thread's record around a wait; scope.c
 * reads a task's worker's record from another thread.  CALL is a static
 * string ("read", "accept", ...) or NULL when not blocked.
 */
struct cancel_blocked {
    _Atomic(const char *) call;
    _Atomic int fd;
    _Atomic int64_t since_ns;       /* CLOCK_MONOTONIC when the wait began */
};
struct cancel_blocked *cancel__thread_blocked(void);

/* The worker thread cache behind scopes (worker.c).  START runs JOB(ARG)
 * once on a cached or new thread of STACK_SIZE bytes (0: the default),
 * then DONE(ARG) (when not NULL) once the thread is idle again; returns 0
 * or EAGAIN. */
int cancel__worker_start(void (*job)(void *), void (*done)(void *), void *arg,
                         size_t stack_size);
int cancel__stack_size_check(size_t bytes, size_t *rounded);
unsigned cancel__worker_idle_count(void);
long cancel__ncpu(void);    /* online CPUs (spinning makes sense only above 1) */
/* Test hook: the next that many thread creations fail with EAGAIN. */
extern _Atomic int cancel__worker_fail_next_create;

/*
 * Wrapped-call waits (wake.c).  cancel__wait_ready waits until one of
 * FDS[0..N) is ready (returns how many; revents filled), token T is
 * cancelled (-ECANCELED or -ETIMEDOUT), the absolute DEADLINE passes
 * (0; NULL: none), or fails (-errno).  T NULL: a plain ppoll.  CALL names
 * the wait in the thread's blocked record.  blocked_begin/end fill and
 * clear that record around other kinds of waits.
 */
int cancel__wait_ready(cancel_token_t *t, struct pollfd *fds, nfds_t n,
                       const struct timespec *deadline, const char *call);
int cancel__reason_errno(int reason);
void cancel__blocked_begin(const char *call, int fd);
void cancel__blocked_end(void);

/* sem_futex.c: an exact cancel-aware sem_wait for a blocked caller; 0,
 * -ECANCELED/-ETIMEDOUT, or -ENOSYS where the platform has none. */
#include <semaphore.h>
int cancel__sem_wait_exact(sem_t *sem, cancel_token_t *t);

/* A detached library thread with every signal blocked (thread.c). */
int cancel__start_service_thread(void *(*fn)(void *), void *arg, size_t stack_size);

/* Time helpers (time.c). */
struct timespec cancel__now(void);
struct timespec cancel__add_ns(struct timespec t, int64_t ns);
int cancel__timespec_cmp(const struct timespec *a, const struct timespec *b);
bool cancel__timespec_valid(const struct timespec *t);
int64_t cancel__ns_until(const struct timespec *at);

#endif

/*
 * internal.h - what libcancel's modules share and users never see.
 *
 * The library's lock hierarchy is written once, below ("locks").
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
 * needs, its own lock included.  What only some tokens use (deadline, fd,
 * links, signals, where it was cancelled from) lives in EXT, allocated on
 * demand.
 *
 * WORD is the reason in its low 31 bits (0 while live; reasons are
 * positive ints) and the token's lock in bit 31 (lock.c).  The lock
 * guards the token's own lists: CALLBACKS (armed callbacks, then, once
 * cancelled, the ones still to run and the frames of the ones running
 * now, see run.c) and FIRST_CHILD with every child's NEXT_SIBLING and
 * PREV_LINK.  So a child's sibling links are guarded by its parent's
 * lock, and creating or releasing a child takes its parent's lock.  The
 * reason is written once, from 0 to a positive value, under the lock;
 * readers never take the lock: they load WORD with acquire order and mask
 * the lock bit off (the header's fast path reads it as the object's first
 * int).  PARENT never changes.
 */
struct cancel_token {
    _Atomic int word;               /* must stay first: part of the ABI */
    _Atomic unsigned refs;
    /* What callback add and remove write, WORD and CALLBACKS, fill the
     * first 16 bytes: malloc's 16-byte-aligned chunks put them in one
     * cache line whatever the token's offset in it, so two tokens that
     * malloc placed side by side never share a written line there. */
    struct cancel_cb *callbacks;
    struct cancel_token *first_child;
    struct cancel_token *next_sibling;
    struct cancel_token **prev_link; /* the pointer that points at us */
    struct cancel_token *parent;    /* alive while we are linked to it */
    _Atomic(struct token_ext *) ext;
};
_Static_assert(sizeof(struct cancel_token) <= 56, "a token fits a 64-byte malloc chunk");

#define CANCEL_LOCKED ((int)0x80000000u)
#define CANCEL_REASON_MASK 0x7fffffff

/* The reason, lock bit masked off, for readers without the lock.  (R2)
 * pairs with (R1) in token.c: a reader that sees the reason sees what the
 * cancel wrote before it (the origin). */
static inline int cancel__reason_of(const cancel_token_t *t)
{
    return atomic_load_explicit(&((cancel_token_t *)t)->word, memory_order_acquire) &
           CANCEL_REASON_MASK;
}

/*
 * REFS: the reference count in the low 31 bits.  CANCEL_REFS_HOLD marks
 * one counted reference as held by the token's dependents (armed callbacks
 * and linked children, which take no reference of their own): set when
 * the last other reference is released while some are left, dropped
 * (cancel__drop_hold_locked) when the last of them goes.  The count
 * reaches zero only under the token's parent's lock and its own (a root:
 * its own), so that a walker holding the parent's lock never meets a
 * child that is half freed.
 */
#define CANCEL_REFS_HOLD 0x80000000u
#define CANCEL_REFS_COUNT 0x7fffffffu

/* ------------------------------------------------------------------ locks
 *
 * The lock hierarchy: every lock the library has, outermost first.  A lock
 * may be held while taking one further down this list, never one above it.
 *
 *   0. the registry of open scopes (dump.c, issue 16): held by scope open
 *      and join around one list insert or removal, and by cancel_dump_all
 *      while it takes each scope's MU in turn to copy it.
 *   1. a scope's DRAIN_MU (scope.c, taken only by drain), then its MU.
 *      MU is held while creating a task token (cancel_token_child) and
 *      arming callbacks on live tokens, so it sits above every token lock;
 *      it is never held across cancelling a token, removing a callback,
 *      set_deadline or releasing a token (the callbacks scope.c arms take
 *      MU).  Never two scopes' at once, except a parent scope's before a
 *      nested one's; the worker cache's lock is taken outside MU.
 *   2. the wait graph's mutex (run.c): a thread about to wait for a callback
 *      that runs on another thread; rare paths only.
 *   3. token locks (lock.c), ancestor before descendant: a cancel holds the
 *      locks from its root down to the node it is visiting; releasing a
 *      child takes the parent's lock, then the child's.  Two tokens neither
 *      of which is an ancestor of the other are never locked together.
 *      No callback ever runs, no thread ever sleeps (but for the lock
 *      itself) and no other lock is taken while a token lock is held.
 *   4. thread record locks (lock.c, struct cancel_thread): taken under a
 *      token lock or the graph mutex to push, pop or look for a running
 *      callback's frame; nothing is taken under them.
 *   5. leaf locks, never held while taking another library lock: the timer's
 *      (timer.c), the signal module's (signal.c), the worker cache's
 *      (worker.c), the thread registry's (lock.c), a token waiter's mutex
 *      (token_wait.c).
 *
 * fork (fork.c): the prepare handler takes the signal lock, the graph
 * mutex, then closes the fork gate (lock.c) and waits until no thread holds
 * a token or record lock, then takes the timer's and the worker cache's.
 * So the child inherits no lock held by a thread that is gone.  A scope's
 * MU is not taken: scopes busy at the fork are the parent's (cancel(7)).
 */
void cancel__lock_slow(_Atomic int *word);
void cancel__unlock_wake(_Atomic int *word);
/* The parking buckets (lock.c): how many threads sleep for a lock whose
 * address hashes there.  Written only by threads about to sleep. */
struct cancel_parking {
    _Atomic unsigned sleepers;
    char pad[64 - sizeof(unsigned)];
};
enum { CANCEL_PARKING_BUCKETS = 256 };
extern struct cancel_parking cancel__parking[CANCEL_PARKING_BUCKETS];
static inline struct cancel_parking *cancel__bucket(const void *word)
{
    uintptr_t a = (uintptr_t)word;
    return &cancel__parking[((a >> 6) ^ (a >> 14)) & (CANCEL_PARKING_BUCKETS - 1)];
}

/*
 * Each thread that uses tokens has a record (lock.c), found through
 * cancel__me, adopted at its first token lock and handed to the next new
 * thread when it exits: records are never freed, so another thread may
 * read one whose thread is gone.  One cache line, written by its own
 * thread only, but for LOCK-guarded reads of FRAMES by removers.
 */
struct cancel_frame;
struct cancel_cancel_op;
struct cancel_thread {
    _Atomic unsigned depth;         /* library locks held (the fork gate) */
    _Atomic int lock;               /* guards FRAMES for other threads' reads */
    struct cancel_frame *frames;    /* callbacks this thread runs now, innermost first */
    struct cancel_cancel_op *ops;   /* its cancels under way, innermost first (own use) */
    cancel_token_t *waiting_on;     /* the wait graph (run.c): guarded by its mutex */
    unsigned mark;                  /* graph search scratch, guarded by its mutex */
    struct cancel_thread *next;     /* the registry, guarded by its mutex */
    struct cancel_thread *next_waiting; /* the graph's waiters, guarded by its mutex */
    bool in_use;
    bool tls_own;                   /* the thread's own TLS (no memory for one) */
} __attribute__((aligned(64)));
extern __thread struct cancel_thread *cancel__me __attribute__((tls_model("initial-exec")));
extern _Atomic int cancel__gate_closed;
void cancel__gate_enter_slow(void);
/* The calling thread's record (adopted on first use). */
struct cancel_thread *cancel__thread_self(void);

/* Enters the gate before the thread's first token lock: a plain store to
 * the thread's own record and a load of a line that only fork writes. */
static inline void cancel__gate_enter(void)
{
    struct cancel_thread *me = cancel__me;
    if (__builtin_expect(!me, 0)) {
        cancel__gate_enter_slow();
        return;
    }
    /* Relaxed: only this thread writes its depth. */
    unsigned d = atomic_load_explicit(&me->depth, memory_order_relaxed);
    /* (G1) pairs with (G2) in lock.c: the depth store, then the gate load,
     * kept in that order by the fork side's membarrier. */
    atomic_store_explicit(&me->depth, d + 1, memory_order_relaxed);
    if (d == 0) {
        atomic_signal_fence(memory_order_seq_cst);
        if (__builtin_expect(atomic_load_explicit(&cancel__gate_closed,
                                                  memory_order_relaxed), 0))
            cancel__gate_enter_slow();
    }
}

static inline void cancel__gate_leave(void)
{
    struct cancel_thread *me = cancel__me;
    unsigned d = atomic_load_explicit(&me->depth, memory_order_relaxed); /* ours */
    /* (G3) pairs with (G5) in lock.c: what we did under the lock is
     * visible to a fork handler that reads the depth at zero. */
    atomic_store_explicit(&me->depth, d - 1, memory_order_release);
}

/* In debug builds, *_locked functions assert that they hold the lock
 * (that somebody holds it: the lock keeps no owner, to stay one bit). */
#ifdef NDEBUG
#define CANCEL_ASSERT_HELD(word) ((void)0)
#else
/* Relaxed: the holder (the caller) set the bit itself. */
#define CANCEL_ASSERT_HELD(word) \
    CANCEL_ASSERT(atomic_load_explicit((word), memory_order_relaxed) & CANCEL_LOCKED)
#endif

/* The same for a pthread mutex: trylock by anyone while it is held fails. */
#ifdef NDEBUG
#define CANCEL_ASSERT_MUTEX_HELD(m) ((void)0)
#else
#define CANCEL_ASSERT_MUTEX_HELD(m) CANCEL_ASSERT(pthread_mutex_trylock(m) == EBUSY)
#endif

/*
 * A futex lock in bit 31 of a word whose other bits its holder alone may
 * change (a token's reason).  The uncontended path is one CAS to lock and
 * a plain store plus a plain load to unlock (see lock.c for why that
 * cannot lose a sleeper's wake-up).  Every library lock of this kind
 * passes the fork gate.
 */
static inline void cancel__lock(_Atomic int *word)
{
    cancel__gate_enter();
    int expected = 0; /* a live token, a record: the common case */
    /* (L4) pairs with (L3) below: the last holder's section is visible. */
    if (__builtin_expect(!atomic_compare_exchange_strong_explicit(
                             word, &expected, CANCEL_LOCKED,
                             memory_order_acquire, memory_order_relaxed), 0))
        cancel__lock_slow(word);
}

static inline void cancel__unlock(_Atomic int *word)
{
    /* Relaxed: nobody else writes the word while we hold it. */
    int w = atomic_load_explicit(word, memory_order_relaxed);
    /* (L3) pairs with (L4) above and (L5), (L6) in lock.c: our critical
     * section is visible to the next holder. */
    atomic_store_explicit(word, w & CANCEL_REASON_MASK, memory_order_release);
    /* (L1) pairs with (L2) in lock.c: the store stays before the load in
     * program order; the sleeper's membarrier supplies the hardware fence. */
    atomic_signal_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&cancel__bucket(word)->sleepers, memory_order_relaxed))
        cancel__unlock_wake(word);
    cancel__gate_leave();
}

static inline void cancel__token_lock(cancel_token_t *t) { cancel__lock(&t->word); }
static inline void cancel__token_unlock(cancel_token_t *t) { cancel__unlock(&t->word); }

/* The reason of a token whose lock we hold (relaxed: only the holder
 * writes it). */
static inline int cancel__reason_locked(const cancel_token_t *t)
{
    return atomic_load_explicit(&((cancel_token_t *)t)->word, memory_order_relaxed) &
           CANCEL_REASON_MASK;
}

/* Clears T's hold when no callback is armed on it and no child is linked
 * to it any more; returns T when the caller must release that reference
 * (cancel_token_unref once unlocked), else NULL.  Inline: every callback
 * remove asks. */
static inline cancel_token_t *cancel__drop_hold_locked(cancel_token_t *t)
{
    CANCEL_ASSERT_HELD(&t->word);
    /* Relaxed: the hold bit changes only under T's lock, which we hold;
     * the count bits are not looked at. */
    unsigned n = atomic_load_explicit(&t->refs, memory_order_relaxed);
    if (!(n & CANCEL_REFS_HOLD) || t->callbacks || t->first_child)
        return NULL;
    atomic_fetch_and_explicit(&t->refs, ~CANCEL_REFS_HOLD, memory_order_relaxed);
    return t;
}

/* Optional parts of a token, one sub-structure per module that uses it;
 * each module's forget hook gets its own part only. */
struct token_origin {           /* token.c: cancel_token_cancelled_from */
    bool has_origin;
    pthread_t thread;
    const char *file;
    int line;
};
struct token_deadline {         /* timer.c */
    bool has_deadline;
    struct timespec at;         /* absolute CLOCK_MONOTONIC */
    size_t heap_index;          /* slot in the timer heap, or SIZE_MAX */
};
struct token_link {             /* token_any.c: its sources and one callback on each */
    size_t nsources;
    cancel_token_t **sources;
    cancel_callback_t *links;
};
struct token_signal {           /* signal.c */
    _Atomic bool registered;    /* some registration names this token */
};
struct token_ext {
    int fd;                     /* cancel_token_fd's eventfd, or -1; token.c */
    struct token_origin origin;
    struct token_deadline deadline;
    struct token_link link;
    struct token_signal signal;
    /* An extension library's object (cancel_token_attachment_, below;
     * issue 16): stored once under the token's lock with release order,
     * read with acquire loads without it: (X1), (X2) in token.c. */
    _Atomic(struct cancel_attach *) attach;
};

/* The internal view of cancel_callback_t.  STATE decides, by CAS, whether
 * a cancel runs the callback or a remove takes it off (see callback.c). */
struct cancel_cb {
    struct cancel_cb *next;
    struct cancel_cb **prev_link;
    cancel_token_t *token;          /* where it is (or was) armed */
    cancel_fn fn;
    void *arg;
    struct cancel_thread *runner;   /* set before RUNNING: whose frame says when fn is done */
    _Atomic uint32_t state;
};
/* Callback states: odd values, so that storage never armed is unlikely to
 * pass for an armed callback. */
enum {
    CANCEL_CB_ARMED = 0x41524d45u,   /* on its token's list, not run yet */
    CANCEL_CB_REMOVING = 0x52454d56u,/* a remove won it: still listed, never runs */
    CANCEL_CB_RUNNING = 0x52554e4fu, /* a cancel won it: fn was handed it, may be done */
    CANCEL_CB_NULL = 0x4e554c4du,    /* added on a NULL token: nothing armed */
    CANCEL_CB_IDLE = 0x49444c45u,    /* removed, or run and then removed */
    CANCEL_CB_FRAME = 0x46524d45u,   /* not a callback: a runner's frame (run.c) */
};
_Static_assert(sizeof(struct cancel_cb) <= sizeof(cancel_callback_t),
               "cancel_callback_t too small");

/*
 * Running callbacks (run.c).  While fn runs, its runner keeps a frame on
 * the token's CALLBACKS list (guarded by the token's lock: an ancestor's
 * cancel waits for it there) and on its own thread record's FRAMES
 * (guarded by the record's lock: a remove waits for it there, never
 * touching the token, which may be gone once fn returned).  fn may free
 * the callback: after fn returns only the frame, on the runner's stack,
 * is touched.
 */
struct cancel_frame {
    struct cancel_cb node;          /* state CANCEL_CB_FRAME; linked on the token */
    const struct cancel_cb *running;
    cancel_token_t *token;
    struct cancel_thread *owner;
    struct cancel_frame *outer;     /* the owner's next frame */
};
struct cancel_cancel_op {
    const cancel_token_t *root;
    struct cancel_cancel_op *outer;
};
/* Claims CB, listed on T or fresh, from ARMED to RUNNING and runs it with
 * T unlocked (T locked and referenced by the caller; returns locked);
 * false when a remove claimed it first. */
bool cancel__run_callback_locked(cancel_token_t *t, struct cancel_cb *cb);
/* Waits until CB (RUNNING, owned by the caller) has returned from fn;
 * false at once when fn runs on this very thread (fn removing itself). */
bool cancel__wait_callback(const struct cancel_cb *cb);
/* Waits (T locked and referenced; returns locked) until no other thread
 * runs a callback of T, unless waiting would close a cycle of waits. */
void cancel__wait_foreign_runs_locked(cancel_token_t *t);
/* True when the calling thread is inside cancel_token_cancel of T or of an
 * ancestor of T (running its callbacks): scope joins answer EDEADLK. */
bool cancel__cancelling_here(const cancel_token_t *t);
void cancel__op_push(struct cancel_cancel_op *op, const cancel_token_t *root);
void cancel__op_pop(struct cancel_cancel_op *op);

/* Token memory (token_mem.c): a 64-byte-aligned block of at least
 * sizeof(cancel_token_t) bytes, from a per-thread cache in front of
 * per-thread slabs (NULL: out of memory), and back. */
void *cancel__token_mem_alloc(void);
void cancel__token_mem_free(void *block);
/* Tests that count allocations set it first (each token its own malloc
 * block); under valgrind it is set. */
extern _Atomic bool cancel__token_cache_off;
/* Set at load time when running under valgrind: debug checks that read
 * caller memory which may be uninitialised (a fresh callback) skip it. */
extern bool cancel__under_valgrind;
unsigned cancel__token_cache_count(void);   /* this thread's cached blocks */

/* Take a reference unless the count already reached zero (the token is being freed). */
bool cancel__token_try_ref(cancel_token_t *t);

/* Release hooks run when a token with an EXT is freed, outside every lock. */
void cancel__timer_forget(cancel_token_t *t, struct token_deadline *d);
void cancel__link_forget(cancel_token_t *t, struct token_link *l);
void cancel__signal_forget(cancel_token_t *t, struct token_signal *s);

/* ---- Extension attachment (libcancel-glib, issue 16) ------------------
 * One object per token for a library built on libcancel (libcancel-glib
 * keeps the token's GCancellable there).  Unlike a callback it does not keep
 * the token alive: ON_CANCEL(obj, reason) runs once, like a callback, when
 * the token is cancelled, and RELEASE(obj) runs when the token is freed
 * (outside every lock, after ON_CANCEL has returned).  The first call for
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
    struct cancel_cb cb;            /* listed on the token when it is flagged */
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
 * lock, then a scope's MU, then token locks (see "locks" above). */
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

/* The token's EXT, allocated when missing (no lock held); NULL: ENOMEM. */
struct token_ext *cancel__token_ext(cancel_token_t *t);

/*
 * What a thread is blocked in, for scope diagnostics: the wrapped-call
 * layer (wake.c) fills its own thread's record around a wait; scope.c
 * reads a task's worker's record from another thread.  CALL is a static
 * string ("read", "accept", ...) or NULL when not blocked.
 */
struct cancel_blocked {
    /* (D1) release stores of CALL (wake.c, token_wait.c) pair with (D2),
     * scope.c's acquire load: who sees CALL sees FD and SINCE_NS. */
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
extern _Atomic unsigned cancel__worker_max_idle; /* 1024; tests lower it */
long cancel__ncpu(void);    /* online CPUs (spinning makes sense only above 1) */
/* Test hook: the next that many thread creations fail with EAGAIN. */
extern _Atomic int cancel__worker_fail_next_create;
/* Task records allocated now, in every scope (scope.c; tests watch it). */
extern _Atomic long cancel__scope_task_records;

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

/* sem_futex.c: an exact cancel-aware sem_wait for a blocked caller, until
 * ABSTIME on CLOCK (CLOCK_REALTIME or CLOCK_MONOTONIC) when not NULL; 0,
 * -ECANCELED/-ETIMEDOUT, or -ENOSYS where the platform has none (another
 * error of the kernel's: that -errno). */
#include <semaphore.h>
int cancel__sem_wait_exact(sem_t *sem, cancel_token_t *t, const struct timespec *abstime,
                           clockid_t clock);

/* A detached library thread with every signal blocked (thread.c). */
int cancel__start_service_thread(void *(*fn)(void *), void *arg, size_t stack_size);

/* fork handling (fork.c calls these around fork(), in the lock order):
 * prepare takes the module's lock, parent releases it, child resets the
 * module for a process with one thread. */
void cancel__fork_init(void);   /* registers them, once (lock.c's constructor) */
void cancel__signal_atfork_prepare(void);
void cancel__signal_atfork_parent(void);
void cancel__signal_atfork_child(void);
void cancel__run_atfork_prepare(void);
void cancel__run_atfork_parent(void);
void cancel__run_atfork_child(void);
void cancel__lock_atfork_prepare(void);
void cancel__lock_atfork_parent(void);
void cancel__lock_atfork_child(void);
void cancel__timer_atfork_prepare(void);
void cancel__timer_atfork_parent(void);
void cancel__timer_atfork_child(void);
void cancel__worker_atfork_prepare(void);
void cancel__worker_atfork_parent(void);
void cancel__worker_atfork_child(void);
void cancel__dump_atfork_prepare(void);    /* dump.c's scope registry (issue 16) */
void cancel__dump_atfork_parent(void);
void cancel__dump_atfork_child(void);

/* Time helpers (time.c). */
struct timespec cancel__now(void);
struct timespec cancel__add_ns(struct timespec t, int64_t ns);
int cancel__timespec_cmp(const struct timespec *a, const struct timespec *b);
bool cancel__timespec_valid(const struct timespec *t);
int64_t cancel__ns_until(const struct timespec *at);

#endif

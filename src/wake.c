/*
 * wake.c - the one "block until ready | cancelled | deadline" primitive
 * under every wrapped blocking call.
 *
 * Each thread owns one eventfd (its wake fd), created on the first wait
 * that must block and closed by a thread-specific-data destructor when the
 * thread exits.  A wait arms a callback on the token that writes the wake
 * fd (unless it is still armed there from the thread's previous wait: see
 * struct wake_state) and ppolls on the caller's descriptors plus the wake
 * fd.  The callback is removed, and the wake fd drained if it ran, when
 * the thread next waits under another token, or exits.
 *
 * Why no wakeup can be lost.  A cancel stores the token's reason under the
 * token's lock and only then, with the lock dropped, runs the callbacks it
 * finds on the token's list.  cancel_callback_add reads the reason and
 * links the callback in one critical section of that same lock.  So
 * exactly one of these holds:
 *
 *  1. add ran first: the callback is on the list when the cancel walks it,
 *     so the cancel runs it and the wake fd's counter becomes non-zero.  An
 *     eventfd with a non-zero counter polls readable, whenever ppoll is
 *     called: before, during or after the write.  There is no window
 *     between "checked" and "asleep" because the state that ppoll tests is
 *     the counter itself, not an edge.
 *  2. the cancel ran first: add sees the reason, runs the callback inline
 *     and returns 1; we return the cancellation error without waiting.
 *
 * The counter is zero whenever a wait starts with the callback armed and
 * not run: only our own callback writes the wake fd, and once it ran (FIRED
 * in struct wake_state, or the inline run of case 2) the next wait removes
 * it (cancel_callback_remove returns false, after waiting for a callback
 * still running) and reads the counter back to zero before arming it
 * again.  The callback touches only the thread's wake state, which lives
 * until the thread-exit destructor has removed it.  A signal that
 * interrupts ppoll (EINTR) is retried; the counter is not touched by it.
 *
 * Out of descriptors.  When the eventfd cannot be created (EMFILE, ENFILE,
 * ENOMEM) the wait degrades to ppoll slices of at most 10 ms with the
 * token's flag read between slices: cancellation is then noticed within
 * 10 ms instead of microseconds, and nothing ever hangs.  The next wait
 * tries to create the eventfd again.
 *
 * fork: the child's copy of the forking thread's wake fd is the parent's
 * eventfd object; a pthread_atfork child handler closes it so that the
 * child never drains a wake meant for the parent.
 */
#include "interpose.h"

#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/eventfd.h>

/* Longest ppoll slice when the thread has no wake fd (degraded mode). */
#define DEGRADED_SLICE_NS (10 * 1000000LL)

static pthread_once_t wake_once = PTHREAD_ONCE_INIT;
static pthread_key_t wake_key;
static bool wake_key_ok;

/*
 * The thread's wake state.  The callback that writes the wake fd lives
 * here, in thread-local storage, not on a waiter's stack, and it stays
 * armed between waits on the same token: a thread that blocks again and
 * again under one token (a connection's task) adds it once and removes it
 * only when it waits under another token, or at thread exit, so the
 * blocking path pays no callback add and remove per wait (issue 12).
 * While it is armed on a token that is not cancelled it cannot have run
 * (it runs only when that token is cancelled), so the next wait under that
 * token finds it armed as it left it.  Once it ran, FIRED says so: the next
 * wait disarms it before anything else, so a new token that happens to
 * reuse the freed address of the old one is never mistaken for it.  The
 * canceller writes FIRED and reads FD, so the state has a cache line to
 * itself and shares none that another thread writes.
 */
struct wake_state {
    _Alignas(64) _Atomic bool fired; /* the callback ran (written by the canceller) */
    _Atomic int fd;                  /* the wake fd, -1 until created */
    cancel_token_t *armed_on;        /* token the slot is armed on, or NULL */
    /* The wake fd was written and not yet read back.  Draining is deferred
     * to the next wait, off the path of a cancelled call's return. */
    bool dirty;
    /* fork closed the wake fd under a slot still armed: the next wait
     * arms it again, so that the token's lock publishes the new FD to a
     * canceller (nothing else orders our store of it before its load). */
    bool rearm;
    cancel_callback_t slot;
};
/* Initial-exec: the blocking path reads it several times per wait. */
static __thread struct wake_state ws __attribute__((tls_model("initial-exec"))) = { .fd = -1 };

/*
 * Disarms the slot unless it is armed, and has not run, on T (T NULL:
 * disarm whatever it is armed on).  A slot that ran wrote the wake fd
 * once: it is marked dirty.
 */
static void settle(cancel_token_t *t)
{
    if (!ws.armed_on)
        return;
    /* (W2) pairs with (W1) in wake_cb: a stale false is fine, the wake fd
     * (not FIRED) is what wakes the wait. */
    bool fired = atomic_load_explicit(&ws.fired, memory_order_acquire);
    if (!fired && ws.armed_on == t && !ws.rearm)
        return;
    ws.rearm = false;
    /* Returns false once fn ran (after waiting for a running fn), which
     * also orders the canceller's write before what we do next. */
    if (!cancel_callback_remove(&ws.slot) || fired)
        ws.dirty = true;
    ws.armed_on = NULL;
    /* Relaxed: fn is done (remove waited for it), so nobody else writes it. */
    atomic_store_explicit(&ws.fired, false, memory_order_relaxed);
}

/* Thread exit (the key's value is only a marker). */
static void wake_fd_destroy(void *value)
{
    (void)value;
    settle(NULL);
    /* Relaxed: disarmed, so no canceller reads FD any more. */
    int fd = atomic_load_explicit(&ws.fd, memory_order_relaxed);
    if (fd >= 0)
        close(fd);
    atomic_store_explicit(&ws.fd, -1, memory_order_relaxed);
}

/* The child's copy of the wake fd is the parent's eventfd object: close it.
 * A slot still armed in the child's copy of the token tree is armed again
 * by the next wait, once the child's own wake fd exists: a canceller in
 * another thread of the child reads FD under the token's lock that the
 * add takes, never the -1 stored here (the slot would not be re-added
 * otherwise, and a store of the new fd that sat in the store buffer while
 * the waiter read the reason could lose the wake-up). */
static void atfork_child(void)
{
    /* Relaxed: the child has one thread. */
    int fd = atomic_load_explicit(&ws.fd, memory_order_relaxed);
    if (fd >= 0) {
        close(fd);
        atomic_store_explicit(&ws.fd, -1, memory_order_relaxed);
        ws.dirty = false;
    }
    if (ws.armed_on)
        ws.rearm = true;
}

static void wake_init(void)
{
    wake_key_ok = pthread_key_create(&wake_key, wake_fd_destroy) == 0;
    pthread_atfork(NULL, NULL, atfork_child);
}

/* The calling thread's wake fd, created on first use; -1 when unavailable. */
static int thread_wake_fd(void)
{
    /* Relaxed: only this thread writes FD; a canceller reads it after the
     * token's lock, taken by the add that arms the slot, ordered it. */
    int fd = atomic_load_explicit(&ws.fd, memory_order_relaxed);
    if (fd >= 0)
        return fd;
    pthread_once(&wake_once, wake_init);
    if (!wake_key_ok)
        return -1; /* no destructor: a per-thread fd would leak at exit */
    int saved = errno;
    fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd >= 0 && pthread_setspecific(wake_key, (void *)1) != 0) {
        close(fd);
        fd = -1;
    }
    errno = saved;
    atomic_store_explicit(&ws.fd, fd, memory_order_relaxed);
    return fd;
}

/*
 * Runs in the cancelling thread: makes the waiter's wake fd readable.
 * eventfd_write and eventfd_read are glibc's own (they call its internal
 * __write / __read), so they never reach libcancel-interpose.so, even on a
 * cancelling thread that has a current token of its own (interpose.h).
 */
static void wake_cb(void *arg, int reason)
{
    (void)reason;
    struct wake_state *w = arg;
    int saved = errno;
    /* (W1) pairs with (W2) in settle and (W3) in cancel__wait_ready_mask:
     * FIRED is stored before the wake fd is written. */
    atomic_store_explicit(&w->fired, true, memory_order_release);
    /* Relaxed: stored before the slot was armed (see thread_wake_fd). */
    int fd = atomic_load_explicit(&w->fd, memory_order_relaxed);
    while (fd >= 0 && eventfd_write(fd, 1) < 0 && errno == EINTR)
        ;
    errno = saved;
}

static void drain(int fd)
{
    eventfd_t count;
    while (eventfd_read(fd, &count) < 0 && errno == EINTR)
        ;
}

int cancel__reason_errno(int reason)
{
    return reason == ETIMEDOUT ? ETIMEDOUT : ECANCELED;
}

void cancel__blocked_begin(const char *call, int fd)
{
    struct cancel_blocked *b = cancel__thread_blocked();
    struct timespec now = cancel__now();
    /* Relaxed: published by the release of CALL below. */
    atomic_store_explicit(&b->fd, fd, memory_order_relaxed);
    atomic_store_explicit(&b->since_ns, (int64_t)now.tv_sec * 1000000000 + now.tv_nsec,
                          memory_order_relaxed);
    /* (D1) pairs with (D2) in scope.c: a reader that sees CALL sees the fd
     * and time written above. */
    atomic_store_explicit(&b->call, call, memory_order_release);
}

void cancel__blocked_end(void)
{
    struct cancel_blocked *b = cancel__thread_blocked();
    /* Release, though a reader that sees NULL reads nothing after it. */
    atomic_store_explicit(&b->call, NULL, memory_order_release);
}

/* Relative ppoll timeout until DEADLINE, capped at CAP_NS (<= 0: no cap). */
static struct timespec *timeout_until(const struct timespec *deadline, int64_t cap_ns,
                                      struct timespec *out)
{
    int64_t ns = -1;
    if (deadline) {
        ns = cancel__ns_until(deadline);
        if (ns < 0)
            ns = 0;
    }
    if (cap_ns > 0 && (ns < 0 || ns > cap_ns))
        ns = cap_ns;
    if (ns < 0)
        return NULL;
    out->tv_sec = (time_t)(ns / 1000000000);
    out->tv_nsec = (long)(ns % 1000000000);
    return out;
}

int cancel__wait_ready(cancel_token_t *t, struct pollfd *fds, nfds_t n,
                       const struct timespec *deadline, const char *call)
{
    return cancel__wait_ready_mask(t, fds, n, deadline, NULL, call);
}

int cancel__wait_ready_mask(cancel_token_t *t, struct pollfd *fds, nfds_t n,
                            const struct timespec *deadline, const sigset_t *mask,
                            const char *call)
{
    if (t) {
        int reason = cancel_token_reason(t);
        if (reason)
            return -cancel__reason_errno(reason);
    }

    enum { LOCAL = 8 };
    struct pollfd local[LOCAL];
    struct pollfd *set = local;
    if (n + 1 > LOCAL) {
        set = malloc((n + 1) * sizeof *set);
        if (!set)
            return -ENOMEM;
    }
    for (nfds_t i = 0; i < n; i++) {
        set[i] = fds[i];
        set[i].revents = 0;
    }

    int efd = -1;
    if (t) {
        efd = thread_wake_fd();
        if (efd >= 0) {
            settle(t);
            if (ws.dirty) {
                drain(efd);
                ws.dirty = false;
            }
            if (!ws.armed_on) {
                if (cancel_callback_add(&ws.slot, t, wake_cb, &ws) == 1) {
                    /* Cancelled between our check and the add: case 2 above
                     * (fn ran inline and wrote the wake fd). */
                    ws.dirty = true;
                    /* Relaxed: fn ran inline, on this thread. */
                    atomic_store_explicit(&ws.fired, false, memory_order_relaxed);
                    if (set != local)
                        free(set);
                    return -cancel__reason_errno(cancel_token_reason(t));
                }
                ws.armed_on = t;
            }
            set[n].fd = efd;
            set[n].events = POLLIN;
            set[n].revents = 0;
        }
    }
    nfds_t total = n + (efd >= 0 ? 1 : 0);
    int64_t cap = (t && efd < 0) ? DEGRADED_SLICE_NS : 0;

    cancel__blocked_begin(call, n > 0 ? fds[0].fd : -1);
    int result;
    for (;;) {
        struct timespec rel;
        int r = ppoll(set, total, timeout_until(deadline, cap, &rel), mask);
        int err = errno;
        int reason = cancel_token_reason(t);
        if (reason) {
            /* Cancellation wins over readiness: nothing was consumed. */
            result = -cancel__reason_errno(reason);
            break;
        }
        if (r < 0) {
            /* A caller that passed a signal mask waits for signals too:
             * give it EINTR, as ppoll does. */
            if (err == EINTR && !mask)
                continue;
            result = -err;
            break;
        }
        int ready = 0;
        for (nfds_t i = 0; i < n; i++)
            if (set[i].revents)
                ready++;
        if (ready > 0) {
            result = ready;
            break;
        }
        if (deadline && cancel__ns_until(deadline) <= 0) {
            result = 0;
            break;
        }
        /* A slice ended (degraded mode), or the wake fd fired before the
         * reason became visible to this thread: look again.  A wake fd
         * readable while our callback has not run was written by someone
         * else (a forked child cancelling its copy of a token that carried
         * this thread's callback writes the shared eventfd): drain it, or
         * ppoll would return at once for ever.  (W3) pairs with (W1): our
         * callback stores FIRED before it writes the wake fd. */
        if (efd >= 0 && (set[n].revents & POLLIN) &&
            !atomic_load_explicit(&ws.fired, memory_order_acquire))
            drain(efd);
    }
    cancel__blocked_end();

    /* The slot stays armed (or, if it fired, is settled by the next wait):
     * see struct wake_state. */
    for (nfds_t i = 0; i < n; i++)
        fds[i].revents = set[i].revents;
    if (set != local)
        free(set);
    return result;
}

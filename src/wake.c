/*
 * wake.c - the one "block until ready | cancelled | deadline" primitive
 * under every wrapped blocking call.
 *
 * Each thread owns one eventfd (its wake fd), created on the first wait
 * that must block and closed by a thread-specific-data destructor when the
 * thread exits.  A wait arms a callback on the token that writes the wake
 * fd, ppolls on the caller's descriptors plus the wake fd, then removes the
 * callback and drains the wake fd if the callback ran.
 *
 * Why no wakeup can be lost.  A cancel stores the token's reason under
 * cancel__lock and only then, with the lock dropped, runs the callbacks it
 * collected from the token's list under that same lock.  cancel_callback_add
 * reads the reason and links the callback in one critical section of
 * cancel__lock.  So exactly one of these holds:
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
 * The counter starts every wait at zero: only our own callback writes the
 * wake fd, it is armed only while we wait, and we read the counter back to
 * zero whenever the callback ran: either we saw the wake fd readable (the
 * write is done; the callback's argument is the fd number, so it touches
 * no memory of ours, and the library never touches the callback storage
 * after handing it to fn, so our frame may go at once without
 * cancel_callback_remove), or cancel_callback_remove returned false after
 * waiting for the callback to finish.  A signal that
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
static __thread int wake_fd = -1;
/* The wake fd was written and not yet read back.  Draining is deferred to
 * the next wait that arms it, off the path of a cancelled call's return. */
static __thread bool wake_dirty;
/*
 * The callback that writes the wake fd lives in thread-local storage, not
 * on the waiter's stack: a waiter whose wake fd fired returns without
 * waiting for the canceller to come back from the callback, and removes it
 * at its next wait (or at thread exit) instead.  That later remove orders
 * the canceller's write before the wake fd is closed or re-armed.
 */
static __thread cancel_callback_t wake_slot;
static __thread bool wake_slot_fired;

static void settle_fired_callback(void)
{
    if (wake_slot_fired) {
        cancel_callback_remove(&wake_slot); /* returns at once: fn is long done */
        wake_slot_fired = false;
    }
}

/* Thread exit: the key's value is the wake fd plus one (never NULL when set). */
static void wake_fd_destroy(void *value)
{
    int fd = (int)(intptr_t)value - 1;
    settle_fired_callback();
    if (fd >= 0)
        close(fd);
}

static void atfork_child(void)
{
    if (wake_fd >= 0) {
        close(wake_fd);
        wake_fd = -1;
        wake_dirty = false;
        wake_slot_fired = false;
        if (wake_key_ok)
            pthread_setspecific(wake_key, NULL);
    }
}

static void wake_init(void)
{
    wake_key_ok = pthread_key_create(&wake_key, wake_fd_destroy) == 0;
    pthread_atfork(NULL, NULL, atfork_child);
}

/* The calling thread's wake fd, created on first use; -1 when unavailable. */
static int thread_wake_fd(void)
{
    if (wake_fd >= 0)
        return wake_fd;
    pthread_once(&wake_once, wake_init);
    if (!wake_key_ok)
        return -1; /* no destructor: a per-thread fd would leak at exit */
    int saved = errno;
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd >= 0 && pthread_setspecific(wake_key, (void *)(intptr_t)(fd + 1)) != 0) {
        close(fd);
        fd = -1;
    }
    errno = saved;
    wake_fd = fd;
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
    int fd = (int)(intptr_t)arg;
    int saved = errno;
    while (eventfd_write(fd, 1) < 0 && errno == EINTR)
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
    atomic_store_explicit(&b->fd, fd, memory_order_relaxed);
    atomic_store_explicit(&b->since_ns, (int64_t)now.tv_sec * 1000000000 + now.tv_nsec,
                          memory_order_relaxed);
    /* Release: a reader that sees CALL sees the fd and time written above. */
    atomic_store_explicit(&b->call, call, memory_order_release);
}

void cancel__blocked_end(void)
{
    struct cancel_blocked *b = cancel__thread_blocked();
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
    bool armed = false;
    if (t) {
        efd = thread_wake_fd();
        if (efd >= 0) {
            settle_fired_callback();
            if (wake_dirty) {
                drain(efd);
                wake_dirty = false;
            }
            if (cancel_callback_add(&wake_slot, t, wake_cb, (void *)(intptr_t)efd) == 1) {
                /* Cancelled between our check and the add: case 2 above. */
                wake_dirty = true;
                if (set != local)
                    free(set);
                return -cancel__reason_errno(cancel_token_reason(t));
            }
            armed = true;
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
         * reason became visible to this thread: look again. */
    }
    cancel__blocked_end();

    if (armed) {
        if (efd >= 0 && (set[n].revents & POLLIN)) {
            /* The callback's write is done, and it touches nothing of ours
             * after it (its argument is the fd number, and the library
             * never touches CB once it handed it to fn): no need to wait in
             * remove for the canceller to finish its bookkeeping, which
             * would cost a second sleep on the wake path; see wake_slot. */
            wake_dirty = true;
            wake_slot_fired = true;
        } else if (!cancel_callback_remove(&wake_slot)) {
            /* The callback ran (remove waited for it), so it wrote once. */
            wake_dirty = true;
        }
    }
    for (nfds_t i = 0; i < n; i++)
        fds[i].revents = set[i].revents;
    if (set != local)
        free(set);
    return result;
}

/*
 * signal.c - cancel tokens on signal delivery.
 *
 * cancel_token_cancel_on_signal installs a handler for the signal (saving
 * the previous disposition) and records a registration (token, signal) on
 * a list.  The handler only hands off: it writes the signal number to a
 * pipe (async-signal-safe: write, and lock-free atomics).  A library
 * thread, started on the first registration, reads the pipe and cancels
 * every token registered for that signal, with ECANCELED.
 *
 * Per signal, STATE goes IDLE (our handler not installed) -> ARMED
 * (installed) -> HANDLED (the thread took a delivery).  A delivery that
 * finds HANDLED is the second one: the handler restores the previous
 * disposition and raises the signal again, so it takes effect as soon as
 * the handler returns (a second Ctrl-C still stops a program whose tasks
 * ignore cancellation).
 *
 * A registration holds no reference on its token: a token stays
 * registered until it is freed, when cancel__signal_forget removes its
 * registrations under SIG_LOCK.  The thread takes a reference
 * (cancel__token_try_ref) under SIG_LOCK before dropping it to cancel, so
 * it never touches a freed token.  When the last registration of a signal
 * goes, the previous disposition is restored.
 *
 * Locks: SIG_LOCK is never held together with cancel__lock (tokens are
 * cancelled with it dropped, since a cancel may free a token and so call
 * cancel__signal_forget).
 */
#include "internal.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

enum { SIG_IDLE, SIG_ARMED, SIG_HANDLED };

struct reg {
    struct reg *next;
    cancel_token_t *token;      /* not referenced: see cancel__signal_forget */
    int signo;
    unsigned long round;        /* the last delivery that looked at it */
};

static pthread_mutex_t sig_lock = PTHREAD_MUTEX_INITIALIZER;

/* Guarded by SIG_LOCK. */
static struct reg *regs;
static bool started;
static int wake_rd = -1;
static unsigned long rounds;

/* Read by the handler.  OLD_ACTION[s] is written (under SIG_LOCK) only
 * while STATE[s] is IDLE, and the handler reads it only in HANDLED. */
static _Atomic int wake_wr = -1;
static _Atomic int state[NSIG];
static struct sigaction old_action[NSIG];

static void handler(int signo)
{
    int saved = errno;
    int handled = SIG_HANDLED;
    /* seq_cst: the one place a signal handler and threads race on STATE;
     * only one of the handler and cancel__signal_forget restores. */
    if (atomic_compare_exchange_strong(&state[signo], &handled, SIG_IDLE)) {
        sigaction(signo, &old_action[signo], NULL);
        /* Pending until this handler returns: then the old disposition
         * takes it. */
        raise(signo);
    } else {
        unsigned char b = (unsigned char)signo;
        /* Relaxed: only the number is used; stored before the handler was
         * installed, and the CAS above read our registration's STATE. */
        ssize_t w = write(atomic_load_explicit(&wake_wr, memory_order_relaxed), &b, 1);
        (void)w; /* a full pipe already holds a wake-up */
    }
    errno = saved;
}

static int ensure_started_locked(void);

/* The forking thread's signal mask before the fork; guarded by SIG_LOCK.
 * Signals stay blocked across the fork, so a delivery to the child is
 * taken only once the child has its own pipe (else it would land in the
 * parent's). */
static sigset_t fork_mask;

void cancel__signal_atfork_prepare(void)
{
    pthread_mutex_lock(&sig_lock);
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &fork_mask);
}

void cancel__signal_atfork_parent(void)
{
    pthread_sigmask(SIG_SETMASK, &fork_mask, NULL);
    pthread_mutex_unlock(&sig_lock);
}

/*
 * The child inherits our handlers and the registrations, but not the
 * signal thread, and its copy of the pipe is the parent's: a delivery
 * written there would cancel the parent's tokens.  So the child closes
 * its copy and, while registrations are in force, makes a pipe and a
 * thread of its own at once: a SIGTERM sent to the child right after
 * fork cancels the child's tokens.  Without registrations the next one
 * starts them.  If that fails (no memory, no threads), the handler finds
 * no pipe and does nothing until the next registration retries, and a
 * second delivery still restores and re-raises.
 */
void cancel__signal_atfork_child(void)
{
    /* Ours since prepare: held while the module is reset. */
    if (started) {
        close(wake_rd);
        close(atomic_exchange(&wake_wr, -1));
        wake_rd = -1;
        started = false;
    }
    if (regs) {
        int saved = errno;
        ensure_started_locked();
        errno = saved;
    }
    pthread_mutex_unlock(&sig_lock);
    pthread_sigmask(SIG_SETMASK, &fork_mask, NULL);
}

/* Cancels every token registered for SIGNO, one at a time, with SIG_LOCK
 * dropped around each cancel. */
static void deliver(int signo)
{
    pthread_mutex_lock(&sig_lock);
    int armed = SIG_ARMED;
    /* Marked before cancelling: once a token reads cancelled, the next
     * delivery is the second one. */
    atomic_compare_exchange_strong(&state[signo], &armed, SIG_HANDLED);
    unsigned long round = ++rounds;
    for (;;) {
        cancel_token_t *t = NULL;
        for (struct reg *g = regs; g && !t; g = g->next) {
            if (g->signo != signo || g->round == round)
                continue;
            g->round = round;
            if (!cancel_token_is_cancelled(g->token) && cancel__token_try_ref(g->token))
                t = g->token;
        }
        if (!t)
            break;
        pthread_mutex_unlock(&sig_lock);
        cancel_token_cancel(t, ECANCELED);
        cancel_token_unref(t);
        pthread_mutex_lock(&sig_lock);
    }
    pthread_mutex_unlock(&sig_lock);
}

static void *sig_main(void *arg)
{
    int fd = (int)(intptr_t)arg;
    for (;;) {
        unsigned char buf[64];
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return NULL;
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] > 0 && buf[i] < NSIG)
                deliver(buf[i]);
    }
}

/* Makes the pipe and starts the thread unless they exist; under SIG_LOCK. */
static int ensure_started_locked(void)
{
    CANCEL_ASSERT_MUTEX_HELD(&sig_lock);
    if (started)
        return 0;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return errno;
    /* The handler must never block on a full pipe. */
    fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK);
    int rc = cancel__start_service_thread(sig_main, (void *)(intptr_t)fds[0], 0);
    if (rc != 0) {
        close(fds[0]);
        close(fds[1]);
        return rc;
    }
    wake_rd = fds[0];
    atomic_store(&wake_wr, fds[1]);
    started = true;
    return 0;
}

int cancel_token_cancel_on_signal(cancel_token_t *t, int signo)
{
    if (!t || signo <= 0 || signo >= NSIG || signo == SIGKILL || signo == SIGSTOP)
        return EINVAL;
    struct reg *g = malloc(sizeof *g);
    if (!g)
        return ENOMEM;
    struct token_ext *ext = cancel__token_ext(t);
    /* Relaxed: the caller holds a reference, so the store happens before
     * the token's free (its count's (C1)/(C2)), where it is read. */
    if (ext)
        atomic_store_explicit(&ext->signal.registered, true, memory_order_relaxed);
    if (!ext) {
        free(g);
        return ENOMEM;
    }
    pthread_mutex_lock(&sig_lock);
    int rc = ensure_started_locked();
    for (struct reg *r = regs; r && rc == 0; r = r->next)
        if (r->token == t && r->signo == signo) {
            pthread_mutex_unlock(&sig_lock);
            free(g);
            return 0; /* already registered */
        }
    if (rc == 0 && atomic_load(&state[signo]) == SIG_IDLE) {
        struct sigaction sa, prev;
        sa.sa_handler = handler;
        sa.sa_flags = SA_RESTART;
        sigemptyset(&sa.sa_mask);
        if (sigaction(signo, &sa, &prev) != 0) {
            rc = errno; /* e.g. a number the C library reserves */
        } else {
            old_action[signo] = prev;
            atomic_store(&state[signo], SIG_ARMED);
        }
    }
    if (rc != 0) {
        pthread_mutex_unlock(&sig_lock);
        free(g);
        return rc;
    }
    g->token = t;
    g->signo = signo;
    g->round = 0;
    g->next = regs;
    regs = g;
    /* The signal already came: like a child of a cancelled parent, T is
     * cancelled at once (the next delivery is the escape hatch). */
    bool already = atomic_load(&state[signo]) == SIG_HANDLED;
    pthread_mutex_unlock(&sig_lock);
    if (already)
        cancel_token_cancel(t, ECANCELED);
    return 0;
}

void cancel__signal_forget(cancel_token_t *t, struct token_signal *sig)
{
    /* Relaxed: see cancel_token_cancel_on_signal. */
    if (!atomic_load_explicit(&sig->registered, memory_order_relaxed))
        return;
    pthread_mutex_lock(&sig_lock);
    struct reg **link = &regs;
    while (*link) {
        struct reg *g = *link;
        if (g->token != t) {
            link = &g->next;
            continue;
        }
        *link = g->next;
        int signo = g->signo;
        free(g);
        bool last = true;
        for (struct reg *r = regs; r && last; r = r->next)
            last = r->signo != signo;
        /* No token wants this signal any more: give it back. */
        if (last && atomic_exchange(&state[signo], SIG_IDLE) != SIG_IDLE)
            sigaction(signo, &old_action[signo], NULL);
    }
    pthread_mutex_unlock(&sig_lock);
}

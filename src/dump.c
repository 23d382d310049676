/*
 * dump.c - the whole process at a glance: every open scope as a tree
 * (cancel_dump_all), on demand or on a signal (cancel_dump_on_signal), and
 * one scope's text (cancel_scope_dump).
 *
 * A registry lists every open scope (scope.c adds at open, removes before
 * freeing).  A dump takes a snapshot first: under REG_LOCK, each scope's
 * MU in turn (cancel__scope_visit), copying what it shows; then it drops
 * every lock, formats the snapshot into memory and writes it.  A slow or
 * full descriptor therefore never holds up scope open and join.  The
 * snapshot is a tree because each task carries a NEST key and each scope
 * the OWNER key of the task that opened it (scope.c decides what the keys
 * are); a scope whose owner is not a live task in the snapshot is a root.
 *
 * Lock order (internal.h, "locks"): REG_LOCK, then a scope's MU, then
 * token locks.  REG_LOCK is a process-wide mutex on scope
 * open and join only: off SPEC's "Scale" paths (callbacks, children,
 * cancel and wake-ups never take it), one uncontended lock per scope.
 *
 * The signal path: the handler only writes the signal number to a pipe
 * (async-signal-safe); a library thread reads it and dumps, as text, to
 * the descriptor registered for that signal.
 */
#include "internal.h"

#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------ registry */

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cancel__scope_reg reg_head = { &reg_head, &reg_head, NULL };

void cancel__scope_register(struct cancel__scope_reg *reg, cancel_scope_t *s)
{
    reg->scope = s;
    pthread_mutex_lock(&reg_lock);
    reg->next = &reg_head;
    reg->prev = reg_head.prev;
    reg_head.prev->next = reg;
    reg_head.prev = reg;
    pthread_mutex_unlock(&reg_lock);
}

void cancel__scope_unregister(struct cancel__scope_reg *reg)
{
    pthread_mutex_lock(&reg_lock);
    reg->prev->next = reg->next;
    reg->next->prev = reg->prev;
    pthread_mutex_unlock(&reg_lock);
}

/* fork (fork.c, in the lock order): the forking thread holds the registry
 * across the fork.  The child has none of the parent's other threads, and
 * their scopes belong to the parent (cancel(7), FORK): the child's
 * registry starts empty, and each inherited scope is detached, so that a
 * join of one in the child (which the man page forbids) still cannot
 * corrupt the list. */
void cancel__dump_atfork_prepare(void)
{
    pthread_mutex_lock(&reg_lock);
}

void cancel__dump_atfork_parent(void)
{
    pthread_mutex_unlock(&reg_lock);
}

void cancel__dump_atfork_child(void)
{
    struct cancel__scope_reg *r = reg_head.next;
    while (r != &reg_head) {
        struct cancel__scope_reg *next = r->next;
        r->prev = r->next = r;
        r = next;
    }
    reg_head.prev = reg_head.next = &reg_head;
    pthread_mutex_unlock(&reg_lock);
}

/* ------------------------------------------------------------ snapshot */

struct origin {
    int reason;                 /* 0: live */
    bool known;                 /* cancelled_from answered */
    pthread_t thread;
    const char *file;           /* static (__FILE__), or NULL */
    int line;
};

struct task_snap {
    struct cancel__task_view v;
    char name[32];
    struct origin o;
};

struct scope_snap {
    struct cancel__scope_view v;
    struct origin o;
    struct task_snap *tasks;
    size_t ntasks, cap;
    bool shown;                 /* formatted once (guards against a key reused) */
};

struct snapshot {
    struct scope_snap *scopes;
    size_t n, cap;
    bool oom;
    int64_t now;
};

static void origin_of(cancel_token_t *t, struct origin *o)
{
    memset(o, 0, sizeof *o);
    o->reason = cancel_token_reason(t);
    if (o->reason)
        o->known = cancel_token_cancelled_from(t, &o->thread, &o->file, &o->line) == 0;
}

static bool grow(void **v, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return true;
    size_t c = *cap ? 2 * *cap : 8;
    void *p = realloc(*v, c * size);
    if (!p)
        return false;
    *v = p;
    *cap = c;
    return true;
}

/* cancel__scope_visit's callback: copies what it is shown (MU held). */
static void snap_visit(void *ctx, const struct cancel__scope_view *sv,
                       const struct cancel__task_view *tv)
{
    struct snapshot *snap = ctx;
    if (snap->oom)
        return;
    if (!tv) {
        if (!grow((void **)&snap->scopes, &snap->cap, snap->n, sizeof *snap->scopes)) {
            snap->oom = true;
            return;
        }
        struct scope_snap *ss = &snap->scopes[snap->n++];
        memset(ss, 0, sizeof *ss);
        ss->v = *sv;
        origin_of(sv->token, &ss->o);
        return;
    }
    struct scope_snap *ss = &snap->scopes[snap->n - 1];
    if (!grow((void **)&ss->tasks, &ss->cap, ss->ntasks, sizeof *ss->tasks)) {
        snap->oom = true;
        return;
    }
    struct task_snap *ts = &ss->tasks[ss->ntasks++];
    ts->v = *tv;
    snprintf(ts->name, sizeof ts->name, "%s", tv->name ? tv->name : "");
    /* Not a pointer into TASKS: a later grow may move the array (the
     * formatters point v.name at ts->name once the snapshot is complete). */
    ts->v.name = NULL;
    origin_of(tv->token, &ts->o);
}

/* Once the arrays stop moving: each task's name points at its own copy. */
static void snapshot_fix_names(struct snapshot *snap)
{
    for (size_t i = 0; i < snap->n; i++)
        for (size_t k = 0; k < snap->scopes[i].ntasks; k++)
            snap->scopes[i].tasks[k].v.name = snap->scopes[i].tasks[k].name;
}

static void snapshot_free(struct snapshot *snap)
{
    for (size_t i = 0; i < snap->n; i++)
        free(snap->scopes[i].tasks);
    free(snap->scopes);
}

static int64_t now_ns(void)
{
    struct timespec ts = cancel__now();
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ------------------------------------------------------------ output */

struct buf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void out(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out(struct buf *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        /* No arithmetic on a NULL buffer: the first call only measures. */
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t c = b->cap ? 2 * b->cap : 4096;
        while (c - b->len <= (size_t)n)
            c *= 2;
        char *p = realloc(b->p, c);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = c;
    }
}

static void indent(struct buf *b, int depth)
{
    out(b, "%*s", 4 * depth, "");
}

static double secs(int64_t ns)
{
    return (double)ns / 1e9;
}

static void text_origin(struct buf *b, const struct origin *o)
{
    out(b, " (reason %d", o->reason);
    if (o->known) {
        if (o->file)
            out(b, ", from %s:%d", o->file, o->line);
        out(b, ", by thread %#lx", (unsigned long)o->thread);
    }
    out(b, ")");
}

static void text_scope_line(struct buf *b, const struct scope_snap *ss, int depth)
{
    const struct cancel__scope_view *v = &ss->v;
    indent(b, depth);
    out(b, "scope %p (%s): %u live task%s, limit %u%s%s%s, token %s", v->id, v->mode,
        v->live, v->live == 1 ? "" : "s", v->limit, v->joining ? ", joining" : "",
        v->terminated ? ", terminated" : "", v->draining ? ", draining" : "",
        ss->o.reason ? "cancelled" : "live");
    if (ss->o.reason)
        text_origin(b, &ss->o);
    if (v->failure)
        out(b, ", first failure %d", v->failure);
    out(b, "\n");
}

static void text_task_line(struct buf *b, const struct task_snap *ts, int depth)
{
    const struct cancel__task_view *v = &ts->v;
    indent(b, depth);
    out(b, "  task %p", v->id);
    if (v->name[0])
        out(b, " \"%s\"", v->name);
    out(b, ": %s", v->state);
    if (v->running) {
        out(b, " %.3f s on thread %#lx", secs(v->running_ns), (unsigned long)v->thread);
        if (v->waiting_slot)
            out(b, ", waiting in spawn for a slot of this full scope");
        if (v->call) {
            out(b, ", blocked in %s", v->call);
            if (v->fd >= 0)
                out(b, "(fd %d)", v->fd);
            out(b, " for %.3f s", secs(v->blocked_ns));
        }
    }
    out(b, ", token %s", ts->o.reason ? "cancelled" : "live");
    if (ts->o.reason)
        text_origin(b, &ts->o);
    out(b, "\n");
}

static void json_str(struct buf *b, const char *s)
{
    out(b, "\"");
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\')
            out(b, "\\%c", *c);
        else if (*c < 0x20)
            out(b, "\\u%04x", *c);
        else
            out(b, "%c", *c);
    }
    out(b, "\"");
}

static void json_origin(struct buf *b, const struct origin *o)
{
    out(b, "\"cancelled\":%s,\"reason\":%d,\"cancelled_from\":", o->reason ? "true" : "false",
        o->reason);
    if (!o->known) {
        out(b, "null");
        return;
    }
    out(b, "{\"thread\":\"%#lx\",\"file\":", (unsigned long)o->thread);
    if (o->file)
        json_str(b, o->file);
    else
        out(b, "null");
    out(b, ",\"line\":%d}", o->line);
}

static void json_task_open(struct buf *b, const struct task_snap *ts)
{
    const struct cancel__task_view *v = &ts->v;
    out(b, "{\"id\":\"%p\",\"name\":", v->id);
    json_str(b, v->name);
    out(b, ",\"state\":\"%s\",\"running_s\":%.6f,\"thread\":", v->state,
        v->running ? secs(v->running_ns) : 0.0);
    if (v->running)
        out(b, "\"%#lx\"", (unsigned long)v->thread);
    else
        out(b, "null");
    out(b, ",\"waiting_for_slot\":%s,\"blocked\":", v->waiting_slot ? "true" : "false");
    if (v->call) {
        out(b, "{\"call\":");
        json_str(b, v->call);
        out(b, ",\"fd\":%d,\"for_s\":%.6f}", v->fd, secs(v->blocked_ns));
    } else {
        out(b, "null");
    }
    out(b, ",");
    json_origin(b, &ts->o);
}

static void json_scope_open(struct buf *b, const struct scope_snap *ss)
{
    const struct cancel__scope_view *v = &ss->v;
    out(b, "{\"id\":\"%p\",\"mode\":\"%s\",\"live\":%u,\"limit\":%u,\"joining\":%s,"
        "\"terminated\":%s,\"draining\":%s,\"failure\":%d,", v->id, v->mode, v->live,
        v->limit, v->joining ? "true" : "false", v->terminated ? "true" : "false",
        v->draining ? "true" : "false", v->failure);
    json_origin(b, &ss->o);
}

/* Formats scope SS (and what is nested in it) at DEPTH.  Recursion follows
 * the nesting of scopes in tasks, one level per thread that opened a scope
 * inside a task, so it is as deep as the program's own task nesting. */
static void format_scope(struct buf *b, struct snapshot *snap, struct scope_snap *ss,
                         int depth, bool json)
{
    ss->shown = true;
    if (json) {
        json_scope_open(b, ss);
        out(b, ",\"tasks\":[");
    } else {
        text_scope_line(b, ss, depth);
    }
    for (size_t i = 0; i < ss->ntasks; i++) {
        struct task_snap *ts = &ss->tasks[i];
        if (json) {
            out(b, "%s", i ? "," : "");
            json_task_open(b, ts);
            out(b, ",\"scopes\":[");
        } else {
            text_task_line(b, ts, depth);
        }
        bool first = true;
        for (size_t j = 0; j < snap->n; j++) {
            struct scope_snap *in = &snap->scopes[j];
            if (in->shown || !ts->v.nest || in->v.owner != ts->v.nest)
                continue;
            if (json)
                out(b, "%s", first ? "" : ",");
            first = false;
            format_scope(b, snap, in, depth + 1, json);
        }
        if (json)
            out(b, "]}");
    }
    if (json)
        out(b, "]}");
}

/* Is SS nested in a live task of the snapshot? */
static bool nested(const struct snapshot *snap, const struct scope_snap *ss)
{
    if (!ss->v.owner)
        return false;
    for (size_t i = 0; i < snap->n; i++)
        for (size_t k = 0; k < snap->scopes[i].ntasks; k++)
            if (&snap->scopes[i] != ss && snap->scopes[i].tasks[k].v.nest == ss->v.owner)
                return true;
    return false;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int emit(int fd, struct buf *b)
{
    int rc = b->oom ? ENOMEM : write_all(fd, b->p, b->len);
    free(b->p);
    return rc;
}

int cancel__dump_scope(cancel_scope_t *s, int fd)
{
    /* A descriptor we cannot write to says so before any work. */
    if (fcntl(fd, F_GETFD) < 0)
        return EBADF;
    struct snapshot snap = { .now = now_ns() };
    cancel__scope_visit(s, snap.now, snap_visit, &snap);
    struct buf b = { 0 };
    if (snap.oom) {
        snapshot_free(&snap);
        return ENOMEM;
    }
    snapshot_fix_names(&snap);
    text_scope_line(&b, &snap.scopes[0], 0);
    for (size_t i = 0; i < snap.scopes[0].ntasks; i++)
        text_task_line(&b, &snap.scopes[0].tasks[i], 0);
    snapshot_free(&snap);
    return emit(fd, &b);
}

int cancel_dump_all(int fd, int flags)
{
    if (fd < 0 || (flags & ~CANCEL_DUMP_JSON) != 0)
        return EINVAL;
    if (fcntl(fd, F_GETFD) < 0)
        return EBADF;
    bool json = (flags & CANCEL_DUMP_JSON) != 0;
    struct snapshot snap = { .now = now_ns() };
    pthread_mutex_lock(&reg_lock);
    for (struct cancel__scope_reg *r = reg_head.next; r != &reg_head; r = r->next)
        cancel__scope_visit(r->scope, snap.now, snap_visit, &snap);
    pthread_mutex_unlock(&reg_lock);
    if (snap.oom) {
        snapshot_free(&snap);
        return ENOMEM;
    }
    snapshot_fix_names(&snap);

    struct buf b = { 0 };
    if (json)
        out(&b, "{\"pid\":%ld,\"monotonic_s\":%.6f,\"scope_count\":%zu,\"scopes\":[",
            (long)getpid(), secs(snap.now), snap.n);
    else
        out(&b, "libcancel dump: pid %ld, %zu open scope%s, at %.6f s (CLOCK_MONOTONIC)\n",
            (long)getpid(), snap.n, snap.n == 1 ? "" : "s", secs(snap.now));
    bool first = true;
    /* Roots first (scopes no live task opened), then anything a reused key
     * left out, so every scope appears exactly once. */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < snap.n; i++) {
            struct scope_snap *ss = &snap.scopes[i];
            if (ss->shown || (pass == 0 && nested(&snap, ss)))
                continue;
            if (json)
                out(&b, "%s", first ? "" : ",");
            first = false;
            format_scope(&b, &snap, ss, 0, json);
        }
    out(&b, json ? "]}\n" : "");
    snapshot_free(&snap);
    return emit(fd, &b);
}

/* ------------------------------------------------------------ on a signal */

/* Per signal, the descriptor to dump to (-1: none); read by the thread. */
static _Atomic int sig_fd[NSIG];
static pthread_mutex_t sig_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t sig_once = PTHREAD_ONCE_INIT;
static bool installed[NSIG];    /* guarded by SIG_LOCK */
static bool started;            /* guarded by SIG_LOCK */
static int wake_rd = -1;        /* guarded by SIG_LOCK */
static _Atomic int wake_wr = -1; /* read by the handler */

static void handler(int signo)
{
    int saved = errno;
    unsigned char b = (unsigned char)signo;
    /* Relaxed: only the number is used, stored before the handler was
     * installed; a stale -1 loses one dump request at most. */
    ssize_t w = write(atomic_load_explicit(&wake_wr, memory_order_relaxed), &b, 1);
    (void)w; /* a full pipe already holds a wake-up */
    errno = saved;
}

static void *dump_main(void *arg)
{
    int fd = (int)(intptr_t)arg;
    for (;;) {
        unsigned char buf[64];
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return NULL;
        for (ssize_t i = 0; i < n; i++) {
            int out_fd = buf[i] < NSIG ? atomic_load(&sig_fd[buf[i]]) : -1;
            if (out_fd >= 0)
                cancel_dump_all(out_fd, 0);
        }
    }
}

static void atfork_prepare(void)
{
    pthread_mutex_lock(&sig_lock);
}

static void atfork_parent(void)
{
    pthread_mutex_unlock(&sig_lock);
}

/* The child has no dump thread: deliveries do nothing there until it
 * calls cancel_dump_on_signal again, which starts one. */
static void atfork_child(void)
{
    int wr = atomic_exchange(&wake_wr, -1);
    if (wr >= 0) {
        close(wr);
        close(wake_rd);
        wake_rd = -1;
    }
    started = false;
    pthread_mutex_unlock(&sig_lock);
}

static void sig_init(void)
{
    for (int i = 0; i < NSIG; i++)
        atomic_init(&sig_fd[i], -1);
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

int cancel_dump_on_signal(int signo, int fd)
{
    if (signo <= 0 || signo >= NSIG || signo == SIGKILL || signo == SIGSTOP || fd < 0)
        return EINVAL;
    pthread_once(&sig_once, sig_init);
    pthread_mutex_lock(&sig_lock);
    int rc = 0;
    if (!started) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) != 0) {
            rc = errno;
        } else {
            /* The handler must never block on a full pipe. */
            fcntl(p[1], F_SETFL, fcntl(p[1], F_GETFL) | O_NONBLOCK);
            rc = cancel__start_service_thread(dump_main, (void *)(intptr_t)p[0], 0);
            if (rc) {
                close(p[0]);
                close(p[1]);
            } else {
                wake_rd = p[0];
                atomic_store(&wake_wr, p[1]);
                started = true;
            }
        }
    }
    if (rc == 0) {
        atomic_store(&sig_fd[signo], fd);
        if (!installed[signo]) {
            struct sigaction sa;
            memset(&sa, 0, sizeof sa);
            sa.sa_handler = handler;
            sa.sa_flags = SA_RESTART;
            sigemptyset(&sa.sa_mask);
            if (sigaction(signo, &sa, NULL) != 0) {
                rc = errno; /* e.g. a number the C library reserves */
                atomic_store(&sig_fd[signo], -1);
            } else {
                installed[signo] = true;
            }
        }
    }
    pthread_mutex_unlock(&sig_lock);
    return rc;
}

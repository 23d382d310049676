/*
 * check_glib.c - libcancel-glib (SPEC.md, "GLib, and the whole process at
 * a glance"): GIO calls in tasks cancelled with the task, GCancellables
 * cancelling libcancel's wrapped calls, and every release order.
 *
 * Blocking GIO calls wait on an empty socket or pipe (or a listener whose
 * accept queue is full); the task posts a latch before it blocks and the
 * test waits until its thread sleeps in the kernel, then cancels.  Tasks
 * and threads record, the test thread asserts after joining them.
 */
#define _GNU_SOURCE 1
#include "cancel-glib.h"
#include "testutil.h"

#include <gio/gunixinputstream.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * ThreadSanitizer (CI runs this program under it).  GLib is not built with
 * it and synchronises with its own futex-based GMutex, which TSan cannot
 * see: a GCancellable's wake-up eventfd is created under that mutex in the
 * task thread (g_cancellable_make_pollfd) and written under it by the
 * cancelling thread (g_cancellable_cancel), which TSan reports as a race on
 * the descriptor between two uninstrumented calls.  So TSan ignores the
 * interceptors (write, eventfd, ...) that GLib itself calls; every access
 * of ours, libcancel's and libcancel-glib's stays checked.
 */
#if defined(__SANITIZE_THREAD__)
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void)
{
    return "called_from_lib:libglib-2.0.so.0\n";
}
#endif

/* ------------------------------------------------------------ helpers */

/* What a task saw of its GIO call. */
struct gio_job {
    tu_latch_t ready;           /* posted just before the call */
    pid_t tid;
    GSocket *sock;              /* receive */
    GInputStream *in;           /* read */
    GSocketAddress *addr;       /* connect */
    bool had_cancellable;
    gssize n;                   /* receive / read: what the call returned */
    bool connected;             /* connect: it returned a connection */
    bool cancelled;             /* the GError was G_IO_ERROR_CANCELLED */
    int64_t returned_ns;
    GCancellable *weak_current; /* nulled when the cached GCancellable goes */
};

static void job_init(struct gio_job *j)
{
    memset(j, 0, sizeof *j);
    tu_latch_init(&j->ready);
}

static void job_error(struct gio_job *j, GError *err)
{
    if (err) {
        j->cancelled = g_error_matches(err, G_IO_ERROR, G_IO_ERROR_CANCELLED);
        g_error_free(err);
    }
    j->returned_ns = tu_now_ns();
}

static GCancellable *job_cancellable(struct gio_job *j)
{
    GCancellable *gc = cancel_gcancellable_current();
    j->had_cancellable = gc != NULL;
    if (gc) {
        j->weak_current = gc;
        g_object_add_weak_pointer(G_OBJECT(gc), (gpointer *)&j->weak_current);
    }
    j->tid = tu_gettid();
    tu_latch_post(&j->ready);
    return gc;
}

static int task_socket_receive(void *arg)
{
    struct gio_job *j = arg;
    GCancellable *gc = job_cancellable(j);
    GError *err = NULL;
    char b;
    j->n = g_socket_receive(j->sock, &b, 1, gc, &err);
    job_error(j, err);
    return 0;
}

static int task_stream_read(void *arg)
{
    struct gio_job *j = arg;
    GCancellable *gc = job_cancellable(j);
    GError *err = NULL;
    char b;
    j->n = g_input_stream_read(j->in, &b, 1, gc, &err);
    job_error(j, err);
    return 0;
}

static int task_client_connect(void *arg)
{
    struct gio_job *j = arg;
    GCancellable *gc = job_cancellable(j);
    GError *err = NULL;
    GSocketClient *client = g_socket_client_new();
    GSocketConnection *conn =
        g_socket_client_connect(client, G_SOCKET_CONNECTABLE(j->addr), gc, &err);
    j->connected = conn != NULL;
    if (conn)
        g_object_unref(conn);
    g_object_unref(client);
    job_error(j, err);
    return 0;
}

/* Runs FN in a task of a new scope, waits until it blocks, cancels the
 * scope and joins; returns the cancel-to-return time. */
static int64_t run_and_cancel(cancel_task_fn fn, struct gio_job *j)
{
    cancel_scope_t *s = cancel_scope_open(0);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(cancel_scope_spawn(s, fn, j, NULL), 0);
    tu_latch_wait(&j->ready);
    tu_wait_until_sleeping(j->tid);
    int64_t t0 = tu_now_ns();
    cancel_scope_cancel(s);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    return j->returned_ns - t0;
}

static GSocket *socket_of(int fd)
{
    GError *err = NULL;
    GSocket *sock = g_socket_new_from_fd(fd, &err);
    ck_assert_msg(sock != NULL, "g_socket_new_from_fd: %s", err ? err->message : "?");
    return sock;
}

/* ------------------------------------------- GIO calls in a libcancel task */

START_TEST(g_socket_receive_in_a_task_is_cancelled_by_cancel_scope_cancel)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct gio_job j;
    job_init(&j);
    j.sock = socket_of(sv[0]);
    int64_t took = run_and_cancel(task_socket_receive, &j);
    ck_assert(j.had_cancellable);
    ck_assert_int_eq(j.n, -1);
    ck_assert_msg(j.cancelled, "g_socket_receive did not fail with G_IO_ERROR_CANCELLED");
    ck_assert_int_lt(took, TU_WAKE_GUARD_NS);
    /* Nothing was consumed: a byte sent now is the first one read. */
    ck_assert_int_eq(write(sv[1], "x", 1), 1);
    char b = 0;
    ck_assert_int_eq(read(sv[0], &b, 1), 1);
    ck_assert_int_eq(b, 'x');
    /* The task's GCancellable went with its token at join. */
    ck_assert_ptr_null(j.weak_current);
    g_object_unref(j.sock);
    close(sv[1]);
}
END_TEST

START_TEST(g_input_stream_read_in_a_task_is_cancelled_by_cancel_scope_cancel)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    struct gio_job j;
    job_init(&j);
    j.in = g_unix_input_stream_new(p[0], TRUE);
    int64_t took = run_and_cancel(task_stream_read, &j);
    ck_assert(j.had_cancellable);
    ck_assert_int_eq(j.n, -1);
    ck_assert_msg(j.cancelled, "g_input_stream_read did not fail with G_IO_ERROR_CANCELLED");
    ck_assert_int_lt(took, TU_WAKE_GUARD_NS);
    ck_assert_ptr_null(j.weak_current);
    g_object_unref(j.in);
    close(p[1]);
}
END_TEST

START_TEST(g_socket_client_connect_in_a_task_is_cancelled_by_cancel_scope_cancel)
{
    /* A loopback listener with a backlog of 0 whose one queued connection
     * is never accepted: Linux drops further SYNs, so a connect to it
     * stays in progress until something cancels it. */
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(l, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(l, 0), 0);
    socklen_t len = sizeof sa;
    ck_assert_int_eq(getsockname(l, (struct sockaddr *)&sa, &len), 0);
    int filler = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_eq(connect(filler, (struct sockaddr *)&sa, sizeof sa), 0);

    struct gio_job j;
    job_init(&j);
    j.addr = g_socket_address_new_from_native(&sa, sizeof sa);
    int64_t took = run_and_cancel(task_client_connect, &j);
    ck_assert(j.had_cancellable);
    ck_assert_msg(!j.connected, "the connect completed: the accept queue was not full");
    ck_assert_msg(j.cancelled, "g_socket_client_connect did not fail with G_IO_ERROR_CANCELLED");
    ck_assert_int_lt(took, TU_WAKE_GUARD_NS);
    ck_assert_ptr_null(j.weak_current);
    g_object_unref(j.addr);
    close(filler);
    close(l);
}
END_TEST

/* --------------------------------------- a GCancellable cancels libcancel */

struct reader {
    cancel_token_t *token;
    int fd;
    tu_latch_t ready;
    pid_t tid;
    ssize_t n;
    int err;
    int64_t returned_ns;
};

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    cancel_token_t *prev = cancel_enter(r->token);
    r->tid = tu_gettid();
    tu_latch_post(&r->ready);
    char b;
    r->n = cancel_read(r->fd, &b, 1);
    r->err = errno;
    r->returned_ns = tu_now_ns();
    cancel_leave(prev);
    return NULL;
}

START_TEST(g_cancellable_cancel_wakes_a_cancel_read_under_its_token)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    GCancellable *gc = g_cancellable_new();
    struct reader r = { .fd = p[0] };
    tu_latch_init(&r.ready);
    r.token = cancel_token_from_gcancellable(gc);
    ck_assert_ptr_nonnull(r.token);
    ck_assert(!cancel_token_is_cancelled(r.token));
    pthread_t th;
    tu_thread_start(&th, reader_main, &r);
    tu_latch_wait(&r.ready);
    tu_wait_until_sleeping(r.tid);
    int64_t t0 = tu_now_ns();
    g_cancellable_cancel(gc);
    /* The handler ran inside g_cancellable_cancel. */
    ck_assert(cancel_token_is_cancelled(r.token));
    ck_assert_int_eq(cancel_token_reason(r.token), ECANCELED);
    tu_thread_join(th);
    ck_assert_int_eq(r.n, -1);
    ck_assert_int_eq(r.err, ECANCELED);
    ck_assert_int_lt(r.returned_ns - t0, TU_WAKE_GUARD_NS);
    cancel_token_unref(r.token);
    g_object_unref(gc);
    close(p[0]);
    close(p[1]);
}
END_TEST

START_TEST(a_token_from_a_cancelled_gcancellable_is_born_cancelled_and_reset_starts_afresh)
{
    GCancellable *gc = g_cancellable_new();
    g_cancellable_cancel(gc);
    cancel_token_t *t1 = cancel_token_from_gcancellable(gc);
    ck_assert(cancel_token_is_cancelled(t1));
    g_cancellable_reset(gc);
    cancel_token_t *t2 = cancel_token_from_gcancellable(gc);
    ck_assert(!cancel_token_is_cancelled(t2));
    g_cancellable_cancel(gc);
    ck_assert(cancel_token_is_cancelled(t2));
    cancel_token_unref(t1);
    cancel_token_unref(t2);
    g_object_unref(gc);
}
END_TEST

START_TEST(a_null_gcancellable_gives_a_live_root_and_a_non_cancellable_is_einval)
{
    cancel_token_t *t = cancel_token_from_gcancellable(NULL);
    ck_assert_ptr_nonnull(t);
    ck_assert(!cancel_token_is_cancelled(t));
    cancel_token_unref(t);
    GObject *o = g_object_new(G_TYPE_OBJECT, NULL);
    errno = 0;
    ck_assert_ptr_null(cancel_token_from_gcancellable((GCancellable *)o));
    ck_assert_int_eq(errno, EINVAL);
    g_object_unref(o);
}
END_TEST

START_TEST(many_tokens_from_one_gcancellable_share_one_handler)
{
    GCancellable *gc = g_cancellable_new();
    for (int i = 0; i < 1000; i++)
        cancel_token_unref(cancel_token_from_gcancellable(gc));
    cancel_token_t *t = cancel_token_from_gcancellable(gc);
    guint id = g_signal_lookup("cancelled", G_TYPE_CANCELLABLE);
    /* Count the handlers: find an unblocked one, block it, again. */
    gulong found[8];
    guint handlers = 0;
    while (handlers < 8 &&
           (found[handlers] = g_signal_handler_find(gc, G_SIGNAL_MATCH_ID |
                                                            G_SIGNAL_MATCH_UNBLOCKED,
                                                    id, 0, NULL, NULL, NULL)) != 0)
        g_signal_handler_block(gc, found[handlers++]);
    for (guint i = 0; i < handlers; i++)
        g_signal_handler_unblock(gc, found[i]);
    ck_assert_uint_eq(handlers, 1);
    g_cancellable_cancel(gc);
    ck_assert(cancel_token_is_cancelled(t));
    cancel_token_unref(t);
    g_object_unref(gc);
}
END_TEST

/* ------------------------------------ a token cancels a GCancellable */

START_TEST(cancel_gcancellable_new_is_cancelled_with_its_token_or_at_once)
{
    cancel_token_t *root = cancel_token_new();
    cancel_token_t *t = cancel_token_child(root);
    GCancellable *gc = cancel_gcancellable_new(t);
    ck_assert_ptr_nonnull(gc);
    ck_assert(!g_cancellable_is_cancelled(gc));
    cancel_token_cancel(root, ECANCELED);   /* through an ancestor */
    ck_assert(g_cancellable_is_cancelled(gc));
    GCancellable *late = cancel_gcancellable_new(t);
    ck_assert(g_cancellable_is_cancelled(late));
    GCancellable *never = cancel_gcancellable_new(NULL);
    ck_assert_ptr_nonnull(never);
    ck_assert(!g_cancellable_is_cancelled(never));
    g_object_unref(gc);
    g_object_unref(late);
    g_object_unref(never);
    cancel_token_unref(t);
    cancel_token_unref(root);
}
END_TEST

/* ------------------------------------------ the current token's one */

START_TEST(cancel_gcancellable_current_is_one_per_token_and_released_with_it)
{
    ck_assert_ptr_null(cancel_gcancellable_current());
    cancel_token_t *a = cancel_token_new(), *b = cancel_token_new();
    cancel_token_t *prev = cancel_enter(a);
    GCancellable *ca = cancel_gcancellable_current();
    ck_assert_ptr_nonnull(ca);
    ck_assert_ptr_eq(cancel_gcancellable_current(), ca);
    cancel_shield_begin();
    ck_assert_ptr_null(cancel_gcancellable_current());
    cancel_shield_end();
    cancel_enter(b);
    GCancellable *cb = cancel_gcancellable_current();
    ck_assert_ptr_nonnull(cb);
    ck_assert_ptr_ne(ca, cb);
    cancel_leave(prev);
    g_object_add_weak_pointer(G_OBJECT(ca), (gpointer *)&ca);
    g_object_add_weak_pointer(G_OBJECT(cb), (gpointer *)&cb);
    cancel_token_cancel(a, ECANCELED);
    ck_assert(g_cancellable_is_cancelled(ca));
    ck_assert(!g_cancellable_is_cancelled(cb));
    cancel_token_unref(a);
    ck_assert_ptr_null(ca);
    cancel_token_unref(b);
    ck_assert_ptr_null(cb);
}
END_TEST

START_TEST(cancel_gcancellable_current_of_a_cancelled_token_is_cancelled)
{
    cancel_token_t *t = cancel_token_new();
    cancel_token_cancel(t, ETIMEDOUT);
    cancel_token_t *prev = cancel_enter(t);
    GCancellable *c = cancel_gcancellable_current();
    ck_assert_ptr_nonnull(c);
    ck_assert(g_cancellable_is_cancelled(c));
    cancel_leave(prev);
    cancel_token_unref(t);
}
END_TEST

/* -------------------------------------------------------- release orders */

START_TEST(a_token_released_before_its_gcancellable_still_cancels_it_through_an_ancestor)
{
    cancel_token_t *root = cancel_token_new();
    cancel_token_t *t = cancel_token_child(root);
    GCancellable *gc = cancel_gcancellable_new(t);
    cancel_token_unref(t);                  /* the link keeps T */
    cancel_token_cancel(root, ECANCELED);
    ck_assert(g_cancellable_is_cancelled(gc));
    g_object_unref(gc);
    cancel_token_unref(root);
}
END_TEST

START_TEST(a_gcancellable_released_before_its_token_leaves_the_token_usable)
{
    cancel_token_t *t = cancel_token_new();
    GCancellable *gc = cancel_gcancellable_new(t);
    g_object_add_weak_pointer(G_OBJECT(gc), (gpointer *)&gc);
    g_object_unref(gc);
    ck_assert_ptr_null(gc);                 /* the token did not keep it */
    ck_assert(cancel_token_cancel(t, ECANCELED));
    cancel_token_unref(t);

    /* The other direction: the GCancellable goes first, its tokens stay. */
    GCancellable *g2 = g_cancellable_new();
    cancel_token_t *t2 = cancel_token_from_gcancellable(g2);
    g_object_unref(g2);
    ck_assert(!cancel_token_is_cancelled(t2));
    ck_assert(cancel_token_cancel(t2, ECANCELED));
    cancel_token_unref(t2);

    /* And a token released before its GCancellable is cancelled. */
    GCancellable *g3 = g_cancellable_new();
    cancel_token_unref(cancel_token_from_gcancellable(g3));
    g_cancellable_cancel(g3);
    g_object_unref(g3);
}
END_TEST

struct race {
    cancel_token_t *t;
    GCancellable *gc;
    tu_latch_t go;
};

static void *race_cancel(void *arg)
{
    struct race *r = arg;
    tu_latch_wait(&r->go);
    cancel_token_cancel(r->t, ECANCELED);
    return NULL;
}

static void *race_unref(void *arg)
{
    struct race *r = arg;
    tu_latch_wait(&r->go);
    g_object_unref(r->gc);
    return NULL;
}

START_TEST(a_cancel_racing_the_last_unref_of_its_gcancellable_is_safe)
{
    struct race r;
    tu_latch_init(&r.go);
    r.t = cancel_token_new();
    r.gc = cancel_gcancellable_new(r.t);
    pthread_t a, b;
    tu_thread_start(&a, race_cancel, &r);
    tu_thread_start(&b, race_unref, &r);
    tu_latch_post(&r.go);
    tu_latch_post(&r.go);
    tu_thread_join(a);
    tu_thread_join(b);
    ck_assert(cancel_token_is_cancelled(r.t));
    cancel_token_unref(r.t);
}
END_TEST

static void *race_gcancel(void *arg)
{
    struct race *r = arg;
    tu_latch_wait(&r->go);
    g_cancellable_cancel(r->gc);
    return NULL;
}

static void *race_token_unref(void *arg)
{
    struct race *r = arg;
    tu_latch_wait(&r->go);
    cancel_token_unref(r->t);
    return NULL;
}

START_TEST(a_gcancellable_cancel_racing_the_release_of_its_token_is_safe)
{
    struct race r;
    tu_latch_init(&r.go);
    r.gc = g_cancellable_new();
    r.t = cancel_token_from_gcancellable(r.gc);
    pthread_t a, b;
    tu_thread_start(&a, race_gcancel, &r);
    tu_thread_start(&b, race_token_unref, &r);
    tu_latch_post(&r.go);
    tu_latch_post(&r.go);
    tu_thread_join(a);
    tu_thread_join(b);
    ck_assert(g_cancellable_is_cancelled(r.gc));
    g_object_unref(r.gc);
}
END_TEST

/* ------------------------------------------- from inside GLib's handlers */

struct inside {
    cancel_token_t *target;     /* cancelled from the handler */
    cancel_token_t *doomed;     /* its last reference dropped there */
    GCancellable *source;
    bool born_cancelled;        /* a token made from SOURCE in the handler */
    int runs;
};

static void inside_handler(GCancellable *c, gpointer data)
{
    struct inside *in = data;
    (void)c;
    in->runs++;
    cancel_token_cancel(in->target, ECANCELED);
    cancel_token_unref(in->doomed);
    cancel_token_t *t = cancel_token_from_gcancellable(in->source);
    in->born_cancelled = cancel_token_is_cancelled(t);
    cancel_token_unref(t);
}

START_TEST(tokens_may_be_cancelled_and_released_from_inside_a_glib_handler)
{
    struct inside in = { 0 };
    in.source = g_cancellable_new();
    /* SOURCE -> token -> GCancellable -> token: one chain of links. */
    cancel_token_t *from_source = cancel_token_from_gcancellable(in.source);
    GCancellable *mid = cancel_gcancellable_new(from_source);
    cancel_token_t *from_mid = cancel_token_from_gcancellable(mid);
    /* A token whose cached GCancellable goes when the handler drops the
     * token's last reference. */
    in.doomed = cancel_token_new();
    cancel_token_t *prev = cancel_enter(in.doomed);
    GCancellable *doomed_current = cancel_gcancellable_current();
    cancel_leave(prev);
    g_object_add_weak_pointer(G_OBJECT(doomed_current), (gpointer *)&doomed_current);
    in.target = cancel_token_new();
    GCancellable *target_gc = cancel_gcancellable_new(in.target);

    g_cancellable_connect(in.source, G_CALLBACK(inside_handler), &in, NULL);
    g_cancellable_cancel(in.source);
    ck_assert_int_eq(in.runs, 1);
    ck_assert(in.born_cancelled);
    ck_assert(cancel_token_is_cancelled(in.target));
    ck_assert(g_cancellable_is_cancelled(target_gc));
    ck_assert(cancel_token_is_cancelled(from_source));
    ck_assert(g_cancellable_is_cancelled(mid));
    ck_assert(cancel_token_is_cancelled(from_mid));
    ck_assert_ptr_null(doomed_current);

    g_object_unref(target_gc);
    cancel_token_unref(in.target);
    cancel_token_unref(from_mid);
    g_object_unref(mid);
    cancel_token_unref(from_source);
    g_object_unref(in.source);
}
END_TEST

/* A libcancel callback that releases the last reference of the
 * GCancellable it is linked to (its finalize then runs inside the cancel). */
static void drop_gcancellable(void *arg, int reason)
{
    (void)reason;
    g_object_unref(arg);
}

START_TEST(a_gcancellable_finalized_inside_its_tokens_cancel_does_not_deadlock)
{
    cancel_token_t *t = cancel_token_new();
    GCancellable *gc = cancel_gcancellable_new(t);
    cancel_callback_t cb;
    ck_assert_int_eq(cancel_callback_add(&cb, t, drop_gcancellable, gc), 0);
    ck_assert(cancel_token_cancel(t, ECANCELED));
    cancel_callback_remove(&cb);
    cancel_token_unref(t);
}
END_TEST

static Suite *glib_suite(void)
{
    Suite *s = suite_create("glib");
    TCase *tc = tcase_create("gio_in_tasks");
    tcase_set_timeout(tc, TU_TIMEOUT);
    tcase_add_test(tc, g_socket_receive_in_a_task_is_cancelled_by_cancel_scope_cancel);
    tcase_add_test(tc, g_input_stream_read_in_a_task_is_cancelled_by_cancel_scope_cancel);
    tcase_add_test(tc, g_socket_client_connect_in_a_task_is_cancelled_by_cancel_scope_cancel);
    suite_add_tcase(s, tc);

    tc = tcase_create("gcancellable_to_token");
    tcase_set_timeout(tc, TU_TIMEOUT);
    tcase_add_test(tc, g_cancellable_cancel_wakes_a_cancel_read_under_its_token);
    tcase_add_test(tc, a_token_from_a_cancelled_gcancellable_is_born_cancelled_and_reset_starts_afresh);
    tcase_add_test(tc, a_null_gcancellable_gives_a_live_root_and_a_non_cancellable_is_einval);
    tcase_add_test(tc, many_tokens_from_one_gcancellable_share_one_handler);
    suite_add_tcase(s, tc);

    tc = tcase_create("token_to_gcancellable");
    tcase_set_timeout(tc, TU_TIMEOUT);
    tcase_add_test(tc, cancel_gcancellable_new_is_cancelled_with_its_token_or_at_once);
    tcase_add_test(tc, cancel_gcancellable_current_is_one_per_token_and_released_with_it);
    tcase_add_test(tc, cancel_gcancellable_current_of_a_cancelled_token_is_cancelled);
    suite_add_tcase(s, tc);

    tc = tcase_create("release_orders");
    tcase_set_timeout(tc, TU_TIMEOUT);
    tcase_add_test(tc, a_token_released_before_its_gcancellable_still_cancels_it_through_an_ancestor);
    tcase_add_test(tc, a_gcancellable_released_before_its_token_leaves_the_token_usable);
    tcase_add_loop_test(tc, a_cancel_racing_the_last_unref_of_its_gcancellable_is_safe, 0, 20);
    tcase_add_loop_test(tc, a_gcancellable_cancel_racing_the_release_of_its_token_is_safe, 0, 20);
    suite_add_tcase(s, tc);

    tc = tcase_create("inside_handlers");
    tcase_set_timeout(tc, TU_TIMEOUT);
    tcase_add_test(tc, tokens_may_be_cancelled_and_released_from_inside_a_glib_handler);
    tcase_add_test(tc, a_gcancellable_finalized_inside_its_tokens_cancel_does_not_deadlock);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(glib_suite());
}

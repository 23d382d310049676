/*
 * check_dump.c - the process-wide dump (SPEC.md, "GLib, and the whole
 * process at a glance"): cancel_dump_all as text and as JSON (parsed by
 * jq, a real JSON parser), and cancel_dump_on_signal.
 *
 * Tasks block in cancel_read on an empty pipe, or on a latch that ignores
 * cancellation (so that a cancelled task is still there to be shown); the
 * test polls the dump (at most 2 s) until it shows the state it waits for.
 * Tasks record, the test thread asserts after join.
 */
#define _GNU_SOURCE 1
#include "internal.h"
#include "testutil.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_THREAD__)
/* A forked child starts library threads although it was forked from a
 * threaded process, which ThreadSanitizer refuses by default (as in
 * check_fork.c). */
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
    return "die_after_fork=0";
}
#endif

/* ------------------------------------------------------------ helpers */

/* The dump, as one NUL-terminated string (malloc'd).  Written to a memfd,
 * so that a dump of any size never waits for a reader. */
static char *dump_string(int flags)
{
    int fd = memfd_create("dump", MFD_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(cancel_dump_all(fd, flags), 0);
    off_t n = lseek(fd, 0, SEEK_END);
    char *s = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(pread(fd, s, (size_t)n, 0), n);
    s[n] = 0;
    close(fd);
    return s;
}

/* Dumps (text) until the dump contains WANT, for at most 2 s. */
static char *dump_until(const char *want)
{
    int64_t end = tu_now_ns() + TU_WAKE_GUARD_NS;
    for (;;) {
        char *s = dump_string(0);
        if (strstr(s, want) || tu_now_ns() > end)
            return s;
        free(s);
        usleep(1000);
    }
}

/* Runs jq with ARGS on the JSON document DOC; returns its exit status (0:
 * the document parsed and the filter's last output was neither false nor
 * null).  jq is a test dependency (.ci/run installs it). */
static int jq(const char *doc, const char *args)
{
    char path[] = "/tmp/check_dump_jsonXXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, doc, strlen(doc)), (ssize_t)strlen(doc));
    close(fd);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "jq -e %s %s >/dev/null 2>&1", args, path);
    int st = system(cmd);
    unlink(path);
    ck_assert_msg(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) != 127,
                  "jq is not installed: the JSON dump cannot be validated (apt-get install jq)");
    return WEXITSTATUS(st);
}

struct world {
    cancel_scope_t *outer;
    cancel_scope_t *inner;      /* opened inside the "opener" task */
    int pipe[2];
    tu_latch_t inner_open;      /* the opener has spawned the reader */
    tu_latch_t hold;            /* the stubborn task waits on it */
    tu_latch_t go_home;         /* the opener may join its scope */
    ssize_t read_rc;
    int read_err;
    int inner_join;
};

static struct world w;

static int task_reader(void *arg)
{
    (void)arg;
    char b;
    w.read_rc = cancel_read(w.pipe[0], &b, 1);
    w.read_err = errno;
    return w.read_rc < 0 ? errno : 0;
}

/* Opens a scope inside its task, spawns a reader there, then joins it. */
static int task_opener(void *arg)
{
    (void)arg;
    w.inner = cancel_scope_open(0);
    if (!w.inner)
        return ENOMEM;
    cancel_scope_spawn_named(w.inner, "inner-reader", task_reader, NULL, NULL);
    tu_latch_post(&w.inner_open);
    tu_latch_wait(&w.go_home);
    w.inner_join = cancel_scope_join(w.inner, NULL);
    return 0;
}

static int task_return_zero(void *arg)
{
    (void)arg;
    return 0;
}

/* Ignores cancellation: it is still running after a cancel. */
static int task_stubborn(void *arg)
{
    (void)arg;
    tu_latch_wait(&w.hold);
    return 0;
}

static void world_open(void)
{
    memset(&w, 0, sizeof w);
    ck_assert_int_eq(pipe(w.pipe), 0);
    tu_latch_init(&w.inner_open);
    tu_latch_init(&w.hold);
    tu_latch_init(&w.go_home);
    w.outer = cancel_scope_open(CANCEL_SCOPE_SUPERVISE);
    ck_assert_ptr_nonnull(w.outer);
    ck_assert_int_eq(cancel_scope_spawn_named(w.outer, "opener", task_opener, NULL, NULL), 0);
    ck_assert_int_eq(cancel_scope_spawn_named(w.outer, "stubborn", task_stubborn, NULL, NULL), 0);
    tu_latch_wait(&w.inner_open);
}

static void world_close(void)
{
    tu_latch_post(&w.go_home);
    tu_latch_post(&w.hold);
    cancel_scope_cancel(w.outer);
    ck_assert_int_eq(cancel_scope_join(w.outer, NULL), 0);
    ck_assert_int_eq(w.read_rc, -1);
    ck_assert(w.read_err == ECANCELED || w.read_err == ETIMEDOUT);
    close(w.pipe[0]);
    close(w.pipe[1]);
}

/* ------------------------------------------------------------ text */

START_TEST(the_text_dump_nests_scopes_under_the_task_that_opened_them)
{
    world_open();
    char *s = dump_until("blocked in read(fd");
    char outer[64], inner[64];
    snprintf(outer, sizeof outer, "scope %p (supervise)", (void *)w.outer);
    snprintf(inner, sizeof inner, "    scope %p (fail-fast)", (void *)w.inner);
    char *o = strstr(s, outer), *opener = strstr(s, "\"opener\": running");
    char *i = strstr(s, inner), *reader = strstr(s, "\"inner-reader\": running");
    ck_assert_msg(o && opener && i && reader, "dump:\n%s", s);
    /* Outer scope, then its opener task, then (indented) the scope opened
     * inside it, then that scope's reader. */
    ck_assert(o < opener && opener < i && i < reader);
    char want[64];
    snprintf(want, sizeof want, "blocked in read(fd %d) for ", w.pipe[0]);
    ck_assert_msg(strstr(reader, want), "dump:\n%s", s);
    ck_assert_ptr_nonnull(strstr(s, "libcancel dump: pid "));
    free(s);
    world_close();
}
END_TEST

START_TEST(the_text_dump_shows_a_cancelled_task_and_where_it_was_cancelled_from)
{
    world_open();
    int line = __LINE__ + 1;
    CANCEL_TOKEN_CANCEL(cancel_scope_token(w.outer), ECANCELED);
    char *s = dump_until("\"stubborn\": running");
    char want[128];
    snprintf(want, sizeof want, "token cancelled (reason %d, from %s:%d, by thread ", ECANCELED,
             __FILE__, line);
    char *stubborn = strstr(s, "\"stubborn\": running");
    ck_assert_msg(stubborn && strstr(stubborn, want), "want \"%s\" in:\n%s", want, s);
    ck_assert_ptr_nonnull(strstr(s, "(supervise): "));
    free(s);
    world_close();
}
END_TEST

START_TEST(a_joined_scope_is_no_longer_in_the_dump)
{
    cancel_scope_t *s = cancel_scope_open(0);
    char id[32];
    snprintf(id, sizeof id, "scope %p ", (void *)s);
    char *d = dump_string(0);
    ck_assert_ptr_nonnull(strstr(d, id));
    free(d);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    d = dump_string(0);
    ck_assert_ptr_null(strstr(d, id));
    ck_assert_ptr_nonnull(strstr(d, "0 open scopes"));
    free(d);
}
END_TEST

START_TEST(cancel_dump_all_rejects_bad_input)
{
    ck_assert_int_eq(cancel_dump_all(-1, 0), EINVAL);
    ck_assert_int_eq(cancel_dump_all(STDERR_FILENO, 0x4), EINVAL);
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    close(p[0]);
    close(p[1]);
    ck_assert_int_eq(cancel_dump_all(p[1], 0), EBADF);
    /* A write error is returned (the pipe's reader is gone). */
    ck_assert_int_eq(pipe(p), 0);
    close(p[0]);
    signal(SIGPIPE, SIG_IGN);
    ck_assert_int_eq(cancel_dump_all(p[1], 0), EPIPE);
    close(p[1]);
}
END_TEST

/* ------------------------------------------------------------ JSON */

START_TEST(the_json_dump_is_one_document_with_the_same_tree)
{
    world_open();
    free(dump_until("blocked in read(fd"));
    char *doc = dump_string(CANCEL_DUMP_JSON);
    ck_assert_int_eq(jq(doc, "."), 0);
    char outer[32], inner[32], args[900];
    snprintf(outer, sizeof outer, "%p", (void *)w.outer);
    snprintf(inner, sizeof inner, "%p", (void *)w.inner);
    /* The inner scope is not a root: it is under the opener task. */
    snprintf(args, sizeof args,
             "--arg outer %s --arg inner %s "
             "'(.pid | type == \"number\") and (.scopes | type == \"array\") and "
             "([.scopes[] | select(.id == $inner)] | length == 0) and "
             "(.scopes[] | select(.id == $outer) | .mode == \"supervise\" and "
             " .cancelled == false and .cancelled_from == null and "
             " (.tasks | length == 2) and "
             " (.tasks[] | select(.name == \"opener\") | .state == \"running\" and "
             "  (.thread | type == \"string\") and "
             "  (.scopes | length == 1) and .scopes[0].id == $inner and "
             "  (.scopes[0].tasks[0] | .name == \"inner-reader\" and "
             "   .blocked.call == \"read\" and .blocked.fd == %d and "
             "   (.blocked.for_s | type == \"number\"))))'",
             outer, inner, w.pipe[0]);
    ck_assert_msg(jq(doc, args) == 0, "structure not as expected:\n%s", doc);
    free(doc);

    int line = __LINE__ + 1;
    CANCEL_TOKEN_CANCEL(cancel_scope_token(w.outer), ETIMEDOUT);
    free(dump_until("\"stubborn\": running"));
    doc = dump_string(CANCEL_DUMP_JSON);
    snprintf(args, sizeof args,
             "--arg outer %s --arg file '%s' "
             "'.scopes[] | select(.id == $outer) | .cancelled and .reason == %d and "
             " .cancelled_from.file == $file and .cancelled_from.line == %d and "
             " (.tasks[] | select(.name == \"stubborn\") | .cancelled and "
             "  .cancelled_from.line == %d)'",
             outer, __FILE__, ETIMEDOUT, line, line);
    ck_assert_msg(jq(doc, args) == 0, "cancelled-from not as expected:\n%s", doc);
    free(doc);
    world_close();
}
END_TEST

static int task_named_oddly(void *arg)
{
    tu_latch_wait(arg);
    return 0;
}

START_TEST(the_json_dump_escapes_task_names)
{
    tu_latch_t hold;
    tu_latch_init(&hold);
    cancel_scope_t *s = cancel_scope_open(0);
    ck_assert_int_eq(cancel_scope_spawn_named(s, "a \"quoted\"\\name\n", task_named_oddly,
                                              &hold, NULL), 0);
    char *doc = dump_string(CANCEL_DUMP_JSON);
    ck_assert_msg(jq(doc, "'[.scopes[].tasks[].name] | index(\"a \\\"quoted\\\"\\\\name\\n\") != null'") == 0,
                  "%s", doc);
    free(doc);
    tu_latch_post(&hold);
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
}
END_TEST

/* A scope with more live tasks than the snapshot's first array holds: the
 * array moves as it grows, and every task's name must still be its own
 * (the names pointed into the old array: found by the fuzzer). */
START_TEST(every_task_of_a_large_scope_is_dumped_with_its_own_name)
{
    enum { N = 40 };
    tu_latch_t hold;
    tu_latch_init(&hold);
    cancel_scope_t *s = cancel_scope_open(0);
    for (int i = 0; i < N; i++) {
        char name[16];
        snprintf(name, sizeof name, "worker-%02d", i);
        ck_assert_int_eq(cancel_scope_spawn_named(s, name, task_named_oddly, &hold, NULL), 0);
    }
    char *text = dump_string(0);
    char *doc = dump_string(CANCEL_DUMP_JSON);
    for (int i = 0; i < N; i++) {
        char name[16];
        snprintf(name, sizeof name, "worker-%02d", i);
        ck_assert_msg(strstr(text, name) != NULL, "%s missing from the text dump", name);
        ck_assert_msg(strstr(doc, name) != NULL, "%s missing from the JSON dump", name);
    }
    free(text);
    free(doc);
    for (int i = 0; i < N; i++)
        tu_latch_post(&hold); /* one post lets one task go */
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
}
END_TEST

/* ------------------------------------------------------------ concurrency */

static int task_nest_briefly(void *arg)
{
    (void)arg;
    cancel_scope_t *in = cancel_scope_open(0);
    if (!in)
        return ENOMEM;
    cancel_scope_spawn_named(in, "leaf", task_return_zero, NULL, NULL);
    return cancel_scope_join(in, NULL);
}

static _Atomic bool churn_stop;

/* The sanitizers' runtimes are not fork-safe while other threads run in
 * them (ThreadSanitizer's locks, and GCC 12's ASan allocator, can be held
 * at the fork: children hung in CI under both).  Under a sanitizer only,
 * the churn pauses between rounds while the test forks, as check_fork does
 * for ASan; the plain run forks in the middle of the churn. */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
/* Writer-preferring: with glibc's default (readers first) the two churn
 * threads' rounds overlapped without a gap and the fork waited for ever
 * (the test timed out under ASan once rounds got faster). */
static pthread_rwlock_t churn_round = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;
#define CHURN_ROUND_BEGIN() pthread_rwlock_rdlock(&churn_round)
#define CHURN_ROUND_END() pthread_rwlock_unlock(&churn_round)
#define FORK_BEGIN() pthread_rwlock_wrlock(&churn_round)
#define FORK_END() pthread_rwlock_unlock(&churn_round)
#else
#define CHURN_ROUND_BEGIN() ((void)0)
#define CHURN_ROUND_END() ((void)0)
#define FORK_BEGIN() ((void)0)
#define FORK_END() ((void)0)
#endif

/* Opens, fills and joins scopes (with nested ones) until told to stop. */
static void *churn(void *arg)
{
    (void)arg;
    while (!atomic_load(&churn_stop)) {
        CHURN_ROUND_BEGIN();
        cancel_scope_t *s = cancel_scope_open(0);
        if (s) {
            for (int i = 0; i < 3; i++)
                cancel_scope_spawn(s, task_nest_briefly, NULL, NULL);
            if (atomic_load(&churn_stop))
                cancel_scope_cancel(s);
            cancel_scope_join(s, NULL);
        }
        CHURN_ROUND_END();
    }
    return NULL;
}

START_TEST(dumps_taken_while_scopes_open_and_close_are_whole_documents)
{
    atomic_store(&churn_stop, false);
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        tu_thread_start(&th[i], churn, NULL);
    char *doc = NULL;
    for (int i = 0; i < 200; i++) {
        free(doc);
        doc = dump_string(i % 2 ? CANCEL_DUMP_JSON : 0);
    }
    atomic_store(&churn_stop, true);
    for (int i = 0; i < 2; i++)
        tu_thread_join(th[i]);
    ck_assert_int_eq(jq(doc, "'.scopes | type == \"array\"'"), 0);
    free(doc);
}
END_TEST

/* In a forked child: open a scope, run a task in it, dump, join.  Exit
 * codes say what went wrong (the parent asserts). */
static int child_uses_scopes_and_dumps(void)
{
    alarm(10); /* a deadlock shows as SIGALRM, not as a hang */
    cancel_scope_t *s = cancel_scope_open(0);
    if (!s)
        return 2;
    if (cancel_scope_spawn(s, task_return_zero, NULL, NULL) != 0)
        return 3;
    int fd = memfd_create("child-dump", 0);
    if (fd < 0 || cancel_dump_all(fd, CANCEL_DUMP_JSON) != 0)
        return 4;
    char buf[256] = "";
    if (pread(fd, buf, sizeof buf - 1, 0) <= 0 || !strstr(buf, "\"scope_count\":1,"))
        return 5; /* only the child's own scope, none of the parent's */
    if (cancel_scope_join(s, NULL) != 0)
        return 6;
    return 0;
}

START_TEST(a_child_forked_while_scopes_open_close_and_dump_can_use_and_dump_scopes)
{
    atomic_store(&churn_stop, false);
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        tu_thread_start(&th[i], churn, NULL);
    int bad = 0, status = 0;
    for (int i = 0; i < 20 && !bad; i++) {
        free(dump_string(0)); /* the registry busy in this thread too */
        FORK_BEGIN();
        pid_t pid = fork();
        if (pid == 0)
            _exit(child_uses_scopes_and_dumps());
        FORK_END();
        ck_assert_int_ge(pid, 0);
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            bad = 1;
    }
    atomic_store(&churn_stop, true);
    for (int i = 0; i < 2; i++)
        tu_thread_join(th[i]);
    ck_assert_msg(!bad, "a forked child failed: %s %d",
                  WIFEXITED(status) ? "exit" : "signal",
                  WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}
END_TEST

/* ------------------------------------------------------------ on a signal */

START_TEST(a_signal_writes_a_dump_on_every_delivery)
{
    cancel_scope_t *s = cancel_scope_open(0);
    char id[32];
    snprintf(id, sizeof id, "scope %p ", (void *)s);
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(cancel_dump_on_signal(SIGUSR1, p[1]), 0);
    for (int round = 0; round < 2; round++) {
        ck_assert_int_eq(raise(SIGUSR1), 0);
        /* Read until this round's dump has arrived whole (it ends with the
         * scope's line), waiting at most 2 s in all. */
        char buf[8192];
        size_t n = 0;
        int64_t end = tu_now_ns() + TU_WAKE_GUARD_NS;
        while (!(n > 0 && strstr(buf, id) && buf[n - 1] == '\n') && tu_now_ns() < end) {
            struct pollfd pfd = { .fd = p[0], .events = POLLIN };
            if (poll(&pfd, 1, 100) == 1) {
                ssize_t r = read(p[0], buf + n, sizeof buf - 1 - n);
                ck_assert_int_gt(r, 0);
                n += (size_t)r;
                buf[n] = 0;
            }
        }
        ck_assert_msg(n > 0 && strstr(buf, "libcancel dump: pid ") && strstr(buf, id),
                      "round %d: no dump arrived (%zu bytes)", round, n);
    }
    ck_assert_int_eq(cancel_scope_join(s, NULL), 0);
    close(p[0]);
    close(p[1]);
}
END_TEST

START_TEST(cancel_dump_on_signal_rejects_what_cancel_on_signal_rejects)
{
    ck_assert_int_eq(cancel_dump_on_signal(SIGKILL, STDERR_FILENO), EINVAL);
    ck_assert_int_eq(cancel_dump_on_signal(SIGSTOP, STDERR_FILENO), EINVAL);
    ck_assert_int_eq(cancel_dump_on_signal(0, STDERR_FILENO), EINVAL);
    ck_assert_int_eq(cancel_dump_on_signal(-3, STDERR_FILENO), EINVAL);
    ck_assert_int_eq(cancel_dump_on_signal(NSIG, STDERR_FILENO), EINVAL);
    ck_assert_int_eq(cancel_dump_on_signal(SIGUSR2, -1), EINVAL);
}
END_TEST

static Suite *dump_suite(void)
{
    Suite *s = suite_create("dump");
    TCase *tc = tcase_create("text");
    tcase_set_timeout(tc, TU_TIMEOUT);
    tcase_add_test(tc, the_text_dump_nests_scopes_under_the_task_that_opened_them);
    tcase_add_test(tc, the_text_dump_shows_a_cancelled_task_and_where_it_was_cancelled_from);
    tcase_add_test(tc, a_joined_scope_is_no_longer_in_the_dump);
    tcase_add_test(tc, cancel_dump_all_rejects_bad_input);
    suite_add_tcase(s, tc);

    tc = tcase_create("json");
    tcase_set_timeout(tc, TU_TIMEOUT);
    tcase_add_test(tc, the_json_dump_is_one_document_with_the_same_tree);
    tcase_add_test(tc, the_json_dump_escapes_task_names);
    tcase_add_test(tc, every_task_of_a_large_scope_is_dumped_with_its_own_name);
    suite_add_tcase(s, tc);

    tc = tcase_create("concurrency");
    tcase_set_timeout(tc, TU_TIMEOUT);
    tcase_add_test(tc, dumps_taken_while_scopes_open_and_close_are_whole_documents);
    tcase_add_test(tc, a_child_forked_while_scopes_open_close_and_dump_can_use_and_dump_scopes);
    suite_add_tcase(s, tc);

    tc = tcase_create("signal");
    tcase_set_timeout(tc, TU_TIMEOUT);
    tcase_add_test(tc, a_signal_writes_a_dump_on_every_delivery);
    tcase_add_test(tc, cancel_dump_on_signal_rejects_what_cancel_on_signal_rejects);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(dump_suite());
}

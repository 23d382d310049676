/*
 * check_realsw.c - acceptance tests of libcancel-interpose.so against real
 * software that knows nothing of libcancel (Debian packages, installed by
 * .ci/run): PostgreSQL + libpq, libcurl, redis-server + hiredis, SQLite.
 * Everything runs on loopback or unix sockets in a private temp dir; each
 * server is started by its TCase's fixture and stopped by its teardown.
 * A missing server or tool fails the tests that need it, saying why.
 *
 * Each scenario: a task of a scope runs the library's plain blocking call;
 * the test waits until the task sleeps in the kernel (and, where it can,
 * until the server has the request), cancels the scope, and checks that
 * the call returned an error within a generous bound, that the library
 * made only a bounded number of calls after the cancel (the interposer
 * counts calls made under a cancelled token: a library that spun on its
 * error would make millions), and that the documented reset gives a
 * working connection again.
 *
 * Built twice: plain and with -D_FORTIFY_SOURCE=2 (check_realsw_fortify).
 */
#define _GNU_SOURCE
#include "testutil.h"

#include <cancel.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <curl/curl.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <sqlite3.h>

/* Calls the library made after the cancel, at most (a spin makes millions). */
#define CALLS_BOUND 5000

/* Cancel -> return bound (generous: a loaded 2-core machine, sanitizers). */
#define RETURN_BOUND_NS (2 * 1000000000LL)

static char setup_error[512];   /* why a fixture could not start its server */
static char tmpdir[128];

static unsigned long interposed_calls(void)
{
    unsigned long (*f)(void) = (unsigned long (*)(void))dlsym(RTLD_DEFAULT,
                                                              "cancel__interpose_calls");
    return f ? f() : 0;
}

static void fixture_fail(const char *fmt, const char *arg)
{
    if (!setup_error[0])
        snprintf(setup_error, sizeof setup_error, fmt, arg);
}

#define REQUIRE_SERVER() \
    do { if (setup_error[0]) ck_abort_msg("%s", setup_error); } while (0)

/* Runs ARGV as USER (NULL: ourselves) with output to LOG; its exit status. */
static int run_as(const char *user, char *const argv[], const char *log)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        if (user) {
            struct passwd *pw = getpwnam(user);
            if (!pw || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0)
                _exit(126);
        }
        /* Opened as USER, who must be able to append to it later too. */
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0666);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        unsetenv("LD_PRELOAD");
        execv(argv[0], argv);
        _exit(127);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void make_tmpdir(const char *tag)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/check_realsw_%s_XXXXXX", tag);
    if (!mkdtemp(tmpdir))
        fixture_fail("mkdtemp failed: %s", strerror(errno));
    chmod(tmpdir, 0755);
}

static void remove_tmpdir(void)
{
    if (!tmpdir[0])
        return;
    char *argv[] = { "/bin/rm", "-rf", tmpdir, NULL };
    run_as(NULL, argv, "/dev/null");
    tmpdir[0] = '\0';
}

/* The task: runs BODY(ARG) with the task token current; records timing. */
struct scenario {
    int (*body)(struct scenario *);
    void *lib;                 /* the library's connection */
    atomic_int phase;          /* 1: about to block */
    pid_t tid;
    int64_t returned_ns;
    int outcome;               /* body's own verdict: 0 = failed as expected */
    char msg[256];
};

static int scenario_task(void *arg)
{
    struct scenario *s = arg;
    s->tid = tu_gettid();
    atomic_store(&s->phase, 1);
    s->outcome = s->body(s);
    s->returned_ns = tu_now_ns();
    return 0;
}

/*
 * Runs S in a task, waits until READY(ARG) says the call is blocked (or,
 * with READY NULL, until the task sleeps and 200 ms passed), cancels the
 * scope, joins, and asserts the bounds.
 */
static void run_scenario(struct scenario *s, bool (*ready)(struct scenario *))
{
    cancel_scope_t *scope = cancel_scope_open_in(NULL, 0);
    ck_assert_ptr_nonnull(scope);
    ck_assert_int_eq(cancel_scope_spawn(scope, scenario_task, s, NULL), 0);
    while (atomic_load(&s->phase) == 0)
        sched_yield();
    int64_t until = tu_now_ns() + 10 * 1000000000LL;
    if (ready) {
        while (!ready(s) && tu_now_ns() < until)
            usleep(1000);
    } else {
        usleep(200 * 1000);
    }
    tu_wait_until_sleeping(s->tid);
    unsigned long calls0 = interposed_calls();
    int64_t t0 = tu_now_ns();
    cancel_scope_cancel(scope);
    ck_assert_int_eq(cancel_scope_join(scope, NULL), 0);
    unsigned long calls = interposed_calls() - calls0;
    int64_t dt = s->returned_ns - t0;
    fprintf(stderr, "%s: returned %.3f ms after the cancel, %lu calls after it: %s\n",
            tcase_name(), dt / 1e6, calls, s->msg);
    ck_assert_msg(s->outcome == 0, "the call did not fail as expected: %s", s->msg);
    ck_assert_int_lt(dt, RETURN_BOUND_NS);
    ck_assert_uint_lt(calls, CALLS_BOUND);
}

/* ----------------------------------------------------------- PostgreSQL */

static char pg_bin[256];
static char pg_conninfo[256];

static bool pg_find_bin(void)
{
    glob_t g;
    if (glob("/usr/lib/postgresql/*/bin/pg_ctl", 0, NULL, &g) != 0 || g.gl_pathc == 0)
        return false;
    snprintf(pg_bin, sizeof pg_bin, "%s", g.gl_pathv[g.gl_pathc - 1]);
    globfree(&g);
    *strrchr(pg_bin, '/') = '\0';
    return true;
}

static void pg_setup(void)
{
    setup_error[0] = '\0';
    if (!pg_find_bin()) {
        fixture_fail("%s", "PostgreSQL is not installed (apt-get install postgresql libpq-dev)");
        return;
    }
    struct passwd *pw = getpwnam("postgres");
    if (!pw) {
        fixture_fail("%s", "no postgres user (the postgresql package creates it)");
        return;
    }
    make_tmpdir("pg");
    if (chown(tmpdir, pw->pw_uid, pw->pw_gid) != 0) {
        fixture_fail("chown of the temp dir failed: %s", strerror(errno));
        return;
    }
    char data[256], log[256], initdb[300], pg_ctl[300], opts[400];
    snprintf(data, sizeof data, "%s/data", tmpdir);
    snprintf(log, sizeof log, "%s/log", tmpdir);
    snprintf(initdb, sizeof initdb, "%s/initdb", pg_bin);
    snprintf(pg_ctl, sizeof pg_ctl, "%s/pg_ctl", pg_bin);
    /* initdb refuses root: the cluster belongs to the postgres user. */
    char *init_argv[] = { initdb, "-D", data, "-A", "trust", "-U", "postgres", "--no-sync",
                          "--no-instructions", NULL };
    if (run_as("postgres", init_argv, log) != 0) {
        fixture_fail("initdb failed (see %s)", log);
        return;
    }
    snprintf(opts, sizeof opts,
             "-k %s -c listen_addresses='' -c fsync=off -c synchronous_commit=off "
             "-c shared_buffers=16MB -c max_connections=10",
             tmpdir);
    char *start_argv[] = { pg_ctl, "-D", data, "-o", opts, "-l", log, "-w", "-t", "60",
                           "start", NULL };
    if (run_as("postgres", start_argv, log) != 0) {
        fixture_fail("pg_ctl start failed (see %s)", log);
        return;
    }
    snprintf(pg_conninfo, sizeof pg_conninfo, "host=%s dbname=postgres user=postgres", tmpdir);
}

static void pg_teardown(void)
{
    if (pg_bin[0] && tmpdir[0]) {
        char data[256], pg_ctl[300];
        snprintf(data, sizeof data, "%s/data", tmpdir);
        snprintf(pg_ctl, sizeof pg_ctl, "%s/pg_ctl", pg_bin);
        char *stop_argv[] = { pg_ctl, "-D", data, "-m", "immediate", "-w", "stop", NULL };
        run_as("postgres", stop_argv, "/dev/null");
    }
    remove_tmpdir();
}

static int pg_sleep_body(struct scenario *s)
{
    PGresult *r = PQexec(s->lib, "SELECT pg_sleep(60)");
    ExecStatusType st = PQresultStatus(r);
    snprintf(s->msg, sizeof s->msg, "%s: %s", PQresStatus(st), PQerrorMessage(s->lib));
    s->msg[strcspn(s->msg, "\n")] = '\0';
    PQclear(r);
    return st == PGRES_TUPLES_OK; /* 0: failed, as a cancelled call must */
}

/* Whether the server runs our query (pg_stat_activity, from a second connection). */
static PGconn *pg_watch;
static bool pg_query_running(struct scenario *s)
{
    (void)s;
    PGresult *r = PQexec(pg_watch, "SELECT count(*) FROM pg_stat_activity "
                                   "WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'");
    bool running = PQresultStatus(r) == PGRES_TUPLES_OK && atoi(PQgetvalue(r, 0, 0)) > 0;
    PQclear(r);
    return running;
}

START_TEST(pqexec_of_pg_sleep_returns_an_error_on_cancel_and_pqreset_recovers)
{
    REQUIRE_SERVER();
    PGconn *c = PQconnectdb(pg_conninfo);
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "connect: %s", PQerrorMessage(c));
    pg_watch = PQconnectdb(pg_conninfo);
    ck_assert_msg(PQstatus(pg_watch) == CONNECTION_OK, "connect: %s", PQerrorMessage(pg_watch));
    struct scenario s = { .body = pg_sleep_body, .lib = c };
    run_scenario(&s, pg_query_running);
    /* The documented rule: a cancelled library connection is reset. */
    PQreset(c);
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "reset: %s", PQerrorMessage(c));
    PGresult *r = PQexec(c, "SELECT 41 + 1");
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "42");
    PQclear(r);
    PQfinish(c);
    PQfinish(pg_watch);
}
END_TEST

/* --------------------------------------------------------------- libcurl */

static int curl_listener;
static int curl_port;

static void curl_setup(void)
{
    setup_error[0] = '\0';
    curl_listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    if (bind(curl_listener, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(curl_listener, 8) != 0 ||
        getsockname(curl_listener, (struct sockaddr *)&a, &len) != 0)
        fixture_fail("loopback listener: %s", strerror(errno));
    curl_port = ntohs(a.sin_port);
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void curl_teardown(void)
{
    close(curl_listener);
    curl_global_cleanup();
}

static int curl_body(struct scenario *s)
{
    CURLcode rc = curl_easy_perform(s->lib);
    snprintf(s->msg, sizeof s->msg, "CURLcode %d: %s", (int)rc, curl_easy_strerror(rc));
    return rc == CURLE_OK;
}

/* The server's side: accepts the connection and reads the request, never answers. */
static int curl_conn = -1;
static bool curl_request_read(struct scenario *s)
{
    (void)s;
    if (curl_conn < 0) {
        struct pollfd p = { .fd = curl_listener, .events = POLLIN, .revents = 0 };
        if (poll(&p, 1, 0) != 1)
            return false;
        curl_conn = accept(curl_listener, NULL, NULL);
    }
    char buf[1024];
    ssize_t n = recv(curl_conn, buf, sizeof buf, MSG_DONTWAIT);
    return n > 0;
}

START_TEST(curl_easy_perform_against_a_server_that_never_answers_returns_on_cancel)
{
    REQUIRE_SERVER();
    CURL *e = curl_easy_init();
    ck_assert_ptr_nonnull(e);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", curl_port);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    struct scenario s = { .body = curl_body, .lib = e };
    run_scenario(&s, curl_request_read);
    curl_easy_cleanup(e);
    if (curl_conn >= 0)
        close(curl_conn);
    curl_conn = -1;
}
END_TEST

/* ------------------------------------------------- redis-server + hiredis */

static pid_t redis_pid = -1;
static char redis_sock[200];

static void redis_setup(void)
{
    setup_error[0] = '\0';
    if (access("/usr/bin/redis-server", X_OK) != 0) {
        fixture_fail("%s", "redis-server is not installed (apt-get install redis-server libhiredis-dev)");
        return;
    }
    make_tmpdir("redis");
    snprintf(redis_sock, sizeof redis_sock, "%s/redis.sock", tmpdir);
    redis_pid = fork();
    if (redis_pid == 0) {
        char log[256];
        snprintf(log, sizeof log, "%s/log", tmpdir);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0666);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        unsetenv("LD_PRELOAD");
        execl("/usr/bin/redis-server", "redis-server", "--port", "0", "--unixsocket",
              redis_sock, "--save", "", "--appendonly", "no", "--dir", tmpdir, (char *)NULL);
        _exit(127);
    }
    /* Ready when its socket accepts a connection (at most 20 s). */
    int64_t until = tu_now_ns() + 20 * 1000000000LL;
    while (tu_now_ns() < until) {
        redisContext *c = redisConnectUnix(redis_sock);
        bool ok = c && !c->err;
        redisFree(c);
        if (ok)
            return;
        if (waitpid(redis_pid, NULL, WNOHANG) == redis_pid) {
            redis_pid = -1;
            break;
        }
        usleep(10 * 1000);
    }
    fixture_fail("redis-server did not start (see %s/log)", tmpdir);
}

static void redis_teardown(void)
{
    if (redis_pid > 0) {
        kill(redis_pid, SIGKILL);
        waitpid(redis_pid, NULL, 0);
        redis_pid = -1;
    }
    remove_tmpdir();
}

static int redis_body(struct scenario *s)
{
    redisContext *c = s->lib;
    redisReply *r = redisCommand(c, "BLPOP k 0");
    snprintf(s->msg, sizeof s->msg, "reply %p, err %d: %s", (void *)r, c->err, c->errstr);
    if (r)
        freeReplyObject(r);
    return r != NULL;
}

/* Blocked on the server: CLIENT LIST shows a client in BLPOP. */
static redisContext *redis_watch;
static bool redis_blocked(struct scenario *s)
{
    (void)s;
    redisReply *r = redisCommand(redis_watch, "CLIENT LIST");
    bool blocked = r && r->type == REDIS_REPLY_STRING && strstr(r->str, "cmd=blpop");
    if (r)
        freeReplyObject(r);
    return blocked;
}

START_TEST(hiredis_blpop_returns_on_cancel_and_a_new_connection_works)
{
    REQUIRE_SERVER();
    redisContext *c = redisConnectUnix(redis_sock);
    ck_assert_msg(c && !c->err, "connect: %s", c ? c->errstr : "no memory");
    redis_watch = redisConnectUnix(redis_sock);
    ck_assert(redis_watch && !redis_watch->err);
    struct scenario s = { .body = redis_body, .lib = c };
    run_scenario(&s, redis_blocked);
    ck_assert_int_ne(c->err, 0);
    redisFree(c); /* the documented rule: a cancelled connection is closed */
    c = redisConnectUnix(redis_sock);
    ck_assert(c && !c->err);
    redisReply *r = redisCommand(c, "PING");
    ck_assert_ptr_nonnull(r);
    ck_assert_str_eq(r->str, "PONG");
    freeReplyObject(r);
    redisFree(c);
    redisFree(redis_watch);
}
END_TEST

/* ---------------------------------------------------------------- SQLite */

static void sqlite_setup(void)
{
    setup_error[0] = '\0';
    make_tmpdir("sqlite");
}

static int sqlite_body(struct scenario *s)
{
    char *err = NULL;
    int rc = sqlite3_exec(s->lib, "SELECT count(*) FROM t", NULL, NULL, &err);
    snprintf(s->msg, sizeof s->msg, "rc %d (%s)", rc, err ? err : sqlite3_errstr(rc));
    sqlite3_free(err);
    return rc != SQLITE_BUSY;
}

START_TEST(sqlite_busy_wait_on_a_locked_database_returns_sqlite_busy_on_cancel)
{
    REQUIRE_SERVER();
    char path[256];
    snprintf(path, sizeof path, "%s/db", tmpdir);
    sqlite3 *a, *b;
    ck_assert_int_eq(sqlite3_open(path, &a), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(a, "CREATE TABLE t(x); BEGIN EXCLUSIVE; INSERT INTO t VALUES(1)",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    ck_assert_int_eq(sqlite3_open(path, &b), SQLITE_OK);
    /* A minute of busy-waiting, uncancelled.  SQLite's busy handler ignores
     * its sleep's result and counts the time it meant to sleep, so after the
     * cancel it runs through its budget in about 600 immediate calls (one
     * per 100 ms of the timeout): bounded, not a spin. */
    sqlite3_busy_timeout(b, 60 * 1000);
    struct scenario s = { .body = sqlite_body, .lib = b };
    run_scenario(&s, NULL);
    sqlite3_exec(a, "COMMIT", NULL, NULL, NULL);
    ck_assert_int_eq(sqlite3_exec(b, "SELECT count(*) FROM t", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(b);
    sqlite3_close(a);
}
END_TEST

static void sqlite_teardown(void)
{
    remove_tmpdir();
}

int main(void)
{
#if defined(__SANITIZE_THREAD__)
    /* Documented in cancel_interpose(7): ThreadSanitizer's own interceptors
     * of read, poll, pthread_cond_wait, vfork ... come first in the process
     * and run the interposer inside them, where TSan ignores the
     * synchronisation of the code they call (so it reports false races),
     * turns vfork into fork and binds old-ABI condvar callers itself.  The
     * interposer is tested plain, fortified and under ASan+UBSan instead. */
    fprintf(stderr, "check_realsw: not run under ThreadSanitizer (see cancel_interpose(7))\n");
    return 77;
#endif
    Suite *su = suite_create("realsw");
    TCase *tc = tcase_create("postgresql");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, pg_setup, pg_teardown);
    tcase_add_test(tc, pqexec_of_pg_sleep_returns_an_error_on_cancel_and_pqreset_recovers);
    suite_add_tcase(su, tc);

    tc = tcase_create("curl");
    tcase_set_timeout(tc, TU_TIMEOUT);
    tcase_add_unchecked_fixture(tc, curl_setup, curl_teardown);
    tcase_add_test(tc, curl_easy_perform_against_a_server_that_never_answers_returns_on_cancel);
    suite_add_tcase(su, tc);

    tc = tcase_create("redis");
    tcase_set_timeout(tc, 60);
    tcase_add_unchecked_fixture(tc, redis_setup, redis_teardown);
    tcase_add_test(tc, hiredis_blpop_returns_on_cancel_and_a_new_connection_works);
    suite_add_tcase(su, tc);

    tc = tcase_create("sqlite");
    tcase_set_timeout(tc, TU_TIMEOUT);
    tcase_add_unchecked_fixture(tc, sqlite_setup, sqlite_teardown);
    tcase_add_test(tc, sqlite_busy_wait_on_a_locked_database_returns_sqlite_busy_on_cancel);
    suite_add_tcase(su, tc);
    return tu_run_suite(su);
}

/*
 * testutil.c - helpers shared by the Check programs.
 */
#include "testutil.h"

#include <sys/wait.h>

#include <dirent.h>
#include <sched.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <stdlib.h>
#include <string.h>

int64_t tu_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int count_entries(const char *path)
{
    DIR *d = opendir(path);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

int tu_count_fds(void)
{
    return count_entries("/proc/self/fd") - 1; /* the DIR's own fd */
}

int tu_count_threads(void)
{
    return count_entries("/proc/self/task");
}

void tu_thread_start(pthread_t *thread, void *(*fn)(void *), void *arg)
{
    int rc = pthread_create(thread, NULL, fn, arg);
    ck_assert_int_eq(rc, 0);
}

void *tu_thread_join(pthread_t thread)
{
    void *ret = NULL;
    int rc = pthread_join(thread, &ret);
    ck_assert_int_eq(rc, 0);
    return ret;
}

void tu_latch_init(tu_latch_t *l)
{
    pthread_mutex_init(&l->mutex, NULL);
    pthread_cond_init(&l->cond, NULL);
    l->count = 0;
}

void tu_latch_post(tu_latch_t *l)
{
    pthread_mutex_lock(&l->mutex);
    l->count++;
    pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->mutex);
}

void tu_latch_wait(tu_latch_t *l)
{
    pthread_mutex_lock(&l->mutex);
    while (l->count == 0)
        pthread_cond_wait(&l->cond, &l->mutex);
    l->count--;
    pthread_mutex_unlock(&l->mutex);
}

int tu_run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

pid_t tu_gettid(void)
{
    return (pid_t)syscall(SYS_gettid);
}

void tu_wait_until_sleeping(pid_t tid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
    int64_t until = tu_now_ns() + TU_WAKE_GUARD_NS;
    while (tu_now_ns() < until) {
        FILE *f = fopen(path, "r");
        if (!f)
            return;
        char buf[512];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        const char *paren = strrchr(buf, ')');
        if (paren && (paren[2] == 'S' || paren[2] == 'D'))
            return;
        sched_yield();
    }
}

int tu_run_captured(void (*fn)(void *), void *arg, char *buf, size_t n)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        fn(arg);
        _exit(0);
    }
    close(fds[1]);
    size_t got = 0;
    ssize_t r;
    while (got + 1 < n && (r = read(fds[0], buf + got, n - 1 - got)) > 0)
        got += (size_t)r;
    buf[got] = 0;
    close(fds[0]);
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    return status;
}

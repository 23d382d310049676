/*
 * testutil.h - helpers shared by the Check programs.
 */
#ifndef CANCEL_TESTUTIL_H
#define CANCEL_TESTUTIL_H

#include <check.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>
#include <sys/types.h>

/* Timeout, in seconds, for a TCase that can block (Check scales it by
 * CK_TIMEOUT_MULTIPLIER for sanitizer runs). */
#define TU_TIMEOUT 30

/* Generous upper guard for "wakes promptly" (lower bounds are the real test). */
#define TU_WAKE_GUARD_NS (2 * 1000000000LL)

/* Nanoseconds on CLOCK_MONOTONIC. */
int64_t tu_now_ns(void);

/* Open file descriptors of this process (from /proc/self/fd). */
int tu_count_fds(void);

/* Threads of this process (from /proc/self/task). */
int tu_count_threads(void);

/* pthread_create that fails the test on error. */
void tu_thread_start(pthread_t *thread, void *(*fn)(void *), void *arg);
void *tu_thread_join(pthread_t thread);

/* A one-shot handshake between two threads. */
typedef struct {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    int count;
} tu_latch_t;
void tu_latch_init(tu_latch_t *l);
void tu_latch_post(tu_latch_t *l);
void tu_latch_wait(tu_latch_t *l);

/* The calling thread's kernel id. */
pid_t tu_gettid(void);

/*
 * Waits (at most 2 s) until thread TID sleeps in the kernel.  Used only to
 * give a buggy implementation the chance to show itself: a correct one
 * passes however early or late this returns.
 */
void tu_wait_until_sleeping(pid_t tid);

/*
 * Runs FN(ARG) in a forked child whose standard error goes to BUF (NUL
 * terminated, at most N - 1 bytes); returns the child's wait status.  For
 * caller mistakes that must abort with a message naming them.
 */
int tu_run_captured(void (*fn)(void *), void *arg, char *buf, size_t n);

/* Run the suite in fork mode; returns the process exit status. */
int tu_run_suite(Suite *s);

#endif

/*
 * sem_fallback.c - cancel_sem_wait on a C library without glibc's sem_t
 * layout (musl): the waiter falls back to timed slices (cancel_sem_wait(3),
 * NOTES).  Run by .ci/run's musl step.  A waiter blocked in
 * cancel_sem_wait fails with ECANCELED within 2 s of the cancel, no unit
 * is taken; a waiter woken by sem_post takes exactly one unit.
 */
#define _POSIX_C_SOURCE 200809L
#include <cancel.h>
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <time.h>

static sem_t sem, ready;
static cancel_token_t *tok;
static int result, result_errno;

static void *waiter(void *arg)
{
    (void)arg;
    cancel_token_t *prev = cancel_enter(tok);
    sem_post(&ready);
    result = cancel_sem_wait(&sem);
    result_errno = errno;
    cancel_leave(prev);
    return NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Starts a waiter, lets it block, then ends its wait by CANCEL or by a
 * sem_post; returns the seconds from that to the waiter's return. */
static double one(int cancel)
{
    pthread_t th;
    tok = cancel_token_new();
    if (!tok || pthread_create(&th, NULL, waiter, NULL) != 0)
        return -1;
    sem_wait(&ready);
    struct timespec pause = { 0, 20 * 1000 * 1000 }; /* usually blocked by then; either way must hold */
    nanosleep(&pause, NULL);
    double t0 = now_s();
    if (cancel)
        cancel_token_cancel(tok, ECANCELED);
    else
        sem_post(&sem);
    pthread_join(th, NULL);
    double dt = now_s() - t0;
    cancel_token_unref(tok);
    return dt;
}

int main(void)
{
    sem_init(&sem, 0, 0);
    sem_init(&ready, 0, 0);
    int ok = 1, value;

    double dt = one(1);
    sem_getvalue(&sem, &value);
    printf("cancelled waiter: %d (%s) after %.1f ms, semaphore value %d\n", result,
           result_errno == ECANCELED ? "ECANCELED" : "wrong errno", dt * 1e3, value);
    ok &= result == -1 && result_errno == ECANCELED && dt >= 0 && dt < 2.0 && value == 0;

    dt = one(0);
    sem_getvalue(&sem, &value);
    printf("posted waiter: %d after %.1f ms, semaphore value %d\n", result, dt * 1e3, value);
    ok &= result == 0 && dt >= 0 && dt < 2.0 && value == 0;

    printf("sem_fallback: %s\n", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}

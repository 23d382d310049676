/*
 * libip_ctor.c - a library whose constructor starts a thread that makes a
 * plain read under a cancelled current token, for check_interpose: it is
 * linked after libcancel-interpose.so, so that the dynamic loader runs this
 * constructor before the interposer's (LD_DEBUG=init shows the order).
 * The interposer must serve that read all the same (it finds the libc
 * functions lazily): ECANCELED, and the byte left in the pipe.
 */
#include <cancel.h>

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <unistd.h>

long ip_ctor_result = -2;
int ip_ctor_errno;
int ip_ctor_pipe = -1;
static pthread_t thread;
static bool started;

static void *ctor_thread(void *arg)
{
    int *p = arg;
    cancel_token_t *t = cancel_token_new();
    cancel_token_cancel(t, 0);
    cancel_token_t *prev = cancel_enter(t);
    char c;
    errno = 0;
    ip_ctor_result = read(p[0], &c, 1);
    ip_ctor_errno = errno;
    cancel_leave(prev);
    cancel_token_unref(t);
    return NULL;
}

__attribute__((constructor)) static void ip_ctor(void)
{
    static int p[2];
    if (pipe(p) != 0 || write(p[1], "c", 1) != 1)
        return;
    ip_ctor_pipe = p[0];
    started = pthread_create(&thread, NULL, ctor_thread, p) == 0;
}

/* Joins the constructor's thread, once (check_interpose's main, before
 * Check forks the tests: a test forked while the thread still held its
 * token would have LeakSanitizer report the token as leaked in the child,
 * where the thread's stack is no root; then the test that checks it). */
void ip_ctor_join(void);
void ip_ctor_join(void)
{
    static bool joined;
    if (!joined && started)
        pthread_join(thread, NULL);
    joined = true;
}

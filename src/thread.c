/*
 * thread.c - the library's own service threads (timer, signal hand-off).
 */
#include "internal.h"

#include <signal.h>

/*
 * Starts FN(ARG) on a detached thread that blocks every signal: it must
 * not take the application's signals, nor keep the process from exiting.
 * STACK_SIZE 0 keeps the default.  Returns 0 or pthread_create's error.
 */
int cancel__start_service_thread(void *(*fn)(void *), void *arg, size_t stack_size)
{
    sigset_t all, old;
    sigfillset(&all);
    /* The new thread inherits the mask in force at pthread_create. */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (stack_size)
        pthread_attr_setstacksize(&attr, stack_size);
    pthread_t thread;
    int rc = pthread_create(&thread, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

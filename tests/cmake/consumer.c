/*
 * consumer.c - the program the CMake and Meson consumer projects build
 * against an installed libcancel: a token, a callback, a cancel.
 */
#include <cancel.h>
#include <errno.h>
#include <stdio.h>

static void on_cancel(void *arg, int reason)
{
    if (reason == ECANCELED)
        ++*(int *)arg;
}

int main(void)
{
    cancel_token_t *t = cancel_token_new();
    if (!t)
        return 1;
    int ran = 0;
    cancel_callback_t cb;
    if (cancel_callback_add(&cb, t, on_cancel, &ran) != 0)
        return 1;
    cancel_token_cancel(t, ECANCELED);
    int ok = cancel_token_is_cancelled(t) && ran == 1;
    cancel_callback_remove(&cb);
    cancel_token_unref(t);
    printf("consumer: %s\n", ok ? "cancelled, callback ran once" : "FAILED");
    return ok ? 0 : 1;
}

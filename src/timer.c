/*
 * timer.c - deadlines: one library timer thread, a heap of deadlines.
 */
#include "internal.h"

void cancel__timer_forget(cancel_token_t *t, struct token_ext *ext)
{
    (void)t;
    (void)ext;
}

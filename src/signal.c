/*
 * signal.c - cancel tokens on signal delivery.
 */
#include "internal.h"

void cancel__signal_forget(cancel_token_t *t, struct token_ext *ext)
{
    (void)t;
    (void)ext;
}

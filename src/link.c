/*
 * link.c - linked tokens (cancel_token_any).
 */
#include "internal.h"

void cancel__link_forget(cancel_token_t *t, struct token_ext *ext)
{
    (void)t;
    (void)ext;
}

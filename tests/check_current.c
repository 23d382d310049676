#include "internal.h"
#include "testutil.h"
START_TEST(smoke) { cancel_token_t *t = cancel_token_new(); ck_assert(!cancel_token_is_cancelled(t)); cancel_token_unref(t);} END_TEST
int main(void){ Suite *s = suite_create("current"); TCase *tc = tcase_create("core"); tcase_add_test(tc, smoke); suite_add_tcase(s, tc); return tu_run_suite(s);}

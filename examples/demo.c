/*
 * demo.c - libcancel in one run: a token tree, callbacks, a subtree
 * cancelled, and what propagated where.
 */
#include <cancel.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

struct node {
    const char *name;
    cancel_token_t *token;
    cancel_callback_t on_cancel;
};

static void announce(void *arg, int reason)
{
    struct node *n = arg;
    printf("  callback: %-10s cancelled (%s)\n", n->name, strerror(reason));
}

static void show(struct node *nodes, int n)
{
    for (int i = 0; i < n; i++)
        printf("  %-10s %s\n", nodes[i].name,
               cancel_token_is_cancelled(nodes[i].token) ? "CANCELLED" : "live");
}

int main(void)
{
    /*        server
     *       /      \
     *   conn-1    conn-2
     *   /    \         \
     * read  write      read    */
    struct node nodes[6] = {
        {"server", NULL, {{0}}}, {"conn-1", NULL, {{0}}}, {"conn-2", NULL, {{0}}},
        {"c1-read", NULL, {{0}}}, {"c1-write", NULL, {{0}}}, {"c2-read", NULL, {{0}}},
    };
    static const int parent[6] = {-1, 0, 0, 1, 1, 2};
    for (int i = 0; i < 6; i++) {
        nodes[i].token = parent[i] < 0 ? cancel_token_new()
                                       : cancel_token_child(nodes[parent[i]].token);
        if (!nodes[i].token) {
            perror("cancel_token_child");
            return 1;
        }
        cancel_callback_add(&nodes[i].on_cancel, nodes[i].token, announce, &nodes[i]);
    }

    printf("A tree of six tokens, a callback on each:\n");
    show(nodes, 6);

    printf("\nCancel conn-1 (the client hung up):\n");
    CANCEL_TOKEN_CANCEL(nodes[1].token, ECONNRESET);
    show(nodes, 6);

    const char *file;
    int line;
    if (cancel_token_cancelled_from(nodes[3].token, NULL, &file, &line) == 0)
        printf("  c1-read was cancelled from %s:%d, reason %s\n", file, line,
               strerror(cancel_token_reason(nodes[3].token)));

    printf("\nCancel server (shutdown): conn-1 keeps its first reason:\n");
    cancel_token_cancel(nodes[0].token, ECANCELED);
    show(nodes, 6);
    printf("  conn-1 reason: %s, conn-2 reason: %s\n",
           strerror(cancel_token_reason(nodes[1].token)),
           strerror(cancel_token_reason(nodes[2].token)));

    cancel_token_t *late = cancel_token_child(nodes[0].token);
    printf("\nA child born under the cancelled server: %s (%s)\n",
           cancel_token_is_cancelled(late) ? "CANCELLED" : "live",
           strerror(cancel_token_reason(late)));
    cancel_token_unref(late);
    for (int i = 5; i >= 0; i--) {
        cancel_callback_remove(&nodes[i].on_cancel);
        cancel_token_unref(nodes[i].token);
    }
    printf("\nAll tokens released.\n");
    return 0;
}

/*
 * dlopen_app.c - loads the installed libcancel.so with dlopen (as plugins
 * and language bindings do) and uses tokens from two threads.  The library
 * keeps its token cache in initial-exec TLS (src/token_mem.c), which a
 * dlopen'ed library may only do within glibc's static TLS surplus: this
 * proves it loads and works.  Run by tests/install.sh.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

typedef void *(*new_fn)(void);
typedef void *(*child_fn)(void *);
typedef void (*unref_fn)(void *);
typedef _Bool (*cancel_fn_t)(void *, int);
typedef _Bool (*is_cancelled_fn)(const void *);

static new_fn token_new;
static child_fn token_child;
static unref_fn token_unref;
static cancel_fn_t token_cancel;
static is_cancelled_fn token_is_cancelled;

static void *churn(void *root)
{
    for (int i = 0; i < 10000; i++)
        token_unref(token_child(root));
    void *last = token_child(root);
    return last;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: dlopen_app LIBRARY\n");
        return 2;
    }
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    token_new = (new_fn)dlsym(lib, "cancel_token_new");
    token_child = (child_fn)dlsym(lib, "cancel_token_child");
    token_unref = (unref_fn)dlsym(lib, "cancel_token_unref");
    token_cancel = (cancel_fn_t)dlsym(lib, "cancel_token_cancel");
    token_is_cancelled = (is_cancelled_fn)dlsym(lib, "cancel_token_is_cancelled");
    if (!token_new || !token_child || !token_unref || !token_cancel || !token_is_cancelled) {
        fprintf(stderr, "dlsym: %s\n", dlerror());
        return 1;
    }
    void *root = token_new();
    pthread_t th;
    void *from_thread = NULL;
    if (!root || pthread_create(&th, NULL, churn, root) != 0)
        return 1;
    void *from_main = churn(root);
    pthread_join(th, &from_thread);
    if (!from_main || !from_thread || !token_cancel(root, 0) ||
        !token_is_cancelled(from_main) || !token_is_cancelled(from_thread)) {
        fprintf(stderr, "tokens misbehave after dlopen\n");
        return 1;
    }
    token_unref(from_main);
    token_unref(from_thread);
    token_unref(root);
    puts("dlopen ok");
    return 0;
}

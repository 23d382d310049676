/*
 * token_mem.c - where tokens' memory comes from: a small per-thread cache
 * of freed token blocks in front of malloc.
 *
 * A child created and released per request, per task or per wait is the
 * pattern tokens exist for, and on glibc a malloc+free pair costs about as
 * much as the rest of create+release (two lock round trips) put together.
 * So a thread keeps up to CACHE_MAX freed blocks (2 KiB), reused last in,
 * first out while they are warm, and hands them back to malloc when it
 * exits.  A block freed on another thread than the one that made it joins
 * the freeing thread's cache: every block is malloc's, any thread may free
 * it.  The bound keeps the promise that a root outliving a million
 * released children holds no memory for them.
 *
 * Memory checkers must see each token's lifetime on its own: the cache is
 * compiled out under AddressSanitizer and ThreadSanitizer, bypassed under
 * valgrind, and white-box tests that count allocations turn it off
 * (cancel__token_cache_off).
 */
#include "internal.h"

#include <stdlib.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define CACHE_COMPILED_OUT 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CACHE_COMPILED_OUT 1
#endif

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define UNDER_VALGRIND() RUNNING_ON_VALGRIND
#else
#define UNDER_VALGRIND() 0
#endif

_Atomic bool cancel__token_cache_off;

#ifdef CACHE_COMPILED_OUT

void *cancel__token_mem_alloc(void)
{
    return malloc(sizeof(cancel_token_t));
}

void cancel__token_mem_free(void *block)
{
    free(block);
}

#else

enum { CACHE_MAX = 32 };

struct cached_block {
    struct cached_block *next;
};

struct token_cache {
    struct cached_block *head;
    unsigned count;
    bool registered;    /* its thread-exit destructor is armed */
    bool closed;        /* the thread is exiting, or registration failed */
};

/* initial-exec: a plain %fs-relative access instead of a __tls_get_addr
 * call on every alloc and free; 16 bytes of static TLS, which glibc keeps
 * room for even when the library is loaded with dlopen. */
static __thread struct token_cache cache __attribute__((tls_model("initial-exec")));
static pthread_key_t cache_key;
static bool cache_key_ok;
static pthread_once_t cache_key_once = PTHREAD_ONCE_INIT;

/* Thread exit: the blocks go back to malloc, and later frees on this
 * thread (other destructors may release tokens) bypass the cache. */
static void cache_destroy(void *arg)
{
    struct token_cache *c = arg;
    c->closed = true;
    while (c->head) {
        struct cached_block *b = c->head;
        c->head = b->next;
        free(b);
    }
    c->count = 0;
}

static void cache_key_create(void)
{
    cache_key_ok = pthread_key_create(&cache_key, cache_destroy) == 0;
    if (UNDER_VALGRIND())
        cancel__token_cache_off = true;
}

void *cancel__token_mem_alloc(void)
{
    struct cached_block *b = cache.head;
    if (b) {
        cache.head = b->next;
        cache.count--;
        return b;
    }
    return malloc(sizeof(cancel_token_t));
}

/* Arms the thread-exit destructor, once per thread; a thread where that
 * fails never caches. */
static void cache_register(void)
{
    int saved = errno;
    pthread_once(&cache_key_once, cache_key_create);
    cache.registered = true;
    if (!cache_key_ok || pthread_setspecific(cache_key, &cache) != 0)
        cache.closed = true;
    errno = saved;
}

void cancel__token_mem_free(void *block)
{
    if (!cache.registered)
        cache_register();
    if (cache.closed || cache.count >= CACHE_MAX ||
        atomic_load_explicit(&cancel__token_cache_off, memory_order_relaxed)) {
        free(block);
        return;
    }
    struct cached_block *b = block;
    b->next = cache.head;
    cache.head = b;
    cache.count++;
}

#endif

/* For tests: how many blocks this thread keeps. */
unsigned cancel__token_cache_count(void)
{
#ifdef CACHE_COMPILED_OUT
    return 0;
#else
    return cache.count;
#endif
}

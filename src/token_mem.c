/*
 * token_mem.c - where tokens' memory comes from: 64-byte blocks, each a
 * cache line of its own, carved from 4 KiB slabs, with a small per-thread
 * cache of freed blocks in front.
 *
 * Why aligned blocks: malloc's chunks for a 56-byte token are 64 bytes
 * apart but start at any multiple of 16, so a token may straddle two cache
 * lines and share one with its neighbour.  Child create and release write
 * the parent's first 24 bytes (its lock, hold and child list): with two
 * roots that malloc put side by side, 48 bytes into a line, two threads
 * each making children under its own root wrote one line and ran 2-3x
 * slower than one thread (bench_token's scale_child_own_*); with every
 * token on its own line they run as fast as one.
 *
 * Slabs.  A thread carves blocks from its current slab in address order.
 * The slab counts its blocks not yet given back (LIVE, in the spare bytes
 * after block 0's token): all 64 from the start; the carver gives back the
 * ones it never carved when it moves on to a new slab or exits; any thread
 * gives back a block it frees.  The one that brings LIVE to zero frees the
 * slab, so a root that outlived a million released children holds no
 * memory for them.  The price: a token still alive keeps its whole slab,
 * at most 4 KiB per token that outlives all 63 of its neighbours (tokens
 * made together tend to die together, so it is 64 B a token in the usual
 * patterns: a child per request, per task, per wait).
 *
 * The cache.  A child created and released per request is the pattern
 * tokens exist for, and a slab's atomic count (or malloc) per pair would
 * cost a third of create+release.  So a thread keeps up to CACHE_MAX freed
 * blocks (2 KiB), reused last in, first out while they are warm, and gives
 * them back when it exits.  A block freed on another thread than the one
 * that carved it joins the freeing thread's cache: any thread may free any
 * block.
 *
 * Memory checkers must see each token's lifetime on its own: slabs and
 * cache are compiled out under AddressSanitizer and ThreadSanitizer,
 * bypassed under valgrind, and white-box tests that count allocations turn
 * them off (cancel__token_cache_off): each token is then a malloc block of
 * its own, marked so that a free finds where it came from.
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
bool cancel__under_valgrind;

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

enum { BLOCK = 64, SLAB_BLOCKS = 64, SLAB_BYTES = BLOCK * SLAB_BLOCKS, CACHE_MAX = 32 };
_Static_assert(sizeof(cancel_token_t) <= BLOCK - 8, "a token leaves its block's tail free");

/* The last 8 bytes of every block, which no token field reaches. */
struct block_tail {
    uint32_t index;         /* which block of its slab, or OWN_MALLOC */
    _Atomic uint32_t live;  /* block 0 only: its slab's blocks not given back */
};
enum { OWN_MALLOC = UINT32_MAX };

static struct block_tail *tail_of(void *block)
{
    return (struct block_tail *)((char *)block + BLOCK - sizeof(struct block_tail));
}

struct cached_block {
    struct cached_block *next;
};

struct token_cache {
    struct cached_block *head;
    unsigned count;
    unsigned carved;    /* blocks of SLAB handed out */
    char *slab;         /* the slab this thread carves, or NULL */
    bool registered;    /* its thread-exit destructor is armed */
    bool closed;        /* the thread is exiting, or registration failed */
};

/* initial-exec: a plain %fs-relative access instead of a __tls_get_addr
 * call on every alloc and free; 32 bytes of static TLS, which glibc keeps
 * room for even when the library is loaded with dlopen. */
static __thread struct token_cache cache __attribute__((tls_model("initial-exec")));
static pthread_key_t cache_key;
static bool cache_key_ok;
static pthread_once_t cache_key_once = PTHREAD_ONCE_INIT;

/* Gives N blocks of the slab at BASE back; the last one frees it.
 * (S1) acq_rel: each giver's writes to its blocks happen before the free
 * by whichever giver comes last; pairs with itself in the other givers. */
static void slab_give_back(char *base, uint32_t n)
{
    if (atomic_fetch_sub_explicit(&tail_of(base)->live, n, memory_order_acq_rel) == n)
        free(base);
}

static void block_give_back(void *block)
{
    uint32_t index = tail_of(block)->index;
    if (index == OWN_MALLOC)
        free(block);
    else
        slab_give_back((char *)block - (size_t)index * BLOCK, 1);
}

/* The current slab's blocks never carved go back with it. */
static void slab_abandon(void)
{
    if (cache.slab && cache.carved < SLAB_BLOCKS)
        slab_give_back(cache.slab, SLAB_BLOCKS - cache.carved);
    cache.slab = NULL;
}

/* Thread exit: the blocks go back, and later allocations and frees on this
 * thread (other destructors may make and release tokens) bypass slab and
 * cache. */
static void cache_destroy(void *arg)
{
    struct token_cache *c = arg;
    c->closed = true;
    while (c->head) {
        struct cached_block *b = c->head;
        c->head = b->next;
        block_give_back(b);
    }
    c->count = 0;
    slab_abandon();
}

static void cache_key_create(void)
{
    cache_key_ok = pthread_key_create(&cache_key, cache_destroy) == 0;
}

/* At load time, so that a test may still turn slabs and cache back on
 * under valgrind (token_mem.o is in every link: tokens need it). */
__attribute__((constructor)) static void token_mem_init(void)
{
    if (UNDER_VALGRIND()) {
        cancel__under_valgrind = true;
        cancel__token_cache_off = true;
    }
}

/* Arms the thread-exit destructor, once per thread; a thread where that
 * fails never caches nor carves. */
static void cache_register(void)
{
    int saved = errno;
    pthread_once(&cache_key_once, cache_key_create);
    cache.registered = true;
    if (!cache_key_ok || pthread_setspecific(cache_key, &cache) != 0)
        cache.closed = true;
    errno = saved;
}

static void *own_malloc_block(void)
{
    void *block = malloc(BLOCK);
    if (block)
        tail_of(block)->index = OWN_MALLOC;
    return block;
}

static bool bypassed(void)
{
    /* Relaxed: it only picks between two correct paths. */
    return atomic_load_explicit(&cancel__token_cache_off, memory_order_relaxed);
}

/* The cache is empty: the next block of this thread's slab. */
__attribute__((noinline)) static void *carve(void)
{
    if (!cache.slab || cache.carved == SLAB_BLOCKS) {
        if (!cache.registered)
            cache_register();
        if (cache.closed || bypassed())
            return own_malloc_block();
        char *slab = aligned_alloc(BLOCK, SLAB_BYTES);
        if (!slab)
            return NULL;
        slab_abandon();
        atomic_init(&tail_of(slab)->live, SLAB_BLOCKS);
        cache.slab = slab;
        cache.carved = 0;
    }
    char *block = cache.slab + (size_t)cache.carved * BLOCK;
    tail_of(block)->index = cache.carved++;
    return block;
}

void *cancel__token_mem_alloc(void)
{
    struct cached_block *b = cache.head;
    if (b) {
        cache.head = b->next;
        cache.count--;
        return b;
    }
    if (__builtin_expect(bypassed(), 0))
        return own_malloc_block();
    return carve();
}

void cancel__token_mem_free(void *block)
{
    if (!cache.registered)
        cache_register();
    if (cache.closed || cache.count >= CACHE_MAX || bypassed()) {
        block_give_back(block);
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

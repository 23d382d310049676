/*
 * malloc_hook.h - a malloc interposer for white-box tests (include it in
 * exactly one translation unit of a test program).
 *
 * The program defines malloc, calloc, realloc and free itself and forwards
 * to the next definition (glibc's, or a sanitizer's: dlsym(RTLD_NEXT)
 * finds whichever comes after the executable), so it works in plain,
 * ASan and TSan builds alike.  Everything is per thread, so Check's and
 * other threads' allocations never disturb a measurement:
 *
 *   mh_fail_after(n)   the n-th allocation call from now on this thread
 *                      fails with ENOMEM (0 disarms);
 *   mh_count_begin()   start counting this thread's allocation calls;
 *   mh_count_end()     stop and return the count.
 */
#ifndef CANCEL_MALLOC_HOOK_H
#define CANCEL_MALLOC_HOOK_H

#include <dlfcn.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

/* The sanitizers' runtimes allocate while they start, before they can
 * take instrumented calls: the hook itself is not instrumented. */
#define MH_NOSAN __attribute__((no_sanitize_thread, no_sanitize_address, noinline))

static void *(*mh_real_malloc)(size_t);
static void *(*mh_real_calloc)(size_t, size_t);
static void *(*mh_real_realloc)(void *, size_t);
static void (*mh_real_free)(void *);

/* Volatile: the compiler assumes a builtin malloc touches no other memory,
 * so plain variables would be cached across the calls that count them. */
static __thread volatile long mh_countdown; /* > 0: the call that brings it to 0 fails */
static __thread volatile long mh_calls;
static __thread volatile bool mh_counting;

/* dlsym may allocate before the real functions are known: serve those
 * few early requests from a static arena that is never freed. */
static _Alignas(16) unsigned char mh_boot[16384];
static size_t mh_boot_used;
static bool mh_initing;

MH_NOSAN static void *mh_boot_alloc(size_t n)
{
    size_t need = (n + 15) & ~(size_t)15;
    if (mh_boot_used + need > sizeof mh_boot)
        return NULL;
    void *p = mh_boot + mh_boot_used;
    mh_boot_used += need;
    return p;
}

MH_NOSAN static bool mh_is_boot(const void *p)
{
    return (const unsigned char *)p >= mh_boot &&
           (const unsigned char *)p < mh_boot + sizeof mh_boot;
}

MH_NOSAN static void mh_init(void)
{
    if (mh_real_free || mh_initing)
        return;
    mh_initing = true;
    mh_real_malloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
    mh_real_calloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "calloc");
    mh_real_realloc = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "realloc");
    mh_real_free = (void (*)(void *))dlsym(RTLD_NEXT, "free");
    mh_initing = false;
}

__attribute__((constructor)) static void mh_constructor(void)
{
    mh_init();
}

MH_NOSAN static bool mh_should_fail(void)
{
    if (mh_counting)
        mh_calls++;
    return mh_countdown > 0 && --mh_countdown == 0;
}

void *malloc(size_t n);
void *calloc(size_t k, size_t n);
void *realloc(void *p, size_t n);
void free(void *p);

MH_NOSAN void *malloc(size_t n)
{
    if (mh_should_fail()) {
        errno = ENOMEM;
        return NULL;
    }
    mh_init();
    if (!mh_real_malloc)
        return mh_boot_alloc(n);
    return mh_real_malloc(n);
}

MH_NOSAN void *calloc(size_t k, size_t n)
{
    if (mh_should_fail()) {
        errno = ENOMEM;
        return NULL;
    }
    mh_init();
    if (!mh_real_calloc)
        return mh_boot_alloc(k * n); /* the arena is zeroed and never reused */
    return mh_real_calloc(k, n);
}

MH_NOSAN void *realloc(void *p, size_t n)
{
    if (mh_should_fail()) {
        errno = ENOMEM;
        return NULL;
    }
    mh_init();
    if (mh_is_boot(p)) {
        void *q = malloc(n);
        size_t room = (size_t)(mh_boot + sizeof mh_boot - (unsigned char *)p);
        if (q) /* the old size is unknown: copy what the arena can hold */
            memcpy(q, p, n < room ? n : room);
        return q;
    }
    if (!mh_real_realloc)
        return mh_boot_alloc(n);
    return mh_real_realloc(p, n);
}

MH_NOSAN void free(void *p)
{
    if (!p || mh_is_boot(p))
        return;
    mh_init();
    mh_real_free(p);
}

/* The N-th allocation call from now on (this thread) fails; 0 disarms. */
static inline void mh_fail_after(long n)
{
    mh_countdown = n;
}

static inline void mh_count_begin(void)
{
    mh_calls = 0;
    mh_counting = true;
}

static inline long mh_count_end(void)
{
    mh_counting = false;
    return mh_calls;
}

#endif

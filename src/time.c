/*
 * time.c - CLOCK_MONOTONIC arithmetic shared by deadlines and waits.
 */
#include "internal.h"

struct timespec cancel__now(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now;
}

bool cancel__timespec_valid(const struct timespec *t)
{
    return t && t->tv_nsec >= 0 && t->tv_nsec < 1000000000L;
}

/* Saturates instead of overflowing: a huge timeout means "never", a huge
 * negative one "long past". */
struct timespec cancel__add_ns(struct timespec t, int64_t ns)
{
    const int64_t billion = 1000000000;
    int64_t sec = ns / billion, nsec = ns % billion;
    if (nsec < 0) {
        nsec += billion;
        sec--;
    }
    int64_t total;
    if (__builtin_add_overflow((int64_t)t.tv_sec, sec, &total) ||
        (total == INT64_MAX && t.tv_nsec + nsec >= billion)) {
        if (sec >= 0) {
            t.tv_sec = INT64_MAX;
            t.tv_nsec = billion - 1;
        } else {
            t.tv_sec = INT64_MIN;
            t.tv_nsec = 0;
        }
        return t;
    }
    t.tv_sec = (time_t)total;
    t.tv_nsec += nsec;
    if (t.tv_nsec >= billion) {
        t.tv_nsec -= billion;
        t.tv_sec++;
    }
    return t;
}

int cancel__timespec_cmp(const struct timespec *a, const struct timespec *b)
{
    if (a->tv_sec != b->tv_sec)
        return a->tv_sec < b->tv_sec ? -1 : 1;
    if (a->tv_nsec != b->tv_nsec)
        return a->tv_nsec < b->tv_nsec ? -1 : 1;
    return 0;
}

/* Nanoseconds from now until AT (<= 0 when past), saturating at INT64_MAX
 * and INT64_MIN: any valid timespec, {INT64_MIN, 0} and {INT64_MAX,
 * 999999999} included, gives a defined answer (no signed overflow). */
int64_t cancel__ns_until(const struct timespec *at)
{
    const int64_t billion = 1000000000;
    struct timespec now = cancel__now();
    int64_t sec;
    if (__builtin_sub_overflow((int64_t)at->tv_sec, (int64_t)now.tv_sec, &sec))
        return at->tv_sec < now.tv_sec ? INT64_MIN : INT64_MAX;
    if (sec > INT64_MAX / billion - 1)
        return INT64_MAX;
    if (sec < INT64_MIN / billion + 1)
        return INT64_MIN;
    /* |sec * billion| < 2^63 - 2 * billion; the nanosecond difference is
     * within (-billion, billion). */
    return sec * billion + ((int64_t)at->tv_nsec - (int64_t)now.tv_nsec);
}

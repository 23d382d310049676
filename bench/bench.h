/*
 * bench.h - the harness shared by the benchmark programs (C and C++).
 *
 * Every figure is printed as one line, "name value unit", and is the
 * median of at least five repetitions.  Ratios ("ours / anchor") are
 * printed by the program that measured both, or computed by bench/run.sh
 * from bench/ratios.txt when the anchor is a separate (C++) program.
 */
#ifndef CANCEL_BENCH_H
#define CANCEL_BENCH_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define BENCH_REPS 7

static inline int64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Sorts V in place and returns the value at quantile Q (0.5: median). */
static inline double bench_quantile(double *v, int n, double q)
{
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    int i = (int)(q * (n - 1) + 0.5);
    return v[i];
}

static inline double bench_median(double *v, int n)
{
    return bench_quantile(v, n, 0.5);
}

static inline void bench_print(const char *name, double value, const char *unit)
{
    printf("%s %.3f %s\n", name, value, unit);
    fflush(stdout);
}

/* Prints NAME's ratio ours/anchor as "NAME value x". */
static inline void bench_ratio(const char *name, double ours, double anchor)
{
    printf("%s %.3f x\n", name, anchor > 0 ? ours / anchor : 0.0);
    fflush(stdout);
}

/* Keeps the compiler from deleting a computation whose result is unused. */
#define BENCH_KEEP(x) __asm__ volatile("" : : "r"(x) : "memory")

#endif

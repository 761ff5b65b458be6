/* The fastest a bag kernel could possibly run on this machine: read one float
 * from every 64-byte line of every looked-up row, in index order, with the
 * next rows prefetched D rows ahead, and nothing else (no adds, no stores).
 * A bag-sum kernel reads exactly these lines, so its time cannot fall below
 * the best of these medians; a peer's time divided by this one is the most
 * any kernel could gain over that peer.
 *
 *   cc -O2 -o row_read_limit row_read_limit.c
 *   ./row_read_limit T d L bags [hugepages 0|1]
 *
 * The table is float32, T x d, 2 MiB aligned; hugepages=1 (the default)
 * asks for transparent huge pages with madvise, as NumPy does for large
 * arrays.  Indices are uniform in [0, T), L per bag, fixed seed.  Prints the
 * median of 15 runs for each prefetch distance D in {0, 4, 8, 16, 32, 64}. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

enum { RUNS = 15, LINE_FLOATS = 16 };

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static float touch_rows(const float *w, long d, const int64_t *idx, long n, int distance) {
    long lines = (d + LINE_FLOATS - 1) / LINE_FLOATS;
    float s = 0;
    for (long k = 0; k < n; k++) {
        if (distance > 0 && k + distance < n) {
            const char *ahead = (const char *)(w + idx[k + distance] * d);
            for (long l = 0; l < lines; l++)
                __builtin_prefetch(ahead + 64 * l, 0, 3);
        }
        const float *row = w + idx[k] * d;
        for (long l = 0; l < lines; l++)
            s += row[LINE_FLOATS * l];
    }
    return s;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s T d L bags [hugepages 0|1]\n", argv[0]);
        return 2;
    }
    long T = atol(argv[1]), d = atol(argv[2]), L = atol(argv[3]), bags = atol(argv[4]);
    int huge = argc > 5 ? atoi(argv[5]) : 1;
    size_t bytes = ((size_t)T * d * sizeof(float) + (2u << 20) - 1) / (2u << 20) * (2u << 20);
    float *w = aligned_alloc(2u << 20, bytes);
    long n = L * bags;
    int64_t *idx = malloc(n * sizeof(int64_t));
    if (!w || !idx) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    if (huge)
        madvise(w, bytes, MADV_HUGEPAGE);
    for (long i = 0; i < T * d; i++)
        w[i] = 1.0f;
    uint64_t state = 0x9E3779B97F4A7C15u;
    for (long k = 0; k < n; k++) {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17;
        idx[k] = (int64_t)(state % (uint64_t)T);
    }
    static const int distances[] = {0, 4, 8, 16, 32, 64};
    volatile float sink;
    printf("T=%ld d=%ld L=%ld bags=%ld rows=%ld hugepages=%d: median ms by prefetch distance:",
           T, d, L, bags, n, huge);
    for (unsigned v = 0; v < sizeof distances / sizeof *distances; v++) {
        double ms[RUNS];
        for (int r = 0; r < RUNS; r++) {
            double t = now();
            sink = touch_rows(w, d, idx, n, distances[v]);
            ms[r] = (now() - t) * 1e3;
        }
        qsort(ms, RUNS, sizeof *ms, by_value);
        printf(" D%d %.2f", distances[v], ms[RUNS / 2]);
    }
    printf("\n");
    (void)sink;
    free(idx);
    free(w);
    return 0;
}

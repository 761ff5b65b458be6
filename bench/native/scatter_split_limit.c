/* How far two threads can speed up a float32 scatter-add on this machine:
 * the same memory traffic as fastembed_ext's split (each thread streams its
 * half of the gradient and adds each of its rows into a random table row,
 * prefetching the destination 8 updates ahead), and nothing else: no check
 * for a row the other half also names, nothing deferred, nothing followed,
 * no pool (the caller runs the first half, a thread started for the call
 * the second).
 *
 * Where the two halves name the same row their adds race, so the table it
 * writes is scratch: time it on a copy, never read the result.  A split that
 * keeps each row's updates in index order does all of this work and more, so
 * its two-thread time cannot fall below this one's.
 *
 *   cc -O3 -shared -fPIC -pthread -o libscatter_split_limit.so scatter_split_limit.c
 *
 * and call scatter_split_limit through ctypes (scripts/scatter_thread_limit.sh),
 * timed between the calls it bounds, on a table of the same shape. */
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>

typedef struct {
    float *table;
    const float *grad;
    const int64_t *idx;
    long d, lo, hi;
} half_t;

__attribute__((target("avx"))) static void *add_half(void *arg)
{
    const half_t *h = arg;
    long d = h->d, reach = d * 4 < 512 ? d * 4 : 512;
    for (long k = h->lo; k < h->hi; k++) {
        if (k + 8 < h->hi) {
            const char *ahead = (const char *)(h->table + h->idx[k + 8] * d);
            for (long o = 0; o < reach; o += 64) {
                __builtin_prefetch(ahead + o, 1, 3);
            }
        }
        float *dst = h->table + h->idx[k] * d;
        const float *src = h->grad + k * d;
        long j = 0;
        for (; j + 8 <= d; j += 8) {
            _mm256_storeu_ps(dst + j, _mm256_add_ps(_mm256_loadu_ps(src + j), _mm256_loadu_ps(dst + j)));
        }
        for (; j < d; j++) {
            dst[j] += src[j];
        }
    }
    return 0;
}

/* table[idx[k], :] += grad[k, :] for k < n, on 1 or 2 threads (halves of k).
 * Returns 0, or -1 when the second thread could not be started. */
int scatter_split_limit(float *table, long d, const float *grad, const int64_t *idx, long n,
                        int threads)
{
    half_t a = {table, grad, idx, d, 0, threads == 2 ? n / 2 : n};
    half_t b = {table, grad, idx, d, n / 2, n};
    pthread_t t;
    if (threads != 2) {
        add_half(&a);
        return 0;
    }
    if (pthread_create(&t, 0, add_half, &b) != 0) {
        return -1;
    }
    add_half(&a);
    pthread_join(t, 0);
    return 0;
}

/* The fastest a gather or bag kernel could run on this machine, measured on
 * the caller's own table: read one 32-bit word from every 64-byte line that
 * the looked-up rows occupy, in the order a kernel reads them, with the same
 * lines of the row `distance` entries ahead prefetched, and nothing else (no
 * adds, no stores).  A kernel reads at least these lines, so its time cannot
 * fall below the best of these times; a peer's time divided by that one is
 * the most any kernel could gain over that peer.
 *
 * Lines, not bytes: a row that does not start on a line (NumPy's large
 * arrays start 16 bytes into one) occupies one more line than its length
 * suggests, and every one of them is read and prefetched.
 *
 *   cc -O3 -shared -fPIC -o librow_read_limit.so row_read_limit.c
 *
 * and call row_read_limit_touch through ctypes (scripts/_read_limit.py), so
 * that the limit is timed on the same table, in the same process, between
 * the calls it bounds. */
#include <stdint.h>

/* One block of `len` bytes of each of a bag's rows, entries lo..hi: a line
 * every 64 bytes from the block's start and the line of its last word, which
 * is every line it occupies at any alignment; the same lines of the row
 * `distance` entries ahead prefetched. */
static inline __attribute__((always_inline)) uint32_t
touch_block(const char *w, long stride, const int64_t *idx, long lo, long hi, long n, long o0,
            long len, int distance)
{
    uint32_t s = 0;
    for (long k = lo; k < hi; k++) {
        if (k + distance < n) {
            const char *p = w + idx[k + distance] * stride + o0;
            for (long o = 0; o < len; o += 64)
                __builtin_prefetch(p + o, 0, 3);
            __builtin_prefetch(p + len - 1, 0, 3);
        }
        const char *r = w + idx[k] * stride + o0;
        for (long o = 0; o < len; o += 64)
            s |= *(const uint32_t *)(r + o);
        s |= *(const uint32_t *)(r + len - 4);
    }
    return s;
}

/* The rows idx[0 .. bags * per_bag) of the table w (rows `stride` bytes
 * apart, `row_bytes` of each read, a multiple of 4), bag by bag; within a
 * bag, block by block of `block` bytes (256: a bag-sum kernel's register
 * block of float32; row_bytes: whole rows) and, for each block, the bag's
 * entries in order.  Returns an or of the words read, so that no read can be
 * left out.  The common block sizes get loops of a constant length, as a
 * kernel's are. */
uint32_t row_read_limit_touch(const char *w, long stride, long row_bytes, const int64_t *idx,
                              long bags, long per_bag, long block, int distance)
{
    uint32_t s = 0;
    long n = bags * per_bag;
    for (long b = 0; b < bags; b++) {
        long lo = b * per_bag, hi = lo + per_bag;
        for (long o0 = 0; o0 < row_bytes; o0 += block) {
            long len = row_bytes - o0 < block ? row_bytes - o0 : block;
            switch (len) {
            case 256: s |= touch_block(w, stride, idx, lo, hi, n, o0, 256, distance); break;
            case 512: s |= touch_block(w, stride, idx, lo, hi, n, o0, 512, distance); break;
            case 1024: s |= touch_block(w, stride, idx, lo, hi, n, o0, 1024, distance); break;
            default: s |= touch_block(w, stride, idx, lo, hi, n, o0, len, distance); break;
            }
        }
    }
    return s;
}

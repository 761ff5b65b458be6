"""Command line: ``python -m fastembed_ext [info | check | bench]``.

With no arguments it runs the main job: on a BERT-sized table (30522 x 384
float32) and Zipf-distributed token ids it checks that the compiled kernels
give exactly NumPy's bits and prints how long each takes against NumPy.  It
exits non-zero if any check fails.
"""

import argparse
import json
import statistics
import sys
import time

import numpy as np

from . import _api

VOCAB = 30522
WIDTH = 384
BATCH = 32 * 512  # 32 sequences of 512 tokens


def zipf_ids(rng, num_rows, size, a=1.1):
    """Token ids whose frequencies follow Zipf(a), hot ids spread over the table."""
    ranks = np.arange(1, num_rows + 1, dtype=np.float64)
    p = ranks ** -a
    p /= p.sum()
    row_of_rank = rng.permutation(num_rows)
    return row_of_rank[rng.choice(num_rows, size=size, p=p)]


def special_values(rng, shape, dtype):
    """Random values with NaN payloads, -0.0, inf and subnormals mixed in."""
    x = rng.standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    n = flat.size
    if n == 0:
        return x
    finfo = np.finfo(dtype)
    picks = rng.integers(0, n, size=max(1, n // 50))
    specials = np.array([np.nan, -0.0, np.inf, -np.inf, finfo.smallest_subnormal,
                         -finfo.smallest_subnormal, finfo.max, finfo.tiny], dtype=dtype)
    flat[picks] = specials[rng.integers(0, specials.size, size=picks.size)]
    bits = flat.view(f"u{np.dtype(dtype).itemsize}")
    nan_at = picks[rng.integers(0, picks.size, size=max(1, picks.size // 4))]
    payload = rng.integers(1, 1 << 8, size=nan_at.size).astype(bits.dtype)
    exp_mask = {2: 0x7C00, 4: 0x7F800000, 8: 0x7FF0000000000000}[np.dtype(dtype).itemsize]
    bits[nan_at] = np.asarray(exp_mask, dtype=bits.dtype) | payload
    return x


def same_bits(a, b):
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return a.tobytes() == b.tobytes()


def _median_seconds(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _checks(rng, dtype, num_rows, width, batch, thread_counts, ids):
    """Yield (name, ok) for every compiled-vs-reference comparison on one workload."""
    w = special_values(rng, (num_rows, width), dtype)
    g = special_values(rng, (batch, width), dtype)
    base = special_values(rng, (num_rows, width), dtype)
    ref_gather = _api.gather(w, ids, backend="numpy")
    with np.errstate(all="ignore"):
        ref_scatter = _api.scatter_add(base.copy(), ids, g, backend="numpy")
        ref_back = _api.embedding_backward(g, ids, num_rows, padding_idx=0,
                                           scale_grad_by_freq=True, backend="numpy")
    for n in thread_counts:
        out = np.empty((batch, width), dtype)
        yield f"gather {dtype.__name__} threads={n}", same_bits(
            _api.gather(w, ids, out=out, backend="cython", num_threads=n), ref_gather)
        yield f"scatter_add {dtype.__name__} threads={n}", same_bits(
            _api.scatter_add(base.copy(), ids, g, backend="cython", num_threads=n), ref_scatter)
        yield f"embedding_backward {dtype.__name__} threads={n}", same_bits(
            _api.embedding_backward(g, ids, num_rows, padding_idx=0, scale_grad_by_freq=True,
                                    backend="cython", num_threads=n), ref_back)


def _require_compiled():
    if _api._kernels is None:
        print(f"fastembed_ext: the compiled extension is not available: {_api._KERNELS_ERROR}",
              file=sys.stderr)
        return False
    return True


def main_job(args):
    if not _require_compiled():
        return 1
    rng = np.random.default_rng(args.seed)
    threads = _api.get_num_threads()
    print(f"fastembed_ext {_api.__version__}: table {VOCAB} x {WIDTH} float32, "
          f"{BATCH} Zipf(1.1) token ids, {threads} thread(s) available")
    ids = zipf_ids(rng, VOCAB, BATCH).astype(np.int64)
    failures = 0
    counts = sorted({1, 2, threads})
    for name, ok in _checks(rng, np.float32, VOCAB, WIDTH, BATCH, counts, ids):
        failures += not ok
        if not ok:
            print(f"  MISMATCH {name}")
    small = zipf_ids(rng, 2000, 4096).astype(np.int32)
    for dtype in (np.float16, np.float64):
        for name, ok in _checks(rng, dtype, 2000, 64, 4096, counts, small):
            failures += not ok
            if not ok:
                print(f"  MISMATCH {name}")
    print(f"bit-for-bit against NumPy: {'all equal' if failures == 0 else f'{failures} MISMATCHES'}"
          f" (float16/32/64, threads {counts}, NaN payloads, -0.0, inf, subnormals)")

    w = rng.standard_normal((VOCAB, WIDTH)).astype(np.float32)
    g = rng.standard_normal((BATCH, WIDTH)).astype(np.float32)
    out = np.empty((BATCH, WIDTH), np.float32)
    gw = np.zeros((VOCAB, WIDTH), np.float32)
    rows = [
        ("gather(out=)", lambda: np.take(w, ids, axis=0, out=out),
         lambda n: _api.gather(w, ids, out=out, num_threads=n)),
        ("gather", lambda: np.take(w, ids, axis=0),
         lambda n: _api.gather(w, ids, num_threads=n)),
        ("scatter_add", lambda: np.add.at(gw, ids, g),
         lambda n: _api.scatter_add(gw, ids, g, num_threads=n)),
        ("embedding_backward", lambda: _api.embedding_backward(g, ids, VOCAB, backend="numpy"),
         lambda n: _api.embedding_backward(g, ids, VOCAB, num_threads=n)),
    ]
    header = f"{'operation':<20}{'numpy ms':>10}{'1 thread ms':>13}{'ratio':>8}"
    if threads > 1:
        header += f"{f'{threads} threads ms':>15}{'ratio':>8}"
    print()
    print(header)
    for name, ref, fast in rows:
        repeat = 3 if name in ("scatter_add", "embedding_backward") else 10
        t_ref = _median_seconds(ref, repeat)
        t1 = _median_seconds(lambda: fast(1), 10)
        line = f"{name:<20}{t_ref * 1e3:>10.2f}{t1 * 1e3:>13.2f}{t_ref / t1:>7.1f}x"
        if threads > 1:
            tn = _median_seconds(lambda: fast(threads), 10)
            line += f"{tn * 1e3:>15.2f}{t_ref / tn:>7.1f}x"
        print(line)
    print("(medians; ratio = NumPy time / fastembed_ext time, higher is faster)")
    return 1 if failures else 0


def check(args):
    """A wider bit-for-bit sweep: every dtype, index dtype, thread count and edge shape."""
    if not _require_compiled():
        return 1
    rng = np.random.default_rng(args.seed)
    failures = total = 0
    shapes = [(1, 1, 5), (7, 0, 3), (50, 3, 0), (300, 17, 4000), (2000, 64, 20000), (5, 130, 9000)]
    for dtype in (np.float16, np.float32, np.float64):
        for idx_dtype in (np.int32, np.int64, np.uint16):
            for num_rows, width, batch in shapes:
                ids = rng.integers(0, num_rows, size=batch).astype(idx_dtype)
                for name, ok in _checks(rng, dtype, num_rows, width, batch, (1, 2, 3, 8), ids):
                    total += 1
                    failures += not ok
                    if not ok:
                        print(f"MISMATCH {name} T={num_rows} d={width} B={batch} "
                              f"indices={np.dtype(idx_dtype)}")
    print(f"check: {total - failures} of {total} comparisons bit-identical to NumPy")
    return 1 if failures else 0


def show_info(args):
    print(json.dumps(_api.info(), indent=2, sort_keys=True, default=str))
    return 0


def bench(args):
    from . import _bench
    return _bench.run(json_path=args.json, plot_path=args.plot, quick=args.quick)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m fastembed_ext",
        description="Check fastembed_ext against NumPy bit for bit and time it.")
    parser.add_argument("--seed", type=int, default=0)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("info", help="what is installed and active").set_defaults(func=show_info)
    sub.add_parser("check", help="wide bit-for-bit sweep against NumPy").set_defaults(func=check)
    p = sub.add_parser("bench", help="compact speed sweep against NumPy (and torch if installed)")
    p.add_argument("--json", metavar="PATH", help="save the results as JSON")
    p.add_argument("--plot", metavar="PATH.png", help="draw speedup against d (needs matplotlib)")
    p.add_argument("--quick", action="store_true", help="a few cases only")
    p.set_defaults(func=bench)
    args = parser.parse_args(argv)
    func = getattr(args, "func", main_job)
    return func(args)


if __name__ == "__main__":
    sys.exit(main())

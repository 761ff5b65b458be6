"""Command line: ``python -m fastembed_ext [info | check | bench]``.

With no arguments it runs the main job: on a BERT-sized table (30522 x 384
float32) and Zipf-distributed token ids it checks that the compiled kernels
give exactly NumPy's bits and prints how long each takes against NumPy.  It
exits non-zero if any check fails.
"""

import argparse
import json
import sys
from typing import Any, Callable, Iterator

import numpy as np

import fastembed_ext as fe

from . import _runtime
from ._bench import explain_threads
from ._workloads import edge_values, median_seconds, same_bits, zipf_ids

VOCAB = 30522
WIDTH = 384
BATCH = 32 * 512  # 32 sequences of 512 tokens


def _comparisons(rng: np.random.Generator, dtype: Any, num_rows: int, width: int, batch: int,
                 thread_counts: Any, ids: np.ndarray[Any, Any]) -> Iterator[tuple[str, bool]]:
    """Yield (name, ok) for every compiled-vs-reference comparison on one workload."""
    w = edge_values(rng, dtype, (num_rows, width))
    g = edge_values(rng, dtype, (batch, width))
    base = edge_values(rng, dtype, (num_rows, width))
    ref_gather = fe.gather(w, ids, backend="numpy")
    ref_scatter = fe.scatter_add(base.copy(), ids, g, backend="numpy")
    ref_back = fe.embedding_backward(g, ids, num_rows, padding_idx=0, scale_grad_by_freq=True,
                                     backend="numpy")
    for n in thread_counts:
        out = np.empty((batch, width), dtype)
        yield f"gather {dtype.__name__} threads={n}", same_bits(
            fe.gather(w, ids, out=out, backend="cython", num_threads=n), ref_gather)
        yield f"scatter_add {dtype.__name__} threads={n}", same_bits(
            fe.scatter_add(base.copy(), ids, g, backend="cython", num_threads=n), ref_scatter)
        yield f"embedding_backward {dtype.__name__} threads={n}", same_bits(
            fe.embedding_backward(g, ids, num_rows, padding_idx=0, scale_grad_by_freq=True,
                                  backend="cython", num_threads=n), ref_back)


def runnable_others() -> int:
    return int(_runtime.kernels.runnable_others()) if _runtime.kernels is not None else 0


def _require_compiled() -> bool:
    if _runtime.kernels is None:
        print(f"fastembed_ext: {_runtime.unavailable_message()}", file=sys.stderr)
        return False
    return True


def main_job(args: argparse.Namespace) -> int:
    if not _require_compiled():
        return 1
    rng = np.random.default_rng(args.seed)
    threads = fe.get_num_threads()
    print(f"fastembed_ext {fe.__version__}: table {VOCAB} x {WIDTH} float32, "
          f"{BATCH} Zipf(1.1) token ids, {threads} thread(s) available")
    ids = zipf_ids(rng, VOCAB, BATCH)
    failures = 0
    counts = sorted({1, 2, threads})
    for name, ok in _comparisons(rng, np.float32, VOCAB, WIDTH, BATCH, counts, ids):
        failures += not ok
        if not ok:
            print(f"  MISMATCH {name}")
    small = zipf_ids(rng, 2000, 4096).astype(np.int32)
    for dtype in (np.float16, np.float64):
        for name, ok in _comparisons(rng, dtype, 2000, 64, 4096, counts, small):
            failures += not ok
            if not ok:
                print(f"  MISMATCH {name}")
    print(f"bit-for-bit against NumPy: {'all equal' if failures == 0 else f'{failures} MISMATCHES'}"
          f" (float16/32/64, threads {counts}, NaN payloads, -0.0, inf, subnormals)")

    w = rng.standard_normal((VOCAB, WIDTH)).astype(np.float32)
    g = rng.standard_normal((BATCH, WIDTH)).astype(np.float32)
    out = np.empty((BATCH, WIDTH), np.float32)
    gw = np.zeros((VOCAB, WIDTH), np.float32)
    # The NumPy peer of each row is the fastest NumPy spelling of the operation,
    # measured here: np.take(..., out=) with mode="raise" buffers the whole
    # result first and runs about half as fast as the others.
    rows: list[tuple[str, dict[str, Callable[[], Any]], Callable[[int], Any], Any]] = [
        ("gather(out=)", {"np.take(out=, mode='clip')":
                          lambda: np.take(w, ids, axis=0, out=out, mode="clip"),
                          "np.take(out=)": lambda: np.take(w, ids, axis=0, out=out)},
         lambda n: fe.gather(w, ids, out=out, num_threads=n), w),
        ("gather", {"np.take": lambda: np.take(w, ids, axis=0), "W[ids]": lambda: w[ids]},
         lambda n: fe.gather(w, ids, num_threads=n), w),
        ("scatter_add", {"np.add.at": lambda: np.add.at(gw, ids, g)},
         lambda n: fe.scatter_add(gw, ids, g, num_threads=n), gw),
        ("embedding_backward", {"np.zeros + np.add.at":
                                lambda: fe.embedding_backward(g, ids, VOCAB, backend="numpy")},
         lambda n: fe.embedding_backward(g, ids, VOCAB, num_threads=n), gw),
    ]
    header = f"{'operation':<20}{'fastest NumPy':<28}{'ms':>8}{'1 thread ms':>13}{'ratio':>8}"
    if threads > 1:
        header += f"{f'{threads} threads ms':>15}{'ratio':>8}"
    print()
    print(header)
    notes = []
    for name, peers, fast, table in rows:
        repeat = 3 if name in ("scatter_add", "embedding_backward") else 10
        timed = {peer: median_seconds(ref, budget=0, min_rounds=repeat) for peer, ref in peers.items()}
        peer = min(timed, key=lambda k: timed[k])
        t_ref = timed[peer]
        t1 = median_seconds(lambda: fast(1), budget=0, min_rounds=10)
        line = f"{name:<20}{peer:<28}{t_ref * 1e3:>8.2f}{t1 * 1e3:>13.2f}{t_ref / t1:>7.1f}x"
        if threads > 1:
            tn = median_seconds(lambda: fast(threads), budget=0, min_rounds=10)
            line += f"{tn * 1e3:>15.2f}{t_ref / tn:>7.1f}x"
            if tn > 0.95 * t1:
                why = explain_threads(name.split("(")[0], table, ids, threads)
                notes.append(f"{name}: {threads} threads did not pay"
                              + (f": it ran on one thread ({why})" if why
                                 else f" ({runnable_others()} other runnable task(s) now)"))
        print(line)
    print("(medians; ratio = fastest NumPy time / fastembed_ext time, higher is faster)")
    for note in notes:
        print(note)
    return 1 if failures else 0


def check(args: argparse.Namespace) -> int:
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
                for name, ok in _comparisons(rng, dtype, num_rows, width, batch, (1, 2, 3, 8),
                                             ids):
                    total += 1
                    failures += not ok
                    if not ok:
                        print(f"MISMATCH {name} T={num_rows} d={width} B={batch} "
                              f"indices={np.dtype(idx_dtype)}")
    print(f"check: {total - failures} of {total} comparisons bit-identical to NumPy")
    return 1 if failures else 0


def show_info(args: argparse.Namespace) -> int:
    print(json.dumps(fe.info(), indent=2, sort_keys=True, default=str))
    return 0


def bench(args: argparse.Namespace) -> int:
    from . import _bench
    if args.load:
        return _bench.run_load()
    return _bench.run(json_path=args.json, plot_path=args.plot, quick=args.quick)


def main(argv: list[str] | None = None) -> int:
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
    p.add_argument("--load", action="store_true",
                   help="default threads against one thread, quiet, beside a busy loop, "
                        "and with one process per CPU at once")
    p.set_defaults(func=bench)
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = getattr(args, "func", main_job)
    return func(args)


if __name__ == "__main__":
    sys.exit(main())

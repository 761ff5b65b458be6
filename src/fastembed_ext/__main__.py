"""Command line: ``python -m fastembed_ext [info | check | bench]``.

With no arguments it runs the main job: on a BERT-sized table (30522 x 384
float32) and Zipf-distributed token ids it checks that the compiled kernels
give exactly NumPy's bits and prints how long each takes against NumPy.  It
exits non-zero if any check fails.
"""

import argparse
import json
import os
import sys
from typing import Any, Callable, Iterator

import numpy as np

import fastembed_ext as fe

from . import _runtime
from ._bench import explain_threads, fastest, gather_peers, scatter_peers
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
    # measured here (np.take(..., out=) with mode="raise" is not one: it buffers
    # the whole result first and runs about half as fast as the others).
    peers = gather_peers(w, ids, out)
    rows: list[tuple[str, dict[str, Callable[[], Any]], Callable[[int], Any], Any]] = [
        ("gather(out=)", peers, lambda n: fe.gather(w, ids, out=out, num_threads=n), w),
        ("gather", peers, lambda n: fe.gather(w, ids, num_threads=n), w),
        ("scatter_add", scatter_peers(gw, ids, g),
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
        peer = fastest(timed)
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


CHECK_SHAPES = [(1, 1, 5), (7, 0, 3), (50, 3, 0), (300, 17, 4000), (2000, 64, 20000),
                (5, 130, 9000)]
CHECK_THREADS = (1, 2, 3, 8)
CHECK_DTYPES = (np.float16, np.float32, np.float64)
CHECK_INDEX_DTYPES = (np.int32, np.int64, np.uint16)


def check(args: argparse.Namespace) -> int:
    """A wider bit-for-bit sweep: every dtype, index dtype, thread count and edge shape."""
    if not _require_compiled():
        return 1
    rng = np.random.default_rng(args.seed)
    failures = total = 0
    groups: dict[tuple[str, str, str], list[int]] = {}   # (op, dtype, index dtype): [equal, all]
    for dtype in CHECK_DTYPES:
        for idx_dtype in CHECK_INDEX_DTYPES:
            for num_rows, width, batch in CHECK_SHAPES:
                ids = rng.integers(0, num_rows, size=batch).astype(idx_dtype)
                for name, ok in _comparisons(rng, dtype, num_rows, width, batch, CHECK_THREADS,
                                             ids):
                    total += 1
                    failures += not ok
                    tally = groups.setdefault(
                        (name.split()[0], np.dtype(dtype).name, np.dtype(idx_dtype).name), [0, 0])
                    tally[0] += ok
                    tally[1] += 1
                    if not ok:
                        print(f"MISMATCH {name} T={num_rows} d={width} B={batch} "
                              f"indices={np.dtype(idx_dtype)}")
    print(f"check: {total - failures} of {total} comparisons bit-identical to NumPy"
          + ("" if args.verbose else " (-v: what was covered)"))
    if args.verbose:
        shapes = ", ".join(f"{t}x{d} B={b}" for t, d, b in CHECK_SHAPES)
        print("covered: each compiled call against backend='numpy' (_reference), compared byte "
              "for byte")
        print("  operations   gather(out=), scatter_add, embedding_backward(padding_idx=0, "
              "scale_grad_by_freq=True)")
        print(f"  values       {', '.join(np.dtype(t).name for t in CHECK_DTYPES)}: a third "
              f"special values (+-0, +-inf, subnormals, largest finite, rounding ties, quiet "
              f"and signalling NaNs with payloads), a third random bit patterns, a third "
              f"normal numbers (sd 4)")
        print(f"  indices      {', '.join(np.dtype(t).name for t in CHECK_INDEX_DTYPES)} "
              f"(uint16 is converted), uniform over the table")
        print(f"  shapes       T x d and B indices: {shapes}")
        print(f"  threads      {', '.join(map(str, CHECK_THREADS))} (num_threads=; the engine "
              f"may keep small calls on one)")
        print(f"  {'operation':<20}{'values':<9}{'indices':<9}{'bit-identical':>14}")
        for (op, dt, it), (equal, count) in groups.items():
            print(f"  {op:<20}{dt:<9}{it:<9}{f'{equal} of {count}':>14}")
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
    c = sub.add_parser("check", help="wide bit-for-bit sweep against NumPy")
    c.add_argument("-v", "--verbose", action="store_true",
                   help="say what was covered: operations, dtypes, shapes, thread counts")
    c.set_defaults(func=check)
    p = sub.add_parser("bench", help="compact speed sweep against NumPy (and torch if installed)")
    p.add_argument("--json", metavar="PATH",
                   help="save medians, ratios, machine, versions, threads and load as JSON")
    p.add_argument("--plot", metavar="PATH.png",
                   help="draw the speedups as one figure (needs matplotlib: "
                        "pip install 'fastembed_ext[plot]')")
    p.add_argument("--quick", action="store_true", help="a few cases only (T=30000, 3 widths)")
    p.add_argument("--load", action="store_true",
                   help="default threads against one thread, quiet, beside a busy loop, "
                        "and with one process per CPU at once")
    p.set_defaults(func=bench)
    args = parser.parse_args(argv)
    if getattr(args, "load", False) and (args.json or args.plot or args.quick):
        p.error("--load runs on its own: it takes no --json, --plot or --quick")
    func: Callable[[argparse.Namespace], int] = getattr(args, "func", main_job)
    # line by line, so that a reader who stops early (| head) stops the job early
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    try:
        code = func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away.  Point stdout at /dev/null so that the interpreter's
        # last flush cannot fail again, and exit as a process killed by SIGPIPE does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13
    return code


if __name__ == "__main__":
    sys.exit(main())

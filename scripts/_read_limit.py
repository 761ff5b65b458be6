"""The row-read limit, timed on the caller's own table (bench/native/row_read_limit.c).

Shared by scripts/bag_read_limit.sh and scripts/gather_read_limit.sh: each
builds the library, makes its table and indices, and times the limit's
variants interleaved with the calls it bounds, so that all of them meet the
same memory, the same placement and the same neighbours.  The limit is the
best median over the variants: blocks of 256 bytes (a float32 bag kernel's
register block) or whole rows, each at several prefetch distances.
"""
from __future__ import annotations

import ctypes
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

DISTANCES = (4, 8, 16, 32)


def load(path: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(path)
    lib.row_read_limit_touch.restype = ctypes.c_uint32
    lib.row_read_limit_touch.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_long,
                                         ctypes.c_void_p, ctypes.c_long, ctypes.c_long,
                                         ctypes.c_long, ctypes.c_int]
    return lib


def touch_calls(lib: ctypes.CDLL, w: np.ndarray, idx: np.ndarray, per_bag: int,
                threads: int, pool: ThreadPoolExecutor | None) -> dict[str, Callable[[], object]]:
    """name -> a call that reads every line of the rows w[idx] once; with
    threads=2 the bags are split in two halves read at once (ctypes releases
    the GIL)."""
    assert w.flags.c_contiguous and idx.dtype == np.int64 and idx.flags.c_contiguous
    row_bytes = w.shape[1] * w.itemsize
    bags = len(idx) // per_bag
    halves = [(0, bags)] if threads == 1 else [(0, bags // 2), (bags // 2, bags)]

    def part(lo: int, hi: int, block: int, distance: int) -> int:
        return int(lib.row_read_limit_touch(w.ctypes.data, w.strides[0], row_bytes,
                                            idx.ctypes.data + lo * per_bag * 8, hi - lo,
                                            per_bag, block, distance))

    def call(block: int, distance: int) -> Callable[[], object]:
        if pool is None or threads == 1:
            return lambda: part(0, bags, block, distance)
        return lambda: [f.result() for f in [pool.submit(part, lo, hi, block, distance)
                                             for lo, hi in halves]]

    calls = {}
    for block in sorted({256, row_bytes}):
        for distance in DISTANCES:
            name = f"limit {'rows' if block == row_bytes else f'{block} B blocks'} D{distance}"
            calls[name] = call(block, distance)
    return calls


def medians_ms(calls: dict[str, Callable[[], object]], rounds: int,
               settle_s: float = 0.0) -> dict[str, float]:
    """Every call once per round, in an order reversed every other round, with
    an untimed pause of settle_s after each; the median of each in ms."""
    for f in calls.values():
        f()
    times: dict[str, list[float]] = {k: [] for k in calls}
    items = list(calls.items())
    for r in range(rounds):
        for k, f in (items if r % 2 else items[::-1]):
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
            time.sleep(settle_s)
    return {k: float(np.median(v)) * 1e3 for k, v in times.items()}


def best_limit(ms: dict[str, float]) -> tuple[str, float]:
    name = min((k for k in ms if k.startswith("limit ")), key=ms.__getitem__)
    return name, ms[name]

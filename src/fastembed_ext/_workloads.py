"""Workloads shared by the command line, bench/ and the tests: token ids, the
values a kernel is most likely to get wrong, a bit comparison, and one timer.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import numpy as np

UINT_OF_SIZE: dict[int, Any] = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def zipf_ids(rng: np.random.Generator, num_rows: int, size: int, a: float = 1.1,
             hot: str = "spread") -> np.ndarray[Any, Any]:
    """Token ids whose frequencies follow Zipf(a) over ``num_rows`` rows, as int64.

    ``hot="spread"``: the hot rows are permuted over the table (a vocabulary
    whose ids are not ordered by frequency); ``hot="first"``: row r has rank
    r + 1, so the hottest rows sit together at the start of the table.
    """
    if hot not in ("spread", "first"):
        raise ValueError(f"hot must be 'spread' or 'first', got {hot!r}")
    ranks = np.arange(1, num_rows + 1, dtype=np.float64)
    p = ranks ** -a
    p /= p.sum()
    row_of_rank = rng.permutation(num_rows) if hot == "spread" else np.arange(num_rows)
    ids: np.ndarray[Any, Any] = row_of_rank[rng.choice(num_rows, size=size, p=p)]
    return ids.astype(np.int64)


def from_bits(pattern: Any, dtype: Any) -> np.ndarray[Any, Any]:
    """Items of ``dtype`` with the given bit patterns."""
    dtype = np.dtype(dtype)
    return np.asarray(pattern, dtype=np.uint64).astype(UINT_OF_SIZE[dtype.itemsize]).view(dtype)


def special_values(dtype: Any) -> np.ndarray[Any, Any]:
    """The values a kernel is most likely to get wrong, as a 1-D array of ``dtype``.

    Signed zeros, infinities, subnormals at both ends, the largest finite
    value, values where an add rounds to even, and quiet and signalling NaNs
    of both signs with small, large and distinct payloads.
    """
    dtype = np.dtype(dtype)
    nbits = 8 * dtype.itemsize
    # ml_dtypes.bfloat16 has no np.finfo: 8 exponent bits, 7 mantissa bits
    nmant = 7 if dtype.name == "bfloat16" else int(np.finfo(dtype).nmant)
    u = UINT_OF_SIZE[dtype.itemsize]
    sign = 1 << (nbits - 1)
    exp_all = (sign - 1) ^ ((1 << nmant) - 1)
    quiet = 1 << (nmant - 1)
    mant_all = (1 << nmant) - 1
    one = int(np.array(1, dtype=dtype).view(u).item())
    positive = [
        0,                       # +0.0
        1,                       # smallest subnormal
        2, 3,                    # tiny subnormals, so that two of them still add exactly
        mant_all,                # largest subnormal
        1 << nmant,              # smallest normal
        one,                     # 1.0
        one + 1,                 # 1.0 + ulp
        one - 1,                 # largest value below 1.0
        one + (1 << nmant),      # 2.0
        exp_all - 1,             # largest finite
        exp_all - 2,
        exp_all,                 # inf
        exp_all | quiet,         # the default quiet NaN
        exp_all | quiet | 1,     # quiet NaN, payload 1
        exp_all | mant_all,      # quiet NaN, all payload bits
        exp_all | quiet | (mant_all >> 3),  # quiet NaN, another payload
        exp_all | 1,             # signalling NaN, payload 1
        exp_all | (quiet - 1),   # signalling NaN, largest payload
        exp_all | (quiet >> 1),  # signalling NaN, another payload
    ]
    # the ulp of 2 ** nmant is 1: adding 0.5 there is an exact tie
    big = int(np.array(2.0 ** nmant, dtype=dtype).view(u).item())
    half = int(np.array(0.5, dtype=dtype).view(u).item())
    positive += [big, big + 1, half]
    return from_bits(positive + [p | sign for p in positive], dtype)


def random_bits(rng: np.random.Generator, dtype: Any, shape: Any) -> np.ndarray[Any, Any]:
    """Uniformly random bit patterns: every NaN payload, subnormal and infinity can occur."""
    u = UINT_OF_SIZE[np.dtype(dtype).itemsize]
    bits: np.ndarray[Any, Any] = rng.integers(0, np.iinfo(u).max, size=shape, dtype=u,
                                              endpoint=True)
    return bits.view(dtype)


def edge_values(rng: np.random.Generator, dtype: Any, shape: Any) -> np.ndarray[Any, Any]:
    """A mix of special values, random bit patterns and ordinary numbers."""
    dtype = np.dtype(dtype)
    special = special_values(dtype)
    ordinary = (rng.standard_normal(shape) * 4).astype(dtype)
    pick = rng.integers(0, 3, size=shape)
    out = np.where(pick == 0, special[rng.integers(0, special.size, size=shape)],
                   np.where(pick == 1, random_bits(rng, dtype, shape), ordinary))
    return np.ascontiguousarray(out, dtype=dtype).reshape(shape)


def same_bits(a: Any, b: Any) -> bool:
    """``a`` and ``b`` have the same dtype, shape and bytes (NaN payloads and -0.0 count)."""
    a, b = np.asarray(a), np.asarray(b)
    return bool(a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes())


def median_seconds(fn: Callable[[], Any], *, budget: float = 0.25, min_rounds: int = 3,
                   max_rounds: int = 50) -> float:
    """The median wall time of ``fn()``: at least ``min_rounds`` calls, then more
    while ``budget`` seconds last, at most ``max_rounds``."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_rounds or (time.perf_counter() - start < budget
                                      and len(times) < max_rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)

"""add_at and take against np.add.at and np.take, as a patched module calls them.

Two kinds of group:

- "fallback": forms that add_at / take hand to NumPy (several axes, a slice,
  a boolean mask, an integer or strided target, a call too small to gain).
  Both rows of a group run NumPy's loop on the same call; the difference of
  their medians is what the drop-in costs (its look at the call and the
  patch_stats count).
- "rows": row forms at d = 16, 64, 128 on one thread (T = 30 000,
  B = 65 536, uniform ids), against np.add.at and the fastest NumPy gather
  spelling (np.take without out=).

The summary (overhead in us, ratios) is computed from a run's JSON:

    pytest bench/test_dropin.py --benchmark-json=dropin.json
    python bench/test_dropin.py dropin.json

A group's rows run one after the other, so on a busy machine a
microsecond difference between them is mostly noise; the overhead is
measured better with the two spellings interleaved, round by round:

    python bench/test_dropin.py --overhead
"""
import json
import sys
import timeit
from collections import defaultdict

import numpy as np
import pytest

import fastembed_ext
from conftest import describe, grads, indices, prefaulted, table

ROW_T, ROW_B = 30_000, 65_536
ROW_D = (16, 64, 128)  # (not "d": conftest parametrizes that name with its own grid)


@pytest.fixture
def one_thread():
    before = fastembed_ext.get_num_threads()
    fastembed_ext.set_num_threads(1)
    yield
    fastembed_ext.set_num_threads(before)


def _fallback_add_at_cases():
    rng = np.random.default_rng(7)
    a2 = rng.standard_normal((1000, 64))
    rows8 = rng.integers(0, 1000, 8)
    cols8 = rng.integers(0, 64, 8)
    mask = np.zeros(1000, bool)
    mask[rng.integers(0, 1000, 8)] = True
    strided = rng.standard_normal((1000, 128))[:, ::2]
    return {
        # (i, j): one element per pair, as autograd's VJP of a[i, j] calls it
        "two axes (i, j)": (a2, (rows8, cols8), rng.standard_normal(8)),
        "slice": (a2, slice(10, 18), rng.standard_normal((8, 64))),
        "boolean mask": (a2, mask, 1.0),
        "int64 target": (rng.integers(0, 100, (1000, 64)), rows8, np.int64(3)),
        "strided target": (strided, rows8, rng.standard_normal((8, 64))),
        # a row form below SMALL_ADD_AT values (NumPy is as fast)
        "small rows B=8 d=64": (a2, rows8, rng.standard_normal((8, 64))),
        "1-D a, 100 ids": (rng.standard_normal(1000), rng.integers(0, 1000, 100),
                           rng.standard_normal(100)),
    }


_ADD_AT_CASES = _fallback_add_at_cases()


@pytest.mark.parametrize("form", list(_ADD_AT_CASES))
@pytest.mark.parametrize("backend", ["numpy", "add_at"])
def test_add_at_fallback(benchmark, backend, form):
    a, idx, b = _ADD_AT_CASES[form]
    a = a.copy()
    fn = np.add.at if backend == "numpy" else fastembed_ext.add_at
    benchmark.group = f"add_at fallback: {form}"
    describe(benchmark, backend, fastembed_ext.get_num_threads())
    fastembed_ext.patch_stats(reset=True)
    benchmark(fn, a, idx, b)
    if backend == "add_at":
        # every call of this group went to NumPy
        assert fastembed_ext.patch_stats()["add_at"]["accelerated"] == 0


def _fallback_take_cases():
    rng = np.random.default_rng(8)
    w = rng.standard_normal((1000, 64)).astype(np.float32)
    ids = rng.integers(0, 1000, 8)
    return {
        "axis=1": (w, ids % 64, 1),
        "axis=None on 2-D": (w, ids, None),
        "small rows B=8 d=64": (w, ids, 0),
        "narrow rows d=4": (w[:, :4].copy(), rng.integers(0, 1000, 4096), 0),
    }


_TAKE_CASES = _fallback_take_cases()


@pytest.mark.parametrize("form", list(_TAKE_CASES))
@pytest.mark.parametrize("backend", ["numpy", "take"])
def test_take_fallback(benchmark, backend, form):
    a, idx, axis = _TAKE_CASES[form]
    fn = np.take if backend == "numpy" else fastembed_ext.take
    benchmark.group = f"take fallback: {form}"
    describe(benchmark, backend, fastembed_ext.get_num_threads())
    fastembed_ext.patch_stats(reset=True)
    got = benchmark(fn, a, idx, axis)
    if backend == "take":
        assert fastembed_ext.patch_stats()["take"]["accelerated"] == 0
    assert got.tobytes() == np.take(a, idx, axis).tobytes()


@pytest.mark.parametrize("width", ROW_D)
@pytest.mark.parametrize("backend", ["numpy", "add_at"])
def test_add_at_rows(benchmark, one_thread, backend, width):
    d = width
    idx = indices(ROW_T, "uniform", "int64", ROW_B)
    g = grads(d, np.float32, ROW_B)
    gw = prefaulted(np.zeros((ROW_T, d), np.float32))
    benchmark.group = f"add_at rows: float32 T={ROW_T} d={d} B={ROW_B} 1 thread"
    describe(benchmark, backend, 1)
    fastembed_ext.patch_stats(reset=True)
    if backend == "numpy":
        # np.add.at is slow; a few rounds are enough to rank it
        benchmark.pedantic(np.add.at, (gw, idx, g), rounds=3, iterations=1)
    else:
        benchmark(fastembed_ext.add_at, gw, idx, g)
        assert fastembed_ext.patch_stats()["add_at"]["fallback"] == 0
    assert np.isfinite(gw).all()


@pytest.mark.parametrize("width", ROW_D)
@pytest.mark.parametrize("backend", ["numpy", "take"])
def test_take_rows(benchmark, one_thread, backend, width):
    d = width
    idx = indices(ROW_T, "uniform", "int64", ROW_B)
    w = table(ROW_T, d)
    benchmark.group = f"take rows: float32 T={ROW_T} d={d} B={ROW_B} 1 thread"
    describe(benchmark, backend, 1)
    fastembed_ext.patch_stats(reset=True)
    fn = np.take if backend == "numpy" else fastembed_ext.take
    got = benchmark(fn, w, idx, 0)
    if backend == "take":
        assert fastembed_ext.patch_stats()["take"]["fallback"] == 0
    assert got.tobytes() == w[idx].tobytes()


def summarize(path):
    """Per group: the NumPy median, the drop-in's, and their difference or ratio."""
    with open(path) as f:
        runs = json.load(f)["benchmarks"]
    groups = defaultdict(dict)
    for r in runs:
        groups[r["group"]][r["extra_info"]["backend"]] = r["stats"]["median"]
    for group in sorted(groups):
        g = groups[group]
        ours = g.get("add_at", g.get("take"))
        base = g.get("numpy")
        if ours is None or base is None:
            continue
        if "fallback" in group:
            print(f"{group:48s} numpy {base * 1e6:9.2f} us  drop-in {ours * 1e6:9.2f} us  "
                  f"extra {(ours - base) * 1e6:+6.2f} us")
        else:
            print(f"{group:48s} numpy {base * 1e3:9.3f} ms  drop-in {ours * 1e3:9.3f} ms  "
                  f"{base / ours:6.1f}x")


def overhead(rounds=41, number=2000):
    """Median per-call time of NumPy and of the drop-in on each fallback form,
    the two timed alternately so that a noisy moment hits both."""
    cases = [("add_at", form, np.add.at, fastembed_ext.add_at, (a.copy(), idx, b))
             for form, (a, idx, b) in _ADD_AT_CASES.items()]
    cases += [("take", form, np.take, fastembed_ext.take, (a, idx, axis))
              for form, (a, idx, axis) in _TAKE_CASES.items()]
    for op, form, theirs, ours, args in cases:
        times = {theirs: [], ours: []}
        for _ in range(rounds):
            for fn in (theirs, ours):
                times[fn].append(timeit.timeit(lambda: fn(*args), number=number) / number)
        base, mine = (sorted(times[fn])[rounds // 2] * 1e6 for fn in (theirs, ours))
        print(f"{op:6s} {form:22s} numpy {base:8.2f} us  drop-in {mine:8.2f} us  "
              f"extra {mine - base:+5.2f} us")


if __name__ == "__main__":
    if sys.argv[1] == "--overhead":
        overhead()
    else:
        summarize(sys.argv[1])

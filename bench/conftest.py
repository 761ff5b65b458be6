"""Shared, seeded, cached inputs for the benchmark suites.

Run the full grid (minutes):      pytest bench
Run every case once as a test:    pytest bench --benchmark-disable   (CI; a reduced grid)

Groups hold every backend for one (op, dtype, T, d, B, distribution, index
dtype), so each table in the report reads as a ratio table.  Absolute times
on a shared machine mean little; compare the rows of one group, one run.
"""
import os
import platform

import numpy as np
import pytest

import fastembed_ext
from fastembed_ext._workloads import zipf_ids

B = 65536
FULL_T = (30_000, 200_000, 1_000_000)
FULL_D = (16, 64, 128, 384, 768)
SMOKE_T = (30_000,)
SMOKE_D = (16, 128)
DISTS = ("uniform", "zipf")
INDEX_DTYPES = ("int32", "int64")
THREADS = int(os.environ.get("FASTEMBED_EXT_BENCH_THREADS", "2"))

_cache = {}


def _smoke(config):
    return config.getoption("benchmark_disable", False)


def pytest_generate_tests(metafunc):
    smoke = _smoke(metafunc.config)
    grid = {
        "T": SMOKE_T if smoke else FULL_T,
        "d": SMOKE_D if smoke else FULL_D,
        "dist": DISTS,
        "index_dtype": INDEX_DTYPES[1:] if smoke else INDEX_DTYPES,
    }
    for name, values in grid.items():
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, values, scope="module")


def cached(key, make):
    """One live entry per kind of input, so a 1M-row table is built once per run."""
    kind = key[0]
    for k in [k for k in _cache if k[0] == kind and k != key]:
        del _cache[k]
    if key not in _cache:
        _cache[key] = make()
    return _cache[key]


def prefaulted(a):
    """``a`` with every page written once, before any clock starts.

    A large ``np.zeros`` or ``np.empty`` is mapped lazily, so the first call
    that writes it takes a page fault per 4 KiB page (25 000 for a 100 MB
    table), and pytest-benchmark sizes a test's rounds from that first call:
    6-9 rounds in place of about 100 for scatter_add at T=200000 d=128, which
    left that median to a handful of calls.  The benchmarks time the kernels,
    for every backend alike, not the first touch of a buffer.
    """
    a.fill(0)
    return a


def table(T, d, dtype=np.float32):
    def make():
        rng = np.random.default_rng(1)
        w = np.empty((T, d), dtype)
        w[...] = rng.random((T, d), dtype=np.float32) - 0.5 if dtype != np.float64 \
            else rng.random((T, d)) - 0.5
        return w
    return cached(("table", T, d, np.dtype(dtype).str), make)


def indices(T, dist, index_dtype, size=B):
    def make():
        rng = np.random.default_rng(2)
        if dist == "uniform":
            ids = rng.integers(0, T, size=size)
        else:
            ids = zipf_ids(rng, T, size)
        return ids.astype(index_dtype)
    return cached(("indices", T, dist, index_dtype, size), make)


def grads(d, dtype=np.float32, size=B):
    def make():
        rng = np.random.default_rng(3)
        return (rng.random((size, d), dtype=np.float32) - 0.5).astype(dtype)
    return cached(("grads", d, np.dtype(dtype).str, size), make)


def describe(benchmark, backend, threads):
    benchmark.extra_info.update({
        "backend": backend,
        "threads": threads,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "fastembed_ext": fastembed_ext.__version__,
        "engine": fastembed_ext.info()["engine"],
    })


@pytest.fixture(autouse=True)
def _engine_jobs(request):
    """Record in each benchmark's extra_info how many parallel jobs the engine
    ran while it was measured: under the load rule a call asked for N threads
    may run on one, and only this count tells.  A threaded call runs at least
    one job, so engine_jobs / measured_calls below 1 means that some of the
    measured calls ran on one thread (warm-up calls count too, so it can
    exceed 1)."""
    if "benchmark" not in request.fixturenames:
        yield
        return
    bm = request.getfixturevalue("benchmark")
    before = fastembed_ext._kernels.engine_state()["jobs"]
    yield
    if bm.stats and not bm.extra_info.get("in_subprocesses"):   # None or empty when disabled
        bm.extra_info["engine_jobs"] = fastembed_ext._kernels.engine_state()["jobs"] - before
        bm.extra_info["measured_calls"] = bm.stats.stats.rounds * bm.stats.iterations


def torch_or_skip():
    return pytest.importorskip("torch")


BACKENDS = ["numpy", "cython-1", f"cython-{THREADS}", "torch-1", f"torch-{THREADS}"]


def backend_threads(backend):
    """("cython", 2) for "cython-2"; a NumPy spelling ("numpy-take-clip") runs on 1 thread."""
    if backend.startswith("numpy"):
        return backend, 1
    name, _, n = backend.partition("-")
    return name, int(n) if n else 1

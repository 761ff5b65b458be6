"""Bags, max-norm, sparse gradients and fused optimizer steps: NumPy reference,
compiled 1 and N threads, and PyTorch where it has the same operation."""
import numpy as np
import pytest

import fastembed_ext
from fastembed_ext import _reference
from conftest import THREADS, backend_threads, cached, describe, indices, prefaulted, table, torch_or_skip

# (T, d, entries per bag, bags): the shapes PyTorch's FBGEMM path is measured at
BAG_SHAPES = [(1_000_000, 64, 20, 16384), (100_000, 128, 100, 4096), (1_000_000, 256, 4, 16384)]
SMOKE_BAG_SHAPES = [(30_000, 64, 20, 1024)]
BAG_BACKENDS = ["numpy-reduceat", "cython-1", f"cython-{THREADS}", "torch-1", f"torch-{THREADS}"]


def _bag_shapes(config):
    return SMOKE_BAG_SHAPES if config.getoption("benchmark_disable", False) else BAG_SHAPES


def pytest_generate_tests(metafunc):
    if "bag_shape" in metafunc.fixturenames:
        shapes = _bag_shapes(metafunc.config)
        metafunc.parametrize("bag_shape", shapes, ids=[f"T{t}-d{d}-L{l}-B{b}" for t, d, l, b in shapes])


def _bag_inputs(T, d, length, bags):
    idx = indices(T, "uniform", "int64", size=bags * length)
    offsets = np.arange(bags, dtype=np.int64) * length
    return table(T, d), idx, offsets


def _numpy_bag(w, idx, offsets, length, mode):
    # the fastest NumPy spelling of a bag of fixed-length bags: one gather, one reduceat
    rows = w[idx]
    if mode == "sum":
        return np.add.reduceat(rows, offsets, axis=0)
    if mode == "mean":
        return np.add.reduceat(rows, offsets, axis=0) / np.float32(length)
    return np.maximum.reduceat(rows, offsets, axis=0)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("backend", BAG_BACKENDS)
def test_embedding_bag(benchmark, backend, mode, bag_shape):
    T, d, length, bags = bag_shape
    w, idx, offsets = _bag_inputs(T, d, length, bags)
    name, n = backend_threads(backend)
    benchmark.group = f"embedding_bag {mode} float32 T={T} d={d} bags={bags}x{length} uniform int64"
    describe(benchmark, name, n)
    if name == "numpy-reduceat":
        benchmark(_numpy_bag, w, idx, offsets, length, mode)
    elif name == "cython":
        benchmark(fastembed_ext.embedding_bag, w, idx, offsets, mode=mode, num_threads=n)
    else:
        torch = torch_or_skip()
        torch.set_num_threads(n)
        wt, it, ot = torch.from_numpy(w), torch.from_numpy(idx), torch.from_numpy(offsets)
        benchmark(torch.nn.functional.embedding_bag, it, wt, ot, mode=mode)


@pytest.mark.parametrize("mode", ["sum", "max"])
@pytest.mark.parametrize("backend", ["cython-1", f"cython-{THREADS}", "torch-1", f"torch-{THREADS}"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_embedding_bag_16bit(benchmark, dtype, backend, mode, bag_shape):
    # the 16-bit tables against PyTorch's bags of the same dtype (which sum in
    # float32 and round once; ours round after every add, as NumPy does)
    T, d, length, bags = bag_shape
    dt = np.float16 if dtype == "float16" else pytest.importorskip("ml_dtypes").bfloat16
    w = table(T, d, dt)
    idx = indices(T, "uniform", "int64", size=bags * length)
    offsets = np.arange(bags, dtype=np.int64) * length
    name, n = backend_threads(backend)
    benchmark.group = f"embedding_bag {mode} {dtype} T={T} d={d} bags={bags}x{length} uniform int64"
    describe(benchmark, name, n)
    if name == "cython":
        benchmark(fastembed_ext.embedding_bag, w, idx, offsets, mode=mode, num_threads=n)
    else:
        torch = torch_or_skip()
        torch.set_num_threads(n)
        wt = torch.from_numpy(w) if dtype == "float16" else \
            torch.from_numpy(w.view(np.int16)).view(torch.bfloat16)
        it, ot = torch.from_numpy(idx), torch.from_numpy(offsets)
        benchmark(torch.nn.functional.embedding_bag, it, wt, ot, mode=mode)


@pytest.mark.parametrize("mode", ["sum", "mean"])
@pytest.mark.parametrize("backend", ["numpy-add-at", "cython-1", f"cython-{THREADS}", "torch-1",
                                     f"torch-{THREADS}"])
def test_embedding_bag_backward(benchmark, backend, mode, bag_shape):
    T, d, length, bags = bag_shape
    _, idx, offsets = _bag_inputs(T, d, length, bags)
    g = cached(("bag-grad", bags, d), lambda: np.random.default_rng(9).random((bags, d), dtype=np.float32))
    name, n = backend_threads(backend)
    benchmark.group = (f"embedding_bag_backward {mode} float32 T={T} d={d} bags={bags}x{length} "
                       f"uniform int64")
    describe(benchmark, name, n)
    if name == "numpy-add-at":
        def numpy_backward():
            gw = np.zeros((T, d), np.float32)
            rows = np.repeat(g if mode == "sum" else g / np.float32(length), length, axis=0)
            np.add.at(gw, idx, rows)
            return gw
        benchmark.pedantic(numpy_backward, rounds=3, iterations=1)
    elif name == "cython":
        benchmark(fastembed_ext.embedding_bag_backward, g, idx, offsets, T, mode=mode, num_threads=n)
    else:
        torch = torch_or_skip()
        torch.set_num_threads(n)
        code = {"sum": 0, "mean": 1}[mode]
        wt, it, ot, gt = (torch.from_numpy(table(T, d)), torch.from_numpy(idx),
                          torch.from_numpy(offsets), torch.from_numpy(g))
        _, o2b, size, maxi = torch.ops.aten._embedding_bag(wt, it, ot, False, code, False, None,
                                                           False, -1)
        # what autograd calls for embedding_bag's weight gradient (dense)
        benchmark(torch.ops.aten._embedding_bag_backward, gt, it, ot, o2b, size, maxi, T, False,
                  code, False, None, -1)


@pytest.mark.parametrize("backend", ["numpy", "cython-1", f"cython-{THREADS}", "torch-1"])
def test_renorm(benchmark, backend):
    T, d = 30_000, 128
    w = table(T, d).copy()
    idx = indices(T, "zipf", "int64", size=65536)
    name, n = backend_threads(backend)
    benchmark.group = f"renorm_ float32 T={T} d={d} B=65536 zipf max_norm=0.5"
    describe(benchmark, name, n)
    if name == "numpy":
        benchmark.pedantic(_reference.renorm_, (w, idx, 0.5), rounds=3, iterations=1)
    elif name == "cython":
        benchmark(fastembed_ext.renorm_, w, idx, 0.5, num_threads=n)
    else:
        torch = torch_or_skip()
        torch.set_num_threads(n)
        wt, it = torch.from_numpy(w), torch.from_numpy(idx)
        benchmark(torch.embedding_renorm_, wt, it, 0.5, 2.0)


@pytest.mark.parametrize("backend", ["numpy", "cython-1", f"cython-{THREADS}", "torch-1"])
def test_coalesce(benchmark, backend):
    d = 64
    idx = indices(1_000_000, "zipf", "int64", size=65536)
    g = cached(("coalesce-grad", d), lambda: np.random.default_rng(8).random((65536, d), dtype=np.float32))
    name, n = backend_threads(backend)
    benchmark.group = f"coalesce float32 d={d} B=65536 zipf over 1M rows"
    describe(benchmark, name, n)
    if name == "numpy":
        benchmark.pedantic(_reference.coalesce, (idx, g), rounds=3, iterations=1)
    elif name == "cython":
        benchmark(fastembed_ext.coalesce, idx, g, num_threads=n)
    else:
        torch = torch_or_skip()
        torch.set_num_threads(n)
        st = torch.sparse_coo_tensor(torch.from_numpy(idx)[None], torch.from_numpy(g), (1_000_000, d),
                                     check_invariants=False)
        benchmark(st.coalesce)


@pytest.mark.parametrize("step", ["sgd", "adagrad", "rowwise_adagrad"])
@pytest.mark.parametrize("backend", ["numpy", "cython-1", f"cython-{THREADS}"])
def test_optimizer_step(benchmark, backend, step):
    T, d = 1_000_000, 64
    w = table(T, d).copy()
    idx = indices(T, "zipf", "int64", size=65536)
    g = cached(("opt-grad", d), lambda: (np.random.default_rng(7).random((65536, d), dtype=np.float32) - 0.5) * 1e-3)
    state = prefaulted(np.zeros((T,) if step == "rowwise_adagrad" else (T, d), np.float32))
    name, n = backend_threads(backend)
    benchmark.group = f"{step}_step float32 T={T} d={d} B=65536 zipf"
    describe(benchmark, name, n)
    ref = {"sgd": _reference.sgd_step, "adagrad": _reference.adagrad_step,
           "rowwise_adagrad": _reference.rowwise_adagrad_step}[step]
    fast = {"sgd": fastembed_ext.sgd_step, "adagrad": fastembed_ext.adagrad_step,
            "rowwise_adagrad": fastembed_ext.rowwise_adagrad_step}[step]
    args = (w, idx, g) if step == "sgd" else (w, state, idx, g)
    if name == "numpy":
        benchmark.pedantic(ref, args, {"lr": 0.01}, rounds=3, iterations=1)
    else:
        benchmark(fast, *args, lr=0.01, num_threads=n)

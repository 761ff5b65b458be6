"""Bags, max-norm, sparse gradients and fused optimizer steps: NumPy reference,
compiled 1 and N threads, and PyTorch where it has the same operation."""
import numpy as np
import pytest

import fastembed_ext
from fastembed_ext import _reference
from conftest import THREADS, backend_threads, cached, describe, indices, table, torch_or_skip

BAGS, BAG_LEN = 4096, 20


def _bag_inputs(T, dist):
    idx = indices(T, dist, "int64", size=BAGS * BAG_LEN)
    offsets = np.arange(BAGS, dtype=np.int64) * BAG_LEN
    return idx, offsets


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("backend", ["numpy", "cython-1", f"cython-{THREADS}", "torch-1", f"torch-{THREADS}"])
def test_embedding_bag(benchmark, backend, mode, T, d):
    # T and d come from the grid in conftest.py
    w = table(T, d)
    idx, offsets = _bag_inputs(T, "zipf")
    name, n = backend_threads(backend)
    benchmark.group = f"embedding_bag {mode} float32 T={T} d={d} bags={BAGS}x{BAG_LEN} zipf int64"
    describe(benchmark, name, n)
    if name == "numpy":
        benchmark.pedantic(_reference.embedding_bag, (w, idx, offsets), {"mode": mode},
                           rounds=3, iterations=1)
    elif name == "cython":
        benchmark(fastembed_ext.embedding_bag, w, idx, offsets, mode=mode, num_threads=n)
    else:
        torch = torch_or_skip()
        torch.set_num_threads(n)
        wt, it, ot = torch.from_numpy(w), torch.from_numpy(idx), torch.from_numpy(offsets)
        benchmark(torch.nn.functional.embedding_bag, it, wt, ot, mode=mode)


@pytest.mark.parametrize("backend", ["numpy", "cython-1", f"cython-{THREADS}"])
def test_embedding_bag_backward_sum(benchmark, backend):
    T, d = 30_000, 64
    idx, offsets = _bag_inputs(T, "zipf")
    g = cached(("bag-grad", d), lambda: np.random.default_rng(9).random((BAGS, d), dtype=np.float32))
    name, n = backend_threads(backend)
    benchmark.group = f"embedding_bag_backward sum float32 T={T} d={d} bags={BAGS}x{BAG_LEN} zipf"
    describe(benchmark, name, n)
    if name == "numpy":
        benchmark.pedantic(_reference.embedding_bag_backward, (g, idx, offsets, T), rounds=3, iterations=1)
    else:
        benchmark(fastembed_ext.embedding_bag_backward, g, idx, offsets, T, num_threads=n)


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
    state = np.zeros((T,) if step == "rowwise_adagrad" else (T, d), np.float32)
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

"""Per-call overhead: B=8, d=64, T=1000 through the public API with backend="auto"."""
import numpy as np
import pytest

import fastembed_ext
from conftest import describe

T, D, B = 1000, 64, 8


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(5)
    return (rng.standard_normal((T, D)).astype(np.float32), rng.integers(0, T, B),
            rng.standard_normal((B, D)).astype(np.float32))


@pytest.mark.parametrize("backend", ["numpy", "cython", "torch"])
def test_tiny_gather_out(benchmark, backend, tiny):
    w, idx, _ = tiny
    out = np.empty((B, D), np.float32)
    benchmark.group = f"tiny gather(out=) float32 T={T} d={D} B={B}"
    describe(benchmark, backend, fastembed_ext.get_num_threads())
    if backend == "numpy":
        benchmark(np.take, w, idx, axis=0, out=out)
    elif backend == "cython":
        benchmark(fastembed_ext.gather, w, idx, out=out)
    else:
        torch = pytest.importorskip("torch")
        wt, it, ot = torch.from_numpy(w), torch.from_numpy(idx), torch.from_numpy(out)
        benchmark(torch.index_select, wt, 0, it, out=ot)
    assert out.tobytes() == np.take(w, idx, axis=0).tobytes()


@pytest.mark.parametrize("backend", ["numpy", "cython", "torch"])
def test_tiny_scatter_add(benchmark, backend, tiny):
    _, idx, g = tiny
    gw = np.zeros((T, D), np.float32)
    benchmark.group = f"tiny scatter_add float32 T={T} d={D} B={B}"
    describe(benchmark, backend, fastembed_ext.get_num_threads())
    if backend == "numpy":
        benchmark(np.add.at, gw, idx, g)
    elif backend == "cython":
        benchmark(fastembed_ext.scatter_add, gw, idx, g)
    else:
        torch = pytest.importorskip("torch")
        gwt, it, gt = torch.from_numpy(gw), torch.from_numpy(idx), torch.from_numpy(g)
        benchmark(gwt.index_add_, 0, it, gt)

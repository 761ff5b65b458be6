"""scatter_add against np.add.at and torch.Tensor.index_add_; embedding_backward at scale."""
import numpy as np
import pytest

import fastembed_ext
from conftest import B, BACKENDS, backend_threads, describe, grads, indices, prefaulted, torch_or_skip


def _group(op, dtype, T, d, dist, index_dtype):
    return f"{op} {dtype} T={T} d={d} B={B} {dist} {index_dtype}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_scatter_add(benchmark, backend, T, d, dist, index_dtype):
    idx = indices(T, dist, index_dtype)
    g = grads(d)
    gw = prefaulted(np.zeros((T, d), np.float32))
    name, n = backend_threads(backend)
    benchmark.group = _group("scatter_add", "float32", T, d, dist, index_dtype)
    describe(benchmark, name, n)
    if name == "numpy":
        # np.add.at is slow; a few rounds are enough to rank it
        benchmark.pedantic(np.add.at, (gw, idx, g), rounds=3, iterations=1)
    elif name == "cython":
        benchmark(fastembed_ext.scatter_add, gw, idx, g, num_threads=n)
    else:
        torch = torch_or_skip()
        torch.set_num_threads(n)
        gwt, it, gt = torch.from_numpy(gw), torch.from_numpy(idx.astype(np.int64)), torch.from_numpy(g)
        benchmark(gwt.index_add_, 0, it, gt)
    assert np.isfinite(gw).all()


@pytest.mark.parametrize("backend", ["numpy", "cython-1", "cython-2"])
def test_scatter_add_float16(benchmark, backend, T, dist):
    d, index_dtype = 128, "int64"
    idx = indices(T, dist, index_dtype)
    g = grads(d, np.float16)
    gw = prefaulted(np.zeros((T, d), np.float16))
    name, n = backend_threads(backend)
    benchmark.group = _group("scatter_add", "float16", T, d, dist, index_dtype)
    describe(benchmark, name, n)
    benchmark.extra_info["float16_path"] = fastembed_ext.info()["float16_path"]
    if name == "numpy":
        benchmark.pedantic(np.add.at, (gw, idx, g), rounds=3, iterations=1)
    else:
        benchmark(fastembed_ext.scatter_add, gw, idx, g, num_threads=n)


@pytest.mark.parametrize("backend", ["numpy", "cython-1", "cython-2", "torch-1", "torch-2"])
def test_embedding_backward(benchmark, backend, T, dist):
    d, index_dtype = 64, "int64"
    idx = indices(T, dist, index_dtype)
    g = grads(d)
    name, n = backend_threads(backend)
    benchmark.group = _group("embedding_backward", "float32", T, d, dist, index_dtype)
    describe(benchmark, name, n)
    if name == "numpy":
        benchmark.pedantic(fastembed_ext.embedding_backward, (g, idx, T),
                           {"backend": "numpy"}, rounds=3, iterations=1)
    elif name == "cython":
        benchmark(fastembed_ext.embedding_backward, g, idx, T, num_threads=n)
    else:
        torch = torch_or_skip()
        torch.set_num_threads(n)
        gt, it = torch.from_numpy(g), torch.from_numpy(idx.astype(np.int64))
        benchmark(torch.ops.aten.embedding_dense_backward, gt, it, T, -1, False)

"""gather against np.take, torch.embedding / index_select, and the copy ceiling."""
import numpy as np
import pytest

import fastembed_ext
from fastembed_ext import _kernels
from conftest import B, BACKENDS, THREADS, backend_threads, describe, indices, table, torch_or_skip


def _group(op, T, d, dist, index_dtype):
    return f"{op} float32 T={T} d={d} B={B} {dist} {index_dtype}"


@pytest.mark.parametrize("backend", BACKENDS + [f"copy-1", f"copy-{THREADS}"])
def test_gather_into_out(benchmark, backend, T, d, dist, index_dtype):
    w = table(T, d)
    idx = indices(T, dist, index_dtype)
    out = np.empty((B, d), np.float32)
    name, n = backend_threads(backend)
    benchmark.group = _group("gather(out=)", T, d, dist, index_dtype)
    describe(benchmark, name, n)
    benchmark.extra_info["bytes"] = out.nbytes
    if name == "numpy":
        benchmark(np.take, w, idx, axis=0, out=out)
        expected = np.take(w, idx, axis=0)
    elif name == "cython":
        benchmark(fastembed_ext.gather, w, idx, out=out, num_threads=n)
        expected = np.take(w, idx, axis=0)
    elif name == "copy":
        # the limit: a streaming copy of the same number of bytes, no indexing
        src = np.ones_like(out)
        benchmark(_kernels.copy_bytes, src, out, n)
        expected = src
    else:
        torch = torch_or_skip()
        torch.set_num_threads(n)
        wt, it, ot = torch.from_numpy(w), torch.from_numpy(idx.astype(np.int64)), torch.from_numpy(out)
        benchmark(torch.index_select, wt, 0, it, out=ot)
        expected = np.take(w, idx, axis=0)
    assert out.tobytes() == expected.tobytes()


@pytest.mark.parametrize("backend", BACKENDS)
def test_gather_fresh(benchmark, backend, T, d, dist, index_dtype):
    w = table(T, d)
    idx = indices(T, dist, index_dtype)
    name, n = backend_threads(backend)
    benchmark.group = _group("gather", T, d, dist, index_dtype)
    describe(benchmark, name, n)
    if name == "numpy":
        out = benchmark(np.take, w, idx, axis=0)
    elif name == "cython":
        out = benchmark(fastembed_ext.gather, w, idx, num_threads=n)
    else:
        torch = torch_or_skip()
        torch.set_num_threads(n)
        wt, it = torch.from_numpy(w), torch.from_numpy(idx.astype(np.int64))
        out = benchmark(torch.embedding, wt, it).numpy()
    assert out.shape == (B, d) and out.tobytes() == np.take(w, idx, axis=0).tobytes()

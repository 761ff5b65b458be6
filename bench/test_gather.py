"""gather against the fastest NumPy spellings, torch.index_select / torch.embedding, and the
copy ceiling.

The NumPy peers are the fast spellings of a row gather, each in the table:
np.take(..., out=, mode="clip") and W[idx] (into a fresh array, with np.take);
np.take(..., out=) with the default mode="raise" buffers the whole result before
copying it out and runs about half as fast, so it is not a peer.
"""
import numpy as np
import pytest

import fastembed_ext
from fastembed_ext import _kernels
from conftest import B, THREADS, backend_threads, describe, indices, prefaulted, table, torch_or_skip

INTO_OUT = ["numpy-take-clip", "cython-1", f"cython-{THREADS}", "torch-1", f"torch-{THREADS}",
            "copy-1", f"copy-{THREADS}"]
FRESH = ["numpy-take", "numpy-fancy", "cython-1", f"cython-{THREADS}", "torch-1", f"torch-{THREADS}"]


def _group(op, T, d, dist, index_dtype):
    return f"{op} float32 T={T} d={d} B={B} {dist} {index_dtype}"


@pytest.mark.parametrize("backend", INTO_OUT)
def test_gather_into_out(benchmark, backend, T, d, dist, index_dtype):
    w = table(T, d)
    idx = indices(T, dist, index_dtype)
    out = prefaulted(np.empty((B, d), np.float32))
    name, n = backend_threads(backend)
    benchmark.group = _group("gather(out=)", T, d, dist, index_dtype)
    describe(benchmark, name, n)
    benchmark.extra_info["bytes"] = out.nbytes
    expected = np.take(w, idx, axis=0)
    if name == "numpy-take-clip":
        benchmark(np.take, w, idx, axis=0, out=out, mode="clip")
    elif name == "cython":
        benchmark(fastembed_ext.gather, w, idx, out=out, num_threads=n)
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
    assert out.tobytes() == expected.tobytes()


@pytest.mark.parametrize("backend", FRESH)
def test_gather_fresh(benchmark, backend, T, d, dist, index_dtype):
    w = table(T, d)
    idx = indices(T, dist, index_dtype)
    name, n = backend_threads(backend)
    benchmark.group = _group("gather", T, d, dist, index_dtype)
    describe(benchmark, name, n)
    if name == "numpy-take":
        out = benchmark(np.take, w, idx, axis=0)
    elif name == "numpy-fancy":
        out = benchmark(w.__getitem__, idx)
    elif name == "cython":
        out = benchmark(fastembed_ext.gather, w, idx, num_threads=n)
    else:
        torch = torch_or_skip()
        torch.set_num_threads(n)
        wt, it = torch.from_numpy(w), torch.from_numpy(idx.astype(np.int64))
        out = benchmark(torch.embedding, wt, it).numpy()
    assert out.shape == (B, d) and out.tobytes() == np.take(w, idx, axis=0).tobytes()

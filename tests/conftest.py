"""Shared generators, expectations and fixtures for the fastembed_ext tests.

The suite runs against the installed package (``import fastembed_ext``), never
the source tree.  Everything random here is seeded: a test's generator is
seeded from its node id, so a failure reproduces on the next run.

What is "correct" is spelled out independently of the package where it can
be: ``np.take`` for gather, ``np.add.at`` for scatter-add, and the scale rule
of ``_reference.scale_by_freq`` for ``scale_grad_by_freq``.  Results are
compared through integer views, so NaN payloads and the sign of zero count.
"""

import os
import zlib
from collections import namedtuple

import numpy as np
import pytest
from hypothesis import settings

import fastembed_ext as fe
from fastembed_ext import _kernels, _runtime
from fastembed_ext._workloads import edge_values, from_bits, random_bits, special_values

# moderate by default so the suite stays fast; HYPOTHESIS_PROFILE=thorough for a long hunt
settings.register_profile("fastembed_ext", deadline=None, max_examples=150, print_blob=True)
settings.register_profile("thorough", deadline=None, max_examples=1000, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fastembed_ext"))

VALUE_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))
# accepted, bounds-checked, then converted: never used zero-copy by the kernels
OTHER_INDEX_DTYPES = tuple(np.dtype(t) for t in (
    "int8", "int16", "uint8", "uint16", "uint32", "uint64", ">i8", ">i4", ">u2"))
BACKENDS = ("cython", "numpy")
# "auto" also takes the compiled lean entry points for plain calls
ALL_BACKENDS = ("auto", "cython", "numpy")
THREAD_COUNTS = (1, 2, 3, 8)
PARALLEL_BATCH, PARALLEL_DIM = 20000, 16

UINT_OF_SIZE = {2: np.dtype(np.uint16), 4: np.dtype(np.uint32), 8: np.dtype(np.uint64)}


def _ceil_div(a, b):
    return -(-a // b)


def parallel_gather_sizes(dtype):
    """(T, B, d) for a gather whose batch is above the kernels' parallel threshold.

    The thresholds come from ``info()["build"]``, so the tests follow the
    kernels when they are retuned.
    """
    build = fe.info()["build"]
    itemsize = np.dtype(dtype).itemsize
    d = PARALLEL_DIM
    threshold = build.get("parallel_min_bytes", 0)
    batch = max(PARALLEL_BATCH, 2 * _ceil_div(threshold, d * itemsize))
    return 1000, batch, d


def parallel_scatter_sizes(dtype):
    """(T, B, d) for a scatter-add that does start threads when asked for more than one.

    Honours every threshold the build reports: bytes moved and row width.
    """
    build = fe.info()["build"]
    itemsize = np.dtype(dtype).itemsize
    d = max(PARALLEL_DIM, _ceil_div(build.get("scatter_parallel_min_row_bytes", 0), itemsize))
    threshold = build.get("parallel_min_bytes", 0)
    batch = max(PARALLEL_BATCH, 2 * _ceil_div(threshold, d * itemsize))
    return 16384, batch, d


def dtype_id(dtype):
    dtype = np.dtype(dtype)
    return dtype.name if dtype.isnative else dtype.str


# --------------------------------------------------------------------------
# bit-level comparison

def bits(a):
    """The bytes of ``a`` as unsigned integers of its item size (a C-ordered copy)."""
    a = np.array(a, order="C", copy=True)
    return a.view(UINT_OF_SIZE[a.dtype.itemsize])


def assert_bits_equal(got, want, what="result"):
    """``got`` and ``want`` hold the same bits (same dtype, shape, every bit of every item)."""
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, expected {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    gb, wb = bits(got), bits(want)
    differ = gb != wb
    if differ.any():
        pos = tuple(int(i) for i in np.argwhere(differ)[0])
        width = 2 * got.dtype.itemsize
        raise AssertionError(
            f"{what}: {int(differ.sum())} of {differ.size} items differ in their bits; first at "
            f"{pos}: got 0x{int(gb[pos]):0{width}x} ({got[pos]!r}), "
            f"expected 0x{int(wb[pos]):0{width}x} ({want[pos]!r})")


class DLPackOnly:
    """An object that offers nothing but the DLPack protocol."""

    def __init__(self, array):
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


class Snapshot:
    """The bytes of some arrays, to show later that nothing wrote to them."""

    def __init__(self, **arrays):
        self._saved = {name: (a, np.asarray(a).tobytes(), np.asarray(a).shape)
                       for name, a in arrays.items() if a is not None}

    def assert_unchanged(self):
        for name, (a, data, shape) in self._saved.items():
            now = np.asarray(a)
            assert now.shape == shape, f"{name} changed shape"
            assert now.tobytes() == data, f"{name} was written to"


# --------------------------------------------------------------------------
# value generators: special_values, random_bits and edge_values come from
# fastembed_ext._workloads (shared with the command line and bench/)

def small_integers(rng, dtype, shape, bound=3):
    """Integer-valued floats in [-bound, bound]: every sum of a few of them is exact."""
    return rng.integers(-bound, bound + 1, size=shape).astype(dtype)


# --------------------------------------------------------------------------
# the edge-case generator

EdgeCase = namedtuple("EdgeCase", "name num_rows dim index_shape pattern")

EDGE_CASES = (
    EdgeCase("empty_batch", 5, 3, (0,), "uniform"),
    EdgeCase("empty_table_and_batch", 0, 3, (0,), "uniform"),
    EdgeCase("one_row_table", 1, 4, (9,), "uniform"),
    EdgeCase("d_is_1", 7, 1, (13,), "uniform"),
    EdgeCase("d_is_0", 7, 0, (5,), "uniform"),
    EdgeCase("0d_index", 6, 5, (), "uniform"),
    EdgeCase("2d_indices", 9, 3, (4, 5), "uniform"),
    EdgeCase("3d_indices", 11, 17, (2, 3, 4), "uniform"),
    EdgeCase("3d_indices_with_empty_axis", 4, 2, (2, 0, 3), "uniform"),
    EdgeCase("all_duplicates", 20, 6, (300,), "same"),
    EdgeCase("hot_rows", 100, 8, (2000,), "hot"),
    EdgeCase("more_than_8192_indices", 50, 3, (9000,), "uniform"),
    EdgeCase("huge_d", 6, 5000, (7,), "uniform"),
    EdgeCase("vector_tails_d_33", 13, 33, (40,), "uniform"),
    EdgeCase("first_and_last_rows", 30, 9, (20,), "first_last"),
)


def make_indices(rng, num_rows, shape, dtype=np.int64, pattern="uniform"):
    """Indices in [0, num_rows) of ``shape`` and ``dtype``, laid out by ``pattern``.

    ``uniform``: independent draws; ``same``: one row repeated; ``hot``: 80% of
    the batch on two rows; ``first_last``: only rows 0 and T - 1.
    """
    size = int(np.prod(shape, dtype=np.int64))
    if size == 0:
        return np.zeros(shape, dtype=dtype)
    assert num_rows >= 1
    if pattern == "uniform":
        flat = rng.integers(0, num_rows, size=size)
    elif pattern == "same":
        flat = np.full(size, rng.integers(0, num_rows))
    elif pattern == "hot":
        flat = rng.integers(0, num_rows, size=size)
        hot = rng.random(size) < 0.8
        flat[hot] = rng.choice([0, num_rows // 2], size=int(hot.sum()))
    elif pattern == "first_last":
        flat = np.where(rng.random(size) < 0.5, 0, num_rows - 1)
    else:
        raise ValueError(pattern)
    dtype = np.dtype(dtype)
    assert flat.max() <= np.iinfo(dtype).max, "num_rows too large for this index dtype"
    return flat.astype(dtype).reshape(shape)


def edge_case_inputs(rng, case, dtype, index_dtype=np.int64):
    """(weight or grad_weight (T, d), indices S, grad S + (d,)) for an EdgeCase."""
    table = edge_values(rng, dtype, (case.num_rows, case.dim))
    idx = make_indices(rng, case.num_rows, case.index_shape, index_dtype, case.pattern)
    grad = edge_values(rng, dtype, case.index_shape + (case.dim,))
    return table, idx, grad


# --------------------------------------------------------------------------
# what the answers must be

def normalise_padding(padding_idx, num_rows):
    if padding_idx is None or padding_idx >= 0:
        return padding_idx
    return padding_idx + num_rows


def expected_gather(weight, indices):
    """``np.take`` along the rows (indices as intp: NumPy < 2 refuses to cast uint64)."""
    return np.take(np.asarray(weight), np.asarray(indices).astype(np.intp), axis=0)


def expected_scatter_add(grad_weight, indices, grad, padding_idx=None):
    """A fresh ``grad_weight`` after ``np.add.at``, rows equal to ``padding_idx`` skipped."""
    out = np.array(grad_weight, copy=True)
    idx = np.asarray(indices)
    grad = np.asarray(grad)
    pad = normalise_padding(padding_idx, out.shape[0])
    if pad is not None:
        keep = idx != pad
        idx, grad = idx[keep], grad[keep]
    with np.errstate(all="ignore"):
        np.add.at(out, idx, grad)
    return out


def scaled_by_freq(grad, indices):
    """Each ``grad[k]`` times 1 / count(indices[k]), formed as the reference defines it.

    1 / count in float64, rounded to float32 (float64 for float64 values); the
    product formed in that type, then rounded to the value dtype.
    """
    grad = np.asarray(grad)
    idx = np.asarray(indices)
    if idx.size == 0:
        return grad
    opmath = np.float64 if grad.dtype == np.float64 else np.float32
    _, inverse, counts = np.unique(idx.reshape(-1), return_inverse=True, return_counts=True)
    scale = (1.0 / counts.astype(np.float64)).astype(opmath)[inverse.reshape(-1)].reshape(idx.shape)
    with np.errstate(all="ignore"):
        return (grad.astype(opmath) * scale[..., None]).astype(grad.dtype)


def expected_embedding_backward(grad, indices, num_embeddings, padding_idx=None,
                                scale_grad_by_freq=False):
    """Zeros, then ``np.add.at`` of the (optionally frequency-scaled) gradient."""
    grad = np.asarray(grad)
    table = np.zeros((num_embeddings, grad.shape[-1]), dtype=grad.dtype)
    if scale_grad_by_freq:
        grad = scaled_by_freq(grad, indices)
    return expected_scatter_add(table, indices, grad, padding_idx)


def onehot(indices, num_rows, dtype):
    """(size of indices, num_rows) matrix with a single 1 per row."""
    flat = np.asarray(indices).reshape(-1).astype(np.int64)
    m = np.zeros((flat.size, num_rows), dtype=dtype)
    m[np.arange(flat.size), flat] = 1
    return m


# --------------------------------------------------------------------------
# fixtures

def pytest_configure(config):
    # When a property test fails, hypothesis imports its patch writer, which pulls in
    # libcst and through it a deprecated mypy_extensions.TypedDict.  Under
    # filterwarnings = error that warning turns the failure report into an
    # INTERNALERROR that hides the falsifying example; it says nothing about this package.
    config.addinivalue_line(
        "filterwarnings",
        "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")


@pytest.fixture
def rng(request):
    """A generator seeded from the test's node id: different per test, the same every run."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


# the library's process state (set_num_threads and friends)
_RUNTIME_STATE = ("threads_error", "forced_backend", "backend_error", "kernels", "kernels_error",
                  "lean_kernels")


@pytest.fixture(autouse=True)
def _restore_global_state():
    """Every test leaves the library's global state as it found it."""
    saved = {name: getattr(_runtime, name) for name in _RUNTIME_STATE}
    threads = _kernels.default_threads()
    yield
    for name, value in saved.items():
        setattr(_runtime, name, value)
    _runtime._sync_kernels()
    _kernels.set_default_threads(*threads)
    _kernels.fail_allocation(0)
    _kernels.use_naive_kernels(False)
    _kernels.run_chunks_alone(False)


@pytest.fixture(autouse=True)
def _threaded_scatter_on_any_machine():
    """The scatter-add plan judges the machine (its load among others); the tests
    switch that judgement off so that every call with two or more threads above
    the parallel threshold runs the threaded kernel, whatever else is running.
    (The plan itself is tested with it on, in test_threads_and_config.py.)"""
    _kernels.scatter_heuristics(False)
    yield
    _kernels.scatter_heuristics(True)
    _kernels.use_f16c(True)
    _kernels.use_avx2(True)
    _kernels.set_isa_level(2)


def _isa_name(level):
    return ("sse2", "avx", "avx512f")[level]


@pytest.fixture(params=[0, 1, 2], ids=_isa_name)
def isa_level(request):
    """Each instruction-set level for float32/float64 adds that this CPU has."""
    level = request.param
    got = _kernels.set_isa_level(level)
    if got != level:
        pytest.skip(f"this CPU does not have {_isa_name(level)}")
    yield level
    _kernels.set_isa_level(2)


def _cpu_switch(name, switch, what):
    """A fixture that runs a test with the kernels' `switch` on (where the CPU
    has `name`) and off, and turns it back on after."""
    @pytest.fixture(name=name, params=[True, False], ids=[f"{name}_on", f"{name}_off"])
    def fixture(request):
        on = request.param
        state = switch(on)
        if on and not state:
            pytest.skip(f"this CPU has no {name.upper()}")
        yield state
        switch(True)
    fixture.__doc__ = what
    return fixture


f16c = _cpu_switch("f16c", _kernels.use_f16c,
                   "The F16C float16 path on (where the CPU has it) and off (portable conversions).")
avx2 = _cpu_switch("avx2", _kernels.use_avx2,
                   "The AVX2 bag kernels on (where the CPU has AVX2) and off (their AVX builds).")


@pytest.fixture
def torch():
    """PyTorch, if installed: the package must work without it."""
    return pytest.importorskip("torch")


@pytest.fixture
def default_threads():
    """The library default thread count, restored by ``_restore_global_state``."""
    return fe.get_num_threads()

"""Every operation of the matrix, every value dtype, index dtype and shape case:
the compiled path gives the bits of the NumPy reference and of the naive twin
kernels, for 1, 2, 3 and 8 threads and through ``backend="auto"``, and never
writes an input.
"""

import numpy as np
import pytest

from fastembed_ext import _kernels

from .conftest import Snapshot, assert_bits_equal, dtype_id
from .matrix import CASES, INDEX_DTYPES, OPS, THREADS, VALUE_DTYPES, ids, parallel_case


def _assert_same(got, want, what):
    assert len(got) == len(want), f"{what}: {len(got)} results, expected {len(want)}"
    for k, (g, w) in enumerate(zip(got, want)):
        assert_bits_equal(g, w, f"{what}, result {k}")


def _check_every_path(call, thread_counts):
    before = Snapshot(**call.inputs())
    want = call.run(backend="numpy")
    for n in thread_counts:
        _assert_same(call.run(backend="cython", num_threads=n), want, f"{n} threads")
    _assert_same(call.run(backend="auto"), want, "backend='auto'")
    _kernels.use_naive_kernels(True)
    try:
        _assert_same(call.run(backend="cython"), want, "naive twin kernels")
    finally:
        _kernels.use_naive_kernels(False)
    before.assert_unchanged()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("dtype", VALUE_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("op", OPS, ids=ids)
def test_every_operation_is_the_reference_and_the_naive_twin_bit_for_bit(op, dtype, index_dtype,
                                                                         case, rng):
    _check_every_path(op.make(rng, case, dtype, index_dtype), THREADS)


@pytest.mark.parametrize("op", OPS, ids=ids)
def test_every_operation_above_the_thread_thresholds_is_thread_count_independent(op, rng):
    # float32 only: the 16-bit and float64 kernels share the partition and the
    # thread split (test_threads_and_config.py runs them threaded)
    _check_every_path(op.make(rng, parallel_case(), np.dtype(np.float32), np.dtype(np.int64)),
                      THREADS)

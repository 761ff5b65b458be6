"""Every class of bad input raises a precise error that names the argument,
and a call that raises leaves every buffer, inputs and destination, as it was.

Each case runs with backend "auto" (which tries the compiled lean entry
points first), "cython" and "numpy": all three must reject the same call with
the same error, having written nothing.
"""

import re

import numpy as np
import pytest

import fastembed_ext as fe

from .conftest import (
    ALL_BACKENDS,
    Snapshot,
    assert_bits_equal,
    edge_values,
    expected_embedding_backward,
    expected_scatter_add,
    make_indices,
    parallel_scatter_sizes,
)

T, D = 10, 4
IDX_SHAPE = (2, 3)


class Buffers:
    """Fresh inputs and destinations for one call, all snapshotted before it."""

    def __init__(self, rng, dtype=np.float32):
        self.weight = edge_values(rng, dtype, (T, D))
        self.indices = np.array([[1, 9, 0], [3, 3, 2]])
        self.out = np.full(IDX_SHAPE + (D,), 7, dtype=dtype)
        self.grad_weight = edge_values(rng, dtype, (T, D))
        self.grad = edge_values(rng, dtype, IDX_SHAPE + (D,))
        self.extra = {}

    def keep(self, name, arr):
        """Register a buffer a case makes, so that it is snapshotted too."""
        self.extra[name] = arr
        return arr

    def snapshot(self):
        return Snapshot(weight=self.weight, indices=self.indices, out=self.out,
                        grad_weight=self.grad_weight, grad=self.grad, **self.extra)


def _unaligned(arr):
    """A copy of ``arr`` whose data pointer is one byte off its dtype's alignment."""
    raw = np.zeros(arr.nbytes + 1, np.uint8)
    view = raw[1:].view(arr.dtype).reshape(arr.shape)
    view[...] = arr
    assert not view.flags.aligned
    return view


def _read_only(arr):
    arr = arr.copy()
    arr.flags.writeable = False
    return arr


# (id, call, exception, regex the message must match)
GATHER_CASES = [
    ("weight_1d", lambda b, be: fe.gather(b.weight[0], b.indices, backend=be),
     ValueError, r"weight must be 2-D \(T, d\), got shape \(4,\)"),
    ("weight_3d", lambda b, be: fe.gather(b.weight[None], b.indices, backend=be),
     ValueError, r"weight must be 2-D \(T, d\), got shape \(1, 10, 4\)"),
    ("weight_int", lambda b, be: fe.gather(b.keep("w", np.ones((T, D), np.int32)), b.indices,
                                           backend=be),
     TypeError, r"weight must have dtype float16, float32 or float64.*got int32"),
    ("weight_complex",
     lambda b, be: fe.gather(np.ones((T, D), np.complex64), b.indices, backend=be),
     TypeError, r"weight must have dtype float16, float32 or float64.*got complex64"),
    ("weight_non_native_byte_order",
     lambda b, be: fe.gather(b.keep("w", b.weight.astype(">f4")), b.indices, backend=be),
     TypeError, r"weight must have dtype float16, float32 or float64.*byte order >f4"),
    ("weight_object", lambda b, be: fe.gather(np.array([["a"]], dtype=object), b.indices,
                                              backend=be),
     TypeError, r"weight must have dtype"),
    ("weight_ragged_list", lambda b, be: fe.gather([[1.0], [1.0, 2.0]], b.indices, backend=be),
     TypeError, r"weight must be an array-like, buffer or DLPack object"),
    ("indices_float", lambda b, be: fe.gather(b.weight, b.indices.astype(np.float64), backend=be),
     TypeError, r"indices must have an integer dtype, got float64"),
    ("indices_bool", lambda b, be: fe.gather(b.weight, b.indices > 1, backend=be),
     TypeError, r"indices must have an integer dtype, got bool"),
    ("indices_object", lambda b, be: fe.gather(b.weight, b.indices.astype(object), backend=be),
     TypeError, r"indices must have an integer dtype, got object"),
    ("indices_str", lambda b, be: fe.gather(b.weight, ["1"], backend=be),
     TypeError, r"indices must have an integer dtype"),
    ("indices_python_floats", lambda b, be: fe.gather(b.weight, [1.0, 2.0], backend=be),
     TypeError, r"indices must have an integer dtype, got float64"),
    ("index_equal_to_T", lambda b, be: fe.gather(b.weight, [0, 1, 10], backend=be),
     IndexError, r"^indices\[2\] = 10 is out of range for weight with 10 rows"),
    ("index_in_nd_indices",
     lambda b, be: fe.gather(b.weight, np.array([[1, 9, 0], [3, 3, 12]]), backend=be),
     IndexError, r"^indices\[1, 2\] = 12 is out of range for weight with 10 rows"),
    ("negative_index", lambda b, be: fe.gather(b.weight, np.array([[1, -1, 0], [3, 3, 2]]),
                                               backend=be),
     IndexError, r"^indices\[0, 1\] = -1 is out of range for weight with 10 rows.*negative"),
    ("negative_int32_index", lambda b, be: fe.gather(b.weight, np.array([4, -3], np.int32),
                                                     backend=be),
     IndexError, r"^indices\[1\] = -3 is out of range"),
    ("0d_index", lambda b, be: fe.gather(b.weight, np.int64(10), backend=be),
     IndexError, r"^indices\[\(\)\] = 10 is out of range for weight with 10 rows"),
    ("first_bad_index_is_reported",
     lambda b, be: fe.gather(b.weight, np.array([[1, 9, 11], [-4, 30, 2]]), backend=be),
     IndexError, r"^indices\[0, 2\] = 11 "),
    ("uint64_index_above_int64",
     lambda b, be: fe.gather(b.weight, np.array([2 ** 64 - 1], np.uint64),
                             backend=be),
     IndexError, r"^indices\[0\] = 18446744073709551615 is out of range"),
    ("int8_negative_index", lambda b, be: fe.gather(b.weight, np.array([1, -128], np.int8),
                                                    backend=be),
     IndexError, r"^indices\[1\] = -128 is out of range"),
    ("big_endian_index", lambda b, be: fe.gather(b.weight, np.array([1, 10], ">i8"), backend=be),
     IndexError, r"^indices\[1\] = 10 is out of range"),
    ("index_into_empty_table", lambda b, be: fe.gather(b.weight[:0], [0], backend=be),
     IndexError, r"^indices\[0\] = 0 is out of range for weight with 0 rows"),
    ("index_out_of_range_with_out",
     lambda b, be: fe.gather(b.weight, np.array([[1, 9, 0], [3, 10, 2]]), out=b.out, backend=be),
     IndexError, r"^indices\[1, 1\] = 10 is out of range for weight with 10 rows"),
    ("index_out_of_range_with_2d_out",
     lambda b, be: fe.gather(b.weight, np.array([1, 2, 3, 4, 5, 10]), out=b.out.reshape(6, D),
                             backend=be),
     IndexError, r"^indices\[5\] = 10 is out of range"),
    ("negative_index_with_2d_out",
     lambda b, be: fe.gather(b.weight, np.array([1, 2, -3, 4, 5, 6], np.int32),
                             out=b.out.reshape(6, D), backend=be),
     IndexError, r"^indices\[2\] = -3 is out of range"),
    ("out_wrong_dtype",
     lambda b, be: fe.gather(b.weight, b.indices, out=b.keep("o", np.zeros((2, 3, D))), backend=be),
     TypeError, r"out must have the dtype of weight \(float32\), got float64"),
    ("out_non_native_byte_order",
     lambda b, be: fe.gather(b.weight, b.indices, out=b.keep("o", np.zeros((2, 3, D), ">f4")),
                             backend=be),
     TypeError, r"out must have the dtype of weight"),
    ("out_wrong_shape", lambda b, be: fe.gather(b.weight, b.indices, out=b.out.reshape(6, D),
                                                backend=be),
     ValueError, r"out must have shape \(2, 3, 4\), got \(6, 4\)"),
    ("out_2d_wrong_rows", lambda b, be: fe.gather(b.weight, np.arange(5), out=b.out.reshape(6, D),
                                                  backend=be),
     ValueError, r"out must have shape \(5, 4\), got \(6, 4\)"),
    ("out_read_only", lambda b, be: fe.gather(b.weight, b.indices,
                                              out=b.keep("o", _read_only(b.out)), backend=be),
     ValueError, r"out must be writable"),
    ("out_fortran_order",
     lambda b, be: fe.gather(b.weight, np.arange(6),
                             out=b.keep("o", np.asfortranarray(np.zeros((6, D), np.float32))),
                             backend=be),
     ValueError, r"out must be C-contiguous"),
    ("out_strided_view",
     lambda b, be: fe.gather(b.weight, np.arange(3),
                             out=b.keep("o", np.zeros((6, D), np.float32))[::2], backend=be),
     ValueError, r"out must be C-contiguous"),
    ("out_unaligned", lambda b, be: fe.gather(b.weight, b.indices,
                                              out=b.keep("o", _unaligned(b.out)), backend=be),
     ValueError, r"out must be aligned"),
    ("out_a_list", lambda b, be: fe.gather(b.weight, [0], out=[[0.0] * D], backend=be),
     TypeError, r"out must be a NumPy ndarray \(it is written in place\), got list"),
    ("out_a_memoryview", lambda b, be: fe.gather(b.weight, [0, 1, 2, 3, 4, 5],
                                                 out=memoryview(b.out.reshape(6, D)), backend=be),
     TypeError, r"out must be a NumPy ndarray.*got memoryview"),
    ("out_overlaps_weight",
     lambda b, be: fe.gather(b.weight, np.arange(2), out=b.weight[5:7], backend=be),
     ValueError, r"out must not overlap weight"),
    ("out_is_weight",
     lambda b, be: fe.gather(b.weight, np.arange(T), out=b.weight, backend=be),
     ValueError, r"out must not overlap weight"),
    ("out_overlaps_weight_passed_as_memoryview",
     lambda b, be: fe.gather(memoryview(b.weight), np.arange(2), out=b.weight[8:], backend=be),
     ValueError, r"out must not overlap weight"),
    ("out_overlaps_indices",
     lambda b, be: fe.gather(b.keep("w64", np.ones((T, D))),
                             b.keep("o64", np.zeros((4, D), np.float64)).view(np.int64)[0],
                             out=b.extra["o64"], backend=be),
     ValueError, r"out must not overlap indices"),
    ("backend_unknown", lambda b, be: fe.gather(b.weight, b.indices, backend="fortran"),
     ValueError, r"backend must be one of 'auto', 'cython', 'numpy', got 'fortran'"),
    ("backend_wrong_case",
     lambda b, be: fe.gather(b.weight, b.indices, out=b.out, backend="Cython"),
     ValueError, r"backend must be one of .*got 'Cython'"),
    ("backend_none", lambda b, be: fe.gather(b.weight, b.indices, out=b.out, backend=None),
     ValueError, r"backend must be one of .*got None"),
]

THREAD_CASES = [
    ("num_threads_zero", 0, ValueError, r"num_threads must be >= 1, got 0"),
    ("num_threads_negative", -2, ValueError, r"num_threads must be >= 1, got -2"),
    ("num_threads_float", 2.0, TypeError, r"num_threads must be a positive integer"),
    ("num_threads_bool", True, TypeError, r"num_threads must be a positive integer.*True"),
    ("num_threads_numpy_bool", np.bool_(True), TypeError,
     r"num_threads must be a positive integer"),
    ("num_threads_str", "2", TypeError, r"num_threads must be a positive integer"),
    ("num_threads_numpy_float", np.float64(2), TypeError,
     r"num_threads must be a positive integer"),
]

SCATTER_CASES = [
    ("grad_weight_a_list", lambda b, be: fe.scatter_add(b.grad_weight.tolist(), b.indices, b.grad,
                                                        backend=be),
     TypeError, r"grad_weight must be a NumPy ndarray \(it is written in place\), got list"),
    ("grad_weight_a_memoryview",
     lambda b, be: fe.scatter_add(memoryview(b.grad_weight), b.indices, b.grad, backend=be),
     TypeError, r"grad_weight must be a NumPy ndarray.*got memoryview"),
    ("grad_weight_int",
     lambda b, be: fe.scatter_add(b.keep("gw", np.zeros((T, D), np.int64)), b.indices,
                                  b.grad, backend=be),
     TypeError, r"grad_weight must have dtype float16, float32 or float64.*got int64"),
    ("grad_weight_non_native",
     lambda b, be: fe.scatter_add(b.keep("gw", b.grad_weight.astype(">f4")), b.indices,
                                  b.grad, backend=be),
     TypeError, r"grad_weight must have dtype.*byte order >f4"),
    ("grad_weight_1d",
     lambda b, be: fe.scatter_add(b.grad_weight[0], b.indices, b.grad, backend=be),
     ValueError, r"grad_weight must be 2-D \(T, d\), got shape \(4,\)"),
    ("grad_weight_3d", lambda b, be: fe.scatter_add(b.grad_weight[None], b.indices, b.grad,
                                                    backend=be),
     ValueError, r"grad_weight must be 2-D"),
    ("grad_weight_read_only",
     lambda b, be: fe.scatter_add(b.keep("gw", _read_only(b.grad_weight)), b.indices, b.grad,
                                  backend=be),
     ValueError, r"grad_weight must be writable"),
    ("grad_weight_read_only_1d_indices",
     lambda b, be: fe.scatter_add(b.keep("gw", _read_only(b.grad_weight)), b.indices.reshape(-1),
                                  b.grad.reshape(6, D), backend=be),
     ValueError, r"grad_weight must be writable"),
    ("grad_weight_fortran",
     lambda b, be: fe.scatter_add(b.keep("gw", np.asfortranarray(b.grad_weight)), b.indices,
                                  b.grad, backend=be),
     ValueError, r"grad_weight must be C-contiguous"),
    ("grad_weight_strided",
     lambda b, be: fe.scatter_add(b.keep("gw", np.zeros((2 * T, D), np.float32))[::2],
                                  b.indices, b.grad, backend=be),
     ValueError, r"grad_weight must be C-contiguous"),
    ("grad_weight_unaligned",
     lambda b, be: fe.scatter_add(b.keep("gw", _unaligned(b.grad_weight)), b.indices.reshape(-1),
                                  b.grad.reshape(6, D), backend=be),
     ValueError, r"grad_weight must be aligned"),
    ("grad_other_dtype",
     lambda b, be: fe.scatter_add(b.grad_weight, b.indices, np.ones(IDX_SHAPE + (D,)), backend=be),
     TypeError,
     r"grad must have the dtype of grad_weight \(float32\), got float64; no implicit cast"),
    ("grad_float16_into_float32",
     lambda b, be: fe.scatter_add(b.grad_weight, b.indices.reshape(-1),
                                  np.ones((6, D), np.float16), backend=be),
     TypeError, r"grad must have the dtype of grad_weight"),
    ("grad_non_native",
     lambda b, be: fe.scatter_add(b.grad_weight, b.indices, b.grad.astype(">f4"), backend=be),
     TypeError, r"grad must have the dtype of grad_weight.*byte order >f4"),
    ("grad_python_floats_into_float32",
     lambda b, be: fe.scatter_add(b.grad_weight, [0], [[1.0] * D], backend=be),
     TypeError, r"grad must have the dtype of grad_weight \(float32\), got float64"),
    ("grad_wrong_shape",
     lambda b, be: fe.scatter_add(b.grad_weight, b.indices, b.grad.reshape(6, D), backend=be),
     ValueError, r"grad must have shape indices.shape \+ \(d,\) = \(2, 3, 4\), got \(6, 4\)"),
    ("grad_wrong_d",
     lambda b, be: fe.scatter_add(b.grad_weight, b.indices.reshape(-1), b.grad.reshape(6, D)[:, :3],
                                  backend=be),
     ValueError, r"grad must have shape .* = \(6, 4\), got \(6, 3\)"),
    ("grad_wrong_batch",
     lambda b, be: fe.scatter_add(b.grad_weight, b.indices.reshape(-1)[:5], b.grad.reshape(6, D),
                                  backend=be),
     ValueError, r"grad must have shape .* = \(5, 4\), got \(6, 4\)"),
    ("indices_float", lambda b, be: fe.scatter_add(b.grad_weight, b.indices.astype(np.float32),
                                                   b.grad, backend=be),
     TypeError, r"indices must have an integer dtype, got float32"),
    ("index_equal_to_T",
     lambda b, be: fe.scatter_add(b.grad_weight, np.array([0, 1, 2, 3, 4, 10]),
                                  b.grad.reshape(6, D), backend=be),
     IndexError, r"^indices\[5\] = 10 is out of range for grad_weight with 10 rows"),
    ("index_in_nd_indices",
     lambda b, be: fe.scatter_add(b.grad_weight, np.array([[1, 9, 0], [30522, 3, 2]]), b.grad,
                                  backend=be),
     IndexError, r"^indices\[1, 0\] = 30522 is out of range for grad_weight with 10 rows"),
    ("negative_index",
     lambda b, be: fe.scatter_add(b.grad_weight, np.array([0, 1, 2, 3, 4, -1], np.int32),
                                  b.grad.reshape(6, D), backend=be),
     IndexError, r"^indices\[5\] = -1 is out of range.*negative"),
    ("padding_idx_bool", lambda b, be: fe.scatter_add(b.grad_weight, b.indices, b.grad,
                                                      padding_idx=True, backend=be),
     TypeError, r"padding_idx must be an integer or None, got True"),
    ("padding_idx_float", lambda b, be: fe.scatter_add(b.grad_weight, b.indices, b.grad,
                                                       padding_idx=1.0, backend=be),
     TypeError, r"padding_idx must be an integer or None, got 1.0"),
    ("padding_idx_str", lambda b, be: fe.scatter_add(b.grad_weight, b.indices, b.grad,
                                                     padding_idx="1", backend=be),
     TypeError, r"padding_idx must be an integer or None"),
    ("padding_idx_equal_to_T", lambda b, be: fe.scatter_add(b.grad_weight, b.indices, b.grad,
                                                            padding_idx=10, backend=be),
     ValueError, r"padding_idx must be within \[-10, 10\) for grad_weight with 10 rows, got 10"),
    ("padding_idx_below_minus_T", lambda b, be: fe.scatter_add(b.grad_weight, b.indices, b.grad,
                                                               padding_idx=-11, backend=be),
     ValueError, r"padding_idx must be within \[-10, 10\).*got -11"),
    ("grad_weight_overlaps_grad",
     lambda b, be: fe.scatter_add(b.grad_weight, np.arange(2), b.grad_weight[3:5], backend=be),
     ValueError, r"grad_weight must not overlap grad"),
    ("grad_weight_is_grad",
     lambda b, be: fe.scatter_add(b.grad_weight, np.arange(T), b.grad_weight, backend=be),
     ValueError, r"grad_weight must not overlap grad"),
    ("grad_weight_overlaps_grad_passed_as_memoryview",
     lambda b, be: fe.scatter_add(b.grad_weight, np.arange(2), memoryview(b.grad_weight[:2]),
                                  backend=be),
     ValueError, r"grad_weight must not overlap grad"),
    ("grad_weight_overlaps_indices",
     lambda b, be: fe.scatter_add(b.keep("gw64", np.zeros((T, D), np.float64)),
                                  b.extra["gw64"].view(np.int64)[0], np.ones((D, D)), backend=be),
     ValueError, r"grad_weight must not overlap indices"),
    ("backend_unknown", lambda b, be: fe.scatter_add(b.grad_weight, b.indices, b.grad, backend=""),
     ValueError, r"backend must be one of .*got ''"),
]

BACKWARD_CASES = [
    ("num_embeddings_float",
     lambda b, be: fe.embedding_backward(b.grad, b.indices, 10.0, backend=be),
     TypeError, r"num_embeddings must be an integer, got 10.0"),
    ("num_embeddings_bool",
     lambda b, be: fe.embedding_backward(b.grad, b.indices, True, backend=be),
     TypeError, r"num_embeddings must be an integer, got True"),
    ("num_embeddings_str", lambda b, be: fe.embedding_backward(b.grad, b.indices, "10", backend=be),
     TypeError, r"num_embeddings must be an integer"),
    ("num_embeddings_none",
     lambda b, be: fe.embedding_backward(b.grad, b.indices, None, backend=be),
     TypeError, r"num_embeddings must be an integer"),
    ("num_embeddings_negative", lambda b, be: fe.embedding_backward(b.grad, b.indices, -1,
                                                                    backend=be),
     ValueError, r"num_embeddings must be >= 0, got -1"),
    ("num_embeddings_too_small", lambda b, be: fe.embedding_backward(b.grad, b.indices, 9,
                                                                     backend=be),
     IndexError, r"^indices\[0, 1\] = 9 is out of range for a table with 9 rows"),
    ("scale_grad_by_freq_int", lambda b, be: fe.embedding_backward(
        b.grad, b.indices, T, scale_grad_by_freq=1, backend=be),
     TypeError, r"scale_grad_by_freq must be a bool, got 1"),
    ("scale_grad_by_freq_none", lambda b, be: fe.embedding_backward(
        b.grad, b.indices, T, scale_grad_by_freq=None, backend=be),
     TypeError, r"scale_grad_by_freq must be a bool, got None"),
    ("scale_grad_by_freq_str", lambda b, be: fe.embedding_backward(
        b.grad, b.indices, T, scale_grad_by_freq="True", backend=be),
     TypeError, r"scale_grad_by_freq must be a bool"),
    ("grad_int",
     lambda b, be: fe.embedding_backward(np.ones(IDX_SHAPE + (D,), np.int32), b.indices, T,
                                         backend=be),
     TypeError, r"grad must have dtype float16, float32 or float64.*got int32"),
    ("grad_non_native",
     lambda b, be: fe.embedding_backward(np.ones(IDX_SHAPE + (D,), ">f8"), b.indices, T,
                                         backend=be),
     TypeError, r"grad must have dtype.*byte order >f8"),
    ("grad_wrong_shape", lambda b, be: fe.embedding_backward(b.grad.reshape(6, D), b.indices, T,
                                                             backend=be),
     ValueError, r"grad must have shape indices.shape \+ \(d,\) = \(2, 3, d\), got \(6, 4\)"),
    ("grad_without_d_axis", lambda b, be: fe.embedding_backward(b.grad[..., 0], b.indices, T,
                                                                backend=be),
     ValueError, r"grad must have shape .*got \(2, 3\)"),
    ("grad_0d", lambda b, be: fe.embedding_backward(np.float32(1), np.int64(0), T, backend=be),
     ValueError, r"grad must have shape .*got \(\)"),
    ("indices_bool", lambda b, be: fe.embedding_backward(b.grad, b.indices > 0, T, backend=be),
     TypeError, r"indices must have an integer dtype, got bool"),
    ("negative_index", lambda b, be: fe.embedding_backward(
        b.grad, np.array([[1, 9, 0], [3, 3, -7]]), T, backend=be),
     IndexError, r"^indices\[1, 2\] = -7 is out of range for a table with 10 rows.*negative"),
    ("padding_idx_out_of_range", lambda b, be: fe.embedding_backward(
        b.grad, b.indices, T, padding_idx=10, backend=be),
     ValueError, r"padding_idx must be within \[-10, 10\).*got 10"),
    ("padding_idx_float", lambda b, be: fe.embedding_backward(
        b.grad, b.indices, T, padding_idx=0.5, backend=be),
     TypeError, r"padding_idx must be an integer or None"),
    ("padding_idx_with_empty_table", lambda b, be: fe.embedding_backward(
        b.grad[:, :0], b.indices[:, :0], 0, padding_idx=0, backend=be),
     ValueError, r"padding_idx must be within \[-0, 0\)"),
    ("backend_unknown", lambda b, be: fe.embedding_backward(b.grad, b.indices, T, backend="torch"),
     ValueError, r"backend must be one of .*got 'torch'"),
]


def _ids(cases):
    return [case[0] for case in cases]


def _check_rejected(call, exc, pattern, rng, backend):
    buffers = Buffers(rng)
    before = buffers.snapshot()
    with pytest.raises(exc, match=pattern):
        call(buffers, backend)
    before.assert_unchanged()
    buffers.snapshot().assert_unchanged()  # the buffers a case made on the way


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("name,call,exc,pattern", GATHER_CASES, ids=_ids(GATHER_CASES))
def test_gather_rejects_bad_input_precisely_and_writes_nothing(name, call, exc, pattern,
                                                               backend, rng):
    _check_rejected(call, exc, pattern, rng, backend)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("name,call,exc,pattern", SCATTER_CASES, ids=_ids(SCATTER_CASES))
def test_scatter_add_rejects_bad_input_precisely_and_writes_nothing(name, call, exc, pattern,
                                                                    backend, rng):
    _check_rejected(call, exc, pattern, rng, backend)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("name,call,exc,pattern", BACKWARD_CASES, ids=_ids(BACKWARD_CASES))
def test_embedding_backward_rejects_bad_input_precisely_and_leaves_inputs_unchanged(
        name, call, exc, pattern, backend, rng):
    _check_rejected(call, exc, pattern, rng, backend)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("name,num_threads,exc,pattern", THREAD_CASES, ids=_ids(THREAD_CASES))
def test_bad_num_threads_is_rejected_by_every_function_and_writes_nothing(name, num_threads, exc,
                                                                          pattern, backend, rng):
    calls = [
        lambda b, be: fe.gather(b.weight, b.indices, num_threads=num_threads, backend=be),
        lambda b, be: fe.gather(b.weight, b.indices, out=b.out, num_threads=num_threads,
                                backend=be),
        lambda b, be: fe.scatter_add(b.grad_weight, b.indices, b.grad, num_threads=num_threads,
                                     backend=be),
        lambda b, be: fe.embedding_backward(b.grad, b.indices, T, num_threads=num_threads,
                                            backend=be),
    ]
    for call in calls:
        _check_rejected(call, exc, pattern, rng, backend)


def test_the_issue_example_message_names_position_value_and_table_size(rng):
    weight = np.zeros((30522, 2), np.float32)
    idx = np.arange(20)
    idx[17] = 30522
    out = np.full((20, 2), 3, np.float32)
    before = Snapshot(weight=weight, indices=idx, out=out)
    for backend in ALL_BACKENDS:
        message = re.escape("indices[17] = 30522 is out of range for weight with 30522 rows")
        with pytest.raises(IndexError, match="^" + message):
            fe.gather(weight, idx, backend=backend)
        with pytest.raises(IndexError, match="^" + message):
            fe.gather(weight, idx, out=out, backend=backend)
    before.assert_unchanged()


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("bad", [-1, "T"], ids=["negative", "equal_to_T"])
def test_a_bad_last_index_of_a_large_batch_is_found_before_any_row_is_written(bad, backend, rng):
    # a batch big enough for the parallel kernels: the bounds check still comes first
    num_rows, batch, d = parallel_scatter_sizes(np.float32)
    gw = np.zeros((num_rows, d), np.float32)
    idx = make_indices(rng, num_rows, (batch,), np.int64)
    idx[-1] = num_rows if bad == "T" else bad
    grad = np.ones((batch, d), np.float32)
    weight = np.ones((num_rows, 4), np.float32)
    out = np.full((batch, 4), 5, np.float32)
    before = Snapshot(grad_weight=gw, indices=idx, grad=grad, weight=weight, out=out)
    position = re.escape(f"indices[{batch - 1}] = {idx[-1]} is out of range")
    with pytest.raises(IndexError, match=position):
        fe.scatter_add(gw, idx, grad, backend=backend, num_threads=2)
    with pytest.raises(IndexError, match=position):
        fe.scatter_add(gw, idx, grad, backend=backend)
    with pytest.raises(IndexError, match=position):
        fe.gather(weight, idx, out=out, backend=backend)
    if backend != "auto":
        with pytest.raises(IndexError, match=position):
            fe.embedding_backward(grad, idx, num_rows, backend=backend, num_threads=2)
    before.assert_unchanged()


def test_numpy_backend_rejects_the_same_calls_as_the_compiled_backend(rng):
    # an integer dtype the numpy path checks by itself (not the compiled bounds check)
    weight = edge_values(rng, np.float64, (T, D))
    for index_dtype in (np.int8, np.uint16, np.uint64, ">i8"):
        idx = np.array([[0, 1], [9, 10]], dtype=index_dtype)
        for backend in ALL_BACKENDS:
            with pytest.raises(IndexError, match=r"^indices\[1, 1\] = 10 is out of range"):
                fe.gather(weight, idx, backend=backend)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=str)
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_floating_point_exceptions_never_interrupt_a_call_half_way(backend, dtype):
    # inf - inf, overflow and signalling NaNs raise IEEE flags; np.add.at would turn them
    # into warnings (errors here) or FloatingPointError after writing. Both backends stay
    # silent, even under np.errstate(all="raise"), and give the np.add.at bits.
    big = np.finfo(dtype).max
    table = np.array([[np.inf, big, 1.0], [0.0, -0.0, np.nan]], dtype=dtype)
    itemsize = np.dtype(dtype).itemsize
    snan = {2: 0x7C01, 4: 0x7F800001, 8: 0x7FF0000000000001}[itemsize]
    grad = np.array([[-np.inf, big, 1.0], [1.0, 1.0, 1.0]], dtype=dtype)
    grad.view(f"u{itemsize}")[1, 0] = snan
    idx = np.array([0, 1])
    want = expected_scatter_add(table, idx, grad)
    gw = table.copy()
    with np.errstate(all="raise"):
        fe.scatter_add(gw, idx, grad, backend=backend)
        got = fe.embedding_backward(grad, idx, 2, scale_grad_by_freq=True,
                                    backend="cython" if backend == "auto" else backend)
    assert_bits_equal(gw, want)
    assert_bits_equal(got, expected_embedding_backward(grad, idx, 2, None, True))

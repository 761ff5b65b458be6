"""What an input may be: any array-like, buffer or DLPack object, torch CPU
tensors without a copy, read-only, non-contiguous, Fortran-order, unaligned
and broadcast arrays, with the same bits as a plain C-contiguous ndarray.

Destinations (``out``, ``grad_weight``) are the exception: they are written
in place, so anything but a writable, C-contiguous ndarray of the exact
dtype and shape is refused (see test_errors.py), never silently copied.
"""

import array

import numpy as np
import pytest

import fastembed_ext as fe
from fastembed_ext import _checks

from .conftest import (
    ALL_BACKENDS,
    BACKENDS,
    DLPackOnly,
    INDEX_DTYPES,
    VALUE_DTYPES,
    Snapshot,
    assert_bits_equal,
    dtype_id,
    edge_values,
    expected_embedding_backward,
    expected_gather,
    expected_scatter_add,
    make_indices,
)


def _assert_all_three(weight, indices, grad, backend, plain_weight, plain_indices, plain_grad):
    """gather, scatter_add (into zeros) and embedding_backward of the given inputs give the
    bits they give for the plain arrays ``plain_*`` holding the same values."""
    num_rows = plain_weight.shape[0]
    assert_bits_equal(fe.gather(weight, indices, backend=backend),
                      expected_gather(plain_weight, plain_indices), "gather")
    zeros = np.zeros((num_rows, plain_grad.shape[-1]), plain_grad.dtype)
    gw = zeros.copy()
    fe.scatter_add(gw, indices, grad, backend=backend)
    assert_bits_equal(gw, expected_scatter_add(zeros, plain_indices, plain_grad), "scatter_add")
    if backend != "auto":
        got = fe.embedding_backward(grad, indices, num_rows, scale_grad_by_freq=True,
                                    backend=backend)
        assert_bits_equal(got, expected_embedding_backward(plain_grad, plain_indices, num_rows,
                                                           None, True), "embedding_backward")


# --------------------------------------------------------------------------
# array-likes and buffers

@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_nested_lists_and_tuples_are_read_as_arrays(backend):
    weight = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    got = fe.gather(weight, (2, 0, 2), backend=backend)
    assert_bits_equal(got, np.array([[5.0, 6.0], [1.0, 2.0], [5.0, 6.0]]))
    gw = np.zeros((3, 2))
    fe.scatter_add(gw, [[1, 1]], [[[1.0, 2.0], [3.0, 4.0]]], backend=backend)
    assert_bits_equal(gw, np.array([[0.0, 0.0], [4.0, 6.0], [0.0, 0.0]]))


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_python_and_numpy_integer_scalars_are_0d_indices(backend, rng):
    weight = edge_values(rng, np.float32, (5, 3))
    for index in (4, np.int64(4), np.uint8(4), np.array(4, np.int32)):
        assert_bits_equal(fe.gather(weight, index, backend=backend), weight[4])
        out = np.empty(3, np.float32)
        assert fe.gather(weight, index, out=out, backend=backend) is out
        assert_bits_equal(out, weight[4])
    gw = np.zeros((5, 3), np.float32)
    fe.scatter_add(gw, 2, np.ones(3, np.float32), backend=backend)
    assert_bits_equal(gw[2], np.ones(3, np.float32))


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_memoryviews_and_array_array_are_read_as_buffers(backend, rng):
    weight = edge_values(rng, np.float64, (6, 4))
    idx = [5, 0, 3, 3]
    grad = edge_values(rng, np.float64, (4, 4))
    for index_buffer in (array.array("q", idx), array.array("i", idx), array.array("B", idx),
                         memoryview(np.array(idx, np.int32)), memoryview(array.array("l", idx))):
        _assert_all_three(memoryview(weight), index_buffer, memoryview(grad), backend,
                          weight, np.array(idx), grad)
    # a 1-D float buffer is the gradient of a 0-d index
    gw = np.zeros((6, 3))
    fe.scatter_add(gw, 1, array.array("d", [1.0, -0.0, 2.5]), backend=backend)
    assert_bits_equal(gw[1], np.array([1.0, 0.0, 2.5]))


def test_a_non_native_buffer_format_is_refused_like_a_non_native_array():
    big_endian = memoryview(np.zeros((3, 2), ">f8"))
    with pytest.raises(TypeError, match=r"weight must have dtype .*byte order"):
        fe.gather(big_endian, [0])


class BrokenDLPackWithArray:
    """DLPack that fails, and the array protocol as the fallback."""

    def __init__(self, array):
        self._array = array

    def __dlpack__(self, **kwargs):
        raise BufferError("no DLPack today")

    def __dlpack_device__(self):
        return (1, 0)

    def __array__(self, dtype=None, copy=None):
        return self._array


class ArrayInterfaceOnly:
    def __init__(self, array):
        self.__array_interface__ = array.__array_interface__
        self._keep = array


@pytest.mark.parametrize("wrapper", [DLPackOnly, BrokenDLPackWithArray, ArrayInterfaceOnly])
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_dlpack_and_array_protocol_objects_are_read(backend, wrapper, rng):
    weight = edge_values(rng, np.float32, (7, 5))
    idx = make_indices(rng, 7, (3, 4), np.int64, "uniform")
    grad = edge_values(rng, np.float32, (3, 4, 5))
    _assert_all_three(wrapper(weight), wrapper(idx), wrapper(grad), backend, weight, idx, grad)


def test_a_dlpack_object_is_read_without_a_copy(rng):
    weight = edge_values(rng, np.float16, (7, 5))
    assert np.shares_memory(_checks.as_input(DLPackOnly(weight), "weight"), weight)


@pytest.mark.parametrize("dtype", VALUE_DTYPES, ids=dtype_id)
def test_ndarray_subclasses_are_read_as_their_data(dtype, rng):
    class Tagged(np.ndarray):
        pass

    weight = edge_values(rng, dtype, (6, 3))
    idx = np.array([[5, 0], [1, 1]])
    grad = edge_values(rng, dtype, (2, 2, 3))
    for backend in ALL_BACKENDS:
        _assert_all_three(weight.view(Tagged), idx.view(Tagged), grad.view(Tagged), backend,
                          weight, idx, grad)
        out = np.empty((2, 2, 3), dtype).view(Tagged)
        assert fe.gather(weight, idx, out=out, backend=backend) is out
        assert_bits_equal(np.asarray(out), expected_gather(weight, idx))


# --------------------------------------------------------------------------
# torch

@pytest.mark.parametrize("dtype", VALUE_DTYPES, ids=dtype_id)
def test_torch_cpu_tensors_are_read_without_a_copy(torch, dtype, rng):
    weight = torch.from_numpy(edge_values(rng, dtype, (8, 3)))
    for index_dtype in (torch.int32, torch.int64):
        idx = torch.tensor([7, 0, 7], dtype=index_dtype)
        as_array = _checks.as_input(idx, "indices")
        assert np.shares_memory(as_array, idx.numpy())
        flat = _checks.checked_flat_indices(as_array, 8, "weight", "cython")
        assert np.shares_memory(flat, idx.numpy()), "int32/int64 indices are used as they are"
    as_array = _checks.as_input(weight, "weight")
    assert np.shares_memory(as_array, weight.numpy())
    assert as_array.dtype == dtype


@pytest.mark.parametrize("dtype", VALUE_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_torch_inputs_give_the_bits_of_numpy_inputs(torch, backend, dtype, rng):
    weight = edge_values(rng, dtype, (9, 4))
    idx = make_indices(rng, 9, (2, 5), np.int64, "hot")
    grad = edge_values(rng, dtype, (2, 5, 4))
    for index_dtype in (np.int64, np.int32, np.int16, np.uint8):
        t_idx = torch.from_numpy(idx.astype(index_dtype))
        _assert_all_three(torch.from_numpy(weight), t_idx, torch.from_numpy(grad), backend,
                          weight, idx, grad)
    before = Snapshot(weight=weight, indices=idx, grad=grad)
    # non-contiguous tensor views: a transposed table and every other gradient row
    wide = torch.from_numpy(np.ascontiguousarray(weight.T))
    _assert_all_three(wide.t(), torch.from_numpy(idx), torch.from_numpy(grad), backend,
                      weight, idx, grad)
    doubled = torch.from_numpy(np.repeat(grad, 2, axis=1))
    _assert_all_three(torch.from_numpy(weight), torch.from_numpy(idx), doubled[:, ::2], backend,
                      weight, idx, grad)
    before.assert_unchanged()


def test_torch_tensors_are_refused_as_destinations(torch, rng):
    weight = edge_values(rng, np.float32, (4, 3))
    out = torch.zeros(2, 3)
    gw = torch.zeros(4, 3)
    for backend in ALL_BACKENDS:
        with pytest.raises(TypeError, match=r"out must be a NumPy ndarray.*got Tensor"):
            fe.gather(weight, [0, 1], out=out, backend=backend)
        with pytest.raises(TypeError, match=r"grad_weight must be a NumPy ndarray.*got Tensor"):
            fe.scatter_add(gw, [0, 1], np.ones((2, 3), np.float32), backend=backend)
    assert not out.any() and not gw.any()


def test_torch_tensors_numpy_cannot_read_are_a_type_error_naming_the_argument(torch):
    bf16 = torch.zeros(4, 3, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match=r"^weight "):
        fe.gather(bf16, [0])
    needs_grad = torch.zeros(4, 3, requires_grad=True)
    with pytest.raises(TypeError, match=r"^weight must be an array-like, buffer or DLPack object"):
        fe.gather(needs_grad, [0])
    with pytest.raises(TypeError, match=r"^grad must be an array-like, buffer or DLPack object"):
        fe.embedding_backward(needs_grad, [0, 1, 2, 3], 4)


# --------------------------------------------------------------------------
# layouts

def _layouts(plain, rng):
    """(name, view) pairs holding the values of ``plain`` in other memory layouts."""
    views = [("c_contiguous", plain)]
    ro = plain.copy()
    ro.flags.writeable = False
    views.append(("read_only", ro))
    views.append(("fortran", np.asfortranarray(plain)))
    padded = np.zeros(plain.shape[:-1] + (plain.shape[-1] * 2 + 1,), plain.dtype)
    padded[..., 1::2] = plain
    views.append(("strided_last_axis", padded[..., 1::2]))
    spaced = np.zeros((plain.shape[0] * 3,) + plain.shape[1:], plain.dtype)
    spaced[::3] = plain
    views.append(("every_third_row", spaced[::3]))
    views.append(("reversed_rows", np.ascontiguousarray(plain[::-1])[::-1]))
    raw = np.zeros(plain.nbytes + 1, np.uint8)
    unaligned = raw[1:].view(plain.dtype).reshape(plain.shape)
    unaligned[...] = plain
    views.append(("unaligned", unaligned))
    return views


@pytest.mark.parametrize("index_dtype", INDEX_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("dtype", VALUE_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_every_input_layout_gives_the_bits_of_a_c_contiguous_array(backend, dtype, index_dtype,
                                                                   rng):
    weight = edge_values(rng, dtype, (11, 6))
    idx = make_indices(rng, 11, (4, 5), index_dtype, "uniform")
    grad = edge_values(rng, dtype, (4, 5, 6))
    want_gather = expected_gather(weight, idx)
    zeros = np.zeros((11, 6), dtype)
    want_scatter = expected_scatter_add(zeros, idx, grad)
    want_backward = expected_embedding_backward(grad, idx, 11, None, True)
    for (wname, w), (iname, i), (gname, g) in zip(_layouts(weight, rng), _layouts(idx, rng),
                                                  _layouts(grad, rng)):
        label = f"weight {wname}, indices {iname}, grad {gname}"
        before = Snapshot(weight=w, indices=i, grad=g)
        assert_bits_equal(fe.gather(w, i, backend=backend), want_gather, label)
        out = np.empty(idx.shape + (6,), dtype)
        assert_bits_equal(fe.gather(w, i, out=out, backend=backend), want_gather, label)
        gw = zeros.copy()
        fe.scatter_add(gw, i, g, backend=backend)
        assert_bits_equal(gw, want_scatter, label)
        if backend != "auto":
            got = fe.embedding_backward(g, i, 11, scale_grad_by_freq=True, backend=backend)
            assert_bits_equal(got, want_backward, label)
        before.assert_unchanged()


@pytest.mark.parametrize("dtype", VALUE_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_plain_1d_calls_in_unusual_layouts_give_the_same_bits(backend, dtype, rng):
    # 1-D indices and 2-D arrays: the shapes the compiled lean entry points take
    weight = edge_values(rng, dtype, (13, 8))
    idx = make_indices(rng, 13, (40,), np.int64, "uniform")
    grad = edge_values(rng, dtype, (40, 8))
    want_gather = expected_gather(weight, idx)
    zeros = np.zeros((13, 8), dtype)
    want_scatter = expected_scatter_add(zeros, idx, grad)
    for (wname, w), (iname, i), (gname, g) in zip(_layouts(weight, rng), _layouts(idx, rng),
                                                  _layouts(grad, rng)):
        label = f"weight {wname}, indices {iname}, grad {gname}"
        out = np.empty((40, 8), dtype)
        assert_bits_equal(fe.gather(w, i, out=out, backend=backend), want_gather, label)
        gw = zeros.copy()
        fe.scatter_add(gw, i, g, backend=backend)
        assert_bits_equal(gw, want_scatter, label)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_broadcast_inputs_with_zero_strides_are_read_correctly(backend, rng):
    row = edge_values(rng, np.float32, (5,))
    weight = np.broadcast_to(row, (9, 5))
    column = edge_values(rng, np.float32, (9, 1))
    weight_by_row = np.broadcast_to(column, (9, 5))
    idx = np.broadcast_to(np.array([3, 8]), (4, 2))
    grad = np.broadcast_to(row, (4, 2, 5))
    for w in (weight, weight_by_row):
        assert_bits_equal(fe.gather(w, idx, backend=backend), expected_gather(np.array(w), idx))
    gw = np.zeros((9, 5), np.float32)
    fe.scatter_add(gw, idx, grad, backend=backend)
    assert_bits_equal(gw, expected_scatter_add(np.zeros((9, 5), np.float32), np.array(idx),
                                               np.array(grad)))


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_fortran_order_nd_indices_are_read_in_c_order(backend, rng):
    weight = edge_values(rng, np.float64, (10, 3))
    idx = np.asfortranarray(make_indices(rng, 10, (3, 4, 2), np.int64))
    assert_bits_equal(fe.gather(weight, idx, backend=backend), expected_gather(weight, idx))
    bad = idx.copy(order="F")
    bad[2, 1, 0] = 10
    bad[0, 3, 1] = 11  # later in C order, earlier in memory order
    with pytest.raises(IndexError, match=r"^indices\[0, 3, 1\] = 11 "):
        fe.gather(weight, bad, backend=backend)


# --------------------------------------------------------------------------
# what comes back

@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_results_are_fresh_or_the_destination_passed_in(backend, rng):
    weight = edge_values(rng, np.float32, (6, 2))
    idx = np.array([1, 2, 1])
    gathered = fe.gather(weight, idx, backend=backend)
    assert gathered.flags.c_contiguous and gathered.flags.writeable
    assert not np.shares_memory(gathered, weight)
    out = np.empty((3, 2), np.float32)
    assert fe.gather(weight, idx, out=out, backend=backend) is out
    gw = np.zeros((6, 2), np.float32)
    assert fe.scatter_add(gw, idx, gathered, backend=backend) is gw
    if backend != "auto":
        grad = edge_values(rng, np.float32, (3, 2))
        result = fe.embedding_backward(grad, idx, 6, backend=backend)
        assert result.shape == (6, 2) and result.dtype == np.float32
        assert not np.shares_memory(result, grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_embedding_backward_returns_zeros_for_rows_not_named_and_for_the_padding_row(backend, rng):
    grad = edge_values(rng, np.float32, (50, 4))
    idx = make_indices(rng, 20, (50,), np.int64, "uniform") % 10  # rows 10.. never named
    got = fe.embedding_backward(grad, idx, 20, padding_idx=int(idx[0]), backend=backend)
    assert_bits_equal(got[10:], np.zeros((10, 4), np.float32))
    assert_bits_equal(got[int(idx[0])], np.zeros(4, np.float32))


@pytest.mark.parametrize("index_dtype", INDEX_DTYPES, ids=dtype_id)
def test_int32_and_int64_indices_are_used_without_a_copy(index_dtype, rng):
    idx = make_indices(rng, 10, (3, 4), index_dtype)
    flat = _checks.checked_flat_indices(idx, 10, "weight", "cython")
    assert np.shares_memory(flat, idx)
    # other integer dtypes are checked, then converted (a copy is unavoidable)
    converted = _checks.checked_flat_indices(idx.astype(np.int16), 10, "weight", "cython")
    assert converted.dtype in (np.dtype(np.int32), np.dtype(np.int64))
    assert_bits_equal(converted.astype(np.int64), idx.reshape(-1).astype(np.int64))

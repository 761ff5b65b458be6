"""Property tests: for arbitrary shapes, duplicate-heavy indices, arbitrary
float bit patterns, every backend and thread count, the results are the bits
NumPy gives, the inputs are untouched, and a bad index is reported at its
position with nothing written.

Run longer with HYPOTHESIS_PROFILE=thorough.
"""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastembed_ext as fe
from fastembed_ext import _kernels

from .conftest import (
    ALL_BACKENDS,
    INDEX_DTYPES,
    OTHER_INDEX_DTYPES,
    THREAD_COUNTS,
    UINT_OF_SIZE,
    VALUE_DTYPES,
    Snapshot,
    assert_bits_equal,
    edge_values,
    expected_embedding_backward,
    expected_gather,
    expected_scatter_add,
    onehot,
    parallel_scatter_sizes,
    special_values,
)

value_dtypes = st.sampled_from(VALUE_DTYPES)
index_dtypes = st.sampled_from(INDEX_DTYPES + OTHER_INDEX_DTYPES)
backends = st.sampled_from(ALL_BACKENDS)
thread_counts = st.sampled_from((None,) + THREAD_COUNTS)
widths = st.one_of(st.integers(0, 9), st.sampled_from([15, 16, 17, 31, 32, 33, 64]))


@st.composite
def float_arrays(draw, dtype, shape):
    """Arrays of ``dtype``: raw bit patterns, hypothesis floats, special values or small ints."""
    dtype = np.dtype(dtype)
    kind = draw(st.sampled_from(["bits", "floats", "special", "integers"]))
    if kind == "bits":
        u = UINT_OF_SIZE[dtype.itemsize]
        return draw(hnp.arrays(u, shape, elements=st.integers(0, int(np.iinfo(u).max)))).view(dtype)
    if kind == "floats":
        return draw(hnp.arrays(dtype, shape, elements=st.floats(width=8 * dtype.itemsize)))
    if kind == "special":
        values = special_values(dtype)
        which = draw(hnp.arrays(np.intp, shape, elements=st.integers(0, values.size - 1)))
        return values[which]
    return draw(hnp.arrays(dtype, shape, elements=st.integers(-4, 4).map(float)))


@st.composite
def lookups(draw, index_dtypes=index_dtypes, max_rows=24):
    """(num_rows, d, indices) with indices of any shape, often crowded onto few rows."""
    index_dtype = draw(index_dtypes)
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
    size = int(np.prod(shape, dtype=np.int64))
    num_rows = draw(st.integers(1 if size else 0, max_rows))
    d = draw(widths)
    # the highest row used: a small one makes many duplicates
    top = draw(st.integers(0, num_rows - 1)) if num_rows else 0
    idx = draw(hnp.arrays(index_dtype, shape, elements=st.integers(0, top)))
    return num_rows, d, idx


# --------------------------------------------------------------------------
# against NumPy, bit for bit

@given(data=st.data(), lookup=lookups(), dtype=value_dtypes, backend=backends,
       num_threads=thread_counts, use_out=st.booleans())
def test_gather_is_np_take_bit_for_bit(data, lookup, dtype, backend, num_threads, use_out):
    num_rows, d, idx = lookup
    weight = data.draw(float_arrays(dtype, (num_rows, d)))
    inputs = Snapshot(weight=weight, indices=idx)
    want = expected_gather(weight, idx)
    out = np.empty(want.shape, dtype) if use_out else None
    got = fe.gather(weight, idx, out=out, backend=backend, num_threads=num_threads)
    assert_bits_equal(got, want)
    if use_out:
        assert got is out
    inputs.assert_unchanged()


@given(data=st.data(), lookup=lookups(), dtype=value_dtypes, backend=backends,
       num_threads=thread_counts)
def test_scatter_add_is_np_add_at_bit_for_bit(data, lookup, dtype, backend, num_threads):
    num_rows, d, idx = lookup
    table = data.draw(float_arrays(dtype, (num_rows, d)))
    grad = data.draw(float_arrays(dtype, idx.shape + (d,)))
    padding_idx = data.draw(st.none() | st.integers(-num_rows, num_rows - 1)) if num_rows else None
    inputs = Snapshot(indices=idx, grad=grad)
    want = expected_scatter_add(table, idx, grad, padding_idx)
    gw = table.copy()
    assert fe.scatter_add(gw, idx, grad, padding_idx=padding_idx, backend=backend,
                          num_threads=num_threads) is gw
    assert_bits_equal(gw, want)
    inputs.assert_unchanged()


@given(data=st.data(), lookup=lookups(), dtype=value_dtypes, backend=backends,
       num_threads=thread_counts, scale=st.booleans())
def test_embedding_backward_is_the_reference_bit_for_bit(data, lookup, dtype, backend,
                                                         num_threads, scale):
    num_rows, d, idx = lookup
    grad = data.draw(float_arrays(dtype, idx.shape + (d,)))
    padding_idx = data.draw(st.none() | st.integers(-num_rows, num_rows - 1)) if num_rows else None
    inputs = Snapshot(indices=idx, grad=grad)
    got = fe.embedding_backward(grad, idx, num_rows, padding_idx=padding_idx,
                                scale_grad_by_freq=scale, backend=backend, num_threads=num_threads)
    assert_bits_equal(got, expected_embedding_backward(grad, idx, num_rows, padding_idx, scale))
    inputs.assert_unchanged()


@given(data=st.data(), dtype=value_dtypes, isa=st.integers(0, 2), f16c=st.booleans(),
       lookup=lookups(index_dtypes=st.sampled_from(INDEX_DTYPES)))
def test_fast_scatter_kernel_is_the_naive_kernel_at_any_isa_level_and_f16c_setting(
        data, dtype, isa, f16c, lookup):
    num_rows, d, idx = lookup
    flat = np.ascontiguousarray(idx.reshape(-1))
    table = data.draw(float_arrays(dtype, (num_rows, d)))
    grad = data.draw(float_arrays(dtype, (flat.size, d)))
    naive = table.copy()
    _kernels.naive_scatter_add_rows(naive, flat, grad, -1, False)
    try:
        _kernels.set_isa_level(isa)
        _kernels.use_f16c(f16c)
        fast = table.copy()
        fe.scatter_add(fast, flat, grad, backend="cython")
    finally:
        _kernels.set_isa_level(2)
        _kernels.use_f16c(True)
    assert_bits_equal(fast, naive)
    assert_bits_equal(naive, expected_scatter_add(table, flat, grad), "naive against np.add.at")


# --------------------------------------------------------------------------
# the seed identity: a lookup is a one-hot matrix product

@given(data=st.data(), lookup=lookups(), dtype=value_dtypes, backend=backends)
def test_gather_of_an_integer_valued_table_is_onehot_matmul(data, lookup, dtype, backend):
    num_rows, d, idx = lookup
    weight = data.draw(hnp.arrays(dtype, (num_rows, d), elements=st.integers(-64, 64).map(float)))
    want = (onehot(idx, num_rows, dtype) @ weight).reshape(idx.shape + (d,))
    assert_bits_equal(fe.gather(weight, idx, backend=backend), want)


@given(data=st.data(), lookup=lookups(), dtype=value_dtypes,
       backend=st.sampled_from(("cython", "numpy")), num_threads=thread_counts)
def test_embedding_backward_of_integer_gradients_is_onehot_transpose_matmul(
        data, lookup, dtype, backend, num_threads):
    # at most 125 updates of |g| <= 3: every partial sum is an exact float16 integer
    num_rows, d, idx = lookup
    grad = data.draw(hnp.arrays(dtype, idx.shape + (d,), elements=st.integers(-3, 3).map(float)))
    padding_idx = data.draw(st.none() | st.integers(0, num_rows - 1)) if num_rows else None
    hot = onehot(idx, num_rows, np.float64)
    if padding_idx is not None:
        hot[:, padding_idx] = 0
    # + 0.0: a zero sum is +0.0, as in a zeroed table
    want = (hot.T @ grad.reshape(idx.size, d).astype(np.float64) + 0.0).astype(dtype)
    got = fe.embedding_backward(grad, idx, num_rows, padding_idx=padding_idx, backend=backend,
                                num_threads=num_threads)
    assert_bits_equal(got, want)


# --------------------------------------------------------------------------
# failure: the position is named and nothing is written

@given(data=st.data(), backend=backends, use_out=st.booleans(),
       lookup=lookups(index_dtypes=index_dtypes, max_rows=20))
def test_a_bad_index_is_reported_at_its_first_position_and_nothing_is_written(
        data, backend, use_out, lookup):
    num_rows, d, idx = lookup
    if idx.size == 0:
        idx = np.zeros((3,), idx.dtype)
    flat = idx.reshape(-1).copy()
    where = data.draw(st.integers(0, flat.size - 1))
    info = np.iinfo(idx.dtype)
    too_big = st.integers(num_rows, min(int(info.max), num_rows + 1000))
    negative = st.integers(max(int(info.min), -1000), -1) if info.min < 0 else st.nothing()
    flat[where] = data.draw(too_big | negative)
    bad = flat.reshape(idx.shape).astype(idx.dtype)
    first = int(np.argmax((flat < 0) | (flat >= num_rows)))
    position = np.unravel_index(first, bad.shape) if bad.ndim else ()
    text = f"indices[{', '.join(str(int(i)) for i in position)}]" if bad.ndim else "indices[()]"
    message = "^" + re.escape(f"{text} = {int(flat[first])} is out of range for ")

    dtype = np.float32
    weight = edge_values(np.random.default_rng(where), dtype, (num_rows, d))
    grad = edge_values(np.random.default_rng(where + 1), dtype, bad.shape + (d,))
    gw = weight.copy()
    out = np.full(bad.shape + (d,), 9, dtype) if use_out else None
    before = Snapshot(weight=weight, indices=bad, grad=grad, grad_weight=gw, out=out)
    with pytest.raises(IndexError, match=message + f"weight with {num_rows} rows"):
        fe.gather(weight, bad, out=out, backend=backend)
    with pytest.raises(IndexError, match=message + f"grad_weight with {num_rows} rows"):
        fe.scatter_add(gw, bad, grad, backend=backend)
    with pytest.raises(IndexError, match=message + f"a table with {num_rows} rows"):
        fe.embedding_backward(grad, bad, num_rows, backend=backend)
    before.assert_unchanged()


# --------------------------------------------------------------------------
# threads: big batches, distributions drawn by hypothesis

@settings(max_examples=8)
@given(dtype=value_dtypes, seed=st.integers(0, 2 ** 32 - 1),
       distinct=st.sampled_from([1, 2, 7, 100, 10_000, None]), hot=st.floats(0, 1),
       padding=st.booleans(), scale=st.booleans())
def test_parallel_results_do_not_depend_on_the_thread_count(dtype, seed, distinct, hot, padding,
                                                            scale):
    rng = np.random.default_rng(seed)
    num_rows, batch, d = parallel_scatter_sizes(dtype)
    pool = rng.choice(num_rows, size=distinct or num_rows, replace=False)
    idx = pool[rng.integers(0, pool.size, batch)]
    idx[rng.random(batch) < hot] = pool[0]
    grad = edge_values(rng, dtype, (batch, d))
    padding_idx = int(pool[-1]) if padding else None
    want = expected_embedding_backward(grad, idx, num_rows, padding_idx, scale)
    for num_threads in THREAD_COUNTS:
        got = fe.embedding_backward(grad, idx, num_rows, padding_idx=padding_idx,
                                    scale_grad_by_freq=scale, num_threads=num_threads)
        assert_bits_equal(got, want, f"{num_threads} threads")


# --------------------------------------------------------------------------
# the float16 converters

@given(hnp.arrays(np.uint32, hnp.array_shapes(max_dims=1, max_side=300),
                  elements=st.integers(0, 2 ** 32 - 1)))
def test_portable_float_to_half_rounds_like_numpy(bit_patterns):
    floats = bit_patterns.view(np.float32)
    out = np.empty(floats.size, np.uint16)
    _kernels.float_to_half_portable(floats, out)
    with np.errstate(all="ignore"):
        want = floats.astype(np.float16)
    assert_bits_equal(out.view(np.float16), want)

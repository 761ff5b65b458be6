"""backend x value dtype x index dtype x shape, compared bit for bit with NumPy.

gather must be ``np.take(weight, indices, axis=0)``, scatter_add must be
``np.add.at`` and embedding_backward must be ``_reference.embedding_backward``,
to the last bit: NaN payloads (quiet, signalling, two NaNs with different
payloads), -0.0, infinities and subnormals included.  The fast kernels are
also held to the naive kernels at every instruction-set level and with the
F16C float16 path on and off.
"""

import numpy as np
import pytest

import fastembed_ext as fe
from fastembed_ext import _kernels, _reference

from .conftest import (
    ALL_BACKENDS,
    BACKENDS,
    EDGE_CASES,
    INDEX_DTYPES,
    OTHER_INDEX_DTYPES,
    THREAD_COUNTS,
    VALUE_DTYPES,
    Snapshot,
    assert_bits_equal,
    dtype_id,
    edge_case_inputs,
    edge_values,
    expected_embedding_backward,
    expected_gather,
    expected_scatter_add,
    from_bits,
    make_indices,
    normalise_padding,
    onehot,
    parallel_gather_sizes,
    parallel_scatter_sizes,
    random_bits,
    small_integers,
    special_values,
)

CASE_IDS = [case.name for case in EDGE_CASES]
# (padding_idx, scale_grad_by_freq); padding needs a row to pad
BACKWARD_OPTIONS = [(None, False), (None, True), (-1, False), (0, True)]


def _backward_params():
    for case in EDGE_CASES:
        for padding_idx, scale in BACKWARD_OPTIONS:
            if padding_idx is not None and case.num_rows == 0:
                continue
            how = "scaled" if scale else "unscaled"
            yield pytest.param(case, padding_idx, scale, id=f"{case.name}-pad{padding_idx}-{how}")


# --------------------------------------------------------------------------
# the matrix

@pytest.mark.parametrize("case", EDGE_CASES, ids=CASE_IDS)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("dtype", VALUE_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_gather_matches_np_take_bit_for_bit(backend, dtype, index_dtype, case, rng):
    weight, idx, _ = edge_case_inputs(rng, case, dtype, index_dtype)
    inputs = Snapshot(weight=weight, indices=idx)
    want = expected_gather(weight, idx)

    assert_bits_equal(fe.gather(weight, idx, backend=backend), want)
    out = np.full(want.shape, 7, dtype=dtype)
    assert fe.gather(weight, idx, out=out, backend=backend) is out
    assert_bits_equal(out, want)
    inputs.assert_unchanged()


@pytest.mark.parametrize("case", EDGE_CASES, ids=CASE_IDS)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("dtype", VALUE_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_scatter_add_matches_np_add_at_bit_for_bit(backend, dtype, index_dtype, case, rng):
    table, idx, grad = edge_case_inputs(rng, case, dtype, index_dtype)
    inputs = Snapshot(indices=idx, grad=grad)
    want = expected_scatter_add(table, idx, grad)

    gw = table.copy()
    assert fe.scatter_add(gw, idx, grad, backend=backend) is gw
    assert_bits_equal(gw, want)
    inputs.assert_unchanged()


@pytest.mark.parametrize("case,padding_idx,scale", list(_backward_params()))
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("dtype", VALUE_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("backend", BACKENDS)
def test_embedding_backward_matches_reference_bit_for_bit(backend, dtype, index_dtype, case,
                                                          padding_idx, scale, rng):
    _, idx, grad = edge_case_inputs(rng, case, dtype, index_dtype)
    num_rows = case.num_rows
    inputs = Snapshot(indices=idx, grad=grad)
    want = expected_embedding_backward(grad, idx, num_rows, padding_idx, scale)
    with np.errstate(all="ignore"):
        definition = _reference.embedding_backward(
            grad, idx, num_rows, padding_idx=normalise_padding(padding_idx, num_rows),
            scale_grad_by_freq=scale)
    assert_bits_equal(definition, want, "the reference itself")

    got = fe.embedding_backward(grad, idx, num_rows, padding_idx=padding_idx,
                                scale_grad_by_freq=scale, backend=backend)
    assert_bits_equal(got, want)
    assert not np.shares_memory(got, grad)
    inputs.assert_unchanged()


@pytest.mark.parametrize("index_dtype", OTHER_INDEX_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("dtype", VALUE_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_other_integer_index_dtypes_give_the_bits_of_int64_indices(backend, dtype, index_dtype,
                                                                    rng):
    # int8 bounds the table size; non-native byte order is accepted for indices
    num_rows, d = 100, 5
    idx64 = make_indices(rng, num_rows, (3, 70), np.int64, "hot")
    idx = idx64.astype(index_dtype)
    assert idx.dtype == index_dtype
    weight = edge_values(rng, dtype, (num_rows, d))
    grad = edge_values(rng, dtype, idx.shape + (d,))
    inputs = Snapshot(weight=weight, indices=idx, grad=grad)

    assert_bits_equal(fe.gather(weight, idx, backend=backend), expected_gather(weight, idx64))
    out = np.empty(idx.shape + (d,), dtype)
    fe.gather(weight, idx, out=out, backend=backend)
    assert_bits_equal(out, expected_gather(weight, idx64))

    gw = weight.copy()
    fe.scatter_add(gw, idx, grad, backend=backend)
    assert_bits_equal(gw, expected_scatter_add(weight, idx64, grad))
    gw = weight.copy()
    fe.scatter_add(gw, idx, grad, padding_idx=-2, backend=backend)
    assert_bits_equal(gw, expected_scatter_add(weight, idx64, grad, padding_idx=num_rows - 2))

    if backend != "auto":
        got = fe.embedding_backward(grad, idx, num_rows, padding_idx=3, scale_grad_by_freq=True,
                                    backend=backend)
        assert_bits_equal(got, expected_embedding_backward(grad, idx64, num_rows, 3, True))
    inputs.assert_unchanged()


# --------------------------------------------------------------------------
# thread counts: sizes where the kernels do start threads

@pytest.mark.parametrize("pattern", ["uniform", "hot", "first_last"])
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("dtype", VALUE_DTYPES, ids=dtype_id)
def test_parallel_gather_matches_np_take_for_1_2_3_and_8_threads(dtype, index_dtype, pattern, rng):
    num_rows, batch, d = parallel_gather_sizes(dtype)
    weight = edge_values(rng, dtype, (num_rows, d))
    idx = make_indices(rng, num_rows, (batch,), index_dtype, pattern)
    want = expected_gather(weight, idx)
    for num_threads in THREAD_COUNTS:
        assert_bits_equal(fe.gather(weight, idx, num_threads=num_threads), want,
                          f"{num_threads} threads")
        out = np.empty_like(want)
        fe.gather(weight, idx, out=out, num_threads=num_threads)
        assert_bits_equal(out, want, f"{num_threads} threads, out=")


@pytest.mark.parametrize("pattern,index_dtype", [
    ("uniform", np.dtype(np.int32)),
    ("hot", np.dtype(np.int64)),
    ("first_last", np.dtype(np.int32)),
], ids=["uniform-int32", "hot-int64", "first_last-int32"])
@pytest.mark.parametrize("dtype", VALUE_DTYPES, ids=dtype_id)
def test_parallel_scatter_add_matches_np_add_at_for_1_2_3_and_8_threads(dtype, index_dtype,
                                                                         pattern, rng):
    num_rows, batch, d = parallel_scatter_sizes(dtype)
    table = np.zeros((num_rows, d), dtype)
    table[:64] = edge_values(rng, dtype, (64, d))
    idx = make_indices(rng, num_rows, (batch,), index_dtype, pattern)
    idx[: batch // 4] %= 64  # a quarter of the updates land on the rows holding edge values
    grad = edge_values(rng, dtype, (batch, d))
    for padding_idx in (None, int(idx[0])):
        want = expected_scatter_add(table, idx, grad, padding_idx)
        for num_threads in THREAD_COUNTS:
            gw = table.copy()
            fe.scatter_add(gw, idx, grad, padding_idx=padding_idx, num_threads=num_threads)
            assert_bits_equal(gw, want, f"{num_threads} threads, padding_idx={padding_idx}")


@pytest.mark.parametrize("scale", [False, True], ids=["unscaled", "scale_grad_by_freq"])
@pytest.mark.parametrize("dtype", VALUE_DTYPES, ids=dtype_id)
def test_parallel_embedding_backward_matches_reference_for_1_2_3_and_8_threads(dtype, scale, rng):
    num_rows, batch, d = parallel_scatter_sizes(dtype)
    idx = make_indices(rng, num_rows, (batch,), np.int64, "uniform")
    idx[::3] = rng.integers(0, 50, size=idx[::3].size)  # counts above 1 for the scale
    grad = edge_values(rng, dtype, (batch, d))
    want = expected_embedding_backward(grad, idx, num_rows, -1, scale)
    for num_threads in THREAD_COUNTS:
        got = fe.embedding_backward(grad, idx, num_rows, padding_idx=-1, scale_grad_by_freq=scale,
                                    num_threads=num_threads)
        assert_bits_equal(got, want, f"{num_threads} threads")


# --------------------------------------------------------------------------
# fast kernels against the naive kernels, per instruction-set level and F16C

SCATTER_WIDTHS = (1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100)


@pytest.mark.parametrize("dtype", VALUE_DTYPES, ids=dtype_id)
def test_fast_scatter_kernel_matches_naive_kernel_and_np_add_at(dtype, isa_level, f16c, rng):
    for d in SCATTER_WIDTHS:
        num_rows, batch = 9, 400
        table = edge_values(rng, dtype, (num_rows, d))
        idx = make_indices(rng, num_rows, (batch,), np.int64, "uniform")
        grad = edge_values(rng, dtype, (batch, d))
        want = expected_scatter_add(table, idx, grad)

        naive = table.copy()
        _kernels.naive_scatter_add_rows(naive, idx, grad, -1, False)
        assert_bits_equal(naive, want, f"naive kernel, d={d}")
        fast = table.copy()
        fe.scatter_add(fast, idx.astype(np.int32), grad, backend="cython", num_threads=1)
        assert_bits_equal(fast, want, f"fast kernel, d={d}")

        naive = table.copy()
        _kernels.naive_scatter_add_rows(naive, idx, grad, 4, False)
        fast = table.copy()
        fe.scatter_add(fast, idx, grad, padding_idx=4, backend="cython")
        assert_bits_equal(fast, naive, f"fast against naive with padding_idx, d={d}")


@pytest.mark.parametrize("dtype", VALUE_DTYPES, ids=dtype_id)
def test_fast_scaled_scatter_matches_reference_at_every_isa_level_and_f16c_setting(
        dtype, isa_level, f16c, rng):
    for d in SCATTER_WIDTHS:
        idx = make_indices(rng, 6, (300,), np.int64, "hot")
        grad = edge_values(rng, dtype, (300, d))
        got = fe.embedding_backward(grad, idx, 6, scale_grad_by_freq=True, backend="cython")
        assert_bits_equal(got, expected_embedding_backward(grad, idx, 6, None, True), f"d={d}")


# row widths in bytes around the specialised row copies of the gather kernel
GATHER_ROW_BYTES = (2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 130, 192, 256, 258, 512, 1000)


@pytest.mark.parametrize("index_dtype", INDEX_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("dtype", VALUE_DTYPES, ids=dtype_id)
def test_fast_gather_kernel_matches_naive_kernel_for_every_row_width(dtype, index_dtype, rng):
    for row_bytes in GATHER_ROW_BYTES:
        if row_bytes % dtype.itemsize:
            continue
        d = row_bytes // dtype.itemsize
        weight = random_bits(rng, dtype, (37, d))
        idx = make_indices(rng, 37, (500,), index_dtype, "uniform")
        naive = np.empty((500, d), dtype)
        _kernels.naive_gather_rows(weight, idx, naive)
        assert_bits_equal(naive, expected_gather(weight, idx), f"naive, {row_bytes}-byte rows")
        for backend in ("auto", "cython"):
            out = np.empty((500, d), dtype)
            fe.gather(weight, idx, out=out, backend=backend)
            assert_bits_equal(out, naive, f"{backend}, {row_bytes}-byte rows")


@pytest.mark.parametrize("dtype", VALUE_DTYPES, ids=dtype_id)
def test_gather_from_a_table_larger_than_the_caches_matches_np_take(dtype, rng):
    # 24 MiB: the kernel prefetches rows ahead on tables this large
    d = 16
    num_rows = (24 << 20) // (d * dtype.itemsize)
    weight = np.zeros((num_rows, d), dtype)
    idx = make_indices(rng, num_rows, (30000,), np.int64, "uniform")
    weight[idx[::7]] = edge_values(rng, dtype, (idx[::7].size, d))
    want = expected_gather(weight, idx)
    for num_threads in (1, 2):
        assert_bits_equal(fe.gather(weight, idx, num_threads=num_threads), want)
        out = np.empty_like(want)
        fe.gather(weight, idx, out=out)
        assert_bits_equal(out, want)


# --------------------------------------------------------------------------
# the values most likely to go wrong

def _all_pairs(values):
    """(table, grad) of shape (K, K) such that every (dst, src) pair occurs once."""
    k = values.size
    table = np.tile(values, (k, 1))
    grad = values[(np.arange(k)[:, None] + np.arange(k)[None, :]) % k]
    return table, grad


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("dtype", VALUE_DTYPES, ids=dtype_id)
def test_every_pair_of_special_values_adds_like_np_add_at(dtype, backend, isa_level, f16c):
    values = special_values(dtype)
    table, grad = _all_pairs(values)
    idx = np.arange(values.size)
    want = expected_scatter_add(table, idx, grad)
    gw = table.copy()
    fe.scatter_add(gw, idx, grad, backend=backend)
    assert_bits_equal(gw, want)
    # and with every update on one row: a long chain through NaN, inf and -0.0
    chain = np.zeros(values.size, np.int64)
    gw = table[:1].copy()
    fe.scatter_add(gw, chain, grad, backend=backend)
    assert_bits_equal(gw, expected_scatter_add(table[:1], chain, grad))


@pytest.mark.parametrize("dtype", VALUE_DTYPES, ids=dtype_id)
def test_nan_plus_nan_with_different_payloads_keeps_the_payload_np_add_at_keeps(dtype, isa_level,
                                                                                  f16c):
    nbits = 8 * dtype.itemsize
    nmant = np.finfo(dtype).nmant
    exp_all = ((1 << (nbits - 1)) - 1) ^ ((1 << nmant) - 1)
    quiet = 1 << (nmant - 1)
    dst_nan = exp_all | quiet | 1          # quiet, payload 1
    src_nan = exp_all | quiet | 2          # quiet, payload 2
    src_snan = (1 << (nbits - 1)) | exp_all | 3  # negative signalling NaN, payload 3
    for src in (src_nan, src_snan):
        for d in (1, 5, 8, 16, 17, 40):
            table = from_bits(np.full((2, d), dst_nan), dtype)
            grad = from_bits(np.full((1, d), src), dtype)
            want = expected_scatter_add(table, [1], grad)
            for backend in ALL_BACKENDS:
                gw = table.copy()
                fe.scatter_add(gw, [1], grad, backend=backend)
                assert_bits_equal(gw, want, f"{backend}, d={d}, src=0x{src:x}")


@pytest.mark.parametrize("f16c_path", [True, False], ids=["f16c_on", "f16c_off"])
def test_float16_add_matches_numpy_for_every_float16_destination_value(f16c_path, rng):
    if _kernels.use_f16c(f16c_path) != f16c_path:
        pytest.skip("this CPU has no F16C")
    every_half = np.arange(1 << 16, dtype=np.uint16).view(np.float16).reshape(256, 256)
    idx = np.arange(256)
    grads = [rng.permutation(every_half.reshape(-1)).reshape(256, 256) for _ in range(4)]
    special = special_values(np.float16)
    grads += [np.full((256, 256), v, dtype=np.float16) for v in special]
    for grad in grads:
        gw = every_half.copy()
        fe.scatter_add(gw, idx, grad, backend="cython")
        assert_bits_equal(gw, expected_scatter_add(every_half, idx, grad))


@pytest.mark.parametrize("f16c_path", [True, False], ids=["f16c_on", "f16c_off"])
def test_float16_scale_by_freq_matches_reference_for_every_float16_gradient(f16c_path):
    if _kernels.use_f16c(f16c_path) != f16c_path:
        pytest.skip("this CPU has no F16C")
    every_half = np.arange(1 << 16, dtype=np.uint16).view(np.float16).reshape(256, 256)
    for count in (1, 2, 3, 7):
        idx = np.arange(256) // count
        got = fe.embedding_backward(every_half, idx, int(idx.max()) + 1, scale_grad_by_freq=True,
                                    backend="cython")
        want = expected_embedding_backward(every_half, idx, int(idx.max()) + 1, None, True)
        assert_bits_equal(got, want, f"count {count}")


def test_portable_half_to_float_matches_numpy_for_every_float16():
    every_half = np.arange(1 << 16, dtype=np.uint16)
    out = np.empty(every_half.size, np.float32)
    _kernels.half_to_float_portable(every_half, out)
    assert_bits_equal(out, every_half.view(np.float16).astype(np.float32))


def test_portable_float_to_half_matches_numpy_on_rounding_boundaries_and_random_floats(rng):
    halves_as_f32 = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)
    near = halves_as_f32.view(np.uint32).astype(np.int64)[:, None] + np.arange(-2, 3)[None, :]
    midpoints = halves_as_f32.view(np.uint32).astype(np.int64) + 0x1000  # ties between halves
    probe = np.concatenate([
        near.reshape(-1), midpoints, midpoints - 1, midpoints + 1,
        rng.integers(0, 1 << 32, size=1_000_000),
    ]).astype(np.uint64).astype(np.uint32).view(np.float32)
    out = np.empty(probe.size, np.uint16)
    _kernels.float_to_half_portable(probe, out)
    with np.errstate(all="ignore"):
        want = probe.astype(np.float16)
    assert_bits_equal(out.view(np.float16), want)


# --------------------------------------------------------------------------
# meaning, on numbers a person can check

@pytest.mark.parametrize("backend", BACKENDS)
def test_scale_grad_by_freq_divides_each_update_by_the_count_of_its_index(backend):
    idx = np.array([1, 1, 2, 2, 2, 2])
    grad = np.array([[2.0], [4.0], [4.0], [8.0], [12.0], [16.0]], dtype=np.float32)
    got = fe.embedding_backward(grad, idx, 4, scale_grad_by_freq=True, backend=backend)
    assert_bits_equal(got, np.array([[0.0], [3.0], [10.0], [0.0]], dtype=np.float32))


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_negative_padding_idx_means_num_rows_plus_padding_idx(backend, rng):
    table = small_integers(rng, np.float64, (10, 3))
    idx = make_indices(rng, 10, (50,), np.int64, "first_last")
    grad = small_integers(rng, np.float64, (50, 3))
    for p in (-1, -10):
        a, b = table.copy(), table.copy()
        fe.scatter_add(a, idx, grad, padding_idx=p, backend=backend)
        fe.scatter_add(b, idx, grad, padding_idx=10 + p, backend=backend)
        assert_bits_equal(a, b)
        assert_bits_equal(a[10 + p], table[10 + p], "the padding row")
        if backend != "auto":
            assert_bits_equal(fe.embedding_backward(grad, idx, 10, padding_idx=p, backend=backend),
                              fe.embedding_backward(grad, idx, 10, padding_idx=10 + p,
                                                    backend=backend))


@pytest.mark.parametrize("dtype", VALUE_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_gather_of_a_finite_table_is_onehot_matmul(backend, dtype, rng):
    weight = small_integers(rng, dtype, (40, 6), bound=50)
    for shape in [(200,), (3, 7), ()]:
        idx = make_indices(rng, 40, shape)
        want = (onehot(idx, 40, dtype) @ weight).reshape(shape + (6,))
        assert_bits_equal(fe.gather(weight, idx, backend=backend), want)
        out = np.empty(shape + (6,), dtype)
        assert_bits_equal(fe.gather(weight, idx, out=out, backend=backend), want)


@pytest.mark.parametrize("dtype", VALUE_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("backend", BACKENDS)
def test_embedding_backward_of_integer_gradients_is_onehot_transpose_matmul(backend, dtype, rng):
    # sums of at most 300 integers in [-3, 3] are exact even in float16 (< 2048)
    num_rows = 40
    idx = make_indices(rng, num_rows, (300,), np.int64, "hot")
    grad = small_integers(rng, dtype, (300, 6))
    # + 0.0 turns an all-(-0.0) column sum into the +0.0 of a zeroed table
    want = (onehot(idx, num_rows, np.float64).T @ grad.astype(np.float64) + 0.0).astype(dtype)
    for num_threads in (1, 2):
        got = fe.embedding_backward(grad, idx, num_rows, backend=backend, num_threads=num_threads)
        assert_bits_equal(got, want)
    gw = np.zeros((num_rows, 6), dtype)
    fe.scatter_add(gw, idx, grad, backend=backend)
    assert_bits_equal(gw, want)


# --------------------------------------------------------------------------
# bfloat16 (an optional extra: ml_dtypes)

@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_bfloat16_tables_match_numpy_on_ml_dtypes_arrays_bit_for_bit(backend, rng):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16 = np.dtype(ml_dtypes.bfloat16)
    for d in (1, 8, 17, 33):
        weight = random_bits(rng, np.uint16, (9, d)).view(bf16)
        idx = make_indices(rng, 9, (4, 30), np.int64, "hot")
        grad = random_bits(rng, np.uint16, (4, 30, d)).view(bf16)
        assert_bits_equal(fe.gather(weight, idx, backend=backend), expected_gather(weight, idx))
        gw = weight.copy()
        fe.scatter_add(gw, idx, grad, backend=backend)
        assert_bits_equal(gw, expected_scatter_add(weight, idx, grad), f"d={d}")
        if backend != "auto":
            with np.errstate(all="ignore"):
                want = _reference.embedding_backward(grad, idx, 9, padding_idx=2,
                                                     scale_grad_by_freq=True)
            got = fe.embedding_backward(grad, idx, 9, padding_idx=2, scale_grad_by_freq=True,
                                        backend=backend)
            assert_bits_equal(got, want, f"scaled, d={d}")

"""The compiled paths one by one: fast vs naive kernels on every CPU path, the
pinned NaN rule, the float16 converters, the parallel partitions and the lean
entry points, each held to NumPy bit for bit."""
import numpy as np
import pytest

import fastembed_ext as fe
from fastembed_ext import _kernels, _reference

DTYPES = (np.float16, np.float32, np.float64)
UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def _bits(a):
    return np.ascontiguousarray(a).view(UINT[a.itemsize])


def _same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    diff = _bits(a) != _bits(b)
    assert not diff.any(), f"{int(diff.sum())} elements differ, first at {np.argwhere(diff)[0]}"


def _specials(rng, shape, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    if flat.size == 0:
        return x
    fi = np.finfo(dtype)
    sp = np.array([-0.0, np.inf, -np.inf, fi.smallest_subnormal, -fi.smallest_subnormal, fi.max],
                  dtype=dtype)
    pick = rng.random(flat.size) < 0.05
    flat[pick] = sp[rng.integers(0, sp.size, int(pick.sum()))]
    u = flat.view(UINT[flat.itemsize])
    exp = {2: 0x7C00, 4: 0x7F800000, 8: 0x7FF0000000000000}[flat.itemsize]
    mant = {2: 10, 4: 23, 8: 52}[flat.itemsize]
    at = np.flatnonzero(rng.random(flat.size) < 0.04)
    payload = rng.integers(1, 1 << mant, at.size, dtype=np.uint64)
    sign = rng.integers(0, 2, at.size, dtype=np.uint64) << np.uint64(flat.itemsize * 8 - 1)
    u[at] = (np.uint64(exp) | payload | sign).astype(u.dtype)
    return x


def _ref_scatter(base, idx, grad):
    out = base.copy()
    with np.errstate(all="ignore"):
        np.add.at(out, idx, grad)
    return out


@pytest.fixture
def cpu_paths():
    yield
    _kernels.use_f16c(True)
    _kernels.set_isa_level(2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("f16c", [True, False])
@pytest.mark.parametrize("isa", [0, 1, 2])
def test_fast_and_naive_kernels_match_numpy_on_every_cpu_path(dtype, f16c, isa, cpu_paths):
    rng = np.random.default_rng(isa * 10 + f16c)
    _kernels.use_f16c(f16c)
    _kernels.set_isa_level(isa)
    for d in (1, 3, 7, 8, 9, 15, 16, 17, 33, 64, 100):
        base = _specials(rng, (40, d), dtype)
        idx = rng.integers(0, 40, 2000).astype(np.int64)
        grad = _specials(rng, (2000, d), dtype)
        expected = _ref_scatter(base, idx, grad)
        fast = base.copy()
        _kernels.scatter_add_rows(fast, idx, grad, -1, False, 1)
        naive = base.copy()
        _kernels.naive_scatter_add_rows(naive, idx, grad, -1, False)
        _same(fast, expected)
        _same(naive, expected)
        out = np.empty((2000, d), dtype)
        _kernels.naive_gather_rows(base, idx, out)
        _same(out, np.take(base, idx, axis=0))


@pytest.mark.parametrize("dtype,u,dst,src", [
    (np.float32, np.uint32, 0x7FC00001, 0x7FC00002),
    (np.float32, np.uint32, 0x7F800001, 0xFF800002),  # signalling NaNs
    (np.float64, np.uint64, 0x7FF8000000000001, 0x7FF8000000000002),
    (np.float16, np.uint16, 0x7E01, 0x7E02),
    (np.float16, np.uint16, 0x7C01, 0xFC02),
])
@pytest.mark.parametrize("isa", [0, 1, 2])
def test_nan_plus_nan_keeps_the_payload_np_add_at_keeps(dtype, u, dst, src, isa, cpu_paths):
    _kernels.set_isa_level(isa)
    for d in (1, 5, 8, 16, 40):
        gw = np.zeros((2, d), dtype)
        gw.view(u)[...] = dst
        g = np.zeros((1, d), dtype)
        g.view(u)[...] = src
        expected = _ref_scatter(gw, [1], g)
        fe.scatter_add(gw, [1], g)
        _same(gw, expected)


def test_float16_converters_match_numpy():
    h = np.arange(1 << 16, dtype=np.uint16)
    f = np.empty(h.size, np.float32)
    _kernels.half_to_float_portable(h, f)
    _same(f, h.view(np.float16).astype(np.float32))
    rng = np.random.default_rng(0)
    centres = h.view(np.float16).astype(np.float32).view(np.uint32).astype(np.int64)
    probe = np.concatenate([
        rng.integers(0, 1 << 32, 1_000_000, dtype=np.uint64),
        # around every float16 value and every halfway point between neighbours
        (centres[:, None] + np.arange(-3, 4)[None, :]).ravel() % (1 << 32),
        (centres[:, None] + (1 << 12) + np.arange(-2, 3)[None, :]).ravel() % (1 << 32),
    ]).astype(np.uint32).view(np.float32)
    out = np.empty(probe.size, np.uint16)
    _kernels.float_to_half_portable(probe, out)
    with np.errstate(all="ignore"):
        expected = probe.astype(np.float16).view(np.uint16)
    assert np.array_equal(out, expected)


@pytest.fixture(params=["position", "rows", "columns"])
def scatter_split(request):
    """Threaded scatter-adds with parts cut by update position, by rows, or
    by bands of columns."""
    _kernels.scatter_force_split(request.param == "position")
    _kernels.scatter_force_columns(request.param == "columns")
    yield request.param
    _kernels.scatter_force_split(True)
    _kernels.scatter_force_columns(False)


@pytest.fixture
def columns_forced():
    """The scatter-add plan cuts bands of columns wherever the rows allow it."""
    _kernels.scatter_force_columns(True)
    yield
    _kernels.scatter_force_columns(False)


def _scatter_ids(rng, dist, T, B):
    """B row ids into T rows: `dist` names how they are drawn."""
    return {
        "uniform": lambda: rng.integers(0, T, B),
        "hot-60%": lambda: np.where(rng.random(B) < 0.6, rng.integers(0, 100, B), rng.integers(0, T, B)),
        "one-row": lambda: np.full(B, 7),
        "sorted": lambda: np.sort(rng.integers(0, T, B)),
        "with-padding": lambda: rng.integers(0, T, B),
    }[dist]()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_threads", [2, 3, 8])
@pytest.mark.parametrize("shift", [0, 1, 5])
def test_column_bands_end_on_128_byte_blocks_of_every_row(dtype, num_threads, shift,
                                                          columns_forced):
    # threads that own columns must never write the same pair of cache lines:
    # every band edge is a 128-byte boundary of the table, in every row
    if not fe.info()["parallel"]:
        pytest.skip("a serial build plans no threads")
    itemsize = np.dtype(dtype).itemsize
    d = 1024 // itemsize
    block = np.zeros(70_000 * d + 64, dtype)
    gw = block[shift:shift + 70_000 * d].reshape(70_000, d)   # rows start `shift` items in
    plan = _kernels.scatter_plan(gw, np.arange(6000) % 70_000, num_threads)
    bands = plan["bands"]
    assert plan["split"] == "columns" and bands[0] == 0 and bands[-1] == d, plan
    assert len(bands) - 1 == min(num_threads, 1024 // 128), plan
    assert all(a < b for a, b in zip(bands, bands[1:])), plan
    for edge in bands[1:-1]:
        for row in (0, 1, 69_999):
            assert gw[row, edge:].ctypes.data % 128 == 0, (edge, row)


def test_rows_that_are_not_whole_128_byte_blocks_apart_are_not_cut_into_bands(columns_forced):
    # 400-byte rows: a band edge on a block boundary in one row falls inside
    # a block in the next, so the plan cuts the work another way
    plan = _kernels.scatter_plan(np.zeros((70_000, 100), np.float32),
                                 np.arange(6000) % 70_000, 2)
    assert plan["split"] != "columns" and plan["bands"] is None, plan


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_threads", [2, 3, 8, 64])
@pytest.mark.parametrize("dist", ["uniform", "hot-60%", "one-row", "sorted", "with-padding"])
def test_parallel_scatter_partitions_give_the_serial_bits(dtype, num_threads, dist, scatter_split):
    rng = np.random.default_rng(num_threads)
    itemsize = np.dtype(dtype).itemsize
    T, B, d = 70_000, 6_000, 512 // itemsize
    build = fe.info()["build"]
    # the shape is chosen so that the threads really split the columns
    assert d * itemsize >= build["scatter_parallel_min_row_bytes"]
    assert B * d * itemsize >= build["parallel_min_bytes"]
    base = np.zeros((T, d), dtype)
    base[:100] = _specials(rng, (100, d), dtype)
    idx = _scatter_ids(rng, dist, T, B)
    grad = _specials(rng, (B, d), dtype)
    pad = int(idx[1]) if dist == "with-padding" else None
    expected = _reference.scatter_add(base.copy(), idx, grad, padding_idx=pad)
    got = fe.scatter_add(base.copy(), idx, grad, num_threads=num_threads, padding_idx=pad)
    _same(got, expected)
    ebw = fe.embedding_backward(grad, idx, T, padding_idx=pad, scale_grad_by_freq=True,
                                num_threads=num_threads)
    _same(ebw, _reference.embedding_backward(grad, idx, T, padding_idx=pad, scale_grad_by_freq=True))
    # a bag backward: entries read their bag's gradient row, times a weight in sum mode
    off = np.arange(0, B, 4)
    bag_grad = _specials(rng, (off.size, d), dtype)
    for mode, psw in (("sum", _specials(rng, (B,), dtype)), ("mean", None)):
        kw = dict(mode=mode, per_sample_weights=psw, padding_idx=pad,
                  weight=base if psw is not None else None)
        got_gw, _ = fe.embedding_bag_backward(bag_grad, idx, off, T, num_threads=num_threads, **kw)
        want_gw, _ = _reference.embedding_bag_backward(bag_grad, idx, off, T, **kw)
        _same(got_gw, want_gw)


@pytest.mark.parametrize("num_threads", [2, 3, 8])
@pytest.mark.parametrize("dist", ["uniform", "hot-60%", "one-row"])
def test_split_scatter_whose_helpers_never_start_gives_the_serial_bits(num_threads, dist):
    # the caller runs every part in order: part 1 then begins with part 0
    # done and applies all of its updates at once, while the later parts
    # still defer the rows an earlier part names
    rng = np.random.default_rng(num_threads)
    T, B, d = 70_000, 6_000, 64
    idx = _scatter_ids(rng, dist, T, B)
    _kernels.run_chunks_alone(True)
    try:
        for dtype in (np.float32, np.float64):
            base = _specials(rng, (T, d), dtype)
            grad = _specials(rng, (B, d), dtype)
            expected = _reference.scatter_add(base.copy(), idx, grad)
            _same(fe.scatter_add(base.copy(), idx, grad, num_threads=num_threads), expected)
    finally:
        _kernels.run_chunks_alone(False)


@pytest.mark.parametrize("num_threads", [2, 3, 8])
def test_split_scatter_on_a_table_far_larger_than_the_batch(num_threads):
    # T > 16 n: the split's parts remember earlier rows by a hash, whose false
    # hits defer updates that need not wait; the thread that follows a part,
    # and the second pass, must still apply every row's updates in index order
    rng = np.random.default_rng(num_threads)
    T, B, d = 200_000, 6_000, 32
    idx = np.where(rng.random(B) < 0.3, rng.integers(0, 50, B), rng.integers(0, T, B))
    for dtype in (np.float32, np.float64):
        base = _specials(rng, (T, d), dtype)
        grad = _specials(rng, (B, d), dtype)
        expected = _reference.scatter_add(base.copy(), idx, grad)
        _same(fe.scatter_add(base.copy(), idx, grad, num_threads=num_threads), expected)


@pytest.mark.parametrize("num_threads", [2, 8, 64])
@pytest.mark.parametrize("B", [6_000, 40])
def test_split_scatter_on_a_table_far_smaller_than_the_batch(num_threads, B):
    # T << n, split by position (as tests force it): nearly every update of
    # the later parts is deferred, more than the thread that follows a part
    # applies between two looks at it, so it stops once that part is done and
    # the second pass applies the rest; with fewer updates than parts, some
    # parts are empty
    rng = np.random.default_rng(num_threads)
    T, d = 50, 32
    idx = rng.integers(0, T, B)
    for dtype in (np.float32, np.float64):
        base = _specials(rng, (T, d), dtype)
        grad = _specials(rng, (B, d), dtype)
        expected = _reference.scatter_add(base.copy(), idx, grad)
        _same(fe.scatter_add(base.copy(), idx, grad, num_threads=num_threads), expected)


@pytest.mark.parametrize("num_threads", [1, 2, 3, 8])
def test_parallel_gather_gives_the_same_bits(num_threads):
    rng = np.random.default_rng(1)
    w = _specials(rng, (100_000, 64), np.float32)  # > 16 MiB: the prefetching loop
    idx = rng.integers(0, 100_000, 20_000).astype(np.int32)
    out = np.empty((20_000, 64), np.float32)
    fe.gather(w, idx, out=out, num_threads=num_threads)
    _same(out, np.take(w, idx, axis=0))
    _same(fe.gather(w, idx, num_threads=num_threads), np.take(w, idx, axis=0))


@pytest.mark.parametrize("d", [1, 2, 4, 8, 16, 32, 64, 65, 128, 300])
def test_every_row_width_copies_exactly(d):
    rng = np.random.default_rng(d)
    for dtype in DTYPES:
        w = _specials(rng, (50, d), dtype)
        idx = rng.integers(0, 50, 400)
        _same(fe.gather(w, idx), np.take(w, idx, axis=0))


def test_lean_and_full_paths_give_the_same_bits():
    rng = np.random.default_rng(11)
    for dtype in DTYPES:
        w = _specials(rng, (50, 9), dtype)
        for idx in (rng.integers(0, 50, 300), rng.integers(0, 50, 300).astype(np.int32)):
            g = _specials(rng, (300, 9), dtype)
            full = np.empty((300, 9), dtype)
            fe.gather(w, idx, out=full, backend="cython")  # backend named: the full path
            b = w.copy()
            fe.scatter_add(b, idx, g, backend="cython")
            for num_threads in (None, 1, 2):
                lean = np.empty((300, 9), dtype)
                fe.gather(w, idx, out=lean, num_threads=num_threads)
                _same(lean, full)
                a = w.copy()
                fe.scatter_add(a, idx, g, num_threads=num_threads)
                _same(a, b)


def test_lean_path_declines_bad_input_without_writing():
    w = np.ones((5, 3), np.float32)
    out = np.zeros((2, 3), np.float32)
    assert _kernels.gather_lean(w, np.array([0, 5]), out) is False
    assert _kernels.gather_lean(w, np.array([0, -1]), out) is False
    assert _kernels.gather_lean(w, np.array([0, 1]), out[:, :2]) is False
    assert _kernels.gather_lean(w, np.array([0, 1]), w[:2]) is False  # overlap
    assert not out.any()
    gw = np.zeros((5, 3), np.float32)
    assert _kernels.scatter_add_lean(gw, np.array([1, 7]), np.ones((2, 3), np.float32)) is False
    assert _kernels.scatter_add_lean(gw, np.array([1, 2]), np.ones((2, 3), np.float64)) is False
    assert not gw.any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("offset", [0, 16, 32, 48, 8],
                         ids=["aligned_out", "out_16", "out_32", "out_48", "out_8_bytes_off_16"])
@pytest.mark.parametrize("row_bytes", [128, 256, 272, 512, 528, 2048, 8192])
def test_a_gather_larger_than_the_caches_streams_its_output_with_the_same_bits(dtype, offset,
                                                                                row_bytes,
                                                                                isa_level):
    # past the streaming threshold (8 MiB out, rows of 128 B or more, 512 B
    # on AMD): whole rows and the first 512 bytes of longer ones prefetched 8
    # ahead, and a row that ends in a 16-byte tail (272, 528); at each store
    # width (16, 32 and 64 bytes for rows of 256 B or more), whose stores
    # start where the output is 16, 32 or 48 bytes into a line;
    # an output that is not 16-byte aligned takes the ordinary stores
    rng = np.random.default_rng(offset)
    itemsize = np.dtype(dtype).itemsize
    d = row_bytes // itemsize
    T, B = 3000, (9 << 20) // row_bytes
    w = _specials(rng, (T, d), dtype)
    idx = rng.integers(0, T, B)
    raw = np.empty(B * d * itemsize + 128, np.uint8)
    start = (-raw.ctypes.data) % 64 + offset
    out = raw[start:start + B * d * itemsize].view(dtype).reshape(B, d)
    assert (out.ctypes.data % 16 == 0) is (offset % 16 == 0)
    for num_threads in (1, 2):
        out[...] = 0
        fe.gather(w, idx, out=out, num_threads=num_threads)
        _same(out, np.take(w, idx, axis=0))


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("num_rows", [0, 1, 2, 1000, 2**31 - 1, 2**31, 2**31 + 1, 2**62])
def test_the_bounds_pass_finds_the_first_index_outside_the_table(index_dtype, num_rows):
    # the pass's first sweep has no compare (an or of i and T - 1 - i): every
    # edge of both ends, each alone and at each position, against the rule itself
    info = np.iinfo(index_dtype)
    edges = {0, 1, -1, num_rows - 1, num_rows, num_rows + 1, info.min, info.max, info.min + 1,
             info.max - 1, 2**31 - 1, -2**31}
    edges = sorted(v for v in edges if info.min <= v <= info.max)
    n = 37   # odd: the vector loop's tail runs too
    for v in edges:
        for pos in (0, 1, n // 2, n - 1):
            idx = np.zeros(n, index_dtype) if num_rows else np.full(n, -1, index_dtype)
            if num_rows:
                idx[:] = np.arange(n) % num_rows   # all inside
            idx[pos] = v
            inside = (idx >= 0) & (idx.astype(np.int64) < num_rows)
            want = -1 if inside.all() else int(np.argmin(inside))
            assert _kernels.first_out_of_range(idx, num_rows) == want, (v, pos)



@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("num_threads", [1, 2, 3])
def test_the_bounds_pass_on_several_threads_finds_the_first_index_outside(index_dtype,
                                                                          num_threads):
    # 600000 indices are far above the parallel threshold, so with two or more
    # threads the pass runs in chunks (8192 int64 or 16384 int32 each) on the
    # pool, in whatever order the threads claim them: a bad index late in the
    # array may be seen first, and the first one must still be reported
    n, num_rows = 600_000, 1000
    chunk = 65536 // np.dtype(index_dtype).itemsize
    base = (np.arange(n) % num_rows).astype(index_dtype)
    state = _kernels.engine_state()
    places = [(), (0,), (n - 1,), (chunk - 1,), (chunk,), (5 * chunk + 7,),
              (n - 1, 3), (n - 1, chunk), (4 * chunk, 4 * chunk + 1, 9 * chunk)]
    for bad in (num_rows, -1, np.iinfo(index_dtype).max, np.iinfo(index_dtype).min):
        for pos in places:
            idx = base.copy()
            idx[list(pos)] = bad
            want = min(pos) if pos else -1
            got = _kernels.first_out_of_range(idx, num_rows, num_threads)
            assert got == want, (bad, pos, got)
    after = _kernels.engine_state()
    # the kernels' count says whether a kernel ran threaded: a check is not one
    assert after["jobs"] == state["jobs"]

@pytest.mark.parametrize("hint", ["t0", "nta"])
def test_either_prefetch_hint_gives_the_reference_bits(hint):
    # the read prefetches' hint is chosen from the CPU's vendor; it moves no
    # numbers, so every prefetching kernel gives the same bits under both
    rng = np.random.default_rng(0)
    T, d, B = 70_000, 128, 6_000     # a table past PREFETCH_MIN_TABLE_BYTES
    w = _specials(rng, (T, d), np.float32)
    idx = rng.integers(0, T, B)
    off = np.arange(0, B, 20)
    before = _kernels.prefetch_hint()
    assert before in ("t0", "nta") and fe.info()["prefetch_hint"] == before
    try:
        assert _kernels.prefetch_hint(hint) == hint
        for n in (1, 2):
            _same(fe.gather(w, idx, num_threads=n), _reference.gather(w, idx))
            _same(fe.embedding_bag(w, idx, off, mode="sum", num_threads=n),
                  _reference.embedding_bag(w, idx, off, mode="sum"))
            grad = _specials(rng, (B, d), np.float32)
            _same(fe.scatter_add(w.copy(), idx, grad, num_threads=n),
                  _reference.scatter_add(w.copy(), idx, grad))
    finally:
        _kernels.prefetch_hint(before)


def test_prefetch_hint_names_what_it_takes():
    with pytest.raises(ValueError, match="hint must be 't0' or 'nta', got 't1'"):
        _kernels.prefetch_hint("t1")
    assert _kernels.prefetch_hint() in ("t0", "nta")

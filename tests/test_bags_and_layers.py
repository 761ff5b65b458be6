"""embedding_bag and its backward, renorm_, coalesce, the fused optimizer steps and the
layer classes: compiled == NumPy reference bit for bit, PyTorch's meaning, clear errors."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastembed_ext as fe
from fastembed_ext import _reference

DTYPES = (np.float16, np.float32, np.float64)
UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def _u(a):
    return np.ascontiguousarray(a).view(UINT[a.itemsize])


def _same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    diff = _u(a) != _u(b)
    assert not diff.any(), f"{int(diff.sum())} elements differ, first at {np.argwhere(diff)[0]}"


def _values(rng, shape, dtype, special):
    x = rng.standard_normal(shape).astype(dtype)
    if special and x.size:
        flat = x.reshape(-1)
        fi = np.finfo(dtype)
        sp = np.array([np.nan, -np.nan, -0.0, np.inf, -np.inf, fi.smallest_subnormal, fi.max], dtype)
        pick = rng.random(flat.size) < 0.08
        flat[pick] = sp[rng.integers(0, sp.size, int(pick.sum()))]
        u = flat.view(UINT[flat.itemsize])
        nan_at = np.flatnonzero(np.isnan(flat))
        u[nan_at] |= rng.integers(1, 200, nan_at.size).astype(u.dtype)  # distinct payloads
    return x


def _bags(rng, T, n, B):
    idx = rng.integers(0, T, n)
    off = np.sort(rng.integers(0, n + 1, B))
    off[0] = 0
    return idx, off


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("special", [False, True])
@pytest.mark.parametrize("num_threads", [1, 2, 3])
def test_embedding_bag_and_backward_match_the_reference_bits(dtype, mode, special, num_threads):
    rng = np.random.default_rng(hash((mode, special, num_threads)) % 2**32)
    for trial in range(12):
        T, d = int(rng.integers(1, 40)), int(rng.integers(0, 20))
        n, B = int(rng.integers(0, 300)), int(rng.integers(1, 25))
        w = _values(rng, (T, d), dtype, special)
        idx, off = _bags(rng, T, n, B)
        pad = int(rng.integers(0, T)) if trial % 3 == 0 else None
        psw = _values(rng, (n,), dtype, special) if mode == "sum" and trial % 2 else None
        got = fe.embedding_bag(w, idx, off, mode=mode, per_sample_weights=psw, padding_idx=pad,
                               num_threads=num_threads)
        ref = _reference.embedding_bag(w, idx, off, mode=mode, per_sample_weights=psw, padding_idx=pad)
        if mode == "max":
            _same(got[0], ref[0])
            assert np.array_equal(got[1], ref[1])
        else:
            _same(got, ref)
        g = _values(rng, (B, d), dtype, special)
        kw = dict(mode=mode, per_sample_weights=psw, padding_idx=pad,
                  weight=w if psw is not None else None,
                  max_indices=got[1] if mode == "max" else None)
        gw, gpsw = fe.embedding_bag_backward(g, idx, off, T, num_threads=num_threads, **kw)
        rgw, rgpsw = _reference.embedding_bag_backward(
            g, idx, off, T, **{**kw, "max_indices": ref[1] if mode == "max" else None})
        _same(gw, rgw)
        if psw is None:
            assert gpsw is None and rgpsw is None
        else:
            _same(gpsw, rgpsw)


def _check_max(rng, w, idx, off):
    # max, on the rows w and on rows full of ties (few values, both zeros),
    # with and without padding: the first of equal values stays, a NaN never
    # replaces, a leading one stays, every value written bit for bit
    ties = rng.integers(-2, 3, w.shape).astype(w.dtype)
    ties[rng.random(w.shape) < 0.2] = -0.0
    for table in (w, ties):
        for pad in (None, int(idx[0])):
            got, got_i = fe.embedding_bag(table, idx, off, mode="max", padding_idx=pad)
            ref, ref_i = _reference.embedding_bag(table, idx, off, mode="max", padding_idx=pad)
            _same(got, ref)
            assert np.array_equal(got_i, ref_i)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [64, 99, 128, 197, 256, 1000])
def test_bag_kernels_match_the_reference_bits_at_every_pass_width(dtype, d, isa_level):
    # widths that take whole register blocks and the masked tail (64 float32
    # or 32 float64 to a block), with NaN payloads, infinities and signed
    # zeros in the rows and the weights
    rng = np.random.default_rng(d)
    T, n, B = 40, 500, 30
    w = _values(rng, (T, d), dtype, True)
    idx, off = _bags(rng, T, n, B)
    psw = _values(rng, (n,), dtype, True)
    for mode, weights in (("sum", None), ("mean", None), ("sum", psw)):
        kw = dict(mode=mode, per_sample_weights=weights, padding_idx=int(idx[0]))
        _same(fe.embedding_bag(w, idx, off, **kw), _reference.embedding_bag(w, idx, off, **kw))
    _check_max(rng, w, idx, off)


def _values16(rng, shape, dtype):
    # _values for the 16-bit floats, bfloat16 too: NaNs with payloads (quiet
    # and signalling, both signs), infinities, subnormals, signed zeros and
    # rows large enough for sums to overflow
    if dtype == np.float16:
        x = _values(rng, shape, np.float16, True)
        x[rng.random(shape) < 0.05] = 30000.0
        return x
    x = _values(rng, shape, np.float32, True)
    x[np.isnan(x)] = 0.0
    x[rng.random(shape) < 0.05] = 3e38
    x[rng.random(shape) < 0.03] = 1e-40
    x = x.astype(dtype)
    bits = x.reshape(-1).view(np.uint16)
    at = rng.random(bits.size) < 0.05
    bits[at] = rng.choice(np.array([0x7FC1, 0xFFC3, 0x7F81, 0xFF90, 0x7FFF], np.uint16),
                          int(at.sum()))
    return x


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("d", [8, 64, 99, 128, 197])
def test_16_bit_bags_match_the_reference_bits(dtype, d, f16c, avx2):
    # sums: a rounding after every add (and after every product), in
    # registers (float16 with F16C, bfloat16 always, with AVX2 and without)
    # and in the output row (float16 without F16C): whole blocks, whole
    # registers and a tail; a bfloat16 NaN's payload dropped and its sign
    # kept; max: written bit for bit, signalling NaNs included, and the
    # first of equal values (both zeros among them) stays
    dt = np.dtype(np.float16) if dtype == "float16" else \
        np.dtype(pytest.importorskip("ml_dtypes").bfloat16)
    rng = np.random.default_rng(d + 1000 * f16c + 10 * avx2 + (7 if dtype == "bfloat16" else 0))
    T, n, B = 40, 500, 30
    w = _values16(rng, (T, d), dt)
    idx, off = _bags(rng, T, n, B)
    psw = _values16(rng, (n,), dt)
    for mode, weights in (("sum", None), ("mean", None), ("sum", psw)):
        for pad in (None, int(idx[0])):
            kw = dict(mode=mode, per_sample_weights=weights, padding_idx=pad)
            for threads in (1, 2):
                _same(fe.embedding_bag(w, idx, off, num_threads=threads, **kw),
                      _reference.embedding_bag(w, idx, off, **kw))
    bits = w.reshape(-1).view(np.uint16)
    at = rng.random(bits.size) < 0.03
    bits[at] = rng.choice(np.array([0x7C01, 0xFC10, 0x7D00, 0x7F81], np.uint16), int(at.sum()))
    _check_max(rng, w, idx, off)


def test_embedding_bag_big_enough_for_threads_is_thread_count_independent():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((5000, 64)).astype(np.float32)
    idx, off = _bags(rng, 5000, 60_000, 3000)
    outs = [fe.embedding_bag(w, idx, off, mode="mean", num_threads=n) for n in (1, 2, 3, 8)]
    for o in outs[1:]:
        _same(o, outs[0])
    _same(outs[0], _reference.embedding_bag(w, idx, off, mode="mean"))


def test_bag_layouts_2d_include_last_offset_empty_bags_and_padding_only_bags():
    w = np.arange(20, dtype=np.float32).reshape(10, 2)
    two_d = np.array([[1, 2, 3], [4, 4, 0]])
    _same(fe.embedding_bag(w, two_d, mode="sum"), fe.embedding_bag(w, two_d.ravel(), [0, 3]))
    out = fe.embedding_bag(w, [1, 2, 3], [0, 0, 3, 3], include_last_offset=True, mode="mean")
    assert out.shape == (3, 2)
    assert not out[0].any() and not out[2].any()
    _same(out[1], w[1:4].mean(0).astype(np.float32))
    only_pad, mi = fe.embedding_bag(w, [0, 0, 5], [0, 2], mode="max", padding_idx=0)
    assert not only_pad[0].any() and (mi[0] == -1).all() and (mi[1] == 5).all()
    mean = fe.embedding_bag(w, [0, 6, 8], [0], mode="mean", padding_idx=0)
    _same(mean[0], ((w[6] + w[8]) / 2).astype(np.float32))


def test_embedding_bag_matches_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(3)
    w = rng.standard_normal((50, 16))
    idx, off = _bags(rng, 50, 200, 30)
    psw = rng.standard_normal(200)
    wt, it, ot = torch.from_numpy(w), torch.from_numpy(idx), torch.from_numpy(off)
    for mode in ("sum", "mean", "max"):
        for pad in (None, 7):
            ours = fe.embedding_bag(w, idx, off, mode=mode, padding_idx=pad)
            ours = ours[0] if mode == "max" else ours
            theirs = F.embedding_bag(it, wt, ot, mode=mode, padding_idx=pad).numpy()
            np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    ours = fe.embedding_bag(w, idx, off, mode="sum", per_sample_weights=psw)
    theirs = F.embedding_bag(it, wt, ot, mode="sum", per_sample_weights=torch.from_numpy(psw)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    # the gradients too, through autograd
    for mode in ("sum", "mean", "max"):
        wt2 = torch.from_numpy(w.copy()).requires_grad_(True)
        ps = torch.from_numpy(psw).requires_grad_(True) if mode == "sum" else None
        out = F.embedding_bag(it, wt2, ot, mode=mode, per_sample_weights=ps)
        g = torch.from_numpy(rng.standard_normal(out.shape))
        out.backward(g)
        fwd = fe.embedding_bag(w, idx, off, mode=mode, per_sample_weights=psw if ps is not None else None)
        gw, gpsw = fe.embedding_bag_backward(
            g.numpy(), idx, off, 50, mode=mode, per_sample_weights=psw if ps is not None else None,
            weight=w if ps is not None else None, max_indices=fwd[1] if mode == "max" else None)
        np.testing.assert_allclose(gw, wt2.grad.numpy(), rtol=1e-12, atol=1e-12)
        if ps is not None:
            np.testing.assert_allclose(gpsw, ps.grad.numpy(), rtol=1e-10, atol=1e-10)


BAG_ERRORS = [
    (dict(offsets=[1, 2]), ValueError, r"offsets\[0\] must be 0, got 1"),
    (dict(offsets=[0, 3, 2]), ValueError, r"offsets must be non-decreasing"),
    (dict(offsets=[0, 9]), ValueError, r"offsets must be non-decreasing and at most len\(indices\) = 4"),
    (dict(offsets=[0, 2], include_last_offset=True), ValueError, r"offsets\[-1\] must equal len\(indices\) = 4"),
    (dict(offsets=[0], mode="median"), ValueError, r"mode must be one of 'sum', 'mean', 'max'"),
    (dict(offsets=[0], mode="mean", per_sample_weights=np.ones(4, np.float32)), ValueError,
     r"per_sample_weights is only supported with mode='sum'"),
    (dict(offsets=[0], per_sample_weights=np.ones(4)), TypeError,
     r"per_sample_weights must have the dtype of weight \(float32\), got float64"),
    (dict(offsets=[0], per_sample_weights=np.ones(3, np.float32)), ValueError,
     r"per_sample_weights must have the shape of indices \(4,\), got \(3,\)"),
    (dict(offsets=[0.0]), TypeError, r"offsets must have an integer dtype"),
    (dict(offsets=[0], padding_idx=10), ValueError, r"padding_idx must be within"),
    (dict(offsets=None), ValueError, r"indices must be 2-D \(bags, entries per bag\) when offsets is None"),
    (dict(offsets=[0], out=np.zeros((2, 3), np.float32)), ValueError, r"out must have shape \(1, 3\)"),
]


@pytest.mark.parametrize("kwargs,exc,pattern", BAG_ERRORS)
@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_embedding_bag_bad_input_raises_and_writes_nothing(kwargs, exc, pattern, backend):
    w = np.arange(30, dtype=np.float32).reshape(10, 3)
    idx = np.array([1, 2, 3, 4])
    out = np.full((1, 3), 7.0, np.float32)
    kwargs = {"out": out, **kwargs}
    offsets = kwargs.pop("offsets")
    before = (w.tobytes(), idx.tobytes(), kwargs["out"].tobytes())
    with pytest.raises(exc, match=pattern):
        fe.embedding_bag(w, idx, offsets, backend=backend, **kwargs)
    assert (w.tobytes(), idx.tobytes(), kwargs["out"].tobytes()) == before


def test_embedding_bag_backward_bad_input_and_accumulate_into_grad_weight():
    g = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="max_indices .* is needed for mode='max'"):
        fe.embedding_bag_backward(g, [1, 2], [0, 1], 5, mode="max")
    with pytest.raises(ValueError, match="weight is needed for the gradient of per_sample_weights"):
        fe.embedding_bag_backward(g, [1, 2], [0, 1], 5, per_sample_weights=np.ones(2, np.float32))
    with pytest.raises(ValueError, match=r"grad must have one row per bag \(3\)"):
        fe.embedding_bag_backward(g, [1, 2, 3], [0, 1, 2], 5)
    gw = np.ones((5, 3), np.float32)
    snapshot = gw.copy()
    with pytest.raises(IndexError, match=r"indices\[1\] = 7 is out of range for grad_weight with 5 rows"):
        fe.embedding_bag_backward(g, [1, 7], [0, 1], None, grad_weight=gw)
    assert gw.tobytes() == snapshot.tobytes()
    out, _ = fe.embedding_bag_backward(g, [1, 1], [0, 1], None, grad_weight=gw)
    assert out is gw and (gw[1] == 3).all() and (gw[0] == 1).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_type", [2.0, 1.0, np.inf, 3.0, 0.5])
@pytest.mark.parametrize("num_threads", [1, 2])
def test_renorm_matches_the_reference_bits(dtype, norm_type, num_threads):
    rng = np.random.default_rng(int(norm_type * 10) if np.isfinite(norm_type) else 99)
    for special in (False, True):
        with np.errstate(over="ignore"):
            w = _values(rng, (300, 33), dtype, special) * dtype(3)
        idx = rng.integers(0, 300, 500)
        a, b = w.copy(), w.copy()
        fe.renorm_(a, idx, 1.5, norm_type, num_threads=num_threads)
        _reference.renorm_(b, np.asarray(idx), 1.5, norm_type)
        _same(a, b)
        untouched = np.setdiff1d(np.arange(300), idx)
        _same(a[untouched], w[untouched])


def test_renorm_matches_torch_and_scales_each_row_once():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w = rng.standard_normal((40, 8)) * 3
    idx = np.array([1, 1, 1, 5, 7, 7])
    ours = fe.renorm_(w.copy(), idx, 1.0)
    theirs = torch.from_numpy(w.copy())
    with torch.no_grad():
        torch.embedding_renorm_(theirs, torch.from_numpy(idx), 1.0, 2.0)
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-12)
    assert np.linalg.norm(ours[1]) <= 1.0 + 1e-9


def test_renorm_bad_arguments():
    w = np.ones((4, 2), np.float32)
    with pytest.raises(ValueError, match="max_norm must be >= 0"):
        fe.renorm_(w, [1], -1.0)
    with pytest.raises(ValueError, match="norm_type must be > 0"):
        fe.renorm_(w, [1], 1.0, 0.0)
    with pytest.raises(ValueError, match="weight must be writable"):
        r = np.ones((4, 2), np.float32)
        r.setflags(write=False)
        fe.renorm_(r, [1], 1.0)
    assert (w == 1).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_coalesce_matches_np_add_at_and_handles_huge_row_ids(dtype):
    rng = np.random.default_rng(2)
    for special in (False, True):
        idx = rng.integers(0, 50, (30, 7))
        g = _values(rng, (30, 7, 5), dtype, special)
        for pad in (None, 3):
            rows, vals = fe.coalesce(idx, g, padding_idx=pad)
            rrows, rvals = _reference.coalesce(idx, g, padding_idx=pad)
            assert np.array_equal(rows, rrows) and rows.dtype == np.int64
            _same(vals, rvals)
            assert np.all(np.diff(rows) > 0)
    huge = np.array([9_000_000_000, 3, 9_000_000_000, 2**62])
    rows, vals = fe.coalesce(huge, np.ones((4, 2), np.float32))
    assert rows.tolist() == [3, 9_000_000_000, 2**62] and vals[:, 0].tolist() == [1, 2, 1]
    with pytest.raises(IndexError, match=r"indices\[1\] = -1"):
        fe.coalesce([1, -1], np.ones((2, 2)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("step", ["sgd", "adagrad", "rowwise"])
@pytest.mark.parametrize("num_threads", [1, 2])
def test_optimizer_steps_match_the_reference_bits(dtype, step, num_threads):
    rng = np.random.default_rng(7)
    op = np.float64 if dtype == np.float64 else np.float32
    for special in (False, True):
        for wd, pad in ((0.0, None), (0.01, 4)):
            w = _values(rng, (60, 9), dtype, special)
            idx = rng.integers(0, 60, 400)
            g = _values(rng, (400, 9), dtype, special)
            a, b = w.copy(), w.copy()
            if step == "sgd":
                fe.sgd_step(a, idx, g, lr=0.1, weight_decay=wd, padding_idx=pad, num_threads=num_threads)
                _reference.sgd_step(b, idx, g, lr=0.1, weight_decay=wd, padding_idx=pad)
            else:
                shape = (60, 9) if step == "adagrad" else (60,)
                s = np.abs(rng.standard_normal(shape)).astype(op)
                sa, sb = s.copy(), s.copy()
                fn = fe.adagrad_step if step == "adagrad" else fe.rowwise_adagrad_step
                ref = _reference.adagrad_step if step == "adagrad" else _reference.rowwise_adagrad_step
                fn(a, sa, idx, g, lr=0.1, eps=1e-8, weight_decay=wd, padding_idx=pad, num_threads=num_threads)
                ref(b, sb, idx, g, lr=0.1, eps=1e-8, weight_decay=wd, padding_idx=pad)
                _same(sa, sb)
            _same(a, b)
            if pad is not None:
                _same(a[pad], w[pad])


def test_sgd_step_is_one_update_per_distinct_row():
    w = np.ones((5, 2), np.float64)
    fe.sgd_step(w, [1, 1, 3], np.full((3, 2), 0.5), lr=0.1, weight_decay=0.1)
    assert np.allclose(w[1], 1 - 0.1 * (1.0 + 0.1))   # the two 0.5s summed, decayed once
    assert np.allclose(w[3], 1 - 0.1 * (0.5 + 0.1))
    assert (w[[0, 2, 4]] == 1).all()


def test_optimizer_state_must_have_the_documented_dtype_and_shape():
    w = np.ones((5, 2), np.float16)
    with pytest.raises(TypeError, match="state must have dtype float32 for a float16 table"):
        fe.adagrad_step(w, np.zeros((5, 2), np.float16), [1], np.ones((1, 2), np.float16), lr=0.1)
    with pytest.raises(ValueError, match=r"state must have shape \(5,\)"):
        fe.rowwise_adagrad_step(w, np.zeros((5, 2), np.float32), [1], np.ones((1, 2), np.float16), lr=0.1)
    with pytest.raises(ValueError, match="lr must be finite"):
        fe.sgd_step(w, [1], np.ones((1, 2), np.float16), lr=float("nan"))
    assert (w == 1).all()


def test_embedding_layer_forward_backward_step_and_sparse_equals_dense():
    dense = fe.Embedding(30, 4, padding_idx=0, seed=1, scale_grad_by_freq=True)
    sparse = fe.Embedding(30, 4, padding_idx=0, seed=1, scale_grad_by_freq=True, sparse=True)
    assert not dense.weight[0].any()
    idx = np.array([[1, 2, 2], [0, 5, 1]])
    x = dense(idx)
    _same(x, fe.gather(dense.weight, idx))
    sparse(idx)
    g = np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
    gd = dense.backward(g)
    rows, vals = sparse.backward(g)
    assert rows.tolist() == [1, 2, 5]
    _same(vals, gd[rows])
    dense.step(fe.SGD(lr=0.5))
    sparse.step(fe.SGD(lr=0.5))
    _same(dense.weight, sparse.weight)
    assert dense.grad is None
    with pytest.raises(ValueError, match="call backward"):
        dense.step(fe.SGD(lr=0.5))


def test_embedding_layer_max_norm_from_pretrained_freeze_and_save_load(tmp_path):
    w = np.full((6, 3), 2.0, np.float32)
    layer = fe.Embedding.from_pretrained(w, freeze=True, max_norm=1.0)
    out = layer(np.array([1, 1, 4]))
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert np.allclose(layer.weight[0], 2.0)       # not looked up, not renormalised
    assert (w == 2.0).all()                         # from_pretrained copies
    layer.backward(np.ones_like(out))
    before = layer.weight.copy()
    layer.step(fe.Adagrad(lr=1.0))
    _same(layer.weight, before)                      # frozen
    for name in ("t.npy", "t.npz"):
        layer.save(str(tmp_path / name))
        back = fe.Embedding.load(str(tmp_path / name))
        _same(back.weight, layer.weight)
    assert fe.Embedding.load(str(tmp_path / "t.npz")).max_norm == 1.0


def test_embedding_bag_layer_and_rowwise_adagrad():
    bag = fe.EmbeddingBag(20, 4, mode="sum", seed=3)
    idx, off = np.array([1, 2, 3, 3]), np.array([0, 2])
    psw = np.array([1.0, 0.5, 2.0, 1.0], np.float32)
    y = bag(idx, off, per_sample_weights=psw)
    _same(y, fe.embedding_bag(bag.weight, idx, off, per_sample_weights=psw))
    gw = bag.backward(np.ones_like(y))
    assert gw.shape == (20, 4) and bag.grad_per_sample_weights.shape == (4,)
    opt = fe.RowwiseAdagrad(lr=0.1)
    bag.step(opt)
    assert opt._state[id(bag.weight)].shape == (20,)
    with pytest.raises(ValueError, match="scale_grad_by_freq"):
        fe.EmbeddingBag(5, 2, scale_grad_by_freq=True)


def test_skipgram_example_trains_and_reports(tmp_path):
    example = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "examples", "skipgram.py")
    if not os.path.exists(example):
        pytest.skip("examples/ is not next to the tests")
    code = (f"import runpy, sys; sys.argv = ['skipgram', '--steps', '150', '--files', '150', "
            f"'--batch', '256', '--numpy-steps', '10']; runpy.run_path({example!r}, run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path, env={**os.environ, "FASTEMBED_EXT_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    first, last = (float(v) for v in r.stdout.split("loss: ")[1].split("\n")[0].split(" -> "))
    assert last < first
    assert "words/s with the compiled backend" in r.stdout

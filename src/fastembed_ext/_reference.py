"""The NumPy twins of the compiled kernels: the definition of "correct".

Each function has the signature of its public counterpart less the dispatch
keywords, and takes arguments already validated by the operations (value
arrays of one floating dtype, integer indices inside [0, T), padding_idx
already normalised to a row number or None).  The compiled path must return
exactly these bits, for every thread count.
"""

from typing import Any, Callable

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]

__all__ = [
    "adagrad_step",
    "bag_of_entries",
    "coalesce",
    "embedding_backward",
    "embedding_bag",
    "embedding_bag_backward",
    "gather",
    "mul",
    "renorm_",
    "row_norms",
    "rowwise_adagrad_step",
    "scale_by_freq",
    "scatter_add",
    "sequential_row_sums",
    "sgd_step",
]


def gather(weight: Array, indices: Array, *, out: Array | None = None) -> Array:
    """``out[k] = weight[indices[k]]``: ``np.take(weight, indices, axis=0)``.

    Spelled ``weight[indices]``, the same bits: ``np.take`` first makes a
    contiguous copy of a strided table, which for a broadcast view is the
    whole logical table.
    """
    rows = weight[indices]
    if out is None:
        return rows
    out[...] = rows
    return out


def _without_padding(indices: Array, grad: Array,
                     padding_idx: int | None) -> tuple[Array, Array]:
    if padding_idx is None:
        return indices, grad
    keep = indices != padding_idx
    return indices[keep], grad[keep]


def scatter_add(grad_weight: Array, indices: Array, grad: Array, *,
                padding_idx: int | None = None) -> Array:
    """``grad_weight[indices[k]] += grad[k]`` in index order: ``np.add.at``.

    float16 rounds after every add, as ``np.add.at`` does.
    """
    indices, grad = _without_padding(indices, grad, padding_idx)
    # silent on inf - inf and NaN, like the compiled path: both backends behave alike
    with np.errstate(all="ignore"):
        np.add.at(grad_weight, indices, grad)
    return grad_weight


def scale_by_freq(grad: Array, indices: Array) -> Array:
    """Each ``grad[k]`` scaled by 1 / (count of ``indices[k]`` in the batch).

    The scale is ``1.0 / count`` in float64, rounded to the arithmetic type of
    the value dtype (float32 for float16 and float32, float64 for float64);
    the product is formed in that type and rounded to the value dtype.
    """
    opmath = _opmath(grad.dtype)
    _, inverse, counts = np.unique(indices, return_inverse=True, return_counts=True)
    scale = (1.0 / counts.astype(np.float64)).astype(opmath)[inverse.reshape(indices.shape)]
    with np.errstate(all="ignore"):
        return (grad.astype(opmath) * scale[..., None]).astype(grad.dtype)


def embedding_backward(grad: Array, indices: Array, num_embeddings: int, *,
                       padding_idx: int | None = None, scale_grad_by_freq: bool = False) -> Array:
    """A fresh (num_embeddings, d) weight gradient, PyTorch's meaning.

    Rows equal to ``padding_idx`` get no gradient; with ``scale_grad_by_freq``
    each gradient row is first scaled by ``scale_by_freq``.
    """
    d = grad.shape[-1]
    grad_weight = np.zeros((num_embeddings, d), dtype=grad.dtype)
    if scale_grad_by_freq and indices.size:
        grad = scale_by_freq(grad, indices)
    return scatter_add(grad_weight, indices, grad, padding_idx=padding_idx)


# --------------------------------------------------------------------------
# bags
#
# Every accumulation below is an ``np.add.at`` on rows, so the order is index
# order and the NaN rule (on NaN + NaN the incoming value's payload survives)
# is the one the compiled kernels pin.

def _quiet_bits(x: Array) -> Array:
    """``x`` (NaNs) with the quiet bit set, as x86 quiets a NaN operand."""
    u: Any = {2: np.uint16, 4: np.uint32, 8: np.uint64}[x.itemsize]
    bit = {2: 0x0200, 4: 0x00400000, 8: 0x0008000000000000}[x.itemsize]
    bits: Array
    if x.dtype.kind == "V":  # bfloat16: the canonical NaN, with the sign
        bits = (x.view(u) & u(0x8000)) | u(0x7FC0)
    else:
        bits = x.view(u) | u(bit)
    return bits.view(x.dtype)


def mul(a: Array, b: Array) -> Array:
    """``a * b`` with one NaN rule: on NaN * NaN, ``a``'s payload (quieted) survives.

    NumPy's own multiply leaves that case to its inner loops, which differ by
    dtype and CPU; this fixes it so the compiled path can match it.
    """
    a, b = np.broadcast_arrays(a, b)
    with np.errstate(all="ignore"):
        r = a * b
        both = np.isnan(a.astype(np.float32) if a.dtype.kind == "V" else a) & \
            np.isnan(b.astype(np.float32) if b.dtype.kind == "V" else b)
    if both.any():
        r[both] = _quiet_bits(np.ascontiguousarray(a[both]))
    return r


def _opmath(dtype: np.dtype[Any]) -> type[np.floating[Any]]:
    return np.float64 if dtype == np.float64 else np.float32


def bag_of_entries(offsets: Array, num_entries: int,
                   include_last_offset: bool = False) -> tuple[Array, int]:
    """For each entry k of a flat ``indices``, the bag it belongs to."""
    starts = offsets[:-1] if include_last_offset else offsets
    num_bags = starts.shape[0]
    bag = np.zeros(num_entries, dtype=np.intp)
    if num_entries and num_bags:
        ends = np.append(starts[1:], num_entries if not include_last_offset else offsets[-1])
        lengths = (ends - starts).astype(np.intp)
        bag = np.repeat(np.arange(num_bags, dtype=np.intp), lengths)
        if bag.shape[0] < num_entries:  # entries past the last offset belong to no bag
            bag = np.append(bag, np.full(num_entries - bag.shape[0], -1, dtype=np.intp))
    return bag, num_bags


def embedding_bag(weight: Array, indices: Array, offsets: Array, *, mode: str = "sum",
                  per_sample_weights: Array | None = None, include_last_offset: bool = False,
                  padding_idx: int | None = None) -> Any:
    """PyTorch's ``embedding_bag`` on a flat ``indices`` with ``offsets``.

    sum: entries added in order from +0.0, each ``weight[i] * w_k`` rounded to
    the dtype first when ``per_sample_weights`` is given.  mean: that sum
    divided by the count of non-padding entries in the add's precision
    (float32 for float16), rounded to the dtype.  max: per column, the first
    entry initialises, a later one replaces it only if strictly greater (so a
    NaN never replaces, and a leading NaN stays).  Empty bags, and bags of only
    padding, are zeros (max_indices -1).  Returns ``out``, or ``(out,
    max_indices)`` for mode="max".
    """
    d = weight.shape[1]
    bag, num_bags = bag_of_entries(offsets, indices.shape[0], include_last_offset)
    keep = bag >= 0
    if padding_idx is not None:
        keep &= indices != padding_idx
    out = np.zeros((num_bags, d), dtype=weight.dtype)
    if mode in ("sum", "mean"):
        rows = weight[indices[keep]]
        if per_sample_weights is not None:
            rows = mul(rows, per_sample_weights[keep][:, None])
        with np.errstate(all="ignore"):
            np.add.at(out, bag[keep], rows)
        if mode == "mean":
            counts = np.bincount(bag[keep], minlength=num_bags)
            nz = counts > 0
            op = _opmath(weight.dtype)
            with np.errstate(all="ignore"):
                out[nz] = (out[nz].astype(op) / counts[nz].astype(op)[:, None]).astype(weight.dtype)
        return out
    max_indices = np.full((num_bags, d), -1, dtype=np.int64)
    kept = np.flatnonzero(keep)
    kbag = bag[kept]
    # entries in order: position of each kept entry within its bag
    first = np.searchsorted(kbag, kbag, side="left")
    pos = np.arange(kept.shape[0]) - first
    for s in range(int(pos.max()) + 1 if pos.size else 0):
        sel = pos == s
        b = kbag[sel]
        cand = weight[indices[kept[sel]]]
        if s == 0:
            out[b] = cand
            max_indices[b] = indices[kept[sel]][:, None]
        else:
            with np.errstate(invalid="ignore"):  # ml_dtypes' compares flag NaN operands
                take = cand > out[b]
            cur = out[b]
            cur[take] = cand[take]
            out[b] = cur
            mi = max_indices[b]
            mi[take] = np.broadcast_to(indices[kept[sel]][:, None], take.shape)[take]
            max_indices[b] = mi
    return out, max_indices


def sequential_row_sums(x: Array) -> Array:
    """``x[:, 0] + x[:, 1] + ...`` strictly left to right, each add rounded.

    Written with ``np.add.at`` on rows rather than ``np.add.accumulate``:
    both add in this order, but only the former keeps one NaN rule (the
    incoming value's payload on NaN + NaN) for every dtype.
    """
    acc = x[:, :1].copy()
    rows = np.arange(x.shape[0])
    with np.errstate(all="ignore"):
        for j in range(1, x.shape[1]):
            np.add.at(acc, rows, x[:, j:j + 1])
    return acc[:, 0]


def embedding_bag_backward(grad: Array, indices: Array, offsets: Array, num_embeddings: int, *,
                           mode: str = "sum", per_sample_weights: Array | None = None,
                           weight: Array | None = None, max_indices: Array | None = None,
                           include_last_offset: bool = False, padding_idx: int | None = None,
                           grad_weight: Array | None = None) -> tuple[Array, Array | None]:
    """The weight gradient (accumulated into ``grad_weight`` when given) and, with
    ``per_sample_weights``, their gradient.

    sum: ``grad_weight[i_k] += grad[bag_k] * w_k`` (product rounded first) in
    entry order.  mean: ``grad[b] / count_b`` in the add's precision, rounded,
    then added per entry.  max: ``grad_weight[max_indices[b, j], j] +=
    grad[b, j]`` in bag order, column by column.  The gradient of w_k is the
    dot product of ``grad[bag_k]`` and ``weight[i_k]``, products rounded to the
    dtype and summed strictly left to right (``sequential_row_sums``).
    """
    d = grad.shape[1]
    if grad_weight is None:
        grad_weight = np.zeros((num_embeddings, d), dtype=grad.dtype)
    bag, _ = bag_of_entries(offsets, indices.shape[0], include_last_offset)
    keep = bag >= 0
    if padding_idx is not None:
        keep &= indices != padding_idx
    grad_psw = None
    if mode == "max":
        assert max_indices is not None
        for j in range(d):
            mi = max_indices[:, j]
            sel = mi >= 0
            col = grad_weight[:, j:j + 1]
            with np.errstate(all="ignore"):
                np.add.at(col, mi[sel], grad[sel, j:j + 1])
        return grad_weight, None
    src = grad[bag[keep]]
    if mode == "mean":
        counts = np.bincount(bag[keep], minlength=grad.shape[0])
        op = _opmath(grad.dtype)
        with np.errstate(all="ignore"):
            scaled = (grad.astype(op) / np.maximum(counts, 1).astype(op)[:, None]).astype(grad.dtype)
        src = scaled[bag[keep]]
    if per_sample_weights is not None:
        assert weight is not None
        prods = mul(src, weight[indices[keep]])
        grad_psw = np.zeros(indices.shape[0], dtype=grad.dtype)
        if d:
            grad_psw[keep] = sequential_row_sums(prods)
        src = mul(src, per_sample_weights[keep][:, None])
    with np.errstate(all="ignore"):
        np.add.at(grad_weight, indices[keep], src)
    return grad_weight, grad_psw


# --------------------------------------------------------------------------
# max-norm, sparse gradients, optimizer steps

def _c_pow() -> Any:
    """The C library's pow, element-wise: what the compiled kernels call.

    (math.pow raises on overflow, and np.power may use a vector library whose
    last bit differs.)
    """
    import ctypes
    import ctypes.util
    name = ctypes.util.find_library("m") or ctypes.util.find_library("c") or "msvcrt"
    fn = ctypes.CDLL(name).pow
    fn.restype = ctypes.c_double
    fn.argtypes = [ctypes.c_double, ctypes.c_double]
    return np.frompyfunc(fn, 2, 1)


def row_norms(rows: Array, norm_type: float) -> Array:
    """Norms of the rows of ``rows``, in float64, summed strictly left to right.

    p = 2: sqrt of the sum of squares; p = 1: sum of |x|; p = inf: max |x|;
    other p > 0: (sum of pow(|x|, p)) ** (1 / p) with the C library's pow.
    A NaN anywhere gives a NaN norm (which exceeds no max_norm).
    """
    x = np.abs(rows.astype(np.float64))
    if x.shape[1] == 0:
        return np.zeros(x.shape[0])
    if norm_type == np.inf:
        return np.asarray(np.max(x, axis=1))
    if norm_type == 2.0:
        return np.sqrt(np.add.accumulate(x * x, axis=1)[:, -1])
    if norm_type == 1.0:
        return np.add.accumulate(x, axis=1)[:, -1]
    cpow = _c_pow()
    with np.errstate(all="ignore"):
        total = np.add.accumulate(cpow(x, norm_type).astype(np.float64), axis=1)[:, -1]
        return np.asarray(cpow(total, 1.0 / norm_type), dtype=np.float64)


def renorm_(weight: Array, indices: Array, max_norm: float, norm_type: float = 2.0) -> Array:
    """PyTorch's embedding_renorm_: rows named in ``indices`` (once each) whose norm
    exceeds ``max_norm`` are multiplied by ``max_norm / (norm + 1e-7)``.

    The scale is computed in float64, rounded to the add's precision (float32
    for 16-bit and float32 tables), multiplied in, and rounded to the dtype.
    """
    rows = np.unique(indices)
    if rows.size == 0:
        return weight
    with np.errstate(all="ignore"):
        norms = row_norms(weight[rows], norm_type)
        over = norms > max_norm
        if over.any():
            op = _opmath(weight.dtype)
            scale = (max_norm / (norms[over] + 1e-7)).astype(op)
            r = rows[over]
            weight[r] = (weight[r].astype(op) * scale[:, None]).astype(weight.dtype)
    return weight


def coalesce(indices: Array, grad: Array, *, padding_idx: int | None = None,
             scale_grad_by_freq: bool = False) -> tuple[Array, Array]:
    """Sorted unique rows and their summed gradients: ``np.add.at`` into zeros.

    With ``scale_grad_by_freq`` each gradient row is first scaled by
    ``scale_by_freq``, as in ``embedding_backward``.
    """
    d = grad.shape[-1]
    idx = indices.reshape(-1)
    g = grad.reshape(idx.shape[0], d)
    if scale_grad_by_freq and idx.size:
        g = scale_by_freq(g, idx)
    if padding_idx is not None:
        keep = idx != padding_idx
        idx, g = idx[keep], g[keep]
    rows, inverse = np.unique(idx, return_inverse=True)
    values = np.zeros((rows.shape[0], d), dtype=grad.dtype)
    with np.errstate(all="ignore"):
        np.add.at(values, inverse.reshape(-1), g)
    return rows.astype(np.int64), values


def _first_nan_wins(r: Array, a: Any, b: Any) -> Array:
    """Where both ``a`` and ``b`` are NaN, ``r`` becomes ``a`` quieted (as x86 does)."""
    both = np.isnan(a) & np.isnan(b)
    if both.any():
        a = np.broadcast_to(a, r.shape)
        r[both] = _quiet_bits(np.ascontiguousarray(a[both]))
    return r


def _binop(op: Callable[[Any, Any], Any], a: Any, b: Any) -> Array:
    with np.errstate(all="ignore"):
        r = np.asarray(op(a, b))
    return _first_nan_wins(r, a, b)


def _decayed(w: Array, g: Array, weight_decay: float, op: Any) -> Array:
    if weight_decay == 0.0:
        return g
    # g + weight_decay * w; on NaN + NaN the gradient's payload survives
    return _binop(np.add, g, _binop(np.multiply, op(weight_decay), w))


def sgd_step(weight: Array, indices: Array, grad: Array, *, lr: float, weight_decay: float = 0.0,
             padding_idx: int | None = None) -> Array:
    """One SGD update per distinct row: ``w -= lr * (g + weight_decay * w)``.

    Arithmetic in the add's precision (float32 for 16-bit tables), rounded to
    the dtype once; every binary operation keeps its first operand's payload on
    NaN op NaN.
    """
    rows, g = coalesce(indices, grad, padding_idx=padding_idx)
    op = _opmath(weight.dtype)
    w = weight[rows].astype(op)
    gg = _decayed(w, g.astype(op), weight_decay, op)
    step = _binop(np.multiply, op(lr), gg)
    with np.errstate(all="ignore"):  # rounding to the dtype may overflow: silent, like the kernels
        weight[rows] = _binop(np.subtract, w, step).astype(weight.dtype)
    return weight


def _adagrad_update(w: Array, gg: Array, state_rows: Array, lr: float, eps: float,
                    op: Any, dtype: np.dtype[Any]) -> Array:
    with np.errstate(all="ignore"):  # sqrt of a negative state, overflow: silent, like the kernels
        denom = _binop(np.add, np.sqrt(state_rows), op(eps))
        step = _binop(np.divide, _binop(np.multiply, op(lr), gg), denom)
        return _binop(np.subtract, w, step).astype(dtype)


def adagrad_step(weight: Array, state: Array, indices: Array, grad: Array, *, lr: float,
                 eps: float = 1e-10, weight_decay: float = 0.0,
                 padding_idx: int | None = None) -> tuple[Array, Array]:
    """Adagrad per distinct row, element-wise state (float32, or float64 for float64):
    ``s += g*g; w -= lr * g / (sqrt(s) + eps)``, with ``g += weight_decay * w`` first."""
    rows, g = coalesce(indices, grad, padding_idx=padding_idx)
    op = _opmath(weight.dtype)
    w = weight[rows].astype(op)
    gg = _decayed(w, g.astype(op), weight_decay, op)
    s = _binop(np.add, state[rows], _binop(np.multiply, gg, gg))
    state[rows] = s
    weight[rows] = _adagrad_update(w, gg, s, lr, eps, op, weight.dtype)
    return weight, state


def rowwise_adagrad_step(weight: Array, state: Array, indices: Array, grad: Array, *, lr: float,
                         eps: float = 1e-10, weight_decay: float = 0.0,
                         padding_idx: int | None = None) -> tuple[Array, Array]:
    """Row-wise Adagrad (one state value per row, as FBGEMM):
    ``s += mean_j(g*g)`` (summed left to right, divided by d), then as Adagrad."""
    rows, g = coalesce(indices, grad, padding_idx=padding_idx)
    op = _opmath(weight.dtype)
    d = weight.shape[1]
    w = weight[rows].astype(op)
    gg = _decayed(w, g.astype(op), weight_decay, op)
    if d:
        sq = _binop(np.multiply, gg, gg)
        mean = _binop(np.divide, sequential_row_sums(sq), op(d))
    else:
        mean = np.zeros(rows.shape[0], dtype=op)
    s = _binop(np.add, state[rows], mean)
    state[rows] = s
    weight[rows] = _adagrad_update(w, gg, s[:, None], lr, eps, op, weight.dtype)
    return weight, state

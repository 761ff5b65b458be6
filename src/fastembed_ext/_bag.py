"""Bags of rows: embedding_bag and embedding_bag_backward (PyTorch's meaning).

Each operation coerces, checks (``_checks`` and the bag rules below), resolves
the backend and thread count, then makes one call: into the compiled kernels
or into ``_reference``.  A call that raises has written nothing.
"""

from __future__ import annotations

from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt

from . import _checks as ck
from . import _reference
from . import _runtime as rt

Backend = Literal["auto", "cython", "numpy"]
BagMode = Literal["sum", "mean", "max"]
MODES = ("sum", "mean", "max")


def _bag_layout(indices: Any, offsets: Any,
                include_last_offset: Any) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The indices as given and the bag bounds (B + 1,) as intp: bag b is
    entries ``[bounds[b], bounds[b + 1])`` of the flat indices."""
    idx = ck.as_indices(indices)
    last = ck.check_bool(include_last_offset, "include_last_offset")
    if offsets is None:
        if idx.ndim != 2:
            raise ValueError(f"indices must be 2-D (bags, entries per bag) when offsets is None, "
                             f"got shape {idx.shape}")
        if last:
            raise ValueError("include_last_offset=True needs offsets")
        num_bags, length = idx.shape
        return idx, np.arange(num_bags + 1, dtype=np.intp) * length
    if idx.ndim != 1:
        raise ValueError(f"indices must be 1-D when offsets is given, got shape {idx.shape}")
    off = ck.as_indices(offsets, "offsets")
    if off.ndim != 1:
        raise ValueError(f"offsets must be 1-D, got shape {off.shape}")
    n = idx.shape[0]
    if last:
        if off.shape[0] == 0:
            raise ValueError("offsets must hold at least one entry with include_last_offset=True")
        if int(off[-1]) != n:
            raise ValueError(f"offsets[-1] must equal len(indices) = {n} with "
                             f"include_last_offset=True, got {int(off[-1])}")
        bounds = off.astype(np.intp)
    else:
        bounds = np.append(off.astype(np.intp), np.intp(n)) if off.shape[0] else np.zeros(1, np.intp)
    if off.shape[0] == 0 and n:
        raise ValueError(f"offsets is empty, so there are no bags, but indices has {n} entries")
    if off.shape[0] and int(off[0]) != 0:
        raise ValueError(f"offsets[0] must be 0, got {int(off[0])}")
    steps = np.diff(bounds)
    if steps.size and (steps < 0).any():
        k = int(np.argmax(steps < 0))
        raise ValueError(f"offsets must be non-decreasing and at most len(indices) = {n}; "
                         f"offsets[{k + 1}] = {int(bounds[k + 1])} follows {int(bounds[k])}")
    return idx, bounds


def _check_per_sample_weights(psw: Any, idx: np.ndarray[Any, Any], dtype: np.dtype[Any],
                              mode: str) -> np.ndarray[Any, Any] | None:
    if psw is None:
        return None
    if mode != "sum":
        raise ValueError(f"per_sample_weights is only supported with mode='sum', got mode={mode!r}")
    p = ck.as_input(psw, "per_sample_weights")
    if p.dtype != dtype:
        raise TypeError(f"per_sample_weights must have the dtype of weight ({dtype}), "
                        f"got {ck.dtype_text(p.dtype)}; no implicit cast is made")
    if p.shape != idx.shape:
        raise ValueError(f"per_sample_weights must have the shape of indices {idx.shape}, "
                         f"got {p.shape}")
    return p


def _flat(a: np.ndarray[Any, Any] | None) -> np.ndarray[Any, Any] | None:
    return None if a is None else ck.contiguous(a.reshape(-1))


@overload
def embedding_bag(weight: npt.ArrayLike, indices: npt.ArrayLike,
                  offsets: npt.ArrayLike | None = None, *, mode: Literal["sum", "mean"] = "sum",
                  per_sample_weights: npt.ArrayLike | None = None,
                  include_last_offset: bool = False, padding_idx: int | None = None,
                  out: npt.NDArray[Any] | None = None, backend: Backend = "auto",
                  num_threads: int | None = None) -> npt.NDArray[Any]: ...


@overload
def embedding_bag(weight: npt.ArrayLike, indices: npt.ArrayLike,
                  offsets: npt.ArrayLike | None = None, *, mode: Literal["max"],
                  per_sample_weights: npt.ArrayLike | None = None,
                  include_last_offset: bool = False, padding_idx: int | None = None,
                  out: npt.NDArray[Any] | None = None, backend: Backend = "auto",
                  num_threads: int | None = None) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64]]:
    ...


@overload
def embedding_bag(weight: npt.ArrayLike, indices: npt.ArrayLike,
                  offsets: npt.ArrayLike | None = None, *, mode: BagMode,
                  per_sample_weights: npt.ArrayLike | None = None,
                  include_last_offset: bool = False, padding_idx: int | None = None,
                  out: npt.NDArray[Any] | None = None, backend: Backend = "auto",
                  num_threads: int | None = None
                  ) -> npt.NDArray[Any] | tuple[npt.NDArray[Any], npt.NDArray[np.int64]]: ...


def embedding_bag(weight: npt.ArrayLike, indices: npt.ArrayLike,
                  offsets: npt.ArrayLike | None = None, *, mode: BagMode = "sum",
                  per_sample_weights: npt.ArrayLike | None = None,
                  include_last_offset: bool = False, padding_idx: int | None = None,
                  out: npt.NDArray[Any] | None = None, backend: Backend = "auto",
                  num_threads: int | None = None
                  ) -> npt.NDArray[Any] | tuple[npt.NDArray[Any], npt.NDArray[np.int64]]:
    """Reduce bags of rows: PyTorch's ``embedding_bag``.

    Parameters
    ----------
    weight : array_like of shape (T, d)
    indices : array_like of integers
        1-D, cut into bags by ``offsets``; or 2-D (B, L), one bag per row,
        with ``offsets=None``.
    offsets : array_like of integers of shape (B,), optional
        Start of each bag in ``indices``; ``offsets[0]`` must be 0 and they
        must not decrease.  With ``include_last_offset`` there is one more
        entry, equal to ``len(indices)``.
    mode : {"sum", "mean", "max"}
    per_sample_weights : array_like, optional
        Same shape and dtype as indices/weight; mode="sum" only.
    padding_idx : int, optional
        Entries equal to it are left out: they add nothing and do not count
        for the mean.  Negative counts from the end.
    out : ndarray of shape (B, d), optional

    Returns
    -------
    ndarray of shape (B, d), or (out, max_indices) for mode="max"
        ``max_indices`` is int64 of shape (B, d): the row each maximum came
        from.  Empty bags give zeros (and max_indices -1).  The bits are those of
        ``_reference.embedding_bag``, for any thread count.
    """
    run_on = rt.resolve_backend(backend)
    threads = rt.resolve_threads(num_threads)
    mode = ck.check_choice(mode, "mode", MODES)  # type: ignore[assignment]
    w = ck.as_input(weight, "weight")
    ck.check_table(w, "weight")
    num_rows, d = w.shape
    idx, bounds = _bag_layout(indices, offsets, include_last_offset)
    psw = _check_per_sample_weights(per_sample_weights, idx, w.dtype, mode)
    num_bags = bounds.shape[0] - 1
    if out is not None:
        ck.check_dest(out, "out", w.dtype, (num_bags, d), "weight")
        ck.check_disjoint(out, "out", (w, "weight"), (idx, "indices"),
                          (psw, "per_sample_weights"))
    pad = ck.check_padding_idx(padding_idx, num_rows, "weight")
    flat = ck.checked_flat_indices(idx, num_rows, "weight", run_on, threads=threads)
    result: npt.NDArray[Any]
    max_indices: npt.NDArray[np.int64] | None
    if run_on == "numpy":
        res = _reference.embedding_bag(w, flat, bounds[:-1], mode=mode,
                                       per_sample_weights=_flat(psw), padding_idx=pad)
        result, max_indices = res if mode == "max" else (res, None)
        if out is not None:
            out[...] = result
            result = out
    else:
        result = np.empty((num_bags, d), dtype=w.dtype) if out is None else out
        max_indices = np.empty((num_bags, d), dtype=np.int64) if mode == "max" else None
        rt.kernels.bag_rows(ck.rows(w), flat, bounds, result, rt.kernels.BAG_MODES[mode],
                            _flat(psw), max_indices, -1 if pad is None else pad, threads)
    if max_indices is not None:
        return result, max_indices
    return result


def embedding_bag_backward(grad: npt.ArrayLike, indices: npt.ArrayLike,
                           offsets: npt.ArrayLike | None, num_embeddings: int | None, *,
                           mode: BagMode = "sum", per_sample_weights: npt.ArrayLike | None = None,
                           weight: npt.ArrayLike | None = None,
                           max_indices: npt.ArrayLike | None = None,
                           include_last_offset: bool = False, padding_idx: int | None = None,
                           grad_weight: npt.NDArray[Any] | None = None,
                           backend: Backend = "auto",
                           num_threads: int | None = None
                           ) -> tuple[npt.NDArray[Any], npt.NDArray[Any] | None]:
    """Gradients of ``embedding_bag``: for the table and, with per_sample_weights, for them.

    Parameters
    ----------
    grad : array_like of shape (B, d)
        Gradient of the bag outputs.
    indices, offsets, mode, per_sample_weights, include_last_offset, padding_idx
        As given to ``embedding_bag``.
    num_embeddings : int or None
        T; may be None when ``grad_weight`` is given.
    weight : array_like of shape (T, d), optional
        Needed for the gradient of ``per_sample_weights``.
    max_indices : array_like of shape (B, d), optional
        From ``embedding_bag(..., mode="max")``; needed for mode="max".
    grad_weight : ndarray of shape (T, d), optional
        Accumulated into in place (C-contiguous, writable); otherwise a fresh
        zeroed array is returned.

    Returns
    -------
    (grad_weight, grad_per_sample_weights or None)
    """
    run_on = rt.resolve_backend(backend)
    threads = rt.resolve_threads(num_threads)
    mode = ck.check_choice(mode, "mode", MODES)  # type: ignore[assignment]
    g = ck.as_input(grad, "grad")
    ck.check_value_dtype(g, "grad")
    ck.check_ndim(g, "grad", 2, "(bags, d)")
    d = g.shape[1]
    idx, bounds = _bag_layout(indices, offsets, include_last_offset)
    num_bags = bounds.shape[0] - 1
    if g.shape[0] != num_bags:
        raise ValueError(f"grad must have one row per bag ({num_bags}), got shape {g.shape}")
    if grad_weight is not None:
        if not isinstance(grad_weight, np.ndarray):
            raise TypeError(f"grad_weight must be a NumPy ndarray (it is written in place), "
                            f"got {type(grad_weight).__name__}")
        ck.check_same_dtype(grad_weight, "grad_weight", g, "grad")
        ck.check_ndim(grad_weight, "grad_weight", 2, "(T, d)")
        if grad_weight.shape[1] != d or (num_embeddings is not None
                                         and grad_weight.shape[0] != num_embeddings):
            rows = num_embeddings if num_embeddings is not None else "T"
            raise ValueError(f"grad_weight must have shape ({rows}, {d}), got {grad_weight.shape}")
        ck.check_writable(grad_weight, "grad_weight")
        num_rows = grad_weight.shape[0]
    else:
        num_rows = ck.check_num_embeddings(num_embeddings, " (or None with grad_weight)")
    psw = _check_per_sample_weights(per_sample_weights, idx, g.dtype, mode)
    w = None
    if psw is not None:
        if weight is None:
            raise ValueError("weight is needed for the gradient of per_sample_weights")
        w = ck.as_input(weight, "weight")
        ck.check_same_dtype(w, "weight", g, "grad")
        if w.shape != (num_rows, d):
            raise ValueError(f"weight must have shape {(num_rows, d)}, got {w.shape}")
    mi = None
    if mode == "max":
        if max_indices is None:
            raise ValueError("max_indices (from embedding_bag(..., mode='max')) is needed for "
                             "mode='max'")
        mi = ck.as_indices(max_indices, "max_indices")
        if mi.shape != (num_bags, d):
            raise ValueError(f"max_indices must have shape {(num_bags, d)}, got {mi.shape}")
        bad = np.flatnonzero((mi.reshape(-1) < -1) | (mi.reshape(-1) >= num_rows))
        if bad.size:
            ck.raise_out_of_range(mi, int(bad[0]), num_rows, "grad_weight", "max_indices", low=-1)
        mi = np.require(mi, np.int64, ["C", "A"])
    pad = ck.check_padding_idx(padding_idx, num_rows, "grad_weight")
    if grad_weight is not None:
        ck.check_disjoint(grad_weight, "grad_weight", (g, "grad"), (idx, "indices"),
                          (psw, "per_sample_weights"))
    flat = ck.checked_flat_indices(idx, num_rows, "grad_weight", run_on, threads=threads)
    if run_on == "numpy":
        gw, grad_psw = _reference.embedding_bag_backward(
            g, flat, bounds[:-1], num_rows, mode=mode, per_sample_weights=_flat(psw), weight=w,
            max_indices=mi, padding_idx=pad, grad_weight=grad_weight)
        return gw, None if grad_psw is None else grad_psw.reshape(idx.shape)
    gw = grad_weight if grad_weight is not None else np.zeros((num_rows, d), dtype=g.dtype)
    if mode == "max":
        rt.kernels.bag_max_backward_rows(gw, ck.rows(g), mi)
        return gw, None
    grad_psw = None if psw is None else np.empty(flat.shape[0], dtype=g.dtype)
    rt.kernels.bag_backward_rows(gw, ck.rows(g), flat, bounds, rt.kernels.BAG_MODES[mode],
                                 _flat(psw), None if w is None else ck.rows(w), grad_psw,
                                 -1 if pad is None else pad, threads)
    return gw, None if grad_psw is None else grad_psw.reshape(idx.shape)

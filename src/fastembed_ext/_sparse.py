"""Sparse row updates: max-norm (renorm_), coalesced gradients, optimizer steps.

Each operation coerces, checks, resolves the backend and thread count, then
calls the compiled kernels or ``_reference``.  The optimizer steps coalesce
the batch first (sorted distinct rows, summed gradients), then update each
distinct row once.  A call that raises has written nothing.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from . import _checks as ck
from . import _reference
from . import _runtime as rt

Backend = Literal["auto", "cython", "numpy"]


def renorm_(weight: npt.NDArray[Any], indices: npt.ArrayLike, max_norm: float,
            norm_type: float = 2.0, *, backend: Backend = "auto",
            num_threads: int | None = None) -> npt.NDArray[Any]:
    """Scale down, in place, the rows named in ``indices`` whose norm exceeds ``max_norm``.

    PyTorch's ``embedding_renorm_``: each distinct row with ``norm > max_norm``
    is multiplied by ``max_norm / (norm + 1e-7)``.  The norm is computed in
    float64 and summed strictly left to right (``_reference.row_norms``), so
    NumPy can state it exactly; ``norm_type`` may be any p > 0 or ``inf``.

    Returns
    -------
    weight
    """
    run_on = rt.resolve_backend(backend)
    threads = rt.resolve_threads(num_threads)
    ck.check_updated_table(weight, "weight")
    max_norm = ck.check_real(max_norm, "max_norm", low=0.0)
    norm_type = ck.check_real(norm_type, "norm_type", positive=True, allow_inf=True)
    idx = ck.as_indices(indices)
    ck.check_disjoint(weight, "weight", (idx, "indices"))
    flat = ck.checked_flat_indices(idx, weight.shape[0], "weight", run_on, threads=threads)
    if run_on == "numpy":
        return _reference.renorm_(weight, flat, max_norm, norm_type)
    rows = np.unique(flat).astype(np.int64)
    rt.kernels.renorm_rows(weight, rows, max_norm, norm_type, threads)
    return weight


def coalesce(indices: npt.ArrayLike, grad: npt.ArrayLike, *, padding_idx: int | None = None,
             scale_grad_by_freq: bool = False, backend: Backend = "auto",
             num_threads: int | None = None) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any]]:
    """A sparse gradient: sorted unique rows and their summed gradient rows.

    Parameters
    ----------
    indices : array_like of non-negative integers, shape S
        Any size of table, billions of rows included: nothing of size T is made.
    grad : array_like of shape S + (d,)
    padding_idx : int, optional
        A row (>= 0) left out.
    scale_grad_by_freq : bool
        Scale each gradient row by 1 / (count of its index) before it is
        summed, as ``embedding_backward`` does (PyTorch's sparse gradient).

    Returns
    -------
    rows : ndarray of int64, shape (U,)
    values : ndarray of shape (U, d)
        Bit for bit ``np.add.at`` of ``grad`` into zeros at the rows' positions.
    """
    run_on = rt.resolve_backend(backend)
    threads = rt.resolve_threads(num_threads)
    idx = ck.as_indices(indices)
    g = ck.as_input(grad, "grad")
    ck.check_value_dtype(g, "grad")
    ck.check_grad_shape(g, idx)
    pad = ck.check_padding_idx(padding_idx, None)
    scale = ck.check_bool(scale_grad_by_freq, "scale_grad_by_freq")
    flat = ck.checked_flat_indices(idx, np.iinfo(np.int64).max, "a table", run_on, threads=threads)
    g2 = g.reshape(flat.size, g.shape[-1])
    if run_on == "numpy":
        return _reference.coalesce(flat, g2, padding_idx=pad, scale_grad_by_freq=scale)
    return _coalesce_compiled(flat, g2, pad, scale, threads)


def _coalesce_compiled(flat: np.ndarray[Any, Any], g2: np.ndarray[Any, Any], pad: int | None,
                       scale: bool,
                       threads: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any]]:
    # sorted unique rows, then a scatter-add into (U, d) zeros in entry order;
    # removing the padding entries first leaves every other row's count as it was
    if pad is not None:
        keep = flat != pad
        flat, g2 = flat[keep], g2[keep]
    rows, inverse = np.unique(flat, return_inverse=True)
    values = np.zeros((rows.shape[0], g2.shape[1]), dtype=g2.dtype)
    rt.kernels.scatter_add_rows(values, np.require(inverse.reshape(-1), np.int64, ["C", "A"]),
                                ck.rows(g2), -1, scale, threads)
    return rows.astype(np.int64), values


def _check_state(state: Any, weight: np.ndarray[Any, Any], rowwise: bool) -> None:
    want = np.dtype(np.float64) if weight.dtype == np.float64 else np.dtype(np.float32)
    shape = (weight.shape[0],) if rowwise else weight.shape
    if not isinstance(state, np.ndarray):
        raise TypeError(f"state must be a NumPy ndarray (it is updated in place), "
                        f"got {type(state).__name__}")
    if state.dtype != want:
        raise TypeError(f"state must have dtype {want} for a {weight.dtype} table, got "
                        f"{ck.dtype_text(state.dtype)}")
    if state.shape != shape:
        raise ValueError(f"state must have shape {shape}, got {state.shape}")
    ck.check_writable(state, "state")
    ck.check_disjoint(state, "state", (weight, "weight"))


def _optimizer_step(kind: str, weight: Any, state: Any, indices: Any, grad: Any, lr: Any,
                    eps: Any, weight_decay: Any, padding_idx: Any, backend: Any,
                    num_threads: Any) -> None:
    run_on = rt.resolve_backend(backend)
    threads = rt.resolve_threads(num_threads)
    ck.check_updated_table(weight, "weight")
    lr = ck.check_real(lr, "lr")
    weight_decay = ck.check_real(weight_decay, "weight_decay")
    idx = ck.as_indices(indices)
    g = ck.as_input(grad, "grad")
    ck.check_same_dtype(g, "grad", weight, "weight")
    ck.check_grad_shape(g, idx, weight.shape[1])
    pad = ck.check_padding_idx(padding_idx, weight.shape[0], "weight")
    ck.check_disjoint(weight, "weight", (g, "grad"), (idx, "indices"))
    flat = ck.checked_flat_indices(idx, weight.shape[0], "weight", run_on, threads=threads)
    g2 = g.reshape(flat.size, weight.shape[1])
    if kind != "sgd":
        eps = ck.check_real(eps, "eps")
        _check_state(state, weight, rowwise=(kind == "rowwise_adagrad"))
        ck.check_disjoint(state, "state", (g, "grad"))
    if run_on == "numpy":
        if kind == "sgd":
            _reference.sgd_step(weight, flat, g2, lr=lr, weight_decay=weight_decay,
                                padding_idx=pad)
        elif kind == "adagrad":
            _reference.adagrad_step(weight, state, flat, g2, lr=lr, eps=eps,
                                    weight_decay=weight_decay, padding_idx=pad)
        else:
            _reference.rowwise_adagrad_step(weight, state, flat, g2, lr=lr, eps=eps,
                                            weight_decay=weight_decay, padding_idx=pad)
        return
    rows, values = _coalesce_compiled(flat, g2, pad, False, threads)
    rt.kernels.optimizer_rows(weight, rows, values, state, rt.kernels.OPTIMIZERS[kind], lr, eps,
                              weight_decay, threads)


def sgd_step(weight: npt.NDArray[Any], indices: npt.ArrayLike, grad: npt.ArrayLike, *,
             lr: float, weight_decay: float = 0.0, padding_idx: int | None = None,
             backend: Backend = "auto", num_threads: int | None = None) -> npt.NDArray[Any]:
    """Sparse SGD on the table: for each distinct row r of ``indices``,
    ``w[r] -= lr * (g[r] + weight_decay * w[r])`` with g the coalesced gradient.

    Arithmetic in float32 (float64 for float64 tables), rounded to the table's
    dtype once; bit for bit ``_reference.sgd_step``.  Schedules are the
    caller's: pass this step's ``lr``.
    """
    _optimizer_step("sgd", weight, None, indices, grad, lr, 0.0, weight_decay, padding_idx,
                    backend, num_threads)
    return weight


def adagrad_step(weight: npt.NDArray[Any], state: npt.NDArray[Any], indices: npt.ArrayLike,
                 grad: npt.ArrayLike, *, lr: float, eps: float = 1e-10,
                 weight_decay: float = 0.0, padding_idx: int | None = None,
                 backend: Backend = "auto",
                 num_threads: int | None = None) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Sparse Adagrad with element-wise state (T, d) (float32, or float64 for float64):
    ``s[r] += g*g; w[r] -= lr * g / (sqrt(s[r]) + eps)``, per distinct row."""
    _optimizer_step("adagrad", weight, state, indices, grad, lr, eps, weight_decay, padding_idx,
                    backend, num_threads)
    return weight, state


def rowwise_adagrad_step(weight: npt.NDArray[Any], state: npt.NDArray[Any],
                         indices: npt.ArrayLike, grad: npt.ArrayLike, *, lr: float,
                         eps: float = 1e-10, weight_decay: float = 0.0,
                         padding_idx: int | None = None, backend: Backend = "auto",
                         num_threads: int | None = None) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Row-wise Adagrad (FBGEMM's): one state value per row (T,),
    ``s[r] += mean(g*g)``; ``w[r] -= lr * g / (sqrt(s[r]) + eps)``, per distinct row."""
    _optimizer_step("rowwise_adagrad", weight, state, indices, grad, lr, eps, weight_decay,
                    padding_idx, backend, num_threads)
    return weight, state

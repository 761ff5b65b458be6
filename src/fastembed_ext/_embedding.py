"""The lookup and its gradient: gather, scatter_add, embedding_backward.

Each operation coerces its inputs, checks all of them (``_checks`` and its own
rules), resolves the backend and thread count (``_runtime``), then makes
exactly one call: into the compiled kernels or into ``_reference``.  A call
that raises has written nothing.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from . import _checks as ck
from . import _reference
from . import _runtime as rt

Backend = Literal["auto", "cython", "numpy"]


def gather(weight: npt.ArrayLike, indices: npt.ArrayLike, *,
           out: npt.NDArray[Any] | None = None, backend: Backend = "auto",
           num_threads: int | None = None) -> npt.NDArray[Any]:
    """Rows of a table: ``out[k] = weight[indices[k]]``.

    Parameters
    ----------
    weight : array_like of shape (T, d)
        float16, float32 or float64.  Any array-like, buffer or DLPack object
        (a CPU ``torch.Tensor`` is read without a copy).  A table whose rows
        are not contiguous (for example a Fortran-order array) is copied first.
    indices : array_like of integers, shape S
        Each index must satisfy ``0 <= i < T``.  int32 and int64 are used as
        they are; other integer dtypes are converted after the bounds check.
    out : ndarray of shape S + (d,), optional
        Written in place and returned.  Must be writable, C-contiguous, of
        the dtype of ``weight``, and not overlap the inputs.
    backend : {"auto", "cython", "numpy"}
    num_threads : int, optional
        Threads for this call; None means ``get_num_threads()``.

    Returns
    -------
    ndarray of shape S + (d,)
        Bit for bit ``np.take(weight, indices, axis=0)``.
    """
    k = rt.lean_kernels
    if k is not None and out is not None and backend == "auto" and k.gather_lean(
            weight, indices, out, 0 if num_threads is None else rt.resolve_threads(num_threads)):
        return out
    run_on = rt.resolve_backend(backend)
    threads = rt.resolve_threads(num_threads)
    w = ck.as_input(weight, "weight")
    ck.check_value_dtype(w, "weight")
    ck.check_ndim(w, "weight", 2, "(T, d)")
    idx = ck.as_indices(indices)
    num_rows, d = w.shape
    shape = idx.shape + (d,)
    if out is not None:
        ck.check_dest(out, "out", w.dtype, shape, "weight")
        ck.check_disjoint(out, "out", (w, "weight"), (idx, "indices"))
    flat = ck.checked_flat_indices(idx, num_rows, "weight", run_on, threads=threads)
    if out is None:
        out = np.empty(shape, dtype=w.dtype)
    if run_on == "numpy":
        _reference.gather(w, idx, out=out)
    else:
        rt.kernels.gather_rows(ck.rows(w), flat, out.reshape(flat.size, d), threads)
    return out


def scatter_add(grad_weight: npt.NDArray[Any], indices: npt.ArrayLike, grad: npt.ArrayLike, *,
                padding_idx: int | None = None, backend: Backend = "auto",
                num_threads: int | None = None) -> npt.NDArray[Any]:
    """Accumulate rows in place: ``grad_weight[indices[k]] += grad[k]``, in index order.

    Parameters
    ----------
    grad_weight : ndarray of shape (T, d)
        Updated in place.  Writable, C-contiguous, float16, float32 or float64.
    indices : array_like of integers, shape S
        ``0 <= i < T``.  Repeated indices accumulate in index order.
    grad : array_like of shape S + (d,)
        Same dtype as ``grad_weight``.
    padding_idx : int, optional
        Updates to this row are skipped.  Negative values count from the end
        (``-1`` is row ``T - 1``), as in ``torch.nn.Embedding``.
    backend : {"auto", "cython", "numpy"}
    num_threads : int, optional

    Returns
    -------
    grad_weight : ndarray of shape (T, d)
        Bit for bit what ``np.add.at(grad_weight, indices, grad)`` leaves
        (float16 rounds after every add), for any thread count.
    """
    k = rt.lean_kernels
    if k is not None and padding_idx is None and backend == "auto" and k.scatter_add_lean(
            grad_weight, indices, grad,
            0 if num_threads is None else rt.resolve_threads(num_threads)):
        return grad_weight
    run_on = rt.resolve_backend(backend)
    threads = rt.resolve_threads(num_threads)
    gw = grad_weight
    if not isinstance(gw, np.ndarray):
        raise TypeError(f"grad_weight must be a NumPy ndarray (it is written in place), "
                        f"got {type(gw).__name__}")
    ck.check_table(gw, "grad_weight")
    ck.check_writable(gw, "grad_weight")
    idx = ck.as_indices(indices)
    g = ck.as_input(grad, "grad")
    ck.check_same_dtype(g, "grad", gw, "grad_weight")
    num_rows, d = gw.shape
    ck.check_grad_shape(g, idx, d)
    pad = ck.check_padding_idx(padding_idx, num_rows, "grad_weight")
    ck.check_disjoint(gw, "grad_weight", (g, "grad"), (idx, "indices"))
    flat = ck.checked_flat_indices(idx, num_rows, "grad_weight", run_on, threads=threads)
    if run_on == "numpy":
        _reference.scatter_add(gw, idx, g, padding_idx=pad)
    else:
        rt.kernels.scatter_add_rows(gw, flat, ck.rows(g.reshape(flat.size, d)),
                                    -1 if pad is None else pad, False, threads)
    return grad_weight


def embedding_backward(grad: npt.ArrayLike, indices: npt.ArrayLike, num_embeddings: int, *,
                       padding_idx: int | None = None, scale_grad_by_freq: bool = False,
                       backend: Backend = "auto",
                       num_threads: int | None = None) -> npt.NDArray[Any]:
    """The weight gradient of an embedding lookup, as a fresh array.

    Parameters
    ----------
    grad : array_like of shape S + (d,)
        Gradient of the lookup's output; float16, float32 or float64.
    indices : array_like of integers, shape S
        ``0 <= i < num_embeddings``.
    num_embeddings : int
        T, the number of rows of the table.
    padding_idx : int, optional
        Row that receives no gradient; negative counts from the end.
    scale_grad_by_freq : bool
        Scale each gradient row by 1 / (count of its index in ``indices``)
        before it is added, as PyTorch does.
    backend : {"auto", "cython", "numpy"}
    num_threads : int, optional

    Returns
    -------
    ndarray of shape (num_embeddings, d)
        The table is allocated zeroed by the OS (``np.zeros``) and only the
        rows named in ``indices`` are touched.  To accumulate into an existing
        gradient, use ``scatter_add``.
    """
    run_on = rt.resolve_backend(backend)
    threads = rt.resolve_threads(num_threads)
    num_rows = ck.check_num_embeddings(num_embeddings)
    scale = ck.check_bool(scale_grad_by_freq, "scale_grad_by_freq")
    g = ck.as_input(grad, "grad")
    ck.check_value_dtype(g, "grad")
    idx = ck.as_indices(indices)
    ck.check_grad_shape(g, idx)
    d = g.shape[-1]
    pad = ck.check_padding_idx(padding_idx, num_rows, "a table")
    flat = ck.checked_flat_indices(idx, num_rows, "a table", run_on, threads=threads)
    if run_on == "numpy":
        return _reference.embedding_backward(g, idx, num_rows, padding_idx=pad,
                                             scale_grad_by_freq=scale)
    grad_weight = np.zeros((num_rows, d), dtype=g.dtype)
    rt.kernels.scatter_add_rows(grad_weight, flat, ck.rows(g.reshape(flat.size, d)),
                                -1 if pad is None else pad, scale, threads)
    return grad_weight

"""Validation and dispatch: the one place where the rules live.

Every public function coerces its inputs, checks all of them (dtype, ndim,
shape, contiguity, writability, overlap, index bounds), resolves the backend
and the thread count, and only then makes exactly one call into the compiled
kernels or into the NumPy reference.  A call that raises has written nothing.
"""

from __future__ import annotations

import numbers
import os
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from . import _reference
from ._version import __version__

def _load_kernels() -> tuple[Any, str | None]:
    try:
        from . import _kernels as kernels
    except ImportError as exc:  # reported by info(), never at import
        return None, f"{type(exc).__name__}: {exc}"
    return kernels, None


_kernels, _KERNELS_ERROR = _load_kernels()

__all__ = [
    "BackendUnavailableError",
    "adagrad_step",
    "coalesce",
    "renorm_",
    "rowwise_adagrad_step",
    "sgd_step",
    "embedding_backward",
    "embedding_bag",
    "embedding_bag_backward",
    "gather",
    "get_num_threads",
    "info",
    "scatter_add",
    "set_num_threads",
]

VALUE_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
INDEX_DTYPES_ZERO_COPY = (np.dtype(np.int32), np.dtype(np.int64))
BACKENDS = ("auto", "cython", "numpy")
ENV_BACKEND = "FASTEMBED_EXT_BACKEND"
ENV_NUM_THREADS = "FASTEMBED_EXT_NUM_THREADS"
# More threads than this is a mistake, not a setting: the OpenMP runtime would
# try to start them all, and cannot report a failure other than by aborting.
MAX_THREADS = 256


class BackendUnavailableError(ImportError):
    """``backend="cython"`` was asked for, but the compiled extension did not import."""


# --------------------------------------------------------------------------
# library state, read from the environment once, at import

def _threads_from_env():
    raw = os.environ.get(ENV_NUM_THREADS)
    if raw is None or raw.strip() == "":
        return None, None
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_THREADS:
        return None, f"{ENV_NUM_THREADS} must be an integer from 1 to {MAX_THREADS}, got {raw!r}"
    return n, None


def _backend_from_env():
    raw = os.environ.get(ENV_BACKEND)
    if raw is None or raw.strip() == "":
        return None, None
    value = raw.strip().lower()
    if value not in ("cython", "numpy"):
        return None, f"{ENV_BACKEND} must be 'cython' or 'numpy', got {raw!r}"
    return value, None


_env_threads, _env_threads_error = _threads_from_env()
_forced_backend, _forced_backend_error = _backend_from_env()
# None: follow OpenMP's default at each call (OMP_NUM_THREADS, threadpoolctl);
# an int: set by set_num_threads() or FASTEMBED_EXT_NUM_THREADS.
_default_threads: int | None = _env_threads
# what the kernels receive for num_threads=None: 0 means "OpenMP's default"
_default_threads_arg = _env_threads or 0


# libgomp is not fork-safe: a child forked after the parent ran a parallel
# region hangs in its first one.  Such a child runs every call on its own
# thread, unless FASTEMBED_EXT_THREADS_AFTER_FORK=1 says the runtime in use
# copes (LLVM's libomp does).
_forked_serial = False


def _after_fork_in_child() -> None:
    global _forked_serial, _default_threads, _default_threads_arg
    if (_kernels is not None and _kernels.pool_started()
            and os.environ.get("FASTEMBED_EXT_THREADS_AFTER_FORK", "0") != "1"):
        _forked_serial = True
        _default_threads = _default_threads_arg = 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

# The lean entry points in _kernels take the simple, valid calls of
# backend="auto" in a fraction of a microsecond, and hand everything else
# (anything unusual, anything invalid) back to the full path below, having
# written nothing.  They apply no rule of their own: they only decline.
_lean = (_kernels is not None and _forced_backend in (None, "cython")
         and _forced_backend_error is None and _env_threads_error is None)


# --------------------------------------------------------------------------
# threads and backend

def _check_num_threads(n, name="num_threads"):
    allowed = "a positive integer or None" if name == "num_threads" else "a positive integer"
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{name} must be {allowed}, got {n!r} ({type(n).__name__})")
    n = int(n)
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {n}")
    if n > MAX_THREADS:
        raise ValueError(f"{name} must be <= {MAX_THREADS}, got {n}")
    return n


def set_num_threads(n: int) -> None:
    """Set the library's default thread count (used when ``num_threads=None``).

    Parameters
    ----------
    n : int
        Number of threads, >= 1.  Calls on small batches stay on one thread
        whatever this says: threads start only where they pay.
    """
    global _default_threads, _default_threads_arg, _env_threads_error
    n = _check_num_threads(n, "n")
    _default_threads = _default_threads_arg = 1 if _forked_serial else n
    _env_threads_error = None  # an explicit choice replaces a bad environment value


def get_num_threads() -> int:
    """The library's default thread count.

    It is, in order: the last ``set_num_threads(n)``, the environment variable
    ``FASTEMBED_EXT_NUM_THREADS`` read at import, or OpenMP's current default
    (which honours ``OMP_NUM_THREADS`` and ``threadpoolctl`` limits), or 1 in
    a build without OpenMP or without the compiled extension.
    """
    if _env_threads_error is not None:
        raise ValueError(_env_threads_error)
    if _default_threads is not None:
        return _default_threads
    return int(_kernels.omp_max_threads()) if _kernels is not None else 1


def _resolve_threads(num_threads):
    if num_threads is None:
        if _env_threads_error is not None:
            raise ValueError(_env_threads_error)
        return _default_threads_arg
    num_threads = _check_num_threads(num_threads)
    return 1 if _forked_serial else num_threads


def _resolve_backend(backend):
    if backend == "auto" and isinstance(backend, str):
        if _forced_backend_error is not None:
            raise ValueError(_forced_backend_error)
        backend = _forced_backend or ("cython" if _kernels is not None else "numpy")
    if backend == "cython" and isinstance(backend, str):
        if _kernels is None:
            raise BackendUnavailableError(
                f"backend='cython' was requested but the compiled extension is not available "
                f"({_KERNELS_ERROR}); use backend='numpy' or reinstall fastembed_ext")
        return "cython"
    if backend == "numpy" and isinstance(backend, str):
        return "numpy"
    raise ValueError(f"backend must be one of 'auto', 'cython', 'numpy', got {backend!r}")


# --------------------------------------------------------------------------
# coercion and checks

def _as_input(x, name):
    """Any array-like, buffer or DLPack object as an ndarray, zero-copy where possible."""
    if type(x) is np.ndarray:
        return x
    if isinstance(x, np.ndarray):
        return np.asarray(x)
    if hasattr(type(x), "__dlpack__"):
        try:
            return np.from_dlpack(x)
        except Exception:  # noqa: BLE001 - fall back to the array protocol below
            pass
    try:
        return np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - any failure means "not an array"
        raise TypeError(
            f"{name} must be an array-like, buffer or DLPack object, could not read "
            f"{type(x).__name__} as an array ({exc})") from None


def _is_bfloat16(dtype):
    # ml_dtypes.bfloat16, recognised without importing ml_dtypes (an optional extra)
    return dtype.name == "bfloat16" and dtype.itemsize == 2 and dtype.kind == "V" \
        and dtype.type.__module__.split(".")[0] == "ml_dtypes"


def _kind16(dtype):
    return _kernels.VALUE_BFLOAT16 if _is_bfloat16(dtype) else _kernels.VALUE_FLOAT16


def _dtype_text(dtype):
    return str(dtype) if dtype.isnative else f"{dtype} (byte order {dtype.str})"


def _check_value_dtype(a, name):
    if a.dtype not in VALUE_DTYPES and not _is_bfloat16(a.dtype):
        raise TypeError(
            f"{name} must have dtype float16, float32 or float64 in native byte order "
            f"(or ml_dtypes.bfloat16), got {_dtype_text(a.dtype)}")


def _check_same_dtype(a, name, ref, ref_name):
    if a.dtype != ref.dtype:
        raise TypeError(
            f"{name} must have the dtype of {ref_name} ({ref.dtype}), got {_dtype_text(a.dtype)}; "
            f"no implicit cast is made")


def _check_ndim(a, name, ndim, meaning):
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {meaning}, got shape {a.shape}")


def _as_indices(x, name="indices"):
    idx = _as_input(x, name)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{name} must have an integer dtype, got {_dtype_text(idx.dtype)}")
    return idx


def _check_dest(a, name, dtype, shape, dtype_from):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a NumPy ndarray (it is written in place), "
                        f"got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{name} must have the dtype of {dtype_from} ({dtype}), "
                        f"got {_dtype_text(a.dtype)}; no implicit cast is made")
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    _check_writable_contiguous(a, name)


def _check_writable_contiguous(a, name):
    if not a.flags.writeable:
        raise ValueError(f"{name} must be writable, got a read-only array")
    if not a.flags.c_contiguous:
        raise ValueError(
            f"{name} must be C-contiguous (it is written in place, and a copy would lose the "
            f"result), got an array with strides {a.strides}")
    if not a.flags.aligned:
        raise ValueError(f"{name} must be aligned to its dtype, got an unaligned array")


def _overlaps(a, b):
    if a.size == 0 or b.size == 0 or not np.may_share_memory(a, b):
        return False
    try:
        return bool(np.shares_memory(a, b, max_work=10_000))
    except np.exceptions.TooHardError:
        return True


def _check_disjoint(dest, dest_name, *inputs):
    for arr, name in inputs:
        if _overlaps(dest, arr):
            raise ValueError(f"{dest_name} must not overlap {name}: they share memory")


def _check_num_embeddings(value, hint=""):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"num_embeddings must be an integer{hint}, got {value!r} "
                        f"({type(value).__name__})")
    if int(value) < 0:
        raise ValueError(f"num_embeddings must be >= 0, got {int(value)}")
    return int(value)


def _check_padding_idx(padding_idx, num_rows, table):
    if padding_idx is None:
        return None
    if isinstance(padding_idx, (bool, np.bool_)) or not isinstance(padding_idx, numbers.Integral):
        raise TypeError(f"padding_idx must be an integer or None, got {padding_idx!r} "
                        f"({type(padding_idx).__name__})")
    p = int(padding_idx)
    if not -num_rows <= p < num_rows:
        raise ValueError(f"padding_idx must be within [-{num_rows}, {num_rows}) for {table} "
                         f"with {num_rows} rows, got {p}")
    return p + num_rows if p < 0 else p


def _position_text(name, flat_pos, shape):
    if len(shape) == 0:
        return f"{name}[()]"
    pos = np.unravel_index(flat_pos, shape)
    return f"{name}[{', '.join(str(int(i)) for i in pos)}]"


def _raise_out_of_range(idx, flat_pos, num_rows, table, name):
    value = int(idx.reshape(-1)[flat_pos])
    where = _position_text(name, flat_pos, idx.shape)
    hint = " (negative indices are not supported)" if value < 0 else ""
    raise IndexError(f"{where} = {value} is out of range for {table} with {num_rows} rows{hint}; "
                     f"valid indices are 0 <= i < {num_rows}")


def _checked_flat_indices(idx, num_rows, table, backend, name="indices"):
    """Bounds-check ``idx`` against ``num_rows``; return it as 1-D int32/int64 for the kernels.

    int32 and int64 in native byte order are used as they are (a view, or a
    contiguous copy only if ``idx`` is not contiguous); other integer dtypes
    are checked, then converted to intp.
    """
    zero_copy = idx.dtype in INDEX_DTYPES_ZERO_COPY
    flat = idx.reshape(-1) if zero_copy else idx.ravel()
    if zero_copy and not (flat.flags.c_contiguous and flat.flags.aligned):
        flat = flat.copy()  # a fresh array is aligned; ascontiguousarray keeps a misaligned one
    if zero_copy and backend == "cython":
        bad = _kernels.first_out_of_range(flat, num_rows)
    elif flat.size:
        mask = flat >= num_rows
        if flat.dtype.kind == "i":
            mask |= flat < 0
        bad = int(np.argmax(mask)) if mask.any() else -1
    else:
        bad = -1
    if bad >= 0:
        _raise_out_of_range(idx, bad, num_rows, table, name)
    if not zero_copy:
        flat = flat.astype(np.intp)
    return flat


def _rows(a):
    """``a`` (n, d) with contiguous, aligned rows: as it is where it can be, else a copy."""
    itemsize = a.itemsize
    if a.flags.aligned and (a.shape[1] <= 1 or a.strides[1] == itemsize) \
            and a.strides[0] % itemsize == 0:
        return a
    return a.copy(order="C")  # fresh, so aligned as well as contiguous


# --------------------------------------------------------------------------
# public functions

def gather(weight: npt.ArrayLike, indices: npt.ArrayLike, *,
           out: npt.NDArray[Any] | None = None, backend: Literal["auto", "cython", "numpy"] = "auto",
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
    if _lean and out is not None and backend == "auto" and num_threads is None \
            and _kernels.gather_lean(weight, indices, out, _default_threads_arg):
        return out
    backend = _resolve_backend(backend)
    num_threads = _resolve_threads(num_threads)
    w = _as_input(weight, "weight")
    _check_value_dtype(w, "weight")
    _check_ndim(w, "weight", 2, "(T, d)")
    idx = _as_indices(indices)
    num_rows, d = w.shape
    shape = idx.shape + (d,)
    if out is not None:
        _check_dest(out, "out", w.dtype, shape, "weight")
        _check_disjoint(out, "out", (w, "weight"), (idx, "indices"))
    flat = _checked_flat_indices(idx, num_rows, "weight", backend)
    if out is None:
        out = np.empty(shape, dtype=w.dtype)
    if backend == "numpy":
        _reference.gather(w, idx, out=out)
    else:
        _kernels.gather_rows(_rows(w), flat, out.reshape(flat.size, d), num_threads)
    return out


def scatter_add(grad_weight: npt.NDArray[Any], indices: npt.ArrayLike, grad: npt.ArrayLike, *,
                padding_idx: int | None = None, backend: Literal["auto", "cython", "numpy"] = "auto",
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
    if _lean and padding_idx is None and backend == "auto" and num_threads is None \
            and _kernels.scatter_add_lean(grad_weight, indices, grad, _default_threads_arg):
        return grad_weight
    backend = _resolve_backend(backend)
    num_threads = _resolve_threads(num_threads)
    gw = grad_weight
    if not isinstance(gw, np.ndarray):
        raise TypeError(f"grad_weight must be a NumPy ndarray (it is written in place), "
                        f"got {type(gw).__name__}")
    _check_value_dtype(gw, "grad_weight")
    _check_ndim(gw, "grad_weight", 2, "(T, d)")
    _check_writable_contiguous(gw, "grad_weight")
    idx = _as_indices(indices)
    g = _as_input(grad, "grad")
    _check_same_dtype(g, "grad", gw, "grad_weight")
    num_rows, d = gw.shape
    if g.shape != idx.shape + (d,):
        raise ValueError(f"grad must have shape indices.shape + (d,) = {idx.shape + (d,)}, "
                         f"got {g.shape}")
    pad = _check_padding_idx(padding_idx, num_rows, "grad_weight")
    _check_disjoint(gw, "grad_weight", (g, "grad"), (idx, "indices"))
    flat = _checked_flat_indices(idx, num_rows, "grad_weight", backend)
    if backend == "numpy":
        _reference.scatter_add(gw, idx, g, padding_idx=pad)
    else:
        _kernels.scatter_add_rows(gw, flat, _rows(g.reshape(flat.size, d)),
                                  -1 if pad is None else pad, False, num_threads, _kind16(gw.dtype))
    return grad_weight


def embedding_backward(grad: npt.ArrayLike, indices: npt.ArrayLike, num_embeddings: int, *,
                       padding_idx: int | None = None, scale_grad_by_freq: bool = False,
                       backend: Literal["auto", "cython", "numpy"] = "auto",
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
    backend = _resolve_backend(backend)
    num_threads = _resolve_threads(num_threads)
    num_rows = _check_num_embeddings(num_embeddings)
    if not isinstance(scale_grad_by_freq, (bool, np.bool_)):
        raise TypeError(f"scale_grad_by_freq must be a bool, got {scale_grad_by_freq!r}")
    g = _as_input(grad, "grad")
    _check_value_dtype(g, "grad")
    idx = _as_indices(indices)
    if g.ndim != idx.ndim + 1 or g.shape[:-1] != idx.shape:
        raise ValueError(f"grad must have shape indices.shape + (d,) = {idx.shape + ('d',)}, "
                         f"got {g.shape}".replace("'d'", "d"))
    d = g.shape[-1]
    pad = _check_padding_idx(padding_idx, num_rows, "num_embeddings")
    flat = _checked_flat_indices(idx, num_rows, "a table", backend)
    if backend == "numpy":
        return _reference.embedding_backward(g, idx, num_rows, padding_idx=pad,
                                             scale_grad_by_freq=bool(scale_grad_by_freq))
    grad_weight = np.zeros((num_rows, d), dtype=g.dtype)
    _kernels.scatter_add_rows(grad_weight, flat, _rows(g.reshape(flat.size, d)),
                              -1 if pad is None else pad, bool(scale_grad_by_freq), num_threads,
                              _kind16(g.dtype))
    return grad_weight


# --------------------------------------------------------------------------
# bags

BAG_MODES = {"sum": 0, "mean": 1, "max": 2}


def _check_mode(mode):
    if not isinstance(mode, str) or mode not in BAG_MODES:
        raise ValueError(f"mode must be one of 'sum', 'mean', 'max', got {mode!r}")
    return mode


def _bag_layout(indices, offsets, include_last_offset):
    """Flat indices, their original array, and bag bounds (B + 1,) as intp."""
    idx = _as_indices(indices)
    if not isinstance(include_last_offset, (bool, np.bool_)):
        raise TypeError(f"include_last_offset must be a bool, got {include_last_offset!r}")
    if offsets is None:
        if idx.ndim != 2:
            raise ValueError(f"indices must be 2-D (bags, entries per bag) when offsets is None, "
                             f"got shape {idx.shape}")
        if include_last_offset:
            raise ValueError("include_last_offset=True needs offsets")
        num_bags, length = idx.shape
        bounds = np.arange(num_bags + 1, dtype=np.intp) * length
        return idx, bounds
    if idx.ndim != 1:
        raise ValueError(f"indices must be 1-D when offsets is given, got shape {idx.shape}")
    off = _as_indices(offsets, "offsets")
    if off.ndim != 1:
        raise ValueError(f"offsets must be 1-D, got shape {off.shape}")
    n = idx.shape[0]
    if include_last_offset:
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


def _check_per_sample_weights(psw, idx, dtype, mode):
    if psw is None:
        return None
    if mode != "sum":
        raise ValueError(f"per_sample_weights is only supported with mode='sum', got mode={mode!r}")
    p = _as_input(psw, "per_sample_weights")
    if p.dtype != dtype:
        raise TypeError(f"per_sample_weights must have the dtype of weight ({dtype}), "
                        f"got {_dtype_text(p.dtype)}; no implicit cast is made")
    if p.shape != idx.shape:
        raise ValueError(f"per_sample_weights must have the shape of indices {idx.shape}, got {p.shape}")
    return p


def embedding_bag(weight: npt.ArrayLike, indices: npt.ArrayLike,
                  offsets: npt.ArrayLike | None = None, *, mode: str = "sum",
                  per_sample_weights: npt.ArrayLike | None = None,
                  include_last_offset: bool = False, padding_idx: int | None = None,
                  out: npt.NDArray[Any] | None = None,
                  backend: Literal["auto", "cython", "numpy"] = "auto",
                  num_threads: int | None = None) -> Any:
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
        Empty bags give zeros (and max_indices -1).  The bits are those of
        ``_reference.embedding_bag``, for any thread count.
    """
    backend = _resolve_backend(backend)
    num_threads = _resolve_threads(num_threads)
    mode = _check_mode(mode)
    w = _as_input(weight, "weight")
    _check_value_dtype(w, "weight")
    _check_ndim(w, "weight", 2, "(T, d)")
    num_rows, d = w.shape
    idx, bounds = _bag_layout(indices, offsets, include_last_offset)
    psw = _check_per_sample_weights(per_sample_weights, idx, w.dtype, mode)
    num_bags = bounds.shape[0] - 1
    if out is not None:
        _check_dest(out, "out", w.dtype, (num_bags, d), "weight")
        _check_disjoint(out, "out", (w, "weight"), (idx, "indices"),
                        *(() if psw is None else ((psw, "per_sample_weights"),)))
    pad = _check_padding_idx(padding_idx, num_rows, "weight")
    flat = _checked_flat_indices(idx, num_rows, "weight", backend)
    if backend == "numpy":
        res = _reference.embedding_bag(
            w, flat, bounds[:-1], mode=mode,
            per_sample_weights=None if psw is None else psw.reshape(-1),
            include_last_offset=False, padding_idx=pad)
        result, max_indices = (res if mode == "max" else (res, None))
        if out is not None:
            out[...] = result
            result = out
        return (result, max_indices) if mode == "max" else result
    if out is None:
        out = np.empty((num_bags, d), dtype=w.dtype)
    max_indices = np.empty((num_bags, d), dtype=np.int64) if mode == "max" else None
    with np.errstate(invalid="ignore"):  # signalling NaNs widen exactly, quietly
        psw64 = None if psw is None else np.require(psw.reshape(-1), np.float64, ["C", "A"])
    _kernels.bag_rows(_rows(w), flat, bounds, out, BAG_MODES[mode], psw64, max_indices,
                      -1 if pad is None else pad, num_threads, _kind16(w.dtype))
    return (out, max_indices) if mode == "max" else out


def embedding_bag_backward(grad: npt.ArrayLike, indices: npt.ArrayLike,
                           offsets: npt.ArrayLike | None, num_embeddings: int | None, *,
                           mode: str = "sum", per_sample_weights: npt.ArrayLike | None = None,
                           weight: npt.ArrayLike | None = None,
                           max_indices: npt.ArrayLike | None = None,
                           include_last_offset: bool = False, padding_idx: int | None = None,
                           grad_weight: npt.NDArray[Any] | None = None,
                           backend: Literal["auto", "cython", "numpy"] = "auto",
                           num_threads: int | None = None) -> tuple[Any, Any]:
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
    backend = _resolve_backend(backend)
    num_threads = _resolve_threads(num_threads)
    mode = _check_mode(mode)
    g = _as_input(grad, "grad")
    _check_value_dtype(g, "grad")
    _check_ndim(g, "grad", 2, "(bags, d)")
    d = g.shape[1]
    idx, bounds = _bag_layout(indices, offsets, include_last_offset)
    num_bags = bounds.shape[0] - 1
    if g.shape[0] != num_bags:
        raise ValueError(f"grad must have one row per bag ({num_bags}), got shape {g.shape}")
    if grad_weight is not None:
        if not isinstance(grad_weight, np.ndarray):
            raise TypeError(f"grad_weight must be a NumPy ndarray (it is written in place), "
                            f"got {type(grad_weight).__name__}")
        _check_same_dtype(grad_weight, "grad_weight", g, "grad")
        _check_ndim(grad_weight, "grad_weight", 2, "(T, d)")
        if grad_weight.shape[1] != d or (num_embeddings is not None
                                         and grad_weight.shape[0] != num_embeddings):
            raise ValueError(f"grad_weight must have shape ({num_embeddings if num_embeddings is not None else 'T'}, {d}), "
                             f"got {grad_weight.shape}")
        _check_writable_contiguous(grad_weight, "grad_weight")
        num_rows = grad_weight.shape[0]
    else:
        num_rows = _check_num_embeddings(num_embeddings, " (or None with grad_weight)")
    psw = _check_per_sample_weights(per_sample_weights, idx, g.dtype, mode)
    w = None
    if psw is not None:
        if weight is None:
            raise ValueError("weight is needed for the gradient of per_sample_weights")
        w = _as_input(weight, "weight")
        _check_same_dtype(w, "weight", g, "grad")
        if w.shape != (num_rows, d):
            raise ValueError(f"weight must have shape {(num_rows, d)}, got {w.shape}")
    mi = None
    if mode == "max":
        if max_indices is None:
            raise ValueError("max_indices (from embedding_bag(..., mode='max')) is needed for mode='max'")
        mi = _as_indices(max_indices, "max_indices")
        if mi.shape != (num_bags, d):
            raise ValueError(f"max_indices must have shape {(num_bags, d)}, got {mi.shape}")
        bad = np.flatnonzero((mi.reshape(-1) < -1) | (mi.reshape(-1) >= num_rows))
        if bad.size:
            _raise_out_of_range(mi, int(bad[0]), num_rows, "grad_weight", "max_indices")
        mi = np.require(mi, np.int64, ["C", "A"])
    pad = _check_padding_idx(padding_idx, num_rows, "grad_weight")
    if grad_weight is not None:
        inputs = [(g, "grad"), (idx, "indices")] + ([] if psw is None else [(psw, "per_sample_weights")])
        _check_disjoint(grad_weight, "grad_weight", *inputs)
    flat = _checked_flat_indices(idx, num_rows, "grad_weight", backend)
    if backend == "numpy":
        gw, grad_psw = _reference.embedding_bag_backward(
            g, flat, bounds[:-1], num_rows, mode=mode,
            per_sample_weights=None if psw is None else psw.reshape(-1), weight=w,
            max_indices=mi, padding_idx=pad, grad_weight=grad_weight)
        return gw, None if grad_psw is None else grad_psw.reshape(idx.shape)
    gw = grad_weight if grad_weight is not None else np.zeros((num_rows, d), dtype=g.dtype)
    kind = _kind16(g.dtype)
    if mode == "max":
        _kernels.bag_max_backward_rows(gw, np.require(g, None, ["C", "A"]), mi, kind)
        return gw, None
    bag, _ = _reference.bag_of_entries(bounds[:-1], flat.shape[0])
    src = np.require(g, None, ["C", "A"])
    if mode == "mean":
        keep = bag >= 0 if pad is None else (bag >= 0) & (flat != pad)
        counts = np.bincount(bag[keep], minlength=num_bags)
        op = np.float64 if g.dtype == np.float64 else np.float32
        with np.errstate(all="ignore"):
            src = (g.astype(op) / np.maximum(counts, 1).astype(op)[:, None]).astype(g.dtype)
    grad_psw = None
    scales = None
    if psw is not None:
        grad_psw = np.empty(flat.shape[0], dtype=g.dtype)
        _kernels.row_dots(src, _rows(w), flat, bag, -1 if pad is None else pad, grad_psw, kind)
        with np.errstate(invalid="ignore"):  # signalling NaNs widen exactly, quietly
            scales = np.require(psw.reshape(-1), np.float64, ["C", "A"])
        grad_psw = grad_psw.reshape(idx.shape)
    _kernels.scatter_add_rows(gw, flat, _rows(src), -1 if pad is None else pad, False,
                              num_threads, kind, bag, scales)
    return gw, grad_psw


# --------------------------------------------------------------------------
# max-norm, sparse gradients, optimizer steps

def _check_table(weight, name="weight"):
    if not isinstance(weight, np.ndarray):
        raise TypeError(f"{name} must be a NumPy ndarray (it is updated in place), "
                        f"got {type(weight).__name__}")
    _check_value_dtype(weight, name)
    _check_ndim(weight, name, 2, "(T, d)")
    _check_writable_contiguous(weight, name)


def _check_real(value, name, *, low=None, positive=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    v = float(value)
    if not np.isfinite(v) and not (name == "norm_type" and v == np.inf):
        raise ValueError(f"{name} must be finite, got {v}")
    if positive and not v > 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    if low is not None and v < low:
        raise ValueError(f"{name} must be >= {low}, got {v}")
    return v


def renorm_(weight: npt.NDArray[Any], indices: npt.ArrayLike, max_norm: float,
            norm_type: float = 2.0, *, backend: Literal["auto", "cython", "numpy"] = "auto",
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
    backend = _resolve_backend(backend)
    num_threads = _resolve_threads(num_threads)
    _check_table(weight)
    max_norm = _check_real(max_norm, "max_norm", low=0.0)
    norm_type = _check_real(norm_type, "norm_type", positive=True)
    idx = _as_indices(indices)
    _check_disjoint(weight, "weight", (idx, "indices"))
    flat = _checked_flat_indices(idx, weight.shape[0], "weight", backend)
    if backend == "numpy":
        return _reference.renorm_(weight, flat, max_norm, norm_type)
    rows = np.unique(flat).astype(np.int64)
    _kernels.renorm_rows(weight, rows, max_norm, norm_type, num_threads, _kind16(weight.dtype))
    return weight


def coalesce(indices: npt.ArrayLike, grad: npt.ArrayLike, *, padding_idx: int | None = None,
             backend: Literal["auto", "cython", "numpy"] = "auto",
             num_threads: int | None = None) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any]]:
    """A sparse gradient: sorted unique rows and their summed gradient rows.

    Parameters
    ----------
    indices : array_like of non-negative integers, shape S
        Any size of table, billions of rows included: nothing of size T is made.
    grad : array_like of shape S + (d,)
    padding_idx : int, optional
        A row (>= 0) left out.

    Returns
    -------
    rows : ndarray of int64, shape (U,)
    values : ndarray of shape (U, d)
        Bit for bit ``np.add.at`` of ``grad`` into zeros at the rows' positions.
    """
    backend = _resolve_backend(backend)
    num_threads = _resolve_threads(num_threads)
    idx = _as_indices(indices)
    g = _as_input(grad, "grad")
    _check_value_dtype(g, "grad")
    if g.ndim != idx.ndim + 1 or g.shape[:-1] != idx.shape:
        raise ValueError(f"grad must have shape indices.shape + (d,), got {g.shape} for indices "
                         f"of shape {idx.shape}")
    if padding_idx is not None:
        if isinstance(padding_idx, (bool, np.bool_)) or not isinstance(padding_idx, numbers.Integral):
            raise TypeError(f"padding_idx must be an integer or None, got {padding_idx!r}")
        if int(padding_idx) < 0:
            raise ValueError(f"padding_idx must be >= 0 here (there is no table size to count "
                             f"from), got {int(padding_idx)}")
        padding_idx = int(padding_idx)
    max_rows = np.iinfo(np.int64).max
    flat = _checked_flat_indices(idx, max_rows, "a table", backend)
    d = g.shape[-1]
    if backend == "numpy":
        return _reference.coalesce(flat, g.reshape(flat.size, d), padding_idx=padding_idx)
    return _coalesce_compiled(flat, g.reshape(flat.size, d), padding_idx, num_threads)


def _coalesce_compiled(flat, g2, padding_idx, num_threads):
    # sorted unique rows, then a scatter-add into (U, d) zeros in entry order
    if padding_idx is not None:
        keep = flat != padding_idx
        flat, g2 = flat[keep], g2[keep]
    rows, inverse = np.unique(flat, return_inverse=True)
    values = np.zeros((rows.shape[0], g2.shape[1]), dtype=g2.dtype)
    _kernels.scatter_add_rows(values, np.require(inverse.reshape(-1), np.int64, ["C", "A"]),
                              _rows(g2), -1, False, num_threads, _kind16(g2.dtype))
    return rows.astype(np.int64), values


def _optimizer_args(weight, indices, grad, padding_idx, lr, weight_decay, backend):
    _check_table(weight)
    lr = _check_real(lr, "lr")
    weight_decay = _check_real(weight_decay, "weight_decay")
    idx = _as_indices(indices)
    g = _as_input(grad, "grad")
    _check_same_dtype(g, "grad", weight, "weight")
    if g.shape != idx.shape + (weight.shape[1],):
        raise ValueError(f"grad must have shape indices.shape + (d,) = "
                         f"{idx.shape + (weight.shape[1],)}, got {g.shape}")
    pad = _check_padding_idx(padding_idx, weight.shape[0], "weight")
    _check_disjoint(weight, "weight", (g, "grad"), (idx, "indices"))
    flat = _checked_flat_indices(idx, weight.shape[0], "weight", backend)
    return flat, g.reshape(flat.size, weight.shape[1]), pad, lr, weight_decay


def _check_state(state, weight, rowwise):
    want = np.dtype(np.float64) if weight.dtype == np.float64 else np.dtype(np.float32)
    shape = (weight.shape[0],) if rowwise else weight.shape
    if not isinstance(state, np.ndarray):
        raise TypeError(f"state must be a NumPy ndarray (it is updated in place), got {type(state).__name__}")
    if state.dtype != want:
        raise TypeError(f"state must have dtype {want} for a {weight.dtype} table, got "
                        f"{_dtype_text(state.dtype)}")
    if state.shape != shape:
        raise ValueError(f"state must have shape {shape}, got {state.shape}")
    _check_writable_contiguous(state, "state")
    _check_disjoint(state, "state", (weight, "weight"))


def _optimizer_step(kind, weight, state, indices, grad, lr, eps, weight_decay, padding_idx,
                    backend, num_threads):
    backend = _resolve_backend(backend)
    num_threads = _resolve_threads(num_threads)
    flat, g, pad, lr, weight_decay = _optimizer_args(weight, indices, grad, padding_idx, lr,
                                                     weight_decay, backend)
    if kind != 0:
        eps = _check_real(eps, "eps")
        _check_state(state, weight, rowwise=(kind == 2))
        _check_disjoint(state, "state", (g, "grad"))
    if backend == "numpy":
        if kind == 0:
            _reference.sgd_step(weight, flat, g, lr=lr, weight_decay=weight_decay, padding_idx=pad)
        elif kind == 1:
            _reference.adagrad_step(weight, state, flat, g, lr=lr, eps=eps,
                                    weight_decay=weight_decay, padding_idx=pad)
        else:
            _reference.rowwise_adagrad_step(weight, state, flat, g, lr=lr, eps=eps,
                                            weight_decay=weight_decay, padding_idx=pad)
        return
    rows, values = _coalesce_compiled(flat, g, pad, num_threads)
    _kernels.optimizer_rows(weight, rows, values, state, kind, lr, eps, weight_decay,
                            num_threads, _kind16(weight.dtype))


def sgd_step(weight: npt.NDArray[Any], indices: npt.ArrayLike, grad: npt.ArrayLike, *,
             lr: float, weight_decay: float = 0.0, padding_idx: int | None = None,
             backend: Literal["auto", "cython", "numpy"] = "auto",
             num_threads: int | None = None) -> npt.NDArray[Any]:
    """Sparse SGD on the table: for each distinct row r of ``indices``,
    ``w[r] -= lr * (g[r] + weight_decay * w[r])`` with g the coalesced gradient.

    Arithmetic in float32 (float64 for float64 tables), rounded to the table's
    dtype once; bit for bit ``_reference.sgd_step``.  Schedules are the
    caller's: pass this step's ``lr``.
    """
    _optimizer_step(0, weight, None, indices, grad, lr, 0.0, weight_decay, padding_idx,
                    backend, num_threads)
    return weight


def adagrad_step(weight: npt.NDArray[Any], state: npt.NDArray[Any], indices: npt.ArrayLike,
                 grad: npt.ArrayLike, *, lr: float, eps: float = 1e-10,
                 weight_decay: float = 0.0, padding_idx: int | None = None,
                 backend: Literal["auto", "cython", "numpy"] = "auto",
                 num_threads: int | None = None) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Sparse Adagrad with element-wise state (T, d) (float32, or float64 for float64):
    ``s[r] += g*g; w[r] -= lr * g / (sqrt(s[r]) + eps)``, per distinct row."""
    _optimizer_step(1, weight, state, indices, grad, lr, eps, weight_decay, padding_idx,
                    backend, num_threads)
    return weight, state


def rowwise_adagrad_step(weight: npt.NDArray[Any], state: npt.NDArray[Any],
                         indices: npt.ArrayLike, grad: npt.ArrayLike, *, lr: float,
                         eps: float = 1e-10, weight_decay: float = 0.0,
                         padding_idx: int | None = None,
                         backend: Literal["auto", "cython", "numpy"] = "auto",
                         num_threads: int | None = None) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Row-wise Adagrad (FBGEMM's): one state value per row (T,),
    ``s[r] += mean(g*g)``; ``w[r] -= lr * g / (sqrt(s[r]) + eps)``, per distinct row."""
    _optimizer_step(2, weight, state, indices, grad, lr, eps, weight_decay, padding_idx,
                    backend, num_threads)
    return weight, state


def _openmp_runtime() -> str | None:
    """The OpenMP library this process has loaded for the kernels (as threadpoolctl sees it)."""
    if _kernels is None or not _kernels.build_info()["openmp"]:
        return None
    try:
        with open("/proc/self/maps") as maps:
            libs = {line.split()[-1] for line in maps if "omp" in line.rsplit("/", 1)[-1]}
    except OSError:
        return "unknown"
    return ", ".join(sorted(libs)) or "unknown"


def info() -> dict[str, Any]:
    """What is installed and active, and why.

    Returns
    -------
    dict
        ``version``, ``backend`` (what ``backend="auto"`` resolves to),
        ``compiled`` (bool) and ``compiled_error`` (why not), ``forced_backend``
        (from ``FASTEMBED_EXT_BACKEND``), ``openmp``, ``num_threads``,
        ``value_dtypes``, ``index_dtypes``, ``cpu`` features, ``float16_path``
        and ``build`` (the compile flags that matter for the numerics).
    """
    compiled = _kernels is not None
    build = _kernels.build_info() if compiled else {}
    try:
        auto = _resolve_backend("auto")
    except (ValueError, ImportError) as exc:
        auto = f"error: {exc}"
    cpu = _kernels.cpu_features() if compiled else {}
    return {
        "version": __version__,
        "backend": auto,
        "compiled": compiled,
        "compiled_error": _KERNELS_ERROR,
        "forced_backend": _forced_backend,
        "env_errors": [e for e in (_forced_backend_error, _env_threads_error) if e],
        "openmp": bool(build.get("openmp", False)),
        "num_threads": get_num_threads() if _env_threads_error is None else None,
        "num_threads_source": ("set_num_threads / FASTEMBED_EXT_NUM_THREADS"
                               if _default_threads is not None else "OpenMP default"),
        "openmp_runtime": _openmp_runtime(),
        "serial_after_fork": _forked_serial,
        "value_dtypes": [str(t) for t in VALUE_DTYPES],
        "optional_value_dtypes": ["bfloat16 (with ml_dtypes installed)"],
        "index_dtypes": "int32 and int64 used as they are; other integer dtypes converted",
        "cpu": cpu,
        "float16_path": ("f16c" if compiled and _kernels.f16c_active() else "portable"),
        "build": build,
        "numpy": np.__version__,
    }

"""Coercion and the rules every operation shares, each error worded once.

An operation coerces its inputs with ``as_input`` / ``as_indices``, checks
them with the functions here (and its own rules), and only then writes.  A
check never writes: a call that raises has left every buffer as it was.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from . import _runtime as rt
from ._runtime import INDEX_DTYPES_ZERO_COPY, VALUE_DTYPES

# --------------------------------------------------------------------------
# coercion


def as_input(x: Any, name: str) -> np.ndarray[Any, Any]:
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


def as_indices(x: Any, name: str = "indices") -> np.ndarray[Any, Any]:
    idx = as_input(x, name)
    if idx.size == 0 and idx.dtype == np.float64 and isinstance(x, (list, tuple)):
        # an empty list is an empty integer index (np.asarray reads it as float64), as
        # np.take has it; an empty float array or typed buffer (a memoryview of
        # doubles) stays refused, as np.take refuses it
        return idx.astype(np.intp)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{name} must have an integer dtype, got {dtype_text(idx.dtype)}")
    return idx


def rows(a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``a`` (n, d) with contiguous, aligned rows: as it is where it can be, else a copy."""
    itemsize = a.itemsize
    if a.flags.aligned and (a.shape[1] <= 1 or a.strides[1] == itemsize) \
            and a.strides[0] % itemsize == 0:
        return a
    return a.copy(order="C")  # fresh, so aligned as well as contiguous


def contiguous(a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``a`` C-contiguous and aligned: as it is where it can be, else a fresh copy."""
    if a.flags.c_contiguous and a.flags.aligned:
        return a
    return a.copy(order="C")


# --------------------------------------------------------------------------
# dtypes and shapes

def is_bfloat16(dtype: np.dtype[Any]) -> bool:
    # ml_dtypes.bfloat16, recognised without importing ml_dtypes (an optional extra)
    return dtype.name == "bfloat16" and dtype.itemsize == 2 and dtype.kind == "V" \
        and dtype.type.__module__.split(".")[0] == "ml_dtypes"


def dtype_text(dtype: np.dtype[Any]) -> str:
    return str(dtype) if dtype.isnative else f"{dtype} (byte order {dtype.str})"


def check_value_dtype(a: np.ndarray[Any, Any], name: str) -> None:
    if a.dtype not in VALUE_DTYPES and not is_bfloat16(a.dtype):
        raise TypeError(
            f"{name} must have dtype float16, float32 or float64 in native byte order "
            f"(or ml_dtypes.bfloat16), got {dtype_text(a.dtype)}")


def check_same_dtype(a: np.ndarray[Any, Any], name: str, ref: np.ndarray[Any, Any],
                     ref_name: str) -> None:
    if a.dtype != ref.dtype:
        raise TypeError(
            f"{name} must have the dtype of {ref_name} ({ref.dtype}), got {dtype_text(a.dtype)}; "
            f"no implicit cast is made")


def check_ndim(a: np.ndarray[Any, Any], name: str, ndim: int, meaning: str) -> None:
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {meaning}, got shape {a.shape}")


def check_table(a: np.ndarray[Any, Any], name: str) -> None:
    """A (T, d) table of a value dtype."""
    check_value_dtype(a, name)
    check_ndim(a, name, 2, "(T, d)")


def check_grad_shape(g: np.ndarray[Any, Any], idx: np.ndarray[Any, Any],
                     d: int | None = None) -> None:
    """``grad`` has one row of width d per index: shape ``indices.shape + (d,)``."""
    if d is None:
        ok = g.ndim == idx.ndim + 1 and g.shape[:-1] == idx.shape
        want = "(" + "".join(f"{n}, " for n in idx.shape) + "d)"
    else:
        ok = g.shape == idx.shape + (d,)
        want = str(idx.shape + (d,))
    if not ok:
        raise ValueError(f"grad must have shape indices.shape + (d,) = {want}, got {g.shape}")


# --------------------------------------------------------------------------
# written buffers

def check_writable(a: Any, name: str, role: str = "it is written in place") -> None:
    """A buffer the call writes: an ndarray that is writable, C-contiguous and aligned."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a NumPy ndarray ({role}), got {type(a).__name__}")
    if not a.flags.writeable:
        raise ValueError(f"{name} must be writable, got a read-only array")
    if not a.flags.c_contiguous:
        layout = ("a Fortran-ordered array" if a.flags.f_contiguous
                  else f"an array with strides {a.strides}")
        raise ValueError(
            f"{name} must be C-contiguous (it is written in place, and a copy would lose the "
            f"result), got {layout}")
    if not a.flags.aligned:
        raise ValueError(f"{name} must be aligned to its dtype, got an unaligned array")


def check_dest(a: Any, name: str, dtype: np.dtype[Any], shape: tuple[int, ...],
               dtype_from: str) -> None:
    """A destination of a known dtype and shape."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a NumPy ndarray (it is written in place), "
                        f"got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{name} must have the dtype of {dtype_from} ({dtype}), "
                        f"got {dtype_text(a.dtype)}; no implicit cast is made")
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    check_writable(a, name)


def check_updated_table(a: Any, name: str) -> None:
    """A (T, d) table updated in place."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a NumPy ndarray (it is updated in place), "
                        f"got {type(a).__name__}")
    check_table(a, name)
    check_writable(a, name)


def _overlaps(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> bool:
    if a.size == 0 or b.size == 0 or not np.may_share_memory(a, b):
        return False
    try:
        # (NumPy's stubs allow only -1 and 0, the exact and the bounds-only checks)
        return bool(np.shares_memory(a, b, max_work=10_000))  # type: ignore[arg-type]
    except np.exceptions.TooHardError:
        return True


def check_disjoint(dest: np.ndarray[Any, Any], dest_name: str,
                   *inputs: tuple[np.ndarray[Any, Any] | None, str]) -> None:
    for arr, name in inputs:
        if arr is not None and _overlaps(dest, arr):
            raise ValueError(f"{dest_name} must not overlap {name}: they share memory")


# --------------------------------------------------------------------------
# scalars

def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def check_num_embeddings(value: Any, hint: str = "") -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"num_embeddings must be an integer{hint}, got {value!r} "
                        f"({type(value).__name__})")
    if int(value) < 0:
        raise ValueError(f"num_embeddings must be >= 0, got {int(value)}")
    return int(value)


def check_padding_idx(padding_idx: Any, num_rows: int | None, table: str = "") -> int | None:
    """``padding_idx`` as a row number, or None.

    Negative values count from the end of a table of ``num_rows`` rows; with
    ``num_rows=None`` (no table size to count from) they are refused.
    """
    if padding_idx is None:
        return None
    if isinstance(padding_idx, (bool, np.bool_)) or not isinstance(padding_idx, numbers.Integral):
        raise TypeError(f"padding_idx must be an integer or None, got {padding_idx!r} "
                        f"({type(padding_idx).__name__})")
    p = int(padding_idx)
    if num_rows is None:
        if p < 0:
            raise ValueError(f"padding_idx must be >= 0 here (there is no table size to count "
                             f"from), got {p}")
        return p
    if not -num_rows <= p < num_rows:
        raise ValueError(f"padding_idx must be within [-{num_rows}, {num_rows}) for {table} "
                         f"with {num_rows} rows, got {p}")
    return p + num_rows if p < 0 else p


def check_real(value: Any, name: str, *, low: float | None = None, positive: bool = False,
               allow_inf: bool = False) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    v = float(value)
    if not np.isfinite(v) and not (allow_inf and v == np.inf):
        raise ValueError(f"{name} must be finite, got {v}")
    if positive and not v > 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    if low is not None and v < low:
        raise ValueError(f"{name} must be >= {low}, got {v}")
    return v


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {listed}, got {value!r}")
    return value


# --------------------------------------------------------------------------
# index bounds

def position_text(name: str, flat_pos: int, shape: tuple[int, ...]) -> str:
    if len(shape) == 0:
        return f"{name}[()]"
    pos = np.unravel_index(flat_pos, shape)
    return f"{name}[{', '.join(str(int(i)) for i in pos)}]"


def raise_out_of_range(idx: np.ndarray[Any, Any], flat_pos: int, num_rows: int, table: str,
                       name: str, low: int = 0) -> None:
    value = int(idx.reshape(-1)[flat_pos])
    where = position_text(name, flat_pos, idx.shape)
    hint = " (negative indices are not supported)" if value < 0 and low == 0 else ""
    raise IndexError(f"{where} = {value} is out of range for {table} with {num_rows} rows{hint}; "
                     f"valid indices are {low} <= i < {num_rows}")


def checked_flat_indices(idx: np.ndarray[Any, Any], num_rows: int, table: str, backend: str,
                         name: str = "indices", threads: int = 0) -> np.ndarray[Any, Any]:
    """Bounds-check ``idx`` against ``num_rows``; return it as 1-D int32/int64 for the kernels.

    int32 and int64 in native byte order are used as they are (a view, or a
    contiguous copy only if ``idx`` is not contiguous); other integer dtypes
    are checked, then converted to intp.  ``threads`` is the call's thread
    count (0: the library default), which the compiled check uses too.
    """
    zero_copy = idx.dtype in INDEX_DTYPES_ZERO_COPY
    flat = idx.reshape(-1) if zero_copy else idx.ravel()
    if zero_copy and not (flat.flags.c_contiguous and flat.flags.aligned):
        flat = flat.copy()  # a fresh array is aligned; ascontiguousarray keeps a misaligned one
    if zero_copy and backend == "cython":
        bad = rt.kernels.first_out_of_range(flat, num_rows, threads)
    elif flat.size:
        mask = flat >= num_rows
        if flat.dtype.kind == "i":
            mask |= flat < 0
        bad = int(np.argmax(mask)) if mask.any() else -1
    else:
        bad = -1
    if bad >= 0:
        raise_out_of_range(idx, bad, num_rows, table, name)
    if not zero_copy:
        flat = flat.astype(np.intp)
    return flat

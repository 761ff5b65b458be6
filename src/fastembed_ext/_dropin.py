"""Drop-ins for ``np.add.at`` and ``np.take``, and a patch for code you do not control.

``add_at`` and ``take`` are ``np.add.at`` and ``np.take``: the same result
bits, the same exceptions, the same floating-point warnings.  Each looks at
its call once: a row form (updates or copies of rows of axis 0) goes to one
compiled kernel; every other form, and every call that NumPy would refuse,
goes to NumPy itself, untouched.  Nothing is written before that decision,
so a call that NumPy refuses raises NumPy's own error with every buffer as it
was.  ``patch_stats()`` counts what went where, and why.

What ``np.add.at(a, indices, b)`` does, and what the row form keeps of it:

- ``indices`` select rows of ``a`` (an integer array, a list, an int, or a
  one-element tuple of one of those); negative entries count from the end;
  any entry outside ``[-T, T)`` is an IndexError before anything is written.
- ``b`` is broadcast to ``indices.shape + a.shape[1:]`` and added in the
  dtype NumPy promotes ``a`` and ``b`` to (``np.result_type`` of the two
  dtypes; a Python scalar ``b`` is an array first, so ``1.0`` is float64),
  the sum cast back to ``a.dtype``.  The kernels add in ``a.dtype``; that is
  the same result when the promoted dtype is ``a.dtype``, and also when it is
  wider but every ``b`` is exactly a value of ``a.dtype``: a sum of two
  p-bit floats rounded once to 2p + 2 bits or more and then to p bits is the
  sum rounded to p bits (Figueroa, 1995).  Otherwise NumPy runs.
- ``b`` that shares memory with ``a`` is read as it was before the call
  (NumPy copies it first); the row form copies it too.
- The floating-point flags: NumPy reports an overflow or an invalid
  operation after the loop (a warning, an error or a callback, as
  ``np.errstate`` says).  The row form runs only when no flag can be raised:
  every value involved is finite and a bound on every running sum stays
  below the largest finite value; or ``np.errstate`` ignores both flags and
  ``a`` has rows of its own (ndim >= 2: for a 1-D ``a`` NumPy's NaN + NaN
  keeps ``a``'s payload, the kernels ``b``'s).
"""

from __future__ import annotations

import contextlib
import importlib
import math
import operator
import types
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from . import _checks as ck
from . import _runtime as rt

Array = np.ndarray[Any, Any]
# NumPy's own functions for the fallbacks, looked up at each call (NumPy's
# stubs are narrower than what these functions accept)
_np: Any = np


class _NoValue:
    """The default of ``add_at``'s ``b``: not given (``np.add.at(a, i)`` has its own error)."""

    def __repr__(self) -> str:
        return "<no value>"


_NOVALUE: Any = _NoValue()


# --------------------------------------------------------------------------
# what went where

_ACCELERATED = "accelerated"
_stats: dict[str, dict[str, int]] = {"add_at": {}, "take": {}}


# (bound once: add_at and take count inline, each call's cost is added to
# NumPy's own on a fallback)
_ADD_AT_COUNTS, _TAKE_COUNTS = _stats["add_at"], _stats["take"]


def patch_stats(reset: bool = False) -> dict[str, dict[str, Any]]:
    """How many ``add_at`` and ``take`` calls ran on the kernels, how many NumPy ran, and why.

    Every call counts, made directly or through a patched module.

    Parameters
    ----------
    reset : bool, default False
        Start the counts again from zero after reading them.

    Returns
    -------
    dict
        ``{"add_at": {...}, "take": {...}}``; each holds ``accelerated`` (calls
        that ran on the kernels), ``fallback`` (calls NumPy ran) and
        ``reasons``, the fallbacks by reason (a dict of counts).
    """
    report: dict[str, dict[str, Any]] = {}
    for fn, counts in _stats.items():
        reasons = {k: v for k, v in sorted(counts.items()) if k != _ACCELERATED}
        report[fn] = {"accelerated": counts.get(_ACCELERATED, 0),
                      "fallback": sum(reasons.values()), "reasons": reasons}
        if reset:
            counts.clear()
    return report


# --------------------------------------------------------------------------
# the value dtypes: bits of a value (p), the largest finite value, and how to
# read the largest magnitude of an array

class _Value:
    __slots__ = ("bits", "max", "uint", "mag_mask", "inf_bits")

    def __init__(self, bits: int, largest: float, itemsize: int) -> None:
        self.bits = bits
        self.max = largest
        self.uint = np.dtype(f"u{itemsize}")
        nbits = 8 * itemsize
        self.mag_mask = (1 << (nbits - 1)) - 1
        self.inf_bits = {2: 0x7C00, 4: 0x7F800000, 8: 0x7FF0000000000000}[itemsize]


_VALUES: dict[np.dtype[Any], _Value] = {
    np.dtype(np.float16): _Value(11, float(np.finfo(np.float16).max), 2),
    np.dtype(np.float32): _Value(24, float(np.finfo(np.float32).max), 4),
    np.dtype(np.float64): _Value(53, float(np.finfo(np.float64).max), 8),
}
_BFLOAT16 = _Value(8, 3.3895313892515355e38, 2)
_BFLOAT16.inf_bits = 0x7F80


def _value(dtype: np.dtype[Any]) -> _Value | None:
    v = _VALUES.get(dtype)
    # (dtype.name takes microseconds: only a 2-byte void dtype can be bfloat16)
    if v is None and dtype.kind == "V" and dtype.itemsize == 2 and ck.is_bfloat16(dtype):
        v = _VALUES[dtype] = _BFLOAT16
    return v


_MAX, _MIN = np.maximum.reduce, np.minimum.reduce
_CHUNK = 65536  # values per chunk of a magnitude reduction (256-512 KiB: in L2)


def _max_magnitude(x: Array, v: _Value) -> float:
    """The largest ``|x|``; inf if any item is inf or NaN."""
    if x.size == 0:
        return 0.0
    if x.itemsize == 2:
        # NumPy's float16 max is slow; the magnitude bits order as the values do
        top = int(np.bitwise_and(x.view(v.uint), v.mag_mask).max())
        if top >= v.inf_bits:
            return math.inf
        return float(np.array(top, dtype=v.uint).view(x.dtype).astype(np.float64))
    # the ufuncs' own reductions, without ndarray.max's Python wrapper; both
    # propagate NaN
    if x.size <= 2 * _CHUNK or not x.flags.c_contiguous:
        m = max(abs(float(_MAX(x, axis=None))), abs(float(_MIN(x, axis=None))))
        return m if m == m else math.inf
    # max and min of one cache-sized chunk at a time: one pass over memory
    # instead of two (measured 1.1x-1.8x on 4M-8M float32/float64 values)
    flat = x.reshape(-1)
    m = 0.0
    for lo in range(0, flat.size, _CHUNK):
        part = flat[lo:lo + _CHUNK]
        peak = max(abs(float(_MAX(part))), abs(float(_MIN(part))))
        if peak != peak:
            return math.inf
        m = max(m, peak)
    return m


def _no_overflow(ma: float, mb: float, count: int, v: _Value) -> bool:
    """Whether ``count`` adds of values of magnitude <= mb to one of magnitude <= ma
    stay finite, however they round: each rounded sum is at most the exact one
    times (1 + 2**-p), so every running sum is at most
    (ma + count * mb) * (1 + 2**-p) ** count."""
    exponent = count * math.log1p(2.0 ** -v.bits)
    if exponent > 700.0:  # math.exp would overflow; the bound is far beyond any dtype
        return False
    bound = (ma + count * mb + 1e-300) * math.exp(exponent) * (1.0 + 1e-9)
    return bound < v.max


def _flags_ignored() -> bool:
    err = np.geterr()
    return err["over"] == "ignore" and err["invalid"] == "ignore"


def _compiled_reason() -> str | None:
    """Why the kernels cannot run now, or None."""
    if rt.kernels is None:
        return "no compiled extension"
    if rt.backend_error is not None or rt.threads_error is not None:
        return "bad FASTEMBED_EXT_* environment value"
    if rt.forced_backend == "numpy":
        return "FASTEMBED_EXT_BACKEND=numpy"
    return None


# Below these sizes NumPy is as fast as the checks a row form needs
# (measured: bench/test_dropin.py, see the README); a call that small goes
# to NumPy with the reason "small".
SMALL_ADD_AT = 2048  # values added (len(indices) * row length)
SMALL_TAKE = 1 << 18  # bytes copied
NARROW_TAKE = 64  # bytes per row: NumPy's own copy loop is as fast for narrower rows


# --------------------------------------------------------------------------
# indices

def _index_array(indices: Any) -> Array | None:
    """An integer array, list, int or 0-d integer as an ndarray; None for any other form."""
    t = type(indices)
    if t is np.ndarray:
        idx: Array = indices
    elif t is int or isinstance(indices, np.integer):
        idx = np.asarray(indices)
    elif t is list or t is tuple:
        try:
            idx = np.asarray(indices)
        except Exception:  # noqa: BLE001 - NumPy will say what is wrong with it
            return None
    else:
        return None
    if idx.dtype.kind not in "iu":
        return None
    return idx


def _flat_rows(idx: Array, num_rows: int, negative: str) -> Array | str:
    """``idx`` as flat int32/int64 row numbers in ``[0, T)`` for the kernels, or why not.

    ``negative``: "wrap" counts from the end (entries in ``[-T, T)`` are
    rows), "mod" takes every entry modulo T, "clip" clips to ``[0, T - 1]``.
    """
    if idx.dtype.kind == "u":
        if idx.size and int(idx.max()) > np.iinfo(np.intp).max:
            return "index beyond the intp range"
        flat = idx.reshape(-1).astype(np.intp)
    elif idx.dtype in rt.INDEX_DTYPES_ZERO_COPY:
        flat = idx.reshape(-1)
        if not (flat.flags.c_contiguous and flat.flags.aligned):
            flat = flat.copy()
    else:
        flat = idx.reshape(-1).astype(np.intp)
    if flat.size == 0 or rt.kernels.first_out_of_range(flat, num_rows) < 0:
        return flat
    if negative == "mod":
        return np.mod(flat, num_rows, dtype=np.intp)
    if negative == "clip":
        return np.clip(flat, 0, num_rows - 1).astype(np.intp, copy=False)
    if int(flat.min()) < -num_rows or int(flat.max()) >= num_rows:
        return "index out of bounds"
    rows = flat.astype(np.intp)  # a copy: the caller's indices stay as they were
    rows[rows < 0] += num_rows
    return rows


# --------------------------------------------------------------------------
# add_at

_PROMOTED: dict[tuple[np.dtype[Any], np.dtype[Any]], np.dtype[Any] | None] = {}


def _promoted(a: np.dtype[Any], b: np.dtype[Any]) -> np.dtype[Any] | None:
    """The dtype ``np.add`` adds ``a`` and ``b`` in (asked of the ufunc itself, which
    knows the loops ml_dtypes registers), or None if it is not one dtype for all three."""
    key = (a, b)
    if key not in _PROMOTED:
        try:
            # ufunc.at casts its operands "unsafe"
            x, y, z = np.add.resolve_dtypes((a, b, None), casting="unsafe")
            _PROMOTED[key] = x if x == y == z else None
        except Exception:  # noqa: BLE001 - no loop: NumPy will raise
            _PROMOTED[key] = None
    return _PROMOTED[key]


def _values_as(b: Any, a: Array, v: _Value) -> Array | str:
    """``b`` as values of ``a.dtype`` giving NumPy's sums, or why it cannot be."""
    if type(b) is np.ndarray:
        barr: Array = b
        if barr.size and np.may_share_memory(a, barr):
            barr = barr.copy()  # NumPy reads b as it was before the call
    elif isinstance(b, (float, int, np.generic)) and not isinstance(b, (complex, np.complexfloating)):
        barr = np.asarray(b)
    elif type(b) is list or type(b) is tuple:
        try:
            barr = np.asarray(b)
        except Exception:  # noqa: BLE001 - NumPy will say what is wrong with it
            return "b is not an array of numbers"
    else:
        return "b is not an ndarray, list or number"
    dtype = a.dtype
    if barr.dtype == dtype:
        return barr
    loop = _promoted(dtype, barr.dtype)
    if loop is None:
        return "b cannot be added to a"
    if loop == dtype:
        return barr.astype(dtype)  # NumPy's own cast into the loop dtype: exact
    lv = _value(loop)
    if lv is None or lv.bits < 2 * v.bits + 2:
        return "b promotes a to a dtype the kernels do not add in"
    with np.errstate(all="ignore"):
        wide = barr.astype(loop, copy=False)
        narrow = wide.astype(dtype)
        exact = bool(np.equal(narrow.astype(loop), wide).all())
    if not exact:
        return "b is not exactly representable in a's dtype"
    return narrow


def _add_at_rows(a: Any, indices: Any, b: Any) -> str | None:
    """Run ``np.add.at(a, indices, b)`` on the kernels when it is a row form;
    otherwise write nothing and return why not."""
    if type(a) is not np.ndarray:
        return "a is not an ndarray"
    v = _VALUES.get(a.dtype) or _value(a.dtype)
    if v is None:
        return "a dtype is not float16, float32, float64 or bfloat16"
    if a.ndim == 0:
        return "a is 0-d"
    if b is _NOVALUE:
        return "b not given"
    if type(indices) is tuple:
        if len(indices) != 1:
            return "index form (not rows of axis 0)"
        indices = indices[0]  # (i,) indexes as i does
        if type(indices) is tuple:
            return "index form (not rows of axis 0)"
    if type(indices) is np.ndarray and indices.dtype.kind in "iu":
        idx: Array | None = indices
    else:
        idx = _index_array(indices)
    if idx is None:
        return "index form (not rows of axis 0)"
    num_rows = a.shape[0]
    d = a.size // num_rows if num_rows else math.prod(a.shape[1:])
    # the size first of the remaining checks: most calls that small are
    # fallbacks, and every check is time added to NumPy's own
    if idx.size * d < SMALL_ADD_AT:
        return "small (NumPy is as fast)"
    flags = a.flags
    if not (flags.c_contiguous and flags.writeable and flags.aligned):
        return "a is not C-contiguous, writable and aligned"
    why = _compiled_reason()
    if why is not None:
        return why
    if np.may_share_memory(a, idx):
        return "indices share memory with a"
    flat = _flat_rows(idx, num_rows, "wrap")
    if isinstance(flat, str):
        return flat
    values = _values_as(b, a, v)
    if isinstance(values, str):
        return values
    n = flat.size
    target = idx.shape + a.shape[1:]
    rows = values
    if values.shape != target:
        try:
            rows = np.broadcast_to(values, target)
        except ValueError:
            return "b does not broadcast to indices.shape + a.shape[1:]"
    if n == 0 or d == 0:
        return None
    table = a.reshape(num_rows, d)
    # With both flags ignored NumPy's result is still the rule: NaN + NaN keeps
    # the payload of b on rows (a.ndim >= 2, as the kernels do) but of a for a
    # 1-D a (NumPy 2.x, x86-64), so a 1-D a with NaNs goes to NumPy.
    if not _no_flags(table, flat, values, v) and not (a.ndim >= 2 and _flags_ignored()):
        return "values could overflow or are not finite"
    grad = ck.rows(rows.reshape(n, d))
    rt.kernels.scatter_add_rows(table, flat, grad, -1, False, 0)
    return None


def _no_flags(table: Array, flat: Array, values: Array, v: _Value) -> bool:
    """No add of this call can overflow or be invalid: every value is finite
    and every running sum stays below the largest finite value."""
    mb = _max_magnitude(values, v)
    if mb == math.inf:
        return False
    n, d = flat.size, table.shape[1]
    if table.size <= 2 * n * d:
        ma = _max_magnitude(table, v)
    else:  # only the rows this call updates, a chunk at a time
        ma = 0.0
        step = max(1, (1 << 20) // d)
        scratch = np.empty((min(step, n), d), dtype=table.dtype)
        for lo in range(0, n, step):
            part = flat[lo:lo + step]
            got = scratch[:part.size]
            rt.kernels.gather_rows(table, part, got, 0)
            ma = max(ma, _max_magnitude(got, v))
    if ma == math.inf:
        return False
    if _no_overflow(ma, mb, n, v):
        return True
    # the longest chain of adds is the most repeated row's
    if table.shape[0] <= 4 * n:
        longest = int(np.bincount(flat).max())
    else:  # no T-sized count array for a small batch on a large table
        longest = int(np.unique(flat, return_counts=True)[1].max())
    return _no_overflow(ma, mb, longest, v)


def add_at(a: npt.NDArray[Any], indices: Any, b: Any = _NOVALUE, /) -> None:
    """``np.add.at(a, indices, b)``: unbuffered in-place ``a[indices] += b``.

    The same result bits, exceptions and floating-point warnings as
    ``np.add.at`` for every input.  Row forms run on the compiled
    scatter-add kernel; every other form calls ``np.add.at`` itself.

    Parameters
    ----------
    a : ndarray of shape (T, ...)
        Updated in place.  Row form: float16, float32, float64 or
        ml_dtypes.bfloat16; C-contiguous, writable and aligned; any ndim >= 1
        (the trailing axes are the row, a 1-D ``a`` has rows of one value).
    indices : int array, list, int, or a one-element tuple of one of those
        Rows of ``a``, shape S; negative entries count from the end.  Any
        other index (several axes, slices, boolean masks) goes to NumPy.
    b : array_like
        Broadcast to ``S + a.shape[1:]``; added in the dtype NumPy promotes
        ``a`` and ``b`` to and cast back to ``a.dtype``, as ``np.add.at`` does.
        May share memory with ``a`` (read as it was before the call).

    Returns
    -------
    None

    Notes
    -----
    Repeated indices accumulate in index order.  The row form runs when no
    overflow or invalid flag can be raised (all values finite and below a
    bound), or when ``np.errstate`` ignores both; otherwise NumPy runs and
    warns or raises as it does.  ``patch_stats()`` counts both paths.
    """
    why = _add_at_rows(a, indices, b)
    key = _ACCELERATED if why is None else why
    _ADD_AT_COUNTS[key] = _ADD_AT_COUNTS.get(key, 0) + 1
    if why is None:
        return
    if b is _NOVALUE:
        _np.add.at(a, indices)
    else:
        _np.add.at(a, indices, b)


# --------------------------------------------------------------------------
# take

_MODES = ("raise", "wrap", "clip")
_NEGATIVE = {"raise": "wrap", "wrap": "mod", "clip": "clip"}


def _row_view(a: Array) -> Array | None:
    """``a`` as (T, d) rows with contiguous bytes each, without a copy; None if it cannot be."""
    num_rows = a.shape[0]
    if a.ndim == 1:
        return a.reshape(num_rows, 1)
    if a.flags.c_contiguous:
        return a.reshape(num_rows, math.prod(a.shape[1:]))
    if a.ndim == 2:
        ok = a.shape[1] <= 1 or a.strides[1] == a.itemsize
        return a if ok and a.strides[0] % a.itemsize == 0 else None
    want = a.itemsize
    for n, s in zip(a.shape[:0:-1], a.strides[:0:-1]):
        if n != 1 and s != want:
            return None
        want *= n
    if a.strides[0] % a.itemsize:
        return None
    return np.lib.stride_tricks.as_strided(
        a, shape=(num_rows, want // a.itemsize), strides=(a.strides[0], a.itemsize),
        writeable=False)


def _take_rows(a: Any, indices: Any, axis: Any, out: Any, mode: Any) -> Any:
    """``np.take`` of rows on the kernels: the result, or the reason it is not a row form."""
    if type(a) is not np.ndarray:
        return "a is not an ndarray"
    if a.ndim == 0:
        return "a is 0-d"
    if axis is None:
        if a.ndim != 1:
            return "axis=None on an N-D array (flattened)"
    else:
        try:
            ax = operator.index(axis)
        except TypeError:
            return "axis is not an integer"
        if ax != 0 and ax != -a.ndim:
            return "axis is not 0"
    if type(mode) is not str or mode not in _MODES:
        return "mode is not 'raise', 'wrap' or 'clip'"
    if type(indices) is np.ndarray and indices.dtype.kind in "iu":
        idx: Array | None = indices
    else:
        idx = _index_array(indices)
    if idx is None:
        return "index form (not an integer array)"
    num_rows = a.shape[0]
    if num_rows == 0 and idx.size:
        return "non-empty take from an empty axis"
    # the sizes before the dearer checks (the row view takes ~0.7 us): most
    # calls this small or narrow are fallbacks, and every check adds to NumPy's time
    row_bytes = (a.size // num_rows if num_rows else math.prod(a.shape[1:])) * a.itemsize
    if row_bytes < NARROW_TAKE:
        return "narrow rows (NumPy is as fast)"
    if idx.size * row_bytes < SMALL_TAKE:
        return "small (NumPy is as fast)"
    if a.dtype.hasobject:
        return "a holds Python objects"
    if not a.flags.aligned:
        return "a is not aligned"
    why = _compiled_reason()
    if why is not None:
        return why
    table = _row_view(a)
    if table is None:
        return "rows of a are not contiguous"
    shape = idx.shape + a.shape[1:]
    if out is not None:
        if type(out) is not np.ndarray or out.dtype != a.dtype or out.shape != shape:
            return "out is not an ndarray of the result's dtype and shape"
        f = out.flags
        if not (f.c_contiguous and f.writeable and f.aligned):
            return "out is not C-contiguous, writable and aligned"
        if out.size and (np.may_share_memory(out, a) or np.may_share_memory(out, idx)):
            return "out shares memory with an input"
    flat = _flat_rows(idx, num_rows, _NEGATIVE[mode])
    if isinstance(flat, str):
        return flat
    result = np.empty(shape, dtype=a.dtype) if out is None else out
    if result.size:
        rt.kernels.gather_rows(table, flat, result.reshape(flat.size, table.shape[1]), 0)
    return result


def take(a: npt.ArrayLike, indices: npt.ArrayLike, axis: Any = None,
         out: npt.NDArray[Any] | None = None,
         mode: Literal["raise", "wrap", "clip"] = "raise") -> Any:
    """``np.take(a, indices, axis, out, mode)``: elements (rows) of ``a`` at ``indices``.

    The same result bits, exceptions and return type as ``np.take`` for
    every input.  Row gathers run on the compiled gather kernel, which copies
    rows as bytes (any dtype without Python objects: int8 and other quantized
    tables too); every other form calls ``np.take`` itself.

    Parameters
    ----------
    a : array_like of shape (T, ...)
        Row form: an ndarray, aligned, whose rows (its trailing axes) are
        contiguous; any dtype without Python objects.
    indices : array_like of integers, shape S
        An integer array, list, tuple or int.
    axis : int, optional
        Row form: 0 (or ``-a.ndim``), or None for a 1-D ``a``.
    out : ndarray of shape S + a.shape[1:], optional
        Row form: an ndarray of ``a``'s dtype, C-contiguous, writable,
        aligned, sharing no memory with the inputs.  Nothing is written when
        the call raises.
    mode : {"raise", "wrap", "clip"}
        "raise": entries in ``[-T, T)``, negative ones counting from the end;
        "wrap": every entry modulo T; "clip": clipped to ``[0, T - 1]``.

    Returns
    -------
    ndarray of shape S + a.shape[1:], or a scalar when that shape is ()
        ``out`` when given.
    """
    got = _take_rows(a, indices, axis, out, mode)
    if type(got) is not str:
        _TAKE_COUNTS[_ACCELERATED] = _TAKE_COUNTS.get(_ACCELERATED, 0) + 1
        if out is None and got.ndim == 0:
            return got[()]  # NumPy returns a scalar for a 0-d result
        return got
    _TAKE_COUNTS[got] = _TAKE_COUNTS.get(got, 0) + 1
    return _np.take(a, indices, axis=axis, out=out, mode=mode)


# --------------------------------------------------------------------------
# patch: a numpy namespace whose add.at and take are the ones above

def _numpy_attribute(name: str) -> Any:
    return getattr(np, name)


class _AddWithAt:
    """``np.add`` with ``at`` replaced by ``fastembed_ext.add_at``."""

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return np.add(*args, **kwargs)

    def at(self, a: npt.NDArray[Any], indices: Any, b: Any = _NOVALUE, /) -> None:
        add_at(a, indices, b)

    def __getattr__(self, name: str) -> Any:
        return getattr(np.add, name)

    def __eq__(self, other: object) -> bool:
        return other is self or other is np.add

    def __hash__(self) -> int:
        return hash(np.add)

    def __reduce__(self) -> Any:
        return (_numpy_attribute, ("add",))  # unpickles as np.add itself

    def __repr__(self) -> str:
        return "<ufunc 'add' (add.at by fastembed_ext)>"


class _PatchedNumpy(types.ModuleType):
    """The numpy module, except that ``add.at`` and ``take`` are fastembed_ext's."""

    def __init__(self) -> None:
        super().__init__("numpy", np.__doc__)
        self.__dict__.update(add=_AddWithAt(), take=take, __file__=np.__file__,
                             __spec__=np.__spec__, __package__=np.__package__,
                             __loader__=np.__loader__, __path__=np.__path__)

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(np, name, value)

    def __delattr__(self, name: str) -> None:
        delattr(np, name)

    def __dir__(self) -> list[str]:
        return dir(np)

    def __repr__(self) -> str:
        return "<module 'numpy' (add.at and take by fastembed_ext)>"


_NUMPY = _PatchedNumpy()


def _module(target: Any) -> types.ModuleType:
    if isinstance(target, str):
        return importlib.import_module(target)
    if isinstance(target, types.ModuleType):
        return target
    raise TypeError(f"target must be a module or a dotted module name, got "
                    f"{type(target).__name__}")


def _rebind(module: types.ModuleType, old: Any, new: Any,
            names: list[str] | None = None) -> list[str]:
    space = vars(module)
    changed = [k for k, val in list(space.items())
               if val is old and (names is None or k in names)]
    for k in changed:
        space[k] = new
    return changed


def patch(target: types.ModuleType | str) -> list[str]:
    """Route a module's ``np.add.at`` and ``np.take`` calls through ``add_at`` and ``take``.

    Every global of the module bound to the numpy module is rebound to a
    namespace that is numpy except for ``add.at`` and ``take``.  Code that
    tests ``xp is numpy``, names imported with ``from numpy import ...``,
    ``ndarray.take`` and ``numpy`` imported inside a function are not reached.

    Parameters
    ----------
    target : module or str
        The module, or its dotted name (imported if it is not yet).

    Returns
    -------
    list of str
        The globals rebound by this call (empty if the module was already patched).

    Raises
    ------
    ValueError
        If no global of the module is bound to numpy.
    """
    module = _module(target)
    changed = _rebind(module, np, _NUMPY)
    if not changed and not any(val is _NUMPY for val in vars(module).values()):
        raise ValueError(f"module {module.__name__} has no global bound to the numpy module "
                         f"(patch reaches only a module's own globals, not its submodules' "
                         f"or names imported with 'from numpy import ...')")
    return changed


def unpatch(target: types.ModuleType | str) -> list[str]:
    """Undo ``patch``: rebind the module's patched globals to numpy itself.

    Parameters
    ----------
    target : module or str

    Returns
    -------
    list of str
        The globals restored (empty if the module was not patched).
    """
    return _rebind(_module(target), _NUMPY, np)


@contextlib.contextmanager
def patched(target: types.ModuleType | str) -> Iterator[types.ModuleType]:
    """``patch(target)`` for the duration of a ``with`` block; yields the module.

    On exit only the globals this block rebound are restored, so blocks nest
    and a module patched before the block stays patched.
    """
    module = _module(target)
    changed = patch(module)
    try:
        yield module
    finally:
        _rebind(module, _NUMPY, np, changed)

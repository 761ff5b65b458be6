"""add_at and take against np.add.at and np.take, over a corpus of call forms.

Each form of the corpus is a call (arguments built from a seed, so NumPy and
fastembed_ext each get their own identical buffers) and the path it must
take: ``ACC`` (the kernels) or the reason it falls back to NumPy.  The
comparison covers everything a caller can see:

- every argument afterwards (the updated table, ``out``, and every input),
  bit for bit, so NaN payloads and -0.0 count;
- the return value: its type (a NumPy scalar for a 0-d take), dtype, shape
  and bits, and ``out`` itself when ``out`` is given;
- the exception: its type and message;
- the floating-point warnings, in order (category and message), under the
  form's ``np.errstate``.

Then hypothesis draws calls of every row form and many fallback forms, with
special values, and compares them the same way.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastembed_ext as fe
from fastembed_ext import _runtime
from fastembed_ext._workloads import edge_values, special_values

from .conftest import UINT_OF_SIZE, parallel_scatter_sizes

try:
    import ml_dtypes
    BF16: tuple[np.dtype[Any], ...] = (np.dtype(ml_dtypes.bfloat16),)
except ImportError:  # an optional extra
    BF16 = ()

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
VALUE_DTYPES = (F16, F32, F64) + BF16
ACC = "accelerated"


def numpy_add_at(a: Any, indices: Any, b: Any = fe._dropin._NOVALUE) -> None:
    # spelled as a caller spells it: CPython names the method in some errors
    # by how it was called
    if b is fe._dropin._NOVALUE:
        np.add.at(a, indices)
    else:
        np.add.at(a, indices, b)


NUMPY = {"add_at": numpy_add_at, "take": np.take}
OURS = {"add_at": fe.add_at, "take": fe.take}


@pytest.fixture(autouse=True)
def _row_forms_of_every_size(monkeypatch):
    """The corpus is small: the size thresholds (below which NumPy runs because it
    is as fast) are a speed choice, tested on their own below."""
    for name in ("SMALL_ADD_AT", "SMALL_TAKE", "NARROW_TAKE"):
        monkeypatch.setattr(fe._dropin, name, 0)


# --------------------------------------------------------------------------
# running a call both ways and comparing everything

@dataclass
class Outcome:
    args: list[Any]
    kwargs: dict[str, Any]
    ret: Any
    exc: BaseException | None
    warned: list[tuple[type, str]]


def run(fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any],
        errstate: dict[str, str]) -> Outcome:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with np.errstate(**errstate):
            try:
                ret, exc = fn(*args, **kwargs), None
            except Exception as e:  # noqa: BLE001 - compared with NumPy's
                ret, exc = None, e
    return Outcome(args, kwargs, ret, exc, [(w.category, str(w.message)) for w in caught])


def same_value(got: Any, want: Any, what: str) -> None:
    """Same type, and for arrays and NumPy scalars the same dtype, shape and bytes."""
    assert type(got) is type(want), f"{what}: {type(got).__name__}, expected {type(want).__name__}"
    if isinstance(want, (np.ndarray, np.generic)):
        g, w = np.asarray(got), np.asarray(want)
        assert g.dtype == w.dtype, f"{what}: dtype {g.dtype}, expected {w.dtype}"
        assert g.shape == w.shape, f"{what}: shape {g.shape}, expected {w.shape}"
        if w.dtype.hasobject:
            assert g.tolist() == w.tolist(), f"{what}: objects differ"
            return
        gb, wb = np.ascontiguousarray(g).tobytes(), np.ascontiguousarray(w).tobytes()
        if gb != wb and w.dtype.itemsize in UINT_OF_SIZE and w.dtype.names is None:
            u = UINT_OF_SIZE[w.dtype.itemsize]
            gu, wu = np.ascontiguousarray(g).view(u), np.ascontiguousarray(w).view(u)
            pos = np.argwhere(gu != wu)[0]
            raise AssertionError(f"{what}: {int((gu != wu).sum())} items differ; first at "
                                 f"{tuple(pos)}: got {hex(int(gu[tuple(pos)]))}, "
                                 f"expected {hex(int(wu[tuple(pos)]))}")
        assert gb == wb, f"{what}: bytes differ"
    elif isinstance(want, list):
        assert got == want, f"{what}: lists differ"


def assert_same_as_numpy(op: str, make: Callable[[np.random.Generator], tuple[list[Any], dict[str, Any]]],
                         seed: int, errstate: dict[str, str] | None = None) -> dict[str, Any]:
    """Run the call with NumPy and with fastembed_ext on identical fresh buffers,
    compare every visible effect, and return what ``patch_stats`` saw."""
    errstate = errstate or {}
    want = run(NUMPY[op], *make(np.random.default_rng(seed)), errstate)
    fe.patch_stats(reset=True)
    got = run(OURS[op], *make(np.random.default_rng(seed)), errstate)
    stats = fe.patch_stats(reset=True)[op]
    if want.exc is not None or got.exc is not None:
        assert type(got.exc) is type(want.exc), f"raised {got.exc!r}, NumPy raised {want.exc!r}"
        assert str(got.exc) == str(want.exc)
    assert got.warned == want.warned, f"warned {got.warned}, NumPy warned {want.warned}"
    same_value(got.ret, want.ret, "return value")
    if want.ret is not None and want.ret is want.kwargs.get("out"):
        assert got.ret is got.kwargs["out"], "out= was not returned"
    assert len(got.args) == len(want.args)
    for k, (g, w) in enumerate(zip(got.args, want.args)):
        same_value(g, w, f"argument {k} afterwards")
    for k in want.kwargs:
        same_value(got.kwargs[k], want.kwargs[k], f"{k} afterwards")
    assert stats["accelerated"] + stats["fallback"] == 1, stats
    return stats


# --------------------------------------------------------------------------
# values and indices

def finite(rng: np.random.Generator, dtype: np.dtype[Any], shape: tuple[int, ...]) -> Any:
    """Ordinary values with signed zeros, subnormals and exact ties among them, all finite."""
    out = np.array(rng.standard_normal(shape) * 4, dtype=np.float32).astype(dtype)
    special = special_values(dtype)
    with np.errstate(invalid="ignore"):  # signalling NaNs widen quietly
        wide = special.astype(np.float64)
    small = special[np.isfinite(wide) & (np.abs(wide) < 8)]
    pick = rng.random(shape) < 0.2
    out[pick] = small[rng.integers(0, small.size, size=int(pick.sum()))]
    return out


def rows(rng: np.random.Generator, num_rows: int, shape: tuple[int, ...],
         dtype: Any = np.int64, negative: bool = False) -> Any:
    """Indices in [0, T), or in [-T, T) with ``negative``."""
    low = -num_rows if negative else 0
    if num_rows == 0:
        return np.zeros(shape, dtype=dtype)
    return rng.integers(low, num_rows, size=shape).astype(dtype)


def readonly(a: Any) -> Any:
    a.flags.writeable = False
    return a


# --------------------------------------------------------------------------
# the corpus

Make = Callable[[np.random.Generator], tuple[list[Any], dict[str, Any]]]


@dataclass
class Form:
    id: str
    op: str
    make: Make
    path: str  # ACC, or a fragment of the fallback reason
    errstate: dict[str, str] = field(default_factory=dict)


def call(*args: Any, **kwargs: Any) -> tuple[list[Any], dict[str, Any]]:
    return list(args), kwargs


def add_at_forms() -> list[Form]:
    forms: list[Form] = []

    def f(id: str, make: Make, path: str, **errstate: str) -> None:
        forms.append(Form(id, "add_at", make, path, errstate))

    for dt in VALUE_DTYPES:
        n = dt.name
        # the row forms
        f(f"{n}-2d-int64", lambda r, dt=dt: call(finite(r, dt, (50, 8)), rows(r, 50, (40,)),
                                                 finite(r, dt, (40, 8))), ACC)
        f(f"{n}-2d-int32-negative", lambda r, dt=dt: call(
            finite(r, dt, (30, 5)), rows(r, 30, (60,), np.int32, negative=True),
            finite(r, dt, (60, 5))), ACC)
        f(f"{n}-1d-table", lambda r, dt=dt: call(finite(r, dt, (20,)), rows(r, 20, (50,), negative=True),
                                                finite(r, dt, (50,))), ACC)
        f(f"{n}-3d-table-2d-indices", lambda r, dt=dt: call(
            finite(r, dt, (9, 3, 4)), rows(r, 9, (5, 2)), finite(r, dt, (5, 2, 3, 4))), ACC)
        f(f"{n}-b-scalar-same-dtype", lambda r, dt=dt: call(
            finite(r, dt, (12, 6)), rows(r, 12, (30,)), finite(r, dt, ())[()]), ACC)
        f(f"{n}-b-one-row", lambda r, dt=dt: call(finite(r, dt, (12, 6)), rows(r, 12, (30,)),
                                                 finite(r, dt, (6,))), ACC)
        f(f"{n}-b-column", lambda r, dt=dt: call(finite(r, dt, (12, 6)), rows(r, 12, (30,)),
                                                finite(r, dt, (30, 1))), ACC)
        f(f"{n}-b-int8", lambda r, dt=dt: call(finite(r, dt, (12, 6)), rows(r, 12, (30,)),
                                              r.integers(-128, 128, (30, 6)).astype(np.int8)), ACC)
        f(f"{n}-b-bool", lambda r, dt=dt: call(finite(r, dt, (12, 6)), rows(r, 12, (30,)),
                                              r.random((30, 6)) < 0.5), ACC)
        f(f"{n}-b-python-float-exact", lambda r, dt=dt: call(finite(r, dt, (12, 6)),
                                                            rows(r, 12, (30,)), 0.5), ACC)
        f(f"{n}-b-python-int", lambda r, dt=dt: call(finite(r, dt, (12, 6)), rows(r, 12, (30,)), 3),
          ACC)
        f(f"{n}-b-float64-exact", lambda r, dt=dt: call(
            finite(r, dt, (12, 6)), rows(r, 12, (30,)),
            finite(r, dt, (30, 6)).astype(np.float64)), ACC)
        f(f"{n}-b-list", lambda r, dt=dt: call(finite(r, dt, (6, 2)), [0, 5, 5, -1],
                                              [[1.0, 2.0]] * 4), ACC)
        f(f"{n}-b-is-a-slice-of-a", lambda r, dt=dt: (lambda a: call(a, rows(r, 10, (4,)), a[2:6]))(
            finite(r, dt, (10, 3))), ACC)
        f(f"{n}-b-is-a-reversed-view-of-a", lambda r, dt=dt: (
            lambda a: call(a, np.array([1, 2, 3, 1]), a[6:2:-1]))(finite(r, dt, (10, 3))), ACC)
        f(f"{n}-b-strided", lambda r, dt=dt: call(finite(r, dt, (12, 6)), rows(r, 12, (30,)),
                                                 finite(r, dt, (30, 12))[:, ::2]), ACC)
        f(f"{n}-b-fortran", lambda r, dt=dt: call(finite(r, dt, (12, 6)), rows(r, 12, (30,)),
                                                 np.asfortranarray(finite(r, dt, (30, 6)))), ACC)
        f(f"{n}-b-read-only", lambda r, dt=dt: call(finite(r, dt, (12, 6)), rows(r, 12, (30,)),
                                                   readonly(finite(r, dt, (30, 6)))), ACC)
        f(f"{n}-duplicates", lambda r, dt=dt: call(finite(r, dt, (4, 7)), np.full(500, 2),
                                                  finite(r, dt, (500, 7))), ACC)
        f(f"{n}-more-than-8192-indices", lambda r, dt=dt: call(
            finite(r, dt, (50, 3)), rows(r, 50, (9000,)), finite(r, dt, (9000, 3))), ACC)
        f(f"{n}-wide-rows", lambda r, dt=dt: call(finite(r, dt, (6, 700)), rows(r, 6, (9,)),
                                                 finite(r, dt, (9, 700))), ACC)
        f(f"{n}-large-table-few-rows", lambda r, dt=dt: call(
            finite(r, dt, (5000, 4)), rows(r, 5000, (10,)), finite(r, dt, (10, 4))), ACC)
        f(f"{n}-empty-indices", lambda r, dt=dt: call(finite(r, dt, (5, 3)), np.zeros(0, np.int64),
                                                     finite(r, dt, (0, 3))), ACC)
        f(f"{n}-empty-rows", lambda r, dt=dt: call(finite(r, dt, (5, 0)), rows(r, 5, (4,)),
                                                  finite(r, dt, (4, 0))), ACC)
        f(f"{n}-empty-table-empty-indices", lambda r, dt=dt: call(
            finite(r, dt, (0, 3)), np.zeros(0, np.int64), 1), ACC)
        f(f"{n}-nonfinite-b-ignored", lambda r, dt=dt: call(
            edge_values(r, dt, (20, 5)), rows(r, 20, (40,)), edge_values(r, dt, (40, 5))), ACC,
          over="ignore", invalid="ignore")
        f(f"{n}-1d-nonfinite-b-ignored", lambda r, dt=dt: call(
            edge_values(r, dt, (20,)), rows(r, 20, (40,)), edge_values(r, dt, (40,))),
          "not finite", over="ignore", invalid="ignore")
        f(f"{n}-large-values-but-bounded", lambda r, dt=dt: call(
            (finite(r, dt, (8, 3)).astype(np.float32) * 0.001).astype(dt), rows(r, 8, (6,)),
            np.full((6, 3), 2.0 ** (8 if dt.itemsize == 2 else 60), dt)), ACC)
        # the same kinds of values that must go to NumPy (flags, casts)
        f(f"{n}-nan-in-b", lambda r, dt=dt: call(
            finite(r, dt, (8, 3)), rows(r, 8, (6,)),
            np.where(r.random((6, 3)) < 0.5, np.nan, 1.0).astype(dt)), "not finite")
        f(f"{n}-signalling-nan-in-a", lambda r, dt=dt: call(
            np.tile(special_values(dt)[-6:], (4, 1)), np.array([0, 1, 1, 3]), 1), "not finite")
        f(f"{n}-edge-values", lambda r, dt=dt: call(
            edge_values(r, dt, (20, 5)), rows(r, 20, (40,)), edge_values(r, dt, (40, 5))),
          "not finite")
        f(f"{n}-overflow-warns", lambda r, dt=dt: call(
            np.full((3, 2), special_values(dt)[10], dt), np.array([0, 2]),
            np.full((2, 2), special_values(dt)[10], dt)), "overflow")
        f(f"{n}-overflow-raises", lambda r, dt=dt: call(
            np.full((3, 2), special_values(dt)[10], dt), np.array([0, 2, 2]),
            np.full((3, 2), special_values(dt)[10], dt)), "overflow", over="raise")
        f(f"{n}-overflow-invalid-raises", lambda r, dt=dt: call(
            np.full((3, 2), special_values(dt)[10], dt), np.array([0, 0]),
            np.array([[1], [-1]]) * np.full((2, 2), special_values(dt)[12], dt)), "not finite",
          over="raise", invalid="raise")
        f(f"{n}-b-python-float-inexact", lambda r, dt=dt: call(
            finite(r, dt, (12, 6)), rows(r, 12, (30,)), 0.1),
          ACC if dt == F64 else "not exactly representable")
        f(f"{n}-b-float64-inexact", lambda r, dt=dt: call(
            finite(r, dt, (12, 6)), rows(r, 12, (30,)), r.standard_normal((30, 6))),
          ACC if dt == F64 else "not exactly representable")
        f(f"{n}-b-complex", lambda r, dt=dt: call(finite(r, dt, (4, 2)), [0, 1],
                                                 np.ones((2, 2), np.complex64)), "b promotes")
        f(f"{n}-b-longdouble", lambda r, dt=dt: call(finite(r, dt, (4, 2)), [0, 1],
                                                    np.ones((2, 2), np.longdouble)), "b promotes")

    # index forms, on float32
    def t32(r: np.random.Generator, shape: tuple[int, ...] = (10, 4)) -> Any:
        return finite(r, F32, shape)

    for idt in ("int8", "int16", "uint8", "uint16", "uint32", "uint64", ">i8", ">i4", "<i2"):
        f(f"index-dtype-{idt}", lambda r, idt=idt: call(
            t32(r), rows(r, 10, (12,), np.dtype(idt), negative=np.dtype(idt).kind == "i"),
            finite(r, F32, (12, 4))), ACC)
    f("index-list", lambda r: call(t32(r), [0, 9, -1, 3, 3], finite(r, F32, (5, 4))), ACC)
    f("index-nested-list", lambda r: call(t32(r), [[0, 9], [-1, 3]], finite(r, F32, (2, 2, 4))),
      ACC)
    f("index-python-int", lambda r: call(t32(r), 7, finite(r, F32, (4,))), ACC)
    f("index-negative-python-int", lambda r: call(t32(r), -3, finite(r, F32, (4,))), ACC)
    f("index-numpy-int", lambda r: call(t32(r), np.int32(2), finite(r, F32, (4,))), ACC)
    f("index-0d-array", lambda r: call(t32(r), np.array(5), finite(r, F32, (4,))), ACC)
    f("index-tuple-of-array", lambda r: call(t32(r), (rows(r, 10, (6,)),), finite(r, F32, (6, 4))),
      ACC)
    f("index-tuple-of-list", lambda r: call(t32(r), ([1, 2, 2],), finite(r, F32, (3, 4))), ACC)
    f("index-tuple-of-int", lambda r: call(t32(r), (4,), finite(r, F32, (4,))), ACC)
    f("index-non-contiguous", lambda r: call(t32(r), rows(r, 10, (12,))[::3], finite(r, F32, (4, 4))),
      ACC)
    f("index-read-only", lambda r: call(t32(r), readonly(rows(r, 10, (6,))), finite(r, F32, (6, 4))),
      ACC)
    f("index-1d-table-scalar-b", lambda r: call(finite(r, F32, (10,)), [1, 1, 2], 1.0), ACC)
    f("index-two-axes", lambda r: call(t32(r), (rows(r, 10, (5,)), rows(r, 4, (5,))),
                                       finite(r, F32, (5,))), "index form")
    f("index-tuple-of-tuple", lambda r: call(t32(r), ((1, 2),), finite(r, F32, (4,))),
      "index form")
    f("index-empty-tuple", lambda r: call(t32(r), (), 1.0), "index form")
    f("index-slice", lambda r: call(t32(r), slice(2, 5), finite(r, F32, (3, 4))), "index form")
    f("index-tuple-of-slice", lambda r: call(t32(r), (slice(None),), 1.0), "index form")
    f("index-ellipsis", lambda r: call(t32(r), Ellipsis, 1.0), "index form")
    f("index-rows-and-columns", lambda r: call(t32(r), (rows(r, 10, (3,)), slice(1, 3)), 1.0),
      "index form")
    f("index-boolean-mask", lambda r: call(t32(r), r.random(10) < 0.5, 1.0), "index form")
    f("index-boolean-list", lambda r: call(t32(r), [True, False] * 5, 1.0), "index form")
    f("index-bool-scalar", lambda r: call(t32(r), True, 1.0), "index form")
    f("index-none", lambda r: call(t32(r), None, 1.0), "index form")
    f("index-float-array", lambda r: call(t32(r), np.array([1.0, 2.0]), 1.0), "index form")
    f("index-float-list", lambda r: call(t32(r), [1.5], 1.0), "index form")
    f("index-empty-list", lambda r: call(t32(r), [], 1.0), "index form")
    f("index-ragged-list", lambda r: call(t32(r), [[1, 2], [3]], 1.0), "index form")
    f("index-object-array", lambda r: call(t32(r), np.array([1, 2], dtype=object), 1.0),
      "index form")
    f("index-huge-python-int", lambda r: call(t32(r), 2 ** 70, 1.0), "index form")
    f("index-out-of-range", lambda r: call(t32(r), [0, 10, 1], 1.0), "out of bounds")
    f("index-below-minus-T", lambda r: call(t32(r), [0, -11], 1.0), "out of bounds")
    f("index-out-of-range-int32", lambda r: call(t32(r), np.array([3, 12], np.int32), 1.0),
      "out of bounds")
    f("index-uint64-huge", lambda r: call(t32(r), np.array([1, 2 ** 64 - 1], np.uint64), 1.0),
      "intp range")
    f("index-out-of-range-empty-table", lambda r: call(t32(r, (0, 3)), [0], 1.0), "out of bounds")
    f("index-shares-memory-with-a", lambda r: (lambda buf: call(buf.view(np.float64), buf[:3],
                                                                1.0))(np.zeros(8, np.int64)),
      "share memory")

    # b forms that NumPy refuses or that are not numbers
    f("b-not-broadcastable", lambda r: call(t32(r), [1, 2], np.ones((3, 4), np.float32)),
      "broadcast")
    f("b-extra-leading-axis", lambda r: call(t32(r), [1, 2], np.ones((1, 2, 4), np.float32)),
      "broadcast")
    f("b-missing", lambda r: call(t32(r), [1, 2]), "b not given")
    f("b-none", lambda r: call(t32(r), [1, 2], None), "b is not")
    f("b-string", lambda r: call(t32(r), [1, 2], "x"), "b is not")
    f("b-numpy-string", lambda r: call(t32(r), [1, 2], np.str_("x")), "cannot be added")
    f("b-object-array", lambda r: call(t32(r), [1, 2], np.array([1.0, 2.0], dtype=object)[:, None]),
      "b promotes")
    f("b-ragged-list", lambda r: call(t32(r), [1, 2], [[1.0], [1.0, 2.0]]), "not an array")
    f("b-generator", lambda r: call(t32(r), [1, 2], (x for x in range(2))), "b is not")
    f("b-huge-python-int", lambda r: call(t32(r), [1, 2], 2 ** 70), "b promotes")

    # targets
    f("a-int64", lambda r: call(r.integers(0, 9, (10, 4)), [1, 1, 2], 3), "a dtype")
    f("a-int32-float-b", lambda r: call(r.integers(0, 9, (10, 4)).astype(np.int32), [1, 1], 1.5),
      "a dtype")
    f("a-uint8-overflowing", lambda r: call(np.full((3, 2), 250, np.uint8), [0, 0], 10), "a dtype")
    f("a-bool", lambda r: call(np.zeros((3, 2), bool), [0, 1], True), "a dtype")
    f("a-complex", lambda r: call(np.zeros((3, 2), np.complex128), [0, 1, 1], 1 + 2j), "a dtype")
    f("a-object", lambda r: call(np.array([[1, 2], [3, 4]], dtype=object), [0, 0], 1), "a dtype")
    f("a-longdouble", lambda r: call(np.zeros((3, 2), np.longdouble), [0, 1], 1.0), "a dtype")
    f("a-big-endian", lambda r: call(t32(r).astype(">f4"), [0, 1], 1.0), "a dtype")
    f("a-column-slice", lambda r: call(t32(r, (10, 8))[:, ::2], [0, 1, 1], 1.0), "C-contiguous")
    f("a-fortran", lambda r: call(np.asfortranarray(t32(r)), [0, 1, 1], 1.0), "C-contiguous")
    f("a-read-only", lambda r: call(readonly(t32(r)), [0, 1], 1.0), "writable")
    f("a-list", lambda r: call([[1.0, 2.0]], [0], 1.0), "not an ndarray")
    f("a-0d", lambda r: call(np.array(1.0), [0], 1.0), "0-d")
    f("a-subclass", lambda r: call(t32(r).view(np.recarray), [0, 1], 1.0), "not an ndarray")
    f("a-masked", lambda r: call(np.ma.masked_array(t32(r)), [0, 1], 1.0), "not an ndarray")
    return forms


def take_forms() -> list[Form]:
    forms: list[Form] = []

    def f(id: str, make: Make, path: str) -> None:
        forms.append(Form(id, "take", make, path))

    tables: dict[str, Callable[[np.random.Generator], Any]] = {
        "float32": lambda r: finite(r, F32, (20, 6)),
        "float16": lambda r: finite(r, F16, (20, 6)),
        "float64-edge": lambda r: edge_values(r, F64, (20, 6)),
        "int8": lambda r: r.integers(-128, 128, (20, 6)).astype(np.int8),
        "uint8-one-column": lambda r: r.integers(0, 256, (20, 1)).astype(np.uint8),
        "int64": lambda r: r.integers(-9, 9, (20, 6)),
        "bool": lambda r: r.random((20, 6)) < 0.5,
        "complex128": lambda r: r.standard_normal((20, 6)) + 1j * r.standard_normal((20, 6)),
        "bytes": lambda r: np.array([b"ab", b"cde", b""] * 20, dtype="S3").reshape(20, 3),
        "unicode": lambda r: np.array(["x", "yz", ""] * 20).reshape(20, 3),
        "datetime64": lambda r: r.integers(0, 10 ** 9, (20, 2)).astype("datetime64[s]"),
        "structured": lambda r: np.zeros((20, 2), dtype=[("a", "i2"), ("b", "f8")]),
        "big-endian": lambda r: finite(r, F32, (20, 6)).astype(">f4"),
        "1d": lambda r: finite(r, F64, (20,)),
        "3d": lambda r: finite(r, F32, (20, 3, 2)),
        "row-strided": lambda r: finite(r, F32, (40, 6))[::2],
        "column-slice": lambda r: finite(r, F32, (20, 9))[:, 2:8],
        "reversed": lambda r: finite(r, F32, (20, 6))[::-1],
        "1d-strided": lambda r: finite(r, F64, (40,))[::2],
        "3d-rows-strided": lambda r: finite(r, F32, (40, 3, 2))[::2],
    }
    for bf in BF16:
        tables["bfloat16"] = lambda r, bf=bf: finite(r, bf, (20, 6))
    for name, table in tables.items():
        f(f"{name}-axis0", lambda r, t=table: call(t(r), rows(r, 20, (15,), negative=True), axis=0),
          ACC)
        f(f"{name}-2d-indices", lambda r, t=table: call(t(r), rows(r, 20, (3, 4)), axis=0), ACC)
        f(f"{name}-out", lambda r, t=table: (lambda a: call(
            a, rows(r, 20, (7,), np.int32), axis=0,
            out=np.zeros((7,) + a.shape[1:], a.dtype)))(t(r)), ACC)
    # indices and modes
    t = tables["float32"]
    f("axis-minus-2", lambda r: call(t(r), rows(r, 20, (5,)), axis=-2), ACC)
    f("axis-numpy-int", lambda r: call(t(r), rows(r, 20, (5,)), axis=np.int64(0)), ACC)
    f("axis-none-1d", lambda r: call(tables["1d"](r), rows(r, 20, (5,))), ACC)
    f("index-python-int", lambda r: call(t(r), 3, axis=0), ACC)
    f("index-0d-on-1d-is-a-scalar", lambda r: call(tables["1d"](r), 3), ACC)
    f("index-0d-on-1d-out", lambda r: call(tables["1d"](r), -2, out=np.zeros((), np.float64)), ACC)
    f("index-numpy-uint", lambda r: call(t(r), np.uint16(19), axis=0), ACC)
    f("index-list", lambda r: call(t(r), [0, -1, 19], axis=0), ACC)
    f("index-tuple", lambda r: call(t(r), (0, 5, 5), axis=0), ACC)
    f("index-uint64", lambda r: call(t(r), rows(r, 20, (6,), np.uint64), axis=0), ACC)
    f("index-int16-negative", lambda r: call(t(r), rows(r, 20, (6,), np.int16, True), axis=0), ACC)
    f("index-big-endian", lambda r: call(t(r), rows(r, 20, (6,), ">i8", True), axis=0), ACC)
    f("index-non-contiguous", lambda r: call(t(r), rows(r, 20, (12,))[::2], axis=0), ACC)
    f("index-empty", lambda r: call(t(r), np.zeros(0, np.int32), axis=0), ACC)
    f("index-empty-2d", lambda r: call(t(r), np.zeros((3, 0), np.int64), axis=0), ACC)
    f("empty-table-empty-index", lambda r: call(np.zeros((0, 4)), np.zeros(0, np.int64), axis=0,
                                                mode="clip"), ACC)
    f("mode-wrap", lambda r: call(t(r), np.array([-45, -21, -1, 20, 39, 400]), axis=0, mode="wrap"),
      ACC)
    f("mode-clip", lambda r: call(t(r), np.array([-45, -1, 0, 19, 20, 400]), axis=0, mode="clip"),
      ACC)
    f("mode-clip-int32-out", lambda r: call(t(r), np.array([-5, 30], np.int32), axis=0,
                                            mode="clip", out=np.ones((2, 6), np.float32)), ACC)
    f("mode-wrap-uint8", lambda r: call(t(r), np.array([250, 3], np.uint8), axis=0, mode="wrap"),
      ACC)
    f("mode-raise-negative", lambda r: call(t(r), [-20, -1], axis=0, mode="raise"), ACC)
    # forms that go to NumPy
    f("index-out-of-range", lambda r: call(t(r), [3, 20], axis=0), "out of bounds")
    f("index-out-of-range-out-untouched", lambda r: call(
        t(r), [3, -21], axis=0, out=np.full((2, 6), 7, np.float32)), "out of bounds")
    f("index-uint64-huge", lambda r: call(t(r), np.array([2 ** 64 - 1], np.uint64), axis=0),
      "intp range")
    f("index-float", lambda r: call(t(r), [1.0], axis=0), "index form")
    f("index-bool", lambda r: call(t(r), np.array([True, False]), axis=0), "index form")
    f("index-bool-list", lambda r: call(t(r), [True, False], axis=0), "index form")
    f("index-empty-list", lambda r: call(t(r), [], axis=0), "index form")
    f("index-none", lambda r: call(t(r), None, axis=0), "index form")
    f("index-slice", lambda r: call(t(r), slice(1, 3), axis=0), "index form")
    f("empty-table-wrap", lambda r: call(np.zeros((0, 4)), [0], axis=0, mode="wrap"), "empty axis")
    f("empty-table-clip", lambda r: call(np.zeros((0, 4)), [1, 2], axis=0, mode="clip"),
      "empty axis")
    f("empty-table-raise", lambda r: call(np.zeros((0, 4)), [0], axis=0), "empty axis")
    f("axis-1", lambda r: call(t(r), [0, 5], axis=1), "axis is not 0")
    f("axis-2-out-of-range", lambda r: call(t(r), [0], axis=2), "axis is not 0")
    f("axis-float", lambda r: call(t(r), [0], axis=0.0), "axis is not an integer")
    f("axis-none-2d", lambda r: call(t(r), [0, 7, 119]), "flattened")
    f("mode-prefix", lambda r: call(t(r), [0], axis=0, mode="clipper"), "mode")
    f("mode-int", lambda r: call(t(r), [0], axis=0, mode=1), "mode")
    f("mode-bad", lambda r: call(t(r), [0], axis=0, mode="x"), "mode")
    f("out-other-dtype", lambda r: call(t(r), [0, 1], axis=0, out=np.zeros((2, 6))), "out is not")
    f("out-wrong-shape", lambda r: call(t(r), [0, 1], axis=0, out=np.zeros((3, 6), np.float32)),
      "out is not")
    f("out-strided", lambda r: call(t(r), [0, 1], axis=0,
                                    out=np.zeros((2, 12), np.float32)[:, ::2]), "out is not")
    f("out-read-only", lambda r: call(t(r), [0, 1], axis=0,
                                      out=readonly(np.zeros((2, 6), np.float32))), "out is not")
    f("out-list", lambda r: call(t(r), [0, 1], axis=0, out=[0, 0]), "out is not")
    f("out-is-the-table", lambda r: (lambda a: call(a, [3, 1, 0, 2], axis=0, out=a[:4]))(t(r)),
      "shares memory")
    f("out-overlaps-the-table-raise", lambda r: (lambda a: call(a, [3, 1], axis=0, out=a[1:3],
                                                                mode="raise"))(t(r)),
      "shares memory")
    f("object-table", lambda r: call(np.array([[1, "a"], [None, 2.5]], dtype=object), [1, 0],
                                     axis=0), "objects")
    f("columns-strided", lambda r: call(finite(r, F32, (20, 12))[:, ::2], [1, 0], axis=0),
      "not contiguous")
    f("3d-inner-strided", lambda r: call(finite(r, F32, (20, 3, 4))[:, :, ::2], [1, 0], axis=0),
      "not contiguous")
    f("table-list", lambda r: call([[1, 2], [3, 4]], [1], axis=0), "not an ndarray")
    f("table-scalar", lambda r: call(np.float64(2.0), [0]), "not an ndarray")
    f("table-0d", lambda r: call(np.array(2.0), [0]), "0-d")
    f("table-subclass", lambda r: call(np.ma.masked_array(t(r)), [1], axis=0), "not an ndarray")
    f("table-unaligned", lambda r: call(
        np.frombuffer(finite(r, F64, (41,)).tobytes(), np.float64, 40, 1).reshape(8, 5), [1, 0],
        axis=0), "aligned")
    return forms


CORPUS = add_at_forms() + take_forms()


def _check_path(form: Form, stats: dict[str, Any]) -> None:
    if form.path == ACC:
        assert stats["accelerated"] == 1, f"expected the kernels, went to NumPy: {stats['reasons']}"
    else:
        assert stats["fallback"] == 1, f"expected NumPy ({form.path}), ran on the kernels"
        (reason,) = stats["reasons"]
        assert form.path in reason, f"fell back because {reason!r}, expected {form.path!r}"


@pytest.mark.parametrize("form", CORPUS, ids=lambda f: f"{f.op}-{f.id}")
def test_every_form_gives_numpys_bits_errors_and_warnings_and_takes_its_path(form):
    stats = assert_same_as_numpy(form.op, form.make, seed=len(form.id), errstate=form.errstate)
    _check_path(form, stats)


def test_the_corpus_holds_every_kind_of_form():
    # a corpus of only fallbacks (or only accelerated forms) would prove little
    for op in ("add_at", "take"):
        paths = [f.path for f in CORPUS if f.op == op]
        assert paths.count(ACC) >= 30 and len(paths) - paths.count(ACC) >= 25, op


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", VALUE_DTYPES, ids=str)
def test_row_forms_above_the_thread_thresholds_are_numpys_bits_for_any_thread_count(dtype, threads):
    fe.set_num_threads(threads)
    num_rows, batch, d = parallel_scatter_sizes(dtype)

    def make(r):
        return call(finite(r, dtype, (num_rows, d)), rows(r, num_rows, (batch,), negative=True),
                    finite(r, dtype, (batch, d)))

    def make_take(r):
        return call(finite(r, dtype, (num_rows, d)), rows(r, num_rows, (batch,), negative=True),
                    axis=0)

    assert assert_same_as_numpy("add_at", make, seed=threads)["accelerated"] == 1
    assert assert_same_as_numpy("take", make_take, seed=threads)["accelerated"] == 1


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("where", ["b", "a"])
@pytest.mark.parametrize("special", [np.nan, np.inf, None], ids=["nan", "inf", "finite"])
def test_large_calls_read_every_chunk_of_their_values_for_the_flag_bound(dtype, where, special):
    # b and a larger than a few chunks of the magnitude reduction, with one
    # special value in the last chunk: it must send the call to NumPy (which warns)
    chunk = fe._dropin._CHUNK
    num_rows, d = 4 * chunk // 8 + 3, 8
    batch = num_rows

    def make(r):
        a = finite(r, dtype, (num_rows, d))
        b = finite(r, dtype, (batch, d))
        if special is not None:
            (b if where == "b" else a)[-2, 5] = special
        return call(a, rows(r, num_rows, (batch,)), b)

    stats = assert_same_as_numpy("add_at", make, seed=3)
    if special is None:
        assert stats["accelerated"] == 1
    else:
        assert stats["reasons"] == {"values could overflow or are not finite": 1}


def test_calls_below_the_size_thresholds_go_to_numpy_and_above_to_the_kernels(monkeypatch):
    monkeypatch.undo()
    small = fe._dropin.SMALL_ADD_AT
    assert small > 0 and fe._dropin.SMALL_TAKE > 0 and fe._dropin.NARROW_TAKE > 0

    def make_add(n):
        return lambda r: call(finite(r, F32, (50, 8)), rows(r, 50, (n,)), finite(r, F32, (n, 8)))

    n = small // 8
    assert assert_same_as_numpy("add_at", make_add(n - 1), 0)["reasons"] == {
        "small (NumPy is as fast)": 1}
    assert assert_same_as_numpy("add_at", make_add(n), 0)["accelerated"] == 1
    d = fe._dropin.NARROW_TAKE // 4
    n = fe._dropin.SMALL_TAKE // fe._dropin.NARROW_TAKE

    def make_take(n, d):
        return lambda r: call(finite(r, F32, (50, d)), rows(r, 50, (n,)), axis=0)

    assert assert_same_as_numpy("take", make_take(n, d - 1), 0)["reasons"] == {
        "narrow rows (NumPy is as fast)": 1}
    assert assert_same_as_numpy("take", make_take(n - 1, d), 0)["reasons"] == {
        "small (NumPy is as fast)": 1}
    assert assert_same_as_numpy("take", make_take(n, d), 0)["accelerated"] == 1


def test_a_numpy_backend_in_the_environment_sends_every_call_to_numpy(monkeypatch):
    monkeypatch.setattr(_runtime, "forced_backend", "numpy")
    stats = assert_same_as_numpy("add_at", lambda r: call(finite(r, F32, (5, 2)), [1, 1], 1.0), 0)
    assert stats["reasons"] == {"FASTEMBED_EXT_BACKEND=numpy": 1}
    stats = assert_same_as_numpy("take", lambda r: call(finite(r, F32, (5, 2)), [1, 1], axis=0), 0)
    assert stats["reasons"] == {"FASTEMBED_EXT_BACKEND=numpy": 1}


def test_a_bad_environment_value_sends_calls_to_numpy_and_says_so(monkeypatch):
    monkeypatch.setattr(_runtime, "threads_error", "FASTEMBED_EXT_NUM_THREADS must be ...")
    stats = assert_same_as_numpy("add_at", lambda r: call(finite(r, F32, (5, 2)), [1, 1], 1.0), 0)
    assert list(stats["reasons"]) == ["bad FASTEMBED_EXT_* environment value"]


def test_a_missing_extension_sends_calls_to_numpy(monkeypatch):
    monkeypatch.setattr(_runtime, "kernels", None)
    stats = assert_same_as_numpy("take", lambda r: call(finite(r, F32, (5, 2)), [1, 1], axis=0), 0)
    assert stats["reasons"] == {"no compiled extension": 1}


def test_errstate_call_mode_calls_the_handler_as_numpy_does():
    seen: list[tuple[str, int]] = []
    dt = F32

    def make(r):
        big = special_values(dt)[10]
        return call(np.full((3, 2), big, dt), np.array([0, 0]), np.full((2, 2), big, dt))

    old = np.seterrcall(lambda kind, flag: seen.append((kind, flag)))
    try:
        stats = assert_same_as_numpy("add_at", make, 0, {"over": "call"})
    finally:
        np.seterrcall(old)
    assert stats["fallback"] == 1
    assert len(seen) == 2 and seen[0] == seen[1], seen  # once by NumPy, once by the fallback


# --------------------------------------------------------------------------
# properties

@st.composite
def add_at_calls(draw):
    """A random np.add.at call: mostly row forms, with every index and b form,
    special values, and the flag settings that decide the path."""
    dt = draw(st.sampled_from(VALUE_DTYPES))
    num_rows = draw(st.integers(0, 12))
    trailing = draw(st.sampled_from([(), (1,), (3,), (17,), (2, 3)]))
    idx_shape = draw(st.sampled_from([(), (0,), (1,), (7,), (40,), (3, 4)]))
    if num_rows == 0:
        idx_shape = (0,)
    idx_dtype = np.dtype(draw(st.sampled_from(["int64", "int32", "int16", "uint8", "uint32"])))
    negative = idx_dtype.kind == "i" and draw(st.booleans())
    errstate = draw(st.sampled_from([{}, {"over": "ignore", "invalid": "ignore"},
                                     {"over": "raise", "invalid": "raise"}]))
    index_form = draw(st.sampled_from(["array", "list", "tuple", "strided"]))
    values = draw(st.sampled_from(["finite", "edge", "big"]))
    b_form = draw(st.sampled_from(["full", "row", "scalar", "lower", "float64", "python", "alias",
                                   "column"]))
    out_of_range = draw(st.integers(0, 9)) == 0
    if out_of_range:
        # Plain finite values of a's dtype: when np.add.at raises its IndexError
        # after casting b has set a floating-point flag, NumPy 2.4 then warns
        # with the error pending and fails inside array_dealloc (an
        # unraisable SystemError, in fastembed_ext's fallback and NumPy alike)
        values, b_form = "finite", "full"
    seed = draw(st.integers(0, 2 ** 32 - 1))

    def make(r):
        shape = (num_rows,) + trailing
        if values == "finite":
            a = finite(r, dt, shape)
        elif values == "edge":
            a = edge_values(r, dt, shape)
        else:
            a = np.full(shape, special_values(dt)[11], dt)
        idx = rows(r, num_rows, idx_shape, idx_dtype, negative)
        if out_of_range and idx.size:
            idx.reshape(-1)[-1] = num_rows + (idx_dtype.kind == "u")
        target = idx.shape + trailing
        if b_form == "full":
            b = edge_values(r, dt, target) if values == "edge" else finite(r, dt, target)
        elif b_form == "row":
            b = finite(r, dt, trailing)
        elif b_form == "column":
            b = finite(r, dt, idx.shape + (1,) * len(trailing))
        elif b_form == "scalar":
            b = finite(r, dt, ())[()]
        elif b_form == "lower":
            b = r.integers(-100, 100, target).astype(np.int8)
        elif b_form == "float64":
            b = finite(r, dt, target).astype(np.float64)
            if r.random() < 0.5:
                b += r.standard_normal(target) * 1e-3
        elif b_form == "python":
            b = float(r.integers(-3, 4)) if r.random() < 0.5 else float(r.standard_normal())
        else:  # alias: b is a view of a, as wide as the update
            b = a.reshape(-1)[: int(np.prod(target))].reshape(target) if a.size >= np.prod(
                target) else finite(r, dt, target)
        if index_form == "list":
            idx = idx.tolist()
        elif index_form == "tuple":
            idx = (idx,)
        elif index_form == "strided" and idx.ndim == 1:
            idx = np.repeat(idx, 2)[::2]
        return call(a, idx, b)

    return make, errstate, seed


@given(add_at_calls())
def test_property_add_at_is_np_add_at(drawn):
    make, errstate, seed = drawn
    assert_same_as_numpy("add_at", make, seed, errstate)


@st.composite
def take_calls(draw):
    dtype = np.dtype(draw(st.sampled_from(["float32", "float16", "float64", "int8", "uint16",
                                           "complex64", "S2", ">i4", "bool"])))
    num_rows = draw(st.integers(1, 12)) if draw(st.integers(0, 9)) else 0
    trailing = draw(st.sampled_from([(), (1,), (5,), (2, 3)]))
    idx_shape = draw(st.sampled_from([(), (0,), (6,), (2, 5)]))
    mode = draw(st.sampled_from(["raise", "wrap", "clip"]))
    span = draw(st.sampled_from([1, 2, 5]))  # indices in [-span T, span T)
    index_form = draw(st.sampled_from(["array", "list", "int32"]))
    layout = draw(st.sampled_from(["c", "row-strided", "reversed", "column-strided"]))
    use_out = draw(st.booleans())
    axis = draw(st.sampled_from([0, -1 - len(trailing), None]))
    seed = draw(st.integers(0, 2 ** 32 - 1))

    def make(r):
        shape = (num_rows,) + trailing
        raw = r.integers(0, 256, size=(2 * num_rows,) + trailing + (dtype.itemsize,),
                         dtype=np.uint8)
        if dtype == np.bool_:
            raw &= 1
        base = np.ascontiguousarray(raw).view(dtype)[..., 0]
        a = base[::2] if layout == "row-strided" else base[:num_rows]
        if layout == "reversed":
            a = a[::-1]
        if layout == "column-strided" and trailing:
            a = np.ascontiguousarray(np.stack([a, a], axis=-1))[..., 0]
        assert a.shape == shape
        if num_rows:
            idx = r.integers(-span * num_rows, span * num_rows, size=idx_shape)
        else:
            idx = r.integers(-1, 2, size=idx_shape) if r.random() < 0.3 else np.zeros(idx_shape, int)
        if index_form == "list" and idx.ndim:
            idx = idx.tolist()
        elif index_form == "int32":
            idx = idx.astype(np.int32)
        kwargs: dict[str, Any] = {"axis": axis, "mode": mode}
        if use_out:
            out_shape = np.shape(idx) + (trailing if axis is not None else ())
            kwargs["out"] = np.zeros(out_shape, dtype)
        return call(a, idx, **kwargs)

    return make, seed


@given(take_calls())
def test_property_take_is_np_take(drawn):
    make, seed = drawn
    assert_same_as_numpy("take", make, seed)

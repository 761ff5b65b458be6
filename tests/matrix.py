"""The case matrix: every public operation, described once, for every concern.

Each ``Op`` knows how to build a valid call of its operation for a shape case,
a value dtype and an index dtype (``make``), which of the call's arrays it
writes in place, and which bad inputs it must refuse.  The concern files
(test_matrix_*.py) apply themselves to every entry of ``OPS``:

- bits: the compiled path equals the NumPy reference (``backend="numpy"``,
  which calls ``_reference`` once) and the naive twin kernels, for thread
  counts 1, 2, 3 and 8, on integer views;
- errors: every bad input raises, naming the argument, and every buffer of
  the call is byte-identical afterwards; a failed scratch allocation is a
  MemoryError that writes nothing;
- inputs: inputs are never written, and unusual layouts give the bits of
  plain arrays; hypothesis properties and the bounded fuzz draw from here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

import fastembed_ext as fe
from fastembed_ext._workloads import edge_values

from .conftest import EDGE_CASES, EdgeCase, make_indices

try:
    import ml_dtypes
    BFLOAT16: tuple[np.dtype[Any], ...] = (np.dtype(ml_dtypes.bfloat16),)
except ImportError:  # an optional extra
    BFLOAT16 = ()

VALUE_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)) + BFLOAT16
INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))
THREADS = (1, 2, 3, 8)


@dataclass
class Call:
    """One call of an operation: ``fn(*args, **kwargs)``.

    ``written`` names the arguments (positions or keywords) the call writes
    in place; every other array argument is an input it must not write.
    """
    fn: Callable[..., Any]
    args: list[Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    written: tuple[Any, ...] = ()

    def fresh(self) -> Call:
        """The same call with its written buffers copied, so that it can run again."""
        c = Call(self.fn, list(self.args), dict(self.kwargs), self.written)
        for key in self.written:
            where = c.args if isinstance(key, int) else c.kwargs
            if where[key] is not None:
                where[key] = where[key].copy()
        return c

    def arrays(self) -> dict[str, Any]:
        """Every array of the call, by argument name or position."""
        found = {f"arg{i}": a for i, a in enumerate(self.args) if isinstance(a, np.ndarray)}
        found.update({k: a for k, a in self.kwargs.items() if isinstance(a, np.ndarray)})
        return found

    def inputs(self) -> dict[str, Any]:
        written = {f"arg{k}" if isinstance(k, int) else k for k in self.written}
        return {k: a for k, a in self.arrays().items() if k not in written}

    def run(self, **dispatch: Any) -> list[np.ndarray[Any, Any]]:
        """Run on a fresh copy: the results, then every written buffer, as arrays.

        ``dispatch`` (backend, num_threads) gives way to the call's own keywords.
        """
        c = self.fresh()
        ret = c.fn(*c.args, **{**dispatch, **c.kwargs})
        out = [np.asarray(r) for r in (ret if isinstance(ret, tuple) else (ret,)) if r is not None]
        for key in c.written:
            buf = c.args[key] if isinstance(key, int) else c.kwargs[key]
            if buf is not None:
                out.append(buf)
        return out


@dataclass
class Op:
    """A public operation (or one variant of its options)."""
    name: str
    make: Callable[[np.random.Generator, EdgeCase, np.dtype[Any], np.dtype[Any]], Call]
    # (id, mutate(call) -> call, exception, regex): bad inputs this operation refuses
    bad: list[tuple[str, Callable[[Call], Call], type, str]] = field(default_factory=list)
    allocates: bool = False  # takes scratch memory in the kernels (which can fail)


def _values(rng: np.random.Generator, dtype: np.dtype[Any], shape: tuple[int, ...]) -> Any:
    return edge_values(rng, dtype, shape)


def _finite(rng: np.random.Generator, dtype: np.dtype[Any], shape: tuple[int, ...]) -> Any:
    return (rng.standard_normal(shape) * 2).astype(dtype)


def _padding(rng: np.random.Generator, num_rows: int) -> int | None:
    return int(rng.integers(0, num_rows)) if num_rows else None


def _bags(rng: np.random.Generator, case: EdgeCase,
          idx: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None]:
    """Bags for a case: 2-D indices are fixed-length bags; anything else is cut
    into bags (some empty) by offsets."""
    if idx.ndim == 2:
        return idx, None
    flat = idx.reshape(-1)
    n = flat.shape[0]
    num_bags = max(1, n // 3)
    offsets = np.sort(rng.integers(0, n + 1, num_bags))
    offsets[0] = 0
    return flat, offsets.astype(idx.dtype)


# --------------------------------------------------------------------------
# the operations

def _gather(out: bool) -> Callable[..., Call]:
    def make(rng, case, dtype, index_dtype):  # type: ignore[no-untyped-def]
        w = _values(rng, dtype, (case.num_rows, case.dim))
        idx = make_indices(rng, case.num_rows, case.index_shape, index_dtype, case.pattern)
        if not out:
            return Call(fe.gather, [w, idx])
        dest = np.full(case.index_shape + (case.dim,), 3, dtype=dtype)
        return Call(fe.gather, [w, idx], {"out": dest}, written=("out",))
    return make


def _scatter_add(padding: bool) -> Callable[..., Call]:
    def make(rng, case, dtype, index_dtype):  # type: ignore[no-untyped-def]
        gw = _values(rng, dtype, (case.num_rows, case.dim))
        idx = make_indices(rng, case.num_rows, case.index_shape, index_dtype, case.pattern)
        g = _values(rng, dtype, case.index_shape + (case.dim,))
        kw = {"padding_idx": _padding(rng, case.num_rows)} if padding else {}
        return Call(fe.scatter_add, [gw, idx, g], kw, written=(0,))
    return make


def _embedding_backward(padding: bool, scale: bool) -> Callable[..., Call]:
    def make(rng, case, dtype, index_dtype):  # type: ignore[no-untyped-def]
        idx = make_indices(rng, case.num_rows, case.index_shape, index_dtype, case.pattern)
        g = _values(rng, dtype, case.index_shape + (case.dim,))
        kw: dict[str, Any] = {"scale_grad_by_freq": scale}
        if padding:
            kw["padding_idx"] = _padding(rng, case.num_rows)
        return Call(fe.embedding_backward, [g, idx, case.num_rows], kw)
    return make


def _embedding_bag(mode: str, psw: bool = False, padding: bool = False,
                   out: bool = False) -> Callable[..., Call]:
    def make(rng, case, dtype, index_dtype):  # type: ignore[no-untyped-def]
        w = _values(rng, dtype, (case.num_rows, case.dim))
        idx = make_indices(rng, case.num_rows, case.index_shape, index_dtype, case.pattern)
        idx, offsets = _bags(rng, case, idx)
        kw: dict[str, Any] = {"mode": mode}
        if psw:
            kw["per_sample_weights"] = _values(rng, dtype, idx.shape)
        if padding:
            kw["padding_idx"] = _padding(rng, case.num_rows)
        written: tuple[Any, ...] = ()
        if out:
            num_bags = idx.shape[0] if offsets is None else offsets.shape[0]
            kw["out"] = np.full((num_bags, case.dim), 5, dtype=dtype)
            written = ("out",)
        return Call(fe.embedding_bag, [w, idx, offsets], kw, written=written)
    return make


def _embedding_bag_backward(mode: str, psw: bool = False, padding: bool = False,
                            accumulate: bool = False) -> Callable[..., Call]:
    def make(rng, case, dtype, index_dtype):  # type: ignore[no-untyped-def]
        idx = make_indices(rng, case.num_rows, case.index_shape, index_dtype, case.pattern)
        idx, offsets = _bags(rng, case, idx)
        num_bags = idx.shape[0] if offsets is None else offsets.shape[0]
        g = _values(rng, dtype, (num_bags, case.dim))
        kw: dict[str, Any] = {"mode": mode}
        if padding:
            kw["padding_idx"] = _padding(rng, case.num_rows)
        if psw:
            kw["per_sample_weights"] = _values(rng, dtype, idx.shape)
            kw["weight"] = _values(rng, dtype, (case.num_rows, case.dim))
        if mode == "max":
            w = _values(rng, dtype, (case.num_rows, case.dim))
            _, kw["max_indices"] = fe.embedding_bag(w, idx, offsets, mode="max",
                                                    padding_idx=kw.get("padding_idx"),
                                                    backend="numpy")
        written: tuple[Any, ...] = ()
        if accumulate:
            kw["grad_weight"] = _values(rng, dtype, (case.num_rows, case.dim))
            written = ("grad_weight",)
        return Call(fe.embedding_bag_backward, [g, idx, offsets, case.num_rows], kw,
                    written=written)
    return make


def _renorm(norm_type: float) -> Callable[..., Call]:
    def make(rng, case, dtype, index_dtype):  # type: ignore[no-untyped-def]
        w = _values(rng, dtype, (case.num_rows, case.dim))
        # some rows far above the norm, some below, some with specials
        w[: case.num_rows // 2] = _finite(rng, dtype, (case.num_rows // 2, case.dim))
        idx = make_indices(rng, case.num_rows, case.index_shape, index_dtype, case.pattern)
        return Call(fe.renorm_, [w, idx, 1.5, norm_type], written=(0,))
    return make


def _coalesce(padding: bool, scale: bool) -> Callable[..., Call]:
    def make(rng, case, dtype, index_dtype):  # type: ignore[no-untyped-def]
        idx = make_indices(rng, max(case.num_rows, 1), case.index_shape, index_dtype, case.pattern)
        g = _values(rng, dtype, case.index_shape + (case.dim,))
        kw: dict[str, Any] = {"scale_grad_by_freq": scale}
        if padding and idx.size:
            kw["padding_idx"] = int(idx.reshape(-1)[0])
        return Call(fe.coalesce, [idx, g], kw)
    return make


def _optimizer(kind: str, weight_decay: float, padding: bool) -> Callable[..., Call]:
    def make(rng, case, dtype, index_dtype):  # type: ignore[no-untyped-def]
        w = _values(rng, dtype, (case.num_rows, case.dim))
        idx = make_indices(rng, case.num_rows, case.index_shape, index_dtype, case.pattern)
        g = _values(rng, dtype, case.index_shape + (case.dim,))
        kw: dict[str, Any] = {"lr": 0.05, "weight_decay": weight_decay}
        if padding:
            kw["padding_idx"] = _padding(rng, case.num_rows)
        if kind == "sgd":
            return Call(fe.sgd_step, [w, idx, g], kw, written=(0,))
        state_dtype = np.float64 if dtype == np.float64 else np.float32
        shape = (case.num_rows,) if kind == "rowwise_adagrad" else (case.num_rows, case.dim)
        state = np.abs(rng.standard_normal(shape)).astype(state_dtype)
        fn = fe.adagrad_step if kind == "adagrad" else fe.rowwise_adagrad_step
        return Call(fn, [w, state, idx, g], kw, written=(0, 1))
    return make


# --------------------------------------------------------------------------
# bad inputs: (id, mutate, exception, regex).  A mutation returns a new Call.

def _with(call: Call, key: Any, value: Any) -> Call:
    c = Call(call.fn, list(call.args), dict(call.kwargs), call.written)
    if isinstance(key, int):
        c.args[key] = value
    else:
        c.kwargs[key] = value
    return c


def _get(call: Call, key: Any) -> Any:
    return call.args[key] if isinstance(key, int) else call.kwargs[key]


def _bad_index(call: Call, key: Any, value: int) -> Call:
    idx = np.array(_get(call, key), copy=True)
    if idx.size == 0:
        idx = np.zeros(1 if idx.ndim < 2 else (1,) * idx.ndim, dtype=idx.dtype)
    idx.reshape(-1)[-1] = value
    return _with(call, key, idx)


def _readonly(a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    a = a.copy()
    a.flags.writeable = False
    return a


def _big_endian(a: Any) -> np.ndarray[Any, Any]:
    with np.errstate(invalid="ignore"):  # signalling NaNs widen quietly
        return np.asarray(a).astype(">f8")


def noncontiguous(a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The values of ``a`` in a view whose last axis has twice the stride."""
    return np.stack([a, a], axis=-1)[..., 0]


def index_cases(key: Any, num_rows_of: Callable[[Call], int],
                table: str) -> list[tuple[str, Callable[[Call], Call], type, str]]:
    return [
        ("index_equal_to_T", lambda c: _bad_index(c, key, num_rows_of(c)), IndexError,
         rf"indices\[.*\] = \d+ is out of range for {table} with \d+ rows"),
        ("negative_index", lambda c: _bad_index(c, key, -1), IndexError,
         r"indices\[.*\] = -1 is out of range.*negative"),
        ("float_indices", lambda c: _with(c, key, np.asarray(_get(c, key)).astype(np.float64)),
         TypeError, r"indices must have an integer dtype, got float64"),
    ]


def common_cases() -> list[tuple[str, Callable[[Call], Call], type, str]]:
    return [
        ("num_threads_zero", lambda c: _with(c, "num_threads", 0), ValueError,
         r"num_threads must be >= 1, got 0"),
        ("num_threads_float", lambda c: _with(c, "num_threads", 1.5), TypeError,
         r"num_threads must be a positive integer or None"),
        ("bad_backend", lambda c: _with(c, "backend", "fortran"), ValueError,
         r"backend must be one of 'auto', 'cython', 'numpy', got 'fortran'"),
    ]


def dest_cases(key: Any, name: str) -> list[tuple[str, Callable[[Call], Call], type, str]]:
    return [
        (f"{name}_read_only", lambda c: _with(c, key, _readonly(_get(c, key))), ValueError,
         rf"{name} must be writable, got a read-only array"),
        (f"{name}_strided", lambda c: _with(c, key, noncontiguous(_get(c, key))), ValueError,
         rf"{name} must be C-contiguous"),
        (f"{name}_wrong_dtype", lambda c: _with(c, key, _get(c, key).astype(np.complex64)),
         TypeError, rf"{name} must have"),
        (f"{name}_list", lambda c: _with(c, key, _get(c, key).tolist()), TypeError,
         rf"{name} must be a NumPy ndarray"),
    ]


def value_cases(key: Any, name: str) -> list[tuple[str, Callable[[Call], Call], type, str]]:
    return [
        (f"{name}_int", lambda c: _with(c, key, np.zeros(np.shape(_get(c, key)), np.int32)),
         TypeError, rf"{name} must have (the )?dtype"),
        (f"{name}_big_endian", lambda c: _with(c, key, _big_endian(_get(c, key))),
         TypeError, rf"{name} must have (the )?dtype.*"),
    ]


def _rows(pos: int) -> Callable[[Call], int]:
    return lambda c: int(np.asarray(_get(c, pos)).shape[0])


def _num(pos: int) -> Callable[[Call], int]:
    return lambda c: int(_get(c, pos))


OPS: list[Op] = [
    Op("gather", _gather(out=False),
       index_cases(1, _rows(0), "weight") + value_cases(0, "weight") + common_cases()),
    Op("gather_out", _gather(out=True),
       index_cases(1, _rows(0), "weight") + dest_cases("out", "out") + common_cases()),
    Op("scatter_add", _scatter_add(padding=False),
       index_cases(1, _rows(0), "grad_weight") + dest_cases(0, "grad_weight")
       + value_cases(2, "grad") + common_cases()),
    Op("scatter_add_padding", _scatter_add(padding=True),
       index_cases(1, _rows(0), "grad_weight") + common_cases()),
    Op("embedding_backward", _embedding_backward(padding=False, scale=False),
       index_cases(1, _num(2), "a table") + value_cases(0, "grad") + common_cases()),
    Op("embedding_backward_padding_scale", _embedding_backward(padding=True, scale=True),
       index_cases(1, _num(2), "a table") + common_cases(), allocates=True),
    Op("embedding_bag_sum", _embedding_bag("sum"),
       index_cases(1, _rows(0), "weight") + value_cases(0, "weight") + common_cases()),
    Op("embedding_bag_mean_padding", _embedding_bag("mean", padding=True),
       index_cases(1, _rows(0), "weight") + common_cases()),
    Op("embedding_bag_max_out", _embedding_bag("max", out=True),
       index_cases(1, _rows(0), "weight") + dest_cases("out", "out") + common_cases()),
    Op("embedding_bag_sum_psw", _embedding_bag("sum", psw=True, padding=True),
       index_cases(1, _rows(0), "weight") + common_cases()),
    Op("embedding_bag_backward_sum", _embedding_bag_backward("sum"),
       index_cases(1, _num(3), "grad_weight") + value_cases(0, "grad") + common_cases(),
       allocates=True),
    Op("embedding_bag_backward_mean_padding", _embedding_bag_backward("mean", padding=True),
       index_cases(1, _num(3), "grad_weight") + common_cases(), allocates=True),
    Op("embedding_bag_backward_max", _embedding_bag_backward("max"),
       index_cases(1, _num(3), "grad_weight") + common_cases()),
    Op("embedding_bag_backward_psw_into", _embedding_bag_backward("sum", psw=True, accumulate=True),
       index_cases(1, _num(3), "grad_weight") + dest_cases("grad_weight", "grad_weight")
       + common_cases(), allocates=True),
    Op("renorm_2", _renorm(2.0),
       index_cases(1, _rows(0), "weight") + dest_cases(0, "weight") + common_cases()),
    Op("renorm_1", _renorm(1.0), index_cases(1, _rows(0), "weight") + common_cases()),
    Op("renorm_inf", _renorm(np.inf), common_cases()),
    Op("renorm_3", _renorm(3.0), common_cases()),
    Op("coalesce", _coalesce(padding=False, scale=False),
       value_cases(1, "grad") + common_cases()),
    Op("coalesce_padding_scale", _coalesce(padding=True, scale=True), common_cases(),
       allocates=True),
    Op("sgd_step", _optimizer("sgd", 0.0, padding=False),
       index_cases(1, _rows(0), "weight") + dest_cases(0, "weight") + common_cases()),
    Op("sgd_step_decay_padding", _optimizer("sgd", 0.01, padding=True), common_cases()),
    Op("adagrad_step", _optimizer("adagrad", 0.0, padding=False),
       index_cases(2, _rows(0), "weight") + dest_cases(1, "state") + common_cases()),
    Op("adagrad_step_decay_padding", _optimizer("adagrad", 0.01, padding=True),
       common_cases()),
    Op("rowwise_adagrad_step", _optimizer("rowwise_adagrad", 0.0, padding=False),
       index_cases(2, _rows(0), "weight") + dest_cases(1, "state") + common_cases()),
    Op("rowwise_adagrad_step_decay_padding", _optimizer("rowwise_adagrad", 0.01, padding=True),
       common_cases()),
]

OPS_BY_NAME = {op.name: op for op in OPS}
# every public function is in the matrix (the layers are built from them)
PUBLIC_FUNCTIONS = {"gather", "scatter_add", "embedding_backward", "embedding_bag",
                    "embedding_bag_backward", "renorm_", "coalesce", "sgd_step", "adagrad_step",
                    "rowwise_adagrad_step"}
assert PUBLIC_FUNCTIONS <= {op.make(np.random.default_rng(0), EDGE_CASES[3], VALUE_DTYPES[1],
                                    INDEX_DTYPES[1]).fn.__name__ for op in OPS}

# the shape cases of tests/conftest.py, and one big enough for the kernels' threads
CASES = EDGE_CASES


def parallel_case() -> EdgeCase:
    """A case above every threshold the build reports, so that threads start."""
    build = fe.info()["build"]
    d = 64
    rows = max(4096, -(-build.get("scatter_parallel_min_table_bytes", 0) // (d * 4)) + 1)
    batch = max(20000, 2 * -(-build.get("scatter_parallel_min_bytes", 0) // (d * 2)))
    return EdgeCase("parallel", rows, d, (batch,), "uniform")


def ids(op: Op) -> str:
    return op.name


def deep(call: Call) -> Call:
    return copy.deepcopy(call)

"""Hostile inputs, fuzzed: every call is right, or it raises a clean error and writes nothing.

Hypothesis builds a *recipe* (shapes, dtypes, layouts, bit patterns, index
values, options), and each backend ("cython", "numpy" and "auto", which tries
the compiled lean entry points first) gets its own fresh buffers made from
it.  For every call:

- a small model of the documented contract (README "Inputs and errors")
  says whether the call must succeed, must fail, or may fail (only where the
  overlap check is allowed to give up: ``np.shares_memory`` TooHardError);
- a call that succeeds must return exactly the bits of ``np.take`` /
  ``np.add.at`` (computed before the call, on the same inputs), write nothing
  outside its destination (canary bytes either side) and leave every input as
  it was;
- a call that fails must raise TypeError, ValueError or IndexError, never
  anything else (BackendUnavailableError included), with every buffer the
  recipe allocated byte-for-byte unchanged;
- the three backends agree: same bits, or same exception class.

FASTEMBED_EXT_FUZZ_EXAMPLES sets the number of examples per test (small by
default so that this file runs in well under a minute); scripts/fuzz.sh is the
long run.  FASTEMBED_EXT_FUZZ_DB=<dir> keeps a Hypothesis example database.
"""

import hashlib
import numbers
import os
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from hypothesis.errors import InvalidArgument
from hypothesis.extra import numpy as hnp

import fastembed_ext as fe
from fastembed_ext import _kernels

FUZZ_EXAMPLES = int(os.environ.get("FASTEMBED_EXT_FUZZ_EXAMPLES", "250"))
_DB = os.environ.get("FASTEMBED_EXT_FUZZ_DB")

FUZZ = settings(
    deadline=None,
    max_examples=FUZZ_EXAMPLES,
    database=DirectoryBasedExampleDatabase(_DB) if _DB else None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
    print_blob=True,
)

BACKENDS = ("cython", "numpy", "auto")
ALLOWED = (TypeError, ValueError, IndexError)
UINT = {1: np.dtype(np.uint8), 2: np.dtype(np.uint16), 4: np.dtype(np.uint32),
        8: np.dtype(np.uint64)}

try:
    import ml_dtypes
except ImportError:  # optional
    ml_dtypes = None

BFLOAT16 = np.dtype(ml_dtypes.bfloat16) if ml_dtypes is not None else None


def _accepts(dtype):
    try:
        fe.gather(np.zeros((1, 1), dtype), np.zeros(1, np.int64), backend="numpy")
    except TypeError:
        return False
    return True


# bfloat16 (ml_dtypes) is a value dtype where the installed package takes it
BFLOAT16_SUPPORTED = BFLOAT16 is not None and _accepts(BFLOAT16)

VALID_VALUE_DTYPES = [np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)]
if BFLOAT16_SUPPORTED:
    VALID_VALUE_DTYPES.append(BFLOAT16)
WRONG_VALUE_DTYPES = [np.dtype(t) for t in (
    ">f2", ">f4", ">f8", "int8", "int32", "int64", "uint16", "bool", "object", "complex64",
    "longdouble")]
if BFLOAT16 is not None and not BFLOAT16_SUPPORTED:
    WRONG_VALUE_DTYPES.append(BFLOAT16)

# vector widths and fe_copy_row's special row sizes (16..256 bytes) and their neighbours
DIMS = (0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 128)

# a small table whose row count is past 2**31 / 2**32 / 2**40: read-only broadcast views only
HUGE_ROWS = (2**31 + 5, 2**32 + 1, 2**40)


# --------------------------------------------------------------------------
# bit patterns

def _float_layout(dtype):
    """(number of bits, mantissa bits) of a 2/4/8-byte binary float, bfloat16 included."""
    dtype = np.dtype(dtype)
    if BFLOAT16 is not None and dtype == BFLOAT16:
        return 16, 7
    return 8 * dtype.itemsize, {2: 10, 4: 23, 8: 52}[dtype.itemsize]


def special_bits(dtype):
    """Bit patterns kernels get wrong: zeros, subnormals, inf, NaNs (quiet/signalling,
    payloads), extremes, round-to-even ties and small integers, of both signs."""
    nbits, nmant = _float_layout(dtype)
    ebits = nbits - 1 - nmant
    sign = 1 << (nbits - 1)
    mant_all = (1 << nmant) - 1
    exp_all = ((1 << ebits) - 1) << nmant
    quiet = 1 << (nmant - 1)
    bias = (1 << (ebits - 1)) - 1

    def value(e, m=0):  # 2**e * (1 + m / 2**nmant)
        return ((e + bias) << nmant) | m

    positive = [
        0, 1, 2, 3, mant_all, 1 << nmant,
        value(0), value(0, 1), value(-1, mant_all), value(1), value(1, quiet), value(-1),
        value(nmant), value(nmant, 1),          # where adding 0.5 is an exact tie
        exp_all - 1, exp_all - 2, exp_all,
        exp_all | quiet, exp_all | quiet | 1, exp_all | mant_all, exp_all | quiet | (mant_all >> 3),
        exp_all | 1, exp_all | (quiet - 1), exp_all | (quiet >> 1),
    ]
    return sorted(set(positive + [p | sign for p in positive]))


def bit_patterns(dtype):
    nbits, _ = _float_layout(dtype)
    return st.one_of(st.sampled_from(special_bits(dtype)), st.integers(0, (1 << nbits) - 1))


# --------------------------------------------------------------------------
# recipes: everything drawn, nothing allocated

class ArrayRecipe:
    """A value or index array: raw items (tiled up to ``shape``), dtype and layout.

    ``raw`` is a small ndarray (values) or a list of Python ints (indices);
    ``spread`` (index arrays) adds k * 7919 to item k, to reach every row.
    """

    def __init__(self, dtype, shape, raw, layout="c", spread=False):
        self.dtype, self.shape, self.raw, self.layout, self.spread = dtype, shape, raw, layout, spread

    def __repr__(self):
        raw = self.raw
        if isinstance(raw, np.ndarray) and raw.dtype.itemsize in UINT and raw.dtype.kind != "O":
            raw = (f"np.array({np.ascontiguousarray(raw).view(UINT[raw.dtype.itemsize]).tolist()}, "
                   f"'{UINT[raw.dtype.itemsize]}').view({raw.dtype.str!r})")
        else:
            raw = repr(raw).replace("\n", "")
        return (f"ArrayRecipe(dtype={self.dtype.str!r}, shape={self.shape}, layout={self.layout!r}, "
                f"spread={self.spread}, raw={raw})")


@dataclass
class DestRecipe:
    """A written buffer: how it is laid out, and where, relative to the inputs."""
    mode: str
    init: np.ndarray               # raw bits, tiled to the destination's size
    guard_items: int = 3           # canary items either side
    offset: int = 0                # item offset for the shared-buffer modes
    alt_dtype: object = None


@dataclass
class Case:
    op: str
    value_dtype: np.dtype
    num_rows: int
    dim: int
    table: ArrayRecipe = None      # weight (gather)
    indices: ArrayRecipe = None
    grad: ArrayRecipe = None       # scatter_add, embedding_backward
    dest: DestRecipe = None        # out (gather, optional) or grad_weight (scatter_add)
    index_form: str = "array"      # or "python_int", "numpy_scalar" for 0-d indices
    num_threads: object = None
    padding_idx: object = None
    num_embeddings: object = None
    scale_grad_by_freq: object = False
    f16c: bool = True
    isa: int = 2


VALUE_LAYOUTS = ("c", "c", "c", "f", "step", "neg", "bcast", "window", "unaligned", "readonly",
                 "list", "memoryview", "subclass")
INDEX_LAYOUTS = ("c", "c", "c", "f", "step", "neg", "bcast", "unaligned", "readonly", "list",
                 "memoryview", "subclass")
GOOD_DEST_MODES = ("fresh", "fresh", "fresh", "subclass", "shared_disjoint")
BAD_DEST_MODES = ("fortran", "step", "neg", "readonly", "unaligned", "bcast", "wrong_dtype",
                  "wrong_shape", "list", "memoryview", "shared_overlap", "shared_random",
                  "indices_inside")

# What a recipe may get wrong.  Each example picks at most a few of these and
# draws everything else from the valid choices, so that about half the calls
# succeed (and are checked bit for bit) and the rest fail for a known reason.
ASPECTS = ("value_dtype", "grad_dtype", "grad_shape", "table_rank", "index_dtype",
           "index_values", "dest", "threads", "padding", "num_embeddings", "scale")

GOOD_INDEX_DTYPES = [np.dtype(t) for t in (
    "int64", "int32", "int8", "int16", "uint8", "uint16", "uint32", "uint64",
    ">i8", ">i4", ">u2", ">u8")]
BAD_INDEX_DTYPES = [np.dtype(t) for t in ("float32", "float64", "float16", "bool", "object")]

MAX_THREADS = 256  # README: "At most 256 threads"
GOOD_THREADS = st.one_of(st.none(), st.none(), st.integers(1, 8),
                         st.sampled_from([np.int64(3), np.uint8(2), np.int32(1), 64, MAX_THREADS]))
BAD_THREADS = st.sampled_from([0, -1, -2**63, True, False, 2.0, 1.5, "2", np.int32(0),
                               np.float64(2.0), np.bool_(True), [2],
                               MAX_THREADS + 1, 2**31 - 1, 2**31, 2**63, 2**64, np.uint64(2**64 - 1)])


def _valid_padding(num_rows):
    if num_rows == 0:
        return st.none()
    return st.one_of(st.none(), st.none(), st.integers(-num_rows, num_rows - 1),
                     st.sampled_from([np.int64(0), np.int32(-1), np.uint8(0)]))


def _bad_padding(num_rows):
    return st.one_of(
        st.sampled_from([num_rows, -num_rows - 1, num_rows + 1, 2**63 - 1, -2**63, 2**64,
                         np.uint64(2**64 - 1)]),
        st.sampled_from([True, False, 1.0, "0", np.bool_(False), np.float32(0)]))


@st.composite
def aspects(draw):
    """The set of things this example gets wrong (often none)."""
    n = draw(st.sampled_from([0, 0, 1, 1, 1, 2]))
    return {draw(st.sampled_from(ASPECTS)) for _ in range(n)}


def _raw_values(draw, dtype, shape):
    """A small block of ``dtype`` items (at most 64 rows), tiled to ``shape`` later."""
    shape = tuple(shape)
    small = tuple(min(s, 64) if i == 0 else s for i, s in enumerate(shape))
    if len(small) > 1:
        # at most ~512 drawn items; the rest is tiled
        rows = max(1, 512 // max(1, int(np.prod(small[1:]))))
        small = (min(small[0], rows),) + small[1:]
    dtype = np.dtype(dtype)
    if dtype.kind == "f" and dtype.itemsize in (2, 4, 8) or dtype == BFLOAT16:
        bits = draw(hnp.arrays(UINT[dtype.itemsize], small, elements=bit_patterns(dtype),
                               fill=bit_patterns(dtype)))
        return bits.view(dtype)
    if dtype.kind == "f":  # longdouble
        return draw(hnp.arrays(np.float64, small)).astype(dtype)
    if dtype.kind == "O":
        return draw(hnp.arrays(np.float64, small)).astype(object)
    return draw(hnp.arrays(dtype, small))


INDEX_SPECIALS = (-1, -2, 2**31 - 1, 2**31, 2**32, 2**63 - 1, -2**63, -2**31, 2**64 - 1, 2**64)


@st.composite
def index_recipe(draw, num_rows, bad, big=0):
    """Indices for a table of ``num_rows``; ``big`` (row bytes) asks for a parallel-size batch."""
    if "index_dtype" in bad:
        dtype = draw(st.sampled_from(BAD_INDEX_DTYPES))
    else:
        dtype = draw(st.sampled_from(GOOD_INDEX_DTYPES[:2] * 4 + GOOD_INDEX_DTYPES))
    if big:
        n = _big_batch(big)
        shape = draw(st.sampled_from([(n,), (64, -(-n // 64))]))
    else:
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
    size = int(np.prod(shape, dtype=np.int64))
    limit = num_rows - 1
    if dtype.kind in "iu":
        limit = min(limit, int(np.iinfo(dtype).max))
    valid = st.integers(0, limit) if limit >= 0 else st.just(0)
    if "index_values" in bad:
        bounds = st.sampled_from([num_rows, num_rows + 1, num_rows - 1, 0] + list(INDEX_SPECIALS))
        element = st.one_of(valid, bounds)
    else:
        element = valid
    n = min(size, 24)
    raw = draw(st.lists(element, min_size=n, max_size=n)) if size else []
    layout = draw(st.sampled_from(INDEX_LAYOUTS))
    return ArrayRecipe(np.dtype(dtype), shape, raw, layout,
                       spread=bool(big) and "index_values" not in bad)


def _draw_index_form(draw, case):
    if case.indices.shape == () and case.indices.layout == "c":
        case.index_form = draw(st.sampled_from(["array", "python_int", "numpy_scalar"]))


def _draw_env(draw, case, bad):
    case.num_threads = draw(BAD_THREADS if "threads" in bad else GOOD_THREADS)
    case.f16c = draw(st.booleans())
    case.isa = draw(st.sampled_from([0, 1, 2]))


def _draw_value_dtype(draw, bad):
    if "value_dtype" in bad:
        return draw(st.sampled_from(WRONG_VALUE_DTYPES))
    return draw(st.sampled_from(VALID_VALUE_DTYPES))


def _draw_table_shape(draw):
    num_rows = draw(st.one_of(st.integers(0, 6), st.integers(0, 40)))
    return num_rows, draw(st.sampled_from(DIMS))


_BUILD = fe.info()["build"]


def _big_scatter_shape(vdt):
    # past every threshold of the parallel scatter (row width and updates; read
    # from the build so that the fuzz follows a retuning), in a table larger
    # than the caches
    row_bytes = max(256, _BUILD.get("scatter_parallel_min_row_bytes", 0))
    return (1 << 25) // row_bytes + 3, max(1, row_bytes // vdt.itemsize)


def _big_batch(row_bytes, minimum=8192):
    """A batch size past the parallel threshold (bytes moved) for rows of ``row_bytes``."""
    return max(minimum, 2 * -(-_BUILD.get("parallel_min_bytes", 0) // max(1, row_bytes)))


def _draw_dest(draw, case, bad, dtype, big=False):
    if "dest" in bad:
        mode = draw(st.sampled_from(BAD_DEST_MODES))
    else:
        mode = draw(st.sampled_from(("fresh", "fresh", "shared_disjoint") if big
                                    else GOOD_DEST_MODES))
    if dtype.kind in "fV" and dtype.itemsize in UINT:
        init = _raw_values(draw, UINT[dtype.itemsize], (min(case.num_rows, 8), max(case.dim, 1)))
    else:
        init = _raw_values(draw, np.uint8, (8,))
    return DestRecipe(mode, init, guard_items=draw(st.integers(0, 9)),
                      offset=draw(st.integers(0, 80)),
                      alt_dtype=draw(st.sampled_from(VALID_VALUE_DTYPES + WRONG_VALUE_DTYPES)))


OVERLAP_MODES = ("shared_overlap", "shared_random", "shared_disjoint", "indices_inside")


@st.composite
def gather_cases(draw, dest_modes=None):
    bad = draw(aspects())
    if dest_modes:
        bad -= {"dest", "table_rank"}
    vdt = _draw_value_dtype(draw, bad)
    shape_kind = draw(st.sampled_from(["small"] * 8 + ["big", "huge"]))
    num_rows, dim = _draw_table_shape(draw)
    layout = draw(st.sampled_from(VALUE_LAYOUTS))
    if shape_kind == "huge":
        bad -= {"table_rank"}
        # a table past 2**31 (2**32, 2**40) rows: only a broadcast view can be that big here
        num_rows = draw(st.sampled_from(HUGE_ROWS))
        dim = draw(st.sampled_from([0, 1, 3, 8, 16, 33]))
        layout = "bcast"
    elif shape_kind == "big":
        # past the parallel gather threshold (bytes moved, from the build)
        layout = draw(st.sampled_from(["c", "c", "readonly", "neg", "f"]))
        dim = 16 if vdt.itemsize >= 4 else 32
        num_rows = 1000
    if dest_modes:
        shape_kind = "small"
        num_rows, dim = max(num_rows, 1), max(dim, 1)
    case = Case("gather", vdt, num_rows, dim)
    table_shape = (num_rows, dim)
    if "table_rank" in bad:
        table_shape = draw(st.sampled_from([(num_rows,), (2, 2, dim), ()]))
    case.table = ArrayRecipe(vdt, table_shape, _raw_values(draw, vdt, table_shape), layout)
    case.indices = draw(index_recipe(num_rows, bad,
                                     big=dim * vdt.itemsize if shape_kind == "big" else 0))
    _draw_index_form(draw, case)
    if dest_modes or "dest" in bad or draw(st.booleans()):
        case.dest = _draw_dest(draw, case, bad, vdt)
    if dest_modes:
        case.dest.mode = draw(st.sampled_from(dest_modes))
    _draw_env(draw, case, bad)
    return case


def _draw_grad(draw, case, idx_shape, bad, big):
    gdt = case.value_dtype
    if "grad_dtype" in bad:
        gdt = draw(st.sampled_from([t for t in VALID_VALUE_DTYPES + WRONG_VALUE_DTYPES
                                    if t != case.value_dtype]))
    shape = tuple(idx_shape) + (case.dim,)
    if "grad_shape" in bad:
        shape = draw(st.sampled_from([tuple(idx_shape), tuple(idx_shape) + (case.dim + 1,),
                                      tuple(idx_shape) + (1, case.dim), (case.dim,)]))
    layouts = ["c", "c", "readonly", "neg", "f", "step"] if big else VALUE_LAYOUTS
    return ArrayRecipe(np.dtype(gdt), shape, _raw_values(draw, gdt, shape),
                       draw(st.sampled_from(layouts)))


@st.composite
def scatter_cases(draw, dest_modes=None):
    bad = draw(aspects())
    vdt = _draw_value_dtype(draw, bad)
    big = not dest_modes and draw(st.sampled_from([False] * 14 + [True]))
    if big or dest_modes:
        bad -= {"dest", "grad_shape", "table_rank"}
    num_rows, dim = _big_scatter_shape(vdt) if big else _draw_table_shape(draw)
    if dest_modes:
        num_rows, dim = max(num_rows, 1), max(dim, 1)
    case = Case("scatter_add", vdt, num_rows, dim)
    case.indices = draw(index_recipe(num_rows, bad, big=dim * vdt.itemsize if big else 0))
    case.grad = _draw_grad(draw, case, case.indices.shape, bad, big)
    _draw_index_form(draw, case)
    case.dest = _draw_dest(draw, case, bad, vdt, big)
    if "table_rank" in bad:
        case.dest.mode = "wrong_rank"
    if dest_modes:
        case.dest.mode = draw(st.sampled_from(dest_modes))
    case.padding_idx = draw(_bad_padding(num_rows) if "padding" in bad else _valid_padding(num_rows))
    _draw_env(draw, case, bad)
    return case


@st.composite
def backward_cases(draw):
    bad = draw(aspects())
    vdt = _draw_value_dtype(draw, bad)
    big = draw(st.sampled_from([False] * 14 + [True]))
    if big:
        bad -= {"dest", "grad_shape"}
    num_rows, dim = _big_scatter_shape(vdt) if big else _draw_table_shape(draw)
    case = Case("embedding_backward", vdt, num_rows, dim)
    case.indices = draw(index_recipe(num_rows, bad, big=dim * vdt.itemsize if big else 0))
    case.grad = _draw_grad(draw, case, case.indices.shape, bad, big)
    _draw_index_form(draw, case)
    if "num_embeddings" in bad:
        case.num_embeddings = draw(st.sampled_from(
            [-1, True, 2.0, "5", None, np.float32(num_rows)] + ([0] if num_rows else [])))
    else:
        choices = [num_rows, num_rows + 1, np.int64(num_rows), np.uint32(num_rows)]
        if case.grad.shape[-1:] == (0,):
            choices.append(2**40)  # a huge table of empty rows costs nothing
        case.num_embeddings = draw(st.sampled_from(choices))
    case.padding_idx = draw(_bad_padding(num_rows) if "padding" in bad else _valid_padding(num_rows))
    if "scale" in bad:
        case.scale_grad_by_freq = draw(st.sampled_from([0, 1, None, "yes", 1.0]))
    else:
        case.scale_grad_by_freq = draw(st.sampled_from([False, True, np.bool_(True), np.bool_(False)]))
    _draw_env(draw, case, bad)
    return case


# --------------------------------------------------------------------------
# materialising a recipe: fresh buffers for one call

class Sub(np.ndarray):
    """A do-nothing ndarray subclass."""


@dataclass
class Built:
    args: dict
    owners: dict = field(default_factory=dict)   # name -> a buffer this recipe allocated
    dest_name: str = None                        # the argument that is written, if any
    dest_owner: str = None                       # and the owner buffer it lives in


def _tile(raw, shape, dtype):
    raw = np.asarray(raw)
    size = int(np.prod(shape, dtype=np.int64))
    if raw.size == 0 or size == 0:
        return np.zeros(shape, dtype=dtype)
    return np.resize(raw.reshape(-1), size).reshape(shape).astype(dtype, copy=False)


def _wrap_ints(values, dtype):
    """Python ints as items of ``dtype``, wrapping around like a C cast."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        nbits = 8 * dtype.itemsize
        out = []
        for v in values:
            v %= 1 << nbits
            if dtype.kind == "i" and v >= 1 << (nbits - 1):
                v -= 1 << nbits
            out.append(v)
        return np.array(out, dtype=dtype)
    if dtype.kind == "b":
        return np.array([v % 2 == 1 for v in values], dtype=dtype)
    if dtype.kind == "O":
        return np.array(values, dtype=object)
    with np.errstate(all="ignore"):
        return np.array([float(v) for v in values], dtype=np.float64).astype(dtype)


def _index_values(rec, num_rows):
    base = _wrap_ints(rec.raw, rec.dtype) if rec.raw else np.zeros(0, rec.dtype)
    arr = _tile(base, rec.shape, rec.dtype)
    if rec.spread and arr.size and num_rows > 0 and arr.dtype.kind in "iu":
        k = np.arange(arr.size, dtype=np.int64).reshape(arr.shape)
        spread = (arr.astype(np.int64) + k * 7919) % num_rows
        if spread.max() <= np.iinfo(rec.dtype).max:
            arr = spread.astype(rec.dtype)
    return arr


def _apply_layout(arr, layout, owners, name):
    """``arr``'s values in the given layout; every buffer allocated is kept in ``owners``."""
    def own(a):
        owners[name] = a
        return a

    if layout == "list":
        return arr.tolist()
    if layout == "f" and arr.ndim >= 2:
        return own(np.asfortranarray(arr))
    if layout == "step" and arr.ndim >= 1:
        big = np.zeros(tuple(2 * s + 1 for s in arr.shape), dtype=arr.dtype)
        view = big[tuple(slice(1, None, 2) for _ in arr.shape)]
        view[...] = arr
        own(big)
        return view
    if layout == "neg" and arr.ndim >= 1:
        base = own(np.ascontiguousarray(np.flip(arr)))
        return np.flip(base)
    if layout == "bcast" and arr.ndim >= 1 and arr.size:
        src = own(np.ascontiguousarray(arr[(slice(0, 1),) * arr.ndim]))
        return np.broadcast_to(src, arr.shape)
    if layout == "window" and arr.ndim == 2 and arr.shape[1] >= 1 and arr.shape[0] >= 1:
        # overlapping rows: row k starts one item after row k - 1
        flat = own(np.ascontiguousarray(arr).reshape(-1)[: arr.shape[0] + arr.shape[1] - 1].copy())
        return np.lib.stride_tricks.as_strided(flat, arr.shape, (arr.itemsize, arr.itemsize),
                                               writeable=False)
    if layout == "unaligned" and arr.itemsize > 1 and arr.dtype.kind != "O":
        raw = own(np.zeros(arr.nbytes + 1, np.uint8))
        view = raw[1:].view(arr.dtype).reshape(arr.shape)
        view[...] = arr
        return view
    if layout == "readonly":
        a = own(arr.copy())
        a.flags.writeable = False
        return a
    if layout == "memoryview" and arr.dtype.kind != "O":
        a = own(np.ascontiguousarray(arr))
        try:
            return memoryview(a)
        except (ValueError, TypeError, BufferError):
            return a
    if layout == "subclass":
        return own(arr.copy()).view(Sub)
    return own(arr.copy())


def _guarded(values, guard_items, owners, name):
    """A C-contiguous copy of ``values`` inside a buffer with random canary items either side."""
    dtype = values.dtype
    if dtype.hasobject:  # random bytes are not object pointers
        owners[name] = values.copy()
        return owners[name]
    n = values.size
    rng = np.random.default_rng(n * 31 + guard_items)
    guard = guard_items * dtype.itemsize
    buf = np.empty((n + 2 * guard_items) * dtype.itemsize, dtype=np.uint8)
    buf[:guard] = rng.integers(0, 256, size=guard, dtype=np.uint8)
    buf[buf.size - guard:] = rng.integers(0, 256, size=guard, dtype=np.uint8)
    owners[name] = buf
    view = buf[guard_items * dtype.itemsize:(guard_items + n) * dtype.itemsize].view(dtype)
    view = view.reshape(values.shape)
    view[...] = values
    return view


def _make_dest(rec, dtype, shape, built, name, primary_name=None, primary=None,
               indices_rec=None, num_rows=0):
    """The destination for one call, per ``rec.mode``.

    ``primary`` is the input the destination may share a buffer with (weight for
    gather, grad for scatter_add); it is rebuilt inside that buffer when asked.
    Returns (dest, primary, indices or None).
    """
    owners = built.owners
    size = int(np.prod(shape, dtype=np.int64))
    if dtype.kind in "fV":
        # the drawn bits, tiled: every NaN payload and subnormal can be there
        raw = np.ascontiguousarray(rec.init).reshape(-1).view(np.uint8)
        values = _tile(raw, (size * dtype.itemsize,), np.uint8).view(dtype).reshape(shape)
    else:
        values = np.zeros(shape, dtype)
    mode = rec.mode
    built.dest_owner = name + "_buffer"
    if mode in ("fresh", "subclass"):
        d = _guarded(values, rec.guard_items, owners, built.dest_owner)
        return (d.view(Sub) if mode == "subclass" else d), primary, None
    if mode == "wrong_dtype":
        alt = np.dtype(rec.alt_dtype)
        if alt == dtype:
            alt = np.dtype(np.float32) if dtype != np.float32 else np.dtype(np.float64)
        return _guarded(np.zeros(shape, alt), rec.guard_items, owners, built.dest_owner), primary, None
    if mode == "wrong_shape":
        bad = tuple(shape[:-1]) + (shape[-1] + 1,) if shape else (1,)
        return _guarded(np.zeros(bad, dtype), rec.guard_items, owners, built.dest_owner), primary, None
    if mode == "wrong_rank":
        bad = tuple(shape) + (1,) if len(shape) != 1 else (1,) + tuple(shape)
        return _guarded(np.zeros(bad, dtype), rec.guard_items, owners, built.dest_owner), primary, None
    if mode in ("fortran", "step", "neg", "readonly", "unaligned", "bcast", "list", "memoryview"):
        layout = {"fortran": "f"}.get(mode, mode)
        d = _apply_layout(values, layout, owners, built.dest_owner)
        return d, primary, None
    if mode.startswith("shared") and isinstance(primary, np.ndarray) \
            and primary.dtype == dtype and 0 < primary.size <= 1 << 24:
        # dest and the primary input as two views of one 1-D buffer
        p_vals = np.asarray(primary)
        n_dest = int(np.prod(shape))
        n_prim = p_vals.size
        if mode == "shared_disjoint":
            p_off, d_off = 0, n_prim + rec.offset % 5
        elif mode == "shared_overlap":
            p_off = 0
            d_off = rec.offset % max(1, n_prim)
        else:
            p_off, d_off = rec.offset % 7, rec.offset
        total = max(p_off + n_prim, d_off + n_dest) + 2
        buf = np.zeros(total, dtype)
        owners[built.dest_owner] = buf if dtype.hasobject else buf.view(np.uint8)
        owners.pop(primary_name, None)
        dest = buf[d_off:d_off + n_dest].reshape(shape)
        dest[...] = values
        prim = buf[p_off:p_off + n_prim].reshape(p_vals.shape)
        prim[...] = p_vals
        return dest, prim, None
    if mode == "indices_inside" and indices_rec is not None and not dtype.hasobject:
        # the indices live in the destination's own bytes
        d = _guarded(values, rec.guard_items, owners, built.dest_owner)
        idx_vals = np.asarray(_index_values(indices_rec, num_rows))
        idt = idx_vals.dtype
        need = idx_vals.size * idt.itemsize
        if idt.kind in "iu" and 0 < need <= d.nbytes and idt.isnative:
            start = (rec.offset * idt.itemsize) % (d.nbytes - need + 1)
            start -= start % idt.itemsize
            raw = d.reshape(-1).view(np.uint8)[start:start + need]
            idx = raw.view(idt).reshape(idx_vals.shape)
            idx[...] = idx_vals
            return d, primary, idx
        return d, primary, None
    return _guarded(values, rec.guard_items, owners, built.dest_owner), primary, None


def _table_values(rec):
    return _tile(rec.raw, rec.shape, rec.dtype)


def _indices_object(case, built):
    rec = case.indices
    arr = _index_values(rec, case.num_rows)
    if case.index_form == "python_int":
        return int(arr) if arr.dtype.kind in "iu" else arr.item()
    if case.index_form == "numpy_scalar":
        return arr[()]
    return _apply_layout(arr, rec.layout, built.owners, "indices")


def build(case):
    built = Built(args={})
    a = built.args
    if case.op == "gather":
        rec = case.table
        if rec.layout == "bcast" and len(rec.shape) == 2 and rec.shape[0] in HUGE_ROWS:
            src = np.ascontiguousarray(_tile(rec.raw, (1, rec.shape[1]), rec.dtype))
            built.owners["weight"] = src
            weight = np.broadcast_to(src, rec.shape)
        else:
            weight = _apply_layout(_table_values(rec), rec.layout, built.owners, "weight")
        idx = _indices_object(case, built)
        out = None
        if case.dest is not None:
            shape = tuple(np.shape(np.asarray(idx))) + ((case.dim,) if len(rec.shape) == 2 else ())
            out, weight, inside = _make_dest(case.dest, rec.dtype, shape, built, "out",
                                             "weight", weight, case.indices, case.num_rows)
            if inside is not None:
                idx = inside
            built.dest_name = "out"
        a.update(weight=weight, indices=idx, out=out)
    elif case.op == "scatter_add":
        idx = _indices_object(case, built)
        grad = _apply_layout(_table_values(case.grad), case.grad.layout, built.owners, "grad")
        gw, grad, inside = _make_dest(case.dest, case.value_dtype, (case.num_rows, case.dim), built,
                                      "grad_weight", "grad", grad, case.indices, case.num_rows)
        if inside is not None:
            idx = inside
        built.dest_name = "grad_weight"
        a.update(grad_weight=gw, indices=idx, grad=grad, padding_idx=case.padding_idx)
    else:
        idx = _indices_object(case, built)
        grad = _apply_layout(_table_values(case.grad), case.grad.layout, built.owners, "grad")
        a.update(grad=grad, indices=idx, num_embeddings=case.num_embeddings,
                 padding_idx=case.padding_idx, scale_grad_by_freq=case.scale_grad_by_freq)
    a["num_threads"] = case.num_threads
    return built


# --------------------------------------------------------------------------
# the contract, as a model: which errors a call must (or may) raise

def _value_dtype_ok(dtype):
    return any(dtype == t for t in VALID_VALUE_DTYPES) and (dtype.isnative or dtype.itemsize == 1)


def _as_array(x):
    """What the package reads an input as (None if it is not an array at all)."""
    if isinstance(x, np.ndarray):
        return np.asarray(x)
    try:
        return np.asarray(x)
    except Exception:  # noqa: BLE001
        return None


def _as_indices(x):
    """What the package reads indices as: ``_as_array``, except that an empty list or
    tuple (float64 to np.asarray) is an empty integer index, as for np.take."""
    arr = _as_array(x)
    if arr is not None and isinstance(x, (list, tuple)) and arr.size == 0 \
            and arr.dtype == np.float64:
        return arr.astype(np.intp)
    return arr


def _is_int(x):
    return not isinstance(x, (bool, np.bool_)) and isinstance(x, numbers.Integral)


class Expect:
    def __init__(self):
        self.must = set()
        self.may = set()
        self.why = []

    def fail(self, exc, why, certain=True):
        (self.must if certain else self.may).add(exc)
        self.why.append(("must" if certain else "may") + f" {exc.__name__}: {why}")

    @property
    def classes(self):
        return tuple(self.must | self.may)


def _model_threads(e, n):
    if n is None:
        return
    if not _is_int(n):
        e.fail(TypeError, f"num_threads={n!r}")
    elif not 1 <= int(n) <= MAX_THREADS:
        e.fail(ValueError, f"num_threads={n!r}")


def _model_indices(e, idx):
    if idx is None:
        e.fail(TypeError, "indices is not an array")
        return None
    if idx.dtype.kind not in "iu":
        e.fail(TypeError, f"indices dtype {idx.dtype}")
        return None
    return idx


def _model_bounds(e, idx, num_rows):
    if idx is None or num_rows is None:
        return
    flat = [int(v) for v in idx.reshape(-1).tolist()]
    bad = [v for v in flat if not 0 <= v < num_rows]
    if bad:
        e.fail(IndexError, f"index {bad[0]} with {num_rows} rows")


def _model_padding(e, p, num_rows):
    if p is None or num_rows is None:
        return
    if not _is_int(p):
        e.fail(TypeError, f"padding_idx={p!r}")
    elif not -num_rows <= int(p) < num_rows:
        e.fail(ValueError, f"padding_idx={p!r} with {num_rows} rows")


def _model_dest(e, dest, name, dtype, shape):
    if not isinstance(dest, np.ndarray):
        e.fail(TypeError, f"{name} is a {type(dest).__name__}")
        return False
    if dtype is not None and dest.dtype != dtype:
        e.fail(TypeError, f"{name} dtype {dest.dtype} != {dtype}")
    if shape is not None and dest.shape != shape:
        e.fail(ValueError, f"{name} shape {dest.shape} != {shape}")
    if not dest.flags.writeable:
        e.fail(ValueError, f"{name} read-only")
    if not dest.flags.c_contiguous:
        e.fail(ValueError, f"{name} not C-contiguous")
    if not dest.flags.aligned:
        e.fail(ValueError, f"{name} unaligned")
    return True


def _model_overlap(e, dest, name, other, other_name):
    if not isinstance(dest, np.ndarray) or other is None or dest.size == 0 or other.size == 0:
        return
    if np.shares_memory(dest, other):  # exact
        e.fail(ValueError, f"{name} overlaps {other_name}")
    elif np.may_share_memory(dest, other):
        # the package may give up on a hard overlap problem, and refuse to be safe
        e.fail(ValueError, f"{name} may overlap {other_name}", certain=False)


def model(case, a):
    e = Expect()
    _model_threads(e, a["num_threads"])
    if case.op == "gather":
        w = _as_array(a["weight"])
        num_rows = d = None
        if w is None:
            e.fail(TypeError, "weight is not an array")
        else:
            if not _value_dtype_ok(w.dtype):
                e.fail(TypeError, f"weight dtype {w.dtype}")
            if w.ndim != 2:
                e.fail(ValueError, f"weight shape {w.shape}")
            else:
                num_rows, d = w.shape
        idx = _model_indices(e, _as_indices(a["indices"]))
        out = a["out"]
        if out is not None:
            shape = idx.shape + (d,) if idx is not None and d is not None else None
            if _model_dest(e, out, "out", w.dtype if w is not None else None, shape):
                _model_overlap(e, out, "out", w, "weight")
                _model_overlap(e, out, "out", _as_array(a["indices"]), "indices")
        if w is not None and _value_dtype_ok(w.dtype):
            _model_bounds(e, idx, num_rows)
        return e
    if case.op == "scatter_add":
        gw = a["grad_weight"]
        num_rows = d = None
        if not isinstance(gw, np.ndarray):
            e.fail(TypeError, "grad_weight is not an ndarray")
            gw = None
        else:
            if not _value_dtype_ok(gw.dtype):
                e.fail(TypeError, f"grad_weight dtype {gw.dtype}")
            if gw.ndim != 2:
                e.fail(ValueError, f"grad_weight shape {gw.shape}")
            else:
                num_rows, d = gw.shape
            _model_dest(e, gw, "grad_weight", None, None)
        idx = _model_indices(e, _as_indices(a["indices"]))
        g = _as_array(a["grad"])
        if g is None:
            e.fail(TypeError, "grad is not an array")
        elif gw is not None and g.dtype != gw.dtype:
            e.fail(TypeError, f"grad dtype {g.dtype} != {gw.dtype}")
        if g is not None and idx is not None and d is not None and g.shape != idx.shape + (d,):
            e.fail(ValueError, f"grad shape {g.shape}")
        _model_padding(e, a["padding_idx"], num_rows)
        if gw is not None:
            _model_overlap(e, gw, "grad_weight", g, "grad")
            _model_overlap(e, gw, "grad_weight", _as_array(a["indices"]), "indices")
        if gw is not None and _value_dtype_ok(gw.dtype):
            _model_bounds(e, idx, num_rows)
        return e
    # embedding_backward
    ne = a["num_embeddings"]
    num_rows = None
    if not _is_int(ne):
        e.fail(TypeError, f"num_embeddings={ne!r}")
    elif int(ne) < 0:
        e.fail(ValueError, f"num_embeddings={ne!r}")
    else:
        num_rows = int(ne)
    if not isinstance(a["scale_grad_by_freq"], (bool, np.bool_)):
        e.fail(TypeError, f"scale_grad_by_freq={a['scale_grad_by_freq']!r}")
    g = _as_array(a["grad"])
    if g is None:
        e.fail(TypeError, "grad is not an array")
    elif not _value_dtype_ok(g.dtype):
        e.fail(TypeError, f"grad dtype {g.dtype}")
    idx = _model_indices(e, _as_indices(a["indices"]))
    if g is not None and idx is not None and (g.ndim != idx.ndim + 1 or g.shape[:-1] != idx.shape):
        e.fail(ValueError, f"grad shape {g.shape} for indices {idx.shape}")
    _model_padding(e, a["padding_idx"], num_rows)
    _model_bounds(e, idx, num_rows)
    return e


# --------------------------------------------------------------------------
# the answers, from NumPy alone

def _pad_row(p, num_rows):
    if p is None:
        return None
    p = int(p)
    return p + num_rows if p < 0 else p


def _add_at(table, idx, grad, pad):
    idx = _as_indices(idx)
    grad = np.asarray(grad)
    if pad is not None:
        keep = idx != pad
        idx, grad = idx[keep], grad[keep]
    with np.errstate(all="ignore"):
        np.add.at(table, idx, grad)
    return table


def _scaled(grad, idx):
    grad = np.asarray(grad)
    idx = _as_indices(idx)
    if idx.size == 0:
        return grad
    opmath = np.float64 if grad.dtype == np.float64 else np.float32
    _, inverse, counts = np.unique(idx.reshape(-1), return_inverse=True, return_counts=True)
    scale = (1.0 / counts.astype(np.float64)).astype(opmath)[inverse.reshape(-1)]
    with np.errstate(all="ignore"):
        return (grad.astype(opmath) * scale.reshape(idx.shape)[..., None]).astype(grad.dtype)


def reference(case, a):
    """What a successful call must return, from NumPy, before the call is made."""
    if case.op == "gather":
        w = np.asarray(a["weight"])
        if _huge(w):
            # np.take would first copy the whole (broadcast) table; for indices inside
            # [0, T) indexing the first axis is the same thing
            return w[np.asarray(a["indices"]).astype(np.intp)]
        # as intp: NumPy < 2 refuses to cast uint64 indices for np.take
        return np.take(w, np.asarray(a["indices"]).astype(np.intp), axis=0)
    if case.op == "scatter_add":
        gw = np.array(a["grad_weight"], copy=True)
        return _add_at(gw, a["indices"], a["grad"], _pad_row(a["padding_idx"], gw.shape[0]))
    grad = np.asarray(a["grad"])
    num_rows = int(a["num_embeddings"])
    table = np.zeros((num_rows, grad.shape[-1]), dtype=grad.dtype)
    if a["scale_grad_by_freq"]:
        grad = _scaled(grad, a["indices"])
    return _add_at(table, a["indices"], grad, _pad_row(a["padding_idx"], num_rows))


# --------------------------------------------------------------------------
# running one recipe on every backend

def _bits(a):
    a = np.ascontiguousarray(a)
    return a.dtype, a.shape, a.tobytes()


def _call(case, a, backend):
    kw = dict(a)
    if case.op == "gather":
        return fe.gather(kw.pop("weight"), kw.pop("indices"), backend=backend, **kw)
    if case.op == "scatter_add":
        return fe.scatter_add(kw.pop("grad_weight"), kw.pop("indices"), kw.pop("grad"),
                              backend=backend, **kw)
    return fe.embedding_backward(kw.pop("grad"), kw.pop("indices"), kw.pop("num_embeddings"),
                                 backend=backend, **kw)


def _dest_range(built):
    """Byte range of the destination inside its owner buffer."""
    dest = built.args.get(built.dest_name)
    owner = built.owners.get(built.dest_owner)
    if not isinstance(dest, np.ndarray) or owner is None or not dest.flags.c_contiguous:
        return None
    start = dest.__array_interface__["data"][0] - owner.__array_interface__["data"][0]
    return start, start + dest.nbytes


def _event(text):
    try:
        event(text)
    except InvalidArgument:  # run_case called outside a Hypothesis test
        pass


def _huge(w):
    return isinstance(w, np.ndarray) and w.ndim == 2 and w.shape[0] in HUGE_ROWS


def run_case(case):
    """Every backend: the bits of the reference, or a clean error and nothing written."""
    outcomes = {}
    want = None
    _kernels.use_f16c(case.f16c)
    _kernels.set_isa_level(case.isa)
    try:
        for backend in BACKENDS:
            built = build(case)
            a = built.args
            if backend == "numpy" and _huge(a.get("weight")):
                # the reference (np.take) copies a non-contiguous table whole first:
                # 8-32 GiB here.  The compiled path reads it in place.
                continue
            expect = model(case, a)
            if backend == "cython":  # --hypothesis-show-statistics: what the examples test
                reason = expect.why[0].split(" ", 2)[2] if expect.why else "valid call"
                _event("rule: " + " ".join(w for w in reason.split("=")[0].split()[:3]
                                           if not w.lstrip("-").isdigit()))
            saved = {name: buf.tobytes() for name, buf in built.owners.items()}
            if not expect.must and want is None:
                want = reference(case, a)   # the same inputs for every backend: once
            try:
                got = _call(case, a, backend)
            except ALLOWED as exc:
                assert expect.classes, (
                    f"{backend}: raised {type(exc).__name__}({exc}) on a call the contract allows")
                assert isinstance(exc, expect.classes), (
                    f"{backend}: raised {type(exc).__name__}({exc}); expected one of "
                    f"{sorted(c.__name__ for c in expect.classes)} because {expect.why}")
                for name, data in saved.items():
                    assert built.owners[name].tobytes() == data, (
                        f"{backend}: a failed call ({type(exc).__name__}: {exc}) wrote to {name}")
                outcomes[backend] = ("raises", type(exc))
                continue
            assert not expect.must, f"{backend}: returned, but should have raised: {expect.why}"
            # the bits of NumPy's answer
            assert isinstance(got, np.ndarray)
            g_dt, g_shape, g_bytes = _bits(got)
            w_dt, w_shape, w_bytes = _bits(want)
            assert (g_dt, g_shape) == (w_dt, w_shape), f"{backend}: {g_dt}{g_shape} != {w_dt}{w_shape}"
            if g_bytes != w_bytes:
                gv = np.frombuffer(g_bytes, UINT[g_dt.itemsize]) if g_dt.itemsize in UINT else None
                wv = np.frombuffer(w_bytes, UINT[w_dt.itemsize]) if w_dt.itemsize in UINT else None
                first = int(np.argmax(gv != wv)) if gv is not None else -1
                raise AssertionError(
                    f"{backend}: result differs from NumPy in its bits; first flat item {first}: "
                    f"got 0x{int(gv[first]):x}, expected 0x{int(wv[first]):x}")
            if built.dest_name is not None and a[built.dest_name] is not None:
                assert got is a[built.dest_name], f"{backend}: did not return {built.dest_name}"
            # nothing written but the destination
            rng = _dest_range(built)
            for name, data in saved.items():
                now = built.owners[name].tobytes()
                if name == built.dest_owner and rng is not None:
                    lo, hi = rng
                    assert now[:lo] == data[:lo] and now[hi:] == data[hi:], (
                        f"{backend}: wrote outside {built.dest_name} (canary bytes changed)")
                else:
                    assert now == data, f"{backend}: wrote to {name}, which it does not own"
            outcomes[backend] = ("returns", g_dt, g_shape, hashlib.sha256(g_bytes).hexdigest())
    finally:
        _kernels.use_f16c(True)
        _kernels.set_isa_level(2)
    first = next(iter(outcomes.values()))
    _event(f"outcome: {first[0]} {first[1].__name__ if first[0] == 'raises' else ''}")
    kinds = {k: v[:2] if v[0] == "raises" else v for k, v in outcomes.items()}
    assert len({repr(v) for v in kinds.values()}) == 1, (
        "backends disagree: " + ", ".join(f"{k}: {v[0]} {v[1]}" for k, v in outcomes.items()))


# --------------------------------------------------------------------------
# the fuzz tests

@FUZZ
@given(gather_cases())
def test_fuzz_gather_is_numpy_take_or_a_clean_error(case):
    run_case(case)


@FUZZ
@given(scatter_cases())
def test_fuzz_scatter_add_is_numpy_add_at_or_a_clean_error(case):
    run_case(case)


@FUZZ
@given(backward_cases())
def test_fuzz_embedding_backward_is_zeros_plus_add_at_or_a_clean_error(case):
    run_case(case)


@FUZZ
@given(st.one_of(gather_cases(OVERLAP_MODES), scatter_cases(OVERLAP_MODES)))
def test_fuzz_destination_sharing_a_buffer_with_an_input_is_refused_or_exact(case):
    # out / grad_weight and weight / grad (or the indices) as views of one buffer:
    # an overlap must be refused before anything is written, a disjoint view must work
    run_case(case)


# --------------------------------------------------------------------------
# explicit regression examples: what the fuzzing (or writing it) turned up

def _small_buffers():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((10, 4)).astype(np.float32)
    return {"weight": w, "indices": np.array([[1, 9], [0, 3]]),
            "out": np.full((2, 2, 4), 7, np.float32), "grad_weight": w.copy(),
            "grad": np.ones((2, 2, 4), np.float32)}


def _calls(b, n, backend):
    return {
        "gather": lambda: fe.gather(b["weight"], b["indices"], num_threads=n, backend=backend),
        "gather_out": lambda: fe.gather(b["weight"], b["indices"], out=b["out"], num_threads=n,
                                        backend=backend),
        "scatter_add": lambda: fe.scatter_add(b["grad_weight"], b["indices"], b["grad"],
                                              num_threads=n, backend=backend),
        "embedding_backward": lambda: fe.embedding_backward(b["grad"], b["indices"], 10,
                                                            num_threads=n, backend=backend),
    }


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["gather", "gather_out", "scatter_add", "embedding_backward"])
@pytest.mark.parametrize("n", [MAX_THREADS + 1, 2**31 - 1, 2**31, 2**63, 2**64])
def test_thread_counts_past_the_cap_are_a_value_error_with_nothing_written(n, op, backend):
    # 2**31 used to raise OverflowError from the compiled path only (the NumPy one
    # accepted it), and 2**31 - 1 on a parallel-size call made libgomp abort the
    # process; see also test_hostile_conditions
    b = _small_buffers()
    saved = {k: v.tobytes() for k, v in b.items()}
    with pytest.raises(ValueError, match="num_threads"):
        _calls(b, n, backend)[op]()
    assert {k: v.tobytes() for k, v in b.items()} == saved


@pytest.mark.parametrize("n", [MAX_THREADS + 1, 2**31, 2**64])
def test_set_num_threads_past_the_cap_is_a_value_error_and_changes_nothing(n):
    before = fe.get_num_threads()
    with pytest.raises(ValueError):
        fe.set_num_threads(n)
    assert fe.get_num_threads() == before


@pytest.mark.parametrize("backend", ["cython", "auto"])
@pytest.mark.parametrize("num_rows", HUGE_ROWS)
@pytest.mark.parametrize("index_dtype", [np.int64, np.uint64, np.dtype(">i8")])
def test_gather_from_a_broadcast_table_past_2_to_the_31_rows(num_rows, index_dtype, backend):
    row = np.arange(8, dtype=np.float16).reshape(1, 8)
    row[0, 3] = np.float16("nan")
    weight = np.broadcast_to(row, (num_rows, 8))
    idx = np.array([0, num_rows - 1, num_rows // 2, 2**31 - 1], dtype=index_dtype)
    got = fe.gather(weight, idx, backend=backend)
    assert got.tobytes() == np.repeat(row, 4, axis=0).tobytes()
    out = np.zeros((4, 8), np.float16)
    for bad in (num_rows, 2**63 - 1):
        with pytest.raises(IndexError, match=f"{bad} is out of range for weight with {num_rows} rows"):
            fe.gather(weight, np.array([0, bad], dtype=np.uint64), out=out[:2], backend=backend)
    assert not out.any()


def test_numpy_backend_gathers_from_a_broadcast_table_without_copying_the_table():
    # Regression (fixed in 2cc141f): backend="numpy" (and backend="auto" without the
    # extension, or with FASTEMBED_EXT_BACKEND=numpy) ran np.take, which first
    # makes a C-contiguous copy of a non-contiguous table.  For a broadcast (or
    # otherwise strided) view that is the whole logical table: 64 MiB here for
    # 32 bytes of data, and MemoryError ("Unable to allocate 32.0 GiB") for a
    # 2**31-row broadcast float16 table that backend="cython" reads in place.
    import tracemalloc

    row = np.arange(8, dtype=np.float32).reshape(1, 8)
    weight = np.broadcast_to(row, (1 << 21, 8))      # 64 MiB logical
    idx = np.array([0, (1 << 21) - 1, 5])
    peaks = {}
    for backend in ("cython", "numpy"):
        tracemalloc.start()
        try:
            got = fe.gather(weight, idx, backend=backend)
            peaks[backend] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert got.tobytes() == np.repeat(row, 3, axis=0).tobytes()
    assert peaks["numpy"] < 1 << 20, (
        f"backend='numpy' allocated {peaks['numpy'] / 2**20:.0f} MiB to gather 3 rows of a "
        f"broadcast table (backend='cython': {peaks['cython']} bytes)")


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_that_is_the_weight_itself_or_holds_the_indices_is_refused(backend):
    w = np.arange(24, dtype=np.float32).reshape(6, 4)
    saved = w.tobytes()
    with pytest.raises(ValueError, match="overlap"):
        fe.gather(w, np.array([0, 1, 2, 3, 4, 5]), out=w, backend=backend)
    assert w.tobytes() == saved
    # indices that live inside out's own bytes
    out = np.zeros((4, 4), np.float32)
    idx = out.reshape(-1).view(np.int32)[:4]
    idx[...] = [5, 0, 2, 2]
    saved = out.tobytes()
    with pytest.raises(ValueError, match="overlap"):
        fe.gather(w, idx, out=out, backend=backend)
    assert out.tobytes() == saved


@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_weight_and_grad_in_disjoint_halves_of_one_buffer_work(backend):
    buf = np.zeros(2 * 24, np.float64)
    gw = buf[:24].reshape(6, 4)
    grad = buf[24:].reshape(6, 4)
    grad[...] = np.arange(24).reshape(6, 4) - 0.5
    gw[...] = -0.0
    idx = np.array([5, 5, 0, 1, 5, 3])
    want = gw.copy()
    np.add.at(want, idx, grad.copy())
    fe.scatter_add(gw, idx, grad, backend=backend)
    assert gw.tobytes() == want.tobytes()
    assert grad.tobytes() == (np.arange(24).reshape(6, 4) - 0.5).tobytes()
    # one item of overlap is enough to refuse
    with pytest.raises(ValueError, match="overlap"):
        fe.scatter_add(buf[:24].reshape(6, 4), idx, buf[23:47].reshape(6, 4), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("index", [np.int64(2), np.int8(2), 2, np.array(2, dtype=">u2")])
def test_zero_d_index_scatter_and_padding(backend, index):
    gw = np.zeros((4, 3), np.float16)
    grad = np.array([1.5, -0.0, np.inf], np.float16)
    fe.scatter_add(gw, index, grad, backend=backend)
    assert gw[2].tobytes() == (np.zeros(3, np.float16) + grad).tobytes()
    assert not gw[[0, 1, 3]].any()
    fe.scatter_add(gw, index, grad, padding_idx=-2, backend=backend)   # row 2 is padding
    assert gw[2].tobytes() == (np.zeros(3, np.float16) + grad).tobytes()


def _unaligned_contiguous(values):
    """A C-contiguous copy of ``values`` one byte off its dtype's alignment."""
    raw = np.zeros(values.nbytes + 1, np.uint8)
    view = raw[1:].view(values.dtype).reshape(values.shape)
    view[...] = values
    assert view.flags.c_contiguous and not view.flags.aligned
    return view


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("op", ["scatter_add", "embedding_backward"])
def test_an_unaligned_c_contiguous_grad_reaches_the_kernels_as_an_aligned_copy(op, dtype,
                                                                               monkeypatch):
    # Regression (fixed in 2cc141f): _checks.rows() promised "contiguous, aligned rows ... else a
    # copy", but made the copy with np.ascontiguousarray, which returns a
    # C-contiguous array as it is, unaligned or not.  The kernels then loaded
    # float16/32/64 items from a misaligned address: undefined behaviour, which
    # -fsanitize=undefined reports (scripts/sanitize.sh, found by the fuzz tests):
    #   _fe_add.h:105: runtime error: load of misaligned address ... for type
    #   'const double', which requires 8 byte alignment   (fe_add_row_f64_sse2)
    # x86 forgives it; a strict-alignment target or an aligned vector load does not.
    # (gather is left out: it moves rows with memcpy, which any address suits.)
    rng = np.random.default_rng(1)
    seen = []

    def spy(kernel, *positions):
        def wrapped(*args, **kwargs):
            seen.extend((kernel.__name__, i, args[i].flags.aligned) for i in positions)
            return kernel(*args, **kwargs)
        wrapped.__name__ = kernel.__name__
        return wrapped

    monkeypatch.setattr(_kernels, "scatter_add_rows", spy(_kernels.scatter_add_rows, 2))
    idx = np.array([2, 0, 2, 1])
    values = rng.standard_normal((4, 3)).astype(dtype)
    if op == "scatter_add":
        gw = np.zeros((3, 3), dtype)
        fe.scatter_add(gw, idx, _unaligned_contiguous(values), backend="cython")
        want = np.zeros((3, 3), dtype)
        np.add.at(want, idx, values)
        assert gw.tobytes() == want.tobytes()
    else:
        got = fe.embedding_backward(_unaligned_contiguous(values), idx, 3, backend="cython")
        want = np.zeros((3, 3), dtype)
        np.add.at(want, idx, values)
        assert got.tobytes() == want.tobytes()
    assert seen, "no kernel was called"
    assert all(aligned for _, _, aligned in seen), f"a kernel got an unaligned array: {seen}"


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("op", ["gather", "scatter_add", "embedding_backward"])
def test_unaligned_c_contiguous_indices_reach_the_kernels_as_an_aligned_copy(op, index_dtype,
                                                                             monkeypatch):
    # Regression (fixed in 2cc141f), the same root cause for indices:
    # _checks.checked_flat_indices saw that int32/int64 indices were not aligned and
    # "copied" them with np.ascontiguousarray, which returns a C-contiguous array
    # unchanged.  -fsanitize=undefined, in the bounds check alone:
    #   _kernels.c: runtime error: load of misaligned address ... for type
    #   'const int64_t', which requires 8 byte alignment  (_first_out_of_range)
    seen = []

    def spy(kernel, position):
        def wrapped(*args, **kwargs):
            seen.append((kernel.__name__, args[position].flags.aligned))
            return kernel(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(_kernels, "first_out_of_range", spy(_kernels.first_out_of_range, 0))
    monkeypatch.setattr(_kernels, "gather_rows", spy(_kernels.gather_rows, 1))
    monkeypatch.setattr(_kernels, "scatter_add_rows", spy(_kernels.scatter_add_rows, 1))
    values = np.array([2, 0, 2, 1, 3], index_dtype)
    idx = _unaligned_contiguous(values)
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    grad = np.ones((5, 3), np.float32)
    if op == "gather":
        assert fe.gather(w, idx, backend="cython").tobytes() == np.take(w, values, axis=0).tobytes()
    elif op == "scatter_add":
        gw = np.zeros((4, 3), np.float32)
        fe.scatter_add(gw, idx, grad, backend="cython")
        assert gw[2, 0] == 2.0
    else:
        assert fe.embedding_backward(grad, idx, 4, backend="cython")[2, 0] == 2.0
    assert seen, "no kernel was called"
    assert all(aligned for _, aligned in seen), f"a kernel got unaligned indices: {seen}"

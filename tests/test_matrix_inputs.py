"""Every operation of the matrix reads any layout of its inputs as their values:
non-contiguous, Fortran-order, read-only, unaligned, subclassed and DLPack
inputs give the bits of plain arrays.  Hypothesis draws calls of every
operation (properties), and a bounded fuzz throws hostile arguments at every
argument of every operation: the compiled and NumPy backends then agree, on
the bits or on the exception, and a call that raises has written nothing.
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastembed_ext import _kernels

from .conftest import DLPackOnly, EdgeCase, Snapshot, assert_bits_equal, dtype_id
from .matrix import CASES, INDEX_DTYPES, OPS, THREADS, VALUE_DTYPES, Call, ids, noncontiguous

LAYOUT_CASES = [c for c in CASES if c.name in ("2d_indices", "3d_indices", "vector_tails_d_33",
                                               "d_is_1", "0d_index")]


class Tagged(np.ndarray):
    pass


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def _unaligned(a):
    raw = np.zeros(a.nbytes + 1, np.uint8)
    view = raw[1:].view(a.dtype).reshape(a.shape)
    view[...] = a
    return view


LAYOUTS = {
    "noncontiguous": noncontiguous,
    "fortran": lambda a: np.asfortranarray(a) if a.ndim >= 2 else a,  # (0-d would become 1-d)
    "read_only": _read_only,
    "unaligned": _unaligned,
    "subclass": lambda a: a.view(Tagged),
    "dlpack": DLPackOnly,
}


def _relaid(call, layout):
    c = Call(call.fn, list(call.args), dict(call.kwargs), call.written)
    for name, a in call.inputs().items():
        if layout == "dlpack" and a.dtype.kind == "V":
            continue  # NumPy's DLPack has no bfloat16; as_input then reads the array as it is
        new = LAYOUTS[layout](a)
        if name.startswith("arg"):
            c.args[int(name[3:])] = new
        else:
            c.kwargs[name] = new
    return c


def _assert_same(got, want, what):
    assert len(got) == len(want), what
    for k, (g, w) in enumerate(zip(got, want)):
        assert_bits_equal(g, w, f"{what}, result {k}")


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("case", LAYOUT_CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("op", OPS, ids=ids)
def test_every_input_layout_gives_the_bits_of_plain_arrays(op, case, layout, rng):
    dtype = VALUE_DTYPES[int(rng.integers(0, len(VALUE_DTYPES)))]
    call = op.make(rng, case, dtype, INDEX_DTYPES[int(rng.integers(0, 2))])
    want = call.run(backend="numpy")
    relaid = _relaid(call, layout)
    before = Snapshot(**{k: np.asarray(getattr(a, "_array", a)) for k, a in relaid.inputs().items()})
    for backend in ("cython", "auto", "numpy"):
        _assert_same(relaid.run(backend=backend), want, f"{layout} inputs, backend={backend}")
    before.assert_unchanged()


# --------------------------------------------------------------------------
# hypothesis: calls of every operation, drawn

@st.composite
def drawn_calls(draw):
    op = draw(st.sampled_from(OPS))
    case = EdgeCase("drawn", draw(st.integers(1, 40)), draw(st.integers(0, 24)),
                    tuple(draw(st.lists(st.integers(0, 7), min_size=1, max_size=3))),
                    draw(st.sampled_from(["uniform", "same", "hot", "first_last"])))
    dtype = draw(st.sampled_from(VALUE_DTYPES))
    index_dtype = draw(st.sampled_from(INDEX_DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    return op, op.make(rng, case, dtype, index_dtype), draw(st.sampled_from(THREADS))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(drawn=drawn_calls())
def test_property_every_operation_is_its_reference_and_its_naive_twin(drawn):
    op, call, num_threads = drawn
    before = Snapshot(**call.inputs())
    want = call.run(backend="numpy")
    _assert_same(call.run(backend="cython", num_threads=num_threads), want, op.name)
    _kernels.use_naive_kernels(True)
    try:
        _assert_same(call.run(backend="cython"), want, f"{op.name}, naive twins")
    finally:
        _kernels.use_naive_kernels(False)
    before.assert_unchanged()


# --------------------------------------------------------------------------
# the bounded fuzz: hostile arguments, both backends must agree

def _big_endian(a):
    with np.errstate(invalid="ignore"):
        return a.astype(a.dtype.newbyteorder(">")) if a.dtype.kind in "fiu" else a


HOSTILE = {
    "plain": lambda a, c: a,
    "noncontiguous": lambda a, c: noncontiguous(a),
    "read_only": lambda a, c: _read_only(a),
    "unaligned": lambda a, c: _unaligned(a),
    "big_endian": lambda a, c: _big_endian(a),
    "float64": lambda a, c: np.zeros(a.shape, np.float64),
    "int8": lambda a, c: np.zeros(a.shape, np.int8),
    "one_more_row": lambda a, c: np.concatenate([a, a[:1]]) if a.ndim and a.shape[0] else a,
    "list": lambda a, c: a.tolist(),
    # the memory of another argument of the call, in this argument's dtype and shape
    "alias": lambda a, c: _alias(a, c),
}


def _alias(a, call):
    for b in call.arrays().values():
        if b is not a and b.dtype == a.dtype and b.size >= a.size > 0 and b.flags.c_contiguous:
            return b.reshape(-1)[: a.size].reshape(a.shape)
    return a
FUZZ_EXAMPLES = int(os.environ.get("FASTEMBED_EXT_FUZZ_EXAMPLES", "150"))


def _outcome(call, backend):
    snapshot = Snapshot(**call.arrays())
    try:
        results = call.fn(*call.args, **{"backend": backend, **call.kwargs})
    except (TypeError, ValueError, IndexError) as exc:
        snapshot.assert_unchanged()
        return ("raised", type(exc))
    results = results if isinstance(results, tuple) else (results,)
    written = [call.args[k] if isinstance(k, int) else call.kwargs[k] for k in call.written]
    return ("ok", [np.array(r, copy=True) for r in results + tuple(written) if r is not None])


def _hostile_call(op, case, dtype, index_dtype, seed, choices):
    """The call ``op.make`` builds from ``seed``, each array replaced as ``choices`` says."""
    call = op.make(np.random.default_rng(seed), case, dtype, index_dtype)
    hostile = Call(call.fn, list(call.args), dict(call.kwargs), call.written)
    for name, how in choices.items():
        key = int(name[3:]) if name.startswith("arg") else name
        where = hostile.args if isinstance(key, int) else hostile.kwargs
        where[key] = HOSTILE[how](where[key], call)
    return hostile


@settings(max_examples=FUZZ_EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_every_operation_agrees_across_backends_or_raises_cleanly(data):
    op = data.draw(st.sampled_from(OPS), label="op")
    case = data.draw(st.sampled_from([c for c in CASES if c.name != "huge_d"]), label="case")
    dtype = data.draw(st.sampled_from(VALUE_DTYPES), label="dtype")
    index_dtype = data.draw(st.sampled_from(INDEX_DTYPES), label="index dtype")
    seed = data.draw(st.integers(0, 2 ** 32 - 1), label="seed")
    names = op.make(np.random.default_rng(seed), case, dtype, index_dtype).arrays()
    choices = {name: data.draw(st.sampled_from(sorted(HOSTILE)), label=name) for name in names}
    # each backend gets its own call, built alike: what one writes, the other never sees
    (kind_np, res_np), (kind_cy, res_cy) = (
        _outcome(_hostile_call(op, case, dtype, index_dtype, seed, choices), backend)
        for backend in ("numpy", "cython"))
    assert kind_np == kind_cy, f"numpy backend {kind_np} {res_np}, compiled {kind_cy} {res_cy}"
    if kind_np == "raised":
        assert res_np is res_cy, f"numpy raised {res_np.__name__}, compiled {res_cy.__name__}"
    else:
        _assert_same(res_cy, res_np, op.name)

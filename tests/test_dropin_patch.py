"""patch, unpatch, patched and patch_stats on a module written for NumPy.

The module under patch is a real file imported by name: its globals bound to
numpy are rebound to a namespace that is numpy except for ``add.at`` and
``take``; names imported with ``from numpy import ...`` and ``xp is numpy``
tests are out of reach, as documented.
"""

from __future__ import annotations

import pickle
import sys
import textwrap

import numpy as np
import pytest

import fastembed_ext as fe

LIBRARY = '''
import numpy as np
import numpy
from numpy import take as np_take

xp = np


def embedding_grad(W, ids, G):
    dW = np.zeros_like(W)
    np.add.at(dW, ids, G)
    return dW


def lookup(W, ids):
    return np.take(W, ids, axis=0)


def lookup_imported(W, ids):
    return np_take(W, ids, axis=0)


def add_at_dotted(W, ids, G):
    numpy.add.at(W, ids, G)


def backend_is_numpy():
    import numpy as imported_here  # a local import: not a global, not patched
    return xp is imported_here


def backend_is_global_numpy():
    return xp is numpy


def ufunc_uses(x):
    return np.add(x, 1), np.add.reduce(x), np.add.accumulate(x), np.add.outer(x, x).shape
'''


@pytest.fixture
def library(tmp_path, monkeypatch):
    """A module written for NumPy, importable as ``fe_dropin_library``."""
    (tmp_path / "fe_dropin_library.py").write_text(textwrap.dedent(LIBRARY))
    monkeypatch.syspath_prepend(str(tmp_path))
    import fe_dropin_library  # noqa: PLC0415 - made by this fixture
    yield fe_dropin_library
    sys.modules.pop("fe_dropin_library", None)


@pytest.fixture(autouse=True)
def _fresh_counts(monkeypatch):
    monkeypatch.setattr(fe._dropin, "SMALL_ADD_AT", 0)
    monkeypatch.setattr(fe._dropin, "SMALL_TAKE", 0)
    fe.patch_stats(reset=True)
    yield
    fe.patch_stats(reset=True)


def _inputs(seed=0, T=40, d=16, B=200):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((T, d)).astype(np.float32), rng.integers(-T, T, B),
            rng.standard_normal((B, d)).astype(np.float32))


def _bits(x):
    return np.asarray(x).view(np.uint32).tobytes()


def test_patch_by_name_routes_add_at_and_take_and_keeps_the_bits(library):
    W, ids, G = _inputs()
    want_grad, want_rows = library.embedding_grad(W, ids, G), library.lookup(W, ids)
    assert fe.patch_stats()["add_at"]["accelerated"] == 0
    assert sorted(fe.patch("fe_dropin_library")) == ["np", "numpy", "xp"]
    got_grad, got_rows = library.embedding_grad(W, ids, G), library.lookup(W, ids)
    assert _bits(got_grad) == _bits(want_grad) and _bits(got_rows) == _bits(want_rows)
    stats = fe.patch_stats()
    assert stats["add_at"]["accelerated"] == 1 and stats["take"]["accelerated"] == 1
    dW = np.zeros_like(W)
    library.add_at_dotted(dW, ids, G)  # through the `import numpy` name too
    assert _bits(dW) == _bits(want_grad)
    assert fe.patch_stats()["add_at"]["accelerated"] == 2
    assert sorted(fe.unpatch("fe_dropin_library")) == ["np", "numpy", "xp"]
    assert library.np is np and library.numpy is np and library.xp is np


def test_patch_takes_the_module_object_and_unpatch_restores_exactly(library):
    before = dict(vars(library))
    assert fe.patch(library)
    assert library.np is not np
    assert fe.patch(library) == []  # already patched: nothing more to rebind
    fe.unpatch(library)
    assert vars(library) == before
    assert all(vars(library)[k] is v for k, v in before.items())
    assert fe.unpatch(library) == []


def test_what_patch_cannot_reach_stays_numpy(library):
    W, ids, _ = _inputs()
    with fe.patched(library):
        library.lookup_imported(W, ids)  # `from numpy import take`: NumPy's own
        assert fe.patch_stats()["take"] == {"accelerated": 0, "fallback": 0, "reasons": {}}
        # `xp is numpy` sees the namespace, unless both names are globals it rebinds
        assert library.backend_is_numpy() is False
        assert library.backend_is_global_numpy() is True
        assert library.np_take is np.take


def test_patched_restores_on_exit_and_on_error_and_nests(library):
    with fe.patched("fe_dropin_library") as mod:
        assert mod is library and library.np is not np
    assert library.np is np
    with pytest.raises(KeyError):
        with fe.patched(library):
            raise KeyError("inside")
    assert library.np is np
    fe.patch(library)
    with fe.patched(library):
        pass
    assert library.np is not np, "a block must not undo a patch made before it"
    with fe.patched(library):
        with fe.patched(library):
            pass
        assert library.np is not np
    fe.unpatch(library)
    assert library.np is np


def test_patch_refuses_what_it_cannot_patch(library):
    with pytest.raises(ValueError, match="has no global bound to the numpy module"):
        fe.patch("textwrap")
    with pytest.raises(TypeError, match="target must be a module or a dotted module name, got int"):
        fe.patch(3)
    with pytest.raises(ModuleNotFoundError):
        fe.patch("fe_dropin_no_such_module")
    assert fe.unpatch("textwrap") == []


def test_the_patched_namespace_is_numpy_apart_from_add_at_and_take(library):
    fe.patch(library)
    try:
        xp = library.np
        assert xp.__name__ == "numpy" and xp.__version__ == np.__version__
        assert xp.float32 is np.float32 and xp.linalg is np.linalg and xp.ndarray is np.ndarray
        assert xp.take is fe.take
        assert "take" in dir(xp) and "add" in dir(xp)
        x = np.arange(4.0)
        got = library.ufunc_uses(x)
        want = (np.add(x, 1), np.add.reduce(x), np.add.accumulate(x), (4, 4))
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
        assert xp.add == np.add and np.add == xp.add and hash(xp.add) == hash(np.add)
        assert {np.add: "found"}[xp.add] == "found"
        assert xp.add.nin == 2 and xp.add.__name__ == "add" and xp.add.identity == 0
        assert pickle.loads(pickle.dumps(xp.add)) is np.add
        assert "fastembed_ext" in repr(xp) and "fastembed_ext" in repr(xp.add)
        # attributes set through the namespace land on numpy, as they would unpatched
        xp.fe_dropin_test_attribute = 7
        assert np.fe_dropin_test_attribute == 7
        del xp.fe_dropin_test_attribute
        assert not hasattr(np, "fe_dropin_test_attribute")
    finally:
        fe.unpatch(library)


def test_patch_stats_counts_by_function_and_reason_and_resets():
    W, ids, G = _inputs()
    fe.add_at(W, ids, G)
    fe.add_at(W, (ids, ids % 16), 1.0)
    fe.add_at(W, (ids, ids % 16), 1.0)
    fe.add_at(np.zeros(5, np.int64), [1, 1], 1)
    fe.take(W, ids, axis=0)
    fe.take(W, ids, axis=1, mode="clip")
    stats = fe.patch_stats(reset=True)
    assert stats == {
        "add_at": {"accelerated": 1, "fallback": 3,
                   "reasons": {"a dtype is not float16, float32, float64 or bfloat16": 1,
                               "index form (not rows of axis 0)": 2}},
        "take": {"accelerated": 1, "fallback": 1, "reasons": {"axis is not 0": 1}},
    }
    assert fe.patch_stats() == {name: {"accelerated": 0, "fallback": 0, "reasons": {}}
                                for name in ("add_at", "take")}


@pytest.mark.parametrize("fn", [fe.add_at, fe.take, fe.patch, fe.unpatch, fe.patched,
                                fe.patch_stats])
def test_the_drop_ins_are_documented_in_numpydoc(fn):
    doc = fn.__doc__ or ""
    assert "Parameters\n    ----------" in doc or fn is fe.patched, fn.__name__
    assert "Returns\n    -------" in doc or fn is fe.patched, fn.__name__


def test_the_drop_ins_are_public():
    for name in ("add_at", "take", "patch", "unpatch", "patched", "patch_stats"):
        assert name in fe.__all__ and callable(getattr(fe, name))

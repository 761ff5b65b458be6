"""What a new user meets at the edges: an empty index list, a Fortran-ordered
destination, the reprs of layers and optimizers, the types of embedding_bag,
and bfloat16 tensors in fastembed_ext.torch."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastembed_ext as fe

from .conftest import assert_bits_equal


# --------------------------------------------------------------------------
# an empty list of indices is an empty integer index, as for np.take

@pytest.mark.parametrize("backend", ["auto", "cython", "numpy"])
@pytest.mark.parametrize("empty", [[], (), [[]], [[], []]], ids=repr)
def test_gather_of_an_empty_list_is_an_empty_array_like_np_take(backend, empty):
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    got = fe.gather(w, empty, backend=backend)
    want = np.take(w, empty, axis=0)
    assert got.shape == want.shape and got.dtype == w.dtype
    assert_bits_equal(got, want)


@pytest.mark.parametrize("backend", ["auto", "cython", "numpy"])
def test_scatter_add_and_backward_of_an_empty_list_change_nothing(backend):
    gw = np.ones((4, 3), np.float32)
    before = gw.copy()
    fe.scatter_add(gw, [], np.empty((0, 3), np.float32), backend=backend)
    assert_bits_equal(gw, before)
    got = fe.embedding_backward(np.empty((0, 3), np.float32), [], 4, backend=backend)
    assert_bits_equal(got, np.zeros((4, 3), np.float32))


@pytest.mark.parametrize("backend", ["auto", "cython", "numpy"])
@pytest.mark.parametrize("make", [np.array, lambda x: memoryview(np.array(x))],
                         ids=["ndarray", "memoryview"])
def test_an_empty_float_array_of_indices_is_still_refused_as_np_take_refuses_it(backend, make):
    w = np.ones((4, 3), np.float32)
    with pytest.raises(TypeError):
        np.take(w, make([]), axis=0)
    with pytest.raises(TypeError, match="indices must have an integer dtype, got float64"):
        fe.gather(w, make([]), backend=backend)
    with pytest.raises(TypeError, match="integer dtype, got float64"):
        fe.gather(w, [1.0, 2.0], backend=backend)   # a list of floats is not an index either


# --------------------------------------------------------------------------
# a Fortran-ordered destination is named as such

@pytest.mark.parametrize("backend", ["auto", "cython", "numpy"])
def test_a_fortran_ordered_destination_is_called_fortran_ordered(backend):
    gw = np.zeros((5, 3), np.float32, order="F")
    with pytest.raises(ValueError, match="grad_weight must be C-contiguous .* got a "
                                         "Fortran-ordered array"):
        fe.scatter_add(gw, [1], np.ones((1, 3), np.float32), backend=backend)
    out = np.empty((2, 3), np.float32, order="F")
    with pytest.raises(ValueError, match="out must be C-contiguous .* got a Fortran-ordered"):
        fe.gather(np.ones((5, 3), np.float32), [0, 1], out=out, backend=backend)
    strided = np.zeros((5, 6), np.float32)[:, ::2]
    with pytest.raises(ValueError, match=r"got an array with strides \(24, 8\)"):
        fe.scatter_add(strided, [1], np.ones((1, 3), np.float32), backend=backend)


def test_a_padding_error_names_the_table_not_num_embeddings():
    with pytest.raises(ValueError, match=r"padding_idx must be within \[-100, 100\) for a table "
                                         r"with 100 rows, got 100"):
        fe.embedding_backward(np.ones((2, 3)), [1, 2], 100, padding_idx=100)


# --------------------------------------------------------------------------
# reprs

def test_layers_show_their_shape_and_what_differs_from_the_defaults():
    assert repr(fe.Embedding(30522, 128, padding_idx=0, sparse=True, seed=0)) == \
        "Embedding(30522, 128, padding_idx=0, sparse=True)"
    assert repr(fe.Embedding(10, 4, max_norm=1.0, dtype=np.float16, num_threads=2)) == \
        "Embedding(10, 4, max_norm=1.0, num_threads=2, dtype=float16)"
    assert repr(fe.Embedding(10, 4, max_norm=1.0, norm_type=1.0)) == \
        "Embedding(10, 4, max_norm=1.0, norm_type=1.0)"
    assert repr(fe.Embedding.from_pretrained(np.ones((3, 2)))) == \
        "Embedding(3, 2, freeze=True, dtype=float64)"
    assert repr(fe.EmbeddingBag(10, 4)) == "EmbeddingBag(10, 4, mode='mean')"
    assert repr(fe.EmbeddingBag(10, 4, mode="max", include_last_offset=True)) == \
        "EmbeddingBag(10, 4, mode='max', include_last_offset=True)"


def test_optimizers_show_their_settings():
    assert repr(fe.SGD(0.1)) == "SGD(lr=0.1, weight_decay=0.0)"
    assert repr(fe.Adagrad(0.1, eps=1e-8)) == "Adagrad(lr=0.1, eps=1e-08, weight_decay=0.0)"
    assert repr(fe.RowwiseAdagrad(lr=0.05, weight_decay=1e-4)) == \
        "RowwiseAdagrad(lr=0.05, eps=1e-10, weight_decay=0.0001)"


# --------------------------------------------------------------------------
# embedding_bag's return type follows its mode

def test_embedding_bag_is_typed_by_mode(tmp_path):
    api = pytest.importorskip("mypy.api")
    src = tmp_path / "bag_types.py"
    src.write_text(textwrap.dedent("""
        from typing import Any, Literal
        import numpy as np
        import numpy.typing as npt
        from typing_extensions import assert_type
        import fastembed_ext as fe

        W = np.ones((10, 4), np.float32)
        idx = np.array([[1, 2], [3, 4]])
        assert_type(fe.embedding_bag(W, idx), npt.NDArray[Any])
        assert_type(fe.embedding_bag(W, idx, mode="mean"), npt.NDArray[Any])
        out, where = fe.embedding_bag(W, idx, mode="max")
        assert_type(where, npt.NDArray[np.int64])
        mode: Literal["sum", "mean", "max"] = "sum"
        either = fe.embedding_bag(W, idx, mode=mode)
        assert_type(either, npt.NDArray[Any] | tuple[npt.NDArray[Any], npt.NDArray[np.int64]])
    """))
    stdout, stderr, status = api.run(["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "c"), str(src)])
    assert status == 0, stdout + stderr


# --------------------------------------------------------------------------
# bfloat16 tensors in fastembed_ext.torch

def _u16(t):
    import torch
    return t.detach().contiguous().view(torch.int16).numpy().view(np.uint16)


@pytest.mark.parametrize("padding_idx", [None, 0])
@pytest.mark.parametrize("scale_grad_by_freq", [False, True])
def test_torch_bfloat16_embedding_reads_the_bits_and_follows_np_add_at(padding_idx,
                                                                      scale_grad_by_freq):
    torch = pytest.importorskip("torch")
    ml_dtypes = pytest.importorskip("ml_dtypes")
    import fastembed_ext.torch as fet
    torch.manual_seed(0)
    layer = fet.Embedding(50, 8, padding_idx=padding_idx, dtype=torch.bfloat16,
                          scale_grad_by_freq=scale_grad_by_freq, num_threads=2)
    idx = torch.randint(0, 50, (20, 30))
    idx[0, :6] = 0
    out = layer(idx)
    assert out.dtype == torch.bfloat16 and out.shape == (20, 30, 8)
    w = _u16(layer.weight).view(ml_dtypes.bfloat16)
    assert_bits_equal(_u16(out), np.take(w, idx.numpy(), axis=0).view(np.uint16))
    g = torch.randn(20, 30, 8, dtype=torch.bfloat16)
    out.backward(g)
    assert layer.weight.grad.dtype == torch.bfloat16
    want = fe.embedding_backward(_u16(g).view(ml_dtypes.bfloat16), idx.numpy(), 50,
                                 padding_idx=padding_idx, scale_grad_by_freq=scale_grad_by_freq,
                                 backend="numpy")
    assert_bits_equal(_u16(layer.weight.grad), want.view(np.uint16))
    if not scale_grad_by_freq:   # the reference itself is np.add.at on ml_dtypes.bfloat16
        plain = np.zeros((50, 8), ml_dtypes.bfloat16)
        np.add.at(plain, idx.numpy(), _u16(g).view(ml_dtypes.bfloat16))
        if padding_idx is not None:
            plain[padding_idx] = 0
        assert_bits_equal(_u16(layer.weight.grad), plain.view(np.uint16))


def test_torch_bfloat16_without_ml_dtypes_is_refused_when_the_layer_is_built():
    pytest.importorskip("torch")
    code = textwrap.dedent("""
        import sys
        sys.modules["ml_dtypes"] = None          # as if it were not installed
        import torch
        import fastembed_ext.torch as fet
        fet.Embedding(10, 4)                     # float32 builds
        try:
            fet.Embedding(10, 4, dtype=torch.bfloat16)
        except TypeError as exc:
            print(exc)
        else:
            print("built")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "bfloat16 tensors need ml_dtypes" in r.stdout and "pip install ml_dtypes" in r.stdout


def test_torch_embedding_refuses_what_the_readme_says_it_refuses():
    torch = pytest.importorskip("torch")
    import fastembed_ext.torch as fet
    with pytest.raises(ValueError, match="does not support max_norm"):
        fet.Embedding(10, 4, max_norm=1.0)
    with pytest.raises(ValueError, match="does not support sparse=True"):
        fet.Embedding(10, 4, sparse=True)
    with pytest.raises(TypeError, match="float16, float32, float64 or bfloat16 table, got "
                                        "torch.complex64"):
        fet.Embedding(10, 4, dtype=torch.complex64)
    assert repr(fet.Embedding(10, 4, padding_idx=0, num_threads=2)) == \
        "Embedding(10, 4, padding_idx=0, num_threads=2)"
    assert repr(fet.Embedding(10, 4, dtype=torch.float64)) == \
        "Embedding(10, 4, dtype=torch.float64)"

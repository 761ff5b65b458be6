"""PyTorch autograd module, bfloat16 (ml_dtypes), threadpoolctl, typing stubs."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastembed_ext as fe

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _u(a):
    return np.ascontiguousarray(a).view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.itemsize])


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
@pytest.mark.parametrize("padding_idx", [None, 3, -1])
def test_torch_embedding_module_matches_torch_bit_for_bit(dtype_name, padding_idx):
    torch = pytest.importorskip("torch")
    import fastembed_ext.torch as fet
    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)
    ref = torch.nn.Embedding(60, 12, padding_idx=padding_idx).to(dtype)
    ours = fet.Embedding(60, 12, padding_idx=padding_idx, num_threads=2).to(dtype)
    with torch.no_grad():
        ours.weight.copy_(ref.weight)
    idx = torch.randint(0, 60, (32, 40))
    idx[0, :5] = 3
    g = torch.randn(32, 40, 12, dtype=dtype)
    y_ref, y_ours = ref(idx), ours(idx)
    y_ref.backward(g)
    y_ours.backward(g)
    assert _u(y_ref.detach().numpy()).tobytes() == _u(y_ours.detach().numpy()).tobytes()
    assert _u(ref.weight.grad.numpy()).tobytes() == _u(ours.weight.grad.numpy()).tobytes()


def test_torch_module_rejects_what_it_does_not_support():
    pytest.importorskip("torch")
    import fastembed_ext.torch as fet
    with pytest.raises(ValueError, match="max_norm"):
        fet.Embedding(10, 4, max_norm=1.0)
    with pytest.raises(ValueError, match="sparse"):
        fet.Embedding(10, 4, sparse=True)


def test_torch_from_pretrained_and_functional_form():
    torch = pytest.importorskip("torch")
    import fastembed_ext.torch as fet
    w = torch.randn(20, 5, requires_grad=True)
    idx = torch.tensor([[1, 2, 2], [19, 0, 1]])
    out = fet.embedding(idx, w)
    out.sum().backward()
    expected = np.zeros((20, 5), np.float32)
    np.add.at(expected, idx.numpy(), np.ones((2, 3, 5), np.float32))
    assert np.array_equal(w.grad.numpy(), expected)
    m = fet.Embedding.from_pretrained(torch.ones(4, 3))
    assert m(torch.tensor([0, 3])).shape == (2, 3)


@pytest.mark.parametrize("num_threads", [1, 2, 3])
def test_bfloat16_matches_np_add_at_on_ml_dtypes_arrays(num_threads):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf = ml_dtypes.bfloat16
    rng = np.random.default_rng(7)
    for T, d, B in [(1, 3, 50), (40, 17, 3000), (70_000, 256, 3000)]:
        # random bit patterns (NaNs of both signs, infs, subnormals) mixed with normal values
        base = rng.integers(0, 1 << 16, (T, d), dtype=np.uint64).astype(np.uint16).view(bf)
        g = np.where(rng.random((B, d)) < 0.8, rng.standard_normal((B, d)).astype(np.float32).astype(bf),
                     rng.integers(0, 1 << 16, (B, d), dtype=np.uint64).astype(np.uint16).view(bf))
        idx = rng.integers(0, T, B)
        expected = base.copy()
        with np.errstate(all="ignore"):
            np.add.at(expected, idx, g)
        got = fe.scatter_add(base.copy(), idx, g, num_threads=num_threads)
        assert _u(got).tobytes() == _u(expected).tobytes()
        assert _u(fe.gather(base, idx)).tobytes() == _u(np.take(base, idx, axis=0)).tobytes()
        a = fe.embedding_backward(g, idx, T, scale_grad_by_freq=True, padding_idx=0)
        b = fe.embedding_backward(g, idx, T, scale_grad_by_freq=True, padding_idx=0, backend="numpy")
        assert _u(a).tobytes() == _u(b).tobytes()


def test_bfloat16_mixed_with_float32_is_a_type_error():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    gw = np.zeros((4, 2), ml_dtypes.bfloat16)
    with pytest.raises(TypeError, match=r"grad must have the dtype of grad_weight \(bfloat16\)"):
        fe.scatter_add(gw, [0], np.ones((1, 2), np.float32))


def test_threadpoolctl_sees_and_limits_the_engine():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not fe.info()["parallel"]:
        pytest.skip("serial build")
    before = fe.get_num_threads()
    libs = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "fastembed_ext"]
    assert len(libs) == 1, "threadpoolctl does not see the engine"
    assert libs[0]["num_threads"] == before and libs[0]["filepath"] == fe._kernels.__file__
    with threadpoolctl.threadpool_limits(1):
        assert fe.get_num_threads() == 1
        assert fe.info()["num_threads_source"] == "threadpoolctl"
    with threadpoolctl.threadpool_limits(1, user_api="fastembed_ext"):
        assert fe.get_num_threads() == 1
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        assert fe.get_num_threads() == before
    assert fe.get_num_threads() == before
    assert fe.info()["num_threads_source"] != "threadpoolctl"


def test_omp_num_threads_is_honoured():
    r = subprocess.run([sys.executable, "-c", "import fastembed_ext as fe; print(fe.get_num_threads())"],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1"


def test_stubs_match_the_compiled_module(tmp_path):
    pytest.importorskip("mypy")
    # _kernels.pyi is the hand-written stub; _reference is typed inline
    r = subprocess.run([sys.executable, "-m", "mypy.stubtest", "fastembed_ext._kernels",
                        "fastembed_ext._reference"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_strict_typed_example_passes_mypy(tmp_path):
    pytest.importorskip("mypy")
    example = os.path.join(REPO, "examples", "typed_usage.py")
    if not os.path.exists(example):
        pytest.skip("examples/ is not next to the tests")
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", example],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr

"""python -m fastembed_ext: the main job, info, check and bench."""
import json
import subprocess
import sys

import pytest


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "fastembed_ext", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_main_job_checks_bits_and_prints_a_timing_table():
    r = _cli()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bit-for-bit against NumPy: all equal" in r.stdout
    for op in ("gather(out=)", "scatter_add", "embedding_backward"):
        assert op in r.stdout


def test_info_prints_json():
    r = _cli("info")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["compiled"] is True and info["backend"] == "cython"


def test_check_sweep_passes():
    r = _cli("check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bit-identical to NumPy" in r.stdout


def test_main_job_fails_without_the_compiled_backend():
    code = ("import sys, fastembed_ext._runtime as r; r.kernels = None; r.kernels_error = 'gone';"
            "from fastembed_ext.__main__ import main; sys.exit(main([]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "compiled extension is not available: gone" in r.stderr


def test_bench_quick_writes_json(tmp_path):
    path = tmp_path / "bench.json"
    r = _cli("bench", "--quick", "--json", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(path.read_text())
    assert data["results"] and all(row["gather_1"] > 0 and row["scatter_1"] > 0
                                   for row in data["results"])
    assert "ratios" in r.stdout


def test_bench_plot_draws_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "speedup.png"
    r = _cli("bench", "--quick", "--plot", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

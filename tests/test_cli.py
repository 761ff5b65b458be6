"""python -m fastembed_ext: the main job, info, check and bench."""
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastembed_ext import _bench

README_NUMBERS = Path(__file__).resolve().parent.parent / "scripts" / "readme_numbers.py"


def _cli(*args, timeout=300, env=None):
    return subprocess.run([sys.executable, "-m", "fastembed_ext", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_main_job_checks_bits_and_prints_a_timing_table():
    r = _cli()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bit-for-bit against NumPy: all equal" in r.stdout
    for op in ("gather(out=)", "scatter_add", "embedding_backward"):
        assert op in r.stdout
    # the gather rows name the NumPy spelling that won, one of the three fast ones
    gather_rows = [line for line in r.stdout.splitlines()
                   if line.startswith("gather") and line.endswith("x")]
    assert len(gather_rows) == 2
    assert all(any(p in line for p in _bench.PEER_SPELLINGS["gather"]) for line in gather_rows)


def test_main_job_piped_into_head_stops_without_a_traceback():
    # `python -m fastembed_ext | head -3`: the reader leaves after three lines
    with subprocess.Popen([sys.executable, "-m", "fastembed_ext"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as proc:
        lines = [proc.stdout.readline() for _ in range(3)]
        proc.stdout.close()
        err = proc.stderr.read().decode()
        rc = proc.wait(timeout=300)
    assert lines[0].startswith(b"fastembed_ext ")
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert rc == 141


def test_info_prints_json():
    r = _cli("info")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["compiled"] is True and info["backend"] == "cython"


def test_check_sweep_passes_and_says_what_it_covered_with_v():
    r = _cli("check", "-v")
    assert r.returncode == 0, r.stdout + r.stderr
    first = r.stdout.splitlines()[0]
    assert first == "check: 648 of 648 comparisons bit-identical to NumPy"
    for covered in ("operations", "float16, float32, float64", "int32, int64, uint16",
                    "threads      1, 2, 3, 8", "NaNs with payloads"):
        assert covered in r.stdout
    tallies = [line.split() for line in r.stdout.splitlines()
               if line.strip().startswith(("gather ", "scatter_add ", "embedding_backward "))]
    assert len(tallies) == 3 * 3 * 3                      # op x value dtype x index dtype
    assert sum(int(t[3]) for t in tallies) == 648         # "24 of 24"


def test_check_without_v_is_one_line():
    r = _cli("check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == ["check: 648 of 648 comparisons bit-identical to NumPy "
                                     "(-v: what was covered)"]


def test_main_job_fails_without_the_compiled_backend():
    code = ("import sys, fastembed_ext._runtime as r; r.kernels = None; r.kernels_error = 'gone';"
            "from fastembed_ext.__main__ import main; sys.exit(main([]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "compiled extension is not available: gone" in r.stderr


# --------------------------------------------------------------------------
# bench: bad options fail before the sweep

@pytest.mark.parametrize("args, message", [
    (["--json", "/nonexistent-dir/x.json"], "--json /nonexistent-dir/x.json: the directory"),
    (["--json", "{tmp}"], "is a directory"),
    (["--plot", "/nonexistent-dir/x.png"], "--plot /nonexistent-dir/x.png: the directory"),
    (["--plot", "{tmp}/speedup.txt"], "image format"),
    (["--plot", "{tmp}/speedup"], "got no extension"),
])
def test_bench_refuses_a_bad_output_path_before_the_sweep(tmp_path, args, message):
    if "--plot" in args:
        pytest.importorskip("matplotlib")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = _cli("bench", *args, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr
    assert r.stdout == ""            # nothing measured: no header, no table
    assert list(tmp_path.iterdir()) == []


def test_bench_plot_without_matplotlib_fails_before_the_sweep(tmp_path):
    # a directory that shadows matplotlib with a package that cannot be imported
    fake = tmp_path / "shadow" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "shadow"))
    r = _cli("bench", "--quick", "--plot", str(tmp_path / "s.png"), env=env, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--plot needs matplotlib" in r.stderr and "fastembed_ext[plot]" in r.stderr
    assert r.stdout == ""
    assert not (tmp_path / "s.png").exists()


def test_bench_load_takes_no_sweep_options():
    r = _cli("bench", "--load", "--quick", timeout=60)
    assert r.returncode == 2
    assert "--load runs on its own" in r.stderr


# --------------------------------------------------------------------------
# bench: one quick sweep, its JSON, its table, its plot and the README script

def test_bench_quick_json_holds_medians_machine_versions_threads_and_load(tmp_path):
    path = tmp_path / "bench.json"
    plot = tmp_path / "speedup.png"
    has_mpl = True
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        has_mpl = False
    args = ["bench", "--quick", "--json", str(path)] + (["--plot", str(plot)] if has_mpl else [])
    r = _cli(*args, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(path.read_text())
    meta = data["meta"]
    assert data["schema"] == 2 and meta["quick"] is True
    assert meta["threads"][0] == 1 and meta["threads"][1] >= 2
    for key in ("cpu_model", "isa_level", "logical_cpus", "usable_cpus"):
        assert meta["machine"][key], key
    assert meta["versions"]["numpy"] and meta["versions"]["fastembed_ext"]
    assert meta["load"]["samples"] == len(data["results"]) + 1
    assert meta["summary"] == _bench.machine_line(meta)
    counts = [str(n) for n in meta["threads"]]
    for row in data["results"]:
        for op in ("gather", "scatter_add"):
            entry = row[op]
            peers = entry["peer_seconds"]
            assert set(peers) == set(_bench.PEER_SPELLINGS[op])
            assert entry["peer"] == min(peers, key=peers.get)       # the fastest one won
            assert set(entry["fastembed_seconds"]) == set(counts)
            for n in counts:
                assert entry["speedup"][n] == peers[entry["peer"]] / entry["fastembed_seconds"][n]
    # the table: the peer that won is named and the thread ratio says whose it is
    assert "gather(out=), vs the fastest NumPy spelling" in r.stdout
    assert "scatter_add, vs np.add.at" in r.stdout
    assert f"{counts[1]}t/1t: {counts[1]} threads over 1 thread, for that operation" in r.stdout
    # progress into a pipe: one plain line per case, no carriage returns
    assert "\r" not in r.stderr
    assert r.stderr.count("\n") == len(data["results"])
    if has_mpl:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    if README_NUMBERS.exists():   # a source checkout: the README script reads this file
        readme = tmp_path / "README.md"
        readme.write_text(f"# top\n\n{_readme_markers()}\n\nafter\n")
        quick_refused = subprocess.run([sys.executable, str(README_NUMBERS), str(path),
                                        "--readme", str(readme)], capture_output=True, text=True)
        assert quick_refused.returncode == 2 and "--quick run" in quick_refused.stderr
        ok = subprocess.run([sys.executable, str(README_NUMBERS), str(path), "--readme",
                             str(readme), "--allow-quick"], capture_output=True, text=True)
        assert ok.returncode == 0, ok.stderr
        text = readme.read_text()
        assert text.startswith("# top\n\n") and text.endswith("\n\nafter\n")
        assert meta["summary"] in text
        first = data["results"][0]
        assert f"`{first['gather']['peer']}`" in text
        # the ratio as the script prints it (two decimals under 10x, one under 100x, none above)
        assert _readme_numbers()._x(first['scatter_add']['speedup']['1']) in text


def _readme_numbers():
    sys.path.insert(0, str(README_NUMBERS.parent))
    try:
        import readme_numbers
    finally:
        sys.path.pop(0)
    return readme_numbers


def _readme_markers():
    readme_numbers = _readme_numbers()
    return f"{readme_numbers.BEGIN}\nold numbers\n{readme_numbers.END}"


def test_progress_rewrites_one_line_on_a_terminal_and_writes_lines_to_a_log():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty, log = Tty(), io.StringIO()
    for stream in (tty, log):
        progress = _bench.Progress(3, stream)
        for k in (1, 2, 3):
            progress.step(k, f"case {k}")
        progress.done()
    assert log.getvalue() == "[1/3] case 1\n[2/3] case 2\n[3/3] case 3\n"
    assert "\n" not in tty.getvalue() and tty.getvalue().count("\r") == 5
    assert tty.getvalue().endswith("\r")


@pytest.mark.parametrize("flags, level", [
    (set(), "unknown"),
    ({"sse2"}, "x86-64-v1"),
    ({"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"}, "x86-64-v2"),
    ({"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3", "avx", "avx2", "bmi1",
      "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}, "x86-64-v3"),
    ({"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3", "avx512f", "avx512bw",
      "avx512cd", "avx512dq", "avx512vl"}, "x86-64-v2"),   # AVX-512 without AVX2 is not v4
])
def test_isa_level_is_the_highest_x86_64_level_whose_flags_are_all_there(flags, level):
    assert _bench.isa_level("x86_64", flags) == level


def test_isa_level_names_aarch64_extensions():
    assert _bench.isa_level("aarch64", {"asimd", "sve"}) == "aarch64 (sve)"
    assert _bench.isa_level("aarch64", {"asimd"}) == "aarch64"

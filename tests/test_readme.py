"""Every ```python block of the README runs as written.

Each block runs alone, in a fresh interpreter, in an empty directory, with
the installed package: what a reader who pastes it into a new session gets.
A block that imports torch is skipped when torch is not installed.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def python_blocks(text):
    """(first line number, code) of every ```python block of ``text``."""
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in FENCE.finditer(text)]


def _blocks():
    if not README.exists():      # an installed copy of the tests, without the README
        return []
    return python_blocks(README.read_text())


BLOCKS = _blocks()


def _has(module):
    r = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True)
    return r.returncode == 0


def test_the_readme_has_python_blocks_to_run():
    if not README.exists():
        pytest.skip("README.md is not beside tests/")
    assert len(BLOCKS) >= 3


def test_block_extraction_finds_python_fences_only():
    text = "a\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = 2\nz = 3\n```\n"
    assert python_blocks(text) == [(2, "x = 1\n"), (8, "y = 2\nz = 3\n")]


@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_readme_python_block_runs_as_written(line, code, tmp_path):
    if re.search(r"^\s*(import torch|from torch|import fastembed_ext\.torch)", code, re.M) \
            and not _has("torch"):
        pytest.skip("the block needs torch, which is not installed")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, f"README.md line {line}:\n{code}\n--- stderr:\n{r.stderr}"


# --------------------------------------------------------------------------
# scripts/readme_numbers.py: only the block between the markers is its own

SCRIPT = README.parent / "scripts" / "readme_numbers.py"


@pytest.fixture
def readme_numbers():
    if not SCRIPT.exists():
        pytest.skip("scripts/readme_numbers.py is not beside tests/")
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import readme_numbers
    finally:
        sys.path.pop(0)
    return readme_numbers


def test_the_readme_holds_the_numbers_markers_once(readme_numbers):
    text = README.read_text()
    assert text.count(readme_numbers.BEGIN) == 1 and text.count(readme_numbers.END) == 1
    assert text.index(readme_numbers.BEGIN) > text.index("## Numbers")


def test_readme_numbers_rewrites_only_between_the_markers(readme_numbers):
    m = readme_numbers
    text = f"intro\n\n{m.BEGIN}\nold\n{m.END}\n\nrest\n"
    once = m.rewrite(text, "new table")
    assert once == f"intro\n\n{m.BEGIN}\nnew table\n{m.END}\n\nrest\n"
    assert m.rewrite(once, "new table") == once
    for broken in ("no markers", f"{m.BEGIN}\n{m.BEGIN}\n{m.END}", f"{m.END}\nx\n{m.BEGIN}"):
        with pytest.raises(m.BenchError):
            m.rewrite(broken, "x")


def test_readme_numbers_refuses_a_file_that_is_not_a_bench_run(readme_numbers, tmp_path):
    for content in ("not json", '{"schema": 1}', '{"schema": 2, "meta": {}, "results": []}'):
        path = tmp_path / "bench.json"
        path.write_text(content)
        with pytest.raises(readme_numbers.BenchError):
            readme_numbers.load(str(path))


# --------------------------------------------------------------------------
# scripts/readme_numbers.py --dropin: the drop-in's costs, from bench/test_dropin.py

def _dropin_run(path, groups):
    """A pytest-benchmark JSON of ``groups``: group -> backend -> median seconds."""
    runs = [{"group": g, "extra_info": {"backend": b}, "stats": {"median": m}}
            for g, backends in groups.items() for b, m in backends.items()]
    path.write_text(json.dumps({"machine_info": {"cpu": {"brand_raw": "Test CPU"}},
                                "datetime": "2026-12-01T05:00:00", "benchmarks": runs}))
    return str(path)


def test_the_readme_holds_the_dropin_markers_once_in_the_dropin_section(readme_numbers):
    m = readme_numbers
    text = README.read_text()
    assert text.count(m.DROPIN_BEGIN) == 1 and text.count(m.DROPIN_END) == 1
    section = text.index("## Drop-in for")
    assert section < text.index(m.DROPIN_BEGIN) < text.index(m.DROPIN_END) < text.index(m.BEGIN)


def test_readme_numbers_dropin_tables_give_each_groups_medians_and_ratio(readme_numbers, tmp_path):
    m = readme_numbers
    path = _dropin_run(tmp_path / "dropin.json", {
        "add_at rows: float32 T=30000 d=128 B=65536 1 thread": {"numpy": 0.060, "add_at": 0.005},
        "add_at rows: float32 T=30000 d=16 B=65536 1 thread": {"numpy": 0.010, "add_at": 0.001},
        "take rows: float32 T=30000 d=64 B=65536 1 thread": {"numpy": 0.002, "take": 0.004},
        "add_at fallback: slice": {"numpy": 5e-6, "add_at": 6.5e-6},
        "take fallback: axis=1": {"numpy": 8e-6, "take": 7.5e-6},
        "take fallback: only one side": {"take": 1e-6},
    })
    block = m.render_dropin(m.load_dropin(path))
    assert "(Test CPU, 2026-12-01)" in block
    lines = block.splitlines()
    rows = [line for line in lines if line.startswith("| `")]
    # widths in order within each call, add_at first; a group without its NumPy row is left out
    assert rows == ["| `add_at` | 16 | 10.000 | 1.000 | 10.0x |",
                    "| `add_at` | 128 | 60.000 | 5.000 | 12.0x |",
                    "| `take` | 64 | 2.000 | 4.000 | 0.50x |",
                    "| `add_at` | slice | 5.00 | 6.50 | +1.50 |",
                    "| `take` | axis=1 | 8.00 | 7.50 | -0.50 |"]


def test_readme_numbers_dropin_refuses_a_file_that_is_not_a_dropin_run(readme_numbers, tmp_path):
    m = readme_numbers
    rows_only = {"take rows: float32 T=30000 d=64 B=65536 1 thread": {"numpy": 1.0, "take": 1.0}}
    bad = tmp_path / "bad.json"
    for content in ("not json", '{"benchmarks": []}', json.dumps({"schema": 2})):
        bad.write_text(content)
        with pytest.raises(m.BenchError):
            m.load_dropin(str(bad))
    with pytest.raises(m.BenchError, match="row and fallback groups"):
        m.load_dropin(_dropin_run(tmp_path / "rows.json", rows_only))


def test_readme_numbers_rewrites_each_block_between_its_own_markers(readme_numbers, tmp_path):
    m = readme_numbers
    text = (f"intro\n{m.DROPIN_BEGIN}\nold costs\n{m.DROPIN_END}\nmiddle\n"
            f"{m.BEGIN}\nold numbers\n{m.END}\nend\n")
    once = m.rewrite(text, "new costs", m.DROPIN_BEGIN, m.DROPIN_END)
    assert once == text.replace("old costs", "new costs")
    readme = tmp_path / "README.md"
    readme.write_text(text)
    path = _dropin_run(tmp_path / "dropin.json", {
        "add_at rows: float32 T=30000 d=16 B=65536 1 thread": {"numpy": 0.010, "add_at": 0.001},
        "add_at fallback: slice": {"numpy": 5e-6, "add_at": 6.5e-6}})
    assert m.main(["--dropin", path, "--readme", str(readme), "--check"]) == 1
    assert m.main(["--dropin", path, "--readme", str(readme)]) == 0
    written = readme.read_text()
    assert "old costs" not in written and "| `add_at` | 16 |" in written
    assert f"{m.BEGIN}\nold numbers\n{m.END}" in written
    assert m.main(["--dropin", path, "--readme", str(readme), "--check"]) == 0

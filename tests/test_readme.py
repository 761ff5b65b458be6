"""Every ```python block of the README runs as written.

Each block runs alone, in a fresh interpreter, in an empty directory, with
the installed package: what a reader who pastes it into a new session gets.
A block that imports torch is skipped when torch is not installed.
"""
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

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

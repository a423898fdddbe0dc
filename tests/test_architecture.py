"""The package's shape: imports point down the layers (pyproject's import-linter contracts), no cycles, no
module imports the package root, and the lint is clean. The checks are shown to fail on a planted violation."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "lint-imports"), "--no-cache"], cwd=root, capture_output=True, text=True,
                          timeout=300, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def test_imports_point_down_and_have_no_cycles():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "BROKEN" not in result.stdout


@pytest.mark.parametrize("where, line", [
    ("recgen/data/_planted.py", "from ..cli import main\n"),                      # upward import
    ("recgen/lm/_planted.py", "def f():\n    from ..ranking import ranker\n"),   # upward, hidden in a function
    ("recgen/retrieval/_planted.py", "from . import cache\n"),                   # a cycle inside a layer
])
def test_the_import_check_fails_on_a_planted_violation(tmp_path, where, line):
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "recgen", copy / "recgen", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    (copy / where).write_text(line)
    if where.startswith("recgen/retrieval"):  # close the loop: cache -> _planted -> cache
        cache = copy / "recgen/retrieval/cache.py"
        cache.write_text(cache.read_text() + "\nfrom . import _planted  # noqa: E402,F401\n")
    result = lint_imports(copy)
    assert result.returncode != 0 and "BROKEN" in result.stdout, result.stdout[-2000:]


def test_no_module_imports_the_package_root():
    """``from .. import x`` in a subpackage runs the root ``__init__`` (which imports the whole API): a hidden
    upward import. Shared values live in leaves (``recgen.version``)."""
    import grimp

    graph = grimp.build_graph("recgen")
    assert graph.find_modules_that_directly_import("recgen") == set()


def test_ruff_is_clean():
    result = subprocess.run([str(BIN / "ruff"), "check", "recgen", "tests", "benchmarks", "scripts", "finetune", "eval"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:]

"""The package's shape: imports point down the layers (pyproject's import-linter contracts), no cycles, no
module imports the package root, and the lint is clean. The checks are shown to fail on a planted violation."""

from __future__ import annotations

import re
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


def _tracked(*patterns: str) -> list[str]:
    result = subprocess.run(["git", "ls-files", "-z", *patterns], cwd=REPO, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        pytest.skip(f"not a git checkout: {result.stderr.strip()}")
    return [name for name in result.stdout.split("\0") if name]


#: A folder of one machine (work, root, tmp, home, opt at the root) starting a path after a quote, ``=``, ``(``
#: or a space.
#: Built from pieces so that this file does not match itself.
_MACHINE_ROOTS = "|".join(["wo" + "rk", "ro" + "ot", "t" + "mp", "ho" + "me", "o" + "pt"])
ABSOLUTE_PATH = re.compile(r"(?:^|[\s\"'`=(])(/(?:" + _MACHINE_ROOTS + r")/[^\s\"'`)]*)", re.MULTILINE)


def absolute_paths(text: str) -> list[str]:
    return [match.group(1) for match in ABSOLUTE_PATH.finditer(text)]


def test_the_absolute_path_check_catches_a_planted_path():
    script, scratch = "/" + "ho" + "me/me/run.py", "/" + "t" + "mp/scratch"
    planted = f"cmd = 'python {script}'\nx={scratch}\nok = '<cache>/fusion' and ../shared/data and a/tmp/b"
    assert absolute_paths(planted) == [script, scratch]


def test_no_tracked_file_names_a_folder_of_one_machine():
    """Scripts, notes and result files are read on other machines: paths are relative to the repo, the cache
    (``<cache>/``) or the data root, never this machine's folders."""
    found = []
    for name in _tracked():
        path = REPO / name
        if name.endswith(".gz") or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary (PNG, ...)
        found += [f"{name}: {hit}" for hit in absolute_paths(text)]
    assert not found, "absolute paths of one machine:\n" + "\n".join(found[:50])


def test_results_folders_hold_results_not_code():
    """Analyses live in eval/scripts (linted, paths as arguments); results folders hold data and notes."""
    code = [name for name in _tracked("eval/results") if name.endswith((".py", ".sh"))]
    assert not code, f"move these to eval/scripts/ (or delete one-off checks, keeping their figures): {code}"

"""recgen.batch's modules import downwards only: the two runners share recgen.batch.jobs and never import each
other, Ray is imported only inside ray_runner (it is an optional extra), and nothing in batch imports the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import recgen.batch

BATCH = Path(recgen.batch.__file__).parent


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at module level?) for every import of a file, relative imports made absolute."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = "recgen" if node.level == 2 else "recgen.batch"
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append((module, id(node) in top))
    return found


def test_runners_do_not_import_each_other():
    runner = {m for m, _ in _imports(BATCH / "runner.py")}
    ray_runner = {m for m, _ in _imports(BATCH / "ray_runner.py")}
    assert "recgen.batch.ray_runner" in runner  # the local runner dispatches to Ray
    assert "recgen.batch.runner" not in ray_runner
    assert "recgen.batch.jobs" in ray_runner and "recgen.batch.jobs" in runner
    for path in BATCH.glob("*.py"):
        if path.name not in ("runner.py", "ray_runner.py", "__init__.py"):
            assert not {m for m, _ in _imports(path)} & {"recgen.batch.runner", "recgen.batch.ray_runner"}, path.name


def test_no_function_level_imports_of_recgen_and_ray_only_in_ray_runner():
    for path in sorted(BATCH.glob("*.py")):
        for module, top_level in _imports(path):
            assert not module.startswith("recgen.cli"), f"{path.name} imports {module}"
            if module.startswith("recgen"):
                assert top_level, f"{path.name} imports {module} inside a function"
            if module.split(".")[0] == "ray":
                assert path.name == "ray_runner.py" and not top_level, f"{path.name} imports ray at module level"


def test_importing_batch_does_not_import_ray():
    import subprocess
    import sys

    code = "import sys, recgen.batch.runner, recgen.batch.ray_runner; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

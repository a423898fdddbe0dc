"""A CLI call that needs no LM starts without torch, transformers, sentence-transformers or vLLM: ``recgen --help``,
and ``recgen recommend --no-reasons`` for a user with a history (fused order, or the hybrid order when nothing is
fitted: the history's vectors come from the index, so no query is embedded). Checked in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recgen.cli.main import app
from recgen.evaluation.synthetic import chain_dataset, write_generic

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "sentence_transformers", "vllm")
PROBE = """
import json, runpy, sys
sys.argv = ["recgen", *json.loads(sys.argv[1])]
try:
    runpy.run_module("recgen.cli.main", run_name="__main__")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print(json.dumps({"code": code, "loaded": [m for m in %r if m in sys.modules]}), file=sys.stderr)
""" % (HEAVY,)


def _loaded(args: list[str], cache: Path) -> list[str]:
    env = {**os.environ, "RECGEN_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], env=env, capture_output=True, text=True,
                         timeout=300)
    report = json.loads(out.stderr.strip().splitlines()[-1])
    assert report["code"] in (0, None), out.stderr[-2000:]
    return report["loaded"]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    return write_generic(chain_dataset(n_items=40, n_users=120, length=8, seed=5), tmp_path_factory.mktemp("d") / "c")


def test_help_imports_no_model_library(tmp_path):
    assert _loaded(["--help"], tmp_path) == []


def test_recommend_without_reasons_imports_no_model_library(chain, tmp_path, monkeypatch):
    args = ["recommend", "-d", str(chain), "--user", "u3", "--no-reasons", "--json"]
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path))
    assert CliRunner().invoke(app, ["index", "-d", str(chain), "--json"]).exit_code == 0  # the index, as a user has
    assert _loaded(args, tmp_path) == []  # nothing fitted: the hybrid retrieval order
    assert CliRunner().invoke(app, ["fit", "-d", str(chain), "--threads", "1"]).exit_code == 0
    assert _loaded(args, tmp_path) == []  # the fused order

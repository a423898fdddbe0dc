"""Fit once: ``recgen fit`` stores the fusion fit it makes on the evaluation split, and ``recgen eval run -s
fusion`` / ``eval requests --ranker fusion`` reuse it (no refit, the same metrics, and they say so); with
nothing stored the evaluation fits and stores it; a damaged store is refitted, never trusted. The stored fit
is the training-part fit (no test target), never the served one."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from recgen.cli.main import app
from recgen.data import load_dataset
from recgen.evaluation.protocol import EvalData
from recgen.evaluation.synthetic import chain_dataset, write_generic
from recgen.fit.fusion import FusionFitter
from recgen.fit.store import fit_folder, fit_key


@pytest.fixture(scope="module")
def chain_dir(tmp_path_factory):
    return write_generic(chain_dataset(n_items=40, n_users=150, length=8, seed=3), tmp_path_factory.mktemp("d") / "chain")


@pytest.fixture()
def fits(monkeypatch, tmp_path):
    """Counts FusionFitter.fit calls; a fresh cache."""
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    calls = []
    original = FusionFitter.fit

    def counted(self, data, log=None, **rest):
        calls.append(1)
        return original(self, data, log=log, **rest)

    monkeypatch.setattr(FusionFitter, "fit", counted)
    return calls


def _eval(chain_dir, results, name):
    result = CliRunner().invoke(app, ["eval", "run", "-d", str(chain_dir), "-s", "fusion", "--threads", "1",
                                      "--run-name", name, "--results-dir", str(results), "--no-report", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.output


def test_eval_reuses_the_fit_of_recgen_fit_and_scores_the_same(chain_dir, tmp_path, fits):
    result = CliRunner().invoke(app, ["fit", "-d", str(chain_dir), "-o", str(tmp_path / "fitted"), "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert len(fits) == 1
    assert "LightGBM trial" in result.output and "fusion features" in result.output  # progress, not silence
    reused, output = _eval(chain_dir, tmp_path / "r", "after-fit")
    assert len(fits) == 1, "eval run refitted the second stage that recgen fit had stored"
    assert "reusing the fit from" in output
    requests = CliRunner().invoke(app, ["eval", "requests", "-d", str(chain_dir), "--ranker", "fusion", "--threads",
                                        "1", "--users", "10", "--results-dir", str(tmp_path / "r"), "--json"])
    assert requests.exit_code == 0, requests.output
    assert len(fits) == 1, "eval requests refitted the second stage that recgen fit had stored"
    # the same evaluation with a fit made from scratch
    for folder in (tmp_path / "cache" / "fusion-eval").iterdir():
        __import__("shutil").rmtree(folder)
    fresh, _ = _eval(chain_dir, tmp_path / "r", "fresh")
    assert len(fits) == 2
    assert fresh["metrics"] == reused["metrics"]
    assert reused["fit"]["stored_fit"]["reused"] and not fresh["fit"]["stored_fit"]["reused"]
    again, output = _eval(chain_dir, tmp_path / "r", "again")  # the evaluation stored its fit: no refit
    assert len(fits) == 2 and "reusing the fit from" in output
    assert again["metrics"] == fresh["metrics"]


def test_the_stored_fit_saw_only_the_training_parts(chain_dir, tmp_path, fits):
    _eval(chain_dir, tmp_path / "r", "one")
    data = EvalData.from_dataset(load_dataset(chain_dir))
    folder = fit_folder(data, fit_key(FusionFitter(threads=1), data))
    with np.load(folder / "popularity.npz") as arrays:
        seen = arrays["popularity"].sum()
    assert seen == sum(len(s) for s in data.train_sequences())  # no validation or test target counted
    assert not any(p.suffix in (".pkl", ".pickle") for p in folder.rglob("*"))


def test_a_damaged_stored_fit_is_refitted_not_trusted(chain_dir, tmp_path, fits):
    first, _ = _eval(chain_dir, tmp_path / "r", "one")
    data = EvalData.from_dataset(load_dataset(chain_dir))
    folder = fit_folder(data, fit_key(FusionFitter(threads=1), data))
    (folder / "ranker.txt").write_text("tree\nnot a model")
    second, output = _eval(chain_dir, tmp_path / "r", "two")
    assert len(fits) == 2 and "not usable" in output
    assert second["metrics"] == first["metrics"]
    _, output = _eval(chain_dir, tmp_path / "r", "three")  # replaced by the good fit
    assert len(fits) == 2 and "reusing the fit from" in output


def test_other_settings_are_another_fit(chain_dir, tmp_path, fits):
    data = EvalData.from_dataset(load_dataset(chain_dir))
    assert fit_key(FusionFitter(threads=1), data) != fit_key(FusionFitter(threads=1, leaves=(7,)), data)
    assert fit_key(FusionFitter(threads=1), data) != fit_key(FusionFitter(threads=2), data)


def test_eval_run_help_lists_every_registered_system_and_threads():
    from recgen.evaluation.systems import SYSTEMS

    result = CliRunner().invoke(app, ["eval", "run", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    assert all(name in result.output for name in SYSTEMS) and "fusion" in result.output
    assert "--threads" in result.output


@pytest.mark.parametrize("args", [["-s", "popular", "--threads", "1"],
                                  ["-s", "fusion", "--threads", "1", "-p", "threads=2"]])
def test_threads_is_for_fusion_and_said_once(args, chain_dir, tmp_path):
    result = CliRunner().invoke(app, ["eval", "run", "-d", str(chain_dir), *args, "--results-dir", str(tmp_path)])
    assert result.exit_code == 2 and "threads" in result.output

"""Every list says which ranker ordered it: a typed ``ranker`` field on each Recommendation (the fused
LightGBM ranker, the request stage, the hybrid retrieval order, the LM, the popularity fallback), shown by
``recgen recommend`` in its table and its JSON."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from recgen import RecgenConfig, Recommender
from recgen.cli.main import app
from recgen.data import load_dataset
from recgen.evaluation.synthetic import chain_dataset, write_generic
from recgen.fit.serving import fit_for_serving
from recgen.types import Recommendation


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("RECGEN_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    folder = write_generic(chain_dataset(n_items=40, n_users=150, length=8, seed=2), tmp_path_factory.mktemp("d") / "c")
    yield folder, load_dataset(folder)
    mp.undo()


@pytest.fixture(scope="module")
def fitted(env):
    return fit_for_serving(env[1], RecgenConfig(), threads=1)


def _history(dataset):
    return dataset.sequences["u3"][:-1]


def test_each_list_names_its_ranker(env, fitted):
    _, dataset = env
    assert fitted.fusion is not None
    assert {r.ranker for r in fitted.recommend(history=_history(dataset), k=5, reasons=False)} == {"fusion"}
    assert {r.ranker for r in fitted.recommend(k=5, reasons=False)} == {"popularity"}
    with_request = fitted.recommend(history=_history(dataset), query="comedy", k=5, reasons=False)
    want = "request_stage" if fitted.pipeline.request_fusion is not None else "retrieval"
    assert {r.ranker for r in with_request} == {want}
    unfitted = Recommender.from_dataset(dataset, RecgenConfig())  # no ranker fitted: the hybrid order
    assert {r.ranker for r in unfitted.recommend(history=_history(dataset), k=5, reasons=False)} == {"retrieval"}


def test_the_ranker_field_is_typed():
    with pytest.raises(ValidationError):
        Recommendation(item_id="i1", title="t", rank=1, score=1.0, ranker="whatever")


def test_cli_recommend_shows_the_ranker(env, fitted):
    folder, _ = env
    runner = CliRunner()
    assert runner.invoke(app, ["fit", "-d", str(folder), "--threads", "1"]).exit_code == 0
    result = runner.invoke(app, ["recommend", "-d", str(folder), "--user", "u3", "--no-reasons", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["ranker"] == "fusion" and {r["ranker"] for r in out["recommendations"]} == {"fusion"}
    result = runner.invoke(app, ["recommend", "-d", str(folder), "--user", "u3", "--no-reasons"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "ordered by: fused LightGBM ranker" in result.output

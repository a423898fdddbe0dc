"""The CLI as a user runs it: real default models on real ml-100k (skipped where absent), clear errors."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from recgen.cli.main import app

runner = CliRunner()


def test_unknown_dataset_is_a_clear_error_not_a_traceback():
    result = runner.invoke(app, ["recommend", "--dataset", "/no/such/folder", "--user", "1"])
    assert result.exit_code == 2
    assert "not found" in result.output and "Traceback" not in result.output


def test_bad_mode_is_rejected():
    result = runner.invoke(app, ["recommend", "--mode", "dance", "--user", "1"])
    assert result.exit_code != 0


@pytest.mark.integration
def test_recommend_json_for_a_real_user(shared_data, tmp_path):
    env_cmd = [sys.executable, "-m", "recgen.cli.main", "recommend", "--dataset", str(shared_data / "ml-100k"),
               "--user", "1", "-k", "3", "--json"]
    out = subprocess.run(env_cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout)
    recs = data["recommendations"]
    assert len(recs) == 3 and [r["rank"] for r in recs] == [1, 2, 3]
    assert not {r["item_id"] for r in recs} & set(data["history"])
    assert all(r["reason"] for r in recs)


@pytest.mark.integration
def test_unknown_user_exit_code_2(shared_data):
    result = runner.invoke(app, ["recommend", "--dataset", str(shared_data / "ml-100k"), "--user", "99999",
                                 "--no-reasons"])
    assert result.exit_code == 2
    assert "'99999' is not in dataset" in result.output


def test_finetune_by_recipe_dispatches_on_kind_and_reports_bad_recipes(tmp_path, monkeypatch):
    """`recgen finetune --config X.yaml` picks the trainer from the recipe's kind; bad recipes fail clearly."""
    import recgen.cli.finetune_cmd as cmd

    called = []
    monkeypatch.setattr(cmd, "ranker", lambda config, **kw: called.append(("ranker", config, kw["resume"])))
    monkeypatch.setattr(cmd, "retriever", lambda config: called.append(("retriever", config)))
    ranker_yaml, retriever_yaml, bad_yaml = tmp_path / "r.yaml", tmp_path / "e.yaml", tmp_path / "bad.yaml"
    ranker_yaml.write_text("name: a\ndataset: d\noutput_dir: o\n")  # kind defaults to ranker
    retriever_yaml.write_text("name: b\nkind: retriever\ndataset: d\noutput_dir: o\n")
    bad_yaml.write_text("name: c\nkind: teacher\n")
    assert runner.invoke(app, ["finetune", "--config", str(ranker_yaml), "--resume", "latest"]).exit_code == 0
    assert runner.invoke(app, ["finetune", "--config", str(retriever_yaml)]).exit_code == 0
    assert called == [("ranker", str(ranker_yaml), "latest"), ("retriever", str(retriever_yaml))]
    result = runner.invoke(app, ["finetune", "--config", str(bad_yaml)])
    assert result.exit_code == 2 and "teacher" in result.output
    result = runner.invoke(app, ["finetune", "--config", str(retriever_yaml), "--resume", "latest"])
    assert result.exit_code == 2 and "ranker recipes only" in result.output
    result = runner.invoke(app, ["finetune", "--config", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "missing.yaml" in result.output


def test_the_demo_fits_a_dataset_once_so_the_fused_order_is_served(tmp_path, monkeypatch, caplog):
    """`make demo` on a fresh clone must show the default path (the fused second stage), not the unfitted
    fallback: the demo fits what is missing, once, and the next run loads the cached fit."""
    from recgen import RecgenConfig
    from recgen.cli import fit_cmd
    from recgen.cli.main import fit_if_missing
    from recgen.evaluation.synthetic import chain_dataset, write_generic
    from recgen.recommender import open_dataset

    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    chain = write_generic(chain_dataset(n_items=40, n_users=200, length=8, seed=1), tmp_path / "chain")
    assert fit_if_missing(str(chain), RecgenConfig()) is True
    with caplog.at_level("WARNING"):
        _, rec = open_dataset(str(chain), RecgenConfig())
    assert rec.pipeline.state.ranker is not None
    assert "no fused second stage" not in caplog.text
    monkeypatch.setattr(fit_cmd, "fit", lambda **kw: pytest.fail("refitted a cached fit"))
    assert fit_if_missing(str(chain), RecgenConfig()) is False
    assert fit_if_missing(str(chain), RecgenConfig().updated(ranking={"second_stage": "lm"})) is False

"""The harness: own-history masking, stage histories, seeded samples, run files, resume and overwrite."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from recgen.evaluation.metrics import metrics_from_ranks
from recgen.evaluation.protocol import EvalData, list_row, list_rows, sample_users, score_rows
from recgen.evaluation.runner import RunExistsError, RunSpec, read_user_file, run_evaluation
from recgen.evaluation.synthetic import chain_dataset, write_generic


class HistoryLover:
    """Scores the user's own history highest and the true next item (last + 1 on the ring) second."""

    name = "history-lover"

    def __init__(self, n_items: int):
        self.n = n_items

    def fit(self, data, log=None):
        pass

    def score(self, histories):
        scores = np.zeros((len(histories), self.n))
        for r, hist in enumerate(histories):
            scores[r, hist] = 100.0
            scores[r, (hist[-1] + 1) % self.n] = 50.0
        return scores

    def params(self):
        return {}


@pytest.fixture()
def data():
    return EvalData.from_dataset(chain_dataset(n_items=30, n_users=50, length=7, short_users=3))


def test_split_and_stage_histories(data):
    assert data.n_users == 50 and data.excluded_users == 3  # users with < 3 interactions excluded, counted
    p = 0
    seq = data.dataset.sequences[data.user_ids[p]]
    ids = data.dataset.catalog.ids
    assert [ids[i] for i in data.history("valid", p)] == seq[:-2]
    assert [ids[i] for i in data.history("test", p)] == seq[:-1]
    assert ids[data.target("valid", p)] == seq[-2] and ids[data.target("test", p)] == seq[-1]
    assert all(len(s) == 5 for s in data.train_sequences())  # fitted data never holds valid/test targets
    with pytest.raises(ValueError):
        data.history("train", 0)


@pytest.mark.parametrize("stage", ["valid", "test"])
def test_history_items_are_masked_never_ranked(data, stage):
    rows = [r for rows in score_rows(HistoryLover(data.n_items), data, stage, range(data.n_users), batch_size=7)
            for r in rows]
    assert len(rows) == data.n_users
    # without masking the target would be ranked after the 5-6 history items; with it, it is first
    assert all(r["rank"] == 1 for r in rows)
    assert all(r["ndcg@10"] == 1.0 for r in rows)


def test_unmasked_system_would_fail(data):
    """The masking test above can fail: a target that is itself masked ranks last."""

    class TargetInHistory(HistoryLover):
        def score(self, histories):
            return -super().score(histories)  # history items lowest, others 0: rank is a large tie

    rows = [r for rows in score_rows(TargetInHistory(data.n_items), data, "test", [0]) for r in rows]
    assert rows[0]["rank"] > 10 and rows[0]["ndcg@10"] == 0.0


def test_sample_is_seeded_and_identical_across_systems():
    a = sample_users(1000, 100, seed=7)
    assert np.array_equal(a, sample_users(1000, 100, seed=7))
    assert not np.array_equal(a, sample_users(1000, 100, seed=8))
    assert len(set(a.tolist())) == 100 and np.all(np.diff(a) > 0)
    assert np.array_equal(sample_users(50, 0, seed=3), np.arange(50))
    assert np.array_equal(sample_users(50, 80, seed=3), np.arange(50))


def test_list_rows_validity_and_retrieval_flags(data):
    catalog = data.dataset.catalog
    row = list_row("u", "i5", ["i1", "i2"], ["i3", "i5", "i5", "i2", "nope"], ["i3", "i4", "i5"], catalog)
    # valid = known, distinct, unseen, among candidates: i3 and the first i5 only
    assert row["rank"] == 2 and row["retrieved"] and row["n_valid"] == 2 and row["n_returned"] == 5
    miss = list_row("u", "i9", ["i1"], ["i3"], ["i3"], catalog)
    assert miss["rank"] is None and miss["ndcg@10"] == 0.0 and not miss["retrieved"]

    class Fake:
        name = "fake"

        def fit(self, data, log=None):
            pass

        def recommend(self, history):
            nxt = f"i{(int(history[-1][1:]) + 1) % 30}"
            return [nxt, "i0"], [nxt, "i0", "i7"]

        def params(self):
            return {}

    rows = [r for rows in list_rows(Fake(), data, "test", range(10), batch_size=4) for r in rows]
    assert [r["rank"] for r in rows] == [1] * 10
    assert all(r["second_stage"] for r in rows)  # no first stage exposed: every user goes through the system


def test_second_stage_only_sees_users_whose_target_was_retrieved(data):
    """A reranker cannot rescue a target that is not among its candidates: those users skip it, with
    exactly the metrics they would have had (0), and the row says so."""
    ids = data.dataset.catalog.ids

    class TwoStage:
        name = "two-stage"
        ranked_histories: list = []

        def candidates_many(self, histories):
            # even users' targets are retrieved (the true next item), odd users' are not
            return [[f"i{(int(h[-1][1:]) + 1) % 30}", "i0", "i7"] if int(h[-1][1:]) % 2 == 0 else ["i0", "i7"]
                    for h in histories]

        def recommend_many(self, histories):
            self.ranked_histories.extend(histories)
            return [(list(reversed(c)), c) for c in self.candidates_many(histories)]

        def params(self):
            return {}

    system = TwoStage()
    rows = [r for rows in list_rows(system, data, "test", range(10), batch_size=3) for r in rows]
    histories = [[ids[i] for i in data.history("test", p)] for p in range(10)]
    targets = [ids[data.target("test", p)] for p in range(10)]
    hits = [t in c for t, c in zip(targets, system.candidates_many(histories))]
    assert any(hits) and not all(hits)
    assert [r["second_stage"] for r in rows] == hits == [r["retrieved"] for r in rows]
    assert system.ranked_histories == [h for h, hit in zip(histories, hits) if hit]
    for row, hit in zip(rows, hits):
        if hit:
            assert row["rank"] is not None  # ranked by the second stage (reversed list)
        else:
            assert row["rank"] is None and row["ndcg@10"] == 0.0 and row["n_returned"] == row["n_candidates"] == 2


# -- run files ---------------------------------------------------------------------------------

@pytest.fixture()
def dataset_dir(tmp_path):
    return write_generic(chain_dataset(n_items=30, n_users=60, length=7, short_users=2, name="chain"),
                         tmp_path / "chain")


def _spec(dataset_dir, results, **kw):
    base = dict(dataset=str(dataset_dir), system="itemknn", stage="test", results_dir=results, n_boot=200,
                batch_size=16)
    base.update(kw)
    return RunSpec(**base)


def test_run_files_exist_never_overwritten_silently(dataset_dir, tmp_path):
    results = tmp_path / "results"
    first = run_evaluation(_spec(dataset_dir, results))
    folder = results / "chain"
    summary = json.loads((folder / "itemknn-test.json").read_text())
    assert summary["users"]["evaluated"] == 60
    assert summary["users"]["excluded_fewer_than_3_interactions"] == 2
    assert summary["metrics"]["recall@1"]["mean"] == 1.0  # the chain is deterministic
    assert {"load", "fit", "score", "metrics"} <= set(summary["timing"]["stages"])
    assert summary["environment"]["packages"]["numpy"]
    header, rows = read_user_file(folder / "itemknn-test.users.jsonl.gz")
    assert header["config_hash"] == summary["config_hash"] and len(rows) == 60
    with pytest.raises(RunExistsError, match="--overwrite"):
        run_evaluation(_spec(dataset_dir, results))
    again = run_evaluation(_spec(dataset_dir, results, overwrite=True))
    assert again["metrics"] == first["metrics"]


def test_interrupted_run_resumes_with_same_config(dataset_dir, tmp_path):
    results = tmp_path / "results"
    full = run_evaluation(_spec(dataset_dir, results, system="popular", run_name="full"))
    # simulate an interrupt: no summary, per-user file cut after 25 users with a torn last line
    run_evaluation(_spec(dataset_dir, results, system="popular", run_name="cut"))
    folder = results / "chain"
    (folder / "cut.json").unlink()
    with gzip.open(folder / "cut.users.jsonl.gz", "rt") as handle:  # finished runs keep their rows gzipped
        lines = handle.read().splitlines()
    (folder / "cut.users.jsonl.gz").unlink()
    (folder / "cut.users.jsonl").write_text("\n".join(lines[:26]) + "\n" + lines[26][:15])
    resumed = run_evaluation(_spec(dataset_dir, results, system="popular", run_name="cut"))
    assert resumed["users"]["scored_in_this_invocation"] == 35 and resumed["users"]["resumed"]
    assert resumed["metrics"] == full["metrics"]
    _, rows = read_user_file(folder / "cut.users.jsonl.gz")
    assert len({r["user"] for r in rows}) == 60


def test_interrupted_run_with_other_config_refuses(dataset_dir, tmp_path):
    results = tmp_path / "results"
    run_evaluation(_spec(dataset_dir, results, system="popular", run_name="x"))
    (results / "chain" / "x.json").unlink()
    with pytest.raises(RunExistsError, match="different configuration.*--overwrite"):
        run_evaluation(_spec(dataset_dir, results, system="itemknn", run_name="x"))
    done = run_evaluation(_spec(dataset_dir, results, system="itemknn", run_name="x", overwrite=True))
    assert done["system"] == "itemknn"


def test_sampled_runs_share_users_and_rows_match_ranks(dataset_dir, tmp_path):
    results = tmp_path / "results"
    a = run_evaluation(_spec(dataset_dir, results, system="popular", users=20, seed=5))
    b = run_evaluation(_spec(dataset_dir, results, system="itemknn", users=20, seed=5))
    assert a["run_name"] == "popular-test-u20-s5"
    _, rows_a = read_user_file(results / "chain" / a["per_user_file"])
    _, rows_b = read_user_file(results / "chain" / b["per_user_file"])
    assert [r["user"] for r in rows_a] == [r["user"] for r in rows_b] and len(rows_a) == 20
    assert [r["target"] for r in rows_a] == [r["target"] for r in rows_b]
    per_user = metrics_from_ranks([r["rank"] for r in rows_a], ks=(10,))
    assert np.allclose(per_user["ndcg@10"], [r["ndcg@10"] for r in rows_a], atol=1e-6)
    assert b["metrics"]["ndcg@10"]["mean"] > a["metrics"]["ndcg@10"]["mean"]


def test_finished_user_files_are_gzipped(dataset_dir, tmp_path):
    results = tmp_path / "results"
    summary = run_evaluation(_spec(dataset_dir, results, system="popular"))
    assert summary["per_user_file"].endswith(".gz")
    with gzip.open(results / "chain" / summary["per_user_file"], "rt") as handle:
        assert "header" in json.loads(handle.readline())
    with pytest.raises(RunExistsError):
        run_evaluation(_spec(dataset_dir, results, system="popular"))


def test_cli_run_compare_report(dataset_dir, tmp_path):
    from typer.testing import CliRunner

    from recgen.cli.eval_cmd import eval_app

    runner = CliRunner()
    results = tmp_path / "results"
    common = ["--dataset", str(dataset_dir), "--results-dir", str(results), "--bootstrap", "200"]
    out = runner.invoke(eval_app, ["run", "--system", "popular", "--json", *common])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert summary["command"].startswith("recgen eval run --dataset")
    assert runner.invoke(eval_app, ["run", "--system", "itemknn", *common]).exit_code == 0
    again = runner.invoke(eval_app, ["run", "--system", "popular", *common])
    assert again.exit_code == 2 and "--overwrite" in again.output
    cmp = runner.invoke(eval_app, ["compare", "itemknn-test", "popular-test", "--dataset", "chain",
                                   "--results-dir", str(results), "--bootstrap", "500", "--json"])
    assert cmp.exit_code == 0, cmp.output
    report = json.loads(cmp.stdout)
    assert report["users"] == 60 and 0 <= report["wilcoxon_ndcg@10"]["p_value"] < 0.001
    readme = (results / "chain" / "README.md").read_text()
    assert "itemknn-test" in readme and "popular-test" in readme
    assert (results / "chain" / "metrics_by_k.png").stat().st_size > 1000
    assert (results / "SUMMARY.md").is_file()
    bad = runner.invoke(eval_app, ["run", "--system", "nope", *common])
    assert bad.exit_code == 2 and "unknown system" in bad.output


def test_compare_refuses_different_users_and_report_skips_foreign_folders(dataset_dir, tmp_path):
    from typer.testing import CliRunner

    from recgen.cli.eval_cmd import eval_app
    from recgen.evaluation.report import write_reports

    results = tmp_path / "results"
    run_evaluation(_spec(dataset_dir, results, system="popular", users=20, seed=1))
    run_evaluation(_spec(dataset_dir, results, system="itemknn", users=20, seed=2))
    out = CliRunner().invoke(eval_app, ["compare", "popular-test-u20-s1", "itemknn-test-u20-s2", "--dataset", "chain",
                                        "--results-dir", str(results)])
    assert out.exit_code == 2 and "different users" in out.output
    other = results / "serving"
    other.mkdir()
    (other / "load.json").write_text("{}")
    write_reports(results)
    assert not (other / "README.md").exists()
    assert "popular-test-u20-s1" in (results / "SUMMARY.md").read_text()


def test_tuning_grid_uses_validation_only(dataset_dir, tmp_path):
    from recgen.evaluation.tuning import grid_search, parse_grid

    grid = parse_grid(["window=1,2", "decay=0.5"])
    assert grid == {"window": [1, 2], "decay": [0.5]}
    out = grid_search(str(dataset_dir), "itemknn", grid, results_dir=tmp_path, log=lambda m: None)
    assert out["stage"] == "valid" and len(out["results"]) == 2
    assert (tmp_path / "chain" / "tuning" / "itemknn-valid-grid.json").is_file()
    with pytest.raises(ValueError):
        grid_search(str(dataset_dir), "sasrec", grid)


def test_list_system_run_reports_pipeline_extras(dataset_dir, tmp_path, monkeypatch):
    """A two-stage system through the runner: retriever recall, ranker-within-retrieved, validity, README table."""
    import recgen.evaluation.runner as runner
    from recgen.evaluation.report import write_reports

    class Fake:
        name = "lm"
        batch = 8

        def fit(self, data, log=None):
            pass

        def recommend(self, history):
            last = int(history[-1][1:])
            candidates = [f"i{(last + k) % 30}" for k in (1, 2, 3)] if last % 2 else [f"i{(last + 5) % 30}"]
            return list(reversed(candidates)), candidates

        def params(self):
            return {"fake": True}

    monkeypatch.setattr(runner, "make_system", lambda name, params: Fake())
    results = tmp_path / "results"
    summary = run_evaluation(_spec(dataset_dir, results, system="lm", users=40, seed=0))
    pipe = summary["pipeline"]
    odd = pipe["users_target_retrieved"]
    assert 0 < odd < 40 and pipe["retriever_recall@3"]["mean"] == pytest.approx(odd / 40)
    assert pipe["validity"] == 1.0 and pipe["invalid_items"] == 0
    # retrieved targets are ranked third (the fake reverses its candidates): NDCG@10 within = 1/log2(4)
    assert pipe["ranker_within_retrieved"]["ndcg@10"] == pytest.approx(0.5)
    assert summary["metrics"]["recall@10"]["mean"] == pytest.approx(odd / 40)
    write_reports(results, "chain")
    assert "Two-stage pipeline" in (results / "chain" / "README.md").read_text()


def test_report_label_names_every_variant_that_changes_the_system():
    from recgen.evaluation.report import label

    def run(system, **params):
        return {"system": system, "config": {"system_params": params}}

    assert label(run("retrieval", collaborative_weight=0, embedder="all-MiniLM-L6-v2")) == "retrieval (text only)"
    assert label(run("retrieval", collaborative_weight=0.5, embedder="outputs/finetune/beauty-retriever/model")) == (
        "retrieval (text + transitions, w=0.5, embedder beauty-retriever)")
    assert label(run("lm-zeroshot", adapter=None, embedder=None)) == "lm-zeroshot"  # a run from before the registry
    assert label(run("lm", lm={"adapter": None}, retrieval={"embedder": None})) == "lm"
    assert label(run("lm", lm={"adapter": "a/adapter"}, ranking={"retrieval_prior": 1.5})) == (
        "lm (LoRA adapter, retrieval prior 1.5)")
    assert label(run("lm-zeroshot", adapter="a/adapter", retrieval_prior=1.5)) == "lm (LoRA adapter, retrieval prior 1.5)"
    assert label(run("lm-zeroshot", adapter="a/adapter", retrieval_prior=0)) == "lm (LoRA adapter)"
    assert label(run("sasrec")) == "sasrec"

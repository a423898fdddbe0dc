"""Segments group the stored per-user ranks: popularity classes by interaction share, history lengths, cold
targets; a segment's metric is the run's metric over its users; run and compare carry them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recgen.data import Catalog, Dataset, Item
from recgen.evaluation.metrics import mean_metrics, metrics_from_ranks
from recgen.evaluation.protocol import EvalData
from recgen.evaluation.runner import RunSpec, run_evaluation
from recgen.evaluation.segments import (
    history_class,
    item_popularity_classes,
    label_rows,
    paired_segments,
    segment_summary,
    user_segments,
)
from recgen.evaluation.synthetic import chain_dataset, write_generic


def _skewed() -> EvalData:
    """Item 0 in every training part (10 of 30 training interactions), items 1-4 in a few, item 9 only as a
    target (cold), one user with a long history."""
    catalog = Catalog([Item(str(i), f"Thing {i}") for i in range(12)])
    seqs = {f"u{u}": ["0", str(1 + u % 4), str(5 + u % 3), "9", "10"] for u in range(9)}
    seqs["long"] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "11", "1", "9", "10"]
    return EvalData.from_dataset(Dataset("skewed", catalog, seqs), min_interactions=3)


def test_popularity_classes_follow_interaction_shares():
    data = _skewed()
    counts = np.bincount(np.concatenate(data.train), minlength=data.n_items)
    classes = item_popularity_classes(data)
    assert classes[0] == 0  # the most frequent item opens the head
    assert np.all(classes[counts == 0] == 3) and classes[9] == 3 and classes[10] == 3
    total = counts.sum()
    head_share = counts[classes == 0].sum() / total
    # the head is the smallest set of most frequent items whose interactions reach 20 %
    assert head_share >= 0.2 and head_share - counts[classes == 0].min() / total < 0.2
    assert counts[classes == 0].min() >= counts[classes == 1].max() >= counts[classes == 2].max()


def test_history_classes_and_stage_lengths():
    assert history_class(np.array([1, 3, 4, 10, 11, 50])).tolist() == [0, 0, 1, 1, 2, 2]
    data = _skewed()
    labels = user_segments(data, "test", range(data.n_users))
    long = data.user_ids.index("long")
    assert labels["history"][long] == ">10" and labels["popularity"][long] == "cold"  # target 10: never trained
    assert all(h == "<=3" for u, h in zip(data.user_ids, user_segments(data, "valid", range(data.n_users))["history"])
               if u != "long")


def test_segment_metrics_are_the_run_metric_over_its_users():
    rng = np.random.default_rng(0)
    ranks = rng.integers(1, 40, size=300).tolist()
    ranks[::7] = [None] * len(ranks[::7])
    labels = {"popularity": rng.choice(["head", "torso", "tail", "cold"], size=300).tolist(),
              "history": rng.choice(["<=3", "4-10", ">10"], size=300).tolist()}
    summary = segment_summary(ranks, labels, n_boot=200)
    per_user = metrics_from_ranks(ranks, (10, 20))
    for group in ("popularity", "history"):
        assert sum(e["users"] for e in summary[group].values()) == 300
        for name, entry in summary[group].items():
            idx = [i for i, lab in enumerate(labels[group]) if lab == name]
            expected = mean_metrics({m: per_user[m][idx] for m in ("ndcg@10", "recall@20")})
            assert entry["metrics"]["ndcg@10"]["mean"] == pytest.approx(expected["ndcg@10"], abs=1e-6)
            assert entry["metrics"]["recall@20"]["mean"] == pytest.approx(expected["recall@20"], abs=1e-6)
    paired = paired_segments(ranks, [None] * 300, labels, n_boot=200)
    head = {r["metric"]: r for r in paired["popularity"]["head"]["comparisons"]}
    assert head["ndcg@10"]["delta"] == pytest.approx(summary["popularity"]["head"]["metrics"]["ndcg@10"]["mean"],
                                                     abs=1e-6)


def test_label_rows_refuses_rows_of_another_split():
    from recgen.errors import RecgenError

    data = _skewed()
    with pytest.raises(RecgenError, match="not in"):
        label_rows([{"user": "nobody", "target": "x"}], data, "test")


def test_run_and_compare_carry_segments(tmp_path):
    from typer.testing import CliRunner

    from recgen.cli.eval_cmd import eval_app
    from recgen.evaluation.runfiles import load_run

    folder = write_generic(chain_dataset(n_items=30, n_users=60, length=7, short_users=2, name="chain"),
                           tmp_path / "chain")
    results = tmp_path / "results"
    for system in ("popular", "itemknn"):
        run_evaluation(RunSpec(dataset=str(folder), system=system, results_dir=results, n_boot=200, batch_size=16))
    summary, rows = load_run(results, "chain", "itemknn-test")
    seg = summary["segments"]
    assert sum(e["users"] for e in seg["popularity"].values()) == summary["users"]["evaluated"] == len(rows)
    assert all(set(row["segment"]) == {"popularity", "history"} for row in rows)
    out = CliRunner().invoke(eval_app, ["compare", "itemknn-test", "popular-test", "--dataset", "chain",
                                        "--results-dir", str(results), "--bootstrap", "200", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    n = sum(e["users"] for e in report["segments"]["history"].values())
    assert n == report["users"] == 60
    seg_out = CliRunner().invoke(eval_app, ["segments", "itemknn-test", "popular-test", "--dataset", "chain",
                                            "--results-dir", str(results), "--bootstrap", "200"])
    assert seg_out.exit_code == 0, seg_out.output
    assert (results / "segments" / "chain.json").is_file() and "itemknn-test vs popular-test" in seg_out.output
    again = CliRunner().invoke(eval_app, ["segments", "itemknn-test", "popular-test", "--dataset", "chain",
                                          "--results-dir", str(results), "--bootstrap", "200"])
    assert again.exit_code == 0, again.output  # the same comparison made again replaces its own report
    before = (results / "segments" / "chain.json").read_bytes()
    other = CliRunner().invoke(eval_app, ["segments", "popular-test", "itemknn-test", "--dataset", "chain",
                                          "--results-dir", str(results), "--bootstrap", "200"])
    assert other.exit_code == 2 and "pass --out" in other.output  # another comparison never overwrites it
    assert (results / "segments" / "chain.json").read_bytes() == before

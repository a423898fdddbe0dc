"""``recgen synth``: same seed same bytes, loadable by ``load_dataset``, the promised structure is in the written
rows (power law, cold items, topics), a tiny size has signal a collaborative model finds, unsafe folders refused."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pytest
from typer.testing import CliRunner

from recgen.cli.main import app
from recgen.data import load_dataset
from recgen.data.synth import SynthSpec, generate
from recgen.errors import ConfigError, UnsafeOverwriteError
from recgen.evaluation.runner import RunSpec, run_evaluation

TINY = dict(items=400, interactions=8_000, users=800)


def _digest(folder) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
            for name in ("items.jsonl", "interactions.csv")}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth") / "tiny"
    info = generate(SynthSpec(**TINY, seed=3), folder)
    return folder, info


def test_same_seed_same_bytes_other_seed_other_data(tiny, tmp_path):
    folder, _ = tiny
    generate(SynthSpec(**TINY, seed=3), tmp_path / "again")
    generate(SynthSpec(**TINY, seed=4), tmp_path / "other")
    assert _digest(tmp_path / "again") == _digest(folder)
    other = _digest(tmp_path / "other")
    assert other["items.jsonl"] != _digest(folder)["items.jsonl"]
    assert other["interactions.csv"] != _digest(folder)["interactions.csv"]


def test_loads_with_the_generic_loader_and_has_the_promised_structure(tiny):
    folder, info = tiny
    data = load_dataset(folder)
    assert len(data.catalog) == TINY["items"] and len(data.sequences) == TINY["users"]
    assert data.num_interactions() == TINY["interactions"] and data.dropped_unknown == 0
    assert min(len(s) for s in data.sequences.values()) >= 3
    counts = Counter(i for seq in data.sequences.values() for i in seq)
    # cold items: at least the designed share has no interaction at all
    cold = len(data.catalog) - len(counts)
    assert cold == info["cold_items"] >= info["cold_by_design"] > 0
    # power law: the head's log-log rank/count slope is clearly negative (uniform popularity would be ~0)
    top = np.sort(np.array(list(counts.values()), dtype=float))[::-1][:200]
    slope = np.polyfit(np.log(np.arange(1, len(top) + 1)), np.log(top), 1)[0]
    assert slope < -0.5 and info["popularity_loglog_slope"] < -0.5
    # topics: genres[0] is the topic; consecutive items share it far more often than chance (1/topics)
    topic = {item.item_id: item.genres[0] for item in data.catalog.items}
    assert len(set(topic.values())) == info["topics"]
    pairs = [(topic[a] == topic[b]) for seq in data.sequences.values() for a, b in zip(seq, seq[1:])]
    assert np.mean(pairs) > 5 / info["topics"]
    # titles come from the topic's vocabulary: two items of one topic share title words more than two of different
    words = {item.item_id: set(item.title.split()[:2] + item.title.split()[3:4]) for item in data.catalog.items}
    by_topic: dict[str, list[str]] = {}
    for item_id, t in topic.items():
        by_topic.setdefault(t, []).append(item_id)
    first, second = list(by_topic.values())[:2]
    same = np.mean([bool(words[a] & words[b]) for a in first[:30] for b in first[30:60]])
    across = np.mean([bool(words[a] & words[b]) for a in first[:30] for b in second[:30]])
    assert same > across + 0.2


def test_a_tiny_size_has_signal_itemknn_beats_popularity(tiny, tmp_path):
    folder, _ = tiny
    results = {system: run_evaluation(RunSpec(dataset=str(folder), system=system, results_dir=tmp_path, n_boot=200))
               for system in ("popular", "itemknn")}
    pop, knn = (results[s]["metrics"]["ndcg@10"] for s in ("popular", "itemknn"))
    assert knn["ci95"][0] > pop["ci95"][1], (knn, pop)


def test_cli_writes_refuses_foreign_folders_and_bad_sizes(tmp_path):
    runner = CliRunner()
    out = tmp_path / "d"
    args = ["synth", "--items", "60", "--interactions", "300", "--users", "50", "--out", str(out), "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert json.loads((out / "synth.json").read_text())["spec"]["items"] == 60
    assert runner.invoke(app, args).exit_code == 0  # its own folder may be rewritten
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    refused = runner.invoke(app, [*args[:-3], "--out", str(foreign)])
    assert refused.exit_code == 2 and "refusing" in refused.output
    assert (foreign / "notes.txt").read_text() == "keep me" and len(list(foreign.iterdir())) == 1
    assert runner.invoke(app, ["synth", "--size", "XXL", "--out", str(tmp_path / "e")]).exit_code == 2
    assert runner.invoke(app, ["synth", "--items", "60", "--out", str(tmp_path / "e")]).exit_code == 2
    with pytest.raises(ConfigError, match="3 each"):
        SynthSpec.sized(items=100, interactions=100, users=50)
    with pytest.raises(UnsafeOverwriteError):
        generate(SynthSpec(**TINY), foreign)


def test_parquet_output_loads_to_the_same_dataset(tiny, tmp_path):
    folder, _ = tiny
    generate(SynthSpec(**TINY, seed=3), tmp_path / "pq", fmt="parquet")
    assert not (tmp_path / "pq" / "interactions.csv").exists()
    assert load_dataset(tmp_path / "pq").sequences == load_dataset(folder).sequences

"""The request stage: a request in words with a history is ordered by a ranker fitted on groups that carry a
request (built from validation targets), items meeting the request first; saved and served with the fused
stage, refused when its file is damaged, and absent (request-first order) when it did not beat that order."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from recgen import RecgenConfig
from recgen.data import Dataset, load_dataset
from recgen.data.catalog import Catalog, Item
from recgen.errors import ModelLoadError
from recgen.evaluation.protocol import EvalData
from recgen.evaluation.synthetic import write_generic
from recgen.evaluation.systems.fusion import FusionSystem
from recgen.fit.serving import fit_for_serving
from recgen.pipeline import fitted_folder, history_rows
from recgen.ranking.fusion.request_stage import from_candidates, matched_first
from recgen.recommender import Recommender, open_dataset

GENRES = ("Comedy", "Drama", "Horror")


def genre_chain(n_items: int = 60, n_users: int = 240, length: int = 8, seed: int = 3) -> Dataset:
    """The item ring of ``chain_dataset`` with genres and years, so requests ("a 90s comedy film") can filter."""
    rng = np.random.default_rng(seed)
    items = [Item(f"i{k}", f"Film {k}", (GENRES[k % 3],), 1980 + 10 * (k % 2) + k % 7) for k in range(n_items)]
    sequences = {}
    for u in range(n_users):
        start = int(rng.integers(n_items))
        sequences[f"u{u}"] = [f"i{(start + t) % n_items}" for t in range(length)]
    return Dataset("genre-chain", Catalog(items), sequences)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def fitted_system():
    data = EvalData.from_dataset(genre_chain())
    system = FusionSystem(RecgenConfig(), requests=True, threads=1, depths=[20], leaves=[7], prefixes=[])
    system.fit(data)
    return data, system


def test_the_request_stage_is_fitted_on_validation_requests_and_beats_the_request_first_order(fitted_system):
    data, system = fitted_system
    info = system.fit_info["request_stage"]
    assert info["requests"] >= 240 and info["served"] is True and system.request_stage is not None
    assert info["held_out_ndcg@10"] >= info["request_first_held_out_ndcg@10"]
    assert system.request_ranker.feature_names[-3:] == ["request_cosine", "request_order", "request_match"]


def test_requested_items_come_first_and_history_items_never(fitted_system):
    data, system = fitted_system
    catalog = data.dataset.catalog
    history = data.history("test", 0)
    rows = system.order_request(history, "a comedy film", 10)
    assert len(rows) == 10 and not set(rows) & set(history.tolist())
    assert all("Comedy" in catalog.items[r].genres for r in rows)


def test_matching_items_stay_ahead_of_non_matching_whatever_the_scores():
    score = np.array([0.0, 1.0, 5.0, 3.0, 4.0, 3.0])
    matched = np.array([True, True, False, True, False, True])
    assert matched_first(score, matched).tolist() == [3, 5, 1, 0, 2, 4]  # ties keep the given order


def test_the_test_targets_are_never_read():
    base = genre_chain()
    ids = base.catalog.ids
    changed = Dataset("genre-chain", base.catalog,
                      {u: s[:-1] + [ids[(ids.index(s[-1]) + 11) % len(ids)]] for u, s in base.sequences.items()})
    infos = []
    for dataset in (base, changed):
        system = FusionSystem(RecgenConfig(), requests=True, threads=1, depths=[20], leaves=[7], prefixes=[])
        system.fit(EvalData.from_dataset(dataset))
        infos.append((system.fit_info["request_stage"]["held_out_ndcg@10"],
                      system.order_request(np.array([0, 1, 2]), "a drama film", 10)))
    assert infos[0] == infos[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("RECGEN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    folder = write_generic(genre_chain(), tmp_path_factory.mktemp("d") / "genre-chain")
    dataset = load_dataset(folder)
    rec = fit_for_serving(dataset, RecgenConfig(), threads=1)
    saved = fitted_folder(dataset, rec.config.retrieval)
    rec.save(saved)
    mp.undo()
    return dataset, rec, saved, folder


def test_served_requests_use_the_saved_request_stage(served):
    dataset, rec, saved, folder = served
    assert rec.pipeline.request_fusion is not None and (saved / "fusion" / "ranker-request.txt").is_file()
    history = dataset.sequences["u3"][:-1]
    _, reopened = open_dataset(str(folder), RecgenConfig())
    got = reopened.recommend(history=history, query="a horror film", k=8, reasons=False)
    assert [r.item_id for r in got] == [r.item_id for r in rec.recommend(history=history, query="a horror film", k=8,
                                                                          reasons=False)]
    assert all("Horror" in dataset.catalog.get(r.item_id).genres for r in got)
    stage = reopened.pipeline.request_fusion
    found = reopened.retriever.candidates(history, "a horror film", n=100)
    expected = stage.order([history_rows(dataset.catalog, history)], [from_candidates(reopened.retriever, found)])[0]
    assert [(r.item_id, r.score) for r in got] == [(dataset.catalog.items[row].item_id, score)
                                                   for row, score in expected[:8]]  # the ranker's scores are served


def test_a_damaged_request_ranker_is_refused_naming_the_file(served, tmp_path):
    dataset, rec, saved, folder = served
    copy = tmp_path / "fitted"
    shutil.copytree(saved, copy)
    (copy / "fusion" / "ranker-request.txt").write_text("tree\nnot a model\n")
    with pytest.raises(ModelLoadError, match="ranker-request.txt"):
        Recommender.load(copy)


def test_the_request_first_order_is_kept_when_no_request_ranker_was_fitted(served):
    dataset, rec, saved, folder = served
    plain = Recommender(dataset.catalog, rec.config, retriever=rec.retriever,
                        state=dataclasses.replace(rec.pipeline.state, request_ranker=None))
    assert plain.pipeline.request_fusion is None and plain.pipeline.fusion is not None
    history = dataset.sequences["u3"][:-1]
    got = plain.recommend(history=history, query="a horror film", k=8, reasons=False)
    expected = plain.retriever.retrieve(history, "a horror film", n=plain.config.retrieval.n_candidates)
    assert [(r.item_id, r.score) for r in got] == expected[:8]


def test_a_restarted_fit_reuses_the_request_stage_features(tmp_path, monkeypatch):
    """The request stage's feature batches are checkpointed with the selection's: a fit restarted after them
    builds none again and fits the same request ranker (at synth L they were ~1 h of a fit)."""
    import recgen.fit.request_stage as stage
    from recgen.fit.fusion import FusionFitter

    data = EvalData.from_dataset(genre_chain())
    settings = dict(threads=1, depths=[20], leaves=[7], prefixes=[], requests=True, batch=64)
    first = FusionFitter(RecgenConfig(), **settings).fit(data, checkpoints=tmp_path / "ck")
    built = first.info["checkpoints"]["request_stage"]
    assert built["feature_batches_built"] >= 4 and built["feature_batches_reused"] == 0
    monkeypatch.setattr(stage, "request_groups", lambda *a: pytest.fail("request features built again"))
    again = FusionFitter(RecgenConfig(), **settings).fit(data, checkpoints=tmp_path / "ck")
    reused = again.info["checkpoints"]["request_stage"]
    assert reused["feature_batches_reused"] == built["feature_batches_built"] and reused["feature_batches_built"] == 0
    keys = ("requests", "held_out_groups", "held_out_ndcg@10", "request_first_held_out_ndcg@10", "served")
    assert {k: again.info["request_stage"][k] for k in keys} == {k: first.info["request_stage"][k] for k in keys}

"""Fit once, serve many: ``recgen fit`` saves every fitted stage, serving loads it without refitting, and the
served order is the fusion system's order. Bad input: a missing SASRec source, a corrupt ranker, a ranker
with features the setup cannot provide, a dataset too small for a second stage, stale fitted folders."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from recgen import RecgenConfig, Recommender, RecommendRequest
from recgen.cli.main import app
from recgen.config import RetrievalSettings
from recgen.data import load_dataset
from recgen.errors import ModelLoadError, RecgenError
from recgen.evaluation.protocol import EvalData
from recgen.evaluation.synthetic import chain_dataset, write_generic
from recgen.evaluation.systems.fusion import FusionSystem
from recgen.fit.fusion import FusionFitter
from recgen.fit.serving import fit_for_serving
from recgen.pipeline import FittedState, data_fingerprint, fitted_folder, fitted_key, history_rows
from recgen.ranking.fusion import FeatureBuilder, FusionRanker, Sources, SourceStats
from recgen.recommender import open_dataset

FAST = {"threads": 1}
pytestmark = pytest.mark.usefixtures("recgen_cache_env")


@pytest.fixture(scope="module")
def chain_dir(tmp_path_factory):
    return write_generic(chain_dataset(n_items=40, n_users=200, length=8, seed=1), tmp_path_factory.mktemp("d") / "chain")


@pytest.fixture(scope="module")
def fitted(chain_dir, recgen_cache):
    """The chain dataset fitted once (as `recgen fit` does) and saved where open_dataset looks."""
    mp = pytest.MonkeyPatch()
    mp.setenv("RECGEN_CACHE_DIR", str(recgen_cache))
    dataset = load_dataset(chain_dir)
    rec = fit_for_serving(dataset, RecgenConfig(), threads=1)
    folder = fitted_folder(dataset, rec.config.retrieval)
    rec.save(folder)
    mp.undo()
    return dataset, rec, folder


def _history(dataset, user="u3"):
    return dataset.sequences[user][:-1]


def test_fit_saves_every_stage_and_serving_reuses_it_without_refitting(fitted, chain_dir, monkeypatch):
    dataset, rec, folder = fitted
    assert rec.fusion is not None and rec.pipeline.state.ranker is not None
    names = {p.name for p in (folder / "fusion").iterdir()}
    assert {"neighbours.npz", "popularity.npz", "sources.json", "ranker.txt", "fusion.json"} <= names
    assert not any(p.suffix in (".pkl", ".pickle") for p in folder.rglob("*"))

    def refit(*args, **kwargs):
        raise AssertionError("serving refitted a stage that was saved")

    monkeypatch.setattr(FittedState, "fit", classmethod(refit))
    monkeypatch.setattr(SourceStats, "fit", classmethod(refit))
    _, served = open_dataset(str(chain_dir))
    assert served.fusion is not None
    history = _history(dataset)
    want = rec.recommend(history=history, k=5, reasons=False)
    got = served.recommend(history=history, k=5, reasons=False)
    assert [(r.item_id, round(r.score, 6)) for r in got] == [(r.item_id, round(r.score, 6)) for r in want]
    # on the ring the next item is obvious: the fused order finds it
    ids = dataset.catalog.ids
    assert got[0].item_id == ids[(ids.index(dataset.sequences["u3"][-2]) + 1) % len(ids)]


def test_recommend_serves_the_fusion_systems_order(chain_dir, recgen_cache):
    """One implementation: a Recommender over the evaluation system's fitted parts returns the top of
    FusionSystem.score, score for score."""
    data = EvalData.from_dataset(load_dataset(chain_dir))
    system = FusionSystem(depths=[10], leaves=[7], prefixes=(), **FAST)
    system.fit(data)
    state = FittedState(data.train_dataset().popularity(), system.sources.retriever.transitions).with_second_stage(
        system.sources.stats, system.ranker, system.depth)
    rec = Recommender(data.dataset.catalog, RecgenConfig(), retriever=system.sources.retriever, state=state)
    ids = data.dataset.catalog.ids
    for p in range(0, data.n_users, 37):
        hist = data.history("test", p)
        scores = system.score([hist])[0]
        scores[hist] = -np.inf
        recs = rec.recommend(history=[ids[i] for i in hist], k=5, reasons=False)
        rows = [data.dataset.catalog.index_of(r.item_id) for r in recs]
        np.testing.assert_allclose([r.score for r in recs], scores[rows], rtol=1e-6)  # each item's own score
        np.testing.assert_allclose([r.score for r in recs], np.sort(scores)[::-1][:5], rtol=1e-6)  # the top 5


def test_batch_is_one_booster_call_and_equals_singles(fitted, monkeypatch):
    dataset, rec, _ = fitted
    calls = []
    predict = rec.fusion.ranker.predict
    monkeypatch.setattr(rec.fusion.ranker, "predict", lambda X: calls.append(len(X)) or predict(X))
    requests = [{"history": _history(dataset, f"u{u}"), "k": 4, "reasons": False, "exclude": [f"i{u}"]} for u in range(6)]
    batch = rec.recommend_batch(requests)
    assert len(calls) == 1
    singles = [rec.recommend(**r) for r in requests]
    assert [[x.item_id for x in b] for b in batch] == [[x.item_id for x in s] for s in singles]
    for request, recs in zip(requests, batch):
        assert not {r.item_id for r in recs} & (set(request["history"]) | set(request["exclude"]))


def test_generate_mode_lets_the_lm_pick_from_the_fused_top(fitted, tiny_backend):
    dataset, rec, folder = fitted
    config = RecgenConfig(retrieval={"n_candidates": 6})
    served = Recommender.load(folder, config, backend=tiny_backend)
    history = _history(dataset)
    fused_top = [r.item_id for r in served.recommend(history=history, k=6, reasons=False)]
    picked = served.recommend(history=history, k=3, mode="generate", reasons=True)
    assert len(picked) == 3 and {r.item_id for r in picked} <= set(fused_top)
    assert all(r.reason for r in picked)  # the LM still writes (or falls back to) a reason per item


def test_second_stage_lm_lets_the_lm_order_the_retrieved_candidates(fitted, tiny_backend, monkeypatch):
    dataset, _, folder = fitted
    served = Recommender.load(folder, RecgenConfig(ranking={"second_stage": "lm"}), backend=tiny_backend)
    assert served.fusion is None
    seen = []
    rank = served.ranker.rank
    monkeypatch.setattr(served.ranker, "rank", lambda jobs, mode="score", adapter=None:
                        seen.append(mode) or rank(jobs, mode, adapter=adapter))
    recs = served.recommend(history=_history(dataset), k=3, reasons=False)
    assert seen == ["score"]
    assert {r.ranker for r in recs} == {"lm"}  # the list says the LM ordered it


def test_the_second_stage_leaves_the_callers_jobs_alone(fitted):
    """It returns the generate-mode jobs it re-candidates in a new list; the caller's list is not rewritten."""
    dataset, _, folder = fitted
    served = Recommender.load(folder, RecgenConfig(retrieval={"n_candidates": 6}))
    requests = [RecommendRequest(history=_history(dataset, f"u{u}"), k=3, mode=mode, reasons=False)
                for u, mode in ((1, "generate"), (2, "score"))]
    jobs = [(request, served._prepare(request)) for request in requests]
    before = list(jobs)
    ranked, _, lm_jobs = served._second_stage(jobs)
    assert all(a is b for a, b in zip(jobs, before)) and jobs[0][1].candidates == []
    assert set(ranked) == {1} and len(lm_jobs[0][1].candidates) == 6 and lm_jobs[1] is jobs[1]


def test_after_an_event_the_fused_order_is_a_fresh_pipelines_on_the_new_state(fitted, chain_dir, tmp_path):
    """The feedback loop hands the pipeline new transitions: the fused stage serves them (not the ones it was
    built on) without recomputing its fitted signals, exactly as a pipeline built on the new state would."""
    _, _, folder = fitted
    served, dataset = Recommender.load(folder), load_dataset(chain_dir)
    served.use_feedback(dataset, tmp_path / "events.sqlite")
    history = _history(dataset, "u5")
    rows = [history_rows(served.catalog, history)]
    before = _transition_values(served.fusion.sources, rows)
    genres = served.fusion.sources.genres  # computed once per Sources: the same array = not rebuilt
    for item in [i for i in dataset.catalog.ids if i not in dataset.sequences["u5"]][:3]:
        served.record("u5", item, "purchase")
    after = served.recommend(history=history, k=5, reasons=False)
    fresh = Recommender(served.catalog, served.config, retriever=served.retriever, state=served.pipeline.state)
    want = fresh.recommend(history=history, k=5, reasons=False)
    assert [(r.item_id, r.score) for r in after] == [(r.item_id, r.score) for r in want]
    assert not np.array_equal(_transition_values(served.fusion.sources, rows), before)  # the new transitions
    assert served.fusion.sources.retriever is served.retriever and served.fusion.sources.genres is genres


def _transition_values(sources, rows) -> np.ndarray:
    return sources.scan(rows).values(0, np.arange(sources.n_items))["transition"]


def _old_fitted_key(dataset, settings) -> str:
    """The key before cold_neighbours, query_weight and request_pool were keyed (folders fitted then)."""
    wanted = {k: v for k, v in settings.model_dump().items()
              if k in ("embedder", "history", "recency_decay", "collaborative_weight")}
    return hashlib.sha256(json.dumps({"data": data_fingerprint(dataset), "retrieval": wanted},
                                     sort_keys=True).encode()).hexdigest()[:12]


def test_the_fitted_key_names_every_retrieval_setting_the_fitted_features_depend_on(fitted):
    """Items without interactions borrow ``cold_neighbours`` neighbours' scores and a request mixes its words in
    by ``query_weight`` within ``request_pool``: the request stage's candidates change with each, so a fit with
    other values is not reused. A folder fitted with the defaults keeps its key; ``request_prior`` (requests
    without a history, which no fitted stage sees) is not keyed."""
    dataset = fitted[0]
    default = RetrievalSettings()
    assert fitted_key(dataset, default) == _old_fitted_key(dataset, default)
    for name, value in (("cold_neighbours", 0), ("query_weight", 0.3), ("request_pool", 20)):
        assert fitted_key(dataset, RetrievalSettings(**{name: value})) != fitted_key(dataset, default), name
    assert fitted_key(dataset, RetrievalSettings(request_prior=0.0)) == fitted_key(dataset, default)


def _copy(folder, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    return target


def _tiny_sasrec(n_items):
    import torch

    from recgen.models.sasrec import SASRec, SASRecConfig

    torch.manual_seed(0)
    return SASRec(n_items, SASRecConfig(hidden=8, blocks=1, heads=1, max_len=10, dropout=0.0)).eval()


def test_missing_sasrec_falls_back_to_the_other_sources_with_one_warning(fitted, tmp_path, caplog):
    dataset, rec, _ = fitted
    catalog = dataset.catalog
    model = _tiny_sasrec(len(catalog))
    sources = Sources(catalog, rec.retriever, stats=rec.pipeline.state.sources, sasrec=model)
    builder = FeatureBuilder(sources, depth=10)
    seqs = [history_rows(catalog, s) for s in dataset.sequences.values()]
    groups = [(g.X, g.label(int(s[-1]))) for g, s in zip(builder.build([s[:-1] for s in seqs]), seqs)]
    ranker = FusionRanker.train(groups[:150], groups[150:], builder.names, num_leaves=3, max_rounds=5, threads=1)
    state = rec.pipeline.state.with_second_stage(rec.pipeline.state.sources, ranker, 10, sasrec=model)
    folder = tmp_path / "with-sasrec"
    Recommender(catalog, RecgenConfig(), retriever=rec.retriever, state=state).save(folder)
    loaded = Recommender.load(folder)
    assert loaded.fusion is not None and loaded.fusion.sources.sasrec is not None
    assert "sasrec_value" in loaded.fusion.ranker.feature_names

    (folder / "fusion" / "sasrec.safetensors").unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        served = Recommender.load(folder)
        history = _history(dataset)
        recs = served.recommend(history=history, k=5, reasons=False)
        served.recommend(history=history, k=5, reasons=False)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "SASRec" in warnings[0].getMessage()
    assert served.fusion is None
    assert [r.item_id for r in recs] == [i for i, _ in served.retriever.retrieve(history, n=5)]


@pytest.mark.parametrize("damage", [b"", b"tree\nversion=v4\n", b"\x00\x01garbage", b"not a model at all\n"])
def test_corrupt_ranker_is_refused_naming_the_file(fitted, tmp_path, damage, chain_dir):
    _, _, folder = fitted
    copy = _copy(folder, tmp_path)
    (copy / "fusion" / "ranker.txt").write_bytes(damage)
    with pytest.raises(ModelLoadError) as err:
        Recommender.load(copy)
    assert str(copy / "fusion" / "ranker.txt") in str(err.value)
    with pytest.raises(RecgenError):
        open_dataset(str(chain_dir), fitted=copy)


def test_ranker_with_lm_features_is_refused_when_served_without_an_lm(fitted, tmp_path):
    dataset, rec, folder = fitted
    catalog = dataset.catalog
    builder = FeatureBuilder(rec.fusion.sources, depth=10, use_lm=True)
    seqs = [history_rows(catalog, s) for s in dataset.sequences.values()]
    lm = [{int(s[-1]): -0.5} for s in seqs]  # an "LM" that knows the answer
    built = builder.build([s[:-1] for s in seqs], lm=lm)
    groups = [(g.X, g.label(int(s[-1]))) for g, s in zip(built, seqs)]
    ranker = FusionRanker.train(groups[:150], groups[150:], builder.names, num_leaves=3, max_rounds=5, threads=1)
    copy = _copy(folder, tmp_path)
    ranker.save(copy / "fusion" / "ranker.txt")
    with pytest.raises(ModelLoadError) as err:
        Recommender.load(copy)
    message = str(err.value)
    assert str(copy / "fusion" / "ranker.txt") in message and "lm_logprob" in message and "lm_rank" in message


def test_too_small_a_dataset_serves_the_hybrid_order_with_one_warning(tmp_path, caplog):
    tiny = load_dataset(write_generic(chain_dataset(n_items=200, n_users=3, length=4, seed=0), tmp_path / "tiny"))
    rec = fit_for_serving(tiny, RecgenConfig(), threads=1)
    assert rec.pipeline.state.ranker is None and "hybrid retrieval order is served" in rec.pipeline.state.fallback
    rec.save(tmp_path / "fitted")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        served = Recommender.load(tmp_path / "fitted")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "hybrid retrieval order" in warnings[0]
    history = tiny.sequences["u0"]
    recs = served.recommend(history=history, k=5, reasons=False)
    assert [r.item_id for r in recs] == [i for i, _ in served.retriever.retrieve(history, n=5)]


def test_changed_data_is_not_served_a_stale_fit(fitted, chain_dir, tmp_path, caplog):
    dataset, _, _ = fitted
    changed = tmp_path / "chain"  # same name, one more interaction
    shutil.copytree(chain_dir, changed)
    with (changed / "interactions.csv").open("a") as handle:
        handle.write("u0,i5,99\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        data, rec = open_dataset(str(changed))
    assert rec.fusion is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "stale" in warnings[0] and "recgen fit -d" in warnings[0]
    assert rec.recommend(history=_history(dataset), k=3, reasons=False)


def test_prefix_groups_stop_when_the_last_shifts_did_not_help(chain_dir, monkeypatch):
    """The waste cut: on the ring 3 shifts cannot beat a perfect held-out score, so shifts 4..10 are never built."""
    built = []
    original = FusionFitter._prefix_groups

    def spy(self, data, sources, users, depth, shifts, into, *rest):
        built.append(list(shifts))
        return original(self, data, sources, users, depth, shifts, into, *rest)

    monkeypatch.setattr(FusionFitter, "_prefix_groups", spy)
    system = FusionSystem(depths=[10], leaves=[7], prefixes=(3, 10), **FAST)
    system.fit(EvalData.from_dataset(load_dataset(chain_dir)))
    assert built == [[1, 2, 3]]
    assert system.fit_info["chosen"]["prefix_shifts"] == 0


def test_cli_fit_then_recommend(chain_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "fitted"
    result = runner.invoke(app, ["fit", "-d", str(chain_dir), "-o", str(out), "--threads", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert (out / "fusion" / "ranker.txt").is_file()
    result = runner.invoke(app, ["recommend", "-d", str(chain_dir), "--history", "i1,i2,i3", "-k", "3",
                                 "--no-reasons", "--json"])
    assert result.exit_code == 0, result.output


def test_cli_fit_never_writes_over_its_own_dataset(chain_dir):
    before = sorted((p.name, p.stat().st_size) for p in chain_dir.iterdir())
    result = CliRunner().invoke(app, ["fit", "-d", str(chain_dir), "-o", str(chain_dir), "--threads", "1"])
    assert result.exit_code == 2 and "refusing" in result.output
    assert sorted((p.name, p.stat().st_size) for p in chain_dir.iterdir()) == before

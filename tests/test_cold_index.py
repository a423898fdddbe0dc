"""Cold items' text neighbours through an approximate index: the warm items nearest to each cold item are
searched in the HNSW index (restricted to warm rows by an IDSelector) instead of a cold × warm product, and
give the weights the product gives where the search is exact."""

from __future__ import annotations

import numpy as np
import pytest

from recgen.retrieval.cold_items import cold_neighbours
from recgen.retrieval.index import IndexChoice, build_index, set_search_params


@pytest.fixture(scope="module")
def catalog_vectors():
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(20, 32))
    vectors = (centres[rng.integers(20, size=3000)] + 0.6 * rng.normal(size=(3000, 32))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    cold = np.sort(rng.choice(3000, size=700, replace=False))
    index, meta = build_index(vectors, IndexChoice(kind="hnsw"))
    assert meta.kind == "hnsw"
    return vectors, cold, index


def test_searched_neighbours_equal_the_product_when_the_search_is_exact(catalog_vectors):
    vectors, cold, index = catalog_vectors
    set_search_params(index, {"efSearch": 3000})
    dense = cold_neighbours(vectors, cold, 10).weights
    searched = cold_neighbours(vectors, cold, 10, index, "hnsw").weights
    assert searched.nnz == dense.nnz == 7000
    np.testing.assert_allclose(searched.toarray(), dense.toarray(), atol=1e-6)


def test_searched_neighbours_are_warm_and_near_at_the_tuned_search(catalog_vectors):
    vectors, cold, index = catalog_vectors
    set_search_params(index, {"efSearch": 16})
    dense, searched = (cold_neighbours(vectors, cold, 10, *found).weights for found in ((), (index, "hnsw")))
    assert not np.isin(searched.indices, cold).any()  # only warm items lend their scores
    assert set(np.flatnonzero(np.diff(searched.indptr))) == set(cold.tolist())
    np.testing.assert_allclose(np.asarray(searched.sum(axis=1)).ravel()[cold], 1.0, rtol=1e-5)
    overlap = np.mean([len(np.intersect1d(searched[c].indices, dense[c].indices)) / 10 for c in cold])
    assert overlap >= 0.9, overlap


def test_served_hybrid_order_through_the_index_equals_the_dense_scores(catalog_vectors):
    """``Retriever.retrieve`` with transitions over an approximate index scores only the index's nearest items
    and the items with a (borrowed) transition score; where the search is exact it returns the dense order."""
    from recgen.config import RetrievalSettings
    from recgen.data.catalog import Catalog, Item
    from recgen.retrieval import Retriever
    from recgen.retrieval.collaborative import ItemTransitions

    vectors, cold, _ = catalog_vectors
    catalog = Catalog([Item(f"i{k}", f"item {k}", ()) for k in range(len(vectors))])
    rng = np.random.default_rng(1)
    warm = np.setdiff1d(np.arange(len(vectors)), cold)
    sequences = [[f"i{k}" for k in rng.choice(warm, size=8)] for _ in range(400)]
    transitions = ItemTransitions.fit(catalog, sequences)
    exact = Retriever.from_vectors(catalog, vectors, RetrievalSettings(index="flat"), embedder_name="fake",
                                   transitions=transitions)
    approx = Retriever.from_vectors(catalog, vectors, RetrievalSettings(index="hnsw"), embedder_name="fake",
                                    transitions=transitions)
    set_search_params(approx.index, {"efSearch": 3000})
    for history in sequences[:20]:
        searched, dense = (r.retrieve(history, n=50, exclude={history[0]}) for r in (approx, exact))
        np.testing.assert_allclose([s for _, s in searched], [s for _, s in dense], rtol=1e-5, atol=1e-6)
        # the same items in the same order, up to the order of exact ties (the dense argpartition's is arbitrary)
        tied = lambda found: [i for i, _ in sorted(found, key=lambda x: (-round(x[1], 5), x[0]))]  # noqa: E731
        assert tied(searched) == tied(dense)
    assert any(int(i[1:]) in cold for history in sequences[:20] for i, _ in approx.retrieve(history, n=50))

"""Retrieval with the real MiniLM embedder on a synthetic catalog: exclusion, persistence, staleness."""

import numpy as np
import pytest
from builders import make_catalog
from hypothesis import given, settings
from hypothesis import strategies as st

from recgen.config import RetrievalSettings
from recgen.data import Catalog, Item
from recgen.errors import IndexCorruptError, IndexStaleError, InvalidRequestError
from recgen.retrieval import Retriever, recency_weights


@pytest.fixture(scope="module")
def retriever():
    return Retriever.build(make_catalog(40))


def test_recency_weights_newest_heaviest():
    w = recency_weights(4, 0.5)
    assert w.tolist() == [0.125, 0.25, 0.5, 1.0]


def test_history_is_excluded_and_scores_sorted(retriever):
    history = ["3", "9", "15"]
    got = retriever.retrieve(history, n=10, exclude={"4"})
    ids = [i for i, _ in got]
    assert len(ids) == 10 and len(set(ids)) == 10
    assert not set(ids) & {"3", "9", "15", "4"}
    scores = [s for _, s in got]
    assert scores == sorted(scores, reverse=True)


def test_query_only_finds_matching_title(retriever):
    top = retriever.retrieve([], query="Synthetic Film 17", n=3)
    assert "17" in [i for i, _ in top]


def test_needs_history_or_query(retriever):
    with pytest.raises(InvalidRequestError):
        retriever.retrieve([], None)


def test_item_embeddings_are_normalized_rows(retriever):
    emb = retriever.item_embeddings
    assert emb.shape[0] == 40
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_save_load_roundtrip_and_stale_detection(retriever, tmp_path):
    retriever.save(tmp_path / "idx")
    loaded = Retriever.load(tmp_path / "idx", retriever.catalog)
    assert loaded.retrieve(["1"], n=5) == retriever.retrieve(["1"], n=5)
    other = Catalog([Item(i.item_id, i.title + " remastered") for i in retriever.catalog])
    with pytest.raises(IndexStaleError, match="another catalog"):
        Retriever.load(tmp_path / "idx", other)
    with pytest.raises(IndexStaleError, match="embedding model"):
        Retriever.load(tmp_path / "idx", retriever.catalog, RetrievalSettings(embedder="some-other-model"))


def test_corrupt_index_is_refused(retriever, tmp_path):
    retriever.save(tmp_path / "idx")
    (tmp_path / "idx" / "items.faiss").write_bytes(b"garbage")
    with pytest.raises(IndexCorruptError, match="cannot be read"):
        Retriever.load(tmp_path / "idx", retriever.catalog)
    (tmp_path / "idx" / "index.json").unlink()
    with pytest.raises(IndexCorruptError, match="missing index.json"):
        Retriever.load(tmp_path / "idx", retriever.catalog)


def test_request_pool_keeps_candidates_inside_the_request_and_lets_the_history_order_them():
    """``request_pool``: candidates come only from the request's nearest items; the history orders them."""
    from recgen.retrieval.index import make_index

    catalog = make_catalog(40)
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(40, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    request = vectors[7]
    nearest = [catalog.items[r].item_id for r in np.argsort(-(vectors @ request))[:5]]

    def retriever(pool: int) -> Retriever:
        built = Retriever(catalog, make_index(vectors), RetrievalSettings(request_pool=pool, collaborative_weight=0),
                          embedder_name="fake")
        built.embed_query = lambda text: request  # a stand-in for the sentence embedder
        return built

    history = ["30", "31"]
    got = [i for i, _ in retriever(5).retrieve(history, "a request", n=3)]
    assert set(got) <= set(nearest) and len(got) == 3
    pool_scores = retriever(5).scores(history, retriever(5).query_vector(history, "a request"))
    ranked = sorted((i for i in nearest if i not in history), key=lambda i: -pool_scores[catalog.index_of(i)])
    assert got == ranked[:3]  # ordered by the blended history + request score, not by the request alone
    only_request = [i for i, _ in retriever(5).retrieve([], "a request", n=5)]
    assert only_request == nearest  # no history: the request's own order
    old = retriever(0)  # pool 0: the request is only blended into the history's query vector, as before
    blended = vectors @ old.query_vector(history, "a request")
    expected = [catalog.items[r].item_id for r in np.argsort(-blended) if catalog.items[r].item_id not in history][:3]
    assert [i for i, _ in old.retrieve(history, "a request", n=3)] == expected


def test_a_negated_request_is_blended_not_pooled():
    """An embedding reads "anything but horror" as horror: a request with a negation never forms the pool."""
    from recgen.text import has_negation

    assert has_negation("anything but horror") and has_negation("a comedy, not romance") and has_negation("No musicals")
    assert not has_negation("a 90s comedy film") and not has_negation("a notebook") and not has_negation("nothingness")
    assert has_negation("x " * 10_000 + "not horror") is False  # only the first 2,000 characters are read


def test_request_embeddings_are_cached_and_warmed_in_batches(monkeypatch):
    from recgen.retrieval import retriever as module

    retriever = Retriever.build(make_catalog(), RetrievalSettings())
    calls = []
    real = module.embed
    monkeypatch.setattr(module, "embed", lambda model, texts, **kw: calls.append(len(texts)) or real(model, texts, **kw))
    one = retriever.embed_query("a quiet film")
    assert retriever.embed_query("a quiet film") is one and calls == [1]
    retriever.warm_queries(["a quiet film", "a loud film", "a long film", "a loud film"])
    assert calls == [1, 2]  # only the two new texts, in one call
    np.testing.assert_allclose(retriever.embed_query("a loud film"), real(module.load_embedder(retriever.embedder_name),
                                                                          ["a loud film"])[0], atol=1e-5)
    with pytest.raises(ValueError):
        one[0] = 1.0  # callers cannot change a cached vector
    monkeypatch.setattr(module, "QUERY_CACHE", 2)
    retriever.warm_queries(["x one", "x two", "x three"])
    assert len(retriever._query_cache) <= 2


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([-np.inf, -1.0, 0.0, 0.5, 0.5, 1.0, 2.0]), min_size=0, max_size=40),
       st.integers(min_value=0, max_value=45))
def test_stable_top_is_the_head_of_a_stable_sort(values, n):
    from recgen.retrieval.retriever import stable_top

    scores = np.array(values, dtype=np.float32)
    assert stable_top(scores, n).tolist() == np.argsort(-scores, kind="stable")[:n].tolist()

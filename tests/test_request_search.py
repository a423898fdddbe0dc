"""A request in words on an approximate index (a large catalog) scores only its pool: the pool comes from the
index's search, never from a catalog-wide product, and the answer is the exact path's wherever the search is
exact. Real MiniLM embeddings over a `recgen synth` catalog (genres, years, cold items borrowing neighbours)."""

from __future__ import annotations

import numpy as np
import pytest

from recgen.config import RetrievalSettings
from recgen.data import load_dataset
from recgen.data.synth import SynthSpec, generate
from recgen.retrieval import Retriever
from recgen.retrieval.collaborative import ItemTransitions
from recgen.retrieval.index import set_search_params


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(exact, approximate) retrievers over the same vectors and transitions; the approximate one's efSearch is
    as deep as its catalog, so its search is exact and any difference is the request path's own."""
    folder = tmp_path_factory.mktemp("synth-xs")
    generate(SynthSpec.sized("XS"), folder)
    data = load_dataset(str(folder))
    transitions = ItemTransitions.fit(data.catalog, list(data.sequences.values()))
    exact = Retriever.build(data.catalog, RetrievalSettings(index="flat"), transitions=transitions)
    approximate = Retriever.from_vectors(data.catalog, np.array(exact.item_embeddings), RetrievalSettings(index="hnsw"),
                                         embedder_name=exact.embedder_name, transitions=transitions)
    assert approximate.index_meta.kind == "hnsw" and exact.index_meta.kind == "flat"
    set_search_params(approximate.index, {"efSearch": len(data.catalog)})
    assert exact.cold_neighbours(transitions).weights.nnz  # cold items borrow: that part of the score is exercised
    return data, exact, approximate


def _requests(data) -> list[tuple[list[str], str]]:
    genre = data.catalog.items[0].genres[0]
    title_words = " ".join(data.catalog.items[3].title.split()[:2])
    users = list(data.sequences.values())
    liked = data.catalog.get(users[4][0]).title  # the nearest item to this text is in the history: never shown
    return [(users[0][:-1], title_words), ([], title_words),  # free text: the pool is the text's nearest items
            (users[4], liked),
            (users[1][:-1], f"a {genre} pick"), ([], f"a {genre} pick from the 2010s"),  # filters (+ the new-user prior)
            (users[2][:-1], f"something not {genre}"),  # a negation: only blended
            (users[5][:-1], f"anything but {genre}"),  # a negated filter: most of the catalog allowed
            (users[3][:-1], f"a {genre} from the 1930s"),  # nothing matches: the closest items, labelled
            ([], f"a {genre} from the 1930s")]  # the same for a new user (the request prior orders the catalog)


def test_a_request_on_an_approximate_index_gives_the_exact_paths_answer(pair):
    data, exact, approximate = pair
    for history, text in _requests(data):
        want, got = exact.candidates(history, text, n=20), approximate.candidates(history, text, n=20)
        assert [i for i, _ in got.items] == [i for i, _ in want.items], text
        np.testing.assert_allclose([s for _, s in got.items], [s for _, s in want.items], rtol=1e-5, atol=1e-6)
        assert (got.unmatched, got.warning) == (want.unmatched, want.warning), text
        assert not {i for i, _ in got.items} & set(history)


def test_a_request_on_an_approximate_index_never_scores_the_whole_catalog(pair, monkeypatch):
    """Free text and filters that allow enough items: only pooled rows are scored (the catalog-wide score is made
    to fail), and so does a request that too few items match for a user with a history (the closest others
    come from a search restricted to them); a new user's gets the closest others from one catalog-wide score."""
    data, _, approximate = pair
    calls = []
    real = Retriever._request_scores

    def counted(self, rows, *args):
        calls.append(rows is None)
        return real(self, rows, *args)

    monkeypatch.setattr(Retriever, "_request_scores", counted)
    monkeypatch.setattr(Retriever, "scores", lambda *a, **k: pytest.fail("catalog-wide score computed"))
    for history, text in _requests(data)[:-1]:
        got = approximate.candidates(history, text, n=20)
        assert len(got.items) == 20
    assert got.unmatched and calls and not any(calls)
    monkeypatch.undo()
    monkeypatch.setattr(Retriever, "_request_scores", counted)
    history, text = _requests(data)[-1]
    got = approximate.candidates(history, text, n=20)
    assert got.unmatched and calls[-1] is True


def test_a_negated_request_scores_only_what_can_reach_its_top(pair, monkeypatch):
    """"anything but <genre>" allows most of the catalog: the rows scored are the allowed items nearest to the
    query (a restricted search) and those with a transition score, not every allowed item (at 1M items the
    gather of ~1M vectors took ~0.25 s a request in the L fit's request stage), with the exact path's answer."""
    data, exact, approximate = pair
    genre = data.catalog.items[0].genres[0]
    history = list(data.sequences.values())[5][:-1]
    allowed = sum(genre not in item.genres for item in data.catalog)
    assert 2 * allowed >= len(data.catalog)  # the case: a filter that allows most of the catalog
    scored = []
    real = Retriever._request_scores

    def counted(self, rows, *args):
        scored.append(len(self.catalog) if rows is None else len(rows))
        return real(self, rows, *args)

    monkeypatch.setattr(Retriever, "_request_scores", counted)
    got = approximate.candidates(history, f"anything but {genre}", n=20)
    reach = len(approximate._transition_part(history, approximate.transitions).indices) + 20
    assert got.constraints.filters and scored and max(scored) <= reach < allowed
    assert [i for i, _ in got.items] == [i for i, _ in exact.candidates(history, f"anything but {genre}", n=20).items]

"""The cold items' neighbours are computed once and then updated: a change of the transitions (a feedback event,
items added) redoes only the rows it moves, with the result a full recomputation gives (exact search); ``recgen
fit`` saves them with the folder, a load uses them without searching again, and a file that is not this
folder's is refused by name."""

from __future__ import annotations

import numpy as np
import pytest
from builders import make_dataset
from hypothesis import given, settings
from hypothesis import strategies as st

from recgen import RecgenConfig, Recommender
from recgen.config import RetrievalSettings
from recgen.data.catalog import Catalog, Item
from recgen.errors import DataError
from recgen.retrieval import Retriever, cold_items
from recgen.retrieval.cold_items import ColdNeighbours, cold_neighbours, updated_neighbours
from recgen.retrieval.collaborative import ItemTransitions


def _vectors(n: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, 16)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _same(a: ColdNeighbours, b: ColdNeighbours) -> None:
    assert np.array_equal(a.cold, b.cold) and a.weights.shape == b.weights.shape
    np.testing.assert_allclose(a.weights.toarray(), b.weights.toarray(), atol=1e-6)
    np.testing.assert_allclose(a.kth, b.kth, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(40, 160), added=st.integers(0, 6), k=st.integers(1, 6), seed=st.integers(0, 10_000),
       share=st.floats(0.2, 0.7), flips=st.integers(0, 5))
def test_an_update_gives_what_a_full_recomputation_gives(n, added, k, seed, share, flips):
    rng = np.random.default_rng(seed)
    vectors = _vectors(n + added, seed)
    before = np.flatnonzero(rng.random(n) < share)
    flipped = rng.choice(n, size=min(flips, n), replace=False)  # items turned warm or cold by the change
    cold = np.union1d(np.setxor1d(before, flipped), np.arange(n, n + added))  # added items have no interactions
    previous = cold_neighbours(vectors[:n], before, k)
    _same(updated_neighbours(previous, vectors, cold), cold_neighbours(vectors, cold, k))


def test_a_small_change_redoes_only_the_rows_it_moves(monkeypatch):
    vectors = _vectors(3000, 1)
    before = np.arange(0, 3000, 4)  # 750 cold items
    previous = cold_neighbours(vectors, before, 10)
    searched: list[int] = []
    real = cold_items._rows
    monkeypatch.setattr(cold_items, "_rows", lambda e, c, todo, *a: searched.append(len(todo)) or real(e, c, todo, *a))
    cold = np.union1d(np.setdiff1d(before, [0, 4]), [1])  # two items turned warm, one cold
    updated = updated_neighbours(previous, vectors, cold)
    assert searched and searched[0] < 40, searched  # the rows an item entered or left, not all 749
    _same(updated, cold_neighbours(vectors, cold, 10))


def _retriever(n: int = 400):
    catalog = Catalog([Item(f"i{k}", f"item {k}", ()) for k in range(n)])
    sequences = [[f"i{(7 * u + 3 * j) % 300}" for j in range(6)] for u in range(80)]  # 300..399 are never seen
    transitions = ItemTransitions.fit(catalog, sequences)
    retriever = Retriever.from_vectors(catalog, _vectors(n, 2), RetrievalSettings(index="flat"), embedder_name="fake",
                                       transitions=transitions)
    return retriever, transitions, catalog


def test_a_feedback_event_updates_the_neighbours_of_the_rebound_retriever(monkeypatch):
    retriever, transitions, catalog = _retriever()
    first = retriever.cold_neighbours(transitions)
    assert 300 in first.cold and len(first.cold) >= 100
    searched: list[int] = []
    real = cold_items._rows
    monkeypatch.setattr(cold_items, "_rows", lambda e, c, todo, *a: searched.append(len(todo)) or real(e, c, todo, *a))
    after = transitions.updated(add=[np.array([5, 310, 311])])  # a user took two never-seen items
    rebound = retriever.rebound(retriever.settings, after)  # as the feedback loop serves a new state
    updated = rebound.cold_neighbours(after)
    assert 310 not in updated.cold and 311 not in updated.cold
    assert sum(searched) < len(updated.cold) // 2, searched
    _same(updated, cold_neighbours(rebound.item_embeddings, updated.cold, retriever.settings.cold_neighbours))


@pytest.fixture()
def saved(tmp_path, tiny_backend):
    dataset = make_dataset(n_items=80, n_users=6)  # users walk items 0..46: the rest are cold
    recommender = Recommender.from_dataset(dataset, RecgenConfig(retrieval={"n_candidates": 6}), backend=tiny_backend)
    folder = tmp_path / "rec"
    recommender.save(folder)
    return folder, recommender


def test_a_saved_folder_serves_its_cold_neighbours_without_searching_again(saved, tiny_backend, monkeypatch):
    folder, recommender = saved
    assert (folder / "cold_neighbours.npz").is_file()
    monkeypatch.setattr(cold_items, "_rows", lambda *a: pytest.fail("searched again after a load"))
    loaded = Recommender.load(folder, backend=tiny_backend)
    history = ["0", "3", "6"]
    assert ([i for i, _ in loaded.retriever.retrieve(history, n=20)]
            == [i for i, _ in recommender.retriever.retrieve(history, n=20)])
    borrowed = loaded.retriever.cold_neighbours(loaded.retriever.transitions)
    assert borrowed.weights.nnz and np.isin(79, borrowed.cold)


def test_a_cold_neighbours_file_that_is_not_the_folders_is_refused_by_name(saved, tiny_backend):
    folder, _ = saved
    path = folder / "cold_neighbours.npz"
    good = ColdNeighbours.load(path)
    other = np.setdiff1d(good.cold, good.cold[:1])
    ColdNeighbours(good.weights, other, good.kth[1:], good.k).save(path)
    with pytest.raises(DataError, match="cold_neighbours.npz"):
        Recommender.load(folder, backend=tiny_backend)
    path.write_bytes(b"not an npz file")
    with pytest.raises(DataError, match="cold_neighbours.npz"):
        Recommender.load(folder, backend=tiny_backend)
    with np.load(_saved_copy(good, folder)) as f:
        arrays = dict(f)
    arrays["indices"] = arrays["indices"] + 10_000  # a column past the catalog: scipy's kernels would trust it
    np.savez(path, **arrays)
    with pytest.raises(DataError, match="cold_neighbours.npz"):
        Recommender.load(folder, backend=tiny_backend)


def _saved_copy(neighbours: ColdNeighbours, folder) -> str:
    path = folder / "copy.npz"
    neighbours.save(path)
    return str(path)

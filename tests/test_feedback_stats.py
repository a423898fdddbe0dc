"""Incremental statistics of the feedback loop EQUAL a fit on the served user data: after events, after
forgetting a log user and a dataset user, and after reopening (tombstones applied at load). Exact arrays."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
from builders import make_dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recgen.config import RecgenConfig
from recgen.data import Dataset
from recgen.data.events import EventStore
from recgen.errors import UnknownItemError, UnknownUserError
from recgen.feedback import Feedback, served_dataset
from recgen.pipeline import FittedState, Pipeline
from recgen.retrieval import Retriever
from recgen.retrieval.collaborative import (
    ItemTransitions,
    TransitionParams,
    count_scale,
    pair_counts,
    transition_matrix,
)

CONFIG = RecgenConfig()


def pipeline_for(dataset: Dataset, *, counts: bool = True) -> Pipeline:
    """A real pipeline over random unit vectors (no embedder needed: these tests are about the statistics);
    ``counts=False``: transitions as loaded from a folder saved without their counts."""
    vectors = np.random.default_rng(0).normal(size=(len(dataset.catalog), 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    state = FittedState.fit(dataset, CONFIG.retrieval)
    if not counts:
        state = replace(state, transitions=ItemTransitions(state.transitions.matrix, state.transitions.params))
    retriever = Retriever.from_vectors(dataset.catalog, vectors, CONFIG.retrieval, transitions=state.transitions)
    return Pipeline(dataset.catalog, CONFIG, retriever, state)


def assert_same_csr(a: sp.csr_matrix, b: sp.csr_matrix) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data, b.data)  # bit for bit


def assert_equals_fit(pipeline: Pipeline, sequences: dict[str, list[str]]) -> None:
    expected = FittedState.fit(Dataset("x", pipeline.catalog, sequences), CONFIG.retrieval)
    assert pipeline.state.popularity == expected.popularity
    live = pipeline.retriever.transitions
    assert live is pipeline.state.transitions
    assert_same_csr(live.counts, expected.transitions.counts)
    assert_same_csr(live.matrix, expected.transitions.matrix)


def test_events_then_forgetting_equal_a_fit_without_that_user(tmp_path):
    data = make_dataset()
    base = {u: list(s) for u, s in data.sequences.items()}
    pipeline = pipeline_for(data)
    loop = Feedback(pipeline, data, tmp_path / "e.sqlite")
    loop.record("u3", "1", "purchase")
    loop.record("u3", "2", "click")
    loop.record("newbie", "7", "rating", value=2.0)
    loop.record("newbie", "9", "purchase")
    loop.record("newbie", "9", "purchase", event_id="dup")  # already in the history: no second count
    loop.record("u5", "11", "reject")
    loop.record("u5", "11", "reject", event_id="r")
    expected = {**base, "u3": base["u3"] + [i for i in ("1", "2") if i not in base["u3"]], "newbie": ["7", "9"]}
    assert data.sequences == expected
    assert_equals_fit(pipeline, expected)
    assert loop.rejected_items("u5") == ["11"]

    assert loop.forget("newbie") == {"user": "newbie", "events_removed": 3, "dataset_user": False,
                                     "interactions_removed": 2}
    result = loop.forget("u3")  # a dataset user: their base interactions go too
    assert result["dataset_user"] and result["events_removed"] == 2
    without = {u: s for u, s in base.items() if u != "u3"}
    assert data.sequences == without
    assert_equals_fit(pipeline, without)
    with pytest.raises(UnknownUserError):
        data.history("u3")

    # reopening from the untouched base data: the tombstone drops u3 at load, exactly
    fresh = make_dataset()
    reopened = pipeline_for(fresh)
    Feedback(reopened, fresh, tmp_path / "e.sqlite", create=False)
    assert fresh.sequences == without
    assert_equals_fit(reopened, without)
    assert EventStore(tmp_path / "e.sqlite").forgotten() == {"u3"}  # only the dataset user is tombstoned
    assert served_dataset(make_dataset(), EventStore(tmp_path / "e.sqlite")).sequences == without


def test_forgetting_on_transitions_saved_without_counts_equals_a_fit(tmp_path):
    """Without counts the transitions are fitted on the served data once, then updated: forgetting fitted them
    after the user was gone and removed the user again (counts went negative: a ValueError, user half-forgotten)."""
    data = make_dataset()
    base = {u: list(s) for u, s in data.sequences.items()}
    pipeline = pipeline_for(data, counts=False)
    loop = Feedback(pipeline, data, tmp_path / "e.sqlite")
    loop.forget("u3")
    assert_equals_fit(pipeline, {u: s for u, s in base.items() if u != "u3"})


def test_the_loop_hands_the_pipeline_new_values_and_leaves_the_served_ones_alone(tmp_path):
    """A request in flight keeps the state, retriever and transitions it read; the loop never writes into them."""
    data = make_dataset()
    pipeline = pipeline_for(data)
    loop = Feedback(pipeline, data, tmp_path / "e.sqlite")
    state, retriever = pipeline.state, pipeline.retriever
    matrix = state.transitions.matrix.toarray()
    loop.record("u3", "1", "purchase")
    assert pipeline.state is not state and pipeline.retriever is not retriever
    assert retriever.transitions is state.transitions and pipeline.retriever.transitions is pipeline.state.transitions
    np.testing.assert_array_equal(state.transitions.matrix.toarray(), matrix)
    assert not np.array_equal(pipeline.state.transitions.matrix.toarray(), matrix)


def test_forgetting_is_idempotent_and_unknown_items_are_errors(tmp_path):
    data = make_dataset()
    loop = Feedback(pipeline_for(data), data, tmp_path / "e.sqlite")
    loop.forget("u1")
    assert loop.forget("u1")["interactions_removed"] == 0  # already forgotten: nothing left, no error
    # issue 22: a log-only user forgotten twice was "unknown" the second time (a dataset user was not):
    # forgetting is idempotent for every well-formed id, and counts what each call removed
    loop.record("newbie", "4", "click")
    assert loop.forget("newbie")["events_removed"] == 1
    for user in ("newbie", "nobody"):
        assert loop.forget(user) == {"user": user, "events_removed": 0, "dataset_user": False,
                                     "interactions_removed": 0}
    with pytest.raises(UnknownItemError, match="not in the catalog"):
        loop.record("u2", "no-such-item", "click")
    # a forgotten dataset user may come back as a new user: only their new events count
    loop.record("u1", "4", "click")
    assert data.sequences["u1"] == ["4"]


def test_a_missing_log_is_created_only_by_the_first_write(tmp_path):
    data = make_dataset()
    path = tmp_path / "sub" / "e.sqlite"
    loop = Feedback(pipeline_for(data), data, path, create=False)
    assert loop.forget("stranger")["events_removed"] == 0  # nothing to forget: nothing written
    assert not path.exists()
    loop.record("u2", "4", "click")
    assert path.is_file()


events = st.lists(st.tuples(st.sampled_from(["u0", "u1", "u2", "n0", "n1"]), st.integers(0, 59),
                            st.sampled_from(["click", "purchase", "rating", "reject", "forget"])), max_size=25)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stream=events)
def test_any_event_stream_keeps_the_statistics_equal_to_a_refit(tmp_path_factory, stream):
    data = make_dataset(n_users=6, length=6)
    pipeline = pipeline_for(data)
    loop = Feedback(pipeline, data, tmp_path_factory.mktemp("log") / "e.sqlite")
    for user, item, event in stream:
        if event == "forget":
            loop.forget(user)  # idempotent: any id, known or not
        else:
            loop.record(user, str(item), event, value=3.0 if event == "rating" else None)
    assert_equals_fit(pipeline, data.sequences)
    assert served_dataset(make_dataset(n_users=6, length=6), loop.store).sequences == data.sequences


def test_update_grows_the_matrix_for_items_added_to_the_catalog():
    data = make_dataset(n_items=10, n_users=3, length=4)
    t = ItemTransitions.fit(data.catalog, list(data.sequences.values()))
    grown = t.updated(add=[np.array([1, 11])], n_items=12)
    assert grown.matrix.shape == (12, 12) and grown.matrix[1, 11] > 0
    with pytest.raises(ValueError, match="never added"):
        grown.updated(remove=[np.array([2, 9, 2])], n_items=12)


def test_an_update_is_a_new_value_and_leaves_the_old_one_as_it_was():
    """Requests in flight read the transitions they hold while the feedback loop makes the next ones."""
    data = make_dataset(n_items=10, n_users=3, length=4)
    t = ItemTransitions.fit(data.catalog, list(data.sequences.values()))
    before = [(m.data.copy(), m.indices.copy(), m.indptr.copy()) for m in (t.matrix, t.counts)]
    new = t.updated(add=[np.array([1, 2, 3])])
    assert new.counts[1, 2] == t.counts[1, 2] + count_scale(t.params.window)
    for (data_, indices, indptr), m in zip(before, (t.matrix, t.counts)):
        assert np.array_equal(m.data, data_) and np.array_equal(m.indices, indices)
        assert np.array_equal(m.indptr, indptr)


def test_exact_counts_give_the_same_float32_matrix_as_the_float_sums_on_real_data(shared_data, monkeypatch):
    """The served transitions did not change when fit moved to exact counts (0 entries differ)."""
    from recgen.data import load_dataset

    monkeypatch.setenv("RECGEN_DATA_DIR", str(shared_data))
    data = load_dataset("ml-100k")
    p = TransitionParams()
    rows = [np.array([data.catalog.index_of(i) for i in s]) for s in data.sequences.values()]
    old = transition_matrix(rows, len(data.catalog), p.window, p.backward, p.alpha).astype(np.float32).tocsr()
    old.sort_indices()
    assert_same_csr(ItemTransitions.fit(data.catalog, list(data.sequences.values())).matrix, old)


def test_saved_transitions_keep_their_counts(tmp_path):
    data = make_dataset(n_items=10, n_users=3, length=4)
    t = ItemTransitions.fit(data.catalog, list(data.sequences.values()))
    t.save(tmp_path / "transitions.npz")
    u = ItemTransitions.load(tmp_path / "transitions.npz", n_items=10)
    assert_same_csr(u.counts, t.counts)
    assert_same_csr(u.updated(add=[np.array([1, 2])]).matrix, t.updated(add=[np.array([1, 2])]).matrix)


sequence = st.lists(st.integers(0, 14), min_size=0, max_size=12)


@settings(max_examples=60, deadline=None)
@given(base=st.lists(sequence, max_size=8), changes=st.lists(st.tuples(st.booleans(), sequence), max_size=8),
       params=st.sampled_from([TransitionParams(), TransitionParams(window=3, backward=0.0, alpha=0.5),
                               TransitionParams(window=5, backward=1.0, alpha=1.0)]),
       grow=st.integers(0, 3))
def test_local_updates_equal_a_fit_bit_for_bit(base, changes, params, grow):
    """Only the touched rows and columns are recomputed; the result is the full fit's, exactly."""
    n = 15
    live = ItemTransitions.from_counts(pair_counts([np.array(s) for s in base], n, params.window), params)
    current = [list(s) for s in base]
    for adding, seq in changes:
        if adding or seq not in current:
            live = live.updated(add=[np.array(seq)], n_items=n + grow)
            current.append(seq)
        else:
            live = live.updated(remove=[np.array(seq)], n_items=n + grow)
            current.remove(seq)
    size = n + grow if changes else n
    expected = ItemTransitions.from_counts(pair_counts([np.array(s) for s in current], size, params.window), params)
    assert_same_csr(live.counts, expected.counts)
    assert_same_csr(live.matrix, expected.matrix)


def test_logged_events_on_items_no_longer_in_the_catalog_are_skipped_with_a_warning(tmp_path, caplog):
    path = tmp_path / "e.sqlite"
    big = make_dataset(n_items=60)
    Feedback(pipeline_for(big), big, path).record("u1", "55", "purchase")
    small = make_dataset(n_items=50)
    before = list(small.sequences["u1"])
    with caplog.at_level("WARNING", logger="recgen.feedback"):
        Feedback(pipeline_for(small), small, path, create=False)
    assert small.sequences["u1"] == before
    assert "not in the catalog any more" in caplog.text
    assert len(EventStore(path)) == 1  # still in the log


def test_concurrent_writers_and_readers_keep_the_statistics_equal_to_a_replay_of_the_log(tmp_path):
    """Writers are serialised with the log (the applied order is the log's order); a reader scoring meanwhile
    always sees a whole matrix."""
    data = make_dataset()
    pipeline = pipeline_for(data)
    loop = Feedback(pipeline, data, tmp_path / "e.sqlite")
    errors: list[BaseException] = []
    done = threading.Event()

    def writer(k: int) -> None:
        try:
            for n in range(15):
                user = f"u{(k * 5 + n) % 30}" if n % 3 else f"w{k}"
                loop.record(user, str((k * 11 + n * 7) % 60), "reject" if n % 5 == 4 else "purchase")
            loop.forget(f"u{k}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def reader() -> None:
        rows = np.array([1, 2, 3])
        while not done.is_set():
            try:
                scores = pipeline.retriever.transitions.scores(rows)
                assert scores.shape == (60,) and np.isfinite(scores).all()
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                return

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    assert not errors, errors
    assert served_dataset(make_dataset(), loop.store).sequences == data.sequences
    assert_equals_fit(pipeline, data.sequences)

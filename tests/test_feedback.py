"""The feedback loop end to end: Recommender.record/forget, POST /v1/feedback, DELETE /v1/users/{id},
`recgen forget` and `recgen refit`. Real MiniLM retrieval over the synthetic catalog, tiny random LM ranking."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from builders import SlowRecommender, make_dataset
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from recgen import RecgenConfig, Recommender
from recgen.cli.main import app as cli
from recgen.data.events import EventStore, make_event
from recgen.errors import InvalidRequestError, UnknownUserError
from recgen.feedback import served_dataset
from recgen.pipeline import FittedState
from recgen.recommender import open_dataset
from recgen.server.app import create_app
from recgen.server.serving import ServerSettings

CONFIG = RecgenConfig(retrieval={"n_candidates": 10}, prompt={"reason_tokens": 8})


@pytest.fixture
def live(tiny_recommender, tiny_backend, tmp_path):
    """A fresh dataset and recommender (sharing the session's MiniLM index) with an event log in tmp_path."""
    data = make_dataset()
    rec = Recommender(data.catalog, CONFIG, retriever=tiny_recommender.retriever,
                      state=FittedState.fit(data, CONFIG.retrieval), backend=tiny_backend)
    rec.use_feedback(data, tmp_path / "events.sqlite")
    return data, rec


def ids(recs) -> list[str]:
    return [r.item_id for r in recs]


def test_a_reject_removes_the_item_and_a_purchase_extends_the_history(live, tiny_recommender, tiny_backend):
    data, rec = live
    before = ids(rec.recommend(user="u1", k=5, reasons=False))
    rec.record("u1", before[0], "reject")
    after_reject = ids(rec.recommend(user="u1", k=5, reasons=False))
    assert before[0] not in after_reject and len(after_reject) == 5
    assert rec.rejected("u1") == [before[0]]

    bought = after_reject[0]
    history = list(data.history("u1"))
    event, new = rec.record("u1", bought, "purchase", event_id="order-1")
    assert new and data.history("u1") == history + [bought]
    candidates = rec.retriever.retrieve(data.history("u1"), exclude={before[0]})
    # exactly what a recommender fitted from scratch on the extended data retrieves: history AND transitions moved
    refit = make_dataset()
    refit.sequences["u1"] = history + [bought]
    fresh = Recommender(refit.catalog, CONFIG, retriever=tiny_recommender.retriever,
                        state=FittedState.fit(refit, CONFIG.retrieval), backend=tiny_backend)
    assert candidates == fresh.retriever.retrieve(refit.sequences["u1"], exclude={before[0]})
    assert candidates != tiny_recommender.retriever.retrieve(history, exclude={before[0]})
    after_purchase = ids(rec.recommend(user="u1", k=5, reasons=False))
    assert bought not in after_purchase and before[0] not in after_purchase
    assert rec.record("u1", bought, "purchase", event_id="order-1") == (event, False)  # a retry changes nothing


def test_a_new_user_starts_by_sending_events_and_can_be_forgotten(live):
    data, rec = live
    with pytest.raises(UnknownUserError):
        rec.recommend(user="newcomer", k=3, reasons=False)
    rec.record("newcomer", "12", "click")
    assert len(rec.recommend(user="newcomer", k=3, reasons=False)) == 3
    assert rec.forget("newcomer")["events_removed"] == 1
    with pytest.raises(UnknownUserError):
        rec.recommend(user="newcomer", k=3, reasons=False)


def test_without_a_log_record_and_forget_say_how_to_get_one(tiny_recommender):
    with pytest.raises(InvalidRequestError, match="use_feedback"):
        tiny_recommender.record("u1", "1", "click")
    assert tiny_recommender.rejected("u1") == []


# -- HTTP ----------------------------------------------------------------------------------------------

def test_feedback_routes(live):
    data, rec = live
    with TestClient(create_app(rec, data)) as c:
        shown = [r["item_id"] for r in c.post("/v1/recommendations", json={"user": "u2", "k": 5, "reasons": False})
                 .json()["recommendations"]]
        rejected, rated = shown[0], shown[1]
        ok = c.post("/v1/feedback", json={"user": "u2", "item": rejected, "event": "reject", "event_id": "r-1"})
        assert ok.status_code == 200 and ok.json()["duplicate"] is False
        again = c.post("/v1/feedback", json={"user": "u2", "item": rejected, "event": "reject", "event_id": "r-1"})
        assert again.status_code == 200 and again.json()["duplicate"] is True
        assert again.json()["ts"] == ok.json()["ts"]
        conflict = c.post("/v1/feedback", json={"user": "u2", "item": rated, "event": "reject", "event_id": "r-1"})
        assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "event_conflict"
        rating = c.post("/v1/feedback", json={"user": "u2", "item": rated, "event": "rating", "value": 4})
        assert rating.status_code == 200 and rating.json()["value"] == 4.0
        for bad, status, text in [
            ({"user": "u2", "item": "nope", "event": "click"}, 400, "not in the catalog"),
            ({"user": "", "item": "7", "event": "click"}, 400, "user"),
            ({"user": "u2", "item": "7", "event": "like"}, 400, "event"),
            ({"user": "u2", "item": "7", "event": "rating"}, 400, "rating needs"),
            ({"user": "u2", "item": "7", "event": "click", "value": 3}, 400, "only a rating"),
            ({"user": 5, "item": "7", "event": "click"}, 400, "user"),
            ({"user": "u2", "item": "7", "event": "click", "extra": 1}, 400, "extra"),
            ({"user": "x" * 300, "item": "7", "event": "click"}, 400, "user"),
            ({"user": "u\u0007", "item": "7", "event": "click"}, 400, "control character"),
        ]:
            r = c.post("/v1/feedback", json=bad)
            assert r.status_code == status and text in r.json()["error"]["message"], (bad, r.json())

        recs = c.post("/v1/recommendations", json={"user": "u2", "k": 5, "reasons": False}).json()
        assert rejected not in [r["item_id"] for r in recs["recommendations"]]
        assert rated not in [r["item_id"] for r in recs["recommendations"]]  # rated = in the history now
        assert data.history("u2")[-1] == rated

        gone = c.delete("/v1/users/u2")
        assert gone.status_code == 200 and gone.json()["dataset_user"] and gone.json()["events_removed"] == 2
        assert c.delete("/v1/users/u2").json()["interactions_removed"] == 0  # idempotent
        nobody = c.delete("/v1/users/nobody")  # idempotent for any well-formed id: nothing removed
        assert nobody.status_code == 200 and nobody.json()["events_removed"] == 0
        assert c.post("/v1/recommendations", json={"user": "u2", "k": 3}).status_code == 404
    assert EventStore(rec.feedback.path).forgotten() == {"u2"}


def test_a_server_without_an_event_log_says_so(tiny_recommender, dataset):
    with TestClient(create_app(tiny_recommender, dataset)) as c:
        r = c.post("/v1/feedback", json={"user": "u1", "item": "1", "event": "click"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "no_event_log"


def test_events_are_not_queued_behind_a_slow_lm_call(live):
    data, rec = live
    slow = SlowRecommender(rec, delay=3.0)
    with TestClient(create_app(slow, data, ServerSettings(max_concurrency=4))) as c:
        busy = threading.Thread(target=lambda: c.post("/v1/recommendations", json={"query": "drama", "k": 2}))
        busy.start()
        time.sleep(0.5)  # the LM worker is now sleeping inside the recommendation
        start = time.perf_counter()
        r = c.post("/v1/feedback", json={"user": "u4", "item": "3", "event": "purchase"})
        took = time.perf_counter() - start
        busy.join()
    assert r.status_code == 200 and took < 1.5, took
    assert data.history("u4")[-1] == "3"


# -- CLI ------------------------------------------------------------------------------------------------

def test_recgen_forget_and_refit(synthetic_dataset_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("RECGEN_STATE_DIR", str(tmp_path / "state"))
    runner = CliRunner()
    unknown = runner.invoke(cli, ["forget", "--user", "ghost", "-d", str(synthetic_dataset_dir)])
    assert unknown.exit_code == 0 and "nothing to forget for user 'ghost'" in unknown.output
    log = tmp_path / "state" / "feedback" / "synthetic" / "events.sqlite"
    store = EventStore(log)
    store.record(make_event("u7", "3", "purchase"))
    store.record(make_event("fresh", "4", "click"))
    store.close()
    done = runner.invoke(cli, ["forget", "--user", "u7", "-d", str(synthetic_dataset_dir), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) | {"events_log": None} == {
        "user": "u7", "events_removed": 1, "dataset_user": True, "interactions_removed": 8, "events_log": None}
    assert EventStore(log).forgotten() == {"u7"}

    out = tmp_path / "refitted"
    refit = runner.invoke(cli, ["refit", "-d", str(synthetic_dataset_dir), "--out", str(out), "--json"])
    assert refit.exit_code == 0, refit.output
    info = json.loads(refit.stdout)
    assert (info["events"], info["forgotten_users"], info["users"]) == (1, 1, 30)  # 30 - u7 + fresh
    expected = served_dataset(make_dataset(), EventStore(log))
    assert "u7" not in expected.sequences and expected.sequences["fresh"] == ["4"]
    saved = Recommender.load(out)
    assert saved.popularity == expected.popularity()
    fitted = FittedState.fit(expected, CONFIG.retrieval).transitions
    np.testing.assert_array_equal(saved.retriever.transitions.matrix.toarray(), fitted.matrix.toarray())


def test_open_dataset_fits_once_on_the_served_user_data(synthetic_dataset_dir, tmp_path, monkeypatch):
    """Every entry point opens datasets through open_dataset: the log (events, tombstones) is applied before the
    fit, so the statistics it serves are a fit on the served user data."""
    monkeypatch.setenv("RECGEN_STATE_DIR", str(tmp_path / "state"))
    data, rec = open_dataset(str(synthetic_dataset_dir), CONFIG)
    assert rec.feedback is not None and not rec.feedback.path.exists()  # no log until the first write
    rec.record("u3", "1", "purchase")
    rec.record("fresh", "2", "click")
    rec.record("u4", "5", "reject")
    rec.forget("u9")
    served = {u: list(s) for u, s in data.sequences.items()}
    again, reopened = open_dataset(str(synthetic_dataset_dir), CONFIG)
    assert again.sequences == served and "u9" not in served and served["fresh"] == ["2"]
    assert reopened.rejected("u4") == ["5"]
    expected = FittedState.fit(again, CONFIG.retrieval)
    assert reopened.popularity == expected.popularity == rec.popularity
    np.testing.assert_array_equal(reopened.retriever.transitions.matrix.toarray(), expected.transitions.matrix.toarray())
    np.testing.assert_array_equal(rec.retriever.transitions.matrix.toarray(), expected.transitions.matrix.toarray())

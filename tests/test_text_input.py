"""Issue 22: text is validated once at every boundary (server, batch lines, CLI, terminal chat, Python API) by
the one validator in recgen.text; batch lines get the server's verdict for the same body; items added over
HTTP persist; forgetting is idempotent and counts what each call removed."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from builders import make_dataset
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from recgen import RecgenConfig, Recommender
from recgen.batch import requests as breq
from recgen.cli.main import app as cli
from recgen.data import Item
from recgen.errors import InvalidRequestError, RecgenError
from recgen.feedback import Feedback
from recgen.pipeline import FittedState
from recgen.server.app import create_app
from recgen.text import InvalidTextError, check_id, check_text, check_title

CONFIG = RecgenConfig(retrieval={"n_candidates": 10}, prompt={"reason_tokens": 8})
SURROGATE, CONTROL, UNDECODED = "comedy \ud800", "comedy \x1b[2J", "caf\udce9 com\udcffedy"  # \udcXX: bytes via argv
#: Any code point, lone surrogates and control characters included.
ANY_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, blacklist_categories=()), max_size=12)


# -- the validator ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("check", [check_id, check_text, check_title])
@pytest.mark.parametrize("text, reason", [
    (SURROGATE, "lone surrogate"), (CONTROL, "control character"), (UNDECODED, "not valid UTF-8 \\(0xe9\\)"),
    ("a\x00b", "control character"), ("a\x85b", "control character"),
])
def test_bad_code_points_are_one_clear_error_everywhere(check, text, reason):
    with pytest.raises(InvalidTextError, match=reason) as caught:
        check(text, "it")
    assert isinstance(caught.value, InvalidRequestError) and isinstance(caught.value, ValueError)


def test_free_text_keeps_tabs_newlines_and_emoji_ids_refuse_them():
    assert check_text("line one\n\tline two \U0001f3ac \u200d", "q") == "line one\n\tline two \U0001f3ac \u200d"
    assert check_title("Am\u00e9lie (2001)") == "Am\u00e9lie (2001)"
    for bad in ("a\nb", "a\u200bb", "", "  ", "x" * 257, 7, None):
        with pytest.raises(InvalidTextError):
            check_id(bad, "id")


# -- the server ---------------------------------------------------------------------------------------------

def _post(client, path: str, body: dict):
    """``body`` as JSON with \\uXXXX escapes: how a client sends a lone surrogate (it cannot be UTF-8)."""
    return client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})


def _chat(content, **extra) -> dict:
    return {"model": "recgen", "messages": [{"role": "user", "content": content}], **extra}


@pytest.mark.parametrize("path, body", [
    ("/v1/recommendations", {"query": SURROGATE}),
    ("/v1/recommendations", {"query": CONTROL}),
    ("/v1/recommendations", {"history": ["1\x07"]}),
    ("/v1/recommendations", {"exclude": ["\ud800"]}),
    ("/v1/recommendations", {"user": "u\x00"}),
    ("/v1/chat/completions", _chat(SURROGATE)),
    ("/v1/chat/completions", _chat(SURROGATE, stream=True)),
    ("/v1/chat/completions", _chat([{"type": "text", "text": CONTROL}])),
    ("/v1/chat/completions", _chat("a comedy", user="u\x07")),
    ("/v1/chat/completions", _chat("a comedy", recgen={"history": ["\udfff"]})),
    ("/v1/items", {"items": [{"item_id": "n\x07", "title": "Fine"}]}),
    ("/v1/items", {"items": [{"item_id": 7, "title": "Fine"}]}),
    ("/v1/items", {"items": [{"item_id": "n7", "title": 7}]}),
    ("/v1/items", {"items": [{"item_id": "n7", "title": "Bad \ud800"}]}),
    ("/v1/items", {"items": [{"item_id": "n7", "title": "Fine", "genres": ["Dra\x00ma"]}]}),
    ("/v1/feedback", {"user": "u\ud800", "item": "1", "event": "click"}),
])
def test_bad_text_is_a_400_on_every_route(tiny_recommender, dataset, path, body):
    """Before: a lone surrogate in a query or chat message reached the tokenizer (500); /v1/items took control
    characters and numbers as ids and titles."""
    with TestClient(create_app(tiny_recommender, dataset)) as client:
        response = _post(client, path, body)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["type"] == "invalid_request_error"
        assert re.search(r"lone surrogate|control character|valid string", response.json()["error"]["message"])
        assert client.get("/healthz").json()["failed"] == 0


def test_a_model_that_is_not_served_is_404_on_both_routes(tiny_recommender, dataset):
    with TestClient(create_app(tiny_recommender, dataset)) as client:
        for path, body in (("/v1/recommendations", {"query": "comedy", "model": "../../etc", "reasons": False}),
                           ("/v1/chat/completions", {**_chat("a comedy"), "model": "../../etc"})):
            response = client.post(path, json=body)
            assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
        ok = client.post("/v1/recommendations", json={"query": "comedy", "model": "recgen", "k": 2, "reasons": False})
        assert ok.status_code == 200 and len(ok.json()["recommendations"]) == 2


# -- batch lines: the server's verdict --------------------------------------------------------------------

@pytest.mark.parametrize("body, reason, chat_too", [
    ({"query": "comedy \u0000"}, "control character", False),  # a chat body's request is its messages
    ({"history": ["1\x07"]}, "control character", True),
    ({"model": "../../etc"}, "model '../../etc' is not served here", True),
    ({"user": 1}, "valid string", True),
    ({"k": "5"}, "valid integer", True),
    ({"k": True}, "valid integer", True),
])
def test_a_batch_line_gets_the_servers_verdict(body, reason, chat_too):
    """Before: batch coerced ``{"user": 1}``, ``{"k": "5"}`` and ``{"k": true}`` and served ``"model": "../../etc"``
    where the server answers 400/404 for the same body."""
    served = breq.Served.of(CONFIG)
    lines = [{"custom_id": "x", **body}, {"custom_id": "x", "method": "POST", "url": "/v1/recommendations", "body": body}]
    if chat_too:
        lines.append({"custom_id": "x", "method": "POST", "url": "/v1/chat/completions",
                      "body": {**body, "messages": [{"role": "user", "content": "a comedy"}]}})
    for line in lines:
        with pytest.raises(breq.LineError, match=reason):
            breq.parse_line(json.dumps(line), 1, served)


def test_a_named_adapter_as_the_model_selects_it_in_batch_as_on_the_server():
    served = breq.Served.of(RecgenConfig(lm={"adapters": {"tuned": "some/folder"}}))
    line = {"custom_id": "x", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "tuned", "messages": [{"role": "user", "content": "a comedy"}]}}
    assert breq.parse_line(json.dumps(line), 1, served).request.adapter == "tuned"
    line["body"]["model"] = "recgen"
    assert breq.parse_line(json.dumps(line), 1, served).request.adapter is None


BODY_VALUES = st.one_of(ANY_TEXT, st.integers(-3, 40), st.booleans(), st.none(), st.floats(allow_nan=False),
                        st.lists(st.one_of(ANY_TEXT, st.integers(0, 9)), max_size=3))
BODIES = st.dictionaries(st.sampled_from(["query", "history", "exclude", "k", "mode", "reasons", "model", "adapter",
                                          "user", "extra"]), BODY_VALUES, max_size=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES, text=ANY_TEXT)
@example(body={"user": 1}, text=SURROGATE)  # the reproductions, always tried first
@example(body={"k": "5"}, text=CONTROL)
@example(body={"k": True, "query": SURROGATE}, text=UNDECODED)
@example(body={"model": "../../etc"}, text="a comedy")
@example(body={"adapter": "0", "user": "0"}, text="")  # found in CI: the server looked the user up first (404)
def test_random_text_never_gives_a_5xx_and_batch_agrees_with_the_server(tiny_recommender, dataset, body, text):
    """Random bodies (any code point, any JSON type) through the server never give a 5xx, and a batch line with
    the same body is refused exactly when the server refuses the body itself (a 400 from the schema, a 404 model)."""
    served = breq.Served.of(tiny_recommender.config)
    with TestClient(create_app(tiny_recommender, dataset)) as client:
        response = _post(client, "/v1/recommendations", {**body, "reasons": False})
        assert response.status_code < 500, response.text
        error = response.json().get("error") or {}
        refused = (response.status_code == 400 and error.get("code") is None) or error.get("code") == "model_not_found"
        try:
            breq.parse_line(json.dumps({"custom_id": "x", **body, "reasons": False}), 1, served)
            batch_refused = False
        except breq.LineError:
            batch_refused = True
        assert refused == batch_refused, (body, response.json())
        chat = _post(client, "/v1/chat/completions", _chat(text, recgen={"k": 2, "reasons": False}))
        assert chat.status_code < 500, chat.text
        query = _post(client, "/v1/recommendations", {"query": text, "k": 2, "reasons": False})
        assert query.status_code < 500, query.text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=ANY_TEXT)
@example(text=SURROGATE)
@example(text=UNDECODED)
def test_random_text_through_the_python_api_and_a_chat_turn_is_a_result_or_a_recgen_error(tiny_recommender, text):
    """What the CLI and the terminal chat call: never another exception (a traceback) for any text."""
    from recgen.chat.state import ChatContext
    from recgen.chat.turn import chat_turn

    context = ChatContext.from_catalog(tiny_recommender.catalog)
    for call in (lambda: tiny_recommender.recommend(query=text, k=2, reasons=False),
                 lambda: tiny_recommender.recommend(history=[text], k=2, reasons=False),
                 lambda: chat_turn(tiny_recommender, context, [{"role": "user", "content": text}], k=2, reasons=False)):
        try:
            call()
        except RecgenError:
            pass


# -- CLI and the terminal chat -----------------------------------------------------------------------------

def test_recgen_recommend_refuses_undecodable_bytes_with_exit_2(synthetic_dataset_dir):
    """Before: `recgen recommend --query "$(printf 'comedy \\xed\\xa0\\x80')"` died in the tokenizer with a
    TypeError traceback (Python hands such argv bytes over as lone surrogates)."""
    result = CliRunner().invoke(cli, ["recommend", "-d", str(synthetic_dataset_dir), "--query", "comedy \udced\udca0\udc80"])
    assert result.exit_code == 2 and "not valid UTF-8 (0xed)" in result.output, result.output
    assert "Traceback" not in result.output


def test_the_python_api_refuses_bad_text_too(tiny_recommender):
    with pytest.raises(InvalidRequestError, match="lone surrogate"):
        tiny_recommender.recommend(query=SURROGATE, k=2, reasons=False)
    with pytest.raises(RecgenError, match="control character"):
        tiny_recommender.recommend(history=["1\x07"], k=2, reasons=False)


def test_the_terminal_chat_prints_the_error_and_goes_on(tiny_lm_dir, tmp_path, monkeypatch):
    """Before: `printf 'caf\\xe9 com\\xffedy\\n' | recgen chat` died on the undecodable byte."""
    from test_server import write_dataset_folder

    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    data = write_dataset_folder(tmp_path / "tinyflix")
    turns = b"caf\xe9 com\xffedy\nbad \x1b control\na drama\n/quit\n"
    result = CliRunner().invoke(cli, ["chat", "--dataset", str(data), "--lm", tiny_lm_dir, "-k", "2",
                                      "--no-reasons"], input=turns)
    assert result.exit_code == 0, result.output
    assert "not valid UTF-8 (0xe9)" in result.output and "control character" in result.output
    assert "turn 1" in result.output  # the good request after the bad ones is served


# -- items added over HTTP persist ---------------------------------------------------------------------------

NEW = Item("n1", "Lunar Submarine Odyssey (1996)", ("Adventure", "Sci-Fi"), 1996)


def _serve(tiny_recommender, tiny_backend, log):
    """What `recgen serve -d` does: the log applied before the fit, then the app (a new process each call)."""
    data = make_dataset()
    feedback = Feedback.open(data, log)
    rec = Recommender(data.catalog, CONFIG, retriever=tiny_recommender.retriever,
                      state=FittedState.fit(data, CONFIG.retrieval), backend=tiny_backend)
    rec.use_feedback(feedback)
    return data, rec, TestClient(create_app(rec, data))


def test_items_added_over_http_survive_a_restart_and_their_events_count(tiny_recommender, tiny_backend, tmp_path,
                                                                       caplog):
    """Before: after a restart the item was gone and the acknowledged purchase of it silently stopped counting."""
    log = tmp_path / "events.sqlite"
    data, rec, client = _serve(tiny_recommender, tiny_backend, log)
    with client:
        added = client.post("/v1/items", json={"items": [NEW.to_dict()]})
        assert added.status_code == 200 and added.json()["persisted"] is True
        bought = client.post("/v1/feedback", json={"user": "u2", "item": "n1", "event": "purchase"})
        assert bought.status_code == 200
        refused = client.post("/v1/items", json={"items": [NEW.to_dict()]})  # a 400 is not recorded
        assert refused.status_code == 400
    served = {u: list(s) for u, s in data.sequences.items()}
    popularity, transitions = rec.popularity, rec.retriever.transitions.matrix.toarray()

    data, rec, client = _serve(tiny_recommender, tiny_backend, log)  # the restart
    assert "not in the catalog any more" not in caplog.text  # the log's own items are not "gone"
    with client:
        assert "n1" in rec.catalog and rec.catalog.get("n1").title == NEW.title
        assert data.sequences == served and data.history("u2")[-1] == "n1"
        assert rec.popularity == popularity and "n1" in popularity  # the statistics are those served before
        np.testing.assert_array_equal(rec.retriever.transitions.matrix.toarray(), transitions)
        found = client.post("/v1/recommendations", json={"query": "lunar submarine odyssey", "k": 10,
                                                         "reasons": False})
        assert found.status_code == 200 and "n1" in {r["item_id"] for r in found.json()["recommendations"]}
    assert len(Feedback.open(make_dataset(), log).added_items()) == 1


def test_a_server_without_a_log_says_items_are_not_persisted(tiny_backend, tiny_recommender):
    rec = Recommender(tiny_recommender.catalog, CONFIG, retriever=tiny_recommender.retriever,
                      state=tiny_recommender.pipeline.state, backend=tiny_backend)
    with TestClient(create_app(rec)) as client:
        added = client.post("/v1/items", json={"items": [NEW.to_dict()]})
    assert added.status_code == 200 and added.json()["persisted"] is False


# -- forgetting is idempotent --------------------------------------------------------------------------------

def test_forgetting_twice_is_200_both_times_and_counts_this_calls_removals(tiny_recommender, tiny_backend, tmp_path):
    """Before: a second DELETE of a log-only user was a 404 (a dataset user's was a 200)."""
    _, _, client = _serve(tiny_recommender, tiny_backend, tmp_path / "events.sqlite")
    with client:
        client.post("/v1/feedback", json={"user": "newbie", "item": "3", "event": "click"})
        first, second = client.delete("/v1/users/newbie"), client.delete("/v1/users/newbie")
        assert (first.status_code, first.json()["events_removed"], first.json()["interactions_removed"]) == (200, 1, 1)
        assert (second.status_code, second.json()["events_removed"], second.json()["interactions_removed"]) == (200, 0, 0)
        assert client.delete("/v1/users/u%07").status_code == 400


def test_recgen_forget_reports_what_each_call_removed(synthetic_dataset_dir, tmp_path, monkeypatch):
    """Before: every repeat of `recgen forget --user u7` reported the user's 8 base interactions again."""
    monkeypatch.setenv("RECGEN_STATE_DIR", str(tmp_path / "state"))
    runs = [CliRunner().invoke(cli, ["forget", "--user", "u7", "-d", str(synthetic_dataset_dir), "--json"])
            for _ in range(2)]
    assert [r.exit_code for r in runs] == [0, 0]
    assert [json.loads(r.stdout)["interactions_removed"] for r in runs] == [8, 0]

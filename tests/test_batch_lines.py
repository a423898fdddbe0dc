"""Malformed batch lines: every one becomes an errors-file record naming its line and the problem (wrong types
anywhere, bad JSON, non-UTF-8 bytes, huge lines), the other lines are served, and nothing aborts the job.
Bodies are read with the server's strict request schema (a JSON number is not an id, a string is not a k); a
chat body without a user message is an error, as on the server."""

from __future__ import annotations

import json

import pytest

from recgen.batch import requests as breq
from recgen.batch.runner import run_batch
from recgen.errors import RecgenError


def _chat(messages, **body) -> str:
    return json.dumps({"custom_id": "c", "method": "POST", "url": "/v1/chat/completions",
                       "body": {"messages": messages, **body}})


@pytest.mark.parametrize("text, reason", [
    (_chat([{"role": "user", "content": [{"type": "text", "text": 5}]}]), r"messages\.0\.content: .*content\[0\]\.text must be a string, not int"),
    (_chat([{"role": "user", "content": [{"type": "text"}]}]), r"content\[0\]\.text must be a string, not null"),
    (_chat([{"role": "user", "content": ["hi"]}]), r"messages\.0\.content\.list.*valid dictionary"),
    (_chat([{"role": "user", "content": {"text": "hi"}}]), r"messages\.0\.content\.str: Input should be a valid string"),
    (_chat(["hi"]), r"messages\.0: Input should be a valid dictionary"),
    (_chat([{"role": 1, "content": "hi"}]), r"messages\.0\.role: Input should be 'system'"),
    (_chat([{"role": "user", "content": "hi"}], user={"id": 1}), "body: user: Input should be a valid string"),
    (_chat([{"role": "user", "content": "hi"}], user=True), "body: user: Input should be a valid string"),
    (_chat([{"role": "system", "content": "be brief"}]), "at least one message with role 'user'"),
    (_chat([{"role": "assistant", "content": None}]), "at least one message with role 'user'"),
    (json.dumps({"custom_id": "c", "method": 7, "url": "/v1/recommendations", "body": {}}), "method must be POST"),
    (json.dumps({"custom_id": "x", "user": True}), "user"),
    (json.dumps({"custom_id": "x", "history": [{"id": 1}]}), "history"),
    (json.dumps({"custom_id": 1.5, "user": "1"}), "custom_id"),
    ("[" * 100_000, "nested too deeply|not valid JSON"),
    ('{"custom_id": "x", "k": ' + "9" * 5000 + "}", "not valid JSON"),
    ('{"custom_id": "x", "k": NaN}', "NaN is not valid JSON"),
    ('{"custom_id": "x", "query": "a\\ud800b"}', "lone surrogate"),
    ('{"custom_id": "\\udfff", "user": "1"}', "lone surrogate"),
])
def test_wrong_types_anywhere_are_line_errors(text, reason):
    with pytest.raises(breq.LineError, match=reason):
        breq.parse_line(text, 1)
    assert issubclass(breq.LineError, RecgenError)


def test_valid_surrogate_pairs_and_null_content_are_fine():
    req = breq.parse_line(_chat([{"role": "system", "content": None},
                                {"role": "user", "content": "films like \U0001f3ac"}]), 1)  # json.dumps: a pair
    assert req.request.query == "films like \U0001f3ac"


@pytest.mark.parametrize("body", [
    {"custom_id": "x", "user": 3},
    {"custom_id": "x", "history": [1, "2"]},
    {"custom_id": "x", "k": "5"},
    {"custom_id": "x", "k": True},
    {"custom_id": "x", "method": "POST", "url": "/v1/recommendations", "body": {"user": 3}},
    {"custom_id": "x", "method": "POST", "url": "/v1/recommendations", "body": {"user": "1", "exclude": [4]}},
    {"custom_id": "x", "method": "POST", "url": "/v1/chat/completions",
     "body": {"user": 3, "messages": [{"role": "user", "content": "hi"}]}},
    {"custom_id": "x", "method": "POST", "url": "/v1/chat/completions",
     "body": {"k": "5", "messages": [{"role": "user", "content": "hi"}]}},
])
def test_wrong_json_types_are_errors_as_on_the_server(body):
    """Issue 22: batch lines coerced ``{"user": 1}``, ``{"k": "5"}`` and ``{"k": true}`` that the server refuses
    (400): both read bodies with one strict schema now."""
    with pytest.raises(breq.LineError, match="Input should be a valid (string|integer)"):
        breq.parse_line(json.dumps(body), 1)


def test_a_bad_line_costs_only_that_line(tmp_path, dataset, tiny_recommender, monkeypatch):
    monkeypatch.setattr(breq, "MAX_LINE_BYTES", 4096)
    good = lambda cid: json.dumps({"custom_id": cid, "user": dataset.users[0], "k": 2, "reasons": False}).encode()
    lines = [
        b"\xef\xbb\xbf" + good("first"),                                              # 1: BOM, fine
        _chat([{"role": "user", "content": [{"type": "text", "text": 5}]}]).encode(),  # 2: issue 12 #5
        good("latin1").replace(b'"k"', b'"caf\xe9", "k"'),                            # 3: not UTF-8
        json.dumps({"custom_id": "huge", "query": "x" * 10_000}).encode(),            # 4: too long
        good("middle"),                                                                # 5
        b"\xff\xfe{}",                                                                 # 6: not UTF-8
        _chat([{"role": "system", "content": "hi"}]).encode(),                         # 7: no user message
        b'{"custom_id": "deep", "k": ' + b"[" * 3000 + b"}",                           # 8: deep nesting
        good("last"),                                                                  # 9
    ]
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out.jsonl"
    summary = run_batch(src, out, recommender=tiny_recommender, loaded_dataset=dataset, show_progress=False)
    errors = {e["line"]: e for e in map(json.loads, (tmp_path / "out.errors.jsonl").read_text().splitlines())}
    assert sorted(errors) == [2, 3, 4, 6, 7, 8]
    assert "content[0].text must be a string" in errors[2]["error"] and errors[2]["custom_id"] == "c"
    assert "not valid UTF-8: byte 0xe9" in errors[3]["error"]
    assert "limit is 4,096" in errors[4]["error"]
    assert "not valid UTF-8: byte 0xff at byte 1" in errors[6]["error"]
    assert "role 'user'" in errors[7]["error"]
    served = {r["custom_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert sorted(served) == ["first", "last", "middle"]
    assert all(r["response"]["status_code"] == 200 for r in served.values())
    assert (summary.malformed, summary.processed) == (6, 3)


def test_huge_line_is_never_read_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(breq, "MAX_LINE_BYTES", 1000)
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"custom_id": "a", "query": "' + b"y" * 50_000 + b'"}\n{"custom_id": "b", "query": "ok"}\n'
                    b'{"custom_id": "c", "query": "' + b"z" * 5000)  # a huge last line without newline
    requests, errors = breq.read_requests(src)
    assert [r.custom_id for r in requests] == ["b"]
    assert [(e["line"], e["error"]) for e in errors] == [(1, "the line is 50,031 bytes; the limit is 1,000"),
                                                         (3, "the line is 5,029 bytes; the limit is 1,000")]

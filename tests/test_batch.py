"""Batch jobs: request formats, bad lines, unknown users, the OpenAI batch output shape, and resuming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recgen.batch import requests as breq
from recgen.batch import results as bres
from recgen.batch.runner import run_batch


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _without_ids(record: dict) -> dict:
    return {"custom_id": record["custom_id"], "status": record["response"]["status_code"],
            "body": record["response"]["body"], "error": record["error"]}


# -- parsing -------------------------------------------------------------------------------------
def test_recgen_format_with_and_without_custom_id():
    req = breq.parse_line('{"custom_id": "a", "user": "u1", "k": 3, "mode": "generate", "reasons": false}', 1)
    assert (req.custom_id, req.url, req.request.user, req.request.k, req.request.mode) == ("a", None, "u1", 3, "generate")
    assert breq.parse_line('{"history": ["1", "2"]}', 7).custom_id == "line-7"
    assert breq.parse_line('{"custom_id": 12, "query": "space"}', 1).custom_id == "12"


def test_openai_batch_formats():
    rec = breq.parse_line(json.dumps({"custom_id": "r", "method": "POST", "url": "/v1/recommendations",
                                     "body": {"model": "recgen", "user": "u3", "k": 4}}), 1)
    assert rec.url == breq.RECOMMENDATIONS_URL and rec.request.user == "u3" and rec.request.k == 4
    chat = breq.parse_line(json.dumps({
        "custom_id": "c", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "gpt-x", "temperature": 0.2, "user": "u2", "k": 2, "reasons": False,
                 "messages": [{"role": "system", "content": "be brief"},
                              {"role": "user", "content": [{"type": "text", "text": "something scary"}]}]}}), 2)
    assert chat.url == breq.CHAT_URL
    assert (chat.request.query, chat.request.user, chat.request.k, chat.request.reasons) == ("something scary", "u2", 2, False)


@pytest.mark.parametrize("text, reason", [
    ("not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"custom_id": "x", "usr": "1"}', "usr"),
    ('{"custom_id": "x", "k": 0}', "k"),
    ('{"custom_id": "x", "mode": "beam"}', "mode"),
    ('{"custom_id": "", "user": "1"}', "custom_id"),
    ('{"method": "POST", "url": "/v1/recommendations", "body": {}}', "custom_id"),
    ('{"custom_id": "x", "method": "GET", "url": "/v1/recommendations", "body": {}}', "POST"),
    ('{"custom_id": "x", "method": "POST", "url": "/v1/embeddings", "body": {}}', "url must be"),
    ('{"custom_id": "x", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": []}}', "messages"),
    ('{"custom_id": "x", "method": "POST", "url": "/v1/recommendations", "body": "hi"}', "body"),
])
def test_malformed_lines_say_why(text, reason):
    with pytest.raises(breq.LineError, match=reason):
        breq.parse_line(text, 1)


def test_read_requests_reports_line_numbers_and_duplicates(tmp_path):
    path = _write(tmp_path / "in.jsonl", ['{"custom_id": "a", "user": "u1"}', "", "{oops",
                                          '{"custom_id": "a", "user": "u2"}', '{"custom_id": "b", "user": "u2"}'])
    requests, errors = breq.read_requests(path)
    assert [r.custom_id for r in requests] == ["a", "b"]
    assert [r.line for r in requests] == [1, 5]
    assert [(e["line"], e["custom_id"]) for e in errors] == [(3, None), (4, "a")]
    assert "duplicate custom_id 'a' (first on line 1)" in errors[1]["error"]


# -- the append-only output ----------------------------------------------------------------------
def test_torn_last_line_is_dropped_and_complete_lines_count_as_done(tmp_path):
    out = tmp_path / "out.jsonl"
    a, b = (json.dumps({"id": f"batch_req_{c}", "custom_id": c, "response": {}, "error": None},
                       separators=(",", ":")) for c in "ab")
    torn = '{"id":"batch_req_c","custom_id":"c","resp'
    out.write_text(f"{a}\n{b}\n{torn}", encoding="utf-8")
    assert bres.done_ids(out) == {"a", "b"}
    assert bres.repair_tail(out) == len(torn)
    assert out.read_text() == f"{a}\n{b}\n"
    assert bres.repair_tail(out) == 0
    only_torn = tmp_path / "torn.jsonl"
    only_torn.write_text('{"id":"batch', encoding="utf-8")
    bres.repair_tail(only_torn)
    assert only_torn.read_text() == ""


def test_output_line_shapes():
    from recgen.errors import UnknownUserError
    from recgen.types import Recommendation, RecommendRequest

    request = breq.BatchRequest("id-1", 1, RecommendRequest(user="u1", k=1))
    ok = json.loads(bres.output_line(request, [Recommendation(item_id="3", title="T", rank=1, score=-0.5)]))
    assert set(ok) == {"id", "custom_id", "response", "error"} and ok["error"] is None
    assert set(ok["response"]) == {"status_code", "request_id", "body"} and ok["response"]["status_code"] == 200
    assert ok["response"]["body"]["recommendations"][0]["item_id"] == "3"
    bad = json.loads(bres.output_line(request, error=UnknownUserError("user 'zz' is not in dataset")))
    assert bad["response"]["status_code"] == 400
    assert bad["error"] == {"code": "unknown_user", "message": "user 'zz' is not in dataset"}
    assert bad["id"] == ok["id"]  # ids derive from custom_id: reruns give identical lines


# -- running a job -------------------------------------------------------------------------------
def _job(dataset) -> list:
    users = dataset.users
    return [
        {"custom_id": "score", "user": users[0], "k": 4, "reasons": False},
        {"custom_id": "gen", "user": users[1], "k": 3, "mode": "generate", "reasons": False},
        {"custom_id": "why", "user": users[2], "k": 2},
        {"custom_id": "ghost", "user": "no-such-user", "k": 3},
        "{broken",
        {"custom_id": "score", "user": users[3]},
        {"custom_id": "chat", "method": "POST", "url": "/v1/chat/completions",
         "body": {"messages": [{"role": "user", "content": "a comedy please"}], "k": 2, "reasons": False}},
        {"custom_id": "hist", "method": "POST", "url": "/v1/recommendations",
         "body": {"history": ["1", "4"], "k": 3, "reasons": False}},
        {"custom_id": "badk", "history": ["1"], "k": 27},
        {"custom_id": "popular", "k": 2, "reasons": False},
    ]


def test_batch_job_end_to_end(tmp_path, dataset, tiny_recommender):
    src = _write(tmp_path / "in.jsonl", _job(dataset))
    out = tmp_path / "out.jsonl"
    summary = run_batch(src, out, recommender=tiny_recommender, loaded_dataset=dataset, batch_size=3,
                        show_progress=False)
    assert (summary.requests, summary.malformed, summary.duplicates) == (7, 2, 1)
    assert (summary.processed, summary.failed, summary.succeeded) == (7, 1, 6)
    errors = _lines(Path(summary.errors_file))
    assert [(e["line"], e["custom_id"]) for e in errors] == [(5, None), (6, "score"), (9, "badk")]
    assert "k: Input should be less than or equal to 26" in errors[2]["error"]  # the server's 400, read as it is

    records = {r["custom_id"]: r for r in _lines(out)}
    assert sorted(records) == sorted(["score", "gen", "why", "ghost", "chat", "hist", "popular"])
    ghost = records["ghost"]
    assert ghost["response"]["status_code"] == 400 and ghost["error"]["code"] == "unknown_user"
    for cid, k, user in (("score", 4, dataset.users[0]), ("gen", 3, dataset.users[1]), ("why", 2, dataset.users[2])):
        recs = records[cid]["response"]["body"]["recommendations"]
        ids = [r["item_id"] for r in recs]
        assert len(ids) == k == len(set(ids))
        assert all(i in dataset.catalog for i in ids) and not set(ids) & set(dataset.history(user))
    assert all(r["reason"] for r in records["why"]["response"]["body"]["recommendations"])
    assert records["score"]["response"]["body"]["recommendations"][0]["reason"] is None
    assert records["chat"]["response"]["body"]["object"] == "chat.completion"
    assert len(records["chat"]["response"]["body"]["recommendations"]) == 2

    # Batching is an optimisation: one request at a time gives the same items.
    single = tmp_path / "single.jsonl"
    run_batch(src, single, recommender=tiny_recommender, loaded_dataset=dataset, batch_size=1, show_progress=False)
    items = lambda path: {r["custom_id"]: [x["item_id"] for x in r["response"]["body"].get("recommendations", [])]
                          for r in _lines(path)}
    assert items(single) == items(out)

    # A re-run has nothing left to do and does not load anything.
    again = run_batch(src, out, recommender=None, loaded_dataset=None, show_progress=False)
    assert (again.processed, again.already_done) == (0, 7)
    assert len(_lines(out)) == 7


def test_interrupted_job_resumes_to_the_same_results(tmp_path, dataset, tiny_recommender):
    rows = [{"custom_id": f"u{n}", "user": user, "k": 3, "reasons": n % 3 == 0} for n, user in enumerate(dataset.users[:9])]
    src = _write(tmp_path / "in.jsonl", rows)
    full = tmp_path / "full.jsonl"
    run_batch(src, full, recommender=tiny_recommender, loaded_dataset=dataset, batch_size=1, show_progress=False)

    partial = tmp_path / "partial.jsonl"

    class Crash(Exception):
        pass

    def crash_after_four(done: int) -> None:
        if done >= 4:
            raise Crash

    with pytest.raises(Crash):
        run_batch(src, partial, recommender=tiny_recommender, loaded_dataset=dataset, batch_size=1,
                  show_progress=False, on_batch=crash_after_four)
    with open(partial, "a", encoding="utf-8") as handle:  # a write torn by the crash
        handle.write('{"id":"batch_req_x","custom_id":"u4","resp')
    resumed = run_batch(src, partial, recommender=tiny_recommender, loaded_dataset=dataset, batch_size=1,
                        show_progress=False)
    assert (resumed.already_done, resumed.processed) == (4, 5) and resumed.torn_bytes_dropped > 0
    got = _lines(partial)
    assert sorted(r["custom_id"] for r in got) == sorted(r["custom_id"] for r in rows)
    want = {r["custom_id"]: r for r in _lines(full)}
    assert {r["custom_id"]: r for r in got} == want


def test_missing_input_is_a_clear_error(tmp_path):
    from recgen.errors import DataError

    with pytest.raises(DataError, match="not found"):
        run_batch(tmp_path / "nope.jsonl", tmp_path / "out.jsonl", show_progress=False)


def test_cli_batch_command(tmp_path, synthetic_dataset_dir, tiny_lm_dir, dataset):
    from typer.testing import CliRunner

    from recgen.cli.main import app

    src = _write(tmp_path / "in.jsonl", [{"custom_id": "a", "user": dataset.users[0], "k": 2, "reasons": False},
                                         {"custom_id": "b", "user": "nobody"}, "nope"])
    out = tmp_path / "out.jsonl"
    args = ["batch", "-i", str(src), "-o", str(out), "-d", str(synthetic_dataset_dir), "--lm", tiny_lm_dir,
            "--threads", "1", "--errors", str(tmp_path / "bad.jsonl"), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["processed"], summary["failed"], summary["malformed"]) == (2, 1, 1)
    assert summary["users_per_second"] > 0
    assert [e["line"] for e in _lines(tmp_path / "bad.jsonl")] == [3]
    assert {r["custom_id"]: r["response"]["status_code"] for r in _lines(out)} == {"a": 200, "b": 400}
    missing = CliRunner().invoke(app, ["batch", "-i", str(tmp_path / "none.jsonl"), "-o", str(out)])
    assert missing.exit_code == 2 and "not found" in missing.output

"""Reading batch request lines and writing result lines.

Two request formats are accepted, one JSON object a line:

* recgen's own: ``{"custom_id"?, "user"|"history"|"query", "k", "mode", "reasons", "exclude"}``
  (the fields of :class:`~recgen.types.RecommendRequest`; ``custom_id`` defaults to ``line-<n>``);
* the OpenAI batch request format: ``{"custom_id", "method": "POST", "url", "body"}`` with ``url``
  ``/v1/recommendations`` (``body`` = recgen's fields) or ``/v1/chat/completions`` (the last user
  message is the free-text request; ``body.user`` is the dataset user; recgen's ``history``, ``k``,
  ``mode``, ``reasons`` and ``exclude`` may be added to the body; other chat parameters are ignored).

Results follow the OpenAI batch output shape
``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}``; order is arbitrary,
join on ``custom_id``. The output file is append-only: every write is whole lines, flushed and fsynced,
so after a crash the only damage is a torn last line, which :func:`repair_tail` drops.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from ..config import format_validation_error
from ..types import Recommendation, RecommendRequest

RECOMMENDATIONS_URL = "/v1/recommendations"
CHAT_URL = "/v1/chat/completions"
_URLS = (RECOMMENDATIONS_URL, CHAT_URL)
_CHAT_RECGEN_KEYS = ("history", "k", "mode", "reasons", "exclude")


class LineError(ValueError):
    """A request line that cannot be read; the message says why."""


@dataclass
class BatchRequest:
    """One valid request line. ``url`` is ``None`` for recgen's own format."""

    custom_id: str
    line: int
    request: RecommendRequest
    url: str | None = None

    def to_row(self) -> dict:
        """Plain values only (for Ray Data rows)."""
        return {"custom_id": self.custom_id, "line": self.line, "url": self.url or "",
                "request": self.request.model_dump_json()}

    @classmethod
    def from_row(cls, row: dict) -> "BatchRequest":
        return cls(str(row["custom_id"]), int(row["line"]), RecommendRequest.model_validate_json(row["request"]),
                   str(row["url"]) or None)


def _validate(fields: dict, where: str) -> RecommendRequest:
    try:
        return RecommendRequest.model_validate(fields)
    except ValidationError as exc:
        raise LineError(f"{where}: {format_validation_error(exc)}") from None


def _message_text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise LineError("a message's content must be a string or a list of text parts")


def _chat_request(body: dict) -> RecommendRequest:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise LineError("a /v1/chat/completions body needs a non-empty 'messages' list")
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    query = _message_text(users[-1].get("content", "")).strip() if users else ""
    fields = {key: body[key] for key in _CHAT_RECGEN_KEYS if key in body}
    if body.get("user") is not None:
        fields["user"] = str(body["user"])
    if query:
        fields["query"] = query
    return _validate(fields, "body")


def parse_line(text: str, line: int) -> BatchRequest:
    """One request line → :class:`BatchRequest`, or :class:`LineError` with the reason."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LineError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(data, dict):
        raise LineError(f"expected a JSON object, got {type(data).__name__}")
    if "body" in data or "url" in data or "method" in data:
        custom_id = data.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            raise LineError("an OpenAI batch request needs a non-empty string 'custom_id'")
        unknown = sorted(set(data) - {"custom_id", "method", "url", "body"})
        if unknown:
            raise LineError(f"unknown key(s) {', '.join(map(repr, unknown))} in an OpenAI batch request")
        if str(data.get("method", "POST")).upper() != "POST":
            raise LineError(f"method must be POST, not {data.get('method')!r}")
        url = data.get("url")
        if url not in _URLS:
            raise LineError(f"url must be one of {', '.join(_URLS)}, not {url!r}")
        body = data.get("body")
        if not isinstance(body, dict):
            raise LineError("'body' must be a JSON object")
        if url == CHAT_URL:
            return BatchRequest(custom_id, line, _chat_request(body), url)
        fields = {k: v for k, v in body.items() if k != "model"}  # tolerate an OpenAI-style model name
        return BatchRequest(custom_id, line, _validate(fields, "body"), url)
    custom_id = data.pop("custom_id", None)
    if custom_id is None:
        custom_id = f"line-{line}"
    elif isinstance(custom_id, (str, int)) and not isinstance(custom_id, bool) and str(custom_id):
        custom_id = str(custom_id)
    else:
        raise LineError("'custom_id' must be a non-empty string")
    return BatchRequest(custom_id, line, _validate(data, "request"), None)


def read_requests(path: str | Path) -> tuple[list[BatchRequest], list[dict]]:
    """All valid requests of a file, and one error record per bad line ``{"line", "custom_id", "error"}``.

    Blank lines are skipped. A ``custom_id`` seen before is an error for every later occurrence."""
    requests: list[BatchRequest] = []
    errors: list[dict] = []
    first_line: dict[str, int] = {}
    with open(path, encoding="utf-8") as handle:
        for number, text in enumerate(handle, 1):
            if not text.strip():
                continue
            try:
                request = parse_line(text, number)
            except LineError as exc:
                errors.append({"line": number, "custom_id": _guess_id(text), "error": str(exc)})
                continue
            if request.custom_id in first_line:
                errors.append({"line": number, "custom_id": request.custom_id,
                               "error": f"duplicate custom_id {request.custom_id!r} (first on line "
                                        f"{first_line[request.custom_id]}); this line was skipped"})
                continue
            first_line[request.custom_id] = number
            requests.append(request)
    return requests, errors


def _guess_id(text: str) -> str | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    value = data.get("custom_id") if isinstance(data, dict) else None
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None


# -- result lines -----------------------------------------------------------------------------
def _ids(custom_id: str) -> tuple[str, str]:
    digest = hashlib.sha256(custom_id.encode("utf-8")).hexdigest()
    return f"batch_req_{digest[:24]}", f"req_{digest[24:48]}"


def _error_code(exc: BaseException) -> str:
    name = type(exc).__name__.removesuffix("Error") or "Error"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _chat_body(recs: list[Recommendation], body: dict) -> dict:
    lines = [f"{r.rank}. {r.title}" + (f" - {r.reason}" if r.reason else "") for r in recs]
    return {**body, "object": "chat.completion", "model": "recgen",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "\n".join(lines)},
                         "finish_reason": "stop"}]}


def output_line(request: BatchRequest, recommendations: list[Recommendation] | None = None,
                error: BaseException | None = None, status_code: int | None = None) -> str:
    """One result line (no newline) in the OpenAI batch output shape.

    Success: ``response.status_code`` 200, ``response.body.recommendations``, ``error`` null.
    Failure: ``response.status_code`` 400 (a request recgen cannot serve) or 500 (a bug), the same
    ``{"code", "message"}`` in ``response.body.error`` and in ``error``."""
    line_id, request_id = _ids(request.custom_id)
    req = request.request
    if error is None:
        body = {"object": "recgen.recommendations", "user": req.user, "query": req.query, "k": req.k,
                "mode": req.mode, "recommendations": [r.model_dump() for r in recommendations or []]}
        if request.url == CHAT_URL:
            body = _chat_body(recommendations or [], body)
        record = {"id": line_id, "custom_id": request.custom_id,
                  "response": {"status_code": 200, "request_id": request_id, "body": body}, "error": None}
    else:
        info = {"code": _error_code(error), "message": str(error) or type(error).__name__}
        record = {"id": line_id, "custom_id": request.custom_id,
                  "response": {"status_code": status_code or 400, "request_id": request_id, "body": {"error": info}},
                  "error": info}
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def response_body(record: dict) -> dict | None:
    """The body of a result line, for both shapes seen in OpenAI-style batch outputs
    (``response.body`` and, in some vLLM versions, the body directly under ``response``)."""
    response = record.get("response")
    if not isinstance(response, dict):
        return None
    body = response.get("body")
    return body if isinstance(body, dict) else response


# -- the append-only output file --------------------------------------------------------------
def repair_tail(path: str | Path) -> int:
    """Drop a torn last line (one without a trailing newline) left by a crash; returns bytes dropped."""
    path = Path(path)
    if not path.is_file():
        return 0
    with open(path, "rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return 0
        # Scan back for the last newline in chunks.
        pos, keep = size, 0
        while pos > 0:
            start = max(0, pos - 65536)
            handle.seek(start)
            chunk = handle.read(pos - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            pos = start
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
        return size - keep


def done_ids(path: str | Path) -> set[str]:
    """``custom_id`` of every complete result line already in an output file."""
    path = Path(path)
    done: set[str] = set()
    if not path.is_file():
        return done
    with open(path, encoding="utf-8") as handle:
        for text in handle:
            if not text.endswith("\n"):
                break  # a torn tail; repair_tail removes it before appending
            try:
                record = json.loads(text)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("custom_id"), str):
                done.add(record["custom_id"])
    return done


class ResultWriter:
    """Appends whole batches of lines with one write, then flush + fsync: a batch is durable when
    :meth:`write` returns, and a kill during the write can only leave a torn last line."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_tail(self.path)
        self._handle = open(self.path, "a", encoding="utf-8")

    def write(self, lines: list[str]) -> None:
        if not lines:
            return
        self._handle.write("".join(line + "\n" for line in lines))
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_errors(path: str | Path, errors: list[dict]) -> None:
    """The errors file is rewritten on every run (it describes the input, which is re-read each time)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for error in errors:
            handle.write(json.dumps(error, ensure_ascii=False) + "\n")

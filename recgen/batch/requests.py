"""Reading batch request lines and writing result lines.

Two request formats are accepted, one JSON object a line:

* recgen's own: ``{"custom_id"?, "user"|"history"|"query", "k", "mode", "reasons", "exclude"}``
  (the fields of :class:`~recgen.types.RecommendRequest`; ``custom_id`` defaults to ``line-<n>``);
* the OpenAI batch request format: ``{"custom_id", "method": "POST", "url", "body"}`` with ``url``
  ``/v1/recommendations`` (``body`` = recgen's fields) or ``/v1/chat/completions`` (the last user
  message is the free-text request; ``body.user`` is the dataset user; recgen's ``history``, ``k``,
  ``mode``, ``reasons`` and ``exclude`` may be added to the body; other chat parameters are ignored).

A line that cannot be read (bad JSON, a wrong type anywhere, bytes that are not UTF-8, more than
:data:`MAX_LINE_BYTES`) becomes one errors-file record ``{"line", "custom_id", "error"}``; the other
lines are served. User and item ids may be JSON numbers in every format; they are read as strings.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from pydantic import ValidationError

from ..config import format_validation_error
from ..errors import RecgenError
from ..types import RecommendRequest

log = logging.getLogger(__name__)

RECOMMENDATIONS_URL = "/v1/recommendations"
CHAT_URL = "/v1/chat/completions"
_URLS = (RECOMMENDATIONS_URL, CHAT_URL)
_CHAT_RECGEN_KEYS = ("history", "k", "mode", "reasons", "exclude")
_ROLES = ("system", "developer", "user", "assistant", "tool", "function")  # the server's chat roles
MAX_LINE_BYTES = 1 << 20  # a longer line is reported as an error, and never held in memory whole


class LineError(RecgenError, ValueError):
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


def _kind(value) -> str:
    return "null" if value is None else type(value).__name__


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ids_as_strings(fields: dict) -> dict:
    """User and item ids written as JSON numbers (MovieLens ids are numbers) become strings, in every format."""
    fields = dict(fields)
    if _is_int(fields.get("user")):
        fields["user"] = str(fields["user"])
    for key in ("history", "exclude"):
        if isinstance(fields.get(key), list):
            fields[key] = [str(v) if _is_int(v) else v for v in fields[key]]
    return fields


def _validate(fields: dict, where: str) -> RecommendRequest:
    try:
        return RecommendRequest.model_validate(_ids_as_strings(fields))
    except ValidationError as exc:
        raise LineError(f"{where}: {format_validation_error(exc)}") from None


def _message_text(content, where: str) -> str:
    """OpenAI message content: a string, null, or a list of parts of which only text parts are read."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise LineError(f"{where}.content must be a string, null or a list of content parts, not {_kind(content)}")
    texts = []
    for n, part in enumerate(content):
        if not isinstance(part, dict):
            raise LineError(f"{where}.content[{n}] must be an object, not {_kind(part)}")
        if part.get("type", "text") == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise LineError(f"{where}.content[{n}].text must be a string, not {_kind(text)}")
            texts.append(text)
    return " ".join(texts)


def _chat_request(body: dict) -> RecommendRequest:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise LineError("a /v1/chat/completions body needs a non-empty 'messages' list")
    query = None
    for n, message in enumerate(messages):
        where = f"body.messages[{n}]"
        if not isinstance(message, dict):
            raise LineError(f"{where} must be an object, not {_kind(message)}")
        role = message.get("role")
        if role not in _ROLES:
            raise LineError(f"{where}.role must be one of {', '.join(_ROLES)}, not {role!r}")
        text = _message_text(message.get("content"), where)
        if role == "user":
            query = text.strip()
    if query is None:  # as the server: 400, not popular items for a request that asked nothing
        raise LineError("messages must contain at least one message with role 'user'")
    fields = {key: body[key] for key in _CHAT_RECGEN_KEYS if key in body}
    user = body.get("user")
    if user is not None:
        if not isinstance(user, str) and not _is_int(user):
            raise LineError(f"body.user must be a string, not {_kind(user)}")
        fields["user"] = str(user)
    if query:
        fields["query"] = query
    return _validate(fields, "body")


def _reject_constant(name: str):
    raise LineError(f"{name} is not valid JSON")


def _load(text: str):
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise LineError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise LineError("not valid JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer beyond Python's digit limit
        raise LineError(f"not valid JSON ({exc})") from None
    if "\\u" in text:  # a lone surrogate escape ("\ud800") decodes to a string no file can hold
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise LineError("a string holds a lone surrogate escape (\\ud800-\\udfff), which is not valid Unicode") from None
    return data


def parse_line(text: str, line: int) -> BatchRequest:
    """One request line → :class:`BatchRequest`, or :class:`LineError` with the reason (never another exception)."""
    data = _load(text)
    if not isinstance(data, dict):
        raise LineError(f"expected a JSON object, got {type(data).__name__}")
    if "body" in data or "url" in data or "method" in data:
        custom_id = data.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            raise LineError("an OpenAI batch request needs a non-empty string 'custom_id'")
        unknown = sorted(set(data) - {"custom_id", "method", "url", "body"})
        if unknown:
            raise LineError(f"unknown key(s) {', '.join(map(repr, unknown))} in an OpenAI batch request")
        method = data.get("method", "POST")
        if not isinstance(method, str) or method.upper() != "POST":
            raise LineError(f"method must be POST, not {method!r}")
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
    elif (isinstance(custom_id, str) or _is_int(custom_id)) and str(custom_id):
        custom_id = str(custom_id)
    else:
        raise LineError("'custom_id' must be a non-empty string")
    return BatchRequest(custom_id, line, _validate(data, "request"), None)


def _raw_lines(handle) -> Iterator[tuple[int, str | None, str | None]]:
    """``(number, text, None)`` per line, or ``(number, None, reason)`` for a line that is too long or not
    UTF-8: bytes are decoded line by line, so one bad line never hides the others."""
    number = 0
    while True:
        raw = handle.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            size = len(raw)
            while raw and not raw.endswith(b"\n"):  # skip the rest of the line without keeping it
                raw = handle.readline(MAX_LINE_BYTES)
                size += len(raw)
            size -= raw.endswith(b"\n")
            yield number, None, f"the line is {size:,} bytes; the limit is {MAX_LINE_BYTES:,}"
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield number, None, (f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} "
                                 f"of the line ({exc.reason})")
            continue
        yield number, text.removeprefix("\ufeff") if number == 1 else text, None


def read_requests(path: str | Path) -> tuple[list[BatchRequest], list[dict]]:
    """All valid requests of a file, and one error record per bad line ``{"line", "custom_id", "error"}``.

    Blank lines are skipped. A ``custom_id`` seen before is an error for every later occurrence.
    No line, however malformed, stops the others from being read."""
    requests: list[BatchRequest] = []
    errors: list[dict] = []
    first_line: dict[str, int] = {}
    with open(path, "rb") as handle:
        for number, text, problem in _raw_lines(handle):
            if problem is not None:
                errors.append({"line": number, "custom_id": None, "error": problem})
                continue
            if not text.strip():
                continue
            try:
                request = parse_line(text, number)
            except LineError as exc:
                errors.append({"line": number, "custom_id": _guess_id(text), "error": str(exc)})
                continue
            except Exception as exc:  # noqa: BLE001 - a parser bug must cost one line, not the job
                log.warning("line %d: unexpected %s: %s", number, type(exc).__name__, exc)
                errors.append({"line": number, "custom_id": _guess_id(text),
                               "error": f"cannot read this line ({type(exc).__name__}: {exc})"})
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
    except Exception:  # noqa: BLE001 - only a hint for the errors file
        return None
    value = data.get("custom_id") if isinstance(data, dict) else None
    if not (isinstance(value, str) or _is_int(value)):
        return None
    try:
        str(value).encode("utf-8")
    except UnicodeEncodeError:
        return None
    return str(value)

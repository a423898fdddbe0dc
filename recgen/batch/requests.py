"""Reading batch request lines and writing result lines.

Two request formats are accepted, one JSON object a line:

* recgen's own: ``{"custom_id"?, "user"|"history"|"query", "k", "mode", "reasons", "exclude", "model"}``
  (the body of ``POST /v1/recommendations``; ``custom_id`` defaults to ``line-<n>``);
* the OpenAI batch request format: ``{"custom_id", "method": "POST", "url", "body"}`` with ``url``
  ``/v1/recommendations`` or ``/v1/chat/completions`` (the last user message is the free-text request;
  ``body.user`` or ``body.recgen.user_id`` is the dataset user; recgen's ``history``, ``k``, ``mode``,
  ``reasons`` and ``exclude`` may also be put in the body itself; sampling parameters are ignored).

Bodies are read with the server's request models (:mod:`recgen.types`, strict): a body the server answers
with 400 (a wrong type such as ``"user": 1`` or ``"k": "5"``, a control character or lone surrogate in any
text) or 404 (a ``model`` it does not serve) is an errors-file record here. A line that cannot be read
(that, bad JSON, bytes that are not UTF-8, more than :data:`MAX_LINE_BYTES`) becomes one errors-file record
``{"line", "custom_id", "error"}``; the other lines are served.
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
from ..lm.adapters import unserved_adapter
from ..lm.resolve import DEFAULT_LM
from ..text import InvalidTextError, check_id, message_text
from ..types import ChatCompletionRequest, RecommendationsRequest, RecommendRequest

log = logging.getLogger(__name__)

RECOMMENDATIONS_URL = "/v1/recommendations"
CHAT_URL = "/v1/chat/completions"
_URLS = (RECOMMENDATIONS_URL, CHAT_URL)
_CHAT_RECGEN_KEYS = ("history", "k", "mode", "reasons", "exclude")
#: The model name a server answers to by default (``recgen serve --served-model-name``).
DEFAULT_SERVED_NAME = "recgen"
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


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def served_model_names(config, served_name: str = DEFAULT_SERVED_NAME) -> list[str]:
    """The names a request's ``model`` may take (what ``GET /v1/models`` lists, then the LM's own name): the
    server's 404 and a batch line's error are decided by this one list."""
    lm = config.lm
    names = [served_name]
    if lm.adapter and lm.adapter not in lm.adapters:
        names.append(Path(lm.adapter).name)
    return names + list(lm.adapters) + [lm.model or DEFAULT_LM]


@dataclass(frozen=True)
class Served:
    """What a batch job serves, for checking ``model`` as the server does (``None`` names: any valid name)."""

    models: tuple[str, ...] | None = None
    adapters: tuple[str, ...] = ()

    @classmethod
    def of(cls, config) -> "Served":
        return cls(tuple(served_model_names(config)), tuple(config.lm.adapters))

    def adapter_for(self, model: str | None, where: str) -> str | None:
        """The named adapter ``model`` selects (None for the base model); an unknown model is a line error."""
        if model is None:
            return None
        if self.models is not None and model not in self.models:
            raise LineError(f"{where}.model: model {model!r} is not served here; use one of: "
                            f"{', '.join(self.models[:-1])} (GET /v1/models)")
        return model if model in self.adapters else None

    def check_adapter(self, adapter: str | None, where: str) -> None:
        """An ``adapter`` the job does not serve is a line error, as it is a 404 on the server."""
        refusal = None if self.models is None else unserved_adapter(adapter, self.adapters)
        if refusal:
            raise LineError(f"{where}.adapter: {refusal}")


def _strict(model, fields: dict, where: str):
    """``fields`` read with the server's request model: the same body, the same verdict (errors name ``where``)."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise LineError(f"{where}: {format_validation_error(exc)}") from None


def _recommend_request(fields: dict, where: str, served: Served) -> RecommendRequest:
    request = _strict(RecommendationsRequest, fields, where)
    served.check_adapter(request.adapter, where)
    adapter = request.adapter or served.adapter_for(request.model, where)
    return RecommendRequest(**request.model_dump(exclude={"model", "adapter"}, exclude_none=True), adapter=adapter)


def _chat_request(body: dict, served: Served) -> RecommendRequest:
    """A chat body as the server reads it (``ChatCompletionRequest``; ``model`` may be left out in a file that
    serves one model); recgen's fields may also sit in the body itself (``history``, ``k``, ...)."""
    chat = _strict(ChatCompletionRequest, {"model": DEFAULT_SERVED_NAME, **body}, "body")
    roles = [m.role for m in chat.messages]
    if "user" not in roles:  # as the server: 400, not popular items for a request that asked nothing
        raise LineError("messages must contain at least one message with role 'user'")
    query = message_text(chat.messages[len(roles) - 1 - roles[::-1].index("user")].content).strip()
    fields = {key: body[key] for key in _CHAT_RECGEN_KEYS if key in body}
    if chat.recgen is not None:  # the server's own options object
        options = chat.recgen.model_dump(exclude_unset=True)
        if "user_id" in options:
            options["user"] = options.pop("user_id")
        fields = {**options, **fields}
    if chat.user is not None and "user" not in fields:
        fields["user"] = chat.user
    if query:
        fields["query"] = query
    if body.get("model") is not None:
        fields["model"] = chat.model
    return _recommend_request(fields, "body", served)


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


def parse_line(text: str, line: int, served: Served = Served()) -> BatchRequest:
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
            return BatchRequest(_custom_id(custom_id), line, _chat_request(body, served), url)
        return BatchRequest(_custom_id(custom_id), line, _recommend_request(body, "body", served), url)
    custom_id = data.pop("custom_id", None)
    if custom_id is None:
        custom_id = f"line-{line}"
    elif (isinstance(custom_id, str) or _is_int(custom_id)) and str(custom_id):
        custom_id = _custom_id(str(custom_id))
    else:
        raise LineError("'custom_id' must be a non-empty string")
    return BatchRequest(custom_id, line, _recommend_request(data, "request", served), None)


def _custom_id(value: str) -> str:
    try:
        return check_id(value, "custom_id")
    except InvalidTextError as exc:
        raise LineError(str(exc)) from None


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


def read_requests(path: str | Path, served: Served = Served()) -> tuple[list[BatchRequest], list[dict]]:
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
                request = parse_line(text, number, served)
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

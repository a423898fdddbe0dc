"""Result lines in the OpenAI batch output shape, and the append-only output file.

Results follow the OpenAI batch output shape
``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}``; order is arbitrary,
join on ``custom_id``. The output file is append-only: every write is whole lines, flushed and fsynced,
so after a crash the only damage is a torn last line, which :func:`repair_tail` drops.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

from ..errors import DataError
from ..types import Recommendation, Recommendations
from .requests import CHAT_URL, BatchRequest

log = logging.getLogger(__name__)


# -- result lines -----------------------------------------------------------------------------
def _ids(custom_id: str) -> tuple[str, str]:
    digest = hashlib.sha256(custom_id.encode("utf-8")).hexdigest()
    return f"batch_req_{digest[:24]}", f"req_{digest[24:48]}"


def _error_code(exc: BaseException) -> str:
    name = type(exc).__name__.removesuffix("Error") or "Error"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _chat_body(recs: list[Recommendation], body: dict) -> dict:
    note = recs.unused_note() if isinstance(recs, Recommendations) else None
    lines = [note] if note else []
    lines += [f"{r.rank}. {r.title}" + (f" - {r.reason}" if r.reason else "") for r in recs]
    return {**body, "object": "chat.completion", "model": "recgen",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "\n".join(lines)},
                         "finish_reason": "stop"}]}


def output_line(request: BatchRequest, recommendations: list[Recommendation] | None = None,
                error: BaseException | None = None, status_code: int | None = None) -> str:
    """One result line (no newline) in the OpenAI batch output shape.

    Success: ``response.status_code`` 200, ``response.body.recommendations`` and ``.unused_words`` (the
    request's words nothing used: :class:`~recgen.types.Recommendations`), ``error`` null.
    Failure: ``response.status_code`` 400 (a request recgen cannot serve) or 500 (a bug), the same
    ``{"code", "message"}`` in ``response.body.error`` and in ``error``."""
    line_id, request_id = _ids(request.custom_id)
    req = request.request
    if error is None:
        body = {"object": "recgen.recommendations", "user": req.user, "query": req.query, "k": req.k,
                "mode": req.mode, "recommendations": [r.model_dump() for r in recommendations or []],
                "unused_words": list(recommendations.unused_words) if isinstance(recommendations, Recommendations) else []}
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
RESULT_PREFIX = b'{"id":"batch_req_'  # how every result line starts (see output_line)


def repair_tail(path: str | Path) -> int:
    """Drop a torn last line (one without a trailing newline) left by a crash; returns bytes dropped.

    Only a tail that begins like a result line is dropped: any other text is not recgen's to delete."""
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
        handle.seek(keep)
        head = handle.read(len(RESULT_PREFIX))
        if not (head.startswith(RESULT_PREFIX) or RESULT_PREFIX.startswith(head)):
            raise DataError(f"{path} ends with a line that is not a recgen batch result ({head!r}...); "
                            "refusing to change it: choose another output file")
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
        return size - keep


def done_ids(path: str | Path) -> set[str]:
    """``custom_id`` of every complete result line already in an output file.

    A complete line that is not a result line means the file is not a recgen output: :class:`DataError`,
    so that nothing is ever appended to (or repaired in) a file recgen did not write."""
    path = Path(path)
    done: set[str] = set()
    if not path.is_file():
        return done
    with open(path, "rb") as handle:  # bytes: a torn tail may end inside a UTF-8 character
        for number, raw in enumerate(handle, 1):
            if not raw.endswith(b"\n"):
                break  # a torn tail; repair_tail removes it before appending
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                record = None
            if not (isinstance(record, dict) and isinstance(record.get("custom_id"), str) and "response" in record):
                raise DataError(f"{path} line {number} is not a recgen batch result; refusing to append to it: "
                                "choose another output file")
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

"""Serving a chunk of batch requests through a Recommender: shared by the local and the Ray runners.

Both runners sit above this module and import it; it imports neither, so they never import each other.
"""

from __future__ import annotations

import logging
import os

from ..errors import DataError, RecgenError
from ..types import RecommendRequest
from .requests import BatchRequest
from .results import output_line

log = logging.getLogger(__name__)


def resolve_user(request: RecommendRequest, dataset) -> RecommendRequest:
    """Replace ``user`` by that user's history (followed by any ``history`` given in the request)."""
    if request.user is None:
        return request
    if dataset is None:
        raise DataError("a request names a `user`, but no dataset is loaded")
    history = list(dataset.history(request.user)) + list(request.history or [])
    return request.model_copy(update={"user": None, "history": history})


def _failure(item: BatchRequest, exc: BaseException) -> str:
    if isinstance(exc, RecgenError):
        return output_line(item, error=exc, status_code=400)
    log.warning("request %s (line %d) failed: %s: %s", item.custom_id, item.line, type(exc).__name__, exc)
    return output_line(item, error=exc, status_code=500)


def _success(item: BatchRequest, recs) -> str:
    try:
        return output_line(item, recs)
    except Exception as exc:  # noqa: BLE001 - a result that cannot be written is that request's error, not the job's
        return _failure(item, exc)


def process_requests(recommender, dataset, items: list[BatchRequest]) -> list[str]:
    """Result lines for ``items`` (same order). LM ranking is batched across the items; a request that
    cannot be served (unknown user or item, bad k, ...) gets an error line and does not stop the others."""
    lines: list[str | None] = [None] * len(items)
    ready: list[tuple[int, RecommendRequest]] = []
    for n, item in enumerate(items):
        try:
            ready.append((n, resolve_user(item.request, dataset)))
        except Exception as exc:  # noqa: BLE001 - RecgenError → 400; anything else → 500, the job goes on
            lines[n] = _failure(item, exc)
    if ready:
        try:
            results = recommender.recommend_batch([request for _, request in ready], return_exceptions=True)
        except Exception as exc:  # noqa: BLE001 - an unexpected failure: serve the requests one at a time
            log.warning("batch of %d failed (%s); retrying one by one", len(ready), exc)
            results = []
            for _, request in ready:
                try:
                    results.append(recommender.recommend_batch([request])[0])
                except Exception as one:  # noqa: BLE001 - one bad request must not stop a batch job
                    results.append(one)
        for (n, _), recs in zip(ready, results):
            lines[n] = _failure(items[n], recs) if isinstance(recs, BaseException) else _success(items[n], recs)
    return [line for line in lines if line is not None]


def thread_count(workers: int) -> int:
    """torch threads per worker so that ``workers`` processes share the machine's cores."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))

"""``POST /v1/items``: add items to the live catalog and index (no rebuild); they are recommendable at once,
and they persist: each request is recorded in the dataset's event log before it is applied, and replayed when
the server starts again (:func:`replay_added_items`), so the items are served again and the feedback events on
them count again.

The route is thin: the body is validated here (ids and titles with the one validator every surface uses), the
work runs on the server's one LM worker (so it never interleaves with a request being served) and is
:meth:`recgen.recommender.Recommender.add_items`. Bad items (an existing id without ``update``, a missing title,
a wrong type, a control character) are 400s that name the item.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ..chat.state import ChatContext
from ..errors import RecgenError
from ..text import check_text, check_title
from ..types import ItemId

log = logging.getLogger(__name__)

#: Items one request may add; more is a 400 (send them in several requests, or use `recgen index --add`).
MAX_ITEMS_PER_REQUEST = 10_000

router = APIRouter()

Title = Annotated[str, AfterValidator(lambda v: check_title(v, "title"))]
Genre = Annotated[str, AfterValidator(lambda v: check_title(v, "genre"))]
Description = Annotated[str, AfterValidator(lambda v: check_text(v, "description", max_chars=20_000))]


class NewItem(BaseModel):
    """One catalog item, typed as strictly as every other request (``"item_id": 7`` is a 400, not ``"7"``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    item_id: ItemId
    title: Title
    genres: list[Genre] = Field(default_factory=list)
    year: int | None = None
    description: Description | None = None


class AddItemsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    items: list[NewItem] = Field(..., min_length=1, max_length=MAX_ITEMS_PER_REQUEST,
                                 description="catalog items: item_id, title, and optionally genres, year, "
                                 "description")
    update: bool = Field(False, description="replace items whose id is already in the catalog (else a 400)")


class AddItemsResponse(BaseModel):
    object: Literal["items.added"] = "items.added"
    added: int
    updated: int
    catalog_size: int
    catalog_fingerprint: str
    persisted: bool = Field(description="recorded in the event log, so served again after a restart (false when "
                            "the server has no dataset, hence no log)")
    seconds: float


def add_durably(recommender, items: list[dict], update: bool) -> bool:
    """Record the batch in the event log (an fsynced commit), then apply it; taken back if applying fails, so
    the log holds exactly the batches that were applied. Returns whether it was recorded (False: no log)."""
    feedback = getattr(recommender, "feedback", None)
    if feedback is None:
        recommender.add_items(items, update=update)
        return False
    seq = feedback.store.record_items(items, update=update)
    try:
        recommender.add_items(items, update=update)
    except BaseException:
        feedback.store.drop_items(seq)
        raise
    return True


def replay_added_items(recommender) -> int:
    """Apply the item batches the event log holds (at server start), then let the events on them count.
    A batch that no longer applies (e.g. the dataset now has that id) is skipped with a warning. Returns how
    many batches were applied."""
    feedback = getattr(recommender, "feedback", None)
    if feedback is None or feedback.items_replayed:  # once per log: another app on the same recommender skips it
        return 0
    feedback.items_replayed = True
    batches = feedback.added_items()
    applied = 0
    for number, (items, update) in enumerate(batches, 1):
        try:
            recommender.add_items(items, update=update)
            applied += 1
        except RecgenError as exc:
            log.warning("added-items batch %d of the event log is skipped: %s", number, exc)
    if applied:
        feedback.resync()
        log.info("replayed %d batch(es) of added items from %s", applied, feedback.path)
    return applied


@router.post("/v1/items", response_model=AddItemsResponse)
async def add_items(body: AddItemsRequest, request: Request) -> AddItemsResponse:
    serving = request.app.state.serving
    items = [item.model_dump(exclude_none=True) for item in body.items]

    def work() -> AddItemsResponse:
        start = time.perf_counter()
        recommender = serving.recommender
        before = len(recommender.catalog)
        persisted = add_durably(recommender, items, body.update)
        size = len(recommender.catalog)
        serving.context = ChatContext.from_catalog(recommender.catalog)  # chat reads the grown catalog too
        added = size - before
        return AddItemsResponse(added=added, updated=len(items) - added, catalog_size=size,
                                catalog_fingerprint=recommender.catalog.fingerprint(), persisted=persisted,
                                seconds=round(time.perf_counter() - start, 3))

    return await serving.submit(work)

"""``POST /v1/items``: add items to the live catalog and index (no rebuild); they are recommendable at once.

The route is thin: the body is validated here, the work runs on the server's one LM worker (so it never
interleaves with a request being served) and is :meth:`recgen.recommender.Recommender.add_items`. Bad items
(an existing id without ``update``, a missing title, a wrong type) are 400s that name the item.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from ..chat.state import ChatContext

#: Items one request may add; more is a 400 (send them in several requests, or use `recgen index --add`).
MAX_ITEMS_PER_REQUEST = 10_000

router = APIRouter()


class AddItemsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[dict[str, Any]] = Field(..., min_length=1, max_length=MAX_ITEMS_PER_REQUEST,
                                        description="catalog items: item_id, title, and optionally genres, year, "
                                        "description")
    update: bool = Field(False, description="replace items whose id is already in the catalog (else a 400)")


class AddItemsResponse(BaseModel):
    object: Literal["items.added"] = "items.added"
    added: int
    updated: int
    catalog_size: int
    catalog_fingerprint: str
    seconds: float


@router.post("/v1/items", response_model=AddItemsResponse)
async def add_items(body: AddItemsRequest, request: Request) -> AddItemsResponse:
    serving = request.app.state.serving

    def work() -> AddItemsResponse:
        start = time.perf_counter()
        recommender = serving.recommender
        before = len(recommender.catalog)
        size = recommender.add_items(body.items, update=body.update)
        serving.context = ChatContext.from_catalog(recommender.catalog)  # chat reads the grown catalog too
        added = size - before
        return AddItemsResponse(added=added, updated=len(body.items) - added, catalog_size=size,
                                catalog_fingerprint=recommender.catalog.fingerprint(),
                                seconds=round(time.perf_counter() - start, 3))

    return await serving.submit(work)

"""``POST /v1/feedback`` (record what a user did) and ``DELETE /v1/users/{id}`` (forget a user: idempotent, 200
for any well-formed id, counting what that call removed; a malformed id is a 400).

Both run on the default thread pool, not on the LM worker: an event is acknowledged after its SQLite commit
(fsynced) and the statistics update (milliseconds), never queued behind a slow LM call. Writers are serialised
by the feedback loop's lock (:mod:`recgen.feedback`); the recommending thread reads swapped-in snapshots.
"""

from __future__ import annotations

from typing import Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ..data.events import EVENT_TYPES, EventConflictError
from ..types import EventId, ItemId, UserId
from .protocol import ErrorResponse
from .serving import APIError, RecgenServing


class FeedbackRequest(BaseModel):
    """One event. ``event_id`` makes retries idempotent: send the same id again and it is stored once."""

    model_config = ConfigDict(extra="forbid", strict=True)

    user: UserId = Field(description="any user id; a new user starts here")
    item: ItemId = Field(description="a catalog item id")
    event: Literal[EVENT_TYPES] = Field(description="click, purchase and rating extend the user's history; "
                                                   "reject hides the item from their recommendations")
    value: float | None = Field(None, description="the rating (required for, and only for, event=rating)")
    event_id: EventId | None = Field(None, description="the client's id for this event (default: a new random id)")
    ts: float | None = Field(None, description="when it happened, seconds since the epoch (default: now)")


class FeedbackResponse(BaseModel):
    object: Literal["feedback.event"] = "feedback.event"
    event_id: str
    user: str
    item: str
    event: str
    value: float | None = None
    ts: float
    duplicate: bool = Field(description="true when this event id was already recorded (nothing changed)")


class ForgetResponse(BaseModel):
    object: Literal["user.forgotten"] = "user.forgotten"
    user: str
    events_removed: int = Field(description="events this call deleted (0 on a repeat, or for an id nobody knows)")
    interactions_removed: int = Field(description="interactions this call took out of the served statistics")
    dataset_user: bool = Field(description="a user of the base data: tombstoned, so every fit and load drops them")


def _errors(**meanings: str) -> dict:
    return {int(status[1:]): {"model": ErrorResponse, "description": text} for status, text in meanings.items()}


def _feedback(serving: RecgenServing):
    loop = getattr(serving.recommender, "feedback", None)
    if loop is None:
        raise APIError(400, "this server has no event log (start it with `recgen serve --dataset ...`)",
                       code="no_event_log")
    return loop


def register(app: FastAPI, serving: RecgenServing) -> None:
    """Add the feedback routes to ``app`` (called once by :func:`recgen.server.app.create_app`)."""

    @app.post("/v1/feedback", response_model=FeedbackResponse,
              responses=_errors(s400="invalid event or unknown item", s401="missing or wrong API key",
                                s409="this event id was recorded with other content", s413="body too large",
                                s500="internal error"))
    async def feedback(request: FeedbackRequest) -> FeedbackResponse:
        loop = _feedback(serving)
        try:
            event, new = await run_in_threadpool(loop.record, request.user, request.item, request.event,
                                                 value=request.value, event_id=request.event_id, ts=request.ts)
        except EventConflictError as exc:
            raise APIError(409, str(exc), code="event_conflict", param="event_id") from None
        return FeedbackResponse(**event.as_dict(), duplicate=not new)

    @app.delete("/v1/users/{user_id:path}", response_model=ForgetResponse,
                responses=_errors(s400="malformed user id", s401="missing or wrong API key",
                                  s500="internal error"))
    async def forget_user(user_id: str) -> ForgetResponse:
        loop = _feedback(serving)
        return ForgetResponse(**await run_in_threadpool(loop.forget, user_id))

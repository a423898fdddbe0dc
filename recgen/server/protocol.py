"""Request and response models of the HTTP API (OpenAI-compatible where OpenAI has an equivalent)."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field

# The request models are the one wire schema of recgen.types (batch lines are read with it too).
from ..types import (  # noqa: F401 - re-exported: the API's request models
    ChatCompletionRequest,
    ChatMessage,
    RecgenChatOptions,
    Recommendation,
    RecommendationsRequest,
)


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


# -- errors (OpenAI's shape, so the official client raises with the message) -----------------------------

class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


# -- models ----------------------------------------------------------------------------------------------

class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "recgen"
    root: str | None = None
    parent: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# -- chat completions ------------------------------------------------------------------------------------

class ChatResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: str | None = None


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatResponseMessage
    finish_reason: Literal["stop", "length"] = "stop"
    logprobs: None = None


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatCompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: _id("chatcmpl"))
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None
    #: recgen extension: the items of the reply, structured (rank, score, reason, reason_source).
    recommendations: list[Recommendation]
    #: recgen extension: the conversation state the server derived (filters, shown items, notes).
    recgen: dict[str, Any] | None = None
    unused_words: list[str] = Field(default_factory=list, description="recgen extension: words of the request that "
                                    "no filter read and no item shown holds (only the text search read them); "
                                    "empty when every word was used")


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    recommendations: list[Recommendation] | None = None
    recgen: dict[str, Any] | None = None
    unused_words: list[str] | None = Field(None, description="on the last chunk: as ChatCompletionResponse.unused_words")


# -- structured recommendations --------------------------------------------------------------------------

class RecommendationsResponse(BaseModel):
    id: str = Field(default_factory=lambda: _id("rec"))
    object: Literal["recommendations"] = "recommendations"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    user: str | None = None
    query: str | None = None
    mode: str
    seconds: float
    recommendations: list[Recommendation]
    #: Reasons were asked for but the request's deadline (--timeout) passed before the LM wrote them: the
    #: items are served as ranked, every ``reason`` left empty.
    reasons_missing: bool = False
    unused_words: list[str] = Field(default_factory=list, description="recgen extension: words of the request that "
                                    "no filter read and no item shown holds (only the text search read them); "
                                    "empty when every word was used")


class RecommendationsStreamRequest(RecommendationsRequest):
    """``POST /v1/recommendations`` over HTTP: a batch line's request, and ``stream`` (server-sent events)."""

    stream: bool = Field(False, description="server-sent events: the items as soon as they are ranked, then "
                                            "their reasons as written (recommendations.done ends the stream)")


class RecommendationReason(BaseModel):
    """A streamed reason, for the item at ``rank`` of the items sent first."""

    object: Literal["recommendation.reason"] = "recommendation.reason"
    rank: int
    item_id: str
    reason: str | None
    reason_source: str | None


class RecommendationsDone(BaseModel):
    """The last event of a streamed recommendation (before ``[DONE]``)."""

    object: Literal["recommendations.done"] = "recommendations.done"
    reasons_missing: bool
    seconds: float

"""Request and response models of the HTTP API (OpenAI-compatible where OpenAI has an equivalent)."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..config import MAX_CANDIDATES
from ..types import Recommendation, RecommendRequest


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

#: Request models are strict: a JSON value of the wrong type (``"reasons": 0.0``, ``"k": "5"``) is a 400, not
#: silently converted; the schema promises those types (found by the schema fuzzing).
class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class RecgenChatOptions(BaseModel):
    """recgen's own options, sent as ``extra_body={"recgen": {...}}`` with the official client."""

    model_config = ConfigDict(extra="forbid", strict=True)

    user_id: str | None = Field(None, description="a user of the loaded dataset: personalises with their history")
    history: list[str] | None = Field(None, description="item ids the user liked, oldest first")
    k: int = Field(5, ge=1, le=MAX_CANDIDATES, description="how many items per reply")
    mode: Literal["score", "generate"] = "score"
    reasons: bool = True


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat request. Sampling parameters are accepted and ignored: items come from the catalog."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    user: str | None = None
    n: int = 1
    recgen: RecgenChatOptions | None = None


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


# -- structured recommendations --------------------------------------------------------------------------

class RecommendationsRequest(RecommendRequest):
    """:class:`~recgen.types.RecommendRequest`; ``user`` is resolved against the served dataset. ``k`` has
    its upper bound in the schema, so clients (and schema fuzzers) see it before a 400 tells them."""

    model_config = ConfigDict(extra="forbid", strict=True)

    k: int = Field(10, ge=1, le=MAX_CANDIDATES, description="how many items (the ranker labels at most 26)")


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

"""Result types shared by the API, CLI, server and batch jobs, and the one request schema the server and batch
jobs both read requests with (strict: the same body gets the same verdict on both surfaces)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from .config import MAX_CANDIDATES
from .text import check_id, check_text, message_text

#: Every id and free text a request carries passes the one validator (recgen.text) in the schema itself.
UserId = Annotated[str, AfterValidator(lambda v: check_id(v, "user id"))]
ItemId = Annotated[str, AfterValidator(lambda v: check_id(v, "item id"))]
Name = Annotated[str, AfterValidator(lambda v: check_id(v, "name"))]
EventId = Annotated[str, AfterValidator(lambda v: check_id(v, "event id"))]
Query = Annotated[str, AfterValidator(lambda v: check_text(v, "query"))]

#: What ordered a list: the fused LightGBM ranker, the request stage (a request in words with a history), the
#: hybrid retrieval order (no fitted ranker, or a request alone), the LM, or the popularity fallback (no input).
RankedBy = Literal["fusion", "request_stage", "retrieval", "lm", "popularity"]
#: How the CLI names each ranker.
RANKER_NAMES: dict[str, str] = {"fusion": "fused LightGBM ranker", "request_stage": "request stage (LightGBM)",
                                "retrieval": "hybrid retrieval order (no fitted ranker applies)", "lm": "LM",
                                "popularity": "popularity fallback (no history or request)"}


class Recommendation(BaseModel):
    """One recommended catalog item. ``reason_source`` says whether the LM's text passed the fact check."""

    model_config = ConfigDict(frozen=True)

    item_id: str
    title: str
    rank: int
    score: float
    reason: str | None = None
    reason_source: Literal["model", "fallback"] | None = None
    ranker: RankedBy | None = Field(None, description="what ordered the list this item is in (the same for every item "
                                  "of a list)")
    warning: str | None = Field(None, description="set when the item does not satisfy the request: nothing (or too "
                                "little) in the catalog matched it, so this is one of the closest items instead")


class Recommendations(list):
    """The items of one request, best first (a list of :class:`Recommendation`), and ``unused_words``: the
    request's words that no filter read and no item shown holds (:func:`recgen.reasons.asked.unused_words`),
    told to the user (API field, chat note, batch line, CLI note) instead of dropped silently."""

    def __init__(self, items=(), unused_words: tuple[str, ...] | list[str] = ()):
        super().__init__(items)
        self.unused_words: tuple[str, ...] = tuple(unused_words)

    def unused_note(self) -> str | None:
        """``Not used: "heist", "twist" (...)``: the words for a person, or None when every word was used."""
        if not self.unused_words:
            return None
        words = ", ".join(f"\u201c{w}\u201d" for w in self.unused_words)
        return (f"Not used from your request: {words} (no filter reads {'it' if len(self.unused_words) == 1 else 'them'}"
                " and no item shown mentions " + ("it" if len(self.unused_words) == 1 else "them") + ").")


class RecommendRequest(BaseModel):
    """A request as the Python API takes it: a known user, a history, a query, or a mix."""

    model_config = ConfigDict(extra="forbid")

    user: UserId | None = None
    history: list[ItemId] | None = None
    query: Query | None = None
    k: int = Field(10, ge=1)
    mode: Literal["score", "generate"] = "score"
    reasons: bool = True
    exclude: list[ItemId] | None = None
    adapter: Name | None = Field(None, description="a named LoRA adapter of the LM (lm.adapters); None = the default, "
                                 "'base' = none")


# -- the wire schema (HTTP API and batch lines) ------------------------------------------------------------
#: Request models are strict: a JSON value of the wrong type (``"reasons": 0.0``, ``"k": "5"``, ``"user": 1``)
#: is a 400 (a batch errors-file line), not silently converted; the schema promises those types.

class RecommendationsRequest(RecommendRequest):
    """``POST /v1/recommendations`` and a batch line: :class:`RecommendRequest`; ``user`` is resolved against the
    served dataset. ``k`` has its upper bound in the schema, so clients (and schema fuzzers) see it before a 400
    tells them. ``model`` (OpenAI batch bodies carry one) must name a served model, as on the chat route."""

    model_config = ConfigDict(extra="forbid", strict=True)

    k: int = Field(10, ge=1, le=MAX_CANDIDATES, description="how many items (the ranker labels at most 26)")
    model: Name | None = Field(None, description="a served model (GET /v1/models); a named adapter selects it")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    @field_validator("content")
    @classmethod
    def _valid_text(cls, content):
        """Text parts must hold strings; the text read from them must be valid Unicode without control characters."""
        if isinstance(content, list):
            for n, part in enumerate(content):
                if part.get("type", "text") == "text" and not isinstance(part.get("text"), str):
                    kind = "null" if part.get("text") is None else type(part.get("text")).__name__
                    raise ValueError(f"content[{n}].text must be a string, not {kind}")
        check_text(message_text(content), "the message")
        return content


class RecgenChatOptions(BaseModel):
    """recgen's own options, sent as ``extra_body={"recgen": {...}}`` with the official client."""

    model_config = ConfigDict(extra="forbid", strict=True)

    user_id: UserId | None = Field(None, description="a user of the loaded dataset: personalises with their history")
    history: list[ItemId] | None = Field(None, description="item ids the user liked, oldest first")
    k: int = Field(5, ge=1, le=MAX_CANDIDATES, description="how many items per reply")
    mode: Literal["score", "generate"] = "score"
    reasons: bool = True


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat request. Sampling parameters are accepted and ignored: items come from the catalog."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: Name
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    user: UserId | None = None
    n: int = 1
    recgen: RecgenChatOptions | None = None

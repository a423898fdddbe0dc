"""Result types shared by the API, CLI, server and batch jobs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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


class RecommendRequest(BaseModel):
    """A request as batch jobs and the HTTP API take it: a known user, a history, a query, or a mix."""

    model_config = ConfigDict(extra="forbid")

    user: str | None = None
    history: list[str] | None = None
    query: str | None = None
    k: int = Field(10, ge=1)
    mode: Literal["score", "generate"] = "score"
    reasons: bool = True
    exclude: list[str] | None = None
    adapter: str | None = Field(None, description="a named LoRA adapter of the LM (lm.adapters); None = the default, "
                                "'base' = none")

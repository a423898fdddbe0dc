"""The LM ranking stage: candidates under letter labels in one prompt, ordered by the model."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from ..config import PromptSettings, RankingSettings
from ..data.catalog import Catalog, Item
from ..lm.prompt import ChatPrompt
from ..lm.templates import chat, shorten
from .labels import labels_for

Mode = Literal["score", "generate"]


@dataclass
class RankRequest:
    """One user's ranking job: history (ids, oldest first), optional request, retrieved candidates."""

    history: list[str]
    query: str | None
    candidates: list[str]
    k: int


def candidate_text(item: Item, title_chars: int) -> str:
    text = shorten(item.title, title_chars)
    if item.genres:
        text += f" [{', '.join(item.genres[:3])}]"
    return text


def build_rank_prompt(catalog: Catalog, request: RankRequest, settings: PromptSettings,
                      listing: bool = False, adapter: str | None = None) -> ChatPrompt:
    labels = labels_for(len(request.candidates))
    history = [shorten(catalog.get(i).title, settings.title_chars) for i in request.history[-settings.history:]]
    candidates = [
        {"label": label, "text": candidate_text(catalog.get(item_id), settings.title_chars)}
        for label, item_id in zip(labels, request.candidates)
    ]
    prompt = chat("rank", settings.prompts_dir, history=history, query=request.query or "", candidates=candidates,
                  listing=listing, k=request.k)
    return replace(prompt, labels=labels, adapter=adapter)


def with_retrieval_prior(scores, prior: float) -> list[float]:
    """Label log-probs (in candidate = retrieval order) plus ``prior * -ln(position)``."""
    if not prior:
        return [float(x) for x in scores]
    return [float(x) - prior * math.log(position) for position, x in enumerate(scores, start=1)]


class Ranker:
    """Orders retrieved candidates with an :class:`~recgen.lm.backend.LMBackend`."""

    def __init__(self, catalog: Catalog, backend, prompt: PromptSettings | None = None,
                 ranking: RankingSettings | None = None):
        self.catalog = catalog
        self.backend = backend
        self.settings = prompt or PromptSettings()
        #: Score mode adds ``retrieval_prior * -ln(position)`` to each label log-prob (position 1 = the
        #: retriever's first candidate): 0 = the LM alone, large = the retrieval order. Set on validation.
        self.retrieval_prior = (ranking or RankingSettings()).retrieval_prior

    def prompt(self, request: RankRequest, listing: bool = False, adapter: str | None = None) -> ChatPrompt:
        return build_rank_prompt(self.catalog, request, self.settings, listing=listing, adapter=adapter)

    def rank(self, requests: list[RankRequest], mode: Mode = "score",
             adapter: str | None = None) -> list[list[tuple[str, float]]]:
        """Per request, (item_id, score) best first. Score mode ranks all candidates by label log-prob;
        generate mode returns the model's own list of ``k`` distinct labels (score = 1/rank). ``adapter``: the
        named LoRA adapter every prompt runs under (None = the backend's default)."""
        if not requests:
            return []
        if mode == "score":
            prompts = [self.prompt(r, adapter=adapter) for r in requests]
            scores = self.backend.score_labels(prompts, [list(p.labels) for p in prompts])
            out = []
            for request, row in zip(requests, scores):
                pairs = list(zip(request.candidates, with_retrieval_prior(row, self.retrieval_prior)))
                # Stable sort: ties keep retrieval order.
                out.append(sorted(pairs, key=lambda pair: -pair[1]))
            return out
        if mode == "generate":
            prompts = [self.prompt(r, listing=True, adapter=adapter) for r in requests]
            ks = [min(r.k, len(r.candidates)) for r in requests]
            lists = self.backend.generate_labels(prompts, [list(p.labels) for p in prompts], ks)
            out = []
            for request, prompt, picked in zip(requests, prompts, lists):
                by_label = dict(zip(prompt.labels, request.candidates))
                ids = [by_label[label] for label in picked if label in by_label]
                out.append([(item_id, 1.0 / (rank + 1)) for rank, item_id in enumerate(ids)])
            return out
        raise ValueError(f"mode must be 'score' or 'generate', not {mode!r}")

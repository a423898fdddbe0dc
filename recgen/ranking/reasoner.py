"""The reasons stage: the LM writes one sentence per recommended item, and a fact check decides whether
the user sees it or a plain reason built from catalog facts."""

from __future__ import annotations

import logging

import numpy as np

from ..config import PromptSettings
from ..data.catalog import Catalog, Item
from .reasons import ReasonChecker, build_reason_prompt, clean_reason, fallback_reason

log = logging.getLogger(__name__)

#: History items named in the reason prompt (the checker still knows the whole shown history).
PROMPT_HISTORY_ITEMS = 5


class Reasoner:
    """(reason, source) per item: the LM's sentence if it passes the fact check, else a fallback.

    ``item_embeddings`` (rows = catalog rows) pick the history item a fallback reason names."""

    def __init__(self, catalog: Catalog, backend, settings: PromptSettings | None = None,
                 item_embeddings: np.ndarray | None = None):
        self.catalog = catalog
        self.backend = backend
        self.settings = settings or PromptSettings()
        self.item_embeddings = item_embeddings
        self.checker = ReasonChecker(catalog)

    def explain(self, history: list[str], query: str | None, item_ids: list[str]) -> list[tuple[str, str]]:
        past = [self.catalog.get(i) for i in history[-self.settings.history:]]
        shown = past[-PROMPT_HISTORY_ITEMS:]
        items = [self.catalog.get(i) for i in item_ids]
        prompts = [build_reason_prompt(item, shown, query, self.settings) for item in items]
        texts = self.backend.generate_text(prompts, self.settings.reason_tokens)
        out = []
        for item, text in zip(items, texts):
            reason = clean_reason(text)
            problems = self.checker.problems(reason, item, past)
            if problems:
                log.debug("reason for %s replaced: %s (%s)", item.item_id, reason, "; ".join(problems))
                out.append((fallback_reason(item, past, query, self.closest(item, past)), "fallback"))
            else:
                out.append((reason, "model"))
        return out

    def closest(self, item: Item, past: list[Item]) -> Item | None:
        """The history item most similar to ``item`` by embedding (None without history or embeddings)."""
        if not past or self.item_embeddings is None:
            return None
        emb = self.item_embeddings
        row = emb[self.catalog.index_of(item.item_id)]
        return max(past, key=lambda p: float(emb[self.catalog.index_of(p.item_id)] @ row))

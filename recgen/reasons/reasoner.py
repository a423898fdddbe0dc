"""The reasons stage: the LM writes one sentence per recommended item, and a fact check decides whether
the user sees it or a plain reason built from catalog facts.

``prompt.reasons`` names the style (:mod:`.styles`: the prompt, its decoding constraint and the fallback);
the checker (:class:`.checker.ReasonChecker`) is the second gate in every style.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Callable

import numpy as np

from ..config import PromptSettings
from ..data.catalog import Catalog, Item
from ..errors import RecgenError
from ..retrieval.collaborative import count_scale
from ..retrieval.request_constraints import RequestConstraints, RequestReader
from .asked import asked_of, with_requests, without_asked
from .checker import ReasonChecker, clean_reason
from .facts import similarity_threshold
from .grounding import display_title
from .styles import ReasonRequest, style_for
from .variety import distinct, spread

log = logging.getLogger(__name__)


def closeness_of(catalog: Catalog, item_embeddings: np.ndarray | None, transitions=None) -> Callable[[Item, Item], tuple[float, float]]:
    """``(item, past) -> (transition strength past→item scaled to the row's largest, embedding cosine)``:
    how the related history item of a reason is picked (the same at inference and in fine-tuning data)."""

    def closeness(item: Item, past: Item) -> tuple[float, float]:
        row, col = catalog.index_of(past.item_id), catalog.index_of(item.item_id)
        strength = 0.0
        if transitions is not None:
            weights = transitions.matrix.getrow(row)
            top = weights.max() if weights.nnz else 0.0
            strength = float(weights[0, col] / top) if top > 0 else 0.0
        cosine = float(item_embeddings[row] @ item_embeddings[col]) if item_embeddings is not None else 0.0
        return strength, cosine

    return closeness


def co_liked_of(catalog: Catalog, transitions=None) -> Callable[[Item, Item], bool]:
    """``(item, past) -> bool``: at least two users had both items (a reason may then say "fans of <past> also
    liked this"). From the exact transition counts: one user adds at most ``L`` (``count_scale``) to a pair in
    both directions together (an item appears once in a sequence), so a sum of ``2 L`` or more takes two users.
    Conservative: pairs further apart weigh ``L / d``, so two users with the items far apart may not count; one
    user never does."""
    counts = getattr(transitions, "counts", None)
    if counts is None:
        return lambda item, past: False
    need = 2 * count_scale(transitions.params.window)

    def co_liked(item: Item, past: Item) -> bool:
        a, b = catalog.index_of(item.item_id), catalog.index_of(past.item_id)
        if max(a, b) >= counts.shape[0]:
            return False  # an item added after the fit has no counts yet
        return int(counts[a, b]) + int(counts[b, a]) >= need

    return co_liked


class Reasoner:
    """(reason, source) per item: the LM's sentence if it passes the fact check, else a fallback.

    ``item_embeddings`` (rows = catalog rows) and ``transitions`` pick the history item a reason names."""

    def __init__(self, catalog: Catalog, backend, settings: PromptSettings | None = None,
                 item_embeddings: np.ndarray | None = None, transitions=None):
        self.catalog = catalog
        self.backend = backend
        self.settings = settings or PromptSettings()
        self.item_embeddings = item_embeddings
        self.checker = ReasonChecker(catalog)
        self.closeness = closeness_of(catalog, item_embeddings, transitions)
        self.co_liked = co_liked_of(catalog, transitions)
        self._related_cosine: float | None = None
        self._reader: RequestReader | None = None

    def explain(self, history: list[str], query: str | None, item_ids: list[str],
                adapter: str | None = None) -> list[tuple[str, str]]:
        """``adapter``: the named LoRA adapter the reason prompts run under (None = the backend's default).

        One list at a time: each item's sentences are spread over the list first (:func:`.variety.spread`, so
        no sentence repeats and openings vary), and with a request each reason says which of its facts the
        item meets (:mod:`.asked`)."""
        style = style_for(self.settings.reasons)
        request = ReasonRequest(history, [self.catalog.get(i) for i in history[-self.settings.history:]], query,
                                self.settings)
        past = request.past
        items = [self.catalog.get(i) for i in item_ids]
        named: dict[str, int] = {}
        facts = [style.facts(self, item, request, named) for item in items]
        asked = [asked_of(item, query, self.request_constraints(query)) for item in items]
        every = [without_asked(style.choices(self, item, fact, request), said)
                 for item, fact, said in zip(items, facts, asked)]
        options = spread(every)
        prompts = [replace(style.prompt(self, item, fact, request, choices), adapter=adapter)
                   for item, fact, choices in zip(items, facts, options)]
        texts = self.backend.generate_text(prompts, style.tokens(self.settings))
        out = []
        titles = [t for i in [*items, *past] for t in (i.title, display_title(i.title, self.settings.title_chars))]
        for item, text, fact, choices in zip(items, texts, facts, options):
            reason = clean_reason(text, titles=titles)
            problems = [*self.checker.problems(reason, item, past), *style.problems(reason, fact, self.settings)]
            if problems:
                log.debug("reason for %s replaced: %s (%s)", item.item_id, reason, "; ".join(problems))
                out.append((style.fallback(self, item, fact, request, choices), "fallback"))
            else:
                out.append((reason, "model"))
        out = distinct(out, every)
        # an item whose facts name a liked item keeps its reason beside the request clause; one without says the
        # clause alone (the request is all there is to say)
        alone = [bool(said) and fact is not None and fact.related is None for fact, said in zip(facts, asked)]
        texts = with_requests([None if a else text for a, (text, _) in zip(alone, out)], asked)
        return [(text, "fallback" if a else source) for text, a, (_, source) in zip(texts, alone, out)]

    def request_constraints(self, query: str | None) -> RequestConstraints | None:
        """The request read as the retriever reads it (None without one, or when it cannot be read)."""
        if not query or not query.strip():
            return None
        if self._reader is None:
            self._reader = RequestReader(self.catalog)
        try:
            return self._reader.read(query)
        except RecgenError:
            return None  # contradictory: the retriever refused it already; the reason names no request fact

    def similar(self, item: Item, past: Item) -> bool:
        """Embedding cosine at or above the catalog's 95th percentile of random pairs (:func:`.facts
        .similarity_threshold`, computed once): which liked items a list may spread its reasons over
        (:func:`.grounding.select_facts`), and the free style's fallback pick. Not what lets a reason call two
        items alike (that is :func:`.grammar.alike`: the same genres)."""
        if self.item_embeddings is None:
            return True
        if self._related_cosine is None:
            self._related_cosine = similarity_threshold(self.item_embeddings, seed=0)
        return self.closeness(item, past)[1] >= self._related_cosine

    def closest(self, item: Item, past: list[Item]) -> Item | None:
        """The history item most similar to ``item`` by embedding (None without history or embeddings)."""
        if not past or self.item_embeddings is None:
            return None
        emb = self.item_embeddings
        row = emb[self.catalog.index_of(item.item_id)]
        return max(past, key=lambda p: float(emb[self.catalog.index_of(p.item_id)] @ row))

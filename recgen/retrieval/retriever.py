"""Candidate retrieval: a user's history and/or a free-text request → the nearest catalog items."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import RetrievalSettings
from ..data.catalog import Catalog
from ..errors import InvalidRequestError
from ..text import has_negation
from .collaborative import ItemTransitions
from .embedder import DEFAULT_EMBEDDER, embed, load_embedder
from .index import IndexMeta, load_index, make_index, save_index


def recency_weights(length: int, decay: float) -> np.ndarray:
    """Weight ``decay**age`` for each history position, newest = 1: recent taste counts more."""
    ages = np.arange(length - 1, -1, -1, dtype=np.float32)
    return np.power(np.float32(decay), ages)


class Retriever:
    """Holds the catalog's normalized item embeddings in a FAISS inner-product index."""

    def __init__(self, catalog: Catalog, index, settings: RetrievalSettings | None = None, *,
                 embedder_name: str | None = None, transitions: ItemTransitions | None = None):
        self.catalog = catalog
        self.index = index
        self.settings = settings or RetrievalSettings()
        #: The embedder the index was built with (a resolved name; ``settings.embedder`` may be ``None``).
        self.embedder_name = embedder_name or self.settings.embedder or DEFAULT_EMBEDDER
        self._item_embeddings: np.ndarray | None = None
        #: Item transitions fitted on the data's sequences; with a history, candidates are ranked by
        #: cosine + ``settings.collaborative_weight`` × transition score (scaled to max 1 per user).
        self.transitions = transitions

    # -- building and persistence -------------------------------------------------------------
    @classmethod
    def build(cls, catalog: Catalog, settings: RetrievalSettings | None = None, *, show_progress: bool = False,
              batch_size: int = 64, transitions: ItemTransitions | None = None) -> "Retriever":
        settings = settings or RetrievalSettings()
        model = load_embedder(settings.embedder)
        vectors = embed(model, [item.text() for item in catalog], batch_size=batch_size, show_progress=show_progress)
        return cls.from_vectors(catalog, vectors, settings, transitions=transitions)

    @classmethod
    def from_vectors(cls, catalog: Catalog, vectors: np.ndarray, settings: RetrievalSettings | None = None, *,
                     embedder_name: str | None = None, transitions: ItemTransitions | None = None) -> "Retriever":
        """A retriever over already computed, normalized item vectors (row i = ``catalog.items[i]``)."""
        retriever = cls(catalog, make_index(vectors), settings, embedder_name=embedder_name, transitions=transitions)
        retriever._item_embeddings = vectors
        return retriever

    def save(self, folder: str | Path) -> None:
        meta = IndexMeta(self.embedder_name, self.catalog.fingerprint(), self.index.ntotal, self.index.d)
        save_index(folder, self.index, meta)

    @classmethod
    def load(cls, folder: str | Path, catalog: Catalog, settings: RetrievalSettings | None = None, *,
             transitions: ItemTransitions | None = None) -> "Retriever":
        """The saved index; stale (another catalog, or another embedder than ``settings.embedder``) is an error."""
        settings = settings or RetrievalSettings()
        index, meta = load_index(folder, catalog.fingerprint(), settings.embedder or DEFAULT_EMBEDDER)
        return cls(catalog, index, settings, embedder_name=meta.embedder, transitions=transitions)

    def rebound(self, settings: RetrievalSettings, transitions: ItemTransitions | None = None) -> "Retriever":
        """A retriever over the same index (shared, not copied) with other settings and transitions."""
        other = Retriever(self.catalog, self.index, settings, embedder_name=self.embedder_name, transitions=transitions)
        other._item_embeddings = self._item_embeddings
        return other

    @property
    def item_embeddings(self) -> np.ndarray:
        """[n_items, dim] normalized vectors; row i is ``catalog.items[i]``."""
        if self._item_embeddings is None:
            self._item_embeddings = self.index.reconstruct_n(0, self.index.ntotal)
        return self._item_embeddings

    # -- queries ------------------------------------------------------------------------------
    def embed_query(self, text: str) -> np.ndarray:
        return embed(load_embedder(self.embedder_name), [text])[0]

    def history_vector(self, history: list[str]) -> np.ndarray | None:
        recent = history[-self.settings.history:]
        if not recent:
            return None
        rows = np.array([self.catalog.index_of(i) for i in recent])
        vector = recency_weights(len(rows), self.settings.recency_decay) @ self.item_embeddings[rows]
        norm = np.linalg.norm(vector)
        return vector / norm if norm > 0 else None

    def query_vector(self, history: list[str], query: str | None = None) -> np.ndarray:
        """Recency-weighted mean of history embeddings, mixed with the request's embedding when given."""
        parts = []
        hist = self.history_vector(history)
        if hist is not None:
            parts.append((1.0 - self.settings.query_weight if query else 1.0, hist))
        if query:
            parts.append((self.settings.query_weight if hist is not None else 1.0, self.embed_query(query)))
        if not parts:
            raise InvalidRequestError("retrieval needs a history or a query")
        vector = sum(weight * vec for weight, vec in parts)
        return (vector / np.linalg.norm(vector)).astype(np.float32)

    def retrieve(self, history: list[str], query: str | None = None, n: int | None = None,
                 exclude: set[str] | None = None, *, transitions: ItemTransitions | None = None) -> list[tuple[str, float]]:
        """Top-``n`` (default ``settings.n_candidates``) (item_id, score) not in ``exclude`` (the history is always
        excluded). ``transitions`` replaces the fitted ones for this call (e.g. out-of-fold ones in training)."""
        n = self.settings.n_candidates if n is None else n
        skip = set(history) | set(exclude or ())
        vector = self.query_vector(history, query)
        transitions = transitions if transitions is not None else self.transitions
        if query and self.settings.request_pool > 0 and not has_negation(query):
            return self._retrieve_for_request(history, query, vector, n, skip, transitions)
        if history and transitions is not None and self.settings.collaborative_weight > 0:
            return self._retrieve_hybrid(history, vector, n, skip, transitions)
        want = min(len(self.catalog), n + len(skip))
        scores, rows = self.index.search(vector[None, :], want)
        out = []
        for score, row in zip(scores[0], rows[0]):
            if row < 0:
                continue
            item_id = self.catalog.items[row].item_id
            if item_id in skip:
                continue
            out.append((item_id, float(score)))
            if len(out) == n:
                break
        return out

    def scores(self, history: list[str], vector: np.ndarray | None = None,
               transitions: ItemTransitions | None = None) -> np.ndarray:
        """What :meth:`retrieve` ranks by, for every catalog item: cosine to the query vector, plus the weighted
        transition score when transitions are fitted and the weight is above 0."""
        vector = self.query_vector(history) if vector is None else vector
        cosine = self.item_embeddings @ vector
        transitions = transitions if transitions is not None else self.transitions
        if not history or transitions is None or self.settings.collaborative_weight <= 0:
            return cosine
        rows = np.array([self.catalog.index_of(i) for i in history], dtype=np.int64)
        return cosine + self.settings.collaborative_weight * transitions.scores(rows)

    def _retrieve_for_request(self, history: list[str], query: str, vector: np.ndarray, n: int, skip: set[str],
                              transitions: ItemTransitions | None) -> list[tuple[str, float]]:
        """Request first: the pool is the request's own nearest ``request_pool`` items (never fewer than ``n``);
        the blended history + request score (with transitions) orders them."""
        by_request = self.item_embeddings @ self.embed_query(query)
        for item_id in skip:
            by_request[self.catalog.index_of(item_id)] = -np.inf
        size = min(max(self.settings.request_pool, n), int(np.isfinite(by_request).sum()))
        if size == 0:
            return []
        pool = np.argpartition(-by_request, size - 1)[:size]
        personal = self.scores(history, vector, transitions) if history else by_request
        order = pool[np.argsort(-personal[pool], kind="stable")][:n]
        return [(self.catalog.items[row].item_id, float(personal[row])) for row in order]

    def _retrieve_hybrid(self, history: list[str], vector: np.ndarray, n: int, skip: set[str],
                         transitions: ItemTransitions) -> list[tuple[str, float]]:
        scores = self.scores(history, vector, transitions)
        for item_id in skip:
            scores[self.catalog.index_of(item_id)] = -np.inf
        n = min(n, int(np.isfinite(scores).sum()))
        top = np.argpartition(-scores, n - 1)[:n] if n else np.array([], dtype=np.int64)
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self.catalog.items[row].item_id, float(scores[row])) for row in top]

"""Candidate retrieval: a user's history and/or a free-text request → the nearest catalog items."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.catalog import Catalog
from ..errors import InvalidRequestError
from .embedder import DEFAULT_EMBEDDER, embed, load_embedder
from .index import IndexMeta, load_index, make_index, save_index


def recency_weights(length: int, decay: float) -> np.ndarray:
    """Weight ``decay**age`` for each history position, newest = 1: recent taste counts more."""
    ages = np.arange(length - 1, -1, -1, dtype=np.float32)
    return np.power(np.float32(decay), ages)


class Retriever:
    """Holds the catalog's normalized item embeddings in a FAISS inner-product index."""

    def __init__(self, catalog: Catalog, embedder_name: str, index, *, max_history: int = 20,
                 decay: float = 0.85, query_weight: float = 0.6, transitions=None,
                 collaborative_weight: float = 0.0):
        self.catalog = catalog
        self.embedder_name = embedder_name
        self.index = index
        self.max_history = max_history
        self.decay = decay
        self.query_weight = query_weight
        self._item_embeddings: np.ndarray | None = None
        #: Optional :class:`~recgen.retrieval.collaborative.ItemTransitions`; with a history, candidates are
        #: ranked by cosine + ``collaborative_weight`` × transition score (scaled to max 1 per user).
        self.transitions = transitions
        self.collaborative_weight = collaborative_weight

    # -- building and persistence -------------------------------------------------------------
    @classmethod
    def build(cls, catalog: Catalog, embedder: str | None = None, *, show_progress: bool = False,
              batch_size: int = 64, **options) -> "Retriever":
        model = load_embedder(embedder)
        vectors = embed(model, [item.text() for item in catalog], batch_size=batch_size, show_progress=show_progress)
        retriever = cls(catalog, embedder or DEFAULT_EMBEDDER, make_index(vectors), **options)
        retriever._item_embeddings = vectors
        return retriever

    def save(self, folder: str | Path) -> None:
        meta = IndexMeta(self.embedder_name, self.catalog.fingerprint(), self.index.ntotal, self.index.d)
        save_index(folder, self.index, meta)

    @classmethod
    def load(cls, folder: str | Path, catalog: Catalog, embedder: str | None = None, **options) -> "Retriever":
        index, meta = load_index(folder, catalog.fingerprint(), embedder)
        return cls(catalog, meta.embedder, index, **options)

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
        recent = history[-self.max_history:]
        if not recent:
            return None
        rows = np.array([self.catalog.index_of(i) for i in recent])
        vector = recency_weights(len(rows), self.decay) @ self.item_embeddings[rows]
        norm = np.linalg.norm(vector)
        return vector / norm if norm > 0 else None

    def query_vector(self, history: list[str], query: str | None = None) -> np.ndarray:
        """Recency-weighted mean of history embeddings, mixed with the request's embedding when given."""
        parts = []
        hist = self.history_vector(history)
        if hist is not None:
            parts.append((1.0 - self.query_weight if query else 1.0, hist))
        if query:
            parts.append((self.query_weight if hist is not None else 1.0, self.embed_query(query)))
        if not parts:
            raise InvalidRequestError("retrieval needs a history or a query")
        vector = sum(weight * vec for weight, vec in parts)
        return (vector / np.linalg.norm(vector)).astype(np.float32)

    def retrieve(self, history: list[str], query: str | None = None, n: int = 20,
                 exclude: set[str] | None = None) -> list[tuple[str, float]]:
        """Top-``n`` (item_id, cosine) not in ``exclude`` (the history is always excluded)."""
        skip = set(history) | set(exclude or ())
        vector = self.query_vector(history, query)
        if history and self.transitions is not None and self.collaborative_weight > 0:
            return self._retrieve_hybrid(history, vector, n, skip)
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

    def hybrid_scores(self, history: list[str], vector: np.ndarray) -> np.ndarray:
        """Cosine to the query vector plus the weighted collaborative score, for every catalog item."""
        rows = np.array([self.catalog.index_of(i) for i in history], dtype=np.int64)
        return self.item_embeddings @ vector + self.collaborative_weight * self.transitions.scores(rows)

    def _retrieve_hybrid(self, history: list[str], vector: np.ndarray, n: int, skip: set[str]) -> list[tuple[str, float]]:
        scores = self.hybrid_scores(history, vector)
        for item_id in skip:
            scores[self.catalog.index_of(item_id)] = -np.inf
        n = min(n, int(np.isfinite(scores).sum()))
        top = np.argpartition(-scores, n - 1)[:n] if n else np.array([], dtype=np.int64)
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self.catalog.items[row].item_id, float(scores[row])) for row in top]

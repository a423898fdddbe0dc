"""Retrieval-only baseline: rank all items by the project's retriever scores.

Uses :class:`recgen.retrieval.Retriever` as the two-stage pipeline does (same embedder, same recency-weighted
history vector with the :class:`~recgen.config.RecgenConfig` settings). With ``collaborative_weight=0``
(the default here) the order is pure sentence-transformer cosine; with ``collaborative_weight > 0`` it is
the pipeline's hybrid retrieval (cosine + weighted item-to-item transitions, fitted on the **training**
sequences only), whose Recall@N is then the LM ranker's ceiling for that setting. The item index is cached
where the CLI caches it (``cache_dir()/indexes/<dataset>-<embedder>-<catalog fingerprint>``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...config import RecgenConfig
from ...retrieval.embedder import DEFAULT_EMBEDDER
from ...retrieval.cache import index_folder, load_or_build_index
from ..protocol import EvalData


def cached_retriever(catalog, dataset_name: str, embedder: str | None = None, show_progress: bool = False):
    """The catalog's retriever from the cache, or built and cached (stale or corrupt caches are rebuilt)."""
    folder = index_folder(dataset_name, catalog.fingerprint(), embedder)
    was_cached = folder.is_dir()
    return load_or_build_index(catalog, embedder, folder, show_progress=show_progress), was_cached, folder


class RetrievalOnly:
    name = "retrieval"

    def __init__(self, embedder: str | None = None, config: RecgenConfig | None = None,
                 collaborative_weight: float = 0.0) -> None:
        self.embedder = embedder
        self.config = config or RecgenConfig()
        self.collaborative_weight = float(collaborative_weight)
        if self.collaborative_weight < 0:
            raise ValueError("collaborative_weight must be >= 0")
        self.retriever = None

    def params(self) -> dict:
        out = {"embedder": self.embedder or DEFAULT_EMBEDDER, "retrieval_history": self.config.retrieval_history,
               "recency_decay": self.config.recency_decay, "collaborative_weight": self.collaborative_weight}
        transitions = getattr(self.retriever, "transitions", None)
        if transitions is not None:
            from dataclasses import asdict

            out["transitions"] = {**asdict(transitions.params), "fitted_on": "training sequences only"}
        return out

    def fit(self, data: EvalData, log=None) -> None:
        self.retriever, was_cached, folder = cached_retriever(data.dataset.catalog, data.dataset.name, self.embedder)
        # the same settings the Recommender applies to its retriever
        self.retriever.max_history = self.config.retrieval_history
        self.retriever.decay = self.config.recency_decay
        self.retriever.query_weight = self.config.query_weight
        self.retriever.transitions = None
        self.retriever.collaborative_weight = self.collaborative_weight
        if self.collaborative_weight > 0:
            from ...retrieval.collaborative import ItemTransitions

            ids = data.dataset.catalog.ids
            train = [[ids[i] for i in seq] for seq in data.train_sequences()]
            self.retriever.transitions = ItemTransitions.fit(data.dataset.catalog, train)
        if log:
            log(f"retrieval: {'loaded cached' if was_cached else 'built'} index {folder}")
        self._ids = data.dataset.catalog.ids
        self._emb = np.ascontiguousarray(self.retriever.item_embeddings, dtype=np.float32)

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        id_lists = [[self._ids[i] for i in hist] for hist in histories]
        queries = np.stack([self.retriever.query_vector(ids) for ids in id_lists])
        if self.collaborative_weight > 0 and self.retriever.transitions is not None:
            return np.stack([self.retriever.hybrid_scores(ids, q) for ids, q in zip(id_lists, queries)])
        return queries.astype(np.float32) @ self._emb.T

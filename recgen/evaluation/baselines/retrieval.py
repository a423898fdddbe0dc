"""Retrieval-only baseline: rank all items by cosine to the project's history query vector.

Uses :class:`recgen.retrieval.Retriever` exactly as the two-stage pipeline does (same embedder, same
recency-weighted history vector with the :class:`~recgen.config.RecgenConfig` defaults), so its Recall@20
equals the pipeline ranker's ceiling. The item index is cached where the CLI caches it
(``cache_dir()/indexes/<dataset>-<embedder>-<catalog fingerprint>``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...config import RecgenConfig
from ...paths import cache_dir
from ..protocol import EvalData


def index_folder(dataset_name: str, fingerprint: str, embedder: str | None) -> Path:
    """Same layout as ``recgen.cli.common.default_index_dir``, so CLI and evaluation share one cache."""
    name = (embedder or "all-MiniLM-L6-v2").replace("/", "_")
    return cache_dir() / "indexes" / f"{dataset_name}-{name}-{fingerprint[:12]}"


def cached_retriever(catalog, dataset_name: str, embedder: str | None = None, show_progress: bool = False):
    """The catalog's retriever from the cache, or built and cached (stale or corrupt caches are rebuilt)."""
    from ...recommender import load_or_build_index

    folder = index_folder(dataset_name, catalog.fingerprint(), embedder)
    was_cached = folder.is_dir()
    return load_or_build_index(catalog, embedder, folder, show_progress=show_progress), was_cached, folder


class RetrievalOnly:
    name = "retrieval"

    def __init__(self, embedder: str | None = None, config: RecgenConfig | None = None) -> None:
        self.embedder = embedder
        self.config = config or RecgenConfig()
        self.retriever = None

    def params(self) -> dict:
        return {"embedder": self.embedder or "all-MiniLM-L6-v2", "retrieval_history": self.config.retrieval_history,
                "recency_decay": self.config.recency_decay}

    def fit(self, data: EvalData, log=None) -> None:
        self.retriever, was_cached, folder = cached_retriever(data.dataset.catalog, data.dataset.name, self.embedder)
        # the same settings the Recommender applies to its retriever
        self.retriever.max_history = self.config.retrieval_history
        self.retriever.decay = self.config.recency_decay
        self.retriever.query_weight = self.config.query_weight
        if log:
            log(f"retrieval: {'loaded cached' if was_cached else 'built'} index {folder}")
        self._ids = data.dataset.catalog.ids
        self._emb = np.ascontiguousarray(self.retriever.item_embeddings, dtype=np.float32)

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        queries = np.stack([self.retriever.query_vector([self._ids[i] for i in hist]) for hist in histories])
        return queries.astype(np.float32) @ self._emb.T

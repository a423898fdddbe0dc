"""Retrieval only: every item ranked by the served first stage (what `recommend` retrieves with).

By default this is the hybrid the pipeline serves (text cosine + ``collaborative_weight`` × item transitions
fitted on the training sequences only), built by the one pipeline factory; ``collaborative_weight=0``
evaluates text similarity alone. Its Recall@N is the LM ranker's ceiling for those settings. The index is
cached where the CLI caches it.
"""

from __future__ import annotations

import numpy as np

from ...config import RecgenConfig
from ...pipeline import FittedState, build_retriever
from ...retrieval.cache import index_folder
from ..protocol import EvalData


class RetrievalSystem:
    name = "retrieval"

    def __init__(self, config: RecgenConfig | dict | None = None, retriever=None, **retrieval) -> None:
        """``retrieval`` overrides settings of ``config.retrieval`` (e.g. ``collaborative_weight=0``);
        ``retriever`` reuses an existing index (tests, training)."""
        base = config if isinstance(config, RecgenConfig) else RecgenConfig.validated(config or {}, "retrieval config")
        self.config = base.updated("retrieval parameters", retrieval=retrieval)
        self._index = retriever
        self.retriever = None

    def params(self) -> dict:
        out = dict(self.config.retrieval.model_dump())
        out["embedder"] = getattr(self.retriever, "embedder_name", None) or out["embedder"]
        transitions = getattr(self.retriever, "transitions", None)
        if transitions is not None:
            from dataclasses import asdict

            out["transitions"] = {**asdict(transitions.params), "fitted_on": "training sequences only"}
        return out

    def fit(self, data: EvalData, log=None) -> None:
        catalog = data.dataset.catalog
        settings = self.config.retrieval
        state = FittedState.fit(data.train_dataset(), settings)
        folder = None if self._index is not None else index_folder(data.dataset.name, catalog.fingerprint(),
                                                                     settings.embedder)
        self.retriever = build_retriever(catalog, settings, transitions=state.transitions, index_dir=folder,
                                         retriever=self._index)
        if log:
            log(f"retrieval: index {folder or 'given'}; transitions {'on' if state.transitions else 'off'}")
        self._ids = catalog.ids
        self._emb = np.ascontiguousarray(self.retriever.item_embeddings, dtype=np.float32)

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        id_lists = [[self._ids[i] for i in hist] for hist in histories]
        queries = np.stack([self.retriever.query_vector(ids) for ids in id_lists])
        if self.retriever.transitions is None or self.config.retrieval.collaborative_weight <= 0:
            return queries.astype(np.float32) @ self._emb.T  # one matrix product for the whole batch
        return np.stack([self.retriever.scores(ids, q) for ids, q in zip(id_lists, queries)])

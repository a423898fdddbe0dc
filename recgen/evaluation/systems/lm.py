"""The LM pipeline (hybrid retrieval → LM ranker, zero-shot or with a LoRA adapter) through the public API.

One system for every LM variant: ``adapter=<folder>`` selects a fine-tuned ranker, ``mode`` score or
generate, and any :class:`~recgen.config.RecgenConfig` setting can be given (``config`` or flat keys such
as ``retrieval_prior=1.5``). The recommender is built by the pipeline factory from a **training-only**
copy of the dataset, so nothing it derives from the data (transitions, popularity) has seen a held-out
target. Training-time validation and calibration pass the model being trained (``backend``) and the
retriever they already hold (``retriever``).
"""

from __future__ import annotations

from ...config import RecgenConfig, nest_legacy_keys
from ...recommender import Recommender
from ...retrieval.cache import index_folder
from ..protocol import EvalData


class LMSystem:
    name = "lm"

    def __init__(self, mode: str = "score", batch: int = 8, config: RecgenConfig | dict | None = None,
                 adapter: str | None = None, backend=None, retriever=None, **settings):
        if mode not in ("score", "generate"):
            raise ValueError("mode must be 'score' or 'generate'")
        base = config if isinstance(config, RecgenConfig) else RecgenConfig.validated(config or {}, "lm config")
        changes = nest_legacy_keys(settings)
        changes.setdefault("ranking", {}).setdefault("second_stage", "lm")  # this system measures the LM's order
        if adapter is not None:
            changes.setdefault("lm", {})["adapter"] = adapter
        self.config = base.updated("lm parameters", **changes)
        self.mode = mode
        self.batch = int(batch)
        self.backend = backend
        self._index = retriever
        self.recommender: Recommender | None = None

    def params(self) -> dict:
        return {"mode": self.mode, "batch": self.batch, **self.config.model_dump()}

    def fit(self, data: EvalData, log=None) -> None:
        catalog = data.dataset.catalog
        folder = None if self._index is not None else index_folder(data.dataset.name, catalog.fingerprint(),
                                                                     self.config.retrieval.embedder)
        self.recommender = Recommender.from_dataset(data.train_dataset(), self.config, index_dir=folder,
                                                    retriever=self._index, backend=self.backend)
        if log:
            log(f"lm: recommender over {len(catalog):,} items, index {folder or 'given'}, "
                f"adapter {self.config.lm.adapter or 'none'}")

    def recommend_many(self, histories: list[list[str]]) -> list[tuple[list[str], list[str]]]:
        """(ranked ids, candidate ids) per history; the LM ranks a batch of users at once."""
        n = self.config.retrieval.n_candidates
        requests = [{"history": h, "k": n, "mode": self.mode, "reasons": False} for h in histories]
        results = self.recommender.recommend_batch(requests)
        return [([r.item_id for r in recs], candidates)
                for recs, candidates in zip(results, self.candidates_many(histories))]

    def candidates_many(self, histories: list[list[str]]) -> list[list[str]]:
        """The retriever's candidates alone (the first stage), in retrieval order."""
        return [[item for item, _ in self.recommender.retriever.retrieve(h)] for h in histories]

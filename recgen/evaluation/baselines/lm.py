"""The LM pipeline (retriever → zero-shot LM ranker) evaluated through the public ``Recommender`` API.

The recommender is built from a **training-only** copy of the dataset (each sequence without its
validation and test items), so nothing it derives from the data (e.g. the popularity fallback) has seen
a held-out target. Candidates are recomputed with the recommender's own retriever to report the
retriever's Recall@N and the validity of what the ranker returns.
"""

from __future__ import annotations

from ...config import RecgenConfig
from ...data import Dataset
from ..protocol import EvalData
from ...retrieval.cache import index_folder


class LMZeroShot:
    name = "lm-zeroshot"

    def __init__(self, mode: str = "score", batch: int = 8, config: RecgenConfig | None = None, backend=None,
                 **config_overrides):
        if mode not in ("score", "generate"):
            raise ValueError("mode must be 'score' or 'generate'")
        base = (config or RecgenConfig()).model_dump()
        base.update(config_overrides)
        self.config = RecgenConfig.validated(base, "lm-zeroshot parameters")
        self.mode = mode
        self.batch = int(batch)
        self.recommender = None
        self.backend = backend  # an LMBackend instance (tests); None = built from the config on first use

    def params(self) -> dict:
        return {"mode": self.mode, "batch": self.batch, **self.config.model_dump()}

    def fit(self, data: EvalData, log=None) -> None:
        from ...recommender import Recommender

        train_only = Dataset(data.dataset.name, data.dataset.catalog,
                             {u: list(s.train) for u, s in zip(data.user_ids, data.split.splits)})
        folder = index_folder(data.dataset.name, data.dataset.catalog.fingerprint(), self.config.embedder)
        extra = {"backend": self.backend} if self.backend is not None else {}
        self.recommender = Recommender.from_dataset(train_only, self.config, index_dir=folder, **extra)
        if log:
            log(f"lm-zeroshot: recommender over {len(data.dataset.catalog):,} items, index {folder}")

    def recommend_many(self, histories: list[list[str]]) -> list[tuple[list[str], list[str]]]:
        """(ranked ids, candidate ids) per history; the LM ranks a batch of users at once."""
        rec = self.recommender
        n = self.config.n_candidates
        requests = [{"history": h, "k": n, "mode": self.mode, "reasons": False} for h in histories]
        results = rec.recommend_batch(requests)
        return [([r.item_id for r in recs], candidates)
                for recs, candidates in zip(results, self.candidates_many(histories))]

    def candidates_many(self, histories: list[list[str]]) -> list[list[str]]:
        """The retriever's candidates alone (the first stage), in retrieval order."""
        n = self.config.n_candidates
        return [[item for item, _ in self.recommender.retriever.retrieve(h, None, n=n)] for h in histories]

    def recommend(self, history: list[str]) -> tuple[list[str], list[str]]:
        return self.recommend_many([history])[0]

"""Most-popular baseline: every user gets the items most often seen in the *training* histories."""

from __future__ import annotations

import numpy as np

from ..protocol import EvalData


class MostPopular:
    """Score = training interaction count; ties broken by catalog order (earlier first), encoded in the score."""

    name = "popular"

    def __init__(self) -> None:
        self.scores_: np.ndarray | None = None

    def fit(self, data: EvalData, log=None) -> None:
        counts = np.bincount(np.concatenate(data.train_sequences()), minlength=data.n_items).astype(np.float64)
        # unique scores: order by (-count, catalog row); the score is the negated position in that order
        order = np.lexsort((np.arange(data.n_items), -counts))
        scores = np.empty(data.n_items)
        scores[order] = -np.arange(data.n_items, dtype=np.float64)
        self.counts_ = counts
        self.scores_ = scores

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        if self.scores_ is None:
            raise RuntimeError("call fit() first")
        return np.broadcast_to(self.scores_, (len(histories), len(self.scores_)))

    def params(self) -> dict:
        return {"counts_from": "training histories only", "tie_break": "catalog order"}

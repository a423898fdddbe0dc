"""Sequential item-to-item baseline (ItemKNN-style): what tends to come right after the last few items.

From the training sequences only, count for every ordered pair (a, b) with b appearing ``d`` steps after a
(``1 <= d <= window``) a weight ``1/d``; optionally add ``backward`` times the reverse direction (plain
co-occurrence). Each row is normalised as ``C[a, b] / (n_a ** alpha * n_b ** (1 - alpha))`` with ``n`` the
item's total pair weight (``alpha = 1`` is the transition probability; smaller ``alpha`` damps popular
targets, as in cosine ItemKNN). A user's score for ``b`` is ``sum_k decay**k * C[h_{-1-k}, b]`` over the
``last`` most recent history items. Items with equal scores (usually 0) are ordered by training popularity,
added as a tie-break far below any real score difference. The counts are
:func:`recgen.retrieval.collaborative.transition_matrix`, the code hybrid retrieval serves.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ...retrieval.collaborative import history_weights, transition_matrix
from ..protocol import EvalData


class ItemKNN:
    name = "itemknn"

    def __init__(self, window: int = 3, last: int = 3, decay: float = 0.5, backward: float = 0.25,
                 alpha: float = 0.5) -> None:
        if window < 1 or last < 1:
            raise ValueError("window and last must be >= 1")
        self.window, self.last, self.decay = int(window), int(last), float(decay)
        self.backward, self.alpha = float(backward), float(alpha)
        self.sim_: sp.csr_matrix | None = None

    def params(self) -> dict:
        return {"window": self.window, "last": self.last, "decay": self.decay, "backward": self.backward,
                "alpha": self.alpha}

    def fit(self, data: EvalData, log=None) -> None:
        n = data.n_items
        self.sim_ = transition_matrix(data.train_sequences(), n, self.window, self.backward, self.alpha)
        pop = np.bincount(np.concatenate(data.train_sequences()), minlength=n).astype(np.float64) \
            if data.train_sequences() else np.zeros(n)
        # popularity tie-break in [0, 1e-6): far below the smallest non-zero similarity contribution
        smallest = self.sim_.data.min() if self.sim_.nnz else 1.0
        scale = min(1e-6, 1e-3 * smallest * self.decay ** (self.last - 1))
        self.tiebreak_ = scale * pop / (pop.max() + 1.0)
        if log:
            log(f"itemknn: {self.sim_.nnz:,} item pairs from training sequences")

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        if self.sim_ is None:
            raise RuntimeError("call fit() first")
        weights = history_weights(histories, self.sim_.shape[0], self.last, self.decay)
        return (weights @ self.sim_).toarray() + self.tiebreak_

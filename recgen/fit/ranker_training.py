"""Who trains a LightGBM ranker trial: this process, or a Dask cluster (``fit.cluster.address``).

Both take the same groups and return the same :class:`~recgen.ranking.fusion.FusionRanker` (a booster early-stopped
on the held-out groups' NDCG@10), so the selection in :mod:`recgen.fit.fusion` does not know where a trial ran.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

import numpy as np

from ..config import FitSettings
from ..ranking.fusion import FusionRanker
from ..ranking.fusion.groups import Stacked

#: (features, labels) pairs, or a stacked cut of a GroupSet (recgen.ranking.fusion.groups)
Groups = Sequence[tuple[np.ndarray, np.ndarray]] | Stacked


class RankerTrainer(Protocol):
    """Fit a lambdarank ranker on ``train`` groups, early-stopped on ``valid`` groups' NDCG@10."""

    def train(self, train: Groups, valid: Groups, feature_names: Sequence[str], *, num_leaves: int, max_rounds: int,
              threads: int, seed: int, log: Callable[[str], None] | None = None,
              callbacks: Sequence[Callable] = ()) -> FusionRanker: ...


class LocalRankerTrainer:
    """LightGBM in this process (``lgb.train`` with early stopping)."""

    def train(self, train: Groups, valid: Groups, feature_names: Sequence[str], *, num_leaves: int, max_rounds: int,
              threads: int, seed: int, log: Callable[[str], None] | None = None,
              callbacks: Sequence[Callable] = ()) -> FusionRanker:
        rows = [train, valid]  # handed over without a reference left here, so FusionRanker.train can free them
        del train, valid
        ranker = FusionRanker.train(rows.pop(0), rows.pop(0), feature_names, num_leaves=num_leaves,
                                    max_rounds=max_rounds, threads=threads, seed=seed, log=log, callbacks=callbacks)
        ranker.info["trained_on"] = "this process"
        return ranker


def ranker_trainer(settings: FitSettings) -> RankerTrainer:
    """The trainer ``settings`` name: local without a cluster address, else LightGBM's Dask ranker there."""
    if not settings.cluster.address:
        return LocalRankerTrainer()
    from .cluster_ranker import DaskRankerTrainer

    return DaskRankerTrainer(settings.cluster)

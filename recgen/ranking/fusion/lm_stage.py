"""The LM stage over the fused order: one implementation for evaluation (``-s fusion -p lm=…``) and serving.

What the fit layer (:mod:`recgen.fit.fusion_lm`) learned is an :class:`LMRerank`: a design and its LightGBM model.
``stacked`` re-orders each history's top :data:`~.lm_features.TOP_M` of the fused order from [fused score, fused
rank, LM features] (the order below them is kept); ``refit`` re-scores the whole pool with the fusion features
plus the LM's columns (NaN outside the top m). :class:`LMFusionStage` is a :class:`~.stage.FusionStage` whose
scores are the LM stage's, so ``order`` (``Recommender``, batch, the server) and ``score_all`` (the evaluation
harness) both go through :meth:`LMRerank.rescore`: the served scores are the evaluated ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..ranker import Ranker
from .features import FeatureBuilder, Group
from .lm_features import LMStackedRanker, compute_lm_features, stack_matrix, top_of_fused
from .model import FusionRanker
from .stage import FusionStage

#: The designs an LM stage can be served with (``none`` is no LM stage: the fused order is served unchanged).
DESIGNS = ("stacked", "refit")


@dataclass(frozen=True)
class LMRerank:
    """A fitted LM stage: ``design`` (one of :data:`DESIGNS`) and its model (an :class:`LMStackedRanker` for
    ``stacked``, a :class:`FusionRanker` with the LM columns for ``refit``)."""

    design: str
    model: FusionRanker

    def __post_init__(self):
        if self.design not in DESIGNS:
            raise ValueError(f"an LM stage design is one of {', '.join(DESIGNS)}, not {self.design!r}")

    @classmethod
    def load(cls, path: str | Path, design: str, sasrec: bool) -> "LMRerank":
        """The saved model, refused (ModelLoadError naming the file) when its features are not the design's."""
        if design == "stacked":
            return cls(design, LMStackedRanker.load(path))
        from .features import feature_names

        return cls(design, FusionRanker.load(path, feature_names(sasrec, use_lm=True)))

    def rescore(self, stage: FusionStage, scorer: Ranker, histories: list[np.ndarray], groups: list[Group],
                fused: list[np.ndarray], batch: int = 8, log=None) -> list[np.ndarray]:
        """Each group's scores after the LM stage (aligned with ``group.rows``), from the fused scores ``fused``.

        ``scorer`` runs the LM (its backend's ``score_labels``) on each history's fused top m."""
        ids = stage.sources.catalog.ids
        tops = [top_of_fused(g.rows, f) for g, f in zip(groups, fused)]
        lm = compute_lm_features(scorer, [[ids[i] for i in h] for h in histories], [None] * len(histories),
                                 [[ids[i] for i in g.rows[t]] for g, t in zip(groups, tops)], batch=batch, log=log)
        if self.design == "stacked":
            out = []
            for f, t, x in zip(fused, tops, lm):
                f = np.asarray(f, dtype=np.float64).copy()
                if len(t):
                    order = self.model.rerank(stack_matrix(f[t], x))
                    f[t[order]] = f[t].max() + np.arange(len(t), 0, -1, dtype=np.float64)
                out.append(f)
            return out
        maps = [dict(zip(g.rows[t].tolist(), x[:, 0].tolist())) for g, t, x in zip(groups, tops, lm)]
        refit = FeatureBuilder(stage.sources, stage.depth, use_lm=True).build(histories, lm=maps)
        out = []
        for g, r in zip(groups, refit):
            if not np.array_equal(g.rows, r.rows):  # the same sources and depth make the same pools
                raise RuntimeError("the LM stage's pool differs from the fused stage's")
            out.append(np.asarray(self.model.predict(r.X), dtype=np.float64) if len(r.rows) else np.zeros(0))
        return out


class LMFusionStage(FusionStage):
    """The fused stage with an LM stage on top: :meth:`groups` returns the LM stage's scores, so
    :meth:`order` and :meth:`score_all` serve and evaluate them. ``scorer``: a :class:`Ranker` over the LM the
    stage was fitted with and the prompt settings it was fitted with."""

    def __init__(self, sources, ranker: FusionRanker, depth: int, lm: LMRerank, scorer: Ranker, batch: int = 8,
                 items=None, cold_pin: int = 0):
        super().__init__(sources, ranker, depth, items, cold_pin)
        self.lm, self.scorer, self.batch = lm, scorer, int(batch)

    def base_groups(self, histories: list[np.ndarray]) -> tuple[list[Group], list[np.ndarray]]:
        """The fused order without the LM stage."""
        return super().groups(histories)

    def groups(self, histories, lm=None):
        groups, fused = self.base_groups(histories)
        return groups, self.lm.rescore(self, self.scorer, histories, groups, fused, batch=self.batch)

    def base_score_all(self, histories: list[np.ndarray]) -> np.ndarray:
        """:meth:`score_all` of the fused order without the LM stage (what the stacked design re-orders the top of)."""
        return FusionStage(self.sources, self.ranker, self.depth, self.items, self.cold_pin).score_all(histories)

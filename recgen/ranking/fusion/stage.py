"""The fused order: one implementation for serving (``Recommender``) and evaluation (``-s fusion``).

A :class:`FusionStage` holds fitted :class:`~.candidates.Sources`, the pool depth the ranker was chosen with
and the :class:`~.model.FusionRanker`. For a batch of histories it builds the merged pools and their feature
rows, then calls the booster ONCE for the whole batch (per-call overhead is most of LightGBM's cost on a
few hundred rows), and returns each history's candidates best first. Items outside a pool are never
returned by :meth:`order`; :meth:`score_all` (the evaluation harness's full ranking) puts them below every
pool item, in popularity order.

LM features (``lm_logprob``/``lm_rank``, see :mod:`.features`): pass ``lm`` (one ``{row: log-prob}`` per
history) when the ranker was fitted with them; :attr:`use_lm` says whether it was.
"""

from __future__ import annotations

import numpy as np

from .candidates import Sources
from .cold_pin import pin_cold
from .features import LM_FEATURES, FeatureBuilder, Group
from .item_features import ItemFeatures, groups_in
from .model import FusionRanker


class FusionStage:
    """Pool → features → LightGBM, batched."""

    def __init__(self, sources: Sources, ranker: FusionRanker, depth: int, items: ItemFeatures | None = None,
                 cold_pin: int = 0):
        """``items``: the item-representation groups the ranker was fitted with (extra ones are dropped);
        ``cold_pin``: cold candidates text ranks within this depth keep their text rank (:mod:`.cold_pin`)."""
        self.sources, self.ranker, self.depth, self.cold_pin = sources, ranker, int(depth), int(cold_pin)
        self.use_lm = any(name in ranker.feature_names for name in LM_FEATURES)
        wanted = groups_in(ranker.feature_names)
        items = self.items = (items or ItemFeatures()).subset(wanted)
        if items.groups != wanted:
            raise ValueError(f"the ranker needs the item representations {wanted}; given {items.groups}")
        self.builder = FeatureBuilder(sources, self.depth, use_lm=self.use_lm, items=items)
        if self.builder.names != ranker.feature_names:  # FusionRanker.load checks files; this checks objects
            raise ValueError(f"the ranker's features {ranker.feature_names} are not this stage's {self.builder.names}")

    def groups(self, histories: list[np.ndarray], lm: list[dict[int, float] | None] | None = None
               ) -> tuple[list[Group], list[np.ndarray]]:
        """Each history's candidate group and the ranker's score for every row of it (one booster call)."""
        groups = self.builder.build(histories, lm=lm)
        sizes = [len(g.rows) for g in groups]
        if not sum(sizes):
            return groups, [np.zeros(0) for _ in groups]
        scores = self.ranker.predict(np.concatenate([g.X for g in groups if len(g.rows)]))
        scores = np.split(scores, np.cumsum(sizes)[:-1])
        if self.cold_pin:
            names = self.builder.names
            text, pop = names.index("text_rank"), names.index("popularity_value")
            scores = [pin_cold(s, g.X[:, text], g.X[:, pop] == 0, self.cold_pin) for g, s in zip(groups, scores)]
        return groups, scores

    def order(self, histories: list[np.ndarray], n: int, exclude: list[set[int]] | None = None,
              lm: list[dict[int, float] | None] | None = None) -> list[list[tuple[int, float]]]:
        """Per history, up to ``n`` (catalog row, score) best first; never a history item or an ``exclude`` row.
        Ties keep the pool order (stable sort)."""
        groups, scores = self.groups(histories, lm)
        out = []
        for r, (group, score) in enumerate(zip(groups, scores)):
            skip = exclude[r] if exclude else set()
            ranked = []
            for i in np.argsort(-score, kind="stable"):
                row = int(group.rows[i])
                if row not in skip:
                    ranked.append((row, float(score[i])))
                    if len(ranked) == n:
                        break
            out.append(ranked)
        return out

    def score_all(self, histories: list[np.ndarray], lm: list[dict[int, float] | None] | None = None) -> np.ndarray:
        """[B, n_items] scores for full-ranking evaluation: pool items by the ranker, every other item below them."""
        pop = self.sources.popularity
        below = -1e9 + pop / (pop.max() + 1.0)
        out = np.tile(below.astype(np.float64), (len(histories), 1))
        groups, scores = self.groups(histories, lm)
        for r, (group, score) in enumerate(zip(groups, scores)):
            out[r, group.rows] = score
        return out

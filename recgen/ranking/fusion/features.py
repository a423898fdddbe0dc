"""Per-candidate features for the learned second stage: one row per pool item, columns named.

For every signal of :class:`~.candidates.Sources`: its value and its (capped) rank among the user's unseen
items; plus the pool rank, the share of the history's genres/categories the item carries, and the history
length. The LM hook: pass ``lm`` (one ``{catalog row: label log-prob}`` dict per user, computed elsewhere)
and the rows gain ``lm_logprob`` and ``lm_rank`` (its rank among the scored candidates); candidates the LM
did not score are NaN, which LightGBM treats as missing. A ranker fitted with LM features therefore needs
them at serving time: :class:`~.model.FusionRanker` checks the names. Item-representation groups
(:mod:`.item_features`: the item's text / LM embedding against the last items, its catalog PCA coordinates)
come after the base columns and before the LM hook's, when ``items`` is given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...retrieval.collaborative import history_weights
from .candidates import Pool, Sources
from .item_features import ItemFeatures, group_names

#: Signals whose value and rank become features (``sasrec`` only when the sources have a model).
SIGNALS = ("hybrid", "text", "transition", "neighbours", "last_item", "popularity", "recent_popularity", "sasrec")
LM_FEATURES = ("lm_logprob", "lm_rank")
#: Genre profile of a history: its ``GENRE_HISTORY`` most recent items, weighted ``GENRE_DECAY ** age``.
GENRE_HISTORY, GENRE_DECAY = 50, 0.9


@dataclass
class Group:
    """One user's candidates (catalog rows), their feature rows [len(rows), n_features] and pool ranks."""

    rows: np.ndarray
    X: np.ndarray
    pool_rank: np.ndarray

    def label(self, target: int) -> np.ndarray:
        return (self.rows == target).astype(np.float32)


def feature_names(sasrec: bool, use_lm: bool = False, item_groups=()) -> list[str]:
    """The column names of a layout: what a saved ranker is checked against before any source is built."""
    signals = [s for s in SIGNALS if s != "sasrec" or sasrec]
    names = [f"{s}_{kind}" for s in signals for kind in ("value", "rank")]
    names += ["pool_rank", "genre_overlap", "history_length"]
    names += [n for g in item_groups for n in group_names(g)]
    return names + (list(LM_FEATURES) if use_lm else [])


class FeatureBuilder:
    """Turns histories into candidate groups with a fixed, named feature layout."""

    def __init__(self, sources: Sources, depth: int, use_lm: bool = False, items: ItemFeatures | None = None):
        self.sources, self.depth, self.use_lm = sources, int(depth), bool(use_lm)
        self.items = items or ItemFeatures()
        self.signals = tuple(s for s in SIGNALS if s != "sasrec" or sources.sasrec is not None)

    @property
    def names(self) -> list[str]:
        return feature_names(self.sources.sasrec is not None, self.use_lm, self.items.groups)

    def build(self, histories: list[np.ndarray], lm: list[dict[int, float] | None] | None = None) -> list[Group]:
        """One :class:`Group` per history; ``lm`` (aligned with ``histories``) is required iff ``use_lm``."""
        if self.use_lm and lm is None:
            raise ValueError("this feature layout has LM features: pass lm=[{row: log-prob}, ...] per user")
        if lm is not None and len(lm) != len(histories):
            raise ValueError(f"lm has {len(lm)} entries for {len(histories)} histories")
        return self.build_pools(histories, self.sources.pools(histories, self.depth), lm)

    def build_pools(self, histories: list[np.ndarray], pools: list[Pool],
                    lm: list[dict[int, float] | None] | None = None) -> list[Group]:
        """Groups of pools already made (:meth:`Sources.pools` or :meth:`Sources.pools_for`)."""
        profiles = genre_profiles(self.sources, histories)
        groups = []
        for r, (hist, pool) in enumerate(zip(histories, pools)):
            cols = []
            for s in self.signals:
                cols += [pool.values[s], pool.ranks[s].astype(np.float32)]
            overlap = self.sources.genres[pool.rows] @ profiles[r] if profiles.shape[1] else np.zeros(len(pool.rows))
            cols += [pool.pool_rank.astype(np.float32), np.asarray(overlap, dtype=np.float32).ravel(),
                     np.full(len(pool.rows), len(hist), dtype=np.float32)]
            cols += self.items.columns(hist, pool.rows)
            if self.use_lm:
                cols += list(lm_columns(pool, lm[r] or {}))
            X = np.stack(cols, axis=1).astype(np.float32) if len(pool.rows) else np.zeros((0, len(self.names)),
                                                                                          dtype=np.float32)
            groups.append(Group(pool.rows, X, pool.pool_rank))
        return groups


def genre_profiles(sources: Sources, histories: list[np.ndarray]) -> np.ndarray:
    """[B, n_genres] recency-weighted genre shares of each history (rows sum to 1, or 0 without genres)."""
    weights = history_weights(histories, sources.n_items, GENRE_HISTORY, GENRE_DECAY)
    profile = np.asarray((weights @ sources.genres).todense(), dtype=np.float32)
    total = profile.sum(axis=1, keepdims=True)
    return np.divide(profile, total, out=np.zeros_like(profile), where=total > 0)


def lm_columns(pool: Pool, scores: dict[int, float]) -> tuple[np.ndarray, np.ndarray]:
    """(log-prob, rank among the LM-scored candidates) per pool row; NaN where the LM gave no score."""
    logprob = np.array([scores.get(int(row), np.nan) for row in pool.rows], dtype=np.float32)
    rank = np.full(len(pool.rows), np.nan, dtype=np.float32)
    scored = np.flatnonzero(~np.isnan(logprob))
    order = scored[np.argsort(-logprob[scored], kind="stable")]
    rank[order] = np.arange(1, len(order) + 1, dtype=np.float32)
    return logprob, rank

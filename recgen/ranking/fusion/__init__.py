"""The learned second stage: candidates merged from unlike sources, per-candidate features, a LightGBM ranker.

``candidates`` (fitted first-stage signals and the merged pool) → ``features`` (one row per candidate) →
``model`` (lambdarank, saved in LightGBM's own text format). Everything is fitted on training sequences;
the ranker is fitted on validation targets by the caller (see ``recgen.evaluation.systems.fusion``).
"""

from .candidates import POOL_SOURCES, RANK_CAP, Pool, Sources
from .features import FeatureBuilder, Group
from .model import FusionRanker

__all__ = ["POOL_SOURCES", "RANK_CAP", "Pool", "Sources", "FeatureBuilder", "Group", "FusionRanker"]

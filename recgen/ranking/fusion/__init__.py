"""The learned second stage: candidates merged from unlike sources, per-candidate features, a LightGBM ranker.

``candidates`` (fitted first-stage signals and the merged pool) → ``features`` (one row per candidate) →
``model`` (lambdarank, saved in LightGBM's own text format) → ``stage`` (the fused order, batched: what
serving and evaluation both call); ``request_stage`` does the same for a request in words with a history. Everything is fitted on training sequences;
the ranker is fitted on validation targets by the fit layer (see ``recgen.fit.fusion``).
"""

from .candidates import POOL_SOURCES, RANK_CAP, Pool, Sources, SourceStats
from .features import FeatureBuilder, Group, feature_names
from .model import FusionRanker
from .request_stage import REQUEST_DEPTH, RequestCandidates, RequestStage, request_candidates, request_feature_names
from .stage import FusionStage

__all__ = ["POOL_SOURCES", "RANK_CAP", "Pool", "SourceStats", "Sources", "FeatureBuilder", "Group", "feature_names",
           "FusionRanker", "FusionStage", "REQUEST_DEPTH", "RequestCandidates", "RequestStage", "request_candidates",
           "request_feature_names"]

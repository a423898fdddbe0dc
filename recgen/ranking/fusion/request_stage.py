"""The fused order for a request in words with a history: the request's candidates, re-ordered by a ranker
that sees both the collaborative signals and the request.

Without it a request keeps the retriever's request-first order (filters, then the blended history + request
score), because the history-only ranker was never shown a request and would order as if none was made. This
stage's ranker is fitted on groups that carry a request (the caller builds them from validation targets:
``recgen.fit.request_stage``): every feature of :mod:`.features` for the request's candidates plus

* ``request_cosine``: the item's text cosine to the request's words (NaN for a request that is only filters),
* ``request_order``: its position in the retriever's request-first order (1 = first),
* ``request_match``: 1 if it meets the request's filters, 0 for the closest non-matching items shown when too
  few match.

Items that meet the request always come before those that do not (the ranker orders each part), so a fitted
ranker can never trade what was asked for against the history.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...data.catalog import Catalog
from ...retrieval import Retriever
from .candidates import Sources
from .features import FeatureBuilder, Group, feature_names
from .model import FusionRanker

REQUEST_FEATURES = ("request_cosine", "request_order", "request_match")
#: How many of the retriever's request-first candidates the ranker re-orders (the rest keep their order).
REQUEST_DEPTH = 100


def request_feature_names(sasrec: bool) -> list[str]:
    return feature_names(sasrec) + list(REQUEST_FEATURES)


@dataclass
class RequestCandidates:
    """One request's candidates in the retriever's order (catalog rows), which of them meet its filters, and the
    embedding of its words (None when the request is only filters)."""

    rows: np.ndarray
    matched: np.ndarray
    vector: np.ndarray | None


def request_candidates(retriever: Retriever, history: list[str], query: str, n: int = REQUEST_DEPTH,
                       exclude: set[str] | None = None) -> RequestCandidates:
    """The retriever's request-first candidates (:meth:`Retriever.candidates`) as rows for this stage."""
    found = retriever.candidates(history, query, n=n, exclude=exclude)
    return from_candidates(retriever, found)


def from_candidates(retriever: Retriever, found) -> RequestCandidates:
    catalog: Catalog = retriever.catalog
    rows = np.fromiter((catalog.index_of(i) for i, _ in found.items), dtype=np.int64, count=len(found.items))
    matched = np.array([i not in found.unmatched for i, _ in found.items], dtype=bool)
    text = found.constraints.text if found.constraints is not None else None
    vector = retriever.embed_query(text) if text else None
    return RequestCandidates(rows, matched, vector)


class RequestStage:
    """Request candidates → features (history signals + request columns) → LightGBM, batched."""

    def __init__(self, sources: Sources, ranker: FusionRanker):
        self.sources, self.ranker = sources, ranker
        self.builder = FeatureBuilder(sources, REQUEST_DEPTH)
        names = request_feature_names(sources.sasrec is not None)
        if ranker.feature_names != names:
            raise ValueError(f"the request ranker's features {ranker.feature_names} are not this stage's {names}")

    def groups(self, histories: list[np.ndarray], requests: list[RequestCandidates]
               ) -> tuple[list[Group], list[np.ndarray]]:
        """Each request's group (rows in the retriever's order, history items dropped) and the ranker's scores."""
        groups = request_groups(self.sources, self.builder, histories, requests)
        sizes = [len(g.rows) for g in groups]
        if not sum(sizes):
            return groups, [np.zeros(0) for _ in groups]
        scores = self.ranker.predict(np.concatenate([g.X for g in groups if len(g.rows)]))
        return groups, np.split(scores, np.cumsum(sizes)[:-1])

    def order(self, histories: list[np.ndarray], requests: list[RequestCandidates]
              ) -> list[list[tuple[int, float]]]:
        """Per request, its candidates (row, score): those meeting the request first, each part by the ranker."""
        groups, scores = self.groups(histories, requests)
        return [[(int(group.rows[i]), float(score[i])) for i in matched_first(score, group.X[:, -1] > 0.5)]
                for group, score in zip(groups, scores)]


def matched_first(score: np.ndarray, matched: np.ndarray) -> np.ndarray:
    """Indices best first: every matching candidate before every other, each part by score (ties: given order)."""
    return np.lexsort((np.arange(len(score)), -np.asarray(score), ~np.asarray(matched, dtype=bool)))


def request_groups(sources: Sources, builder: FeatureBuilder, histories: list[np.ndarray],
                   requests: list[RequestCandidates]) -> list[Group]:
    """Feature groups of request candidates: the history features of :mod:`.features` + the request columns."""
    pools = sources.pools_for(histories, [r.rows for r in requests])
    out = []
    for group, request in zip(builder.build_pools(histories, pools), requests):
        position = {int(row): n for n, row in enumerate(request.rows)}
        where = np.array([position[int(row)] for row in group.rows], dtype=np.int64)
        cosine = (sources.emb[group.rows] @ request.vector if request.vector is not None
                  else np.full(len(group.rows), np.nan))
        extra = np.stack([np.asarray(cosine, dtype=np.float32), (where + 1).astype(np.float32),
                          request.matched[where].astype(np.float32)], axis=1) if len(group.rows) else np.zeros((0, 3))
        out.append(Group(group.rows, np.hstack([group.X, extra]).astype(np.float32), group.pool_rank))
    return out

"""Fusion: the learned second stage (``recgen.ranking.fusion``) as an evaluation system.

The fit is :class:`recgen.fit.fusion.FusionFitter`'s (no test target is read; see there for how the settings
are chosen on held-out validation users) and, with ``lm``, :class:`recgen.fit.fusion_lm.LMStage`'s. This adaptor
keeps the harness's system contract: ``score`` ranks the merged pool by the booster (:class:`FusionStage`, the
same code as ``Recommender``) and puts every other item below it (in popularity order).
"""

from __future__ import annotations

import numpy as np

from ...config import RecgenConfig
from ...fit.fusion import FusionFit, FusionFitter
from ...fit.fusion_lm import LMStage
from ...fit.store import fit_once
from ...pipeline import build_retriever
from ...ranking.fusion import REQUEST_DEPTH, request_candidates
from ...ranking.fusion.lm_features import TOP_M
from ..protocol import EvalData


class FusionSystem:
    name = "fusion"

    def __init__(self, config: RecgenConfig | dict | None = None, retriever=None, lm: str = "none",
                 lm_users: int = 800, lm_threads: int = 1, lm_design: str = "auto", **params) -> None:
        """``params``: :class:`FusionFitter`'s (depths, leaves, holdout, seed, sasrec, prefixes, requests, ...,
        retrieval settings); ``lm``: none | zeroshot | <adapter folder> (the LM stage)."""
        self.fitter = FusionFitter(config, retriever=retriever, **params)
        self.lm = None if lm == "none" else LMStage(lm, users=lm_users, seed=self.fitter.seed, threads=lm_threads,
                                                        design=lm_design)
        self.fitted: FusionFit | None = None
        self.fit_info: dict = {}

    def params(self) -> dict:
        return {**self.fitter.params(), **(self.lm.params() if self.lm else {"lm": "none"}), **self.fit_info}

    def fit(self, data: EvalData, log=None) -> None:
        self.fitted, stored = fit_once(self.fitter, data, log=log)  # a stored fit of the same key is reused
        self.fit_info = {**self.fitted.info, "stored_fit": stored}
        if self.lm:
            self.fit_info["lm_stage"] = self.lm.fit(self.fitter, self.fitted, data, log)

    # -- what the fit holds (the harness and tests read these) ---------------------------------------
    @property
    def config(self) -> RecgenConfig:
        return self.fitter.config

    @property
    def sources(self):
        return self.fitted.sources if self.fitted else None

    @property
    def ranker(self):
        return self.fitted.ranker if self.fitted else None

    @property
    def depth(self) -> int | None:
        return self.fitted.depth if self.fitted else None

    @property
    def stage(self):
        return self.fitted.stage if self.fitted else None

    @property
    def held_out(self) -> dict:
        return self.fitted.held_out if self.fitted else {}

    @property
    def request_ranker(self):
        return self.fitted.request_ranker if self.fitted else None

    @property
    def request_stage(self):
        return self.fitted.request_stage if self.fitted else None

    # -- scoring ------------------------------------------------------------------------------------
    def order_request(self, history: np.ndarray, query: str, k: int) -> list[int]:
        """A request with a history: the request stage's order when one was fitted and served, else the
        retriever's request-first order (catalog rows; the same rule as ``Recommender``)."""
        ids = self.sources.catalog.ids
        found = request_candidates(self.sources.retriever, [ids[i] for i in history], query, max(k, REQUEST_DEPTH))
        if self.request_stage is None:
            return [int(r) for r in found.rows[:k]]
        return [row for row, _ in self.request_stage.order([np.asarray(history)], [found])[0][:k]]

    @property
    def reorders_top(self) -> int | None:
        """The LM stage's stacked design re-orders only the fused top m (the harness may then skip users whose
        target cannot be there: ``score_rows``); None when the scores can change below it."""
        return TOP_M if self.lm is not None and self.lm.design == "stacked" else None

    def base_score(self, histories: list[np.ndarray]) -> np.ndarray:
        """The fused order without the LM stage (what the stacked design re-orders the top of)."""
        return self.stage.score_all(histories)

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        """The served fused order (:class:`FusionStage`, with the LM stage when one was fitted and kept: the same
        code as ``Recommender``) over all items."""
        if self.stage is None:
            raise RuntimeError("call fit() first")
        return (self.lm.stage(self.fitted) if self.lm else self.stage).score_all(histories)


def fusion_requests(data: EvalData, config: RecgenConfig, index_dir, log=None, **params):
    """``(recommend(history, query, k) -> item ids, fit info)`` for ``recgen eval requests --ranker fusion``: the
    fusion system with its request stage, fitted without test targets; a request with a history goes to the
    request stage, a history alone to the fused order, a request alone to the retriever (no history to fuse)."""
    catalog = data.dataset.catalog
    retriever = build_retriever(catalog, config.retrieval, index_dir=index_dir)
    system = FusionSystem(config, retriever=retriever, **{**params, "requests": True})
    system.fit(data, log=log)
    ids = catalog.ids

    def recommend(history: list[str], query: str | None, k: int) -> list[str]:
        rows = np.fromiter((catalog.index_of(i) for i in history), dtype=np.int64, count=len(history))
        if query and len(rows):
            return [ids[r] for r in system.order_request(rows, query, k)]
        if query:
            return [i for i, _ in system.sources.retriever.retrieve([], query, n=k)]
        return [ids[r] for r, _ in system.stage.order([rows], k)[0]]

    return recommend, {k: v for k, v in system.fit_info.items() if k in ("chosen", "request_stage", "stored_fit")}


__all__ = ["FusionSystem", "fusion_requests"]

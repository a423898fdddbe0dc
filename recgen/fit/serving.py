"""``recgen fit``'s work: every stage of a dataset fitted once for serving (one pass down the layers).

The settings (pool depth, leaves, prefix groups), the ranker and the request ranker come from
:class:`~recgen.fit.fusion.FusionFitter`'s selection on validation targets (no test target and no hand-set
constant); the served sources (transitions, co-occurrence neighbours, popularity) are then refitted on ALL
interactions. The ranker and SASRec are the ones fitted on the training part (SASRec reuses its cached
checkpoint when one matches): a serving-time history is the whole sequence, as a validation-time history was
the training part. That evaluation-split fit is stored (:mod:`recgen.fit.store`), so ``recgen eval run -s fusion``
and ``eval requests --ranker fusion`` on the same data, settings and code reuse it instead of fitting again.

With ``lm_stage`` (``recgen fit --lm-stage zeroshot|<adapter folder>``) the LM stage
(:mod:`recgen.fit.fusion_lm`) is fitted on the ranker's held-out users after it, and saved with the ranker only
when its guard passes (validation decides whether the LM gets weight); either way the fit info says what the
held-out users showed (``fit_info["lm_stage"]``).
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np

from ..config import RecgenConfig
from ..data.dataset import Dataset
from ..data.split_arrays import EvalData
from ..errors import DataError
from ..pipeline import FittedState, build_retriever
from ..progress import active
from ..ranking.fusion import SourceStats
from ..recommender import Recommender
from ..retrieval.cache import index_folder
from ..retrieval.embedder import Encoder
from .fusion import FusionFitter
from .fusion_lm import LMStage
from .request_stage import MIN_HELD_OUT_USERS
from .store import fit_once


def fit_for_serving(dataset: Dataset, config: RecgenConfig, *, sasrec: bool = False, threads: int = 2,
                    index_dir: str | Path | None = None, log=None, stage=None, lm_stage: str | None = None,
                    lm_users: int = 800, encode: Encoder | None = None) -> Recommender:
    """A recommender for serving ``dataset``, every stage fitted once (``recgen fit``).

    A dataset too small for a second stage is not an error: when the ranker cannot be fitted, or is below
    the hybrid order's NDCG@10 on the held-out users (at least :data:`MIN_HELD_OUT_USERS`), the state is saved
    without a ranker and the hybrid retrieval order is served (one warning). ``stage(name)`` is a context
    manager timing each stage. ``lm_stage``: ``zeroshot`` or a LoRA adapter folder of ``config.lm.model``, tried
    as an LM stage on ``lm_users`` held-out users (see the module doc); ``encode`` embeds the catalog elsewhere
    when the index must be built (the cluster's workers, :class:`~recgen.fit.cluster_embed.ClusterEncoder`)."""
    stage = stage or (lambda name: nullcontext())
    catalog = dataset.catalog
    with stage("index"):
        folder = index_dir or index_folder(dataset.name, catalog.fingerprint(), config.retrieval.embedder)
        retriever = build_retriever(catalog, config.retrieval, index_dir=folder, show_progress=active() is not None,
                                    encode=encode, chunk=config.fit.embed_checkpoint)
    fitted, fallback, served_lm = None, None, None
    data = EvalData.from_dataset(dataset)
    with stage("second stage (selection on validation)"):
        try:
            fitter = FusionFitter(config, retriever=retriever, sasrec=sasrec, threads=threads, requests=True)
            fitted, _ = fit_once(fitter, data, log=log)  # stored for evaluations too
        except DataError as exc:
            fallback = f"no second stage could be fitted on {dataset.name} ({exc}); the hybrid retrieval order is served"
            if log:
                log(fallback)
    with stage("serving sources (all interactions)"):
        state = FittedState.fit(dataset, config.retrieval)
        rows = [np.fromiter((catalog.index_of(i) for i in seq), dtype=np.int64, count=len(seq))
                for seq in dataset.sequences.values()]
        stats = SourceStats.fit(rows, len(catalog))
    if fitted is not None and (fitted.held_out["users"] < MIN_HELD_OUT_USERS
                               or fitted.held_out["fusion"] < fitted.held_out["hybrid"]):
        fallback = (f"the fused ranker is not served on {dataset.name}: held-out NDCG@10 "
                    f"{fitted.held_out['fusion']:.4f} vs {fitted.held_out['hybrid']:.4f} for the hybrid order over "
                    f"{fitted.held_out['users']} held-out users (it must be at least as good as the hybrid order, on at least "
                    f"{MIN_HELD_OUT_USERS} users); the hybrid retrieval order is served")
        if log:
            log(fallback)
        fitted = None
    info = dict(fitted.info) if fitted is not None else {}
    # chunks reused / embedded (None: the saved index was loaded, nothing embedded)
    info["index_embedding"] = retriever.embedding_report
    if fitted is not None and lm_stage:
        with stage("LM stage (guarded on validation)"):
            info["lm_stage"], served_lm = _fit_lm_stage(lm_stage, lm_users, threads, fitter, fitted, data, log)
    if fitted is not None:
        state = state.with_second_stage(stats, fitted.ranker, fitted.depth, fitted.sources.sasrec, info,
                                        request_ranker=fitted.request_ranker, lm_stage=served_lm)
    else:
        state = state.with_second_stage(stats, None, 0, fit_info=info, fallback=fallback)
    return Recommender(catalog, config, retriever=retriever, state=state)


def _fit_lm_stage(spec: str, users: int, threads: int, fitter: FusionFitter, fitted, data: EvalData, log):
    """(what the held-out users showed, the stage to serve or None when the guard kept the LM out)."""
    lm = LMStage(spec, users=users, seed=fitter.seed, threads=threads)
    try:
        info = lm.fit(fitter, fitted, data, log=log)
    except DataError as exc:  # too few held-out users with the target in the fused top m: no evidence, no weight
        info = {"design": "none", "why": str(exc)}
    served = lm.served()
    if log:
        log(f"LM stage: {'served, ' + served.describe() if served else 'not served'} (guard: {info.get('guard')})")
    return {**info, "served": served is not None}, served

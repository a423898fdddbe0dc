"""Fitting the request stage (``recgen.ranking.fusion.request_stage``): a ranker for a request in words with a
history, on groups that carry a request built from each user's **validation** target (no test target).

A seeded sample of ``users`` users, each with requests from :class:`~recgen.data.requests.RequestBuilder` (two
draws of a positive request, distinct texts kept, plus a negative where the catalog has genres), history =
training items, candidates = the retriever's request-first top :data:`REQUEST_DEPTH`. The users/held-out split
is the main ranker's. Served only if its held-out NDCG@10 is at least the request-first order's (on at least
:data:`MIN_HELD_OUT_USERS` groups).
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.requests import RequestBuilder
from ..data.split_arrays import EvalData
from ..errors import DataError
from ..metrics import ndcg_gains
from ..progress import task
from ..ranking.fusion import (
    REQUEST_DEPTH,
    FeatureBuilder,
    FusionRanker,
    RequestStage,
    Sources,
    request_candidates,
    request_feature_names,
)
from ..ranking.fusion.request_stage import matched_first, request_groups
from .checkpoints import FeatureCheckpoints
from .ranker_training import LocalRankerTrainer, RankerTrainer

#: Fewer held-out users than this cannot tell a ranker from the hybrid order: the hybrid order is served.
MIN_HELD_OUT_USERS = 20


@dataclass(frozen=True)
class RequestFit:
    """The request stage's fit report and, when it is served, its ranker (as its file holds it) and stage."""

    info: dict
    ranker: FusionRanker | None = None
    stage: RequestStage | None = None


def fit_request_stage(sources: Sources, data: EvalData, held: np.ndarray, model_path: Path, *, leaves: list[int],
                      seed: int, users: int, batch: int, max_rounds: int, threads: int, log=None,
                      trainer: RankerTrainer | None = None, saved: FeatureCheckpoints | None = None) -> RequestFit:
    """Fit, choose the number of leaves among ``leaves`` on the held-out groups, and save beside ``model_path``;
    ``trainer`` runs each LightGBM trial (default: this process; a checkpointing one in ``recgen fit``) and
    ``saved`` keeps each batch of request features (a restarted fit reuses them)."""
    trainer = trainer or LocalRankerTrainer()
    started = time.perf_counter()
    catalog, ids = data.dataset.catalog, data.dataset.catalog.ids
    builder, requests = FeatureBuilder(sources, REQUEST_DEPTH), RequestBuilder(catalog)
    rng = np.random.default_rng(seed + 2)
    chosen = np.sort(rng.choice(data.n_users, size=min(users, data.n_users), replace=False))
    words = random.Random(seed)
    cases = []  # (position, history rows, request text, target row)
    for p in chosen:
        history = data.history("valid", int(p))
        target = data.target("valid", int(p))
        item = catalog.get(ids[target])
        # two draws of a positive request (another genre or title word when the target has one) and a negative
        made = [requests.positive(item, words), requests.positive(item, words),
                requests.negative(item, [catalog.get(ids[i]) for i in history[-10:]], words)]
        texts = dict.fromkeys(r.text for r in made if r is not None)
        cases += [(int(p), history, text, target) for text in texts if len(history)]
    names = request_feature_names(sources.sasrec is not None)
    retriever = sources.retriever

    def build(part) -> tuple[list, np.ndarray]:
        """The part's feature groups and each request's target position in its candidates (0: not found)."""
        retriever.warm_queries([text for _, _, text, _ in part])  # one encoder call per 64 texts
        found = [request_candidates(retriever, [ids[i] for i in h], text, REQUEST_DEPTH) for _, h, text, _ in part]
        groups = request_groups(sources, builder, [h for _, h, _, _ in part], found)
        at = [np.flatnonzero(cand.rows == target) for (_, _, _, target), cand in zip(part, found)]
        return groups, np.array([int(a[0]) + 1 if len(a) else 0 for a in at], dtype=np.int64)

    train, valid, first = [], [], []
    with task("request stage features (requests)", total=len(cases)) as advance:
        for start in range(0, len(cases), batch):
            part = cases[start:start + batch]
            if saved is None:
                groups, positions = build(part)
            else:
                what = "request stage " + hashlib.sha256("\0".join(t for _, _, t, _ in part).encode()).hexdigest()[:16]
                key = FeatureCheckpoints.key(what, REQUEST_DEPTH, names, [p for p, _, _, _ in part])
                groups, positions = saved.tagged_groups(key, lambda: build(part))  # noqa: B023 (called at once)
            for (p, _, _, target), group, position in zip(part, groups, positions):
                y = group.label(target)
                if held[p]:
                    valid.append((group.X, y))
                    first.append(int(position))
                elif y.any():
                    train.append((group.X, y))
            advance(len(part))
    info = {"requests": len(cases), "users": int(len(chosen)), "train_groups_with_target": len(train),
            "held_out_groups": len(valid)}
    trials = []
    for n_leaves in dict.fromkeys(leaves):  # the fewest groups of any model here: choose again
        try:
            with task(f"LightGBM request-stage trial: {n_leaves} leaves (rounds)", total=max_rounds) as advance:
                ranker = trainer.train(train, valid, names, num_leaves=n_leaves, max_rounds=max_rounds,
                                       threads=threads, seed=seed, log=log, callbacks=[lambda env: advance()])
        except DataError as exc:
            return RequestFit({**info, "served": False, "why": str(exc),
                               "seconds": round(time.perf_counter() - started, 1)})
        trials.append((float(ndcg_gains([_request_rank(ranker, X, y) for X, y in valid]).mean()), n_leaves, ranker))
    fused, n_leaves, ranker = max(trials, key=lambda t: (t[0], -t[1]))
    info["leaves_held_out_ndcg@10"] = {str(n): round(score, 5) for score, n, _ in trials}
    request_first = float(ndcg_gains(first).mean())
    served = len(valid) >= MIN_HELD_OUT_USERS and fused >= request_first
    info.update({"held_out_ndcg@10": round(fused, 5), "request_first_held_out_ndcg@10": round(request_first, 5),
                 "served": served, "ranker": ranker.info, "importance": ranker.importance(),
                 "seconds": round(time.perf_counter() - started, 1)})
    loaded = None
    if served:
        path = model_path.with_name(f"{model_path.stem}-request.txt")
        ranker.save(path)
        loaded = FusionRanker.load(path, names)
        info["ranker"]["file"] = str(path)
    if log:
        log(f"fusion request stage: {info}")
    return RequestFit(info, loaded, RequestStage(sources, loaded) if loaded is not None else None)


def _request_rank(ranker: FusionRanker, X: np.ndarray, y: np.ndarray) -> int:
    """The target's rank in the request stage's order (matching items first, each part by score); 0 if absent."""
    if not y.any():
        return 0
    order = matched_first(ranker.predict(X), X[:, -1] > 0.5)
    return int(np.flatnonzero(y[order])[0]) + 1

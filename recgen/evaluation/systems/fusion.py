"""Fusion: the learned second stage (``recgen.ranking.fusion``) as an evaluation system.

``fit`` never sees a test target. Every signal (text index, transitions, co-occurrence neighbours,
popularity) is fitted on the training sequences; the ranker learns from one group per user with
history = training items and label = the **validation** item. A seeded ``holdout`` share of the users is
kept out of the ranker's training: LightGBM early-stops on their NDCG@10, and the pool depth and number of
leaves are the settings with the best held-out NDCG@10 over *all* held-out users (a target outside the pool
counts 0), so no per-dataset constant is needed. Extra training groups (chosen only if they help the held-out
users; ``prefixes`` are the numbers of shifts tried): each training user's earlier items ``train[-k]`` (k = 1..s) as targets, with history
``train[:-k]`` and every sequence-fitted signal refitted on all sequences cut at ``-k``, so no signal has
seen those targets either (off with SASRec, which was trained on the full training sequences). ``score`` ranks the merged pool by the booster and puts
every other item below it (in popularity order).

The ranker is saved in LightGBM's text format under ``cache_dir()/fusion`` and read back through
:meth:`FusionRanker.load` (the path a served model will take), so what is scored is what a file holds.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from ...config import RecgenConfig
from ...data.dataset import Dataset
from ...errors import DataError
from ...paths import cache_dir
from ...pipeline import FittedState, build_retriever
from ...ranking.fusion import (
    POOL_SOURCES,
    REQUEST_DEPTH,
    FeatureBuilder,
    FusionRanker,
    FusionStage,
    RequestStage,
    Sources,
    SourceStats,
    feature_names,
    request_candidates,
    request_feature_names,
)
from ...ranking.fusion.lm_features import TOP_M
from ...ranking.fusion.request_stage import matched_first, request_groups
from ...recommender import Recommender
from ...retrieval.cache import index_folder
from ..protocol import EvalData
from ..requests import RequestBuilder
from .fusion_lm import LMStage, ndcg_gains
from .sasrec import SASRecBaseline

RECALL_AT = (20, 50, 100)
#: Fewer held-out users than this cannot tell a ranker from the hybrid order: the hybrid order is served.
MIN_HELD_OUT_USERS = 20


class FusionSystem:
    name = "fusion"

    def __init__(self, config: RecgenConfig | dict | None = None, retriever=None, depths=(20, 50, 100),
                 leaves=(15, 63), holdout: float = 0.2, seed: int = 0, max_rounds: int = 500, threads: int = 2,
                 sasrec: bool = False, prefixes=(3, 10), batch: int = 256, lm: str = "none", lm_users: int = 800,
                 lm_threads: int = 1, lm_design: str = "auto", requests: bool = False, request_users: int = 5000,
                 **retrieval) -> None:
        base = config if isinstance(config, RecgenConfig) else RecgenConfig.validated(config or {}, "fusion config")
        self.config = base.updated("retrieval parameters", retrieval=retrieval)
        self._index = retriever
        self.depths = sorted(int(d) for d in depths)
        self.leaves = [int(n) for n in leaves]
        if not self.depths or not self.leaves:
            raise ValueError("depths and leaves need at least one value each")
        if not 0 < holdout < 1:
            raise ValueError("holdout must be a share between 0 and 1")
        self.holdout, self.seed, self.max_rounds, self.threads = float(holdout), int(seed), int(max_rounds), int(threads)
        self.use_sasrec, self.batch = bool(sasrec), int(batch)
        self.prefixes = sorted(int(k) for k in prefixes if int(k) > 0)
        self.ranker: FusionRanker | None = None
        self.sources: Sources | None = None
        self.stage: FusionStage | None = None
        self.fit_info: dict = {}
        self.held_out: dict = {}
        #: the request stage (``requests=True``): a ranker for a request in words with a history
        self.fit_requests, self.request_users = bool(requests), int(request_users)
        self.request_ranker: FusionRanker | None = None
        self.request_stage: RequestStage | None = None
        # the LM stage (fusion_lm.py): lm=none | zeroshot | <adapter folder>
        self.lm = None if lm == "none" else LMStage(lm, users=lm_users, seed=seed, threads=lm_threads,
                                                        design=lm_design)

    def params(self) -> dict:
        return {"retrieval": self.config.retrieval.model_dump(), "depths": self.depths, "leaves": self.leaves,
                "holdout": self.holdout, "seed": self.seed, "max_rounds": self.max_rounds, "sasrec": self.use_sasrec, "prefixes": self.prefixes,
                "fitted_on": "signals: training sequences; ranker: validation targets (history = training items) and, "
                              "when chosen, earlier training targets with signals refitted on the cut sequences",
                **(self.lm.params() if self.lm else {"lm": "none"}), **self.fit_info}

    # -- fitting ------------------------------------------------------------------------------------
    def _sources(self, data: EvalData, log) -> Sources:
        catalog, settings = data.dataset.catalog, self.config.retrieval
        state = FittedState.fit(data.train_dataset(), settings)
        folder = None if self._index is not None else index_folder(data.dataset.name, catalog.fingerprint(),
                                                                     settings.embedder)
        retriever = build_retriever(catalog, settings, transitions=state.transitions, index_dir=folder,
                                    retriever=self._index)
        model = None
        if self.use_sasrec:
            sas = SASRecBaseline()
            sas.fit(data, log=log)
            model = sas.model
        return Sources(catalog, retriever, data.train_sequences(), sasrec=model)

    def fit(self, data: EvalData, log=None) -> None:
        started = time.perf_counter()
        self.sources = self._sources(data, log)
        sources_s = time.perf_counter() - started
        deepest = self.depths[-1]
        builder = FeatureBuilder(self.sources, deepest)
        rng = np.random.default_rng(self.seed)
        held = np.zeros(data.n_users, dtype=bool)
        held[rng.choice(data.n_users, size=max(1, int(round(self.holdout * data.n_users))), replace=False)] = True
        train, valid = [], []  # train: (X, y, pool_rank) with a positive; valid: (X, y, pool_rank) for every user
        target_ranks = {s: [] for s in (*self.sources.pool_sources, "pool")}
        t0 = time.perf_counter()
        everyone = range(data.n_users)
        histories = lambda ps: [data.history("valid", p) for p in ps]
        for positions, groups in self._groups(builder, everyone, histories, log):
            for p, group in zip(positions, groups):
                y = group.label(data.target("valid", p))
                hit = np.flatnonzero(y)
                for s in self.sources.pool_sources:
                    col = builder.names.index(f"{s}_rank")
                    target_ranks[s].append(int(group.X[hit[0], col]) if len(hit) else deepest + 1)
                target_ranks["pool"].append(int(group.pool_rank[hit[0]]) if len(hit) else deepest + 1)
                if held[p]:
                    valid.append((group.X, y, group.pool_rank))
                elif len(hit):
                    train.append((group.X, y, group.pool_rank))
        features_s = time.perf_counter() - t0
        ks = sorted(k for k in {*RECALL_AT, *self.depths} if k <= deepest)
        recall = {s: {f"recall@{k}": round(float(np.mean(np.asarray(r) <= k)), 4) for k in ks}
                  for s, r in target_ranks.items()}
        mean_pool = {d: round(float(np.mean([np.sum(g[2] <= d) for g in valid])), 1) for d in self.depths}

        # settings on held-out users: depth (validation groups only), then prefix groups, then leaves
        t0 = time.perf_counter()
        trials, best = [], None

        prefix, counts = [], {}

        def trial(depth, leaves, shifts):
            nonlocal best
            extra = prefix[:counts[shifts]] if shifts else []  # groups of shifts 1..shifts come first
            ranker, score = self._trial(train + extra, valid, builder.names, depth, leaves, log)
            trials.append({"depth": depth, "num_leaves": leaves, "prefix_shifts": shifts,
                           "held_out_ndcg@10": round(score, 5), "best_iteration": ranker.info["best_iteration"]})
            if best is None or score > best[0]:
                best = (score, depth, leaves, shifts, ranker)

        for depth in self.depths:
            trial(depth, self.leaves[0], 0)
        select_s = time.perf_counter() - t0
        # extra groups from earlier targets of the training users, at the chosen depth; more shifts are only
        # computed while the last increase helped the held-out users (on Beauty 3 shifts did not: the 10-shift
        # features, ~2/3 of the prefix cost, are then never built)
        t0 = time.perf_counter()
        last, prefix_s = 0, 0.0
        for shifts in self.prefixes if self.sources.sasrec is None else ():
            if best[3] != last:
                break
            p0 = time.perf_counter()
            prefix += self._prefix_groups(data, held, best[1], range(last + 1, shifts + 1), log)
            counts[shifts] = len(prefix)
            prefix_s += time.perf_counter() - p0
            if counts[shifts]:
                trial(best[1], self.leaves[0], shifts)
            last = shifts
        for leaves in self.leaves[1:]:
            trial(best[1], leaves, best[3])
        select_s += time.perf_counter() - t0 - prefix_s
        score, self.depth, leaves, shifts, ranker = best
        hybrid = np.asarray(target_ranks["hybrid"])[held]  # the hybrid retrieval's rank of each held-out target
        self.held_out = {"fusion": score, "hybrid": float(np.mean(np.where(hybrid <= 10, 1 / np.log2(hybrid + 1), 0))),
                         "users": int(held.sum())}
        path = self._model_path(data)
        ranker.save(path)
        self.ranker = FusionRanker.load(path, feature_names(self.sources.sasrec is not None))  # what the file holds
        self.stage = FusionStage(self.sources, self.ranker, self.depth)
        self.fit_info = {
            "chosen": {"depth": self.depth, "num_leaves": leaves, "prefix_shifts": shifts,
                       "held_out_ndcg@10": round(score, 5),
                       "hybrid_order_held_out_ndcg@10": round(self.held_out["hybrid"], 5)},
            "selection": trials, "valid_recall": recall, "mean_pool_size": mean_pool,
            "ranker": {**ranker.info, "file": str(path)}, "importance": ranker.importance(),
            "users": {"train": int((~held).sum()), "held_out": int(held.sum()), "train_groups_with_target": len(train),
                      "prefix_groups_with_target_by_shifts": counts},
            "fit_seconds": {"sources": round(sources_s, 1), "features": round(features_s, 1), "prefix_features": round(prefix_s, 1),
                            "selection": round(select_s, 1)},
        }
        if log:
            log(f"fusion: chose depth {self.depth}, {leaves} leaves, prefix shifts {shifts} "
                f"(held-out NDCG@10 {score:.4f}); recall {recall}")
        if self.fit_requests:
            self.fit_info["request_stage"] = self._fit_request_stage(data, held, leaves, log)
        if self.lm:
            self.fit_info["lm_stage"] = self.lm.fit(self, data, held, log)

    def _fit_request_stage(self, data: EvalData, held: np.ndarray, leaves: int, log) -> dict:
        """The request ranker, on groups that carry a request: a seeded sample of ``request_users`` users, each
        with requests built from their **validation** target's attributes (:class:`RequestBuilder`: two draws of a
        positive request, distinct texts kept, plus a negative where the catalog has genres), history = training items, candidates = the retriever's
        request-first top :data:`REQUEST_DEPTH`. The ranker's users/held-out split is the main ranker's. Served
        only if its held-out NDCG@10 is at least the request-first order's (on at least MIN_HELD_OUT_USERS)."""
        started = time.perf_counter()
        catalog, ids = data.dataset.catalog, data.dataset.catalog.ids
        builder, requests = FeatureBuilder(self.sources, REQUEST_DEPTH), RequestBuilder(catalog)
        rng = np.random.default_rng(self.seed + 2)
        users = np.sort(rng.choice(data.n_users, size=min(self.request_users, data.n_users), replace=False))
        words = random.Random(self.seed)
        cases = []  # (position, history rows, request text, target row)
        for p in users:
            history = data.history("valid", int(p))
            target = data.target("valid", int(p))
            item = catalog.get(ids[target])
            # two draws of a positive request (another genre or title word when the target has one) and a negative
            made = [requests.positive(item, words), requests.positive(item, words),
                    requests.negative(item, [catalog.get(ids[i]) for i in history[-10:]], words)]
            texts = dict.fromkeys(r.text for r in made if r is not None)
            cases += [(int(p), history, text, target) for text in texts if len(history)]
        train, valid, first = [], [], []
        retriever = self.sources.retriever
        for start in range(0, len(cases), self.batch):
            batch = cases[start:start + self.batch]
            retriever.warm_queries([text for _, _, text, _ in batch])  # one encoder call per 64 texts
            found = [request_candidates(retriever, [ids[i] for i in h], text, REQUEST_DEPTH) for _, h, text, _ in batch]
            groups = request_groups(self.sources, builder, [h for _, h, _, _ in batch], found)
            for (p, _, _, target), group, cand in zip(batch, groups, found):
                y = group.label(target)
                if held[p]:
                    valid.append((group.X, y))
                    at = np.flatnonzero(cand.rows == target)
                    first.append(int(at[0]) + 1 if len(at) else 0)
                elif y.any():
                    train.append((group.X, y))
        names = request_feature_names(self.sources.sasrec is not None)
        info = {"requests": len(cases), "users": int(len(users)), "train_groups_with_target": len(train),
                "held_out_groups": len(valid)}
        trials = []
        for n_leaves in dict.fromkeys([*self.leaves, leaves]):  # the fewest groups of any model here: choose again
            try:
                ranker = FusionRanker.train(train, valid, names, num_leaves=n_leaves, max_rounds=self.max_rounds,
                                            threads=self.threads, seed=self.seed, log=log)
            except DataError as exc:
                return {**info, "served": False, "why": str(exc), "seconds": round(time.perf_counter() - started, 1)}
            trials.append((float(ndcg_gains([_request_rank(ranker, X, y) for X, y in valid]).mean()), n_leaves, ranker))
        fused, leaves, ranker = max(trials, key=lambda t: (t[0], -t[1]))
        info["leaves_held_out_ndcg@10"] = {str(n): round(score, 5) for score, n, _ in trials}
        request_first = float(ndcg_gains(first).mean())
        served = len(valid) >= MIN_HELD_OUT_USERS and fused >= request_first
        info.update({"held_out_ndcg@10": round(fused, 5), "request_first_held_out_ndcg@10": round(request_first, 5),
                     "served": served, "ranker": ranker.info, "importance": ranker.importance(),
                     "seconds": round(time.perf_counter() - started, 1)})
        if served:
            path = self._model_path(data).with_name(f"{self._model_path(data).stem}-request.txt")
            ranker.save(path)
            self.request_ranker = FusionRanker.load(path, names)
            self.request_stage = RequestStage(self.sources, self.request_ranker)
            info["ranker"]["file"] = str(path)
        if log:
            log(f"fusion request stage: {info}")
        return info

    def order_request(self, history: np.ndarray, query: str, k: int) -> list[int]:
        """A request with a history: the request stage's order when one was fitted and served, else the
        retriever's request-first order (catalog rows; the same rule as ``Recommender``)."""
        ids = self.sources.catalog.ids
        found = request_candidates(self.sources.retriever, [ids[i] for i in history], query, max(k, REQUEST_DEPTH))
        if self.request_stage is None:
            return [int(r) for r in found.rows[:k]]
        return [row for row, _ in self.request_stage.order([np.asarray(history)], [found])[0][:k]]

    def _prefix_groups(self, data: EvalData, held: np.ndarray, depth: int, shifts, log) -> list:
        """Groups with target = train[-k], history = train[:-k] for each k in ``shifts``, training users only,
        every sequence-fitted signal refitted on all sequences cut at -k (so none has seen those targets)."""
        out = []
        for k in shifts:
            cut = [seq[:-k] for seq in data.train_sequences()]
            builder = FeatureBuilder(self.sources.refit(cut), depth)
            users = [p for p in range(data.n_users) if not held[p] and len(cut[p]) > 0]
            for positions, groups in self._groups(builder, users, lambda ps: [cut[p] for p in ps], log):
                for p, group in zip(positions, groups):
                    y = group.label(int(data.train[p][-k]))
                    if y.any():
                        out.append((group.X, y, group.pool_rank))
        return out

    def _groups(self, builder: FeatureBuilder, positions, histories, log):
        """(positions, groups) per batch of users."""
        positions = list(positions)
        for start in range(0, len(positions), self.batch):
            batch = positions[start:start + self.batch]
            yield batch, builder.build(histories(batch))
            if log and start // self.batch % 20 == 0:
                log(f"fusion: features for {start + len(batch):,}/{len(positions):,} users")

    def _trial(self, train, valid, names, depth, leaves, log) -> tuple[FusionRanker, float]:
        """A ranker on pools cut to ``depth``, and its NDCG@10 over all held-out users."""
        cut = lambda groups: [(X[pr <= depth], y[pr <= depth]) for X, y, pr in groups]
        ranker = FusionRanker.train(cut(train), cut(valid), names, num_leaves=leaves, max_rounds=self.max_rounds,
                                    threads=self.threads, seed=self.seed, log=log)
        gains = []
        for X, y in cut(valid):
            if not y.any():
                gains.append(0.0)
                continue
            s = ranker.predict(X)
            rank = int(np.sum(s >= s[np.flatnonzero(y)[0]]))  # ties count against the target
            gains.append(1.0 / np.log2(rank + 1) if rank <= 10 else 0.0)
        return ranker, float(np.mean(gains))

    def _model_path(self, data: EvalData):
        key = hashlib.sha256(json.dumps({"catalog": data.dataset.catalog.fingerprint(), "users": data.n_users,
                                         "params": {k: v for k, v in self.params().items() if k in
                                                    ("retrieval", "depths", "leaves", "holdout", "seed", "sasrec", "prefixes")}},
                                        sort_keys=True, default=str).encode()).hexdigest()[:12]
        return cache_dir() / "fusion" / f"{data.dataset.name}-{key}.txt"

    # -- scoring ------------------------------------------------------------------------------------
    @property
    def reorders_top(self) -> int | None:
        """The LM stage's stacked design re-orders only the fused top m (the harness may then skip users whose
        target cannot be there: ``score_rows``); None when the scores can change below it."""
        return TOP_M if self.lm is not None and self.lm.design == "stacked" else None

    def base_score(self, histories: list[np.ndarray]) -> np.ndarray:
        """The fused order without the LM stage (what the stacked design re-orders the top of)."""
        return self.stage.score_all(histories)

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        """The served fused order (:class:`FusionStage`, the same code as ``Recommender``) over all items."""
        if self.stage is None:
            raise RuntimeError("call fit() first")
        out = self.stage.score_all(histories)
        return self.lm.rerank(self, histories, out) if self.lm else out


def _request_rank(ranker: FusionRanker, X: np.ndarray, y: np.ndarray) -> int:
    """The target's rank in the request stage's order (matching items first, each part by score); 0 if absent."""
    if not y.any():
        return 0
    order = matched_first(ranker.predict(X), X[:, -1] > 0.5)
    return int(np.flatnonzero(y[order])[0]) + 1


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

    return recommend, {k: v for k, v in system.fit_info.items() if k in ("chosen", "request_stage")}


def fit_for_serving(dataset: Dataset, config: RecgenConfig, *, sasrec: bool = False, threads: int = 2,
                    index_dir: str | Path | None = None, log=None, stage=None) -> Recommender:
    """A recommender for serving ``dataset``, every stage fitted once (``recgen fit``).

    The settings (pool depth, leaves, prefix groups), the ranker and the request ranker come from
    :class:`FusionSystem`'s selection on validation targets (no test target and no hand-set constant); the served sources
    (transitions, co-occurrence neighbours, popularity) are then refitted on ALL interactions. The ranker and
    SASRec are the ones fitted on the training part (SASRec reuses its cached checkpoint when one matches):
    a serving-time history is the whole sequence, as a validation-time history was the training part.
    A dataset too small for a second stage is not an error: when the ranker cannot be fitted, or is below
    the hybrid order's NDCG@10 on the held-out users (at least :data:`MIN_HELD_OUT_USERS`), the state is saved
    without a ranker and the hybrid retrieval order is served (one warning). ``stage(name)`` is a context manager timing each stage."""
    stage = stage or (lambda name: nullcontext())
    catalog = dataset.catalog
    with stage("index"):
        folder = index_dir or index_folder(dataset.name, catalog.fingerprint(), config.retrieval.embedder)
        retriever = build_retriever(catalog, config.retrieval, index_dir=folder)
    system, fallback = None, None
    with stage("second stage (selection on validation)"):
        try:
            system = FusionSystem(config, retriever=retriever, sasrec=sasrec, threads=threads, requests=True)
            system.fit(EvalData.from_dataset(dataset), log=log)
        except DataError as exc:
            fallback = f"no second stage could be fitted on {dataset.name} ({exc}); the hybrid retrieval order is served"
            if log:
                log(fallback)
    with stage("serving sources (all interactions)"):
        state = FittedState.fit(dataset, config.retrieval)
        rows = [np.fromiter((catalog.index_of(i) for i in seq), dtype=np.int64, count=len(seq))
                for seq in dataset.sequences.values()]
        stats = SourceStats.fit(rows, len(catalog))
    if system is not None and (system.held_out["users"] < MIN_HELD_OUT_USERS
                               or system.held_out["fusion"] < system.held_out["hybrid"]):
        fallback = (f"the fused ranker is not served on {dataset.name}: held-out NDCG@10 "
                    f"{system.held_out['fusion']:.4f} vs {system.held_out['hybrid']:.4f} for the hybrid order over "
                    f"{system.held_out['users']} held-out users (it must be at least as good as the hybrid order, on at least "
                    f"{MIN_HELD_OUT_USERS} users); the hybrid retrieval order is served")
        if log:
            log(fallback)
        system = None
    if system is not None:
        state = state.with_second_stage(stats, system.ranker, system.depth, system.sources.sasrec, system.fit_info,
                                        request_ranker=system.request_ranker)
    else:
        state = state.with_second_stage(stats, None, 0, fallback=fallback)
    return Recommender(catalog, config, retriever=retriever, state=state)


__all__ = ["FusionSystem", "POOL_SOURCES", "fit_for_serving", "fusion_requests"]

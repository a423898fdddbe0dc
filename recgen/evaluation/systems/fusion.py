"""Fusion: the learned second stage (``recgen.ranking.fusion``) as an evaluation system.

``fit`` never sees a test target. Every signal (text index, transitions, co-occurrence neighbours,
popularity) is fitted on the training sequences; the ranker learns from one group per user with
history = training items and label = the **validation** item. A seeded ``holdout`` share of the users is
kept out of the ranker's training: LightGBM early-stops on their NDCG@10, and the pool depth and number of
leaves are the settings with the best held-out NDCG@10 over *all* held-out users (a target outside the pool
counts 0), so no per-dataset constant is needed. ``score`` ranks the merged pool by the booster and puts
every other item below it (in popularity order).

The ranker is saved in LightGBM's text format under ``cache_dir()/fusion`` and read back through
:meth:`FusionRanker.load` (the path a served model will take), so what is scored is what a file holds.
"""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np

from ...config import RecgenConfig
from ...paths import cache_dir
from ...pipeline import FittedState, build_retriever
from ...ranking.fusion import POOL_SOURCES, FeatureBuilder, FusionRanker, Sources
from ...retrieval.cache import index_folder
from ..protocol import EvalData
from .sasrec import SASRecBaseline

RECALL_AT = (20, 50, 100)


class FusionSystem:
    name = "fusion"

    def __init__(self, config: RecgenConfig | dict | None = None, retriever=None, depths=(20, 50, 100),
                 leaves=(15, 63), holdout: float = 0.2, seed: int = 0, max_rounds: int = 500, threads: int = 2,
                 sasrec: bool = False, batch: int = 256, **retrieval) -> None:
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
        self.ranker: FusionRanker | None = None
        self.fit_info: dict = {}

    def params(self) -> dict:
        return {"retrieval": self.config.retrieval.model_dump(), "depths": self.depths, "leaves": self.leaves,
                "holdout": self.holdout, "seed": self.seed, "max_rounds": self.max_rounds, "sasrec": self.use_sasrec,
                "fitted_on": "signals: training sequences; ranker: validation targets (history = training items)",
                **self.fit_info}

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
        pool_sizes = []
        t0 = time.perf_counter()
        for start in range(0, data.n_users, self.batch):
            positions = range(start, min(start + self.batch, data.n_users))
            histories = [data.history("valid", p) for p in positions]
            for p, group in zip(positions, builder.build(histories)):
                target = data.target("valid", p)
                y = group.label(target)
                hit = np.flatnonzero(y)
                for s in self.sources.pool_sources:
                    col = builder.names.index(f"{s}_rank")
                    target_ranks[s].append(int(group.X[hit[0], col]) if len(hit) else deepest + 1)
                target_ranks["pool"].append(int(group.pool_rank[hit[0]]) if len(hit) else deepest + 1)
                pool_sizes.append(len(group.rows))
                if held[p]:
                    valid.append((group.X, y, group.pool_rank))
                elif len(hit):
                    train.append((group.X, y, group.pool_rank))
            if log and start // self.batch % 20 == 0:
                log(f"fusion: features for {positions.stop:,}/{data.n_users:,} users")
        features_s = time.perf_counter() - t0
        ks = sorted(k for k in {*RECALL_AT, *self.depths} if k <= deepest)
        recall = {s: {f"recall@{k}": round(float(np.mean(np.asarray(r) <= k)), 4) for k in ks}
                  for s, r in target_ranks.items()}
        mean_pool = {d: round(float(np.mean([np.sum(g[2] <= d) for g in valid])), 1) for d in self.depths}

        t0 = time.perf_counter()
        trials = []
        best = None
        plan = [(d, self.leaves[0]) for d in self.depths]
        for step in range(2):
            for depth, leaves in plan:
                ranker, score = self._trial(train, valid, builder.names, depth, leaves, log)
                trials.append({"depth": depth, "num_leaves": leaves, "held_out_ndcg@10": round(score, 5),
                               "best_iteration": ranker.info["best_iteration"]})
                if best is None or score > best[0]:
                    best = (score, depth, leaves, ranker)
            plan = [(best[1], n) for n in self.leaves[1:]] if step == 0 else []
        select_s = time.perf_counter() - t0
        score, self.depth, leaves, ranker = best
        self.builder = FeatureBuilder(self.sources, self.depth)
        path = self._model_path(data)
        ranker.save(path)
        self.ranker = FusionRanker.load(path, self.builder.names)  # serve what the file holds
        self.fit_info = {
            "chosen": {"depth": self.depth, "num_leaves": leaves, "held_out_ndcg@10": round(score, 5)},
            "selection": trials, "valid_recall": recall, "mean_pool_size": mean_pool,
            "ranker": {**ranker.info, "file": str(path)}, "importance": ranker.importance(),
            "users": {"train": int((~held).sum()), "held_out": int(held.sum()), "train_groups_with_target": len(train)},
            "fit_seconds": {"sources": round(sources_s, 1), "features": round(features_s, 1),
                            "selection": round(select_s, 1)},
        }
        if log:
            log(f"fusion: chose depth {self.depth}, {leaves} leaves (held-out NDCG@10 {score:.4f}); recall {recall}")

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
                                                    ("retrieval", "depths", "leaves", "holdout", "seed", "sasrec")}},
                                        sort_keys=True, default=str).encode()).hexdigest()[:12]
        return cache_dir() / "fusion" / f"{data.dataset.name}-{key}.txt"

    # -- scoring ------------------------------------------------------------------------------------
    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        if self.ranker is None:
            raise RuntimeError("call fit() first")
        pop = self.sources.popularity
        below = -1e9 + pop / (pop.max() + 1.0)  # outside the pool: below every candidate, by popularity
        out = np.tile(below.astype(np.float64), (len(histories), 1))
        for r, group in enumerate(self.builder.build(histories)):
            if len(group.rows):
                out[r, group.rows] = self.ranker.predict(group.X)
        return out


__all__ = ["FusionSystem", "POOL_SOURCES"]

"""A ranker trial on a Dask cluster: ``lightgbm.DaskLGBMRanker`` (data-parallel LightGBM across the workers).

The training groups are split into one partition per worker on **query-group boundaries** (a group never spans two
workers), and ``group=`` is a Dask array whose chunks are the group sizes of exactly those partitions. Early
stopping is the local trainer's rule (stop 30 rounds after the best held-out NDCG@10, keep the best iteration) on
**all** held-out groups: LightGBM computes a metric on each machine's own validation rows only, so the standard
``early_stopping`` callback on a split validation set would stop the workers at different rounds and hang their
collective; :class:`HeldOutSet` instead gives every worker the whole held-out set, so all of them see the
same score for the same (synchronised) trees and stop together.

Why results differ slightly from the single-process ranker: in data-parallel LightGBM each machine finds the
feature bin boundaries for its share of the features from its own rows, so the histograms are not bit-identical
to one process's; the tolerance is measured in ``tests/test_cluster_fit.py``.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Sequence

import numpy as np

from ..config import ClusterSettings
from ..errors import DataError
from ..ranking.fusion import FusionRanker
from ..ranking.fusion.model import BASE_PARAMS, stack_groups
from .cluster import check_workers, connect, watch, workers

PATIENCE = 30  # the local trainer's (FusionRanker.train) patience
HELD_OUT = "held_out"


class HeldOutSet:
    """LightGBM callback, before the first round: add every held-out group as a validation Dataset binned like the
    training set, so each worker's booster scores the whole held-out set (kept up to date round by round)."""

    before_iteration = True
    order = 0

    def __init__(self, X: np.ndarray, y: np.ndarray, sizes: list[int]) -> None:
        self.X, self.y, self.sizes = X, y, list(sizes)

    def __call__(self, env) -> None:
        import lightgbm as lgb

        if env.iteration == env.begin_iteration:
            env.model.add_valid(lgb.Dataset(self.X, self.y, group=self.sizes, reference=env.model.train_set), HELD_OUT)


class HeldOutStopping:
    """LightGBM callback, after each round: the local trainer's early stopping on that set's NDCG@10 (stop
    ``patience`` rounds after the best, keep the best; LightGBM's own metric)."""

    order = 30

    def __init__(self, patience: int = PATIENCE) -> None:
        self.patience, self.best_score, self.best_iter = int(patience), -np.inf, 0

    def __call__(self, env) -> None:
        import lightgbm as lgb

        score = next(float(r[2]) for r in env.evaluation_result_list if r[0] == HELD_OUT and r[1] == "ndcg@10")
        if score > self.best_score:
            self.best_score, self.best_iter = score, env.iteration
        if env.iteration - self.best_iter >= self.patience or env.iteration == env.end_iteration - 1:
            raise lgb.callback.EarlyStopException(self.best_iter, [(HELD_OUT, "ndcg@10", self.best_score, True)])


class DaskRankerTrainer:
    """Ranker trials on the Dask cluster at ``settings.address`` (connected and checked when constructed, so a
    wrong address fails before the slow local stages)."""

    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings
        self.client = connect(settings)
        #: the workers the fit started with: one that leaves (during a trial or between two) stops the fit
        self.workers = workers(self.client)

    def close(self) -> None:
        self.client.close()

    def partitions(self, sizes: list[int]) -> list[slice]:
        """Contiguous runs of groups, one per worker, with about equal rows (never splitting a group)."""
        n = max(1, min(len(self.workers), len(sizes)))
        ends = np.cumsum(sizes)
        cuts = np.searchsorted(ends, ends[-1] * np.arange(1, n) / n, side="left") + 1
        bounds = [0, *sorted(set(int(c) for c in cuts if 0 < c < len(sizes))), len(sizes)]
        return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]

    def _arrays(self, X: np.ndarray, y: np.ndarray, sizes: list[int]):
        """Dask arrays X, y, group on group-aligned partitions, each partition scattered to its own worker."""
        import dask.array as da

        where = self.workers
        row_ends = np.concatenate([[0], np.cumsum(sizes)])
        xs, ys, gs = [], [], []
        for i, part in enumerate(self.partitions(sizes)):
            a, b = int(row_ends[part.start]), int(row_ends[part.stop])
            g = np.asarray(sizes[part], dtype=np.int64)
            fx, fy, fg = self.client.scatter([X[a:b], y[a:b], g], workers=[where[i % len(where)]])
            xs.append(da.from_delayed(fx, shape=(b - a, X.shape[1]), dtype=X.dtype))
            ys.append(da.from_delayed(fy, shape=(b - a,), dtype=y.dtype))
            gs.append(da.from_delayed(fg, shape=(len(g),), dtype=g.dtype))
        return da.concatenate(xs), da.concatenate(ys), da.concatenate(gs)

    def train(self, train, valid, feature_names: Sequence[str], *, num_leaves: int, max_rounds: int, threads: int,
              seed: int, log: Callable[[str], None] | None = None, callbacks: Sequence[Callable] = ()) -> FusionRanker:
        """As :meth:`FusionRanker.train`, on the cluster (``threads``: each worker uses its own ``nthreads``;
        ``callbacks``, this process's progress, are not sent to the workers)."""
        X, y, sizes = stack_groups(train)
        Xv, yv, sizes_v = stack_groups(valid)
        if not sizes or not sizes_v:
            raise DataError("too few users whose target is among the candidates to fit a second-stage ranker "
                            f"({len(sizes)} training, {len(sizes_v)} held-out groups); serve the hybrid order")
        import lightgbm as lgb

        check_workers(self.client, self.workers, "the LightGBM ranker trials")
        names = list(feature_names)
        params = {k: v for k, v in BASE_PARAMS.items() if k != "eval_at"}
        model = lgb.DaskLGBMRanker(client=self.client, n_estimators=int(max_rounds), num_leaves=int(num_leaves),
                                   seed=int(seed), **params)
        stopping = [HeldOutSet(Xv, yv, sizes_v), HeldOutStopping()]

        def fit() -> None:  # the scatter too: a worker can leave between the check above and the training
            dX, dy, dg = self._arrays(X, y, sizes)
            model.fit(dX, dy, group=dg, eval_at=[10], feature_name=names, callbacks=stopping)

        with contextlib.redirect_stdout(sys.stderr):  # lightgbm.dask prints progress to stdout (keeps --json clean)
            watch(self.client, fit, "LightGBM ranker training", expected=self.workers)
        booster = model.booster_
        booster.best_iteration = int(model.best_iteration_ or booster.current_iteration())
        info = {"num_leaves": int(num_leaves), "best_iteration": int(booster.best_iteration),
                "held_out_ndcg@10_in_pool": float(model.best_score_["held_out"]["ndcg@10"])
                if "held_out" in (model.best_score_ or {}) else None,
                "train_groups": len(sizes), "train_rows": int(len(y)), "held_out_groups": len(sizes_v),
                "trained_on": f"Dask cluster, {len(self.partitions(sizes))} partitions on {len(self.workers)} workers"}
        if log:
            log(f"fusion ranker (cluster): {info}")
        return FusionRanker(booster, names, info)

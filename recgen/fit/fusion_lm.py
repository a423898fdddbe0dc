"""The LM stage of the fusion fit (``-p lm=zeroshot`` or ``-p lm=<adapter folder>``): what the LM adds, learned.

Fitting, after the no-LM fusion ranker is fitted: a seeded subset of ``lm_users`` of the users that ranker was
NOT trained on (its held-out users, so their fused scores are as honest as at test) gets the LM's features on
the top :data:`~recgen.ranking.fusion.lm_features.TOP_M` of the fused order, at the validation stage (history =
training items, label = validation item; no test target is read). Two designs are compared by 4-fold
cross-validation over those users (each fold early-stops on, and is scored on, its held-out quarter; full-ranking
NDCG@10, a target outside the list counts 0):

* ``stacked``: a small lambdarank model on [fused score, fused rank, LM log-prob, LM rank, LM probability] that
  re-orders the top m (the fused order is kept below them);
* ``refit``: the fusion ranker refitted on the same users with its own features plus the LM columns (NaN outside
  the top m), scoring the whole pool;

with two controls recorded alongside: the fused order itself and ``stacked`` without the LM columns. The design
with the better CV score is used (its fold-0 model, saved in LightGBM text format) only if it beats the fused
order with confidence: over the users' out-of-fold NDCG@10, the one-sided 95 % paired-bootstrap lower bound
of (design − fused order) must be above 0 (:data:`GUARD_LEVEL`). Otherwise the fused order is served unchanged.
The rule was fixed before the Beauty ablation ran, after a CV mean gain of +0.0015 on 189 ml-100k users turned
into a significant test loss: a mean over a few hundred groups is not enough evidence to give an LM weight. Scoring re-runs the LM on
each test user's top m (memoized on disk under ``cache_dir()/lmfuse``).

Fitted here, with the fusion fit it extends. Evaluation and serving score with the same code
(:class:`~recgen.ranking.fusion.lm_stage.LMFusionStage`): ``recgen fit --lm-stage`` saves the stage with the ranker
when the guard passes (:meth:`LMStage.served`: the model, the LM's identity and the prompt settings) and
``recommend``, ``batch`` and ``serve`` then use it.
"""

from __future__ import annotations

import time

import numpy as np

from ..config import LMSettings, PromptSettings, RankingSettings, RecgenConfig
from ..data.split_arrays import EvalData
from ..errors import ConfigError, DataError
from ..lm.factory import make_backend
from ..lm.identity import identify
from ..metrics import ndcg_gains, paired_bootstrap, target_rank
from ..paths import cache_dir
from ..pipeline import LMStageState
from ..ranking.fusion import FeatureBuilder, FusionRanker, FusionStage
from ..ranking.fusion.lm_features import (
    TOP_M,
    DiskScoreMemo,
    LMStackedRanker,
    compute_lm_features,
    memo_path,
    stack_matrix,
    top_of_fused,
)
from ..ranking.fusion.lm_stage import LMFusionStage, LMRerank
from ..ranking.ranker import Ranker
from .fusion import FusionFit, FusionFitter

FOLDS = 4
GUARD_LEVEL = 0.90  # two-sided level whose lower bound is the one-sided 95 % bound used by the guard
BELOW_POOL = -1e8  # the fused order scores items outside the pool below this


class LMStage:
    """Built from the fusion system's ``lm`` parameter: ``zeroshot`` or a LoRA adapter folder.

    ``design``: ``auto`` (served: the best of stacked / refit / no LM stage by cross-validation) or a forced
    ``stacked`` / ``refit`` (the ablation: what the LM's features do on test even when validation says no)."""

    DESIGNS = ("auto", "stacked", "refit")

    def __init__(self, spec: str, users: int = 800, seed: int = 0, threads: int = 1, batch: int = 8,
                 design: str = "auto"):
        if design not in self.DESIGNS:
            raise ConfigError(f"lm_design must be one of {', '.join(self.DESIGNS)}, not {design!r}")
        self.spec, self.users, self.seed, self.threads, self.batch = str(spec), int(users), int(seed), int(threads), int(batch)
        self.forced = None if design == "auto" else design
        self.adapter = None if self.spec == "zeroshot" else self.spec
        self.ranker: Ranker | None = None
        self.design: str | None = None
        self.model = None  # LMStackedRanker or FusionRanker (refit)
        self.lm_builder: FeatureBuilder | None = None
        self.memo: DiskScoreMemo | None = None
        self.lm_settings: LMSettings | None = None  # the LM scored with, and the prompts it was shown
        self.prompt: PromptSettings | None = None

    def params(self) -> dict:
        return {"lm": self.spec, "lm_users": self.users, "lm_threads": self.threads, "top_m": TOP_M,
                "lm_design": self.forced or "auto"}

    def fit_users(self, held: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """The seeded subset of the fusion ranker's held-out users whose validation groups fit the LM stage."""
        rng = rng or np.random.default_rng(self.seed + 1)
        candidates = np.flatnonzero(held)
        return np.sort(rng.choice(candidates, size=min(self.users, len(candidates)), replace=False))

    def _load_lm(self, config: RecgenConfig, fitted: FusionFit) -> None:
        changes = {"threads": self.threads, "adapter": self.adapter}
        config = config.updated("lm stage", lm=changes)
        self.lm_settings, self.prompt = config.lm, config.prompt
        self.memo = DiskScoreMemo(make_backend(config.lm),
                                  memo_path(cache_dir() / "lmfuse", config.lm.model, config.lm.adapter))
        self.ranker = Ranker(fitted.sources.catalog, self.memo, config.prompt, RankingSettings())

    def _features(self, fitted: FusionFit, histories, fused_rows, log=None) -> list[np.ndarray]:
        ids = fitted.sources.catalog.ids
        return compute_lm_features(self.ranker, [[ids[i] for i in h] for h in histories], [None] * len(histories),
                                   [[ids[i] for i in rows] for rows in fused_rows], batch=self.batch, log=log)

    # -- fitting ------------------------------------------------------------------------------------
    def fit(self, fitter: FusionFitter, fitted: FusionFit, data: EvalData, log=None) -> dict:
        """Fit on ``fitted``'s held-out users (the fused order's settings are ``fitter``'s); the fit report."""
        started = time.perf_counter()
        self._load_lm(fitter.config, fitted)
        rng = np.random.default_rng(self.seed + 1)
        pick = self.fit_users(fitted.held, rng)
        histories = [data.history("valid", int(p)) for p in pick]
        targets = [data.target("valid", int(p)) for p in pick]
        groups, fused = fitted.stage.groups(histories)
        tops = [top_of_fused(g.rows, f) for g, f in zip(groups, fused)]
        calls_before = self.memo.calls
        t0 = time.perf_counter()
        lm = self._features(fitted, histories, [g.rows[t] for g, t in zip(groups, tops)], log)
        lm_s = time.perf_counter() - t0
        lm_calls = self.memo.calls - calls_before

        # per user: stacked rows (with / without LM), labels over the top m, and the fused rank of the target
        stacked = [stack_matrix(f[t], x) for f, t, x in zip(fused, tops, lm)]
        plain = [X[:, :2] for X in stacked]
        y_top = [(g.rows[t] == tg).astype(np.float32) for g, t, tg in zip(groups, tops, targets)]
        fused_rank = [target_rank(f, g.label(tg)) for g, f, tg in zip(groups, fused, targets)]
        self.lm_builder = FeatureBuilder(fitted.sources, fitted.depth, use_lm=True)
        lm_maps = [dict(zip(g.rows[t].tolist(), x[:, 0].tolist())) for g, t, x in zip(groups, tops, lm)]
        refit_groups = self.lm_builder.build(histories, lm=lm_maps)
        refit_xy = [(g.X, g.label(tg)) for g, tg in zip(refit_groups, targets)]
        leaves = fitted.leaves

        fold = np.arange(len(pick)) % FOLDS
        rng.shuffle(fold)
        cv = {"fused": [], "stacked_no_lm": [], "stacked": [], "refit": []}
        oof = {k: [] for k in cv}  # out-of-fold per-user gains, for the guard's paired test
        models = {}
        t0 = time.perf_counter()
        for f in range(FOLDS):
            tr, va = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
            try:
                scored = self._fold(fitter, tr, va, stacked, plain, y_top, fused_rank, refit_xy, leaves)
            except DataError:  # no user of this fold (or of the others) has the target in the top m
                continue
            fused_gains = ndcg_gains([fused_rank[i] for i in va])
            cv["fused"].append(float(fused_gains.mean()))
            oof["fused"].append(fused_gains)
            for name, (gains, model) in scored.items():
                cv[name].append(float(gains.mean()))
                oof[name].append(gains)
                models.setdefault(name, model)
        if not models:
            raise DataError(f"too few of the {len(pick)} LM-scored users have their validation target in the fused "
                            f"top {TOP_M} to fit the LM stage; raise lm_users")
        fit_s = time.perf_counter() - t0
        means = {k: round(float(np.mean(v)), 5) for k, v in cv.items()}
        best = self.forced or ("stacked" if means["stacked"] >= means["refit"] else "refit")
        guard = lm_guard(np.concatenate(oof[best]), np.concatenate(oof["fused"]))
        if self.forced is None and not guard["passed"]:
            # the LM has not earned weight: serve the fused order unchanged (a weak LM cannot make lists worse)
            self.design, self.model = "none", None
            info = {"design": "none", "candidate": best, "guard": guard, "cv_ndcg@10": means, "users": len(pick),
                    "lm_calls": lm_calls, "lm_seconds": round(lm_s, 1),
                    "total_seconds": round(time.perf_counter() - started, 1)}
            if log:
                log(f"fusion lm stage: the {best} LM design does not beat the fused order with confidence on "
                    f"validation; no LM stage ({info})")
            return info
        self.design = best
        self.model = models[self.design]
        path = fitted.model_path.with_name(f"{fitted.model_path.stem}-lm-{self.design}-"
                                           f"{self.memo.path.stem.split('-')[-1]}.txt")
        self.model.save(path)
        trained = self.model.info
        self.model = (LMStackedRanker.load(path) if self.design == "stacked"
                      else FusionRanker.load(path, self.lm_builder.names))
        self.model.info = trained
        info = {"design": self.design, "guard": guard, "cv_ndcg@10": means, "cv_folds": {k: [round(x, 5) for x in v] for k, v in cv.items()},
                "users": len(pick), "groups_with_target_in_top_m": int(sum(y.any() for y in y_top)),
                "model": {**self.model.info, "file": str(path)}, "importance": self.model.importance(),
                "lm_calls": lm_calls, "lm_seconds": round(lm_s, 1),
                "lm_seconds_per_user": round(lm_s / max(1, lm_calls), 3) if lm_calls else None,
                "fit_seconds": round(fit_s, 1), "total_seconds": round(time.perf_counter() - started, 1),
                "memo": str(self.memo.path), "memo_rows_loaded": self.memo.loaded}
        if log:
            log(f"fusion lm stage: {info}")
        return info

    def _fold(self, fitter: FusionFitter, tr, va, stacked, plain, y_top, fused_rank, refit_xy, leaves) -> dict:
        """(held-out per-user NDCG@10 gains, model) per design, trained on users ``tr``, early-stopped on and scored on ``va``."""
        out = {}
        for name, rows in (("stacked", stacked), ("stacked_no_lm", plain)):
            model = LMStackedRanker.fit([(rows[i], y_top[i]) for i in tr], [(rows[i], y_top[i]) for i in va],
                                        use_lm=name == "stacked", threads=fitter.threads, seed=self.seed)
            out[name] = (ndcg_gains([_stacked_rank(model, rows[i], y_top[i], fused_rank[i]) for i in va]), model)
        refit = FusionRanker.train([refit_xy[i] for i in tr], [refit_xy[i] for i in va], self.lm_builder.names,
                                   num_leaves=leaves, max_rounds=fitter.max_rounds, threads=fitter.threads,
                                   seed=self.seed)
        out["refit"] = (ndcg_gains([target_rank(refit.predict(refit_xy[i][0]), refit_xy[i][1]) for i in va]),
                        refit)
        return out

    # -- scoring (the same stage serving builds from the saved state) ----------------------------------
    @property
    def rerank(self) -> LMRerank | None:
        """The fitted LM stage, or None before :meth:`fit` and when validation gave the LM no weight."""
        return None if self.design in (None, "none") else LMRerank(self.design, self.model)

    def stage(self, fitted: FusionFit) -> FusionStage:
        """``fitted``'s fused stage with this LM stage on top (the fused stage itself when there is none)."""
        if self.rerank is None:
            return fitted.stage
        return LMFusionStage(fitted.sources, fitted.ranker, fitted.depth, self.rerank, self.ranker, batch=self.batch,
                             items=fitted.stage.items, cold_pin=fitted.stage.cold_pin)

    def served(self) -> LMStageState | None:
        """What ``recgen fit`` saves with the ranker: the model, the LM's identity (checked when a folder is
        loaded) and the prompt settings the LM's scores were computed with; None without an LM stage."""
        if self.rerank is None:
            return None
        return LMStageState(self.rerank, identify(self.lm_settings.model, self.lm_settings.adapter), self.prompt)


def lm_guard(design: np.ndarray, fused: np.ndarray, seed: int = 0) -> dict:
    """Does an LM design beat the fused order with confidence? Paired bootstrap over the same users' out-of-fold
    NDCG@10; passes when the one-sided 95 % lower bound of the mean difference is above 0."""
    diff, ci, p = paired_bootstrap(design, fused, n_boot=10000, seed=seed, level=GUARD_LEVEL)
    return {"passed": bool(ci[0] > 0), "mean_diff": round(diff, 5), "lower_bound_95_one_sided": round(ci[0], 5),
            "p_two_sided": round(p, 4), "users": int(len(design))}


def top_rows(out: np.ndarray) -> list[np.ndarray]:
    """Each row's top :data:`TOP_M` items (catalog rows, best first) among its pool (scores above BELOW_POOL)."""
    tops = []
    for r in range(len(out)):
        top = np.argsort(-out[r], kind="stable")[:TOP_M]
        tops.append(top[out[r, top] > BELOW_POOL])
    return tops


def _stacked_rank(model: LMStackedRanker, X: np.ndarray, y: np.ndarray, fused_rank: int) -> int:
    """The target's rank after re-ordering the top m (its fused rank when it is below them)."""
    if not y.any():
        return fused_rank  # below the top m (gain 0 at @10) or outside the pool (0)
    order = model.rerank(X)
    return int(np.flatnonzero(y[order])[0]) + 1

"""Fitting the learned second stage (``recgen.ranking.fusion``) without a test target.

Every signal (text index, transitions, co-occurrence neighbours, popularity) is fitted on the training
sequences; the ranker learns from one group per user with history = training items and label = the
**validation** item. A seeded ``holdout`` share of the users is kept out of the ranker's training: LightGBM
early-stops on their NDCG@10, and the pool depth and number of leaves are the settings with the best held-out
NDCG@10 over *all* held-out users (a target outside the pool counts 0), so no per-dataset constant is needed.
Extra training groups (chosen only if they help the held-out users; ``prefixes`` are the numbers of shifts
tried): each training user's earlier items ``train[-k]`` (k = 1..s) as targets, with history ``train[:-k]``
and every sequence-fitted signal refitted on all sequences cut at ``-k``, so no signal has seen those targets
either (off with SASRec, which was trained on the full training sequences).

Cost that stops growing with users: held-out users are scored in a seeded order only until the NDCG@10
estimate is as precise as the choice needs (:data:`HELD_OUT_RULE`); training users join in a seeded, doubling
sample while the held-out NDCG@10 still rises beyond its noise (:data:`LEARNING_CURVE_RULE`, the curve is in
``info["learning_curve"]``), and prefix groups are built for that sample only. Groups are stored once
(:class:`~recgen.ranking.fusion.groups.GroupSet`); a trial gets one stacked copy of its cut.

The ranker is saved in LightGBM's text format under ``cache_dir()/fusion`` and read back through
:meth:`FusionRanker.load` (the path a served model takes), so what is scored is what a file holds. The result
is a frozen :class:`FusionFit`: the settings trials are a list and the choice is their ``max``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import RecgenConfig
from ..data.split_arrays import EvalData
from ..metrics import ndcg_gains, target_rank
from ..paths import cache_dir
from ..pipeline import FittedState, build_retriever
from ..progress import active, task
from ..ranking.fusion import FeatureBuilder, FusionRanker, FusionStage, RequestStage, Sources, feature_names
from ..ranking.fusion.cold_pin import PIN_DEPTHS, pin_cold
from ..ranking.fusion.groups import GroupSet
from ..ranking.fusion.item_features import ITEM_GROUPS, ItemFeatures, item_features
from ..retrieval.cache import index_folder
from .checkpoints import CheckpointedTrainer, FeatureCheckpoints
from .ranker_training import LocalRankerTrainer, RankerTrainer, ranker_trainer
from .request_stage import RequestFit, fit_request_stage
from .sasrec import SASRecFitter

RECALL_AT = (20, 50, 100)
#: the learning curve's first sample of training users; each step doubles it (up to all training users); it stops
#: when a doubling's held-out NDCG@10 gain is not above CURVE_SES standard errors (paired over held-out users:
#: the conventional ~95 % one-sided bar for "beyond noise")
FIRST_SAMPLE, CURVE_SES = 2048, 2.0
LEARNING_CURVE_RULE = (f"training users in a seeded order, {FIRST_SAMPLE} then doubling; stop when the held-out "
                       f"NDCG@10 gain of a doubling (paired over the held-out users) is not above {CURVE_SES:g} "
                       "standard errors; the last step's sample is kept")
#: held-out users are scored (seeded order) until the hybrid order's NDCG@10 over them has a standard error of at
#: most HELD_OUT_RSE of its mean (at least MIN_HELD_OUT users; at most the ``holdout`` share)
HELD_OUT_RSE, MIN_HELD_OUT = 0.02, 1000
HELD_OUT_RULE = (f"held-out users in a seeded order until the hybrid order's NDCG@10 over them has a standard error "
                 f"<= {HELD_OUT_RSE:.0%} of its mean (at least {MIN_HELD_OUT}; at most the holdout share)")
#: Item-representation groups tried by default: the text vectors (free: the retriever's). The LM's own vectors
#: (``lmrep``) are tried when asked for: one pass of the LM per item title, ~1 s per item on 2 loaded cores
#: for SmolLM2-135M (hours for a 12k-item catalog here; minutes on a GPU), cached per item after that.
DEFAULT_ITEM_GROUPS = ("textrep",)


@dataclass(frozen=True)
class Trial:
    """One settings trial on the held-out users (the choice is the first best by ``score``)."""

    depth: int
    leaves: int
    shifts: int
    score: float
    gains: np.ndarray  # per scored held-out user (paired comparisons between trials)
    scores: np.ndarray  # per held-out row of the cut to ``depth``, in chunk order (the cold pin re-orders these)
    ranker: FusionRanker

    def as_json(self) -> dict:
        return {"depth": self.depth, "num_leaves": self.leaves, "prefix_shifts": self.shifts,
                "held_out_ndcg@10": round(self.score, 5), "best_iteration": self.ranker.info["best_iteration"]}


@dataclass(frozen=True)
class FusionFit:
    """What a fusion fit produced: the fitted sources, the chosen ranker (as its file holds it) and stage, the
    held-out users and their scores, and the fit report (``info``, what ``recgen fit`` saves)."""

    sources: Sources
    ranker: FusionRanker
    depth: int
    stage: FusionStage
    held: np.ndarray  # bool per user position: kept out of the ranker's training
    held_out: dict  # held-out NDCG@10 of the fused order ("fusion") and the hybrid order ("hybrid"); "users"
    model_path: Path
    info: dict
    request: RequestFit | None = None
    items: ItemFeatures = ItemFeatures()  # the item-representation groups the ranker was chosen with

    @property
    def leaves(self) -> int:
        return self.info["chosen"]["num_leaves"]

    @property
    def request_ranker(self) -> FusionRanker | None:
        return self.request.ranker if self.request else None

    @property
    def request_stage(self) -> RequestStage | None:
        return self.request.stage if self.request else None


def choose_cold_pin(gains: dict[int, np.ndarray]) -> tuple[int, dict]:
    """The deepest cold-item pin whose held-out NDCG@10 is not below the unpinned order's beyond noise (paired over
    the held-out users: mean change >= -CURVE_SES standard errors), and the report of every depth.

    Why a noise bar and not "costs nothing": the ranker learns from validation targets, which are almost never cold
    items, so it sinks them (measured on the cold-item protocol); held-out users can show a pin's cost to warm users
    but hardly its gain, and one unlucky warm user must not switch off what every cold item needs."""
    base = min(gains)
    report: dict = {"held_out_ndcg@10": {}, "change_vs_off": {}, "rule": (
        f"the deepest depth whose paired held-out NDCG@10 change vs depth {base} is >= -{CURVE_SES:g} SE")}
    chosen = base
    for depth in sorted(gains):
        diff = gains[depth] - gains[base]
        se = float(np.std(diff, ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
        report["held_out_ndcg@10"][str(depth)] = round(float(np.mean(gains[depth])), 5)
        report["change_vs_off"][str(depth)] = {"mean": round(float(np.mean(diff)), 6), "se": round(se, 6),
                                               "users_changed": int(np.count_nonzero(diff))}
        if float(np.mean(diff)) >= -CURVE_SES * se:
            chosen = depth
    return chosen, report


class FusionFitter:
    """The fusion fit's settings; :meth:`fit` chooses the rest on validation targets."""

    def __init__(self, config: RecgenConfig | dict | None = None, retriever=None, depths=(20, 50, 100),
                 leaves=(15, 63), holdout: float = 0.2, seed: int = 0, max_rounds: int = 500, threads: int = 2,
                 sasrec: bool = False, prefixes=(3, 10), batch: int = 256, requests: bool = False,
                 request_users: int = 5000, item_features=DEFAULT_ITEM_GROUPS, cold_pins=PIN_DEPTHS,
                 sasrec_params: dict | None = None, **retrieval) -> None:
        """``sasrec_params``: :class:`SASRecFitter`'s parameters for the SASRec source (pinned settings, ``grid``,
        ...; default: its own selection), so the source is the same fit as ``-s sasrec`` with those parameters."""
        base = config if isinstance(config, RecgenConfig) else RecgenConfig.validated(config or {}, "fusion config")
        self.config = base.updated("retrieval parameters", retrieval=retrieval)
        self.retriever = retriever
        self.depths = sorted(int(d) for d in depths)
        self.leaves = [int(n) for n in leaves]
        if not self.depths or not self.leaves:
            raise ValueError("depths and leaves need at least one value each")
        if not 0 < holdout < 1:
            raise ValueError("holdout must be a share between 0 and 1")
        self.holdout, self.seed, self.max_rounds, self.threads = float(holdout), int(seed), int(max_rounds), int(threads)
        self.use_sasrec, self.batch = bool(sasrec), int(batch)
        self.sasrec_params = dict(sasrec_params or {})
        if self.sasrec_params:
            if not self.use_sasrec:
                raise ValueError("sasrec_params shape the SASRec source: give them with sasrec=true")
            SASRecFitter(**self.sasrec_params)  # unknown settings are refused now, not after the first stages
        self.prefixes = sorted(int(k) for k in prefixes if int(k) > 0)
        #: the request stage (``requests=True``): a ranker for a request in words with a history
        self.fit_requests, self.request_users = bool(requests), int(request_users)
        self.trainer = ranker_trainer(self.config.fit)  # this process, or the Dask cluster in fit.cluster
        #: item-representation groups tried (each kept only if it raises the held-out NDCG@10): see item_groups
        groups = [item_features] if isinstance(item_features, str) else list(item_features or ())
        unknown = [g for g in groups if g not in ITEM_GROUPS]
        if unknown:
            raise ValueError(f"unknown item_features {unknown}; choose among {list(ITEM_GROUPS)}")
        self.item_groups = tuple(g for g in ITEM_GROUPS if g in groups)
        #: cold-item pin depths tried (0 = the ranker's own order); ``[0]`` turns the pin off, ``[20]`` forces it
        self.cold_pins = sorted({int(d) for d in cold_pins})
        if not self.cold_pins or self.cold_pins[0] < 0:
            raise ValueError("cold_pins must be one or more depths >= 0")

    def params(self) -> dict:
        return {"retrieval": self.config.retrieval.model_dump(), "depths": self.depths, "leaves": self.leaves,
                "holdout": self.holdout, "seed": self.seed, "max_rounds": self.max_rounds, "sasrec": self.use_sasrec,
                "prefixes": self.prefixes, "item_features": list(self.item_groups), "cold_pins": self.cold_pins,
                **({"sasrec_params": self.sasrec_params} if self.sasrec_params else {}),  # absent: older keys hold
                **({"item_lm": self.config.lm.model or "default"} if "lmrep" in self.item_groups else {}),
                "fitted_on": "signals: training sequences; ranker: validation targets (history = training items) and, "
                              "when chosen, earlier training targets with signals refitted on the cut sequences"}

    def model_path(self, data: EvalData) -> Path:
        """Where the chosen ranker is saved: keyed by the catalog, the users and the settings that shape it."""
        key = hashlib.sha256(json.dumps({"catalog": data.dataset.catalog.fingerprint(), "users": data.n_users,
                                         "params": {k: v for k, v in self.params().items() if k in
                                                    ("retrieval", "depths", "leaves", "holdout", "seed", "sasrec", "sasrec_params", "prefixes",
                                                     "item_features", "item_lm", "cold_pins")}},
                                        sort_keys=True, default=str).encode()).hexdigest()[:12]
        return cache_dir() / "fusion" / f"{data.dataset.name}-{key}.txt"

    # -- fitting ------------------------------------------------------------------------------------
    def retriever_for(self, data: EvalData):
        """The first stage over the training parts: the text index and the transitions fitted on them."""
        catalog, settings = data.dataset.catalog, self.config.retrieval
        state = FittedState.fit(data.train_dataset(), settings)
        folder = None if self.retriever is not None else index_folder(data.dataset.name, catalog.fingerprint(),
                                                                        settings.embedder)
        return build_retriever(catalog, settings, transitions=state.transitions, index_dir=folder,
                               retriever=self.retriever, show_progress=active() is not None,
                               chunk=self.config.fit.embed_checkpoint)

    def item_features(self, sources: Sources, groups, log=None) -> ItemFeatures:
        """The representation tables of ``groups``: the retriever's text vectors (``textrep``) and the LM's
        pooled hidden states (``lmrep``, cached per item by :func:`lm_item_vectors`)."""
        return item_features(sources.catalog, sources.emb, groups, self.config.lm, log)

    def sources(self, data: EvalData, log) -> Sources:
        retriever = self.retriever_for(data)
        model = SASRecFitter(**self.sasrec_params).fit(data, log=log).model if self.use_sasrec else None
        return Sources(data.dataset.catalog, retriever, data.train_sequences(), sasrec=model)

    def fit(self, data: EvalData, log=None, checkpoints: Path | None = None) -> FusionFit:
        """Choose and fit; with ``checkpoints`` (a folder keyed by this fit) every finished LightGBM trial and batch
        of feature groups is kept there and a restarted fit reuses it (:mod:`.checkpoints`): same choice, same
        held-out NDCG."""
        started = time.perf_counter()
        trainer = CheckpointedTrainer(self.trainer, checkpoints) if checkpoints is not None else self.trainer
        saved = FeatureCheckpoints(checkpoints) if checkpoints is not None else None
        sources = self.sources(data, log)
        sources_s = time.perf_counter() - started
        deepest = self.depths[-1]
        items = self.item_features(sources, self.item_groups, log)
        builder = FeatureBuilder(sources, deepest, items=items)
        all_names = builder.names  # the base layout's columns first, then the item groups'
        names = feature_names(sources.sasrec is not None)  # the base layout: trials before the item groups
        rng = np.random.default_rng(self.seed)
        held = np.zeros(data.n_users, dtype=bool)
        held[rng.choice(data.n_users, size=max(1, int(round(self.holdout * data.n_users))), replace=False)] = True
        order = rng.permutation(data.n_users)  # the seeded order users are taken in (held-out and training)
        valid, train = GroupSet(len(all_names)), GroupSet(len(all_names))  # each group's rows stored once, float32
        target_ranks = {s: [] for s in (*sources.pool_sources, "pool")}  # over the users whose groups were built
        histories = lambda ps: [data.history("valid", p) for p in ps]
        cols = {s: all_names.index(f"{s}_rank") for s in sources.pool_sources}

        def add(into: GroupSet, positions, what: str, stop=lambda: False) -> int:
            """Validation-target groups of ``positions`` (in order) until ``stop()``; how many users were built."""
            done = 0
            for batch, groups in self._groups(lambda: builder, positions, histories, what, saved, (deepest, all_names)):
                labels = [g.label(data.target("valid", p)) for p, g in zip(batch, groups)]
                for g, y in zip(groups, labels):
                    hit = np.flatnonzero(y)
                    for s, col in cols.items():
                        target_ranks[s].append(int(g.X[hit[0], col]) if len(hit) else deepest + 1)
                    target_ranks["pool"].append(int(g.pool_rank[hit[0]]) if len(hit) else deepest + 1)
                into.add(groups, labels, positives_only=into is train)
                done += len(batch)
                if stop():
                    break
            return done

        # held-out users: added until the hybrid order's NDCG@10 over them is as precise as the choice needs
        t0 = time.perf_counter()
        held_users = add(valid, order[held[order]], "validation targets, held-out users", stop=lambda: _precise(
            ndcg_gains(np.asarray(target_ranks["hybrid"]))))
        hybrid_held = np.asarray(target_ranks["hybrid"])  # the hybrid retrieval's rank of each scored held-out target
        features_s, select_s = time.perf_counter() - t0, 0.0
        # training users: a growing seeded sample (doubling) while the held-out NDCG@10 still rises beyond its noise
        pool, curve, last = order[~held[order]], [], None
        size, built = min(FIRST_SAMPLE, len(pool)), 0
        while True:
            t0 = time.perf_counter()
            add(train, np.sort(pool[built:size]), f"validation targets, training users {built + 1}-{size}")
            built = size
            t1 = time.perf_counter()
            trial = self._trial(trainer, train, valid, names, deepest, self.leaves[0], 0, log)
            features_s, select_s = features_s + t1 - t0, select_s + time.perf_counter() - t1
            step = {"train_users": size, "train_groups": len(train), "train_rows": train.rows,
                    "held_out_ndcg@10": round(trial.score, 5)}
            if last is not None:
                diff = trial.gains - last.gains
                step["gain"], step["gain_se"] = round(float(diff.mean()), 5), round(_se(diff), 5)
            curve.append(step)
            if log:
                log(f"fusion learning curve: {step}")
            if size == len(pool) or (last is not None and not diff.mean() > CURVE_SES * _se(diff)):
                break
            last, size = trial, min(2 * size, len(pool))
        ks = sorted(k for k in {*RECALL_AT, *self.depths} if k <= deepest)
        recall = {s: {f"recall@{k}": round(float(np.mean(np.asarray(r) <= k)), 4) for k in ks}
                  for s, r in target_ranks.items()}
        mean_pool = {d: round(valid.mean_size(d), 1) for d in self.depths}

        # settings on held-out users: depth (validation groups only), then prefix groups, then leaves
        t0 = time.perf_counter()
        trials = [self._trial(trainer, train, valid, names, depth, self.leaves[0], 0, log) for depth in self.depths[:-1]]
        trials.append(trial)  # the deepest, from the learning curve's last step
        select_s += time.perf_counter() - t0
        # extra groups from earlier targets of the sampled training users, at the chosen depth; more shifts are
        # only computed while the last increase helped the held-out users (on Beauty 3 shifts did not: the
        # 10-shift features, ~2/3 of the prefix cost, are then never built)
        t0 = time.perf_counter()
        counts = {}  # groups of shifts 1..s
        last_shifts, prefix_s, sampled = 0, 0.0, np.sort(pool[:built])
        for shifts in self.prefixes if sources.sasrec is None else ():
            if _best(trials).shifts != last_shifts:
                break
            p0 = time.perf_counter()
            self._prefix_groups(data, sources, sampled, _best(trials).depth, range(last_shifts + 1, shifts + 1), train,
                                items, saved, all_names)
            counts[shifts] = len(train) - train.count(0)
            prefix_s += time.perf_counter() - p0
            if counts[shifts]:
                trials.append(self._trial(trainer, train, valid, names, _best(trials).depth, self.leaves[0], shifts, log))
            last_shifts = shifts
        for leaves in self.leaves[1:]:
            best = _best(trials)
            trials.append(self._trial(trainer, train, valid, names, best.depth, leaves, best.shifts, log))
        # item-representation groups, added one at a time at the chosen settings, each kept only if the
        # held-out NDCG@10 rises (never decided by test)
        base, chosen = _best(trials), []
        group_trials = [{"groups": [], "held_out_ndcg@10": round(base.score, 5)}]
        for group in items.groups:
            current = _best(trials)
            groups = [*chosen, group]
            trial = self._trial(trainer, train, valid, feature_names(sources.sasrec is not None, False, groups), base.depth,
                                base.leaves, base.shifts, log, all_names=all_names)
            group_trials.append({"groups": groups, "held_out_ndcg@10": round(trial.score, 5),
                                 "kept": trial.score > current.score})
            trials.append(trial)
            if trial.score > current.score:
                chosen = groups
        best = _best(trials)
        items = items.subset(chosen)
        pin_gains = self._cold_pins(best, valid, all_names)
        cold_pin, pin_report = choose_cold_pin(pin_gains)
        select_s += time.perf_counter() - t0 - prefix_s
        held_out = {"fusion": best.score, "hybrid": float(np.mean(ndcg_gains(hybrid_held))), "users": held_users}
        path = self.model_path(data)
        best.ranker.save(path)
        ranker = FusionRanker.load(path, feature_names(sources.sasrec is not None, False, items.groups))  # what the file holds
        info = {
            "chosen": {"depth": best.depth, "num_leaves": best.leaves, "prefix_shifts": best.shifts,
                       "held_out_ndcg@10": round(best.score, 5),
                       "hybrid_order_held_out_ndcg@10": round(held_out["hybrid"], 5)},
            "selection": [t.as_json() for t in trials], "valid_recall": recall, "mean_pool_size": mean_pool,
            "learning_curve": {"steps": curve, "rule": LEARNING_CURVE_RULE},
            "item_features": {"tried": list(self.item_groups), "chosen": list(items.groups), "trials": group_trials},
            "cold_pin": {"chosen": cold_pin, **pin_report},
            "ranker": {**best.ranker.info, "file": str(path)}, "importance": best.ranker.importance(),
            "users": {"train": int((~held).sum()), "train_sampled": built, "held_out": int(held.sum()),
                      "held_out_scored": held_users, "held_out_rule": HELD_OUT_RULE,
                      "train_groups_with_target": train.count(0), "prefix_groups_with_target_by_shifts": counts},
            "feature_mb": {"held_out": round(valid.nbytes / 2**20, 1), "train": round(train.nbytes / 2**20, 1)},
            "fit_seconds": {"sources": round(sources_s, 1), "features": round(features_s, 1),
                            "prefix_features": round(prefix_s, 1), "selection": round(select_s, 1)},
        }
        if checkpoints is not None:  # what a restart reused (0 in an uninterrupted fit)
            info["checkpoints"] = {"selection": {**trainer.report(), **saved.report()}}
        if log:
            log(f"fusion: chose depth {best.depth}, {best.leaves} leaves, prefix shifts {best.shifts} "
                f"(held-out NDCG@10 {best.score:.4f}, {built} of {int((~held).sum())} training users); "
                f"recall {recall}")
        request = None
        if self.fit_requests:
            local = LocalRankerTrainer()  # the request stage's few groups are trained here
            request_trainer = local if checkpoints is None else CheckpointedTrainer(local, checkpoints)
            request_saved = FeatureCheckpoints(checkpoints) if checkpoints is not None else None
            request = fit_request_stage(sources, data, held, path, leaves=[*self.leaves, best.leaves], seed=self.seed,
                                        users=self.request_users, batch=self.batch, max_rounds=self.max_rounds,
                                        threads=self.threads, log=log, trainer=request_trainer, saved=request_saved)
            info["request_stage"] = request.info
            if checkpoints is not None:
                info["checkpoints"]["request_stage"] = {**request_trainer.report(), **request_saved.report()}
        stage = FusionStage(sources, ranker, best.depth, items, cold_pin)
        return FusionFit(sources, ranker, best.depth, stage, held, held_out, path, info, request, items)

    def _cold_pins(self, best: Trial, valid: GroupSet, all_names: list[str]) -> dict[int, np.ndarray]:
        """Per held-out user NDCG@10 of ``best``'s order with cold candidates pinned at their text rank, per pin
        depth (a target outside the cut counts 0); from the scores the trial already made (no second prediction)."""
        text, pop = all_names.index("text_rank"), all_names.index("popularity_value")
        ranks = {d: np.zeros(len(valid), dtype=np.int64) for d in self.cold_pins}
        start = 0
        for part in valid.chunks(best.depth):
            scores, offsets = best.scores[start:start + len(part.y)], part.offsets
            start += len(part.y)
            for n, g in enumerate(part.kept):
                lo, hi = offsets[n], offsets[n + 1]
                X, y = part.X[lo:hi], part.y[lo:hi]
                for depth in self.cold_pins:
                    ranks[depth][g] = target_rank(pin_cold(scores[lo:hi], X[:, text], X[:, pop] == 0, depth), y)
        return {d: ndcg_gains(r) for d, r in ranks.items()}

    def _prefix_groups(self, data: EvalData, sources: Sources, users, depth: int, shifts, into: GroupSet,
                       items: ItemFeatures | None = None, saved: FeatureCheckpoints | None = None,
                       names=()) -> None:
        """Groups with target = train[-k], history = train[:-k] for each k in ``shifts`` (tagged k), for ``users``
        (training users), every sequence-fitted signal refitted on all sequences cut at -k (so none has seen
        those targets); the refit is made only when a batch is not in ``saved`` (keyed with the layout ``names``)."""
        for k in shifts:
            cut = [seq[:-k] for seq in data.train_sequences()]
            made: list[FeatureBuilder] = []

            def builder() -> FeatureBuilder:
                if not made:
                    made.append(FeatureBuilder(sources.refit(cut), depth, items=items))
                return made[0]

            kept = [int(p) for p in users if len(cut[p]) > 0]
            for positions, groups in self._groups(builder, kept, lambda ps: [cut[p] for p in ps],
                                                  f"train[-{k}] targets", saved, (depth, names)):
                into.add(groups, [g.label(int(data.train[p][-k])) for p, g in zip(positions, groups)], tag=k,
                         positives_only=True)

    def _groups(self, builder, positions, histories, what: str, saved: FeatureCheckpoints | None = None,
                layout: tuple = ()):
        """(positions, groups) per batch of users (progress: users done); ``builder()`` gives the FeatureBuilder
        (made on first use); with ``saved`` each batch comes from its checkpoint when one matches (``layout``: the
        builder's (depth, feature names), part of the key), else is built and kept."""
        positions = [int(p) for p in positions]
        with task(f"fusion features ({what})", total=len(positions)) as advance:
            for start in range(0, len(positions), self.batch):
                batch = positions[start:start + self.batch]
                if saved is None:
                    groups = builder().build(histories(batch))
                else:
                    key = FeatureCheckpoints.key(what, *layout, batch)
                    groups = saved.groups(key, lambda: builder().build(histories(batch)))
                yield batch, groups
                advance(len(batch))

    def _trial(self, trainer: RankerTrainer, train: GroupSet, valid: GroupSet, names, depth: int, leaves: int,
               shifts: int, log, all_names=None) -> Trial:
        """A ranker on pools cut to ``depth`` (groups of prefix shifts <= ``shifts``) and on the columns ``names``
        (of the built layout ``all_names``; default: its first ``len(names)``), and its NDCG@10 over all scored
        held-out users (a target outside the cut counts 0). Each cut is one stacked copy, freed once LightGBM has
        binned it."""
        cols = [list(all_names).index(n) for n in names] if all_names is not None else list(range(len(names)))
        with task(f"LightGBM trial: depth {depth}, {leaves} leaves, {shifts} shifts (rounds)",
                  total=self.max_rounds) as advance:
            ranker = trainer.train(train.cut(depth, shifts, cols=cols), valid.cut(depth, cols=cols), names,
                                   num_leaves=leaves, max_rounds=self.max_rounds, threads=self.threads,
                                   seed=self.seed, log=log, callbacks=[lambda env: advance()])
        return Trial(depth, leaves, shifts, *_held_out_score(ranker, valid, depth, cols), ranker=ranker)


def _held_out_score(ranker: FusionRanker, valid: GroupSet, depth: int,
                    cols=None) -> tuple[float, np.ndarray, np.ndarray]:
    """(mean NDCG@10, per-user gains in ``valid``'s order, per-row scores in chunk order) of ``ranker`` on the
    held-out groups cut to ``depth`` (columns ``cols`` of the stored layout; default all)."""
    ranks = np.zeros(len(valid), dtype=np.int64)  # 0: target outside the cut (gain 0)
    every = []
    for part in valid.chunks(depth, cols=cols):
        scores, offsets = ranker.predict(part.X), part.offsets
        every.append(np.asarray(scores))
        for n, g in enumerate(part.kept):
            lo, hi = offsets[n], offsets[n + 1]
            ranks[g] = target_rank(scores[lo:hi], part.y[lo:hi])
    gains = ndcg_gains(ranks)
    return float(np.mean(gains)), gains, np.concatenate(every) if every else np.zeros(0)


def _se(diff: np.ndarray) -> float:
    """The standard error of a mean."""
    return float(np.std(diff, ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("inf")


def _precise(gains: np.ndarray) -> bool:
    """Enough held-out users: at least MIN_HELD_OUT and the mean's standard error <= HELD_OUT_RSE of the mean."""
    return len(gains) >= MIN_HELD_OUT and _se(gains) <= HELD_OUT_RSE * float(np.mean(gains))


def _best(trials: list[Trial]) -> Trial:
    """The first trial with the best held-out score (an equal later one does not displace it)."""
    return max(trials, key=lambda t: t.score)

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
from ..ranking.fusion.item_features import ITEM_GROUPS, ItemFeatures, item_features
from ..retrieval.cache import index_folder
from .request_stage import RequestFit, fit_request_stage
from .sasrec import SASRecFitter

RECALL_AT = (20, 50, 100)
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


class FusionFitter:
    """The fusion fit's settings; :meth:`fit` chooses the rest on validation targets."""

    def __init__(self, config: RecgenConfig | dict | None = None, retriever=None, depths=(20, 50, 100),
                 leaves=(15, 63), holdout: float = 0.2, seed: int = 0, max_rounds: int = 500, threads: int = 2,
                 sasrec: bool = False, prefixes=(3, 10), batch: int = 256, requests: bool = False,
                 request_users: int = 5000, item_features=DEFAULT_ITEM_GROUPS, cold_pins=PIN_DEPTHS,
                 **retrieval) -> None:
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
        self.prefixes = sorted(int(k) for k in prefixes if int(k) > 0)
        #: the request stage (``requests=True``): a ranker for a request in words with a history
        self.fit_requests, self.request_users = bool(requests), int(request_users)
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
                **({"item_lm": self.config.lm.model or "default"} if "lmrep" in self.item_groups else {}),
                "fitted_on": "signals: training sequences; ranker: validation targets (history = training items) and, "
                              "when chosen, earlier training targets with signals refitted on the cut sequences"}

    def model_path(self, data: EvalData) -> Path:
        """Where the chosen ranker is saved: keyed by the catalog, the users and the settings that shape it."""
        key = hashlib.sha256(json.dumps({"catalog": data.dataset.catalog.fingerprint(), "users": data.n_users,
                                         "params": {k: v for k, v in self.params().items() if k in
                                                    ("retrieval", "depths", "leaves", "holdout", "seed", "sasrec", "prefixes",
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
                               retriever=self.retriever, show_progress=active() is not None)

    def item_features(self, sources: Sources, groups, log=None) -> ItemFeatures:
        """The representation tables of ``groups``: the retriever's text vectors (``textrep``) and the LM's
        pooled hidden states (``lmrep``, cached per item by :func:`lm_item_vectors`)."""
        return item_features(sources.catalog, sources.emb, groups, self.config.lm, log)

    def sources(self, data: EvalData, log) -> Sources:
        retriever = self.retriever_for(data)
        model = SASRecFitter().fit(data, log=log).model if self.use_sasrec else None
        return Sources(data.dataset.catalog, retriever, data.train_sequences(), sasrec=model)

    def fit(self, data: EvalData, log=None) -> FusionFit:
        started = time.perf_counter()
        sources = self.sources(data, log)
        sources_s = time.perf_counter() - started
        deepest = self.depths[-1]
        items = self.item_features(sources, self.item_groups, log)
        builder = FeatureBuilder(sources, deepest, items=items)
        rng = np.random.default_rng(self.seed)
        held = np.zeros(data.n_users, dtype=bool)
        held[rng.choice(data.n_users, size=max(1, int(round(self.holdout * data.n_users))), replace=False)] = True
        train, valid = [], []  # train: (X, y, pool_rank) with a positive; valid: (X, y, pool_rank) for every user
        target_ranks = {s: [] for s in (*sources.pool_sources, "pool")}
        t0 = time.perf_counter()
        histories = lambda ps: [data.history("valid", p) for p in ps]
        for positions, groups in self._groups(builder, range(data.n_users), histories, "validation targets"):
            for p, group in zip(positions, groups):
                y = group.label(data.target("valid", p))
                hit = np.flatnonzero(y)
                for s in sources.pool_sources:
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
        names = feature_names(sources.sasrec is not None)  # the base layout: its columns come first
        trials = [self._trial(train, valid, names, depth, self.leaves[0], 0, log) for depth in self.depths]
        select_s = time.perf_counter() - t0
        # extra groups from earlier targets of the training users, at the chosen depth; more shifts are only
        # computed while the last increase helped the held-out users (on Beauty 3 shifts did not: the 10-shift
        # features, ~2/3 of the prefix cost, are then never built)
        t0 = time.perf_counter()
        prefix, counts = [], {}  # groups of shifts 1..s come first: counts[s] of them
        last, prefix_s = 0, 0.0
        for shifts in self.prefixes if sources.sasrec is None else ():
            if _best(trials).shifts != last:
                break
            p0 = time.perf_counter()
            prefix += self._prefix_groups(data, sources, held, _best(trials).depth, range(last + 1, shifts + 1), items)
            counts[shifts] = len(prefix)
            prefix_s += time.perf_counter() - p0
            if counts[shifts]:
                trials.append(self._trial(train + prefix, valid, names, _best(trials).depth, self.leaves[0], shifts,
                                          log))
            last = shifts
        for leaves in self.leaves[1:]:
            best = _best(trials)
            extra = prefix[:counts[best.shifts]] if best.shifts else []
            trials.append(self._trial(train + extra, valid, names, best.depth, leaves, best.shifts, log))
        # item-representation groups, added one at a time at the chosen settings, each kept only if the
        # held-out NDCG@10 rises (never decided by test)
        base, chosen = _best(trials), []
        extra = prefix[:counts[base.shifts]] if base.shifts else []
        group_trials = [{"groups": [], "held_out_ndcg@10": round(base.score, 5)}]
        for group in items.groups:
            current = _best(trials)
            groups = [*chosen, group]
            trial = self._trial(train + extra, valid, feature_names(sources.sasrec is not None, False, groups),
                                base.depth, base.leaves, base.shifts, log, all_names=builder.names)
            group_trials.append({"groups": groups, "held_out_ndcg@10": round(trial.score, 5),
                                 "kept": trial.score > current.score})
            trials.append(trial)
            if trial.score > current.score:
                chosen = groups
        best = _best(trials)
        items = items.subset(chosen)
        pin_scores = self._cold_pins(best, valid, builder.names)
        # the deepest pin that costs the held-out users nothing (cold targets are rare among them: this guards
        # the warm users; what the pin buys on cold targets is measured by `recgen eval cold`)
        cold_pin = max(d for d, score in pin_scores.items() if score >= pin_scores[min(pin_scores)])
        select_s += time.perf_counter() - t0 - prefix_s
        hybrid = np.asarray(target_ranks["hybrid"])[held]  # the hybrid retrieval's rank of each held-out target
        held_out = {"fusion": best.score, "hybrid": float(np.mean(ndcg_gains(hybrid))), "users": int(held.sum())}
        path = self.model_path(data)
        best.ranker.save(path)
        ranker = FusionRanker.load(path, feature_names(sources.sasrec is not None, False, items.groups))  # what the file holds
        info = {
            "chosen": {"depth": best.depth, "num_leaves": best.leaves, "prefix_shifts": best.shifts,
                       "held_out_ndcg@10": round(best.score, 5),
                       "hybrid_order_held_out_ndcg@10": round(held_out["hybrid"], 5)},
            "selection": [t.as_json() for t in trials], "valid_recall": recall,
            "item_features": {"tried": list(self.item_groups), "chosen": list(items.groups), "trials": group_trials},
            "cold_pin": {"chosen": cold_pin, "held_out_ndcg@10": {str(d): round(v, 5) for d, v in pin_scores.items()}},
            "mean_pool_size": mean_pool,
            "ranker": {**best.ranker.info, "file": str(path)}, "importance": best.ranker.importance(),
            "users": {"train": int((~held).sum()), "held_out": int(held.sum()), "train_groups_with_target": len(train),
                      "prefix_groups_with_target_by_shifts": counts},
            "fit_seconds": {"sources": round(sources_s, 1), "features": round(features_s, 1),
                            "prefix_features": round(prefix_s, 1), "selection": round(select_s, 1)},
        }
        if log:
            log(f"fusion: chose depth {best.depth}, {best.leaves} leaves, prefix shifts {best.shifts} "
                f"(held-out NDCG@10 {best.score:.4f}); recall {recall}")
        request = None
        if self.fit_requests:
            request = fit_request_stage(sources, data, held, path, leaves=[*self.leaves, best.leaves], seed=self.seed,
                                        users=self.request_users, batch=self.batch, max_rounds=self.max_rounds,
                                        threads=self.threads, log=log)
            info["request_stage"] = request.info
        stage = FusionStage(sources, ranker, best.depth, items, cold_pin)
        return FusionFit(sources, ranker, best.depth, stage, held, held_out, path, info, request, items)

    def _cold_pins(self, best: Trial, valid, all_names: list[str]) -> dict[int, float]:
        """Held-out NDCG@10 of ``best``'s order with cold candidates pinned at their text rank, per pin depth."""
        cols = [all_names.index(n) for n in best.ranker.feature_names]
        text, pop = all_names.index("text_rank"), all_names.index("popularity_value")
        groups = [(X[pr <= best.depth], y[pr <= best.depth]) for X, y, pr in valid]
        scores = [best.ranker.predict(X[:, cols]) for X, _ in groups]
        out = {}
        for depth in self.cold_pins:
            ranks = [target_rank(pin_cold(s, X[:, text], X[:, pop] == 0, depth), y) if y.any() else 0
                     for s, (X, y) in zip(scores, groups)]
            out[depth] = float(np.mean(ndcg_gains(ranks)))
        return out

    def _prefix_groups(self, data: EvalData, sources: Sources, held: np.ndarray, depth: int, shifts,
                       items: ItemFeatures | None = None) -> list:
        """Groups with target = train[-k], history = train[:-k] for each k in ``shifts``, training users only,
        every sequence-fitted signal refitted on all sequences cut at -k (so none has seen those targets)."""
        out = []
        for k in shifts:
            cut = [seq[:-k] for seq in data.train_sequences()]
            builder = FeatureBuilder(sources.refit(cut), depth, items=items)
            users = [p for p in range(data.n_users) if not held[p] and len(cut[p]) > 0]
            for positions, groups in self._groups(builder, users, lambda ps: [cut[p] for p in ps], f"train[-{k}] targets"):
                for p, group in zip(positions, groups):
                    y = group.label(int(data.train[p][-k]))
                    if y.any():
                        out.append((group.X, y, group.pool_rank))
        return out

    def _groups(self, builder: FeatureBuilder, positions, histories, what: str):
        """(positions, groups) per batch of users (progress: users done)."""
        positions = list(positions)
        with task(f"fusion features ({what})", total=len(positions)) as advance:
            for start in range(0, len(positions), self.batch):
                batch = positions[start:start + self.batch]
                yield batch, builder.build(histories(batch))
                advance(len(batch))

    def _trial(self, train, valid, names, depth: int, leaves: int, shifts: int, log, all_names=None) -> Trial:
        """A ranker on pools cut to ``depth`` and on the columns ``names`` (of the built layout ``all_names``;
        default: its first ``len(names)``), and its NDCG@10 over all held-out users."""
        cols = [list(all_names).index(n) for n in names] if all_names is not None else list(range(len(names)))
        cut = lambda groups: [(X[pr <= depth][:, cols], y[pr <= depth]) for X, y, pr in groups]
        with task(f"LightGBM trial: depth {depth}, {leaves} leaves, {shifts} shifts (rounds)",
                  total=self.max_rounds) as advance:
            ranker = FusionRanker.train(cut(train), cut(valid), names, num_leaves=leaves, max_rounds=self.max_rounds,
                                        threads=self.threads, seed=self.seed, log=log,
                                        callbacks=[lambda env: advance()])
        ranks = [target_rank(ranker.predict(X), y) if y.any() else 0 for X, y in cut(valid)]
        return Trial(depth, leaves, shifts, float(np.mean(ndcg_gains(ranks))), ranker)


def _best(trials: list[Trial]) -> Trial:
    """The first trial with the best held-out score (an equal later one does not displace it)."""
    return max(trials, key=lambda t: t.score)

"""Validation-stage evidence from the LM scores already in the memo, without refitting anything.

    python benchmarks/fusion_lm_offline.py -d ml-100k --ranker ~/.cache/recgen/fusion/ml-100k-051dcdf602b1.txt \
        --depth 50 --out eval/results/fusion-lm/offline-ml-100k.json

When `recgen eval run -s fusion -p lm=...` cannot finish in the time (on a loaded machine the fusion refit alone
takes ~40 min and the LM ~30 s per user), this reads what its LM stage has scored so far: the users
``LMStage.fit`` draws (a seeded subset of the fusion ranker's held-out users, validation stage: history =
training items, label = validation item; no test target is read) whose LM scores are in the memo. It loads the
fitted fusion ranker from its LightGBM file (the run's ``config.system_params.ranker.file``), rebuilds the fused
top m for those users, and reports, paired over the same users, full-ranking NDCG@10 / Recall@10 of
(a) the fused order, (b) the LM alone re-ordering the fused top m, (c) the stacked model with the LM and
(d) without it (4-fold cross-validation over these users, each fold early-stopped on its held-out quarter, as
``LMStage.fit`` does), with paired bootstrap CIs and Wilcoxon p-values (``recgen.evaluation.stats``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from recgen.data import load_dataset
from recgen.errors import DataError
from recgen.evaluation.protocol import EvalData, pseudonym
from recgen.evaluation.stats import compare_paired
from recgen.evaluation.systems.fusion import FusionSystem
from recgen.fit.fusion_lm import FOLDS, LMStage
from recgen.lm.factory import make_backend
from recgen.metrics import target_rank
from recgen.paths import cache_dir
from recgen.ranking.fusion import FeatureBuilder, FusionRanker
from recgen.ranking.fusion.lm_features import (
    TOP_M,
    DiskScoreMemo,
    LMStackedRanker,
    _hashed,
    compute_lm_features,
    features_from_logprobs,
    memo_path,
    stack_matrix,
    top_of_fused,
)
from recgen.ranking.ranker import Ranker, RankRequest


def read_memo(path: Path) -> dict[str, list[float]]:
    out = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            key, row = json.loads(line)
            out[key] = row
        except (ValueError, TypeError):
            continue
    return out


def gains(ranks) -> dict[str, np.ndarray]:
    r = np.asarray(ranks)
    return {"ndcg@10": np.where((r > 0) & (r <= 10), 1.0 / np.log2(np.maximum(r, 1) + 1.0), 0.0),
            "recall@10": ((r > 0) & (r <= 10)).astype(float)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-d", "--dataset", required=True)
    parser.add_argument("--ranker", type=Path, required=True, help="the run's fusion ranker file (LightGBM text)")
    parser.add_argument("--depth", type=int, required=True, help="the run's chosen pool depth")
    parser.add_argument("--lm-users", type=int, default=800, help="the run's lm_users")
    parser.add_argument("--lm", default="zeroshot")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--score-minutes", type=float, default=0.0,
                        help="first run the LM (threads=1) on drawn users missing from the memo, in draw order, "
                             "for at most this many minutes")
    parser.add_argument("--pair-with", type=Path, help="another output of this script: paired tests on shared users")
    args = parser.parse_args()
    started = time.perf_counter()

    data = EvalData.from_dataset(load_dataset(args.dataset))
    system = FusionSystem()
    sources = system.fitter.sources(data, None)
    builder = FeatureBuilder(sources, args.depth)
    ranker = FusionRanker.load(args.ranker.expanduser(), builder.names)
    stage = LMStage(args.lm, users=args.lm_users, seed=system.seed)
    config = system.config.updated("lm stage", lm={"adapter": stage.adapter})
    memo = read_memo(memo_path(cache_dir() / "lmfuse", config.lm.model, config.lm.adapter))
    prompter = Ranker(data.dataset.catalog, None, config.prompt)  # prompts only; the LM is not run here

    held = np.zeros(data.n_users, dtype=bool)  # FusionSystem.fit's seeded draw
    rng = np.random.default_rng(system.seed)
    held[rng.choice(data.n_users, size=max(1, int(round(system.holdout * data.n_users))), replace=False)] = True
    pick = stage.fit_users(held)
    ids = data.dataset.catalog.ids
    scoring = {}
    if args.score_minutes > 0:
        lm = DiskScoreMemo(make_backend(config.lm.model_copy(update={"threads": 1})),
                           memo_path(cache_dir() / "lmfuse", config.lm.model, config.lm.adapter))
        scorer = Ranker(data.dataset.catalog, lm, config.prompt)
        t0 = time.perf_counter()
        for start in range(0, len(pick), 8):
            if time.perf_counter() - t0 > 60 * args.score_minutes:
                break
            histories = [data.history("valid", int(p)) for p in pick[start:start + 8]]
            tops = [g.rows[top_of_fused(g.rows, ranker.predict(g.X))] for g in builder.build(histories)]
            compute_lm_features(scorer, [[ids[i] for i in h] for h in histories], [None] * len(histories),
                                [[ids[i] for i in t] for t in tops])
            print(f"scored {start + len(histories)}/{len(pick)} drawn users, {lm.calls} LM calls, "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
        scoring = {"lm_calls": lm.calls, "seconds": round(time.perf_counter() - t0, 1),
                   "seconds_per_call": round((time.perf_counter() - t0) / max(1, lm.calls), 2)}
        memo = read_memo(lm.path)
    rows, users = [], []
    for start in range(0, len(pick), 256):
        batch = pick[start:start + 256]
        histories = [data.history("valid", int(p)) for p in batch]
        for p, hist, g in zip(batch, histories, builder.build(histories)):
            fused = ranker.predict(g.X)
            top = top_of_fused(g.rows, fused)
            prompt = prompter.prompt(RankRequest([ids[i] for i in hist], None, [ids[i] for i in g.rows[top]], len(top)))
            key = _hashed(prompt, list(prompt.labels))
            if key in memo:
                target = data.target("valid", int(p))
                users.append(pseudonym(data.user_ids[int(p)]))
                rows.append((fused[top], features_from_logprobs(np.asarray(memo[key])), (g.rows[top] == target).astype(np.float32),
                             target_rank(fused, g.label(target))))
    if not rows:
        raise SystemExit("no LM-scored fitting user in the memo yet")
    n = len(rows)
    fused_rank = [r[3] for r in rows]
    lm_rank = []  # the LM alone re-ordering the fused top m (the fused order below them)
    for _, x, y, fr in rows:
        lm_rank.append(int(np.flatnonzero(y[np.argsort(-x[:, 0], kind="stable")])[0]) + 1 if y.any() else fr)
    stacked = [stack_matrix(f, x) for f, x, _, _ in rows]
    plain = [X[:, :2] for X in stacked]
    ys = [r[2] for r in rows]
    fold = np.arange(n) % FOLDS
    np.random.default_rng(system.seed + 2).shuffle(fold)
    cv_rank = {"stacked": list(fused_rank), "stacked_no_lm": list(fused_rank)}
    folds_used = 0
    for f in range(FOLDS):
        tr, va = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        try:
            for name, X in (("stacked", stacked), ("stacked_no_lm", plain)):
                model = LMStackedRanker.fit([(X[i], ys[i]) for i in tr], [(X[i], ys[i]) for i in va],
                                            use_lm=name == "stacked", threads=1, seed=system.seed)
                for i in va:
                    if ys[i].any():
                        cv_rank[name][i] = int(np.flatnonzero(ys[i][model.rerank(X[i])])[0]) + 1
            folds_used += 1
        except DataError:
            continue
    per = {"fused": gains(fused_rank), "lm_alone_on_top_m": gains(lm_rank), **{k: gains(v) for k, v in cv_rank.items()}}
    out = {"dataset": args.dataset, "stage": "valid", "lm": args.lm, "users_scored": n, "users_drawn": len(pick),
           "targets_in_top_m": int(sum(y.any() for y in ys)), "top_m": TOP_M, "cv_folds_fitted": folds_used,
           "ranker": str(args.ranker), "means": {k: {m: round(float(v.mean()), 5) for m, v in d.items()} for k, d in per.items()},
           "paired_vs_fused": {k: [r.to_dict() for r in compare_paired(per[k], per["fused"], ["ndcg@10", "recall@10"])]
                               for k in ("lm_alone_on_top_m", "stacked", "stacked_no_lm")},
           "stacked_vs_stacked_no_lm": [r.to_dict() for r in compare_paired(per["stacked"], per["stacked_no_lm"],
                                                                            ["ndcg@10", "recall@10"])],
           "scoring": scoring, "seconds": round(time.perf_counter() - started, 1),
           "per_user_ranks": {u: {k: int(v[i]) for k, v in (("fused", fused_rank), ("lm_alone_on_top_m", lm_rank),
                                                               *cv_rank.items())} for i, u in enumerate(users)}}
    if args.pair_with:
        other = json.loads(args.pair_with.read_text())["per_user_ranks"]
        shared = [u for u in out["per_user_ranks"] if u in other]
        mine = out["per_user_ranks"]
        out["paired_with"] = {"file": str(args.pair_with), "users": len(shared), "comparisons": {
            k: [r.to_dict() for r in compare_paired(gains([mine[u][k] for u in shared]),
                                                    gains([other[u][k] for u in shared]), ["ndcg@10", "recall@10"])]
            for k in ("lm_alone_on_top_m", "stacked")}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["means"], indent=1), n)


if __name__ == "__main__":
    main()

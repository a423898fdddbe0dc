"""Score the LM features of an evaluation's users ahead of the run, in another process, into the shared memo.

    python benchmarks/fusion_lm_prewarm.py -d ml-100k --lm zeroshot --from-end
    python benchmarks/fusion_lm_prewarm.py -d amazon-beauty --users 2000 --seed 0 --from-end \
        --params '{"depths": [50], "leaves": [63], "prefixes": []}'

The LM is the slow part of `recgen eval run -s fusion -p lm=...`; the scores it needs for a test user depend only
on that user's history and the fused (no-LM) top m, which this script computes with the same fusion fit (same
parameters, deterministic). It writes to the same on-disk memo (`DiskScoreMemo`), which the run re-reads before
each LM call, so a run and one or more of these (``--from-end`` works back from the last user) share the work.
Nothing is evaluated here: no target is read.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from recgen.data import load_dataset
from recgen.evaluation.protocol import EvalData, sample_users
from recgen.evaluation.systems import make_system
from recgen.fit.fusion_lm import LMStage, top_rows
from recgen.ranking.fusion.lm_features import top_of_fused


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-d", "--dataset", required=True)
    parser.add_argument("--lm", default="zeroshot", help="zeroshot or an adapter folder (as -p lm=...)")
    parser.add_argument("--stage", default="test")
    parser.add_argument("--users", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--params", default="{}", help="the run's other fusion parameters, JSON")
    parser.add_argument("--from-end", action="store_true", help="work back from the last sampled user")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--start-share", type=float, default=0.0,
                        help="begin at this share of the (ordered) users, e.g. 0.33 for a third process")
    parser.add_argument("--fit-users", type=int, default=0,
                        help="first the LM stage's fitting users (validation stage; the run's lm_users), in reverse")
    args = parser.parse_args()

    data = EvalData.from_dataset(load_dataset(args.dataset))
    system = make_system("fusion", {**json.loads(args.params), "lm": "none"})
    system.fit(data, log=print)
    stage = LMStage(args.lm, users=args.fit_users or 1, seed=system.seed)
    stage._load_lm(system)
    started = time.perf_counter()
    if args.fit_users:  # the users FusionSystem.fit holds out (same seeded draw), then LMStage.fit's subset
        held = np.zeros(data.n_users, dtype=bool)
        rng = np.random.default_rng(system.seed)
        held[rng.choice(data.n_users, size=max(1, int(round(system.holdout * data.n_users))), replace=False)] = True
        pick = stage.fit_users(held)[::-1]
        for start in range(0, len(pick), args.batch):
            histories = [data.history("valid", int(p)) for p in pick[start:start + args.batch]]
            groups = system.builder.build(histories)
            tops = [g.rows[top_of_fused(g.rows, system.ranker.predict(g.X))] for g in groups]
            stage._features(system.fitted, histories, tops)
            print(f"prewarm fit users: {start + len(histories)}/{len(pick)}, {stage.memo.calls} LM calls, "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
    positions = sample_users(data.n_users, args.users, args.seed)
    if args.from_end:
        positions = positions[::-1]
    positions = positions[int(round(args.start_share * len(positions))):]
    for start in range(0, len(positions), args.batch):
        batch = positions[start:start + args.batch]
        histories = [data.history(args.stage, int(p)) for p in batch]
        stage._features(system.fitted, histories, top_rows(system.score(histories)))
        print(f"prewarm: {start + len(batch)}/{len(positions)} users, {stage.memo.calls} LM calls, "
              f"{time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()

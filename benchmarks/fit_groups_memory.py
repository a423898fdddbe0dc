"""Feature bytes held by the fusion fit's trials: per-group copies (before) vs :class:`GroupSet` (issue 24).

    python benchmarks/fit_groups_memory.py --groups 5812 --rows 293 --out eval/results/scale/fit_groups_memory

Seeded random candidate groups of the shape a Beauty fit holds at depth 100 (``--groups`` training groups with a
target, ``--rows`` mean rows per group, the 17 feature columns; pool ranks 1..``--depth``), stored both ways;
then one trial's input at each of the depths 20/50/100 is made both ways and Python's allocation peak is read
(tracemalloc sees numpy's buffers). Before: the list of per-group (X, y, pool_rank) arrays, a per-group cut
(``[(X[pr <= d], y[pr <= d]) ...]``, alive while LightGBM trains) and its concatenation (``stack_groups``).
After: the per-batch float32 chunks and one stacked cut, dropped once LightGBM has binned it. LightGBM's own
binned copy (the same on both sides) is not counted. Memory is exact on a loaded machine; CPU seconds are shown
with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from recgen.ranking.fusion.features import Group, feature_names
from recgen.ranking.fusion.groups import GroupSet
from recgen.ranking.fusion.model import stack_groups


def make_groups(n: int, rows: int, depth: int, seed: int, batch: int = 256):
    """Batches of (groups, labels) with a target in every group."""
    rng, width = np.random.default_rng(seed), len(feature_names(False))
    for start in range(0, n, batch):
        groups, labels = [], []
        for _ in range(min(batch, n - start)):
            size = max(1, int(rng.poisson(rows)))
            pool_rank = rng.integers(1, depth + 1, size=size).astype(np.int64)
            group = Group(np.arange(size), rng.random((size, width), dtype=np.float32), pool_rank)
            y = np.zeros(size, np.float32)
            y[int(rng.integers(size))] = 1
            groups.append(group)
            labels.append(y)
        yield groups, labels


def measure(build, cut, depths) -> dict:
    tracemalloc.start()
    store = build()
    stored = tracemalloc.get_traced_memory()[0]
    out = {"stored_mb": round(stored / 2**20, 1)}
    for depth in depths:
        tracemalloc.reset_peak()
        c0 = time.process_time()
        held = cut(store, depth)  # what is alive while LightGBM bins (and, before, while it trained)
        cpu = time.process_time() - c0
        peak = tracemalloc.get_traced_memory()[1]
        del held
        out[f"depth_{depth}"] = {"peak_mb": round(peak / 2**20, 1), "peak_over_stored": round(peak / stored, 2),
                                 "cut_cpu_s": round(cpu, 2)}
    tracemalloc.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=5812)
    parser.add_argument("--rows", type=int, default=293)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="eval/results/scale/fit_groups_memory")
    args = parser.parse_args()
    depths = (20, 50, args.depth)
    width = len(feature_names(False))

    def old_build():
        return [(g.X, y, g.pool_rank) for gs, ys in make_groups(args.groups, args.rows, args.depth, args.seed)
                for g, y in zip(gs, ys)]

    def old_cut(store, depth):
        per_group = [(X[pr <= depth], y[pr <= depth]) for X, y, pr in store]
        return per_group, stack_groups(per_group)

    def new_build():
        store = GroupSet(width)
        for gs, ys in make_groups(args.groups, args.rows, args.depth, args.seed):
            store.add(gs, ys, positives_only=True)
        return store

    result = {
        "what": "feature bytes alive while one LightGBM trial's input is made (LightGBM's binned copy excluded)",
        "command": "python " + " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "shape": {"groups": args.groups, "mean_rows": args.rows, "features": width, "depth": args.depth},
        "before_per_group_copies": measure(old_build, old_cut, depths),
        "after_groupset": measure(new_build, lambda store, depth: store.cut(depth), depths),
        "load_average": os.getloadavg()[0],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""Cost of the cold items' neighbours on a fitted folder: the full search, the saved file, and feedback updates.

    python benchmarks/cold_neighbours.py --folder <cache>/fitted/L-<key> --events 20 --out eval/results/scale/cold-neighbours-L

Loads the fitted folder (its own index and served transitions), then times: the full computation of every cold
item's neighbours (what each server did on its first request before ``recgen fit`` saved them), writing and
reading the saved file, and ``--events`` feedback events applied one after another as the feedback loop applies
them (a user's sequence of warm items extended by one cold item: the transitions are updated, the retriever
rebound, and the neighbours brought up to date). Each update is checked against the rows it must move: the
item that turned warm no longer borrows and lends from then on. Wall and CPU seconds, peak RSS; the 1-minute load
is recorded before and after (a shared machine slows every figure).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from recgen import Recommender
from recgen.retrieval import Retriever
from recgen.retrieval.cold_items import ColdNeighbours


def _timed(call):
    wall, cpu = time.perf_counter(), time.process_time()
    value = call()
    return value, round(time.perf_counter() - wall, 3), round(time.process_time() - cpu, 3)


def _summary(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000
    return {"n": len(ms), "median_ms": round(float(np.median(ms)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "max_ms": round(float(ms.max()), 1)}


def run(folder: Path, events: int, seed: int) -> dict:
    recommender, load_s, _ = _timed(lambda: Recommender.load(folder))
    catalog, settings, transitions = recommender.catalog, recommender.retriever.settings, recommender.retriever.transitions
    if transitions is None:
        raise SystemExit(f"{folder} has no transitions: nothing borrows for cold items")
    del recommender
    # the folder's index alone, without its saved neighbours: time the search itself
    retriever = Retriever.load(folder / "index", catalog, settings, transitions=transitions)
    full, full_s, full_cpu = _timed(lambda: retriever.cold_neighbours(transitions))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cold_neighbours.npz"
        _, save_s, _ = _timed(lambda: full.save(path))
        size = path.stat().st_size
        loaded, read_s, _ = _timed(lambda: ColdNeighbours.load(path))
        _, adopt_s, _ = _timed(lambda: retriever.adopt_cold_neighbours(transitions, loaded))
    rng = np.random.default_rng(seed)
    warm = np.setdiff1d(np.arange(len(retriever.catalog)), full.cold)
    timings, redone = [], []
    current, neighbours = transitions, full
    for _ in range(events):
        item = int(rng.choice(neighbours.cold))
        sequence = np.append(rng.choice(warm, size=5, replace=False), item)
        current = current.updated(add=[sequence])
        rebound = retriever.rebound(retriever.settings, current)
        before = neighbours
        neighbours, seconds, _ = _timed(lambda: rebound.cold_neighbours(current))  # noqa: B023 (called at once)
        timings.append(seconds)
        assert item not in neighbours.cold and not neighbours.weights[item].nnz
        changed = (neighbours.weights[neighbours.cold] != before.weights[neighbours.cold]).sum(axis=1)
        redone.append(int((np.asarray(changed).ravel() > 0).sum()))
        retriever = rebound
    return {"folder": folder.name, "items": len(retriever.catalog), "cold_items": int(len(full.cold)),
            "k": full.k, "index": retriever.index_meta.kind, "load_folder_s": load_s,
            "full_search": {"wall_s": full_s, "cpu_s": full_cpu},
            "saved_file": {"bytes": size, "write_s": save_s, "read_s": read_s, "check_and_adopt_s": adopt_s},
            "feedback_updates": {**_summary(timings), "rows_changed_median": float(np.median(redone)) if redone else 0},
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", required=True, help="a fitted folder (recgen fit's output)")
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="writes <out>.json")
    args = parser.parse_args()
    load_before, started = os.getloadavg(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result = run(Path(args.folder), args.events, args.seed)
    result |= {"command": "python benchmarks/cold_neighbours.py " + shlex.join(
                   ["--folder", f"<cache>/fitted/{Path(args.folder).name}", "--events", str(args.events),
                    "--seed", str(args.seed), "--out", args.out]),
               "load_before": [round(x, 2) for x in load_before],
               "load_after": [round(x, 2) for x in os.getloadavg()], "python": sys.version.split()[0],
               "cpus": os.cpu_count(), "started": started}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

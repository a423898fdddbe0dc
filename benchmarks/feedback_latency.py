"""Cost of the feedback loop on the real datasets: recording an event, forgetting a user, and a full refit.

    python benchmarks/feedback_latency.py --out eval/results/feedback/latency

For each dataset: a fresh event log in a temporary folder (on the same disk as the state dir), ``--events``
positive events by random users (dataset and new ones) on random items, then ``--forget`` dataset users
forgotten; each call is timed (it includes the fsynced SQLite commit and the statistics update). A refit
(``FittedState.fit`` on the served user data) is timed for comparison, and the live statistics are checked to
EQUAL it (popularity list and transition arrays, bit for bit). The text index is not needed for this (random
vectors stand in for it; the retriever's index plays no part in the statistics). Writes ``<out>.json`` and
``<out>.md``; other processes on a shared machine slow every figure here (the load average is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from recgen.config import RecgenConfig
from recgen.data import load_dataset
from recgen.feedback import Feedback
from recgen.pipeline import FittedState, Pipeline
from recgen.retrieval import Retriever


def _pipeline(dataset, config: RecgenConfig) -> Pipeline:
    vectors = np.random.default_rng(0).normal(size=(len(dataset.catalog), 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    state = FittedState.fit(dataset, config.retrieval)
    retriever = Retriever.from_vectors(dataset.catalog, vectors, config.retrieval, transitions=state.transitions)
    return Pipeline(dataset.catalog, config, retriever, state)


def _summary(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000
    return {"n": len(ms), "median_ms": round(float(np.median(ms)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "max_ms": round(float(ms.max()), 2)}


def run(name: str, n_events: int, n_forget: int, seed: int, folder: Path) -> dict:
    config = RecgenConfig()
    data = load_dataset(name)
    pipeline = _pipeline(data, config)
    loop = Feedback(pipeline, data, folder / f"{name}.sqlite")
    rng = np.random.default_rng(seed)
    users = sorted(data.sequences)
    ids = data.catalog.ids
    record = []
    for n in range(n_events):
        user = users[rng.integers(len(users))] if n % 2 else f"new-{rng.integers(50)}"
        start = time.perf_counter()
        loop.record(user, ids[rng.integers(len(ids))], "purchase", event_id=f"bench-{n}")
        record.append(time.perf_counter() - start)
    forget = []
    for user in rng.choice(users, size=n_forget, replace=False):
        start = time.perf_counter()
        loop.forget(str(user))
        forget.append(time.perf_counter() - start)
    start = time.perf_counter()
    refit = FittedState.fit(data, config.retrieval)
    refit_s = time.perf_counter() - start
    live = pipeline.retriever.transitions
    equal = (pipeline.state.popularity == refit.popularity
             and all(np.array_equal(getattr(live.matrix, a), getattr(refit.transitions.matrix, a))
                     for a in ("indptr", "indices", "data")))
    return {"dataset": name, "items": len(data.catalog), "users_after": len(data.sequences),
            "transition_nnz": int(live.matrix.nnz), "record_event": _summary(record), "forget_user": _summary(forget),
            "refit_seconds": round(refit_s, 3), "live_equals_refit": bool(equal)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="ml-100k,amazon-beauty")
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--forget", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("eval/results/feedback/latency"))
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(dir=os.environ.get("RECGEN_STATE_DIR")) as tmp:
        rows = [run(name, args.events, args.forget, args.seed, Path(tmp)) for name in args.datasets.split(",")]
    report = {"command": "python benchmarks/feedback_latency.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
              "machine": platform.platform(), "cpus": os.cpu_count(), "load_before": load_before,
              "load_after": os.getloadavg(), "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# Feedback loop cost\n\n`{report['command']}`; load average {load_before[0]:.1f} before, "
             f"{report['load_after'][0]:.1f} after ({report['cpus']} CPUs, shared).\n",
             "| dataset | items | transition nnz | record event median / p95 (ms) | forget user median / p95 (ms) "
             "| full refit (s) | live = refit |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['items']} | {r['transition_nnz']} | {r['record_event']['median_ms']} / "
                     f"{r['record_event']['p95_ms']} | {r['forget_user']['median_ms']} / {r['forget_user']['p95_ms']} "
                     f"| {r['refit_seconds']} | {r['live_equals_refit']} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(r["live_equals_refit"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""`recgen fit` by an older checkout and by this one, on the same data, in one run (issue 24: "fit time and memory
at least 2x lower than today, same run, old vs new").

    git worktree add <scratch>/old 80ad9d3     # main when the issue was filed
    python benchmarks/fit_before_after.py --old <scratch>/old --data amazon-beauty --data <synth folder> \
        --work <scratch>/fba --out eval/results/scale/fit_before_after

Each side runs ``recgen fit -d <data> --json`` as a user runs it, in its own process with a fresh cache (the catalog
embedding is included), measured by ``os.wait4`` (:mod:`fitkit`). ``--order sequential`` (default) runs old then
new on the whole machine, repetitions alternating which goes first; ``--order pinned`` runs both at once, each
pinned to its own core with ``--threads 1`` (half the wall time of the benchmark; each side a one-core machine).
Written per data set and repetition: wall, CPU seconds, peak RSS, stage seconds, the chosen settings and held-out
NDCG@10, the load average around each fit, and the old/new ratios. A data set already in the output JSON is
skipped (resumable). Only counts and timings, never the data.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path

from fitkit import REPO, run_fit


def _pair(data: str, work: Path, sides: dict[str, Path], order: str, rep: int) -> dict:
    """Old and new fits of ``data`` (sequential, alternating first side by ``rep``; or at once on pinned cores)."""
    names = list(sides) if rep % 2 == 0 else list(reversed(sides))
    folder = lambda side: work / f"{Path(data).name}-{side}-{rep}"  # noqa: E731
    if order == "sequential":
        return {side: run_fit(data, folder(side), [], sides[side]) for side in names}
    results, errors = {}, []

    def one(side: str, core: int) -> None:
        try:
            results[side] = run_fit(data, folder(side), ["--threads", "1"], sides[side], cores={core})
        except BaseException as exc:  # noqa: BLE001 (re-raised in the caller's thread)
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(side, core)) for core, side in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def _ratios(pair: dict) -> dict:
    old, new = pair["old"], pair["new"]
    return {"wall_old_over_new": round(old["wall_seconds"] / new["wall_seconds"], 2),
            "cpu_old_over_new": round(old["client_cpu_seconds"] / new["client_cpu_seconds"], 2),
            "peak_rss_old_over_new": round(old["client_peak_rss_mb"] / new["client_peak_rss_mb"], 2),
            "held_out_ndcg_new_minus_old": round(new["chosen"]["held_out_ndcg@10"] - old["chosen"]["held_out_ndcg@10"], 5)}


def markdown(result: dict) -> str:
    rows = ["| data | rep | side | wall s | CPU s | peak RSS MB | held-out NDCG@10 (depth, leaves, shifts) | "
            "load 1-min before→after |", "|---|---:|---|---:|---:|---:|---|---|"]
    ratios = []
    for data, reps in result["data"].items():
        for rep, pair in enumerate(reps):
            for side in ("old", "new"):
                r, c = pair[side], pair[side]["chosen"]
                rows.append(f"| {data} | {rep} | {side} | {r['wall_seconds']} | {r['client_cpu_seconds']} | "
                            f"{r['client_peak_rss_mb']} | {c['held_out_ndcg@10']} ({c['depth']}, {c['num_leaves']}, "
                            f"{c['prefix_shifts']}) | {r['load_before']}→{r['load_after']} |")
            ratios.append(f"- {data}, rep {rep}: {pair['ratios']}")
    return (f"# `recgen fit`: {result['old']} (old) vs {result['new']} (new)\n\n`{result['command']}`\n\n"
            f"Order: {result['order']}. {result['machine']}.\n\n" + "\n".join(rows) + "\n\nOld / new:\n"
            + "\n".join(ratios) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="a checkout of the older code (git worktree)")
    parser.add_argument("--new", type=Path, default=REPO, help="the newer checkout (default: this one; give a "
                        "worktree of it to keep editing here while the benchmark runs)")
    parser.add_argument("--data", action="append", required=True, help="dataset name or folder (repeatable)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--order", choices=("sequential", "pinned"), default="sequential")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder: caches, fitted folders and logs")
    parser.add_argument("--out", type=Path, required=True, help="results path without extension (.json, .md)")
    args = parser.parse_args()
    if args.order == "pinned" and len(os.sched_getaffinity(0)) < 2:
        parser.error("--order pinned needs two cores")
    args.out.parent.mkdir(parents=True, exist_ok=True)  # before the runs: never lose them at the end
    path = args.out.with_suffix(".json")
    old = args.old.resolve()
    commit = lambda code: subprocess.run(["git", "-C", str(code), "rev-parse", "--short", "HEAD"],  # noqa: E731
                                         capture_output=True, text=True, check=True).stdout.strip()
    shown = [f"<{Path(a).name}>" if os.path.isabs(a) else a for a in sys.argv[1:]]  # no folder of this machine
    result = json.loads(path.read_text()) if path.exists() else {"data": {}}
    result.update({"command": "python benchmarks/fit_before_after.py " + shlex.join(shown), "order": args.order,
                   "old": f"commit {commit(old)}", "new": f"commit {commit(args.new)}"
                   + (" + uncommitted changes" if subprocess.run(["git", "-C", str(args.new), "status", "--porcelain",
                                                                  "recgen"], capture_output=True, text=True).stdout else ""),
                   "machine": f"{os.cpu_count()} cores; the load average is written beside every fit"})
    for data in args.data:
        name = Path(data).name
        if name in result["data"]:
            continue
        reps = []
        for rep in range(args.repeat):
            pair = _pair(data, args.work, {"old": old, "new": args.new.resolve()}, args.order, rep)
            pair["ratios"] = _ratios(pair)
            reps.append(pair)
            print(f"{name} rep {rep}: {pair['ratios']}", file=sys.stderr)
        result["data"][name] = reps
        path.write_text(json.dumps(result, indent=1) + "\n")  # each data set as it lands
        args.out.with_suffix(".md").write_text(markdown(result))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

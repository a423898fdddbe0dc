"""Wall time of one `recgen recommend` call on a fitted 50,000-user dataset, including Python start and loading.

    python benchmarks/recommend_fitted.py --data <scratch>/recgen-synth50k --make --fit \
        --out eval/results/fusion/recommend-fitted-synth50k.json

``--make`` writes a project-made dataset (recgen.evaluation.synthetic.chain_dataset: 50,000 users, 12,000
items, 8 interactions each, generic items.jsonl + interactions.csv) outside the repo; ``--fit`` runs
`recgen fit -d <folder>` once (timed). Then `recgen recommend -d <folder> --user <u> --no-reasons --json`
runs ``--runs`` times as a fresh process each (what a user waits for), and once with reasons (the LM is
loaded and writes them). Wall and CPU time (user + system of the process) are recorded with the machine's
load average: 2 cores are shared, and under load the wall time is mostly waiting for a core.
``--data amazon-beauty`` (a name) times a fitted real dataset the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from recgen.data import load_dataset
from recgen.evaluation.synthetic import chain_dataset, write_generic


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(cmd: list[str]) -> tuple[float, str, float]:
    """(wall seconds, stdout, CPU seconds of the process: what the call costs whatever the machine's load)."""
    started, cpu = time.perf_counter(), child_cpu()
    done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds, done.stdout, child_cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True, help="dataset folder or name")
    parser.add_argument("--make", action="store_true")
    parser.add_argument("--fit", action="store_true")
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=12_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    recgen = [sys.executable, "-m", "recgen.cli.main"]
    result: dict = {"data": str(args.data), "load_average_start": os.getloadavg()}
    if args.make:
        write_generic(chain_dataset(n_items=args.items, n_users=args.users, length=8, seed=0,
                                    name=Path(args.data).name), args.data)
    if args.fit:
        seconds, out, cpu = run(recgen + ["fit", "-d", str(args.data), "--json"])
        result["fit"] = {"wall_seconds_with_process_start": round(seconds, 1), "cpu_seconds": round(cpu, 1),
                         **json.loads(out)}
    users = list(load_dataset(args.data).sequences)
    result["users"] = len(users)
    times, cpus = [], []
    for n in range(args.runs):
        user = users[n * len(users) // args.runs]
        seconds, out, cpu = run(recgen + ["recommend", "-d", str(args.data), "--user", user, "--no-reasons", "--json"])
        times.append(seconds)
        cpus.append(cpu)
        assert json.loads(out)["recommendations"], out
    result["recommend_no_reasons_seconds"] = {"runs": [round(t, 2) for t in times],
                                              "median": round(statistics.median(times), 2), "max": round(max(times), 2),
                                              "cpu_runs": [round(t, 2) for t in cpus],
                                              "cpu_median": round(statistics.median(cpus), 2)}
    seconds, out, cpu = run(recgen + ["recommend", "-d", str(args.data), "--user", users[1], "--json"])
    result["recommend_with_reasons_seconds"] = {"wall": round(seconds, 2), "cpu": round(cpu, 2)}
    result["reason_sources"] = [r["reason_source"] for r in json.loads(out)["recommendations"]]
    result["load_average_end"] = os.getloadavg()
    result["command"] = " ".join(["python", "benchmarks/recommend_fitted.py", *sys.argv[1:]])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

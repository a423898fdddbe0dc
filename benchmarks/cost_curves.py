"""Cost curves: wall time, CPU time and peak RSS of each recgen stage on generated data of growing size.

    RECGEN_DATA_DIR=<scratch>/data RECGEN_CACHE_DIR=<scratch>/cache \
        python benchmarks/cost_curves.py --sizes XS,S --out eval/results/scale/cost_curves.json
    python benchmarks/cost_curves.py --sizes L --stages serve --dataset <data>/L --config <fit config> ...
    python benchmarks/cost_curves.py --sizes M --stages synth,load,embed,index --out eval/results/scale/cost_curves.json
    python benchmarks/cost_curves.py --sizes L --stages fit --config eval/results/scale/fit-L-config.json

Each (size, stage) runs as its own process, reaped with ``os.wait4``: its rusage gives that process's CPU time
(user + system) and peak RSS exactly (not the running maximum over all children that ``RUSAGE_CHILDREN``
reports). Stages, in order: ``synth`` (``recgen synth``; the dataset goes to ``RECGEN_DATA_DIR/synth-<size>``),
``load`` (``load_dataset``), ``embed`` (the default embedder over every item text; vectors kept under
``--work``), ``index`` (``make_index`` over those vectors), ``fit`` (``recgen fit --json``: its per-stage
seconds and RSS are kept too), ``serve`` (a fitted ``Recommender``, warm, one user per call, no reasons:
p50/p95), ``eval`` (``recgen eval run -s fusion`` on a user sample, reusing the fit: users/s). A stage already
in the output JSON is skipped (resumable; delete its entry to re-measure). A stage's stderr (its progress) is
kept in ``--work`` as ``<size>-<stage>.log``. The machine's load average is written next to every figure, and
sampled each minute while a stage runs: 2 shared cores, so wall time under load is mostly waiting for a core; CPU time
is the steadier figure. The growth exponent of a stage is the log-log slope of its cost against interactions
over the sizes measured (sizes grow items, users and interactions together).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

STAGES = ("synth", "load", "embed", "index", "fit", "serve", "eval")
HERE = Path(__file__).resolve()


# -- children: one stage each, printing one JSON object on stdout ---------------------------------------
def _child(stage: str, size: str, work: Path, args) -> dict:
    from recgen.data import load_dataset

    name = f"synth-{size}"
    started = time.perf_counter()
    if stage == "load":
        data = load_dataset(name)
        out = {"interactions": data.num_interactions(), "users": len(data.sequences), "items": len(data.catalog)}
    elif stage == "embed":
        from recgen.retrieval.embedder import embed, load_embedder

        data = load_dataset(name)
        texts = [item.text() for item in data.catalog]
        model = load_embedder(None)
        t0 = time.perf_counter()
        vectors = embed(model, texts)
        seconds = time.perf_counter() - t0
        np.save(work / f"{name}-vectors.npy", vectors)
        out = {"titles": len(texts), "embed_seconds": round(seconds, 1), "titles_per_s": round(len(texts) / seconds, 1)}
    elif stage == "index":
        from recgen.retrieval.index import make_index

        vectors = np.load(work / f"{name}-vectors.npy")
        t0 = time.perf_counter()
        index = make_index(vectors)
        build = time.perf_counter() - t0
        queries = vectors[np.random.default_rng(0).choice(len(vectors), min(1000, len(vectors)), replace=False)]
        t0 = time.perf_counter()
        index.search(queries, 100)
        out = {"index": type(index).__name__, "build_seconds": round(build, 2),
               "search_ms_per_query_top100": round(1000 * (time.perf_counter() - t0) / len(queries), 3)}
    elif stage == "serve":
        from recgen.config import RecgenConfig
        from recgen.recommender import open_dataset

        config = RecgenConfig.from_file(args.config) if args.config else None
        t0 = time.perf_counter()
        data, rec = open_dataset(args.dataset or name, config)
        opened = time.perf_counter() - t0
        users = np.random.default_rng(0).choice(len(data.sequences), min(args.serve_calls + 20, len(data.sequences)),
                                                replace=False)
        ids = list(data.sequences)
        times = []
        for n, u in enumerate(users):
            t0 = time.perf_counter()
            rec.recommend(data.sequences[ids[u]], k=10, reasons=False)
            if n == 0:  # lazy state (cold items' neighbours when the folder has none) is built here
                first = time.perf_counter() - t0
            if n >= 20:  # the first 20 calls warm caches and are not counted
                times.append(1000 * (time.perf_counter() - t0))
        out = {"open_s": round(opened, 1), "first_call_s": round(first, 2), "calls": len(times),
               "p50_ms": round(float(np.percentile(times, 50)), 1),
               "p95_ms": round(float(np.percentile(times, 95)), 1), "second_stage": rec.config.ranking.second_stage
               if hasattr(rec.config, "ranking") else None}
        if args.serve_requests:  # the same users with a request in words about their next item (genre or title word)
            import random

            from recgen.data.requests import RequestBuilder

            builder, words, request_times = RequestBuilder(data.catalog), random.Random(0), []
            for n, u in enumerate(users[: args.serve_requests + 1]):
                *history, last = data.sequences[ids[u]]
                request = builder.positive(data.catalog.get(last), words)
                t0 = time.perf_counter()
                rec.recommend(history, query=request.text if request else "something new", k=10, reasons=False)
                if n == 0:  # the first request builds what requests need (the cold items' neighbours, if not saved)
                    out["request_first_call_s"] = round(time.perf_counter() - t0, 2)
                else:
                    request_times.append(1000 * (time.perf_counter() - t0))
            out |= {"request_calls": len(request_times),
                    "request_p50_ms": round(float(np.percentile(request_times, 50)), 1),
                    "request_p95_ms": round(float(np.percentile(request_times, 95)), 1)}
    else:
        raise SystemExit(f"unknown child stage {stage}")
    out["stage_seconds"] = round(time.perf_counter() - started, 1)
    return out


# -- the parent: one process per stage, rusage by wait4 -------------------------------------------------
def _command(stage: str, size: str, work: Path, args) -> list[str]:
    recgen = [sys.executable, "-m", "recgen.cli.main"]
    name = f"synth-{size}"
    if stage == "synth":
        target = Path(os.environ["RECGEN_DATA_DIR"]) / name
        if (target / "synth.json").is_file():  # measured into a scratch folder; the dataset is kept as it is
            target = work / f"{name}-timing"
        return [*recgen, "synth", "--size", size, "--seed", str(args.seed), "--out", str(target), "--json"]
    if stage == "fit":
        return [*recgen, "fit", "-d", name, "--threads", "2", "--json",
                *(["--config", args.config] if args.config else [])]
    if stage == "eval":
        return [*recgen, "eval", "run", "-d", name, "-s", "fusion", "--users", str(args.eval_users), "--results-dir",
                str(work / "eval-results"), "--overwrite"]
    extra = [*(["--dataset", args.dataset] if args.dataset else []), *(["--config", args.config] if args.config else [])]
    return [sys.executable, str(HERE), "--child", stage, "--size", size, "--work", str(work),
            "--serve-calls", str(args.serve_calls), "--serve-requests", str(args.serve_requests), *extra]


def _sample(pid: int, started: float, samples: list, done: threading.Event, every: float = 60.0) -> None:
    """Every ``every`` seconds until ``done``: minutes since start, the 1-minute load and the child's RSS (MB), so
    a long stage shows whether the machine was quiet throughout, not only at its ends."""
    while not done.wait(every):
        try:
            rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                          if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            continue
        samples.append([round((time.perf_counter() - started) / 60, 1), round(os.getloadavg()[0], 2),
                        round(rss_kb / 1024)])


def _measure(cmd: list[str], work: Path, log: Path) -> dict:
    """One stage's process: its stderr goes to ``log`` (the stage's progress, to watch a long run)."""
    load_before, samples, done = os.getloadavg(), [], threading.Event()
    with tempfile.TemporaryFile(dir=work) as out, open(log, "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=os.environ.copy())
        sampler = threading.Thread(target=_sample, args=(proc.pid, started, samples, done), daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0)
        stdout = out.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
    row = {"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
           "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "load_avg_before": [round(x, 2) for x in load_before],
           "load_avg_after": [round(x, 2) for x in os.getloadavg()]}
    if samples:
        loads = sorted(s[1] for s in samples)
        row["load_1min_during"] = {"min": loads[0], "median": loads[len(loads) // 2], "max": loads[-1],
                                   "samples_minute_load_rss_mb": samples}
    text = stdout.strip()
    start = 0 if text.startswith("{") else text.find("\n{") + 1  # the JSON summary, after any stray lines
    if start or text.startswith("{"):  # without this machine's paths (results hold relative paths only)
        row["detail"] = {k: v for k, v in json.loads(text[start:]).items() if k not in ("folder", "events_log")}
    return row


def _eval_detail(work: Path, size: str) -> dict:
    summary = json.loads((work / "eval-results" / f"synth-{size}" / "fusion-test-u{}-s0.json".format(
        ARGS.eval_users)).read_text())
    stages = summary["timing"]["stages"]
    score = stages.get("score", {})
    users = summary["users"]["evaluated"]
    return {"users": users, "score_wall_s": score.get("wall_s"), "score_cpu_s": score.get("cpu_s"),
            "users_per_cpu_s": round(users / score["cpu_s"], 1) if score.get("cpu_s") else None,
            "ndcg@10": summary["metrics"]["ndcg@10"], "stages": stages}


def exponents(results: dict) -> dict:
    """Per stage: log-log slope of wall, CPU and peak RSS against interactions over the measured sizes."""
    from recgen.data.synth import SIZES

    out = {}
    for stage in STAGES:
        points = [(SIZES[size][1], row) for size, rows in results.items() if size in SIZES
                  for name, row in rows.items() if name == stage]
        if len(points) < 2:
            continue
        x = np.log([p[0] for p in points])
        out[stage] = {metric: round(float(np.polyfit(x, np.log([max(p[1][metric], 1e-3) for p in points]), 1)[0]), 2)
                      for metric in ("wall_s", "cpu_s", "peak_rss_mb")}
        out[stage]["sizes"] = [size for size, rows in results.items() if stage in rows]
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recgen.data.synth import SIZES

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for stage in STAGES:
        sizes = [s for s in SIZES if s in results and stage in results[s]]
        if not sizes:
            continue
        x = [SIZES[s][1] for s in sizes]
        for ax, metric in zip(axes, ("wall_s", "cpu_s", "peak_rss_mb")):
            ax.plot(x, [results[s][stage][metric] for s in sizes], marker="o", label=stage)
    for ax, label in zip(axes, ("wall time (s)", "CPU time (s)", "peak RSS (MB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("interactions (items = users = interactions / 10)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("recgen cost per stage on generated data (benchmarks/cost_curves.py; load averages in the JSON)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="XS,S")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--out", type=Path, default=Path("eval/results/scale/cost_curves.json"))
    parser.add_argument("--work", type=Path, default=None, help="scratch (vectors, eval runs); default: the cache")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--serve-calls", type=int, default=200)
    parser.add_argument("--serve-requests", type=int, default=0, help="serve: calls with a request in words too")
    parser.add_argument("--eval-users", type=int, default=2000)
    parser.add_argument("--dataset", default=None, help="serve: a dataset folder or name instead of synth-<size>")
    parser.add_argument("--config", default=None, help="fit: the config file to fit with; serve: the one it was fitted with")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--size", default=None, help=argparse.SUPPRESS)
    ARGS = args = parser.parse_args()
    if "RECGEN_DATA_DIR" not in os.environ:
        raise SystemExit("set RECGEN_DATA_DIR to a scratch folder for the generated datasets (synth-<size>)")
    from recgen.paths import cache_dir

    work = args.work or Path(cache_dir()) / "cost-curves"
    work.mkdir(parents=True, exist_ok=True)
    if args.child:
        print(json.dumps(_child(args.child, args.size, work, args)))
        return
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    measured = results.setdefault("sizes", {})
    for size in args.sizes.split(","):
        for stage in args.stages.split(","):
            if stage not in STAGES:
                raise SystemExit(f"unknown stage {stage}; choose from {', '.join(STAGES)}")
            if stage in measured.get(size, {}):
                print(f"{size} {stage}: already measured, skipped", flush=True)
                continue
            row = _measure(_command(stage, size, work, args), work, work / f"{size}-{stage}.log")
            if stage == "eval":
                row["detail"] = _eval_detail(work, size)
            measured.setdefault(size, {})[stage] = row
            results["exponents_vs_interactions"] = exponents(measured)
            command = "python benchmarks/cost_curves.py " + " ".join(sys.argv[1:])
            for path, tag in ((os.environ["RECGEN_DATA_DIR"], "<data>"), (str(cache_dir()), "<cache>")):
                command = command.replace(path, tag)  # no path of this machine in a result
            results.setdefault("commands", {})[f"{size} {stage}"] = command
            results["command"] = command
            results["machine"] = {"cpus": os.cpu_count(), "note": "shared by ~8 jobs; see load_avg_* per row"}
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1) + "\n")
            plot(measured, args.out.with_suffix(".png"))
            print(f"{size} {stage}: wall {row['wall_s']} s, cpu {row['cpu_s']} s, peak {row['peak_rss_mb']} MB, "
                  f"load {row['load_avg_before'][0]}", flush=True)


ARGS: argparse.Namespace


if __name__ == "__main__":
    main()

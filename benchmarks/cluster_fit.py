"""`recgen fit` in one process vs on a local Dask cluster of N workers, on the same data, in one run (issue 24).

    python benchmarks/cluster_fit.py --size XS --repeat 2 --workers 2 --out eval/results/cluster/fit-xs

Each repetition runs the single-process fit, then the cluster fit (interleaved, so load hits both alike), each as
a user runs it (``recgen fit --json``, a fresh cache: the catalog embedding is included) on ``recgen synth`` data
generated once. Every cluster fit gets a fresh cluster started the way a user starts one (``dask scheduler`` +
``dask worker --nthreads 1`` per worker, loopback), so the workers' CPU time and peak RSS are that fit's own.
Written: wall seconds, CPU seconds and peak RSS of the client and of each worker, the stage seconds, the chosen
held-out NDCG@10 and where each stage ran; the load average before and after each fit (the machine is shared:
compare the ratio within a repetition, not the absolute seconds). Only counts and timings, never the data.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

from fitkit import fit_env, run_fit


def _env(cache: Path) -> dict:
    return fit_env(cache)


def _worker_usage() -> dict:
    """Run on a worker: its process's CPU seconds and peak RSS so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def fit(data: Path, folder: Path, threads: int, extra: list[str]) -> dict:
    """One `recgen fit --json` in a child process (:func:`fitkit.run_fit`), written to ``folder/fitted``."""
    return run_fit(data, folder, ["--threads", str(threads), "--out", str(folder / "fitted"), *extra])


def markdown(result: dict) -> str:
    """The runs as a table (the JSON holds the stages and where each ran)."""
    rows = ["| rep | fit | wall s | client CPU s | client peak RSS MB | workers CPU s | workers peak RSS MB | "
            "held-out NDCG@10 (chosen depth) | load 1-min before→after |", "|---|---|---:|---:|---:|---|---|---|---|"]
    for rep, run in enumerate(result["runs"]):
        for name in ("single", "cluster"):
            r = run[name]
            workers = r.get("workers", [])
            rows.append(f"| {rep} | {name} | {r['wall_seconds']} | {r['client_cpu_seconds']} | {r['client_peak_rss_mb']} | "
                        f"{' + '.join(str(w['cpu_seconds']) for w in workers) or '—'} | "
                        f"{' / '.join(str(w['peak_rss_mb']) for w in workers) or '—'} | "
                        f"{r['chosen']['held_out_ndcg@10']} ({r['chosen']['depth']}) | {r['load_before']}→{r['load_after']} |")
    diffs = [run["held_out_ndcg_diff"] for run in result["runs"]]
    return (f"# `recgen fit` single process vs {result['workers']}-worker Dask cluster\n\n`{result['command']}`\n\n"
            f"Data: {result['data']}. Cluster: {result['cluster']}.\n\n" + "\n".join(rows) +
            f"\n\nHeld-out NDCG@10 cluster − single: {diffs}.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="XS", help="recgen synth size (XS, S, M, L)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="the single-process fit's LightGBM threads")
    parser.add_argument("--embed-chunk", type=int, default=256, help="fit.cluster.embed_chunk")
    parser.add_argument("--out", required=True, help="output path without extension (.json is written)")
    args = parser.parse_args()
    from recgen.data.synth import SynthSpec, generate
    from recgen.fit.local_cluster import LocalDaskCluster

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)  # before the runs: never lose them at the end
    runs = []
    with tempfile.TemporaryDirectory(prefix="cluster-fit-") as tmp:
        root = Path(tmp)
        data = root / f"synth-{args.size.lower()}"
        generate(SynthSpec.sized(args.size), data)
        config = root / "cluster.yaml"
        config.write_text(f"fit:\n  cluster:\n    embed_chunk: {args.embed_chunk}\n")
        for rep in range(args.repeat):
            single = fit(data, root / f"single-{rep}", args.threads, [])
            print(f"rep {rep} single: {single['wall_seconds']} s, NDCG {single['chosen']['held_out_ndcg@10']}",
                  file=sys.stderr)
            folder = root / f"cluster-{rep}"
            with LocalDaskCluster(folder, args.workers, env=_env(folder / "worker-cache")) as cluster:
                remote = fit(data, folder / "fit", args.threads, ["--cluster", cluster.address, "--config", str(config)])
                remote["workers"] = list(cluster.client.run(_worker_usage).values())
            print(f"rep {rep} cluster: {remote['wall_seconds']} s, NDCG {remote['chosen']['held_out_ndcg@10']}",
                  file=sys.stderr)
            runs.append({"single": single, "cluster": remote,
                         "held_out_ndcg_diff": round(remote["chosen"]["held_out_ndcg@10"]
                                                     - single["chosen"]["held_out_ndcg@10"], 5),
                         "wall_ratio_cluster_over_single": round(remote["wall_seconds"] / single["wall_seconds"], 2)})
    result = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
              "data": f"recgen synth --size {args.size} (seed 0)", "workers": args.workers,
              "cluster": f"dask scheduler + {args.workers} x `dask worker --nthreads 1` on loopback, same machine "
                         "(2 cores shared with other jobs): the figure is correctness and overhead, not speed-up",
              "machine": f"{os.cpu_count()} cores", "runs": runs}
    Path(args.out).with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    Path(args.out).with_suffix(".md").write_text(markdown(result))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

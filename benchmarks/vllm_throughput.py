"""transformers vs vLLM (CPU build) in one run: users/s for score, generate, and score + 10 reasons, engine
start time, and how much the two backends' lists agree (and their NDCG@10 on the held-out item).

    .venv-vllm/bin/python benchmarks/vllm_throughput.py --users 40 --reps 3 --threads 2 --out eval/results/vllm/throughput

Both backends rank the same users (the first ``--users`` of ml-100k, leave-one-out: the last item is held out)
with the same retrieval, the same ``k`` and the same threads (torch threads for transformers; vLLM's OpenMP
threads bound to cores 0..threads-1). Repetitions are interleaved (A B, B A, A B, …) so load from other
processes on a shared machine falls on both; the median of the repetitions is reported, with the load
average. vLLM runs with its defaults (``dtype=auto`` = bf16 on CPU, compiled graphs); its start time is
measured first (``--start-eager`` also measures an ``enforce_eager`` start). vLLM's prefix cache is emptied
before every timed run: within a run users share the instruction prefix (a real gain), but the same prompts
from an earlier repetition or task would make later runs look many times faster. Writes ``<out>.json`` and
``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

TASKS = {"score": {"mode": "score", "reasons": False}, "generate": {"mode": "generate", "reasons": False},
         "score+reasons": {"mode": "score", "reasons": True}}


def load() -> float:
    return round(os.getloadavg()[0], 2)


def ndcg_hr(lists: list[list[str]], targets: list[str], k: int) -> tuple[float, float]:
    ndcg = hr = 0.0
    for items, target in zip(lists, targets):
        if target in items[:k]:
            hr += 1
            ndcg += 1 / math.log2(items.index(target) + 2)
    return ndcg / len(targets), hr / len(targets)


def agreement(a: list[list[str]], b: list[list[str]], k: int) -> dict:
    n = len(a)
    return {"top1": sum(x[:1] == y[:1] for x, y in zip(a, b)) / n,
            "overlap_at_k": sum(len(set(x[:k]) & set(y[:k])) / k for x, y in zip(a, b)) / n,
            "identical_lists": sum(x[:k] == y[:k] for x, y in zip(a, b)) / n}


def run_task(rec, histories: list[list[str]], k: int, mode: str, reasons: bool) -> tuple[float, list[list[str]]]:
    from recgen.types import RecommendRequest

    requests = [RecommendRequest(history=h, k=k, mode=mode, reasons=reasons) for h in histories]
    start = time.perf_counter()
    results = rec.recommend_batch(requests)
    seconds = time.perf_counter() - start
    return seconds, [[r.item_id for r in recs] for recs in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--start-eager", action="store_true", help="also time an enforce_eager engine start")
    parser.add_argument("--out", default="eval/results/vllm/throughput")
    args = parser.parse_args()

    import torch

    from recgen.config import RecgenConfig
    from recgen.lm.vllm_engine import VLLMBackend
    from recgen.recommender import Recommender, open_dataset

    config = RecgenConfig(lm={"threads": args.threads})
    dataset, rec_tf = open_dataset(args.dataset, config)
    users = sorted(dataset.users, key=lambda u: (len(u), u))[: args.users]
    histories = [list(dataset.history(u))[:-1] for u in users]
    targets = [list(dataset.history(u))[-1] for u in users]
    report: dict = {"command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]), "users": len(users),
                    "k": args.k, "reps": args.reps, "threads": args.threads, "cpu_count": os.cpu_count(),
                    "machine": platform.processor() or platform.machine(), "load_before": load(), "start_s": {}}

    started = time.perf_counter()
    _ = rec_tf.backend  # loaded on first use (config.lm.backend is transformers): this times its start
    report["start_s"]["transformers"] = round(time.perf_counter() - started, 1)
    torch.set_num_threads(args.threads)

    vconf = config.updated(lm={"backend": "vllm", "kv_cache_gib": 2})
    if args.start_eager:
        started = time.perf_counter()
        eager = VLLMBackend.from_settings(vconf.updated(lm={"enforce_eager": True}).lm)
        report["start_s"]["vllm_eager"] = round(time.perf_counter() - started, 1)
        eager.close()
        del eager
    cache = Path.home() / ".cache" / "vllm" / "torch_compile_cache"
    report["compile_cache_present_before_start"] = cache.is_dir() and any(cache.iterdir())
    started = time.perf_counter()
    vllm_backend = VLLMBackend.from_settings(vconf.lm)
    report["start_s"]["vllm_compiled"] = round(time.perf_counter() - started, 1)
    rec_vllm = Recommender(dataset.catalog, vconf, retriever=rec_tf.retriever, state=rec_tf.pipeline.state,
                           backend=vllm_backend)
    backends = {"transformers": rec_tf, "vllm": rec_vllm}
    for rec in backends.values():  # warm-up: first-call costs (graph capture, allocator) are not throughput
        run_task(rec, histories[:2], args.k, "score", True)
        run_task(rec, histories[:2], args.k, "generate", False)

    tasks = [t for t in args.tasks.split(",") if t]
    seconds: dict = {t: {b: [] for b in backends} for t in tasks}
    lists: dict = {t: {} for t in tasks}
    for rep in range(args.reps):
        for task in tasks:
            order = list(backends) if (rep + tasks.index(task)) % 2 == 0 else list(reversed(backends))
            for name in order:
                if name == "vllm":  # no prompt cached by an earlier task or repetition (same users every time)
                    vllm_backend.llm.reset_prefix_cache()
                took, out = run_task(backends[name], histories, args.k, **TASKS[task])
                seconds[task][name].append(round(took, 2))
                lists[task].setdefault(name, out)
                print(f"rep {rep + 1} {task:>14} {name:>12}: {len(users) / took:6.2f} users/s ({took:.1f} s, "
                      f"load {load()})", flush=True)

    report["load_after"] = load()
    report["tasks"] = {}
    for task in tasks:
        row = {}
        for name in backends:
            median = statistics.median(seconds[task][name])
            ndcg, hr = ndcg_hr(lists[task][name], targets, args.k)
            row[name] = {"seconds": seconds[task][name], "median_s": round(median, 2),
                         "users_per_s": round(len(users) / median, 2), "ndcg@10": round(ndcg, 4), "hr@10": round(hr, 4)}
        row["speedup_vllm"] = round(row["transformers"]["median_s"] / row["vllm"]["median_s"], 2)
        row["agreement"] = {k: round(v, 3) for k, v in agreement(lists[task]["transformers"], lists[task]["vllm"],
                                                                 args.k).items()}
        report["tasks"][task] = row
    vllm_backend.close()

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    lines = [f"# transformers vs vLLM (CPU build), same run, {report['users']} ml-100k users, k={report['k']}", "",
             f"Command: `{report['command']}` (in `.venv-vllm`). {report['reps']} interleaved repetitions, median shown; "
             f"{report['threads']} threads each on a {report['cpu_count']}-core machine shared with other jobs "
             f"(load average {report['load_before']} before, {report['load_after']} after). vLLM: dtype auto "
             "(bf16 on CPU), compiled graphs, prefix caching (emptied before every timed run); transformers: float32.", "",
             "| task | transformers users/s | vLLM users/s | vLLM speed-up | top-1 agreement | overlap@10 | "
             "NDCG@10 tf / vLLM |", "|---|---|---|---|---|---|---|"]
    for task, row in report["tasks"].items():
        tf, vl = row["transformers"], row["vllm"]
        lines.append(f"| {task} | {tf['users_per_s']} | {vl['users_per_s']} | {row['speedup_vllm']}× | "
                     f"{row['agreement']['top1']:.1%} | {row['agreement']['overlap_at_k']:.1%} | "
                     f"{tf['ndcg@10']:.4f} / {vl['ndcg@10']:.4f} |")
    starts = ", ".join(f"{k} {v} s" for k, v in report["start_s"].items())
    lines += ["", f"Start times: {starts} (compile cache present before the compiled start: "
              f"{report['compile_cache_present_before_start']}).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

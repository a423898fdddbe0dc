"""Per-user latency of `Recommender.recommend` on ml-100k, index build times, peak memory, FLOP floor.

    python benchmarks/latency.py --users 50 --out eval/results/latency

Writes ``<out>.json`` and ``<out>.md``. Load average is recorded: other processes on the machine slow
every figure here, so compare runs only at similar load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import psutil
import torch


def matmul_gflops(size: int = 1024, repeats: int = 20) -> float:
    """Measured fp32 matmul throughput on this machine (the denominator of the FLOP floor)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def non_embedding_params(model) -> int:
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight.numel()
    return total - emb


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reasons-k", type=int, default=10)
    parser.add_argument("--skip-beauty", action="store_true")
    parser.add_argument("--out", default="eval/results/latency")
    args = parser.parse_args()

    from recgen import RecgenConfig, Recommender, load_dataset
    from recgen.ranking.ranker import RankRequest
    from recgen.retrieval import Retriever

    proc = psutil.Process()
    result: dict = {"command": "python " + " ".join(sys.argv), "machine": {
        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "torch": torch.__version__, "load_avg_start": os.getloadavg()}}

    data = load_dataset("ml-100k")
    result["index_build_s"] = {"ml-100k": round(timed(lambda: Retriever.build(data.catalog)), 2)}
    if not args.skip_beauty:
        beauty = load_dataset("amazon-beauty")
        result["index_build_s"]["amazon-beauty"] = round(timed(lambda: Retriever.build(beauty.catalog)), 2)

    rec = Recommender.from_dataset(data, RecgenConfig())
    start = time.perf_counter()
    backend = rec.backend
    result["lm_load_s"] = round(time.perf_counter() - start, 2)
    users = random.Random(args.seed).sample(sorted(data.users, key=int), args.users)
    histories = [data.history(u)[:-2] for u in users]

    rec.recommend(history=histories[0], k=20, reasons=False)  # warm-up (first call allocates)
    jobs = [RankRequest(history=h, query=None, candidates=[i for i, _ in rec.retriever.retrieve(h, n=20)], k=20)
            for h in histories]  # what recommend ranks (no fitted second stage here: the retrieved top 20)
    tokens = [backend.count_tokens(rec.ranker.prompt(job)) for job in jobs]
    score_s = [timed(lambda h=h: rec.recommend(history=h, k=20, reasons=False)) for h in histories]
    reasons_s = [timed(lambda h=h: rec.recommend(history=h, k=args.reasons_k, reasons=True)) for h in histories]
    sources = [r.reason_source for h in histories[:10] for r in rec.recommend(history=h, k=args.reasons_k)]

    gflops = matmul_gflops()
    params = non_embedding_params(backend.model)
    median_tokens = statistics.median(tokens)
    floor = 2 * params * median_tokens / (gflops * 1e9)
    result.update({
        "users": args.users, "seed": args.seed,
        "score_mode_20_candidates_s": {"median": round(statistics.median(score_s), 3),
                                        "p90": round(sorted(score_s)[int(0.9 * len(score_s)) - 1], 3)},
        f"score_plus_{args.reasons_k}_reasons_s": {"median": round(statistics.median(reasons_s), 3),
                                                    "p90": round(sorted(reasons_s)[int(0.9 * len(reasons_s)) - 1], 3)},
        "prompt_tokens": {"median": median_tokens, "min": min(tokens), "max": max(tokens)},
        "flop_floor": {"non_embedding_params": params, "matmul_gflops": round(gflops, 1),
                       "floor_s": round(floor, 3),
                       "formula": "2 x non-embedding params x prompt tokens / measured matmul GFLOP/s"},
        "reason_source_share_model": round(sources.count("model") / max(1, len(sources)), 3),
        "peak_rss_gb": round(proc.memory_info().rss / 2**30, 2),
        "load_avg_end": os.getloadavg(),
    })
    try:
        import resource

        result["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    except ImportError:
        pass
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    s, r = result["score_mode_20_candidates_s"], result[f"score_plus_{args.reasons_k}_reasons_s"]
    out.with_suffix(".md").write_text(f"""# Latency on this machine (ml-100k, default models)

Command: `{result['command']}`  
Machine: {os.cpu_count()} cores, torch {torch.__version__}, load average at start {result['machine']['load_avg_start']}, at end {result['load_avg_end']}

| figure | measured | target |
|---|---|---|
| score mode, 20 candidates, median over {args.users} users | {s['median']} s (p90 {s['p90']} s) | ≤ 1.5 s |
| score mode + {args.reasons_k} reasons, median | {r['median']} s (p90 {r['p90']} s) | ≤ 6 s |
| ranking prompt tokens (median / min / max) | {median_tokens} / {min(tokens)} / {max(tokens)} | |
| FLOP floor of one ranking pass | {floor:.3f} s = 2 × {params/1e6:.1f} M × {median_tokens} tokens / {gflops:.0f} GFLOP/s | |
| index build, ml-100k | {result['index_build_s']['ml-100k']} s | |
| index build, amazon-beauty | {result['index_build_s'].get('amazon-beauty', 'not run')} s | |
| LM load (cached safetensors) | {result['lm_load_s']} s | |
| reasons that passed the fact check (first 10 users) | {result['reason_source_share_model']:.0%} | |
| peak RSS | {result['peak_rss_gb']} GB | |
""")
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()

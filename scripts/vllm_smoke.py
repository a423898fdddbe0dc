"""vLLM smoke test: the recgen pipeline end to end with the vLLM backend and the transformers backend.

    python scripts/vllm_smoke.py --device cpu|cuda --users 200 [--adapter runs/lora] [--lm HF_ID_OR_FOLDER] [--mode score|generate]

``--device cpu`` (the default) runs vLLM's CPU build: ``make setup-vllm``, then ``.venv-vllm/bin/python
scripts/vllm_smoke.py --device cpu --users 40``. ``--device cuda`` needs a CUDA GPU and vLLM's CUDA build
(``pip install 'recgen[vllm]'`` in an environment of its own: vLLM pins its torch).
For each backend it recommends for the first ``--users`` users of ml-100k in batches, prints users/s, and
checks that every recommended item is one of that request's retrieved candidates, distinct, ``k`` long and
not in the user's history; it also prints how often the two backends agree. Exits non-zero when a check
fails, and with a clear message (exit code 2) where the device or vLLM is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time


def device_or_exit(device: str) -> None:
    problems = []
    try:
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            problems.append("no CUDA GPU is visible to torch")
    except ImportError:
        problems.append("torch is not installed")
    if importlib.util.find_spec("vllm") is None:
        problems.append("vLLM is not installed (CPU: `make setup-vllm` and run this with .venv-vllm/bin/python; "
                        "CUDA: pip install 'recgen[vllm]', in its own environment)")
    if problems:
        print(f"vllm_smoke: cannot run on {device} here: " + "; ".join(problems) + "; nothing was tested.",
              file=sys.stderr)
        sys.exit(2)


def run_backend(name: str, rec, dataset, users: list[str], k: int, mode: str, reasons: bool, batch_size: int) -> dict:
    from recgen.types import RecommendRequest

    _ = rec.backend  # load outside the timing
    requests = [RecommendRequest(history=list(dataset.history(u)), k=k, mode=mode, reasons=reasons) for u in users]
    start = time.perf_counter()
    results = []
    for first in range(0, len(requests), batch_size):
        results.extend(rec.recommend_batch(requests[first: first + batch_size]))
    seconds = time.perf_counter() - start

    invalid = 0
    n = max(rec.config.retrieval.n_candidates, k)
    for user, recs in zip(users, results):
        history = dataset.history(user)
        candidates = {c for c, _ in rec.retriever.retrieve(history, None, n=n, exclude=set())}
        ids = [r.item_id for r in recs]
        if len(ids) != k or len(set(ids)) != k or not set(ids) <= candidates or set(ids) & set(history):
            invalid += 1
    out = {"backend": name, "users": len(users), "seconds": round(seconds, 2),
           "users_per_second": round(len(users) / seconds, 2), "invalid": invalid,
           "items": [[r.item_id for r in recs] for recs in results]}
    print(f"{name:>12}: {out['users_per_second']:.2f} users/s over {seconds:.1f} s, invalid results: {invalid}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--lm", default=None, help="base model (default SmolLM2-135M-Instruct)")
    parser.add_argument("--adapter", default=None, help="peft LoRA adapter folder (used by both backends)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--mode", choices=("score", "generate"), default="score")
    parser.add_argument("--reasons", action="store_true")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for both backends")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.5,
                        help="vLLM's share of the GPU (the transformers run shares the card)")
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = parser.parse_args()
    device_or_exit(args.device)

    import torch

    from recgen.cli.common import make_config
    from recgen.lm.vllm_engine import VLLMBackend
    from recgen.recommender import open_dataset

    runs = []
    users = None
    if not args.skip_transformers:
        cfg = make_config(lm={"model": args.lm, "adapter": args.adapter, "device": args.device,
                              "threads": args.threads})
        dataset, rec = open_dataset(args.dataset, cfg, show_progress=False)
        users = sorted(dataset.users, key=lambda u: (len(u), u))[: args.users]
        runs.append(run_backend("transformers", rec, dataset, users, args.k, args.mode, args.reasons, args.batch_size))
        del rec
        if args.device == "cuda":
            torch.cuda.empty_cache()

    cfg = make_config(lm={"model": args.lm, "adapter": args.adapter, "backend": "vllm", "device": args.device,
                          "threads": args.threads})
    dataset, rec = open_dataset(args.dataset, cfg, show_progress=False)
    users = users or sorted(dataset.users, key=lambda u: (len(u), u))[: args.users]
    if args.device == "cuda":  # vLLM's share of the card (the transformers run shared it)
        rec.pipeline._backend = VLLMBackend.from_settings(cfg.lm, gpu_memory_utilization=args.gpu_memory_utilization)
    runs.append(run_backend("vllm", rec, dataset, users, args.k, args.mode, args.reasons, args.batch_size))

    report = {"users": len(users), "k": args.k, "mode": args.mode, "reasons": args.reasons, "adapter": args.adapter,
              "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu", "runs": [{k: v for k, v in r.items() if k != "items"} for r in runs]}
    if len(runs) == 2:
        a, b = runs[0]["items"], runs[1]["items"]
        report["top1_agreement"] = round(sum(x[:1] == y[:1] for x, y in zip(a, b)) / len(a), 3)
        report["mean_overlap_at_k"] = round(sum(len(set(x) & set(y)) / args.k for x, y in zip(a, b)) / len(a), 3)
        print(f"agreement: top-1 {report['top1_agreement']:.1%}, overlap@{args.k} {report['mean_overlap_at_k']:.1%} "
              "(fp16/bf16 kernels vs float32 reorder near-ties; large gaps point to a prompt or label mismatch)")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(report, handle, indent=2)
    if any(r["invalid"] for r in runs):
        sys.exit("vllm_smoke: some results were not valid candidates (see above)")


if __name__ == "__main__":
    main()

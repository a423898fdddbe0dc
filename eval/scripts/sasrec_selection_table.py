"""Markdown table of the SASRec validation runs in one selection folder (``eval/results/sasrec/selection/<dataset>``).

    python eval/scripts/sasrec_selection_table.py eval/results/sasrec/selection/amazon-beauty [run-name ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

KEYS = ("hidden", "dropout", "lr", "positions", "schedule", "warmup_epochs", "decay_epochs", "optimizer", "weight_decay",
        "max_len", "patience", "seed")


def row(path: Path) -> str:
    run = json.loads(path.read_text())
    fit, params = run["fit"], run["config"]["system_params"]
    m = run["metrics"]
    settings = " ".join(f"{k}={params[k]}" for k in KEYS if k in params)
    scores = " ".join(f"{h['epoch']}:{h['valid_ndcg@10']:.4f}".replace("0.", ".") for h in fit.get("history", [])
                      if "valid_ndcg@10" in h)
    return (f"| {run['run_name']} | {settings} | {fit['best_epoch']} / {fit['epochs']} | {fit['stopped']} | "
            f"{m['ndcg@10']['mean']:.4f} [{m['ndcg@10']['ci95'][0]:.4f}, {m['ndcg@10']['ci95'][1]:.4f}] | "
            f"{m['recall@10']['mean']:.4f} | {fit['train_cpu_seconds']:.0f} | {fit.get('peak_rss_mb', 0) / 1024:.2f} |"
            f"\n<!-- curve {run['run_name']}: {scores} -->")


def main(argv: list[str]) -> None:
    folder = Path(argv[0])
    names = argv[1:] or sorted(p.stem for p in folder.glob("*.json"))
    print("| run | settings | best epoch / epochs | stop | valid NDCG@10 (all users) [95% CI] | valid R@10 | "
          "train CPU-s | peak RSS GB |")
    print("|---|---|---:|---|---:|---:|---:|---:|")
    for name in names:
        print(row(folder / f"{name}.json"))


if __name__ == "__main__":
    main(sys.argv[1:])

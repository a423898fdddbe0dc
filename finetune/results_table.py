"""The tables of finetune/results/RESULTS.md: every system on the users of one LM run (paired, same users).

Usage: python finetune/results_table.py ml-100k amazon-beauty [--users-of lm-lora-test-u500-s0]

Reads eval/results/<dataset>/<run>.users.jsonl(.gz). Ranks are over the full catalog, so a missed target
counts as 0. A run that did not score every one of those users is left out (no unpaired rows); of the runs
of one system the first that covers the users is shown (a seeded larger sample contains the smaller one,
and the deterministic ranker gives each user the same list in both). The second
table looks only at the users whose target was retrieved: the only ones a ranker can move.
"""
import gzip
import json
import statistics
import sys
from pathlib import Path

RUNS = [
    ("retrieval only (hybrid, base MiniLM)", "retrieval-hybrid-test"),
    ("retrieval only (hybrid, fine-tuned MiniLM)", "retrieval-hybrid-ftret-test"),
    ("zero-shot LM ranker", "lm-zeroshot-test-u500-s0"),
    ("zero-shot LM ranker", "lm-zeroshot-test-u2000-s0"),
    ("zero-shot LM ranker", "lm-zeroshot-test-all"),
    ("fine-tuned LM ranker (LoRA)", "lm-lora-test-u500-s0"),
    ("fine-tuned LM ranker (LoRA)", "lm-lora-test-u2000-s0"),
    ("fine-tuned LM ranker (LoRA)", "lm-lora-test-all"),
    ("fine-tuned LM + validation-set retrieval prior", "lm-lora-prior-test-u500-s0"),
    ("fine-tuned LM + validation-set retrieval prior", "lm-lora-prior-test-u2000-s0"),
    ("fine-tuned retriever + fine-tuned LM ranker", "lm-lora-ftret-test-u500-s0"),
    ("SASRec", "sasrec-test"),
]


def load_users(dataset: str, run: str) -> dict[str, dict] | None:
    """Per-user rows of a run (header line skipped), or None if the run does not exist."""
    path = Path(f"eval/results/{dataset}/{run}.users.jsonl")
    if path.is_file():
        text = path.read_text()
    elif path.with_suffix(".jsonl.gz").is_file():
        text = gzip.decompress(path.with_suffix(".jsonl.gz").read_bytes()).decode()
    else:
        return None
    rows = [json.loads(line) for line in text.splitlines()[1:] if line]
    return {row["user"]: row for row in rows}


def tables(dataset: str, anchor: str) -> str:
    anchor_rows = load_users(dataset, anchor)
    if anchor_rows is None:
        raise SystemExit(f"no run {anchor!r} in eval/results/{dataset}/")
    users = list(anchor_rows)
    hits = [u for u in users if anchor_rows[u]["retrieved"]]
    end_to_end = [f"### {dataset}: {len(users)} users of `{anchor}`",
                  "| system | run | NDCG@10 | Recall@10 | MRR@10 | Recall@20 |", "|---|---|---:|---:|---:|---:|"]
    within = [f"### {dataset}: the {len(hits)} of them whose target was retrieved",
              "| system | run | NDCG@10 | mean rank of the target |", "|---|---|---:|---:|"]
    shown = set()
    for label, run in RUNS:
        rows = load_users(dataset, run)
        if label in shown or rows is None or any(u not in rows for u in users):
            continue  # one run per system: runs of a larger sample score these users identically
        shown.add(label)
        def mean(key: str, among: list[str]) -> float:
            return statistics.mean(rows[u][key] for u in among)
        recall20 = statistics.mean((rows[u]["rank"] or 10**9) <= 20 for u in users)
        end_to_end.append(f"| {label} | `{run}` | {mean('ndcg@10', users):.4f} | {mean('recall@10', users):.4f} | "
                          f"{mean('mrr@10', users):.4f} | {recall20:.4f} |")
        if "ftret" not in run and run != "sasrec-test":  # same 20 candidates as the anchor
            within.append(f"| {label} | `{run}` | {mean('ndcg@10', hits):.3f} | {mean('rank', hits):.2f} |")
    return "\n".join(end_to_end + [""] + within) + "\n"


def main(argv: list[str]) -> None:
    anchor = "lm-lora-test-u500-s0"
    if "--users-of" in argv:
        i = argv.index("--users-of")
        anchor = argv[i + 1]
        del argv[i:i + 2]
    for dataset in argv or ["ml-100k", "amazon-beauty"]:
        print(tables(dataset, anchor))


if __name__ == "__main__":
    main(sys.argv[1:])

"""Paired test comparisons behind finetune/results/RESULTS.md, written to finetune/results/<ds>-ranker/test_comparisons.json.

Usage: python finetune/compare_test.py   (after the `recgen eval run` commands listed in RESULTS.md)
Each pair is `recgen eval compare --intersect --json` on the users both runs scored; a pair whose runs do not
exist yet is reported and skipped.
"""
import json
import subprocess
import sys
from pathlib import Path

PAIRS = [
    ("lm-lora-test-u500-s0", "retrieval-hybrid-test"),
    ("lm-lora-test-u500-s0", "lm-zeroshot-test-u500-s0"),
    ("lm-lora-test-u500-s0", "sasrec-test"),
    ("lm-lora-prior-test-u500-s0", "retrieval-hybrid-test"),
    ("lm-lora-prior-test-u500-s0", "lm-zeroshot-test-u500-s0"),
    ("lm-lora-ftret-test-u500-s0", "retrieval-hybrid-test"),
    ("lm-lora-ftret-test-u500-s0", "lm-lora-test-u500-s0"),
    ("lm-zeroshot-test-u500-s0", "retrieval-hybrid-test"),
    ("retrieval-hybrid-ftret-test", "retrieval-hybrid-test"),
    # larger samples (more users whose target is retrieved -> more power)
    ("lm-lora-test-u2000-s0", "retrieval-hybrid-test"),
    ("lm-lora-test-u2000-s0", "lm-zeroshot-test-u2000-s0"),
    ("lm-lora-test-u2000-s0", "sasrec-test"),
    ("lm-lora-prior-test-u2000-s0", "retrieval-hybrid-test"),
    ("lm-lora-prior-test-u2000-s0", "lm-zeroshot-test-u2000-s0"),
    ("lm-zeroshot-test-u2000-s0", "retrieval-hybrid-test"),
    ("lm-lora-test-all", "retrieval-hybrid-test"),
    ("lm-lora-test-all", "lm-zeroshot-test-all"),
    ("lm-lora-test-all", "sasrec-test"),
    ("lm-zeroshot-test-all", "retrieval-hybrid-test"),
]
DATASETS = {"ml-100k": "ml-100k", "amazon-beauty": "beauty"}


def main() -> int:
    for dataset, short in DATASETS.items():
        rows = []
        for a, b in PAIRS:
            if not all(Path(f"eval/results/{dataset}/{run}.json").is_file() for run in (a, b)):
                continue
            out = subprocess.run(["recgen", "eval", "compare", "-d", dataset, a, b, "--intersect", "--json"],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{dataset}: {a} vs {b} failed: {out.stderr.strip()[-300:]}", file=sys.stderr)
                continue
            rows.append(json.loads(out.stdout))
        path = Path(f"finetune/results/{short}-ranker/test_comparisons.json")
        path.write_text(json.dumps(rows, indent=2) + "\n")
        print(f"wrote {path} ({len(rows)} comparisons)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

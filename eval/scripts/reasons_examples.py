"""10 seeded (not hand-picked) reasons per run, as the user sees them, for EXAMPLES.md.

    python eval/scripts/reasons_examples.py ml-100k grounded-c529b2d-u8-s0 [--n 10] [--seed 0] [--full OUT.md]

Reads the run's per-user rows (``<cache>/reasons/<dataset>/<run>.rows.jsonl``, written by
``recgen eval reasons``). Dataset text may not be copied into the repository, so the committed lines write
titles as placeholders (⟨item⟩ = the recommended item, ⟨liked N⟩ = the user's N-th most recent history item,
⟨w⟩ = another word taken from those titles); ``--full`` writes the same sample with the titles to a file outside git.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

from recgen.data import load_dataset
from recgen.evaluation.reasons import default_audit_dir
from recgen.reasons.facts import GENERIC_WORDS
from recgen.reasons.grounding import display_title
from recgen.text import STOPWORDS, short_title


def _forms(title: str) -> list[str]:
    forms = {title, display_title(title), display_title(title).rstrip("…"), short_title(title)}
    return sorted((f for f in forms if len(f) >= 3), key=len, reverse=True)


def masked(text: str, item, history) -> str:
    """Titles as placeholders, then any other word taken from those titles (product names, brands) as ⟨w⟩;
    genre/category names and generic words stay."""
    for label, entry in [("⟨item⟩", item)] + [(f"⟨liked {n}⟩", h) for n, h in enumerate(reversed(history), 1)]:
        for form in _forms(entry.title):
            text = re.sub(re.escape(form), label, text, flags=re.IGNORECASE)
    keep = {g.lower() for e in [item, *history] for g in e.genres} | set(GENERIC_WORDS) | set(STOPWORDS)
    title_words = {w.lower() for e in [item, *history] for w in re.findall(r"[A-Za-z0-9']+", e.title)} - keep
    return re.sub(r"(?<![⟨\w])[A-Za-z0-9']+(?![\w⟩])",
                  lambda m: "⟨w⟩" if m.group(0).lower() in title_words else m.group(0), text)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset")
    parser.add_argument("run")
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full", type=Path, default=None)
    args = parser.parse_args()
    rows_path = default_audit_dir() / args.dataset / f"{args.run}.rows.jsonl"
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()]
    rows = [r for r in rows if not r.get("header")]
    catalog = load_dataset(args.dataset).catalog
    pairs = [(r, x) for r in sorted(rows, key=lambda r: r["position"]) for x in r["reasons"]]
    picked = random.Random(args.seed).sample(pairs, min(args.n, len(pairs)))
    lines, full = [], []
    for row, reason in picked:
        item = catalog.get(reason["item_id"])
        history = [catalog.get(i) for i in row["history"]]
        lines.append(f"- [{reason['source']}] {masked(reason['served_text'], item, history)}")
        full.append(f"- [{reason['source']}] {item.title}: {reason['served_text']}")
    print("\n".join(lines))
    if args.full:
        args.full.parent.mkdir(parents=True, exist_ok=True)
        args.full.write_text("\n".join(full) + "\n")


if __name__ == "__main__":
    main()

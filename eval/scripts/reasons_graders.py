"""Agreement between two graders' hand grades of the same sample (``hand-graded-<dataset>-<version>.jsonl`` and a
second grader's file in the same format): whole grade, 'supported' and 'personal', with Cohen's kappa.

    python eval/scripts/reasons_graders.py eval/results/reasons/hand-graded-ml-100k-v5c-u200.jsonl \
        eval/results/reasons/hand-graded-ml-100k-v5c-u200-second.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from recgen.evaluation.reason_agreement import graders_agreement, read_grades


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    args = parser.parse_args()
    print(json.dumps(graders_agreement(read_grades(args.first), read_grades(args.second)), indent=1))


if __name__ == "__main__":
    main()

"""Paired measure of how the request clause is worded: the served reasons of a request run, and the same
reasons with their request clause joined instead as before v4 (by the item's place in the list, 8 forms, 3 ways
to say title words: the v3d code), so the LM's sentences are identical and only the clause's wording differs.

    python eval/scripts/reasons_clause_paired.py amazon-beauty v4-requests-u200-s0

Reads ``<cache>/reasons/<dataset>/<run>.rows.jsonl``; writes ``eval/results/reasons/<dataset>/<run>.clause-paired
.json`` (distinct-2 per list, mean over lists, both ways; no dataset text). Each served reason is split back into
its sentence and its clause by matching the current forms (:data:`recgen.reasons.asked.FORMS`, ``ALONE``).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from recgen.evaluation.reason_metrics import distinct_n
from recgen.evaluation.reasons import default_audit_dir
from recgen.reasons.asked import ALONE, FORMS, IN_TITLE

#: The v3d clause forms (recgen/reasons/asked.py before v4), chosen by position in the list.
V3D_FORMS = ("{What}, as you asked; {rest}.", "{Rest}; {what}, as you asked.",
             "{What}, which you asked for; {rest}.", "{Rest}, and {what}, which you asked for.",
             "As requested, {what}; {rest}.", "{Rest}; {what}, per your request.",
             "{What}, as requested; {rest}.", "{Rest}; your request: {what}.")
V3D_ALONE = ("{What}, as you asked.", "{What}, which you asked for.", "As you asked: {what}.", "As requested: {what}.")
V3D_IN_TITLE = ("{words} in its title", "{words} in the title", "a title with {words}")


def _pattern(form: str) -> re.Pattern:
    text = re.escape(form)
    for key, group in (("What", "what"), ("what", "what"), ("Rest", "rest"), ("rest", "rest")):
        text = text.replace(re.escape("{%s}" % key), f"(?P<{group}>.+?)" if group == "what" else f"(?P<{group}>.+)")
    return re.compile(f"^{text}$")


_FORMS = [_pattern(f) for f in FORMS]
_ALONE = [_pattern(f) for f in ALONE]
_TITLE = [_pattern(t.replace("{words}", "{what}")) for t in IN_TITLE]


def split(text: str) -> tuple[str | None, str | None]:
    """(sentence, clause's facts phrase) of a served reason; (text, None) when it has no request clause."""
    if ";" not in text:
        for p in _ALONE:
            if m := p.match(text):
                return None, m.group("what")
    found = [(m.group("rest"), m.group("what")) for p in _FORMS if (m := p.match(text))]
    return min(found, key=lambda f: len(f[1])) if found else (text, None)


def v3d_join(rest: str | None, what: str | None, position: int) -> str:
    if what is None:
        return rest or ""
    for p in _TITLE:
        if m := p.match(what[:1].lower() + what[1:]):
            what = V3D_IN_TITLE[position % len(V3D_IN_TITLE)].format(words=m.group("what"))
            break
    cap = what[:1].upper() + what[1:]
    if rest is None:
        return V3D_ALONE[position % len(V3D_ALONE)].format(What=cap, what=what)
    return V3D_FORMS[position % len(V3D_FORMS)].format(What=cap, what=what, Rest=rest[:1].upper() + rest[1:], rest=rest)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset")
    parser.add_argument("run")
    args = parser.parse_args()
    rows = [json.loads(line) for line in (default_audit_dir() / args.dataset / f"{args.run}.rows.jsonl")
            .read_text(encoding="utf-8").splitlines() if line.strip()]
    served, before, without = [], [], 0
    for row in rows:
        if row.get("header") or not row.get("query"):
            continue
        texts = [r["served_text"] for r in row["reasons"]]
        parts = [split(t) for t in texts]
        without += sum(what is None for _, what in parts)
        served.append(distinct_n(texts, 2))
        before.append(distinct_n([v3d_join(rest, what, n) for n, (rest, what) in enumerate(parts)], 2))
    out = {"dataset": args.dataset, "run": args.run, "lists": len(served),
           "reasons_without_a_request_clause": without,
           "distinct2_per_list_served": round(sum(served) / len(served), 4),
           "distinct2_per_list_v3d_clause_by_position": round(sum(before) / len(before), 4),
           "command": f"python eval/scripts/reasons_clause_paired.py {args.dataset} {args.run}"}
    path = Path("eval/results/reasons") / args.dataset / f"{args.run}.clause-paired.json"
    path.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(out))


if __name__ == "__main__":
    main()

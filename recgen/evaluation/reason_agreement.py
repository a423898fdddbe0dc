"""Agreement between hand grades of reasons and the automatic measure: percent agreement, Cohen's kappa and
the confusion table, for "supported" (no unsupported claim) and "personal" (names a related history item or
the request).

A hand-grade file is JSONL, one reason a line: ``{"id": "<user>-<rank>", "run": "<run name>", "text": "served" |
"model", "supported": bool, "personal": bool, "why": "..."}`` (ids as in the audit file; ``text`` says whether
the served reason or the LM's replaced text was graded; ``run`` picks the variant run, since ids repeat across
variants run on the same users). It quotes no dataset text, so it is committed. An optional ``"grade"``
(``"true"`` / ``"partly"`` / ``"false"``: the whole sentence true of the facts, part of it not, or its claim
false) is counted; a reason graded partly or false is not supported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ..errors import RecgenError

#: Hand grades of a whole reason, best first.
GRADES = ("true", "partly", "false")
#: Graded property → the automatic verdict field it is compared with.
PROPERTIES = {"supported": "grounded", "personal": "personal"}


def cohen_kappa(a: Sequence[bool], b: Sequence[bool]) -> float | None:
    """Cohen's kappa of two raters' yes/no labels: (observed - chance agreement) / (1 - chance).
    ``None`` when chance agreement is 1 (both raters gave one label to everything: kappa is undefined)."""
    n = len(a)
    if n == 0 or n != len(b):
        return None
    observed = sum(x == y for x, y in zip(a, b)) / n
    pa, pb = sum(a) / n, sum(b) / n
    chance = pa * pb + (1 - pa) * (1 - pb)
    if chance >= 1:
        return None
    return (observed - chance) / (1 - chance)


def read_grades(path: Path) -> list[dict]:
    grades = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise RecgenError(f"{path}, line {number}: not JSON ({exc})") from None
        missing = [k for k in ("id", "text", "supported", "personal") if k not in row]
        if missing or row["text"] not in ("served", "model"):
            raise RecgenError(f"{path}, line {number}: needs id, text (served|model), supported, personal")
        if row.get("grade", "true") not in GRADES or (row.get("grade", "true") != "true" and row["supported"]):
            raise RecgenError(f"{path}, line {number}: grade must be one of {', '.join(GRADES)}, and a reason "
                              "graded partly or false is not supported")
        grades.append(row)
    return grades


def agreement(grades: Sequence[dict], graded_rows: Sequence[dict]) -> dict:
    """Compare ``grades`` with the verdicts of ``graded_rows`` (see ``recgen.evaluation.reasons.grade_rows``)."""
    verdicts = {}
    for row in graded_rows:
        for r in row["reasons"]:
            for kind in ("served", "model"):
                if r.get(kind):
                    verdicts[(f"{row['user']}-{r['rank']}", kind)] = r[kind]["verdict"]
    pairs = [(g, verdicts.get((g["id"], g["text"]))) for g in grades]
    unmatched = [g["id"] for g, v in pairs if v is None]
    pairs = [(g, v) for g, v in pairs if v is not None]
    out = {"graded": len(grades), "matched": len(pairs), "unmatched_ids": unmatched[:20]}
    if any("grade" in g for g, _ in pairs):
        out["grades"] = {grade: sum(g.get("grade") == grade for g, _ in pairs) for grade in GRADES}
    for subset in ("all", "served", "model"):
        chosen = [(g, v) for g, v in pairs if subset == "all" or g["text"] == subset]
        entry = {"n": len(chosen)}
        for prop, field in PROPERTIES.items():
            hand = [bool(g[prop]) for g, _ in chosen]
            auto = [bool(v[field]) for _, v in chosen]
            kappa = cohen_kappa(hand, auto)
            entry[prop] = {
                "hand_yes": sum(hand), "auto_yes": sum(auto),
                "percent_agreement": round(100 * sum(h == a for h, a in zip(hand, auto)) / len(hand), 1) if hand else None,
                "cohen_kappa": None if kappa is None else round(kappa, 3),
                "confusion": {"hand yes, auto yes": sum(h and a for h, a in zip(hand, auto)),
                              "hand yes, auto no": sum(h and not a for h, a in zip(hand, auto)),
                              "hand no, auto yes": sum(not h and a for h, a in zip(hand, auto)),
                              "hand no, auto no": sum(not h and not a for h, a in zip(hand, auto))},
            }
        out[subset] = entry
    return out


def agreement_markdown(result: dict, title: str) -> str:
    lines = [f"# {title}", "",
             f"{result['matched']} of {result['graded']} hand-graded reasons matched to the automatic verdicts.", ""]
    if "grades" in result:
        lines += ["Hand grades: " + ", ".join(f"{n} {grade}" for grade, n in result["grades"].items()) + ".", ""]
    for subset in ("all", "served", "model"):
        entry = result[subset]
        if not entry["n"]:
            continue
        lines += [f"## {subset} ({entry['n']} reasons)", "",
                  "| property | hand yes | auto yes | % agreement | Cohen's kappa | hand yes/auto yes | hand yes/auto no "
                  "| hand no/auto yes | hand no/auto no |", "|---|---|---|---|---|---|---|---|---|"]
        for prop in PROPERTIES:
            e = entry[prop]
            c = e["confusion"]
            lines.append(f"| {prop} | {e['hand_yes']} | {e['auto_yes']} | {e['percent_agreement']} | "
                         f"{'–' if e['cohen_kappa'] is None else e['cohen_kappa']} | {c['hand yes, auto yes']} | "
                         f"{c['hand yes, auto no']} | {c['hand no, auto yes']} | {c['hand no, auto no']} |")
        lines.append("")
    return "\n".join(lines)


def graders_agreement(first: Sequence[dict], second: Sequence[dict]) -> dict:
    """Agreement between two people's hand grades of the same reasons (matched on run, id and text): for the whole
    grade (true / partly / false) percent agreement, and for each graded property percent agreement and Cohen's
    kappa; the reasons they disagree on are listed by id. Why: one grader's "0 unsupported" is one reading."""
    key = lambda g: (g.get("run"), g["id"], g["text"])  # noqa: E731
    seconds = {key(g): g for g in second}
    pairs = [(g, seconds[key(g)]) for g in first if key(g) in seconds]
    out: dict = {"first": len(first), "second": len(second), "matched": len(pairs)}
    if not pairs:
        return out
    grade = lambda g: g.get("grade", "true" if g["supported"] else "false")  # noqa: E731
    out["grade"] = {"first": {x: sum(grade(a) == x for a, _ in pairs) for x in GRADES},
                    "second": {x: sum(grade(b) == x for _, b in pairs) for x in GRADES},
                    "percent_agreement": round(100 * sum(grade(a) == grade(b) for a, b in pairs) / len(pairs), 1),
                    "disagreements": [{"id": a["id"], "run": a.get("run"), "first": grade(a), "second": grade(b)}
                                      for a, b in pairs if grade(a) != grade(b)]}
    for prop in PROPERTIES:
        one, two = [bool(a[prop]) for a, _ in pairs], [bool(b[prop]) for _, b in pairs]
        kappa = cohen_kappa(one, two)
        out[prop] = {"first_yes": sum(one), "second_yes": sum(two),
                     "percent_agreement": round(100 * sum(x == y for x, y in zip(one, two)) / len(pairs), 1),
                     "cohen_kappa": None if kappa is None else round(kappa, 3)}
    return out

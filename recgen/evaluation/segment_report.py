"""``recgen eval segments``: finished runs of one dataset side by side per segment, the first paired with each other.

Reads the per-user ranks the runs already stored (no system is run again); rows made before segments existed
are labelled from the dataset (:func:`~recgen.evaluation.segments.label_rows`).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import RecgenError
from .protocol import EvalData
from .runfiles import load_run
from .segments import GROUPS, SEGMENT_METRICS, label_rows, paired_segments, segment_summary


def segments_report(results_dir: Path, dataset: str, runs: list[str], n_boot: int = 10000, seed: int = 0,
                    command: str | None = None) -> dict:
    """Per-run segment metrics and ``runs[0]`` vs each other run, paired per segment, on the same users."""
    if len(runs) < 1:
        raise RecgenError("name at least one finished run")
    loaded = [load_run(results_dir, dataset, run) for run in runs]
    first_summary, first_rows = loaded[0]
    users = [row["user"] for row in first_rows]
    for summary, rows in loaded[1:]:
        if summary["stage"] != first_summary["stage"] or sorted(r["user"] for r in rows) != sorted(users):
            raise RecgenError(f"{summary['run_name']} covers other users or another stage than "
                              f"{first_summary['run_name']}; segments are compared on the same users")
    by_user = [{row["user"]: row for row in rows} for _, rows in loaded]
    ordered = [[rows[u] for u in users] for rows in by_user]
    if all("segment" in row for row in ordered[0]):
        labels = {group: [row["segment"][group] for row in ordered[0]] for group in GROUPS}
    else:
        from ..data import load_dataset

        labels = label_rows(ordered[0], EvalData.from_dataset(load_dataset(dataset)), first_summary["stage"])
    ranks = [[row["rank"] for row in rows] for rows in ordered]
    out = {"dataset": first_summary["dataset"], "stage": first_summary["stage"], "users": len(users),
           "command": command, "runs": {}, "paired": {}}
    for (summary, _), r in zip(loaded, ranks):
        out["runs"][summary["run_name"]] = {"system": summary["system"],
                                            "segments": segment_summary(r, labels, n_boot=1000, seed=seed)}
    for (summary, _), r in zip(loaded[1:], ranks[1:]):
        key = f"{first_summary['run_name']} vs {summary['run_name']}"
        out["paired"][key] = paired_segments(ranks[0], r, labels, n_boot=n_boot, seed=seed)
    return out


def segments_markdown(report: dict) -> str:
    """Per segment: each run's NDCG@10 / Recall@10, then the paired differences with CI and p."""
    runs = list(report["runs"])
    out = [f"# Segments: {report['dataset']} ({report['stage']}, {report['users']:,} users)", "",
           f"Command: `{report['command']}`", "",
           "Definitions: " + "; ".join(f"**{k}**: {v}" for k, v in
                                       next(iter(report["runs"].values()))["segments"]["definition"].items()) + ".",
           "", "## Per run (mean [95% bootstrap CI])", "",
           "| segment | users | " + " | ".join(f"{run} {m}" for run in runs for m in SEGMENT_METRICS[:2]) + " |",
           "|---|---:|" + "---|" * (2 * len(runs))]
    for group, names in GROUPS.items():
        for name in names:
            cells = []
            for run in runs:
                entry = report["runs"][run]["segments"][group][name]
                for m in SEGMENT_METRICS[:2]:
                    e = entry.get("metrics", {}).get(m)
                    cells.append(f"{e['mean']:.4f} [{e['ci95'][0]:.4f}, {e['ci95'][1]:.4f}]" if e else "-")
            users = report["runs"][runs[0]]["segments"][group][name]["users"]
            out.append(f"| {group}: {name} | {users:,} | " + " | ".join(cells) + " |")
    for key, paired in report["paired"].items():
        out += ["", f"## {key} (paired: A - B, bootstrap CI and p; Wilcoxon p on NDCG@10)", "",
                "| segment | users | NDCG@10 A - B [95% CI] | p | p (Wilcoxon) | Recall@10 A - B [95% CI] | p |",
                "|---|---:|---|---:|---:|---|---:|"]
        for group, names in GROUPS.items():
            for name in names:
                entry = paired[group][name]
                by = {r["metric"]: r for r in entry.get("comparisons", [])}
                if not by:
                    out.append(f"| {group}: {name} | 0 | - | - | - | - | - |")
                    continue
                n, r = by["ndcg@10"], by["recall@10"]
                out.append(f"| {group}: {name} | {entry['users']:,} | {n['delta']:+.4f} [{n['ci95'][0]:+.4f}, "
                           f"{n['ci95'][1]:+.4f}] | {n['p_bootstrap']:.4g} | {n['p_wilcoxon']:.4g} | "
                           f"{r['delta']:+.4f} [{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}] | {r['p_bootstrap']:.4g} |")
    return "\n".join(out) + "\n"

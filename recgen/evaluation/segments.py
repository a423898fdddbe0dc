"""Segments: the same per-user ranks, grouped by where a gain or loss happens.

A segment is a grouping of the per-user ranks every run already stores, never a second metric path: each
segment's metrics come from :func:`~recgen.evaluation.metrics.metrics_from_ranks` over its users, and its CI
from the same bootstrap as the whole run.

Groupings (all read from the **training** part of every sequence, the only part systems are fitted on):

* ``popularity`` of the user's target item. Items are sorted by training frequency (most frequent first, ties
  by catalog order); ``head`` = the most frequent items that together account for the first
  :data:`HEAD_SHARE` (20 %) of training interactions, ``torso`` = the next :data:`TORSO_SHARE` (30 %), ``tail``
  = every other item with at least one training interaction, ``cold`` = a target with no training interaction
  (the cold-item segment). An item belongs to the share in which its first interaction falls, so the head is
  never empty.
* ``history``: the number of items the system saw for that user at that stage: ``<=3``, ``4-10``, ``>10``.

The cut points are shares of interactions and fixed lengths, not per-dataset constants: a dataset nobody has
seen is segmented by the same rule.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .metrics import mean_metrics, metrics_from_ranks
from .protocol import EvalData, check_stage, pseudonym
from .stats import bootstrap_cis, compare_paired

HEAD_SHARE = 0.2
TORSO_SHARE = 0.3
HISTORY_BOUNDS = (3, 10)
GROUPS = {"popularity": ("head", "torso", "tail", "cold"), "history": ("<=3", "4-10", ">10")}
#: Metrics reported per segment (a subset of the run's, to keep the tables readable).
SEGMENT_METRICS = ("ndcg@10", "recall@10", "recall@20")


def item_popularity_classes(data: EvalData) -> np.ndarray:
    """Per catalog row: 0 head, 1 torso, 2 tail, 3 cold, by training frequency (see the module docstring)."""
    counts = np.bincount(np.concatenate(data.train_sequences()) if data.n_users else np.zeros(0, np.int64),
                         minlength=data.n_items)
    order = np.argsort(-counts, kind="stable")
    total = counts.sum()
    before = np.cumsum(counts[order]) - counts[order]  # interactions of the items ranked above
    share_before = before / total if total else np.zeros(len(order))
    classes = np.full(data.n_items, 2, dtype=np.int8)
    ranked_class = np.where(share_before < HEAD_SHARE, 0, np.where(share_before < HEAD_SHARE + TORSO_SHARE, 1, 2))
    classes[order] = ranked_class
    classes[counts == 0] = 3
    return classes


def history_class(lengths: np.ndarray) -> np.ndarray:
    """0 for ``<=3``, 1 for ``4-10``, 2 for ``>10`` items seen."""
    return np.searchsorted(np.asarray(HISTORY_BOUNDS), np.asarray(lengths), side="left").astype(np.int8)


def user_segments(data: EvalData, stage: str, positions: Sequence[int]) -> dict[str, list[str]]:
    """Each grouping's label for the users at ``positions`` (split order)."""
    check_stage(stage)
    positions = np.asarray(positions, dtype=np.int64)
    pop = item_popularity_classes(data)[data.targets(stage, positions)]
    lengths = np.array([len(data.train[p]) + (stage == "test") for p in positions], dtype=np.int64)
    hist = history_class(lengths)
    return {"popularity": [GROUPS["popularity"][c] for c in pop], "history": [GROUPS["history"][c] for c in hist]}


def label_rows(rows: list[dict], data: EvalData, stage: str) -> dict[str, list[str]]:
    """Segment labels for per-user rows (as stored in run files, keyed by pseudonym), in the rows' order.

    Run files made before segments existed are labelled the same way from the dataset; a row whose user or
    target does not match the dataset's split refuses (the run was made on other data)."""
    from ..errors import RecgenError

    position = {pseudonym(u): p for p, u in enumerate(data.user_ids)}
    missing = [row["user"] for row in rows if row["user"] not in position]
    if missing:
        raise RecgenError(f"{len(missing)} run rows name users that are not in {data.dataset.name}'s split "
                          f"(e.g. {missing[0]}); was the run made on other data?")
    positions = [position[row["user"]] for row in rows]
    ids = data.dataset.catalog.ids
    targets = data.targets(stage, positions)
    for row, t in zip(rows, targets):
        if row.get("target") is not None and row["target"] != pseudonym(ids[t]):
            raise RecgenError(f"user {row['user']}'s target differs from {data.dataset.name}'s {stage} target; "
                              "the run was made on another split")
    return user_segments(data, stage, positions)


def _members(labels: dict[str, list[str]]):
    """(grouping, segment, indices of its users) for every segment, in the definition's order."""
    for group, names in GROUPS.items():
        label = np.asarray(labels[group])
        for name in names:
            yield group, name, np.flatnonzero(label == name)


def segment_summary(ranks: Sequence, labels: dict[str, list[str]], n_boot: int = 1000, seed: int = 0,
                    metrics: Sequence[str] = SEGMENT_METRICS) -> dict:
    """Per grouping and segment: users, share of users, metric means with 95% bootstrap CIs."""
    ks = sorted({int(m.split("@")[1]) for m in metrics})
    per_user = metrics_from_ranks(list(ranks), ks)
    n = len(per_user[f"ndcg@{ks[0]}"])
    out: dict = {"definition": definition(), **{group: {} for group in GROUPS}}
    for group, name, idx in _members(labels):
        entry: dict = {"users": int(len(idx)), "share": round(len(idx) / n, 6) if n else 0.0}
        if len(idx):
            sub = {m: per_user[m][idx] for m in metrics}
            means, cis = mean_metrics(sub), bootstrap_cis(sub, n_boot=n_boot, seed=seed)
            entry["metrics"] = {m: {"mean": round(means[m], 6), "ci95": [round(cis[m][0], 6),
                                                                         round(cis[m][1], 6)]} for m in metrics}
        out[group][name] = entry
    return out


def paired_segments(ranks_a: Sequence, ranks_b: Sequence, labels: dict[str, list[str]], n_boot: int = 10000,
                    seed: int = 0, metrics: Sequence[str] = SEGMENT_METRICS) -> dict:
    """Per grouping and segment: the paired comparison (A - B, bootstrap CI and p, Wilcoxon on NDCG@10)."""
    ks = sorted({int(m.split("@")[1]) for m in metrics} | {10})
    per_a, per_b = metrics_from_ranks(list(ranks_a), ks), metrics_from_ranks(list(ranks_b), ks)
    out: dict = {"definition": definition(), **{group: {} for group in GROUPS}}
    for group, name, idx in _members(labels):
        if not len(idx):
            out[group][name] = {"users": 0}
            continue
        results = compare_paired({m: per_a[m][idx] for m in metrics}, {m: per_b[m][idx] for m in metrics},
                                 list(metrics), n_boot=n_boot, seed=seed)
        out[group][name] = {"users": int(len(idx)), "comparisons": [r.to_dict() for r in results]}
    return out


def definition() -> dict:
    return {"popularity": f"target's training frequency: head = most frequent items covering the first "
                          f"{HEAD_SHARE:.0%} of training interactions, torso = the next {TORSO_SHARE:.0%}, tail = "
                          "the rest with >= 1 training interaction, cold = no training interaction",
            "history": f"items seen at the stage: <= {HISTORY_BOUNDS[0]}, {HISTORY_BOUNDS[0] + 1}-"
                       f"{HISTORY_BOUNDS[1]}, > {HISTORY_BOUNDS[1]}"}


def segment_lines(summary: dict, metrics: Sequence[str] = SEGMENT_METRICS) -> list[str]:
    """A markdown table of :func:`segment_summary`'s output."""
    lines = ["| grouping | segment | users | " + " | ".join(f"{m} [95% CI]" for m in metrics) + " |",
             "|---|---|---:|" + "---|" * len(metrics)]
    for group in GROUPS:
        for name, entry in summary[group].items():
            cells = [f"{entry['metrics'][m]['mean']:.4f} [{entry['metrics'][m]['ci95'][0]:.4f}, "
                     f"{entry['metrics'][m]['ci95'][1]:.4f}]" if "metrics" in entry else "-" for m in metrics]
            lines.append(f"| {group} | {name} | {entry['users']:,} | " + " | ".join(cells) + " |")
    return lines

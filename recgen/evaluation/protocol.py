"""The evaluation protocol: leave-one-out targets, full ranking over all items, own-history masking.

* ``stage="valid"``: target = second-last item, history = training items (use this for tuning).
* ``stage="test"``: target = last item, history = training items + the validation item.
* Systems are fitted on the **training** part of every sequence only (never on validation or test targets).
* Full ranking: the target competes with every catalog item; only the user's own earlier items (the history
  for that stage) are masked. No sampled negatives.
* Ties in a score matrix count against the target (see :func:`ranks_from_scores`).
* ``users=N, seed=S`` evaluates a seeded random sample of the eligible users that depends only on the
  dataset, N and S, so every system is evaluated on exactly the same users.
"""

from __future__ import annotations

from typing import Callable, Iterator, Protocol, Sequence

import numpy as np

# the split arrays live in ``data`` (fitting reads them too); they are the protocol's vocabulary, so its callers
# (finetune, the eval scripts) keep importing them from here
from ..data.split_arrays import STAGES, EvalData, check_stage, mask_history, sample_users
from .metrics import mean_metrics, metrics_from_ranks, rank_of, ranks_from_scores

__all__ = ["STAGES", "EvalData", "check_stage", "mask_history", "sample_users", "pseudonym", "ROW_METRICS", "Scorer",
           "ListSystem", "score_rows", "evaluate_users", "mean_of", "list_rows", "list_row"]


def pseudonym(value: str) -> str:
    """A stable 16-hex-digit key for a user or item id, used in per-user result files.

    Results are committed to the repository, and a table of every user's held-out item would be a part of
    the dataset (whose terms forbid redistribution). Keys let two runs be paired user by user, and let
    someone who has the dataset map them back, without the files carrying the ids themselves.
    """
    import hashlib

    return hashlib.sha256(f"recgen:{value}".encode()).hexdigest()[:16]
#: The per-user metrics written to the per-user JSONL (everything else is recomputed from the rank).
ROW_METRICS = ("ndcg@10", "recall@10", "mrr@10")


# -- systems --------------------------------------------------------------------------------------

class Scorer(Protocol):
    """A system that scores every catalog item for a batch of users (vectorized)."""

    name: str

    def fit(self, data: EvalData, log: Callable[[str], None] | None = None) -> None: ...

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        """[len(histories), n_items] scores, higher = better; the harness masks the history afterwards."""

    def params(self) -> dict: ...


class ListSystem(Protocol):
    """A two-stage system that returns a ranked list (e.g. retriever + LM ranker), one user at a time."""

    name: str

    def fit(self, data: EvalData, log: Callable[[str], None] | None = None) -> None: ...

    def recommend(self, history: list[str]) -> tuple[list[str], list[str]]:
        """(ranked item ids, the candidate ids the ranker was given)."""

    def params(self) -> dict: ...


def score_rows(system: Scorer, data: EvalData, stage: str, positions: Sequence[int],
               batch_size: int = 512) -> Iterator[list[dict]]:
    """Yield per-user result rows, one list per batch, for a vectorized :class:`Scorer`.

    A system that only re-orders the top ``m`` of a cheaper base order (``reorders_top`` = m and
    ``base_score(histories)``, e.g. the fusion system's stacked LM stage) is called only for users whose target
    could be among those m (its base score reaches the m-th best unseen score): for every other user no re-order
    of the top m moves the target, so the base scores give the very same row. Compute saved, not rigour
    (the same rule as :func:`list_rows`' first-stage hits; tested for equality)."""
    check_stage(stage)
    positions = np.asarray(positions, dtype=np.int64)
    ids = data.dataset.catalog.ids
    for start in range(0, len(positions), batch_size):
        batch = positions[start:start + batch_size]
        histories = [data.history(stage, int(p)) for p in batch]
        top = getattr(system, "reorders_top", None)
        scores = (_pruned_scores(system, histories, data.targets(stage, batch), int(top)) if top
                  else np.asarray(system.score(histories)))
        # keep float32/float64 as the system returned it (float64 carries exact tie-breaks); always copy,
        # because masking writes into the matrix
        scores = np.array(scores, dtype=scores.dtype if np.issubdtype(scores.dtype, np.floating) else np.float64,
                          copy=True)
        if scores.shape != (len(batch), data.n_items):
            raise ValueError(f"{system.name}: score matrix has shape {scores.shape}, expected "
                             f"{(len(batch), data.n_items)}")
        mask_history(scores, histories)
        targets = data.targets(stage, batch)
        ranks = ranks_from_scores(scores, targets)
        per_user = metrics_from_ranks(ranks, ks=(10,))
        rows = []
        for j, p in enumerate(batch):
            row = {"user": pseudonym(data.user_ids[p]), "target": pseudonym(ids[targets[j]]), "rank": int(ranks[j])}
            for m in ROW_METRICS:
                row[m] = round(float(per_user[m][j]), 6)
            rows.append(row)
        yield rows


def _pruned_scores(system, histories: list[np.ndarray], targets: np.ndarray, top: int) -> np.ndarray:
    """``system.score`` for the users whose target can be in the base order's top ``top``, base scores else."""
    scores = np.array(system.base_score(histories), dtype=np.float64, copy=True)
    masked = mask_history(scores.copy(), histories)
    top = min(top, masked.shape[1])
    boundary = -np.partition(-masked, top - 1, axis=1)[:, top - 1]  # each row's top-th best unseen score
    need = np.flatnonzero(masked[np.arange(len(targets)), targets] >= boundary)
    if len(need):
        scores[need] = system.score([histories[i] for i in need])
    return scores


def evaluate_users(system, data: EvalData, stage: str, positions: Sequence[int],
                   batch_size: int | None = None) -> Iterator[list[dict]]:
    """Per-user result rows, one list per batch, for any system: the one place a target is ranked."""
    if hasattr(system, "recommend_many") or hasattr(system, "recommend"):
        return list_rows(system, data, stage, positions, batch_size=batch_size or getattr(system, "batch", 8))
    return score_rows(system, data, stage, positions, batch_size=batch_size or 512)


def mean_of(rows: list[dict], ks: Sequence[int] = (10,)) -> dict[str, float]:
    """Mean NDCG/Recall/MRR@K over rows (a row without a rank counts 0)."""
    return mean_metrics(metrics_from_ranks([row["rank"] for row in rows], ks))


def list_rows(system: ListSystem, data: EvalData, stage: str, positions: Sequence[int],
              batch_size: int = 8) -> Iterator[list[dict]]:
    """Yield per-user rows, one list per batch of users, for a two-stage :class:`ListSystem`.

    Besides the rank (``None`` when the target is not in the returned list) each row records whether the
    target was among the retrieved candidates and how many returned items were valid: known, distinct,
    unseen, and among the candidates.

    A system with ``candidates_many`` (its first stage alone) only sends users whose target was retrieved
    to its second stage: a ranker that reorders the candidates cannot place a target that is not among
    them, so every metric of those users is 0 either way. Their row keeps the candidates in retrieval
    order and says ``"second_stage": false``. This is a saving of compute (5x on Beauty), not of rigour.
    """
    check_stage(stage)
    catalog = data.dataset.catalog
    ids = catalog.ids
    positions = [int(p) for p in positions]
    for start in range(0, len(positions), batch_size):
        batch = positions[start:start + batch_size]
        histories = [[ids[i] for i in data.history(stage, p)] for p in batch]
        targets = [ids[data.target(stage, p)] for p in batch]
        outputs, ranked_by_system = _list_outputs(system, histories, targets)
        rows = []
        for p, history, target, (ranked, candidates), second in zip(batch, histories, targets, outputs,
                                                                      ranked_by_system):
            ranked = [str(i) for i in ranked]
            row = list_row(data.user_ids[p], target, history, ranked, list(candidates), catalog)
            row["second_stage"] = second
            rows.append(row)
        yield rows


def _list_outputs(system, histories: list[list[str]], targets: list[str]) -> tuple[list, list[bool]]:
    """((ranked, candidates) per user, whether the system's second stage ranked that user)."""
    many = getattr(system, "recommend_many", None)
    run = many if many is not None else (lambda hs: [system.recommend(h) for h in hs])
    first_stage = getattr(system, "candidates_many", None)
    if first_stage is None:
        return run(histories), [True] * len(histories)
    candidates = first_stage(histories)
    outputs = [(list(c), list(c)) for c in candidates]
    hits = [n for n, (c, target) in enumerate(zip(candidates, targets)) if target in c]
    for n, output in zip(hits, run([histories[n] for n in hits]) if hits else []):
        outputs[n] = output
    return outputs, [n in set(hits) for n in range(len(histories))]


def list_row(user: str, target: str, history: list[str], ranked: list[str], candidates: list[str], catalog) -> dict:
    seen, cand = set(history), set(candidates)
    valid, used = 0, set()
    for item in ranked:
        if item in catalog and item not in used and item not in seen and item in cand:
            valid += 1
        used.add(item)
    rank = rank_of(ranked, target)
    per_user = metrics_from_ranks([rank], ks=(10,))
    return {"user": pseudonym(user), "target": pseudonym(target), "rank": rank,
            **{m: round(float(per_user[m][0]), 6) for m in ROW_METRICS},
            "retrieved": target in cand, "retrieval_rank": rank_of(candidates, target), "n_candidates": len(candidates), "n_returned": len(ranked),
            "n_valid": valid}

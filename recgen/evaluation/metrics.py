"""Top-K ranking metrics, from ranked lists (any number of relevant items) or from the rank of one target.

Conventions (RecBole's formulas, see ``library-facts.md``):

* NDCG@K: binary gain, ``1 / log2(position + 1)`` discount, ideal DCG over ``min(|relevant|, K)`` positions.
* Recall@K: hits in the top K / ``|relevant|``; with one held-out target this equals HR@K.
* MRR@K: ``1 / position`` of the first relevant item within the top K, else 0.
* Every evaluated user counts: a user whose target is not in the list (or ranked below K) scores 0, and a
  list shorter than K is scored with what it has. Means are over **all** evaluated users.

Ranks are 1-based. In the vectorized path a rank of ``0``/``NaN``/``None`` means "not ranked" (e.g. the
target was not among a pipeline's retrieved candidates) and scores 0 at every K.
"""

from __future__ import annotations

from typing import Hashable, Iterable, Sequence

import numpy as np

from ..metrics import ndcg_gains, target_ranks

#: The metric families recgen reports, and the cut-offs stored in every run file.
METRICS = ("ndcg", "recall", "mrr")
DEFAULT_KS = (1, 5, 10, 20, 50)


def _dedupe(ranked: Iterable[Hashable]) -> list[Hashable]:
    """Keep the first occurrence of each item: a repeated item cannot earn gain twice."""
    seen: set = set()
    out = []
    for item in ranked:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def _check_k(k: int) -> None:
    if int(k) != k or k < 1:
        raise ValueError(f"K must be a positive whole number, not {k!r}")


def ndcg_at_k(ranked: Sequence[Hashable], relevant: Iterable[Hashable], k: int) -> float:
    _check_k(k)
    rel = set(relevant)
    if not rel:
        raise ValueError("a user with no relevant item cannot be evaluated")
    top = _dedupe(ranked)[:k]
    dcg = sum(1.0 / np.log2(pos + 2) for pos, item in enumerate(top) if item in rel)
    idcg = sum(1.0 / np.log2(pos + 2) for pos in range(min(len(rel), k)))
    return float(dcg / idcg)


def recall_at_k(ranked: Sequence[Hashable], relevant: Iterable[Hashable], k: int) -> float:
    _check_k(k)
    rel = set(relevant)
    if not rel:
        raise ValueError("a user with no relevant item cannot be evaluated")
    top = _dedupe(ranked)[:k]
    return sum(1 for item in top if item in rel) / len(rel)


def hit_at_k(ranked: Sequence[Hashable], relevant: Iterable[Hashable], k: int) -> float:
    _check_k(k)
    rel = set(relevant)
    return float(any(item in rel for item in _dedupe(ranked)[:k]))


def mrr_at_k(ranked: Sequence[Hashable], relevant: Iterable[Hashable], k: int) -> float:
    _check_k(k)
    rel = set(relevant)
    if not rel:
        raise ValueError("a user with no relevant item cannot be evaluated")
    for pos, item in enumerate(_dedupe(ranked)[:k]):
        if item in rel:
            return 1.0 / (pos + 1)
    return 0.0


def rank_of(ranked: Sequence[Hashable], target: Hashable) -> int | None:
    """1-based position of ``target`` in a (de-duplicated) ranked list, or ``None`` when absent."""
    for pos, item in enumerate(_dedupe(ranked)):
        if item == target:
            return pos + 1
    return None


def _as_rank_array(ranks) -> np.ndarray:
    """float array, ``inf`` where the target was not ranked (None / NaN / 0)."""
    arr = np.array([np.nan if r is None else r for r in ranks] if not isinstance(ranks, np.ndarray) else ranks,
                   dtype=np.float64)
    arr = np.where(np.isnan(arr) | (arr <= 0), np.inf, arr)
    return arr


def metrics_from_ranks(ranks, ks: Sequence[int] = DEFAULT_KS) -> dict[str, np.ndarray]:
    """Per-user ``ndcg@K``, ``recall@K``, ``mrr@K`` for single-target users from the target's 1-based rank."""
    r = _as_rank_array(ranks)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        _check_k(k)
        hit = r <= k
        with np.errstate(divide="ignore"):
            out[f"ndcg@{k}"] = ndcg_gains(r, k)
            out[f"recall@{k}"] = hit.astype(np.float64)
            out[f"mrr@{k}"] = np.where(hit, 1.0 / np.where(hit, r, 1.0), 0.0)
    return out


def mean_metrics(per_user: dict[str, np.ndarray]) -> dict[str, float]:
    """Average each metric over all users (none skipped)."""
    return {name: float(np.mean(values)) if len(values) else float("nan") for name, values in per_user.items()}


def ranks_from_scores(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of each row's target column in a full score matrix.

    Ties count **against** the target (every other item with an equal score is placed ahead of it), so no
    system can gain from ties; a system that wants a tie-break must put it into its scores. Masked items
    must already be ``-inf``. A target whose score is ``-inf`` (masked) is ranked last among the ties.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError("scores must be a [users, items] matrix")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN; a system must return finite scores or -inf for masked items")
    return target_ranks(scores, targets)


def topk_from_scores(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the K best scores per row, best first (``argpartition`` then a sort of K)."""
    scores = np.asarray(scores)
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)

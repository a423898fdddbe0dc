"""The ranking formulas every layer shares: one home for single-target NDCG and for a target's rank.

Fitting (selection on held-out users), ranking (the LM stage's stacked re-order) and evaluation (run files)
all score a ranked list by where one target landed; if each wrote its own formula the numbers they compare
could drift apart. :func:`paired_bootstrap` compares two orders over the same users (evaluation's paired
tests and the fit layer's LM guard). Conventions (RecBole's, see ``recgen.evaluation.metrics``): binary gain, ``1 / log2(rank +
1)`` discount, cut at K; a target that was not ranked (rank ``0``, ``None``, ``NaN`` or ``inf``) gains 0; ties
in a score vector count **against** the target, so no ranker can gain from them.
"""

from __future__ import annotations

import numpy as np


def ndcg_gains(ranks, k: int = 10) -> np.ndarray:
    """Per-user NDCG@k of single-target 1-based ranks (a missed target gains 0); their mean is NDCG@k."""
    if isinstance(ranks, np.ndarray):
        r = ranks.astype(np.float64)
    else:
        r = np.array([np.nan if x is None else x for x in ranks], dtype=np.float64)
    hit = (r > 0) & (r <= k)  # NaN compares False: missed
    return np.where(hit, 1.0 / np.log2(np.where(hit, r, 1.0) + 1.0), 0.0)


def target_ranks(scores: np.ndarray, targets) -> np.ndarray:
    """1-based rank of each row's target column in a [rows, items] score matrix, ties against the target."""
    scores = np.asarray(scores)
    targets = np.asarray(targets, dtype=np.int64)
    t = scores[np.arange(len(targets)), targets][:, None]
    return (scores > t).sum(axis=1) + (scores == t).sum(axis=1)


def target_rank(scores: np.ndarray, labels: np.ndarray) -> int:
    """The 1-based rank of the first labelled row under ``scores`` (ties against it); 0 when none is labelled."""
    hit = np.flatnonzero(labels)
    if not len(hit):
        return 0
    return int(target_ranks(np.asarray(scores)[None, :], [hit[0]])[0])


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 10000, seed: int = 0,
                     level: float = 0.95, chunk: int = 200) -> tuple[float, tuple[float, float], float]:
    """Mean difference ``a - b`` over the same users, its percentile CI, and a two-sided p-value.

    The p-value is the share of resampled mean differences, after shifting the differences to mean 0 (the
    null hypothesis), that are at least as far from 0 as the observed one (Efron & Tibshirani, 16.4).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError("paired comparison needs the same users in the same order")
    diff = a - b
    n = len(diff)
    observed = float(diff.mean())
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        boots[start:stop] = diff[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    ci = (float(np.quantile(boots, alpha)), float(np.quantile(boots, 1 - alpha)))
    centred = boots - observed
    extreme = np.sum(np.abs(centred) >= abs(observed) - 1e-15)
    p = float((extreme + 1) / (n_boot + 1))
    return observed, ci, p

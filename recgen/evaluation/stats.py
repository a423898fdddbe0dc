"""Uncertainty: percentile-bootstrap CIs over users, and paired tests of two runs on the same users."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..metrics import paired_bootstrap  # one home: the fit layer's LM guard uses it too


def bootstrap_cis(per_user: dict[str, np.ndarray], n_boot: int = 1000, seed: int = 0,
                  level: float = 0.95, chunk: int = 50) -> dict[str, tuple[float, float]]:
    """95% (``level``) percentile CIs of each metric's mean, resampling users with replacement.

    All metrics share the same resamples, so their intervals are consistent with each other.
    """
    names = list(per_user)
    if not names:
        return {}
    values = np.stack([np.asarray(per_user[n], dtype=np.float64) for n in names])  # [metrics, users]
    n = values.shape[1]
    if n == 0:
        return {name: (float("nan"), float("nan")) for name in names}
    rng = np.random.default_rng(seed)
    means = np.empty((n_boot, len(names)))
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        # counts per user per resample, then a weighted mean: avoids materialising values[:, idx]
        counts = np.zeros((stop - start, n))
        np.add.at(counts, (np.arange(stop - start)[:, None], idx), 1.0)
        means[start:stop] = counts @ values.T / n
    alpha = (1.0 - level) / 2.0
    lo = np.quantile(means, alpha, axis=0)
    hi = np.quantile(means, 1.0 - alpha, axis=0)
    return {name: (float(lo[i]), float(hi[i])) for i, name in enumerate(names)}


@dataclass
class PairedResult:
    metric: str
    mean_a: float
    mean_b: float
    delta: float  # mean_a - mean_b
    ci95: tuple[float, float]
    p_bootstrap: float
    p_wilcoxon: float | None = None
    n_users: int = 0
    n_nonzero: int = 0

    def to_dict(self) -> dict:
        out = dict(self.__dict__)
        out["ci95"] = list(self.ci95)
        return out


def wilcoxon_p(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """Two-sided Wilcoxon signed-rank p-value (scipy; zero differences dropped) and the non-zero pair count."""
    from scipy.stats import wilcoxon

    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    nonzero = int(np.count_nonzero(diff))
    if nonzero == 0:
        return 1.0, 0
    result = wilcoxon(diff, zero_method="wilcox", alternative="two-sided")
    return float(result.pvalue), nonzero


def compare_paired(per_user_a: dict[str, np.ndarray], per_user_b: dict[str, np.ndarray], metrics: list[str],
                   n_boot: int = 10000, seed: int = 0, wilcoxon_metric: str = "ndcg@10") -> list[PairedResult]:
    out = []
    for metric in metrics:
        a, b = np.asarray(per_user_a[metric]), np.asarray(per_user_b[metric])
        delta, ci, p = paired_bootstrap(a, b, n_boot=n_boot, seed=seed)
        result = PairedResult(metric, float(a.mean()), float(b.mean()), delta, ci, p, n_users=len(a))
        if metric == wilcoxon_metric:
            result.p_wilcoxon, result.n_nonzero = wilcoxon_p(a, b)
        out.append(result)
    return out

"""Offline evaluation: metrics, the leave-one-out full-ranking protocol, baselines, run files and reports.

See ``eval/results/`` for committed results and ``recgen eval --help`` for the command line.
"""

from .metrics import (
                      DEFAULT_KS,
                      hit_at_k,
                      mean_metrics,
                      metrics_from_ranks,
                      mrr_at_k,
                      ndcg_at_k,
                      rank_of,
                      ranks_from_scores,
                      recall_at_k,
                      topk_from_scores,
)
from .protocol import EvalData, mask_history, sample_users, score_rows
from .stats import bootstrap_cis, compare_paired, paired_bootstrap, wilcoxon_p

__all__ = [
    "DEFAULT_KS", "hit_at_k", "mean_metrics", "metrics_from_ranks", "mrr_at_k", "ndcg_at_k", "rank_of",
    "ranks_from_scores", "recall_at_k", "topk_from_scores", "EvalData", "mask_history", "sample_users",
    "score_rows", "bootstrap_cis", "compare_paired", "paired_bootstrap", "wilcoxon_p",
]

"""Metric code against hand-computed cases and against ranx (checked against trec_eval) on random runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recgen.evaluation.metrics import (
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
from recgen.evaluation.stats import bootstrap_cis, paired_bootstrap, wilcoxon_p


def test_single_target_hand_computed():
    ranked = ["a", "b", "c", "d"]
    assert ndcg_at_k(ranked, {"b"}, 3) == pytest.approx(1 / math.log2(3))
    assert ndcg_at_k(ranked, {"a"}, 3) == pytest.approx(1.0)
    assert recall_at_k(ranked, {"b"}, 3) == 1.0
    assert mrr_at_k(ranked, {"c"}, 3) == pytest.approx(1 / 3)
    assert hit_at_k(ranked, {"d"}, 3) == 0.0
    # below the cut-off and absent targets score 0
    assert ndcg_at_k(ranked, {"d"}, 3) == 0.0
    assert mrr_at_k(ranked, {"zz"}, 10) == 0.0


def test_multiple_relevant_idcg_over_min_rel_k():
    ranked = ["a", "b", "c", "d", "e"]
    # relevant b and d, K=3: DCG = 1/log2(3); IDCG over min(2, 3) = 2 positions: 1 + 1/log2(3)
    assert ndcg_at_k(ranked, {"b", "d"}, 3) == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert recall_at_k(ranked, {"b", "d"}, 3) == pytest.approx(0.5)
    # three relevant, K=2: IDCG over min(3, 2) = 2 positions; a and b both relevant -> perfect
    assert ndcg_at_k(ranked, {"a", "b", "e"}, 2) == pytest.approx(1.0)
    assert recall_at_k(ranked, {"a", "b", "e"}, 2) == pytest.approx(2 / 3)
    assert mrr_at_k(ranked, {"c", "e"}, 5) == pytest.approx(1 / 3)


def test_recbole_style_matrix_case():
    """A RecBole-style hand-built hit matrix: rows = users, columns = positions 1..5, 1 = relevant there."""
    hits = np.array([[0, 0, 1, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1]])
    ranks = [3, 1, None, 5]
    expected_ndcg5 = [1 / math.log2(4), 1.0, 0.0, 1 / math.log2(6)]
    per_user = metrics_from_ranks(ranks, ks=(1, 3, 5))
    np.testing.assert_allclose(per_user["ndcg@5"], expected_ndcg5, atol=1e-12)
    np.testing.assert_allclose(per_user["recall@3"], [1, 1, 0, 0])
    np.testing.assert_allclose(per_user["mrr@5"], [1 / 3, 1, 0, 1 / 5])
    np.testing.assert_allclose(per_user["ndcg@1"], [0, 1, 0, 0])
    # list-based functions agree with the rank-based path on the same users
    for row, rank in zip(hits, ranks):
        ranked = [f"x{j}" if not row[j] else "T" for j in range(5)]
        assert ndcg_at_k(ranked, {"T"}, 5) == pytest.approx(1 / math.log2(rank + 1) if rank else 0.0)


def test_misses_count_and_short_lists():
    # a list shorter than K is scored with what it has; a user without the target counts 0, never skipped
    assert ndcg_at_k(["a", "b"], {"b"}, 10) == pytest.approx(1 / math.log2(3))
    assert recall_at_k(["a"], {"b"}, 10) == 0.0
    means = mean_metrics(metrics_from_ranks([1, None, 0, float("nan")], ks=(10,)))
    assert means["recall@10"] == pytest.approx(0.25)  # 1 hit over 4 users, not 1 over 1
    assert means["ndcg@10"] == pytest.approx(0.25)


def test_duplicates_do_not_earn_twice():
    assert recall_at_k(["a", "a", "b"], {"a", "b"}, 2) == pytest.approx(1.0)  # deduped list is a, b
    assert rank_of(["x", "x", "t"], "t") == 2
    with pytest.raises(ValueError):
        ndcg_at_k(["a"], set(), 5)
    with pytest.raises(ValueError):
        ndcg_at_k(["a"], {"a"}, 0)


def test_ranks_from_scores_ties_count_against_target():
    scores = np.array([[0.1, 0.5, 0.5, 0.2],
                       [0.9, 0.3, 0.3, 0.3],
                       [-np.inf, 0.0, 1.0, 2.0]])
    ranks = ranks_from_scores(scores, np.array([1, 2, 0]))
    # row 0: target 0.5 ties with another 0.5 -> rank 2 (pessimistic); row 1: 1 above + 2 ties -> 4;
    # row 2: masked target is last
    assert ranks.tolist() == [2, 4, 4]
    with pytest.raises(ValueError):
        ranks_from_scores(np.array([[np.nan, 1.0]]), np.array([0]))


def test_topk_from_scores_order():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(5, 40))
    top = topk_from_scores(scores, 7)
    np.testing.assert_array_equal(top, np.argsort(-scores, axis=1)[:, :7])
    # the rank of any item equals its position in a full sort
    ranks = ranks_from_scores(scores, top[:, 3])
    assert ranks.tolist() == [4] * 5


@pytest.mark.parametrize("seed", [0, 1])
def test_against_ranx_on_random_runs(seed):
    ranx = pytest.importorskip("ranx")
    rng = np.random.default_rng(seed)
    n_users, n_items, list_len = 150, 60, 25
    qrels, run, lists, relevant = {}, {}, {}, {}
    for u in range(n_users):
        rel = set(rng.choice(n_items, size=int(rng.integers(1, 4)), replace=False).tolist())
        length = int(rng.integers(1, list_len + 1))  # some lists shorter than K
        ranked = rng.choice(n_items, size=length, replace=False).tolist()
        qid = f"u{u}"
        qrels[qid] = {f"i{i}": 1 for i in rel}
        run[qid] = {f"i{i}": float(length - pos) for pos, i in enumerate(ranked)}  # distinct, descending
        lists[qid], relevant[qid] = [f"i{i}" for i in ranked], {f"i{i}" for i in rel}
    names = [f"{m}@{k}" for m in ("ndcg", "recall", "mrr") for k in (1, 5, 10, 20)]
    expected = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), names)
    funcs = {"ndcg": ndcg_at_k, "recall": recall_at_k, "mrr": mrr_at_k}
    for name in names:
        family, k = name.split("@")
        ours = np.mean([funcs[family](lists[q], relevant[q], int(k)) for q in qrels])
        assert ours == pytest.approx(expected[name], abs=1e-9), name
    # single-target users: the vectorized rank path agrees with ranx too
    single_q = {q: {next(iter(sorted(relevant[q]))): 1} for q in qrels}
    ranks = [rank_of(lists[q], next(iter(single_q[q]))) for q in qrels]
    ours = mean_metrics(metrics_from_ranks(ranks, ks=(5, 10, 20)))
    expected = ranx.evaluate(ranx.Qrels(single_q), ranx.Run(run), ["ndcg@10", "recall@20", "mrr@5"])
    for name in ("ndcg@10", "recall@20", "mrr@5"):
        assert ours[name] == pytest.approx(expected[name], abs=1e-9), name


def test_bootstrap_ci_contains_mean_and_narrows():
    rng = np.random.default_rng(0)
    small = (rng.random(200) < 0.1).astype(float)
    large = (rng.random(20000) < 0.1).astype(float)
    lo_s, hi_s = bootstrap_cis({"m": small}, n_boot=500, seed=1)["m"]
    lo_l, hi_l = bootstrap_cis({"m": large}, n_boot=500, seed=1)["m"]
    assert lo_s <= small.mean() <= hi_s
    assert lo_l <= large.mean() <= hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5
    # same seed, same interval
    assert bootstrap_cis({"m": small}, n_boot=500, seed=1)["m"] == (lo_s, hi_s)


def test_paired_tests_detect_a_real_difference_only():
    rng = np.random.default_rng(0)
    a = rng.random(500)
    b = a - 0.05 + rng.normal(0, 0.02, 500)
    delta, (lo, hi), p = paired_bootstrap(a, b, n_boot=2000, seed=0)
    assert delta == pytest.approx(np.mean(a - b))
    assert lo > 0 and p < 0.01
    p_w, nonzero = wilcoxon_p(a, b)
    assert p_w < 1e-10 and nonzero == 500
    noise = a + rng.normal(0, 0.02, 500)
    _, (lo, hi), p = paired_bootstrap(a, noise, n_boot=2000, seed=0)
    assert lo < 0 < hi and p > 0.05
    assert wilcoxon_p(a, a) == (1.0, 0)

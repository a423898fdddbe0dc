"""The fit floor: candidate groups stored once and cut by depth (the same rows the per-trial copies gave), and
the training users sampled by a learning curve that stops on its own and is reported with the fit."""

from __future__ import annotations

import numpy as np
from test_fusion import _retriever
from test_sasrec_select import _noisy_chain

import recgen.fit.fusion as fusion
from recgen.data.split_arrays import EvalData
from recgen.fit.fusion import FusionFitter
from recgen.ranking.fusion.features import Group
from recgen.ranking.fusion.groups import GroupSet
from recgen.ranking.fusion.model import stack_groups


def _random_groups(rng, n, n_features=4):
    groups, labels = [], []
    for _ in range(n):
        size = int(rng.integers(0, 30))
        pool_rank = rng.integers(1, 40, size=size)
        rows = rng.permutation(1000)[:size]
        group = Group(rows, rng.normal(size=(size, n_features)).astype(np.float32), pool_rank)
        target = int(rows[rng.integers(size)]) if size and rng.random() < 0.7 else -1
        groups.append(group)
        labels.append(group.label(target))
    return groups, labels


def test_a_cut_holds_exactly_the_rows_the_per_group_copies_held():
    rng = np.random.default_rng(3)
    store, old = GroupSet(4), []
    for tag in (0, 0, 1, 2):  # batches: two of validation targets, then prefix shifts 1 and 2
        groups, labels = _random_groups(rng, 40)
        store.add(groups, labels, tag=tag, positives_only=tag > 0)
        old += [(g.X, y, g.pool_rank, tag) for g, y in zip(groups, labels) if tag == 0 or y.any()]
    assert len(store) == len(old) and store.count(0) == 80
    for depth in (5, 20, 39):
        for shifts in (0, 1, 2):
            cut = store.cut(depth, shifts)
            X, y, sizes = stack_groups([(X[pr <= depth], y[pr <= depth]) for X, y, pr, t in old if t <= shifts])
            np.testing.assert_array_equal(cut.X, X)
            np.testing.assert_array_equal(cut.y, y)
            assert list(cut.sizes) == sizes and cut.X.dtype == np.float32
            parts = list(store.chunks(depth, shifts))  # the same cut, chunk by chunk (held-out scoring)
            np.testing.assert_array_equal(np.concatenate([p.X for p in parts]), cut.X)
            np.testing.assert_array_equal(np.concatenate([p.kept for p in parts]), cut.kept)


def test_the_learning_curve_samples_training_users_and_stops_on_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(fusion, "FIRST_SAMPLE", 16)  # a small set: steps of 16, 32, ... users
    data = EvalData.from_dataset(_noisy_chain(n_items=60, n_users=400, length=12, seed=5))
    fitted = FusionFitter(retriever=_retriever(data), depths=[10, 20], leaves=[7], prefixes=(1,), threads=1).fit(data)
    curve, users = fitted.info["learning_curve"]["steps"], fitted.info["users"]
    sizes = [step["train_users"] for step in curve]
    assert sizes[0] == 16 and all(b == min(2 * a, users["train"]) for a, b in zip(sizes, sizes[1:]))
    assert users["train_sampled"] == sizes[-1] <= users["train"]
    # it stopped at the first doubling whose gain was within its noise, or when the users ran out
    for step in curve[1:-1]:
        assert step["gain"] > fusion.CURVE_SES * step["gain_se"]
    assert sizes[-1] == users["train"] or curve[-1]["gain"] <= fusion.CURVE_SES * curve[-1]["gain_se"]
    assert curve[-1]["held_out_ndcg@10"] == fitted.info["selection"][1]["held_out_ndcg@10"]  # the deepest trial
    # held-out users: a small set keeps all of them (fewer than the minimum a cap may stop at)
    assert users["held_out_scored"] == users["held_out"] == fitted.held.sum() == fitted.held_out["users"]


def test_evaluation_scores_users_in_chunks_with_identical_rows(tmp_path, monkeypatch):
    """`recgen eval run` streams: the fused scores of at most ``batch_size`` users exist at once (a
    [batch, n_items] block), rows are yielded per chunk, and the rows do not depend on the chunk size."""
    from recgen.evaluation.protocol import evaluate_users
    from recgen.evaluation.systems.fusion import FusionSystem

    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    data = EvalData.from_dataset(_noisy_chain(n_items=60, n_users=120, length=10, seed=2))
    system = FusionSystem(retriever=_retriever(data), depths=[10], leaves=[7], prefixes=(), threads=1)
    system.fit(data)
    seen, score = [], system.score
    monkeypatch.setattr(system, "score", lambda histories: seen.append(len(histories)) or score(histories))
    chunked = list(evaluate_users(system, data, "test", range(data.n_users), batch_size=16))
    assert max(seen) == 16 and [len(rows) for rows in chunked] == seen
    whole = [r for rows in evaluate_users(system, data, "test", range(data.n_users), batch_size=data.n_users)
             for r in rows]
    assert [r for rows in chunked for r in rows] == whole

"""The LM as a learned feature of the fusion second stage: features line up with candidates, LM scores are
memoized on disk across runs, the stacked model learns to trust an informative LM and is refused without one,
and the fusion system's ``lm`` stage runs end to end with a real (tiny, random) causal LM without reading a
test target."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_fusion import _retriever

from recgen.data import Dataset
from recgen.errors import ModelLoadError
from recgen.evaluation.protocol import EvalData, score_rows
from recgen.evaluation.synthetic import chain_dataset
from recgen.evaluation.systems import make_system
from recgen.lm.prompt import ChatPrompt
from recgen.ranking.fusion.lm_features import (
    DiskScoreMemo,
    LMStackedRanker,
    features_from_logprobs,
    lm_feature_names,
    memo_path,
    stack_feature_names,
    stack_matrix,
)


class _CountingBackend:
    """Scores label i as -i (only ``score_labels`` is used) and counts the prompts it was sent."""

    name = "counting"

    def __init__(self):
        self.sent = 0

    def score_labels(self, prompts, labels):
        self.sent += len(prompts)
        return [[-float(i) for i in range(len(ls))] for ls in labels]


def _prompt(text: str) -> ChatPrompt:
    return ChatPrompt([{"role": "user", "content": text}])


def test_disk_memo_resumes_without_calling_the_lm_again(tmp_path):
    path = tmp_path / "memo" / "lm-zeroshot.jsonl"
    first = DiskScoreMemo(_CountingBackend(), path)
    prompts, labels = [_prompt("a"), _prompt("b")], [["A", "B"], ["A", "B", "C"]]
    rows = first.score_labels(prompts, labels)
    assert first.backend.sent == 2 and rows[1] == [0.0, -1.0, -2.0]
    with path.open("a") as out:
        out.write('["torn')  # a run killed mid-write
    again = DiskScoreMemo(_CountingBackend(), path)
    assert again.loaded == 2
    assert again.score_labels(prompts, labels) == rows and again.backend.sent == 0
    again.score_labels([_prompt("c")], [["A"]])
    assert again.backend.sent == 1
    key, _ = json.loads(path.read_text().splitlines()[0])
    assert len(key) == 64  # a hash, not the prompt text


def test_disk_memo_reads_rows_another_process_appended(tmp_path):
    """Two runs share one memo file: rows the other appended after this one started are used, not recomputed."""
    path = tmp_path / "lm.jsonl"
    run, prewarm = DiskScoreMemo(_CountingBackend(), path), DiskScoreMemo(_CountingBackend(), path)
    prewarm.score_labels([_prompt("late user")], [["A", "B"]])
    with path.open("a") as out:
        out.write('["half a line')  # being written by the other process: not read yet
    assert run.score_labels([_prompt("late user")], [["A", "B"]]) == [[0.0, -1.0]]
    assert run.backend.sent == 0 and prewarm.backend.sent == 1


def test_memo_file_differs_per_adapter(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"weights-1")
    a = memo_path(tmp_path, "m", str(adapter))
    (adapter / "adapter_model.safetensors").write_bytes(b"weights-2")
    assert a != memo_path(tmp_path, "m", str(adapter)) != memo_path(tmp_path, "m", None)
    assert memo_path(tmp_path, "m", None).name == "m-zeroshot.jsonl"


def test_lm_features_rank_and_normalise_the_logprobs():
    x = features_from_logprobs(np.log([0.2, 0.5, 0.3]))
    assert lm_feature_names() == ["lm_logprob", "lm_rank", "lm_prob"]
    np.testing.assert_array_equal(x[:, 1], [3, 1, 2])
    np.testing.assert_allclose(x[:, 2], [0.2, 0.5, 0.3])
    np.testing.assert_allclose(features_from_logprobs(np.array([-1.0, -1.0]))[:, 1], [1, 2])  # ties: list order
    X = stack_matrix(np.array([3.0, 2.0, 1.0]), x)
    assert X.shape == (3, len(stack_feature_names())) and list(X[:, 1]) == [1, 2, 3]


def _groups(n, rng, lm_informative: bool):
    """Top-20 groups whose target sits at a random fused rank; the LM's favourite is the target when
    ``lm_informative``, else a random candidate."""
    out = []
    for _ in range(n):
        fused = np.sort(rng.normal(size=20))[::-1]
        y = np.zeros(20, dtype=np.float32)
        y[rng.integers(20)] = 1
        logits = rng.normal(size=20)
        logits[int(np.argmax(y)) if lm_informative else rng.integers(20)] += 4.0
        lp = logits - np.log(np.exp(logits).sum())
        out.append((stack_matrix(fused, features_from_logprobs(lp)), y))
    return out


def test_stacked_model_learns_an_informative_lm_and_is_refused_without_one(tmp_path):
    rng = np.random.default_rng(0)
    groups = _groups(400, rng, lm_informative=True)
    model = LMStackedRanker.fit(groups[:300], groups[300:], threads=1)
    top1 = np.mean([y[model.rerank(X)[0]] for X, y in groups[300:]])
    fused_top1 = np.mean([y[0] for _, y in groups[300:]])
    assert top1 > 0.6 > fused_top1 + 0.4
    assert next(iter(model.importance())).startswith("lm_")
    path = model.save(tmp_path / "stacked.txt")
    loaded = LMStackedRanker.load(path)
    X = groups[301][0]
    np.testing.assert_allclose(loaded.predict(X), model.predict(X))
    with pytest.raises(ModelLoadError) as err:  # fitted with LM features, served without an LM
        LMStackedRanker.load(path, use_lm=False)
    assert str(path) in str(err.value) and "lm_logprob" in str(err.value)


@pytest.fixture(scope="module")
def chain() -> EvalData:
    return EvalData.from_dataset(chain_dataset(n_items=40, n_users=200, length=8, seed=1))


def _lm_system(data, lm_dir, lm="zeroshot"):
    return make_system("fusion", {"retriever": _retriever(data), "depths": [10], "leaves": [7], "threads": 1,
                                  "prefixes": [], "lm": lm, "lm_users": 40, "config": {"lm": {"model": lm_dir}}})


def test_lm_stage_runs_end_to_end_with_a_real_lm_and_memoizes(chain, tiny_lm_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    system = _lm_system(chain, tiny_lm_dir)
    system.fit(chain)
    info = system.params()["lm_stage"]
    assert system.params()["lm"] == "zeroshot" and info["design"] in ("stacked", "refit", "none")
    assert info["users"] == 40 and 0 < info["lm_calls"] <= 40  # identical prompts are scored once
    assert set(info["cv_ndcg@10"]) == {"fused", "stacked", "stacked_no_lm", "refit"}
    assert (tmp_path / "cache" / "lmfuse").is_dir()
    assert info["design"] == "none" or info["model"]["file"].endswith(".txt")
    histories = [chain.history("test", p) for p in range(12)]
    scores = system.score(histories)
    calls = system.lm.memo.calls
    np.testing.assert_array_equal(system.score(histories), scores)  # memoized: no new LM calls, same result
    assert system.lm.memo.calls == calls
    plain = _lm_system(chain, tiny_lm_dir, lm="none")
    plain.fit(chain)
    base = plain.score(histories)
    for r in range(len(histories)):
        top = set(np.argsort(-base[r], kind="stable")[:20][base[r][np.argsort(-base[r], kind="stable")[:20]] > -1e8])
        if info["design"] == "stacked":  # only the fused top m is re-ordered
            assert set(np.argsort(-scores[r], kind="stable")[:len(top)]) == top
    if info["design"] == "none":
        np.testing.assert_array_equal(scores, base)
    rows = [r for b in score_rows(system, chain, "test", range(20)) for r in b]
    assert len(rows) == 20


def test_lm_stage_never_reads_test_targets(chain, tiny_lm_dir, tmp_path, monkeypatch):
    """Two datasets that differ only in every user's test item give the same fitted LM stage."""
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    ids = chain.dataset.catalog.ids
    other = {u: seq[:-1] + [ids[(ids.index(seq[-1]) + 17) % len(ids)]] for u, seq in chain.dataset.sequences.items()}
    changed = EvalData.from_dataset(Dataset("changed", chain.dataset.catalog, other))
    out = []
    for data in (chain, changed):
        system = _lm_system(data, tiny_lm_dir)
        system.fit(data)
        out.append((system.params()["lm_stage"]["cv_ndcg@10"],
                    system.score([data.history("valid", p) for p in range(20)])))
    assert out[0][0] == out[1][0]
    np.testing.assert_array_equal(out[0][1], out[1][1])


def test_an_lm_that_loses_to_the_fused_order_on_validation_gets_no_weight(chain, tiny_lm_dir, tmp_path, monkeypatch):
    """When every LM design scores below the fused order in cross-validation, the LM stage is 'none': the served
    scores are the fused order's, so a weak LM cannot make lists worse (re-fitting with a stronger LM re-weighs it)."""
    from recgen.fit.fusion_lm import LMStage

    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(LMStage, "_fold", lambda self, system, tr, va, *a, **k: {
        name: (np.full(len(va), -1.0), None) for name in ("stacked", "stacked_no_lm", "refit")})
    system = _lm_system(chain, tiny_lm_dir)
    system.fit(chain)
    assert system.params()["lm_stage"]["design"] == "none"
    plain = _lm_system(chain, tiny_lm_dir, lm="none")
    plain.fit(chain)
    histories = [chain.history("test", p) for p in range(12)]
    np.testing.assert_array_equal(system.score(histories), plain.score(histories))


def test_a_forced_design_measures_the_lm_features_even_without_validation_support(chain, tiny_lm_dir, tmp_path,
                                                                                    monkeypatch):
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    forced = make_system("fusion", {"retriever": _retriever(chain), "depths": [10], "leaves": [7], "threads": 1,
                                    "prefixes": [], "lm": "zeroshot", "lm_users": 40, "lm_design": "stacked",
                                    "config": {"lm": {"model": tiny_lm_dir}}})
    forced.fit(chain)  # the ablation: the LM's features are measured even when validation gives them no weight
    assert forced.params()["lm_stage"]["design"] == "stacked" and forced.params()["lm_design"] == "stacked"


def test_the_guard_wants_confidence_not_a_mean_gain():
    """A CV mean gain made of a few lucky users (the ml-100k case: +0.0015 on 189 users) gives the LM no weight;
    a gain seen across many users does."""
    from recgen.fit.fusion_lm import lm_guard
    from recgen.metrics import ndcg_gains

    rng = np.random.default_rng(0)
    fused = ndcg_gains(rng.integers(0, 30, size=189))
    lucky = fused.copy()
    moved = rng.choice(189, size=12, replace=False)
    lucky[moved[:7]] += 0.1  # seven users up, five down: mean +0.0016
    lucky[moved[7:]] -= 0.08
    assert lucky.mean() > fused.mean() and not lm_guard(lucky, fused)["passed"]
    steady = fused + np.where(rng.random(189) < 0.3, 0.05, 0.0)
    verdict = lm_guard(steady, fused)
    assert verdict["passed"] and verdict["lower_bound_95_one_sided"] > 0 and verdict["users"] == 189


def test_an_lm_with_an_unconfident_cv_gain_gets_no_weight(chain, tiny_lm_dir, tmp_path, monkeypatch):
    from recgen.fit.fusion_lm import LMStage

    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    real_fold = LMStage._fold

    def noisy(self, system, tr, va, stacked, plain, y_top, fused_rank, *a, **k):
        out = real_fold(self, system, tr, va, stacked, plain, y_top, fused_rank, *a, **k)
        base = np.array([1.0 / np.log2(fused_rank[i] + 1) if 0 < fused_rank[i] <= 10 else 0.0 for i in va])
        bump = np.zeros(len(va))
        bump[:1] = 0.2  # one user up, one down: the mean gains, the evidence does not
        bump[1:2] = -0.19
        return {name: (base + bump, model) for name, (_, model) in out.items()}

    monkeypatch.setattr(LMStage, "_fold", noisy)
    system = _lm_system(chain, tiny_lm_dir)
    system.fit(chain)
    info = system.params()["lm_stage"]
    assert info["design"] == "none" and not info["guard"]["passed"] and info["guard"]["mean_diff"] > 0


def test_the_harness_skips_lm_calls_only_where_they_cannot_change_a_row(chain, tiny_lm_dir, tmp_path, monkeypatch):
    """Users whose target is below the fused top m get their row from the fused order (the stacked LM stage
    only re-orders the top m); every row equals the row of scoring every user with the LM."""
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    forced = make_system("fusion", {"retriever": _retriever(chain), "depths": [10], "leaves": [7], "threads": 1,
                                    "prefixes": [], "lm": "zeroshot", "lm_users": 40, "lm_design": "stacked",
                                    "config": {"lm": {"model": tiny_lm_dir}}})
    forced.fit(chain)
    assert forced.reorders_top == 20

    class Unpruned:  # the same system without the hint: every user goes through the LM stage
        name = "fusion"

        def score(self, histories):
            return forced.score(histories)

    # test targets moved off the chain, so many are below the fused top 20 (histories unchanged)
    ids = chain.dataset.catalog.ids
    moved = {u: seq[:-1] + [ids[(ids.index(seq[-1]) + 17) % len(ids)]] for u, seq in chain.dataset.sequences.items()}
    data = EvalData.from_dataset(Dataset("moved", chain.dataset.catalog, moved))
    users = range(60)
    calls = []
    real = forced.score
    monkeypatch.setattr(forced, "score", lambda histories: calls.append(len(histories)) or real(histories))
    pruned = [r for b in score_rows(forced, data, "test", users) for r in b]
    scored_pruned = sum(calls)
    full = [r for b in score_rows(Unpruned(), data, "test", users) for r in b]
    assert pruned == full and any(r["rank"] > 20 for r in full) and any(r["rank"] <= 20 for r in full)
    # ties with the 20th score are scored too (the fused order could put the target inside the 20)
    assert sum(r["rank"] <= 20 for r in full) <= scored_pruned < 60 == sum(calls) - scored_pruned

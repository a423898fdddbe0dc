"""The fit layer (``recgen.fit``): ``recgen fit`` descends without the evaluation package, the fit never imports
evaluation (shown to fail on a planted violation), one home per ranking formula (``recgen.metrics``), and the
fit's numbers are the ones the evaluation package's fit produced before the move (a pure refactor)."""

from __future__ import annotations

import ast
import dataclasses
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from test_architecture import REPO, lint_imports
from test_fusion import _retriever
from test_sasrec_select import _noisy_chain

from recgen.data.split_arrays import EvalData
from recgen.evaluation.metrics import metrics_from_ranks, ranks_from_scores
from recgen.evaluation.systems.fusion import FusionSystem
from recgen.fit.fusion import FusionFit, FusionFitter
from recgen.metrics import ndcg_gains, target_rank, target_ranks


def test_recgen_fit_descends_without_the_evaluation_package():
    code = ("import sys, recgen.cli.fit_cmd, recgen.fit.serving, recgen.fit.fusion_lm, recgen.fit.sasrec\n"
            "print(sorted(m for m in sys.modules if m.startswith('recgen.evaluation')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("where, line", [
    ("recgen/fit/_planted.py", "def f():\n    from ..evaluation import stats\n"),  # fit reaching into evaluation
    ("recgen/_planted_leaf.py", None),                                           # the metrics leaf importing data
])
def test_the_fit_and_leaf_contracts_fail_on_a_planted_violation(tmp_path, where, line):
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "recgen", copy / "recgen", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    if line is None:
        leaf = copy / "recgen/metrics.py"
        leaf.write_text(leaf.read_text() + "\nfrom .data import split  # noqa: E402,F401\n")
    else:
        (copy / where).write_text(line)
    result = lint_imports(copy)
    assert result.returncode != 0 and "BROKEN" in result.stdout, result.stdout[-2000:]


def test_the_leaf_counts_ties_against_the_target_and_a_miss_as_zero():
    scores = np.array([0.5, 0.9, 0.5, 0.1])
    assert target_rank(scores, np.array([1, 0, 0, 0])) == 3  # two rows at 0.5 tie: both count against it
    assert target_rank(scores, np.zeros(4)) == 0
    assert target_ranks(scores[None, :], [3]).tolist() == [4]
    gains = ndcg_gains([1, 3, 0, None, float("nan"), float("inf"), 10, 11])
    assert gains.tolist() == [1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 1 / math.log2(11), 0.0]
    assert ndcg_gains(np.array([5]), k=4).tolist() == [0.0]
    # evaluation's metrics are the leaf's
    ranks = np.array([1, 2, 7, 0, 12])
    np.testing.assert_array_equal(metrics_from_ranks(ranks, ks=(10,))["ndcg@10"], ndcg_gains(ranks))
    matrix = np.array([[0.2, 0.2, 0.1], [0.3, 0.1, 0.3]])
    np.testing.assert_array_equal(ranks_from_scores(matrix, [0, 1]), target_ranks(matrix, [0, 1]))


def _functions_with(predicate):
    """(path, innermost enclosing function or "<module>") of every node in recgen/ matching ``predicate``,
    outside the leaf."""
    found = set()

    def visit(node, rel, name):
        if predicate(node):
            found.add((rel, name))
        inner = node.name if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else name
        for child in ast.iter_child_nodes(node):
            visit(child, rel, inner)

    for path in sorted((REPO / "recgen").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel != "recgen/metrics.py":
            visit(ast.parse(path.read_text()), rel, "<module>")
    return found


def test_one_home_for_single_target_ndcg_and_target_rank():
    """A log2 discount outside the leaf is only the list metric (several relevant items, ideal DCG); a target's
    rank by ``scores >= scores[target]`` is only the leaf's."""
    log2 = _functions_with(lambda n: isinstance(n, ast.Attribute) and n.attr == "log2")
    assert log2 == {("recgen/evaluation/metrics.py", "ndcg_at_k")}, log2
    same_name_compare = _functions_with(
        lambda n: isinstance(n, ast.Compare) and isinstance(n.left, ast.Name) and any(
            isinstance(c, ast.Subscript) and isinstance(c.value, ast.Name) and c.value.id == n.left.id
            for c in n.comparators))
    assert same_name_compare == set(), same_name_compare


def test_the_fit_is_a_frozen_result_with_the_numbers_of_the_fit_before_the_move(tmp_path, monkeypatch):
    """FusionFitter returns a frozen FusionFit; its choice is the first best trial; and on this noisy chain the
    held-out NDCG@10 values are the ones ``FusionSystem.fit`` gave before the fit moved to ``recgen.fit``
    (recorded at 1fdf6c4)."""
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    data = EvalData.from_dataset(_noisy_chain(n_items=60, n_users=300, length=12, seed=5))
    fitter = FusionFitter(retriever=_retriever(data), depths=[10, 20], leaves=[7, 15], prefixes=(1, 2), threads=1)
    fitted = fitter.fit(data)
    assert isinstance(fitted, FusionFit)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fitted.depth = 20
    trials = fitted.info["selection"]
    # the settings trials are unchanged; the item-representation group (textrep, tried after them at the chosen
    # settings) is one more trial, and it is not kept: it does not raise the held-out NDCG@10 here
    assert [(t["depth"], t["num_leaves"], t["prefix_shifts"], t["held_out_ndcg@10"]) for t in trials] == [
        (10, 7, 0, 0.72245), (20, 7, 0, 0.70833), (10, 7, 1, 0.70645), (10, 15, 0, 0.71771), (10, 7, 0, 0.71764)]
    assert fitted.info["item_features"]["chosen"] == [] and not fitted.info["item_features"]["trials"][1]["kept"]
    assert fitted.held_out["fusion"] == pytest.approx(0.7224462950535561, abs=1e-12)
    assert fitted.held_out["hybrid"] == pytest.approx(0.6720078379002136, abs=1e-12)
    assert (fitted.depth, fitted.leaves) == (10, 7) and fitted.ranker.feature_names == fitted.stage.builder.names
    # the evaluation system is an adaptor: the same fit, the same scores
    system = FusionSystem(retriever=_retriever(data), depths=[10, 20], leaves=[7, 15], prefixes=(1, 2), threads=1)
    system.fit(data)
    histories = [data.history("valid", p) for p in range(30)]
    np.testing.assert_array_equal(system.score(histories), fitted.stage.score_all(histories))

"""Choosing SASRec's settings on validation, automatically, so an unseen dataset needs no hand-set constants.

Two kinds of setting:

* **derived from the data** (no training needed): ``max_len`` holds the whole training history of 99% of the
  users (the 99th percentile of the lengths, rounded up to a multiple of 10, within [10, 200]: this gives the
  paper's 50 on Amazon Beauty and 200 on MovieLens), and the bfloat16 output layer and loss when the catalog
  is large enough for the output layer to dominate an epoch (:data:`BF16_MIN_ITEMS`), and the loss: the full
  softmax while one step's output layer (batch x max_len x n_items float32 logits) fits in
  :data:`CE_MEMORY_BUDGET`, past it a sampled softmax with logQ correction whose memory does not grow with the
  catalog (:func:`loss_choice`).
* **chosen on validation** from a small declared :data:`GRID` by successive halving: every candidate trains
  :data:`FIRST_RUNG_EPOCHS` epochs, the better half (by validation NDCG@10 on the early-stopping sample)
  continues until early stopping, and the finalists are compared on *all* validation users. A candidate is an
  ordinary resumable training run, so the survivors continue from where the first rung stopped (exactly as
  an uninterrupted run) and a killed selection resumes.

This module knows nothing about datasets or metrics: the caller passes ``train(config, max_epochs)`` (train or
resume one candidate) and ``final_score(model)`` (validation NDCG@10 over all users).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:  # the selection itself needs no torch: importing it (the eval registry does) stays cheap
    from ..models.sasrec import SASRec, SASRecConfig
    from .sasrec_train import TrainReport

#: The declared search space (successive halving keeps half of it after the first rung). ``item_init``: random
#: vectors or the catalog's text embeddings as the item table's start (Harte et al., RecSys 2023): which helps
#: depends on how much the titles say, so validation decides. ``item_lr``: the item table's learning rate as a
#: multiple of the rest's, tried only for a text start (:data:`TEXT_START_ONLY`): a text start peaks early and
#: then overfits at the full rate (Beauty: best epoch 5 of 13), a slower table keeps more of the text. Dropped
#: from the earlier 12-candidate grid (eval/results/sasrec/NOTES.md): hidden 64 (below 128 at the first rung on
#: both datasets measured; 128 is in :data:`~.sasrec.BASE_SETTINGS`) and "text_frozen" (0.030 vs 0.077 for a
#: trained text table at the Beauty rung; ``item_lr`` < 1 is its graded form): 6 candidates instead of 12.
GRID: dict[str, tuple] = {"dropout": (0.3, 0.5), "item_init": ("random", "text"), "item_lr": (1.0, 0.1)}
#: Settings that only shape a table started from text: a random start keeps the base value (no duplicates).
TEXT_START_ONLY = ("item_lr",)
#: Epochs every candidate gets before the worse half is dropped (Beauty's curves are ordered by then).
FIRST_RUNG_EPOCHS = 5
#: From this catalog size on the output layer (a [positions x items] matrix) dominates an epoch and is computed
#: in bfloat16 (a quarter of its float32 cost, same losses: NOTES.md); smaller catalogs keep float32.
BF16_MIN_ITEMS = 5000
MAX_LEN_QUANTILE, MAX_LEN_STEP, MAX_LEN_RANGE = 0.99, 10, (10, 200)
#: Bytes one training step's full-softmax logits may take (batch x max_len x n_items x 4; their gradient and the
#: softmax double it): 1 GiB keeps a step under ~3 GB on a 24 GB machine shared with the other stages. Amazon
#: Beauty (12k items, max_len 50) needs 0.31 GB and keeps the full softmax; past ~42k items at max_len 50
#: (~10k at max_len 200) the sampled softmax takes over.
CE_MEMORY_BUDGET = 1 << 30
#: The default batch size (SASRecConfig's), used for the memory estimate when the caller gives none.
DEFAULT_BATCH = 128


def loss_choice(n_items: int, max_len: int, batch_size: int = DEFAULT_BATCH, budget: int | None = None) -> dict:
    """The loss for this catalog and why: ``ce`` when one step's logits fit ``budget`` (default
    :data:`CE_MEMORY_BUDGET`), else ``sampled``."""
    budget = CE_MEMORY_BUDGET if budget is None else budget
    logits_bytes = int(batch_size) * int(max_len) * int(n_items) * 4
    return {"loss": "ce" if logits_bytes <= budget else "sampled", "ce_logits_bytes": logits_bytes,
            "ce_budget_bytes": int(budget)}


def derived_settings(train_sequences: list[np.ndarray], n_items: int, batch_size: int = DEFAULT_BATCH,
                     budget: int | None = None) -> dict:
    """Settings that follow from the data alone (see the module docstring)."""
    lengths = np.fromiter((len(s) for s in train_sequences), dtype=np.int64, count=len(train_sequences))
    quantile = float(np.quantile(lengths, MAX_LEN_QUANTILE)) if len(lengths) else MAX_LEN_RANGE[0]
    max_len = int(math.ceil(quantile / MAX_LEN_STEP) * MAX_LEN_STEP)
    max_len = min(MAX_LEN_RANGE[1], max(MAX_LEN_RANGE[0], max_len))
    big = n_items >= BF16_MIN_ITEMS
    return {"max_len": max_len, "bf16_logits": big, "bf16_loss": big,
            "loss": loss_choice(n_items, max_len, batch_size, budget)["loss"]}


def grid_configs(base: SASRecConfig, grid: dict[str, tuple]) -> list[SASRecConfig]:
    """Every combination of the grid's values over ``base`` (drop a pinned setting from the grid first), in grid
    order; a random-start candidate keeps ``base``'s :data:`TEXT_START_ONLY` settings, so it appears once."""
    axes = dict(grid)
    if not axes:
        return [base]
    names = list(axes)
    out: list[SASRecConfig] = []
    for combo in itertools.product(*(axes[n] for n in names)):
        config = replace(base, **dict(zip(names, combo)))
        if config.item_init == "random":
            config = replace(config, **{k: getattr(base, k) for k in TEXT_START_ONLY})
        if config not in out:
            out.append(config)
    return out


@dataclass
class CandidateResult:
    config: SASRecConfig
    rung_score: float = float("nan")  # best sample validation NDCG@10 after the first rung
    finalist: bool = False
    report: TrainReport | None = None  # of the last training call (cumulative over resumes)
    valid_ndcg10: float | None = None  # all validation users, finalists only
    model: SASRec | None = field(default=None, repr=False)

    def as_json(self, grid: dict) -> dict:
        report = self.report
        return {"settings": {k: getattr(self.config, k) for k in grid}, "rung_score": self.rung_score,
                "finalist": self.finalist,
                "valid_ndcg@10": self.valid_ndcg10,
                "best_epoch": report.best_epoch if report else None, "epochs": report.epochs if report else None,
                "stopped": report.stopped if report else None,
                "cpu_seconds": report.train_cpu_seconds if report else None,
                "wall_seconds": report.train_seconds if report else None,
                "peak_rss_mb": report.peak_rss_mb if report else None, "config": asdict(self.config)}


def successive_halving(configs: list[SASRecConfig],
                       train: Callable[[SASRecConfig, int], tuple[SASRec, TrainReport]],
                       final_score: Callable[[SASRec], float],
                       first_rung: int = FIRST_RUNG_EPOCHS,
                       log: Callable[[str], None] | None = None) -> tuple[int, list[CandidateResult]]:
    """Index of the winner and every candidate's result. ``train(config, max_epochs)`` must resume a
    candidate's earlier training (``max_epochs`` is ``first_rung`` on the first call, then the config's own)."""
    results = [CandidateResult(config) for config in configs]
    if len(results) > 1:
        for result in results:
            _, result.report = train(result.config, min(first_rung, result.config.max_epochs))
            result.rung_score = rung_score(result.report, first_rung)
            if log:
                log(f"sasrec selection: rung 1 {_label(result.config)} sample NDCG@10 {result.rung_score:.4f}")
        order = sorted(range(len(results)), key=lambda i: -results[i].rung_score)  # stable: ties keep grid order
        keep = order[:math.ceil(len(results) / 2)]
    else:
        keep = [0]
    for i in keep:
        result = results[i]
        result.finalist = True
        result.model, result.report = train(result.config, result.config.max_epochs)
        if math.isnan(result.rung_score):
            result.rung_score = result.report.best_valid_ndcg10
        result.valid_ndcg10 = float(final_score(result.model))
        if log:
            log(f"sasrec selection: finalist {_label(result.config)} best epoch {result.report.best_epoch}, "
                f"all-user validation NDCG@10 {result.valid_ndcg10:.4f}")
    winner = max(keep, key=lambda i: (results[i].valid_ndcg10, -keep.index(i)))
    return winner, results


def rung_score(report: TrainReport, first_rung: int) -> float:
    """Best validation score within the first ``first_rung`` epochs (also for a candidate whose finished
    checkpoint was reused: every candidate is compared after the same number of epochs)."""
    scores = [h["valid_ndcg@10"] for h in report.history if h["epoch"] <= first_rung and "valid_ndcg@10" in h]
    return max(scores, default=report.best_valid_ndcg10)


def _label(config: SASRecConfig) -> str:
    return " ".join(f"{k}={getattr(config, k)}" for k in GRID)


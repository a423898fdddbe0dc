"""A dataset's leave-one-out split as item-index arrays: what fitting and evaluation both read.

* ``stage="valid"``: target = second-last item, history = training items (what fitting selects on).
* ``stage="test"``: target = last item, history = training items + the validation item.
* Full ranking masks only the user's own earlier items (:func:`mask_history`).

It lives in ``data`` (not ``evaluation``) because the served model's fit selects its settings on the same
validation targets the harness reports on: one split, read by both layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .dataset import Dataset
from .split import MIN_INTERACTIONS, LeaveOneOut, leave_one_out

STAGES = ("valid", "test")


def check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, not {stage!r}")
    return stage


@dataclass
class EvalData:
    """A dataset's leave-one-out split as item-index arrays, in the split's user order.

    ``train[p]`` is user ``user_ids[p]``'s training sequence (catalog rows, oldest first).
    """

    dataset: Dataset
    split: LeaveOneOut
    user_ids: list[str]
    train: list[np.ndarray]
    valid: np.ndarray
    test: np.ndarray
    _pos: dict[str, int] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dataset(cls, dataset: Dataset, min_interactions: int = MIN_INTERACTIONS) -> "EvalData":
        split = leave_one_out(dataset, min_interactions=min_interactions)
        index_of = dataset.catalog.index_of
        train = [np.fromiter((index_of(i) for i in s.train), dtype=np.int64, count=len(s.train)) for s in split.splits]
        valid = np.array([index_of(s.valid) for s in split.splits], dtype=np.int64)
        test = np.array([index_of(s.test) for s in split.splits], dtype=np.int64)
        user_ids = [s.user_id for s in split.splits]
        return cls(dataset, split, user_ids, train, valid, test, {u: p for p, u in enumerate(user_ids)})

    @property
    def n_items(self) -> int:
        return len(self.dataset.catalog)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def excluded_users(self) -> int:
        return self.split.excluded_users

    def position(self, user_id: str) -> int:
        return self._pos[user_id]

    def history(self, stage: str, p: int) -> np.ndarray:
        """What a model may see for user position ``p`` at ``stage`` (catalog rows, oldest first)."""
        if check_stage(stage) == "valid":
            return self.train[p]
        return np.append(self.train[p], self.valid[p])

    def target(self, stage: str, p: int) -> int:
        return int((self.valid if check_stage(stage) == "valid" else self.test)[p])

    def targets(self, stage: str, positions: Sequence[int]) -> np.ndarray:
        return (self.valid if check_stage(stage) == "valid" else self.test)[np.asarray(positions, dtype=np.int64)]

    def train_dataset(self) -> Dataset:
        """The dataset cut to each evaluated user's training part: what pipelines are fitted on."""
        return Dataset(self.dataset.name, self.dataset.catalog,
                       {u: list(s.train) for u, s in zip(self.user_ids, self.split.splits)})

    def train_sequences(self) -> list[np.ndarray]:
        """What systems are fitted on: each user's training part (validation and test targets held out)."""
        return self.train

    def items_without_text(self) -> list[str]:
        """Items whose title was empty in the source (the catalog gave them the ``item <id>`` placeholder)."""
        return [item.item_id for item in self.dataset.catalog
                if item.title == f"item {item.item_id}" and not item.description and not item.genres]

    def target_in_history(self, stage: str) -> int:
        """Users whose target is also among their earlier items (a repeat; masked, so always a miss)."""
        return sum(int(self.target(stage, p) in set(self.history(stage, p).tolist())) for p in range(self.n_users))


def sample_users(n_eligible: int, users: int | None, seed: int) -> np.ndarray:
    """Sorted positions of a seeded random sample of ``users`` eligible users (all when ``users`` is falsy).

    Depends only on ``n_eligible``, ``users`` and ``seed``, so two systems get identical users.
    """
    if not users or users >= n_eligible:
        return np.arange(n_eligible)
    if users < 0:
        raise ValueError("--users must be positive (0 = all users)")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_eligible, size=users, replace=False))


def mask_history(scores: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
    """Set each user's own earlier items to ``-inf`` in place (the only items removed from the ranking)."""
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    cols = np.concatenate(histories) if histories else np.zeros(0, dtype=np.int64)
    scores[rows, cols] = -np.inf
    return scores



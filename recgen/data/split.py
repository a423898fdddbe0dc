"""Leave-one-out split as the sequential-recommendation literature uses it."""

from __future__ import annotations

from dataclasses import dataclass

from .dataset import Dataset

#: A user needs one training item plus the validation and test targets.
MIN_INTERACTIONS = 3


@dataclass(frozen=True)
class UserSplit:
    """``train`` is the history given to a model; ``valid``/``test`` are the held-out next items."""

    user_id: str
    train: tuple[str, ...]
    valid: str
    test: str

    def history_for(self, stage: str) -> list[str]:
        """What a model may see when predicting ``stage``: train for valid, train + valid for test."""
        if stage == "valid":
            return list(self.train)
        if stage == "test":
            return [*self.train, self.valid]
        raise ValueError(f"stage must be 'valid' or 'test', not {stage!r}")

    def target(self, stage: str) -> str:
        if stage == "valid":
            return self.valid
        if stage == "test":
            return self.test
        raise ValueError(f"stage must be 'valid' or 'test', not {stage!r}")


@dataclass
class LeaveOneOut:
    splits: list[UserSplit]
    excluded_users: int

    def by_user(self) -> dict[str, UserSplit]:
        return {s.user_id: s for s in self.splits}


def leave_one_out(dataset: Dataset, min_interactions: int = MIN_INTERACTIONS) -> LeaveOneOut:
    """Last item = test target, second last = validation target, the rest = training history.

    Users with fewer than ``min_interactions`` items cannot be split and are counted in ``excluded_users``;
    a user needs at least 3 items (a history, a validation and a test target), so lower values count as 3.
    """
    min_interactions = max(min_interactions, MIN_INTERACTIONS)
    splits, excluded = [], 0
    for user_id, seq in dataset.sequences.items():
        if len(seq) < min_interactions:
            excluded += 1
            continue
        splits.append(UserSplit(user_id, tuple(seq[:-2]), seq[-2], seq[-1]))
    return LeaveOneOut(splits, excluded)

"""A catalog plus each user's chronologically ordered interactions."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..errors import DataError, UnknownUserError
from .catalog import Catalog


@dataclass
class Dataset:
    """``sequences[user]`` lists item ids oldest first; every id is in ``catalog``."""

    name: str
    catalog: Catalog
    sequences: dict[str, list[str]]
    dropped_unknown: int = 0
    skipped_rows: int = 0  # malformed interaction rows skipped (a loader's bad_rows="skip")
    skipped_lines: list[int] = field(default_factory=list)  # their lines (CSV) or row numbers (Parquet)
    interactions_file: str = ""  # the file they were skipped from

    def skipped_note(self, show: int = 20) -> str | None:
        """One line naming the skipped rows (None when none were): what a command prints, with --bad-rows skip."""
        if not self.skipped_rows:
            return None
        lines = ", ".join(map(str, self.skipped_lines[:show])) + (", …" if self.skipped_rows > show else "")
        return (f"{self.interactions_file}: skipped {self.skipped_rows:,} malformed row(s) (bad_rows = skip) at "
                f"line(s) {lines}")
    _popularity: list[str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.sequences:
            raise DataError(f"dataset {self.name!r} has no interactions")

    @property
    def users(self) -> list[str]:
        return list(self.sequences)

    def history(self, user_id: str) -> list[str]:
        try:
            return self.sequences[str(user_id)]
        except KeyError:
            raise UnknownUserError(
                f"user {user_id!r} is not in dataset {self.name!r} ({len(self.sequences)} users)"
            ) from None

    def set_sequence(self, user_id: str, items: list[str] | None) -> None:
        """Replace ``user_id``'s sequence (``None``: remove the user) and drop the cached popularity: the one
        way the served user data changes (the feedback loop), so the cache never outlives the data."""
        if items is None:
            self.sequences.pop(user_id, None)
        else:
            self.sequences[user_id] = items
        self._popularity = None

    def num_interactions(self) -> int:
        return sum(len(seq) for seq in self.sequences.values())

    def popularity(self) -> list[str]:
        """Item ids by interaction count, most first (ties by catalog order): the empty-history fallback."""
        if self._popularity is None:
            counts = Counter(i for seq in self.sequences.values() for i in seq)
            order = {item_id: n for n, item_id in enumerate(self.catalog.ids)}
            self._popularity = sorted(counts, key=lambda i: (-counts[i], order[i]))
        return self._popularity

"""Candidate groups held once for fitting: float32 feature rows in per-batch chunks, with per-group facts.

Fitting tries several pool depths, prefix shifts and leaf counts over the same groups. A list of per-user
(X, y) pairs cut per trial copied every group for every trial (≈5× the feature bytes in RSS at peak); here each
batch of groups is one float32 block (plus labels, pool ranks and group sizes), written once, and a trial
gets exactly one contiguous copy of the rows it keeps (what LightGBM's Dataset reads and bins; freed once
binned). Per group it keeps the target's pool rank (so a depth drops groups whose target falls outside the
cut without looking at rows) and a ``tag`` (0 = validation target, k = the ``train[-k]`` prefix target).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from .features import Group

#: the target pool rank of a group whose target is not in its pool
NOT_IN_POOL = np.iinfo(np.int32).max


@dataclass(frozen=True)
class _Chunk:
    X: np.ndarray  # float32 [rows, features]
    y: np.ndarray  # float32 [rows]
    pool_rank: np.ndarray  # int32 [rows]
    sizes: np.ndarray  # int64 [groups]
    target_rank: np.ndarray  # int32 [groups]: the target's pool rank, NOT_IN_POOL when missing
    tag: np.ndarray  # int16 [groups]


@dataclass(frozen=True)
class Stacked:
    """Rows of the groups a cut keeps, in one block (LightGBM's input); ``kept``: their group numbers."""

    X: np.ndarray
    y: np.ndarray
    sizes: np.ndarray
    kept: np.ndarray

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.sizes)])


class GroupSet:
    """Groups added batch by batch; :meth:`cut` stacks the rows of a (depth, shifts) choice."""

    def __init__(self, n_features: int) -> None:
        self.n_features = int(n_features)
        self._chunks: list[_Chunk] = []

    def add(self, groups: Sequence[Group], labels: Sequence[np.ndarray], tag: int = 0,
            positives_only: bool = False) -> None:
        """One batch of groups with their labels; ``positives_only``: drop groups whose target is not pooled
        (they carry no ranking signal for training)."""
        pairs = [(g, y) for g, y in zip(groups, labels) if not positives_only or y.any()]
        if not pairs:
            return
        X = np.concatenate([g.X for g, _ in pairs]).astype(np.float32, copy=False).reshape(-1, self.n_features)
        target = np.array([g.pool_rank[np.flatnonzero(y)[0]] if y.any() else NOT_IN_POOL for g, y in pairs],
                          dtype=np.int32)
        self._chunks.append(_Chunk(X, np.concatenate([y for _, y in pairs]).astype(np.float32),
                                   np.concatenate([g.pool_rank for g, _ in pairs]).astype(np.int32),
                                   np.array([len(y) for _, y in pairs], dtype=np.int64), target,
                                   np.full(len(pairs), tag, dtype=np.int16)))

    def __len__(self) -> int:
        return sum(len(c.sizes) for c in self._chunks)

    @property
    def rows(self) -> int:
        return sum(len(c.y) for c in self._chunks)

    @property
    def nbytes(self) -> int:
        return sum(c.X.nbytes + c.y.nbytes + c.pool_rank.nbytes for c in self._chunks)

    def count(self, tag: int) -> int:
        """Groups with this tag."""
        return sum(int((c.tag == tag).sum()) for c in self._chunks)

    def target_ranks(self) -> np.ndarray:
        """Each group's target pool rank, in the order added (NOT_IN_POOL when missing)."""
        return np.concatenate([c.target_rank for c in self._chunks]) if self._chunks else np.zeros(0, np.int32)

    def mean_size(self, depth: int) -> float:
        """Mean number of rows per group within ``depth``."""
        n = len(self)
        return sum(int((c.pool_rank <= depth).sum()) for c in self._chunks) / n if n else 0.0

    def _masks(self, depth: int, shifts: int, positives_only: bool):
        """Per chunk: (row mask, group mask, kept groups' row counts) of a cut."""
        for c in self._chunks:
            keep = c.tag <= shifts
            if positives_only:
                keep &= c.target_rank <= depth
            row_group = np.repeat(np.arange(len(c.sizes)), c.sizes)
            rows = keep[row_group] & (c.pool_rank <= depth)
            yield rows, keep, np.bincount(row_group[rows], minlength=len(c.sizes))[keep]

    def chunks(self, depth: int, shifts: int = 0, cols: Sequence[int] | None = None) -> Iterator[Stacked]:
        """The cut of :meth:`cut` (positives only) one chunk at a time: scoring without a whole copy."""
        base = 0
        for c, (rows, keep, sizes) in zip(self._chunks, self._masks(depth, shifts, True)):
            yield Stacked(_rows(c.X, rows, cols), c.y[rows], sizes, base + np.flatnonzero(keep))
            base += len(c.sizes)

    def cut(self, depth: int, shifts: int = 0, positives_only: bool = True,
            cols: Sequence[int] | None = None) -> Stacked:
        """The rows with pool rank <= ``depth`` of groups tagged <= ``shifts`` (and, with ``positives_only``,
        whose target is within ``depth``), on the columns ``cols`` (default all), stacked once; ``kept`` numbers
        the groups in the order added."""
        masks = list(self._masks(depth, shifts, positives_only))
        width = self.n_features if cols is None else len(cols)
        X = np.empty((sum(int(rows.sum()) for rows, _, _ in masks), width), dtype=np.float32)  # the copy
        start, base, kept = 0, 0, []
        for c, (rows, keep, _) in zip(self._chunks, masks):
            n = int(rows.sum())
            X[start:start + n] = _rows(c.X, rows, cols)
            start += n
            kept.append(base + np.flatnonzero(keep))
            base += len(c.sizes)
        if not masks:
            return Stacked(X, np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64))
        return Stacked(X, np.concatenate([c.y[rows] for c, (rows, _, _) in zip(self._chunks, masks)]),
                       np.concatenate([sizes for _, _, sizes in masks]), np.concatenate(kept))


def _rows(X: np.ndarray, rows: np.ndarray, cols: Sequence[int] | None) -> np.ndarray:
    """``X``'s rows where ``rows`` holds, on ``cols`` (all when None), in one indexing step (no view of all)."""
    if cols is None:
        return X[rows] if not rows.all() else X
    return X[np.ix_(np.flatnonzero(rows), np.asarray(cols, dtype=np.intp))]

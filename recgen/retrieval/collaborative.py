"""Item-to-item transitions learned from interaction sequences: the collaborative half of retrieval.

Text embeddings alone find items that *read* alike; what users actually pick next is better predicted by
what followed the same items in other users' sequences. Counts of (a → b) within ``window`` steps, weighted
1/distance, plus ``backward`` × the reverse direction, normalised ``C[a,b] / (n_a^alpha · n_b^(1-alpha))``.
A history's score for b is ``sum_k decay^k · C[h_{-1-k}, b]`` over its ``last`` most recent items.

Served transitions keep their raw counts as exact integers (``L/d`` with ``L = lcm(1..window)``), so a user's
sequence can be added or removed incrementally (the feedback loop, forgetting a user) and the result is the
SAME matrix, bit for bit, as a fit on the sequences without them: float sums depend on their order, integer
sums do not. ``transition_matrix`` (float sums) stays for the evaluation baselines whose results are pinned.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import asdict, dataclass
from functools import reduce
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..data.catalog import Catalog
from ..errors import DataError


@dataclass(frozen=True)
class TransitionParams:
    window: int = 10
    last: int = 10
    decay: float = 0.5
    backward: float = 0.25
    alpha: float = 0.75


def _pairs(seq: np.ndarray, window: int):
    """(earlier rows, later rows, distance d) of every pair within ``window`` steps of one sequence."""
    for d in range(1, window + 1):
        if len(seq) <= d:
            break
        yield seq[:-d], seq[d:], d


def _normalise(counts: sp.csr_matrix, alpha: float) -> sp.csr_matrix:
    """``C[a,b] / (n_a^alpha · n_b^(1-alpha))`` with out/in weights from ``counts`` itself."""
    out_w = np.asarray(counts.sum(axis=1)).ravel()
    in_w = np.asarray(counts.sum(axis=0)).ravel()
    left = np.where(out_w > 0, out_w, 1.0) ** -alpha
    right = np.where(in_w > 0, in_w, 1.0) ** -(1.0 - alpha)
    return (sp.diags(left) @ counts @ sp.diags(right)).tocsr()


def transition_matrix(sequences: list[np.ndarray], n_items: int, window: int, backward: float,
                      alpha: float) -> sp.csr_matrix:
    """Normalised (a → b) counts over catalog-row sequences, float64 sums: the ItemKNN baseline and the fused
    second stage's neighbours (their committed results are pinned to this formula). ``backward`` = 0 adds no
    reverse entries at all."""
    rows, cols, vals = [], [], []
    for seq in sequences:
        for a, b, d in _pairs(seq, window):
            rows.append(a)
            cols.append(b)
            vals.append(np.full(len(a), 1.0 / d))
            if backward > 0:
                rows.append(b)
                cols.append(a)
                vals.append(np.full(len(a), backward / d))
    if rows:
        counts = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                               shape=(n_items, n_items))
    else:
        counts = sp.csr_matrix((n_items, n_items))
    counts.sum_duplicates()
    return _normalise(counts, alpha)


#: Exact counts are int64 ``L/d`` sums; beyond this ``L`` a long-lived log could overflow them.
_MAX_SCALE = 2**33


def count_scale(window: int) -> int:
    """``L = lcm(1..window)``: every ``1/d`` weight is the integer ``L // d`` in exact counts."""
    scale = reduce(math.lcm, range(1, window + 1), 1)
    if scale > _MAX_SCALE:
        raise ValueError(f"window={window} is too long for exact transition counts (at most 22 steps)")
    return scale


def pair_counts(sequences: list[np.ndarray], n_items: int, window: int) -> sp.csr_matrix:
    """Forward (a → b) counts as exact int64 ``sum L/d`` in canonical CSR form (sorted, no zeros): the same
    sequences give the same arrays whatever their order, so adding and removing them is exact."""
    scale = count_scale(window)
    rows, cols, vals = [], [], []
    for seq in sequences:
        for a, b, d in _pairs(np.asarray(seq, dtype=np.int64), window):
            rows.append(a)
            cols.append(b)
            vals.append(np.full(len(a), scale // d, dtype=np.int64))
    if not rows:
        return sp.csr_matrix((n_items, n_items), dtype=np.int64)
    counts = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                           shape=(n_items, n_items), dtype=np.int64)
    return _canonical(counts)


def _canonical(counts: sp.csr_matrix) -> sp.csr_matrix:
    counts.sum_duplicates()
    counts.eliminate_zeros()
    counts.sort_indices()
    return counts


def history_weights(histories: list[np.ndarray], n_items: int, last: int, decay: float) -> sp.csr_matrix:
    """[users, items] weights ``decay**k`` on each history's ``k``-th most recent item (``last`` of them)."""
    rows, cols, vals = [], [], []
    for r, hist in enumerate(histories):
        recent = np.asarray(hist)[-last:][::-1]  # newest first
        rows.append(np.full(len(recent), r))
        cols.append(recent)
        vals.append(decay ** np.arange(len(recent)))
    if not rows:
        return sp.csr_matrix((0, n_items))
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(len(histories), n_items))


class ItemTransitions:
    """A sparse [n_items, n_items] similarity over catalog rows, fitted on training sequences only.

    Fitted ones also hold ``counts`` (exact forward counts, see :func:`pair_counts`) and can then be updated in
    place with :meth:`update`; ones built from a bare matrix (``ItemTransitions(matrix, params)``) cannot."""

    def __init__(self, matrix: sp.csr_matrix, params: TransitionParams, counts: sp.csr_matrix | None = None):
        self.matrix = matrix.tocsr()
        self.params = params
        self.counts = counts
        self._counts_t: sp.csr_matrix | None = None  # counts transposed (the backward direction), kept in step

    @classmethod
    def fit(cls, catalog: Catalog, sequences: list[list[str]], params: TransitionParams | None = None) -> "ItemTransitions":
        params = params or TransitionParams()
        rows = [np.array([catalog.index_of(i) for i in seq], dtype=np.int64) for seq in sequences]
        return cls.from_counts(pair_counts(rows, len(catalog), params.window), params)

    @classmethod
    def from_counts(cls, counts: sp.csr_matrix, params: TransitionParams) -> "ItemTransitions":
        fitted = cls(sp.csr_matrix(counts.shape, dtype=np.float32), params, counts)
        fitted.matrix = _matrix_from_counts(counts, fitted._transposed(), params)
        return fitted

    def _transposed(self) -> sp.csr_matrix:
        if self._counts_t is None or self._counts_t.shape != self.counts.shape:
            self._counts_t = _canonical(self.counts.T.tocsr())
        return self._counts_t

    def update(self, add: list[np.ndarray] = (), remove: list[np.ndarray] = (), n_items: int | None = None) -> None:
        """Add and remove whole sequences (catalog rows, oldest first) without refitting the rest: e.g. a user's
        sequence before and after a new event, or all of a forgotten user's. ``n_items`` grows the matrix for
        items added to the catalog. The new matrix replaces the old in one assignment, so a concurrent
        :meth:`scores` sees the old or the new one, never a mix (callers serialise writers)."""
        if self.counts is None:
            raise ValueError("these transitions were built from a bare matrix, without counts; refit them to update")
        n = max(n_items or 0, self.counts.shape[0])
        counts, counts_t = self.counts, self._transposed()
        if n != counts.shape[0]:
            counts, counts_t = _resized(counts, n), _resized(counts_t, n)
        delta = pair_counts(list(add), n, self.params.window) - pair_counts(list(remove), n, self.params.window)
        counts = _canonical((counts + delta).tocsr())
        if counts.nnz and counts.data.min() < 0:
            raise ValueError("removing sequences that were never added (transition counts went negative)")
        counts_t = _canonical((counts_t + delta.T).tocsr())
        matrix = _matrix_from_counts(counts, counts_t, self.params)
        self.counts, self._counts_t, self.matrix = counts, counts_t, matrix

    def scores(self, history_rows: np.ndarray) -> np.ndarray:
        """Dense scores over the catalog for one history (catalog rows, oldest first), scaled to max 1."""
        matrix = self.matrix  # one read: an update swaps it whole
        recent = np.asarray(history_rows)[-self.params.last:][::-1]
        if len(recent) == 0:
            return np.zeros(matrix.shape[0], dtype=np.float32)
        weights = (self.params.decay ** np.arange(len(recent))).astype(np.float32)
        scores = np.asarray(matrix[recent].T @ weights).ravel()
        top = scores.max()
        return scores / top if top > 0 else scores

    def save(self, path: str | Path) -> None:
        """The matrix (``path``), its params (``.json``) and, when fitted, the exact counts (``.counts.npz``)."""
        path = Path(path)
        sp.save_npz(path, self.matrix)
        path.with_suffix(".json").write_text(json.dumps(asdict(self.params)))
        if self.counts is not None:
            sp.save_npz(_counts_path(path), self.counts)

    @classmethod
    def load(cls, path: str | Path, n_items: int | None = None) -> "ItemTransitions":
        """Read a saved matrix (numpy arrays only, no pickle); a corrupt or mismatched file is a DataError."""
        path = Path(path)
        counts = None
        try:
            matrix = sp.load_npz(path)
            params = TransitionParams(**json.loads(path.with_suffix(".json").read_text(encoding="utf-8")))
            if _counts_path(path).is_file():
                counts = sp.load_npz(_counts_path(path)).tocsr()
        except (OSError, ValueError, TypeError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # npz, JSON
            raise DataError(f"{path} is not a readable transition matrix ({type(exc).__name__}: {exc})") from None
        if n_items is not None and matrix.shape != (n_items, n_items):
            raise DataError(f"{path} is a {matrix.shape[0]}x{matrix.shape[1]} matrix; the catalog has {n_items} items")
        if counts is not None and (counts.shape != matrix.shape or counts.dtype != np.int64):
            raise DataError(f"{_counts_path(path)} does not match {path} (shape or type)")
        return cls(matrix, params, counts)


def _counts_path(path: Path) -> Path:
    return path.with_name(path.stem + ".counts.npz")


def _resized(counts: sp.csr_matrix, n: int) -> sp.csr_matrix:
    coo = counts.tocoo()
    return sp.csr_matrix((coo.data, (coo.row, coo.col)), shape=(n, n), dtype=np.int64)


def _matrix_from_counts(counts: sp.csr_matrix, counts_t: sp.csr_matrix, params: TransitionParams) -> sp.csr_matrix:
    """The served float32 similarity: forward counts plus ``backward`` × the reverse, normalised. A function of
    the integer counts alone (row and column weights come from exact integer sums), so equal counts give an
    identical matrix; no transposes or sparse products, so an update costs a few passes over the entries."""
    scale = count_scale(params.window)
    forward = counts.astype(np.float64) / scale
    full = (forward + params.backward * (counts_t.astype(np.float64) / scale)).tocsr() if params.backward > 0 else forward
    out_sum = np.asarray(counts.sum(axis=1), dtype=np.int64).ravel()  # exact: sum over a of L/d
    in_sum = np.asarray(counts_t.sum(axis=1), dtype=np.int64).ravel()
    out_w = (out_sum + params.backward * in_sum) / scale
    in_w = (in_sum + params.backward * out_sum) / scale
    left = np.where(out_w > 0, out_w, 1.0) ** -params.alpha
    right = np.where(in_w > 0, in_w, 1.0) ** -(1.0 - params.alpha)
    rows = np.repeat(np.arange(full.shape[0]), np.diff(full.indptr))
    data = (left[rows] * full.data) * right[full.indices]
    return sp.csr_matrix((data.astype(np.float32), full.indices.copy(), full.indptr.copy()), shape=full.shape)

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
from .sparse_files import load_checked_csr


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

    Fitted ones also hold ``counts`` (exact forward counts, see :func:`pair_counts`) and can then give
    :meth:`updated` ones; ones built from a bare matrix (``ItemTransitions(matrix, params)``) cannot. A value:
    nothing changes one after it is built (requests in flight read it while the feedback loop makes the next)."""

    def __init__(self, matrix: sp.csr_matrix, params: TransitionParams, counts: sp.csr_matrix | None = None):
        self.matrix = matrix.tocsr()
        self.params = params
        self.counts = counts
        self._counts_t: sp.csr_matrix | None = None  # counts transposed (the backward direction), kept in step
        self._sums: tuple[np.ndarray, np.ndarray] | None = None  # exact (row, column) sums of counts

    @classmethod
    def fit(cls, catalog: Catalog, sequences: list[list[str]], params: TransitionParams | None = None) -> "ItemTransitions":
        params = params or TransitionParams()
        rows = [np.array([catalog.index_of(i) for i in seq], dtype=np.int64) for seq in sequences]
        return cls.from_counts(pair_counts(rows, len(catalog), params.window), params)

    @classmethod
    def from_counts(cls, counts: sp.csr_matrix, params: TransitionParams) -> "ItemTransitions":
        fitted = cls(sp.csr_matrix(counts.shape, dtype=np.float32), params, counts)
        fitted._prepare()
        out_sum, in_sum = fitted._sums
        left, right = _weights(out_sum, in_sum, params)
        fitted.matrix = _scaled(_combined(counts, fitted._counts_t, params), left, right)
        return fitted

    def _prepare(self) -> None:
        """The transposed counts and exact sums an update needs (derived once, then kept in step)."""
        if self._counts_t is None:
            self._counts_t = _canonical(self.counts.T.tocsr())
            self._sums = (np.asarray(self.counts.sum(axis=1), dtype=np.int64).ravel(),
                          np.asarray(self.counts.sum(axis=0), dtype=np.int64).ravel())

    def updated(self, add: list[np.ndarray] = (), remove: list[np.ndarray] = (),
                n_items: int | None = None) -> "ItemTransitions":
        """These transitions with whole sequences (catalog rows, oldest first) added and removed, without
        refitting the rest: e.g. a user's sequence before and after a new event, or all of a forgotten user's.
        ``n_items`` grows the matrix for items added to the catalog.

        Only the items in the changed pairs (S) move: their rows are recomputed and, in every other row, only
        the entries in their columns (their column weight changed); the rest is copied into new arrays, so this
        object is left as it was (unchanged arrays are shared)."""
        if self.counts is None:
            raise ValueError("these transitions were built from a bare matrix, without counts; refit them to update")
        self._prepare()
        counts, counts_t, matrix = self.counts, self._counts_t, self.matrix
        out_sum, in_sum = self._sums
        n = max(n_items or 0, counts.shape[0])
        if n != counts.shape[0]:
            counts, counts_t, matrix = _resized(counts, n), _resized(counts_t, n), _resized(matrix, n)
            out_sum, in_sum = (np.concatenate([v, np.zeros(n - len(v), np.int64)]) for v in (out_sum, in_sum))
        delta = _canonical((pair_counts(list(add), n, self.params.window)
                            - pair_counts(list(remove), n, self.params.window)).tocsr())
        coo = delta.tocoo()
        touched = np.unique(np.concatenate([coo.row, coo.col])).astype(np.int64)
        if len(touched):
            rows = _canonical((counts[touched] + delta[touched]).tocsr())
            if rows.nnz and rows.data.min() < 0:
                raise ValueError("removing sequences that were never added (transition counts went negative)")
            counts = _replace_rows(counts, touched, rows)
            delta_t = delta.T.tocsr()
            counts_t = _replace_rows(counts_t, touched, _canonical((counts_t[touched] + delta_t[touched]).tocsr()))
            out_sum = out_sum + np.asarray(delta.sum(axis=1), dtype=np.int64).ravel()
            in_sum = in_sum + np.asarray(delta.sum(axis=0), dtype=np.int64).ravel()
            matrix = self._rescaled(matrix, counts, counts_t, out_sum, in_sum, touched)
        other = ItemTransitions(matrix, self.params, counts)
        other._counts_t, other._sums = counts_t, (out_sum, in_sum)
        return other

    def _rescaled(self, matrix, counts, counts_t, out_sum, in_sum, touched) -> sp.csr_matrix:
        """``matrix`` with rows ``touched`` recomputed and, in other rows, the entries of columns ``touched``:
        the same arithmetic as a full build, entry by entry, so the result is identical to one."""
        left, right = _weights(out_sum, in_sum, self.params)
        matrix = _replace_rows(matrix, touched,
                               _scaled(_combined(counts[touched], counts_t[touched], self.params), left[touched], right))
        # column c of the combined counts: forward[r, c] = counts_t[c, r], backward[r, c] = counts[c, r]
        columns = _combined(counts_t[touched], counts[touched], self.params)
        col = touched[np.repeat(np.arange(len(touched)), np.diff(columns.indptr))]
        row = columns.indices.astype(np.int64)
        other = ~np.isin(row, touched)
        row, col, values = row[other], col[other], columns.data[other]
        matrix.data[_positions(matrix, row, col)] = ((left[row] * values) * right[col]).astype(np.float32)
        return matrix

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

    def sparse_scores(self, history_rows: np.ndarray) -> sp.csr_matrix:
        """:meth:`scores` as a sparse [1, n_items] row (its non-zeros only): what per-user top-k work reads,
        without a dense catalog-wide vector."""
        matrix = self.matrix
        n = matrix.shape[1]
        recent = np.asarray(history_rows, dtype=np.int64)[-self.params.last:][::-1]
        if len(recent) == 0:
            return sp.csr_matrix((1, n), dtype=np.float32)
        weights = (self.params.decay ** np.arange(len(recent))).astype(np.float32)
        row = sp.csr_matrix(sp.csr_matrix(weights[None, :]) @ matrix[recent], dtype=np.float32)
        top = row.data.max() if row.nnz else 0.0
        return row / top if top > 0 else row

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
            matrix = load_checked_csr(path)
            params = TransitionParams(**json.loads(path.with_suffix(".json").read_text(encoding="utf-8")))
            if _counts_path(path).is_file():
                counts = load_checked_csr(_counts_path(path))
        except (OSError, ValueError, TypeError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # npz, JSON
            raise DataError(f"{path} is not a readable transition matrix ({type(exc).__name__}: {exc})") from None
        if n_items is not None and matrix.shape != (n_items, n_items):
            raise DataError(f"{path} is a {matrix.shape[0]}x{matrix.shape[1]} matrix; the catalog has {n_items} items")
        if counts is not None and (counts.shape != matrix.shape or counts.dtype != np.int64):
            raise DataError(f"{_counts_path(path)} does not match {path} (shape or type)")
        return cls(matrix, params, counts)


def _counts_path(path: Path) -> Path:
    return path.with_name(path.stem + ".counts.npz")


def _resized(matrix: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """The same entries in an [n, n] matrix (items added to the catalog)."""
    indptr = np.concatenate([matrix.indptr, np.full(n - matrix.shape[0], matrix.indptr[-1], matrix.indptr.dtype)])
    return sp.csr_matrix((matrix.data, matrix.indices, indptr), shape=(n, n))


def _replace_rows(matrix: sp.csr_matrix, rows: np.ndarray, new: sp.csr_matrix) -> sp.csr_matrix:
    """A new CSR matrix with ``matrix``'s rows ``rows`` (sorted) replaced by ``new``'s rows, in order: slices of
    the old arrays are copied, nothing is re-sorted or merged."""
    ptr, indices, data = matrix.indptr, [], []
    start = 0
    for k, r in enumerate(rows):
        indices += [matrix.indices[ptr[start]:ptr[r]], new.indices[new.indptr[k]:new.indptr[k + 1]]]
        data += [matrix.data[ptr[start]:ptr[r]], new.data[new.indptr[k]:new.indptr[k + 1]]]
        start = r + 1
    indices.append(matrix.indices[ptr[start]:])
    data.append(matrix.data[ptr[start]:])
    lengths = np.diff(ptr).astype(np.int64)
    lengths[rows] = np.diff(new.indptr)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    index_type = np.int64 if indptr[-1] > np.iinfo(np.int32).max else np.int32
    return sp.csr_matrix((np.concatenate(data).astype(matrix.dtype, copy=False),
                          np.concatenate(indices).astype(index_type, copy=False), indptr.astype(index_type)),
                         shape=matrix.shape)


def _weights(out_sum: np.ndarray, in_sum: np.ndarray, params: TransitionParams) -> tuple[np.ndarray, np.ndarray]:
    """Row and column normalisers from exact integer sums: ``out_w^-alpha`` and ``in_w^-(1-alpha)``, where a row
    of the combined counts sums to (forward row sum + ``backward`` × forward column sum) / L."""
    scale = count_scale(params.window)
    out_w = (out_sum + params.backward * in_sum) / scale
    in_w = (in_sum + params.backward * out_sum) / scale
    return (np.where(out_w > 0, out_w, 1.0) ** -params.alpha,
            np.where(in_w > 0, in_w, 1.0) ** -(1.0 - params.alpha))


def _combined(forward_rows: sp.csr_matrix, backward_rows: sp.csr_matrix, params: TransitionParams) -> sp.csr_matrix:
    """Rows of ``forward/L + backward × (reverse/L)`` in float64, given the same rows of both integer counts."""
    scale = count_scale(params.window)
    forward = forward_rows.astype(np.float64) / scale
    if params.backward <= 0:
        return forward.tocsr()
    return (forward + params.backward * (backward_rows.astype(np.float64) / scale)).tocsr()


def _scaled(combined: sp.csr_matrix, left: np.ndarray, right: np.ndarray) -> sp.csr_matrix:
    """``float32((left[row] × C) × right[col])`` per entry: the served matrix (rows of it)."""
    rows = np.repeat(np.arange(combined.shape[0]), np.diff(combined.indptr))
    data = ((left[rows] * combined.data) * right[combined.indices]).astype(np.float32)
    return sp.csr_matrix((data, combined.indices.copy(), combined.indptr.copy()), shape=combined.shape)


def _positions(matrix: sp.csr_matrix, row: np.ndarray, col: np.ndarray) -> np.ndarray:
    """Where the entries (``row``, ``col``) are in ``matrix.data`` (all present; canonical CSR: sorted indices).
    Only the rows named are searched: a feedback event touches a few rows of a matrix of tens of millions of
    entries, and keying every entry cost seconds per event at 1M items."""
    if not len(row):
        return np.zeros(0, dtype=np.int64)
    rows = np.unique(row)
    starts, lengths = matrix.indptr[rows].astype(np.int64), np.diff(matrix.indptr)[rows].astype(np.int64)
    # the entries of those rows, in order: each row's slice of the arrays, concatenated
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    positions = offsets + np.arange(int(lengths.sum()), dtype=np.int64)
    n = np.int64(matrix.shape[1])
    keys = np.repeat(rows.astype(np.int64), lengths) * n + matrix.indices[positions]  # ascending: rows, then columns
    return positions[np.searchsorted(keys, row.astype(np.int64) * n + col.astype(np.int64))]

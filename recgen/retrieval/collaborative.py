"""Item-to-item transitions learned from interaction sequences: the collaborative half of retrieval.

Text embeddings alone find items that *read* alike; what users actually pick next is better predicted by
what followed the same items in other users' sequences. Counts of (a → b) within ``window`` steps, weighted
1/distance, plus ``backward`` × the reverse direction, normalised ``C[a,b] / (n_a^alpha · n_b^(1-alpha))``.
A history's score for b is ``sum_k decay^k · C[h_{-1-k}, b]`` over its ``last`` most recent items.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass
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


def transition_matrix(sequences: list[np.ndarray], n_items: int, window: int, backward: float,
                      alpha: float) -> sp.csr_matrix:
    """Normalised (a → b) counts over catalog-row sequences, float64: the one implementation behind hybrid
    retrieval and the ItemKNN baseline. ``backward`` = 0 adds no reverse entries at all."""
    rows, cols, vals = [], [], []
    for seq in sequences:
        for d in range(1, window + 1):
            if len(seq) <= d:
                break
            a, b = seq[:-d], seq[d:]
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
    out_w = np.asarray(counts.sum(axis=1)).ravel()
    in_w = np.asarray(counts.sum(axis=0)).ravel()
    left = np.where(out_w > 0, out_w, 1.0) ** -alpha
    right = np.where(in_w > 0, in_w, 1.0) ** -(1.0 - alpha)
    return (sp.diags(left) @ counts @ sp.diags(right)).tocsr()


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
    """A sparse [n_items, n_items] similarity over catalog rows, fitted on training sequences only."""

    def __init__(self, matrix: sp.csr_matrix, params: TransitionParams):
        self.matrix = matrix.tocsr()
        self.params = params

    @classmethod
    def fit(cls, catalog: Catalog, sequences: list[list[str]], params: TransitionParams | None = None) -> "ItemTransitions":
        params = params or TransitionParams()
        rows = [np.array([catalog.index_of(i) for i in seq], dtype=np.int64) for seq in sequences]
        matrix = transition_matrix(rows, len(catalog), params.window, params.backward, params.alpha)
        return cls(matrix.astype(np.float32), params)

    def scores(self, history_rows: np.ndarray) -> np.ndarray:
        """Dense scores over the catalog for one history (catalog rows, oldest first), scaled to max 1."""
        recent = np.asarray(history_rows)[-self.params.last:][::-1]
        if len(recent) == 0:
            return np.zeros(self.matrix.shape[0], dtype=np.float32)
        weights = (self.params.decay ** np.arange(len(recent))).astype(np.float32)
        scores = np.asarray(self.matrix[recent].T @ weights).ravel()
        top = scores.max()
        return scores / top if top > 0 else scores

    def save(self, path: str | Path) -> None:
        sp.save_npz(Path(path), self.matrix)
        Path(path).with_suffix(".json").write_text(json.dumps(asdict(self.params)))

    @classmethod
    def load(cls, path: str | Path, n_items: int | None = None) -> "ItemTransitions":
        """Read a saved matrix (numpy arrays only, no pickle); a corrupt or mismatched file is a DataError."""
        path = Path(path)
        try:
            matrix = sp.load_npz(path)
            params = TransitionParams(**json.loads(path.with_suffix(".json").read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # npz, JSON
            raise DataError(f"{path} is not a readable transition matrix ({type(exc).__name__}: {exc})") from None
        if n_items is not None and matrix.shape != (n_items, n_items):
            raise DataError(f"{path} is a {matrix.shape[0]}x{matrix.shape[1]} matrix; the catalog has {n_items} items")
        return cls(matrix, params)

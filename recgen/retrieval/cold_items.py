"""Transition scores for items nobody has interacted with yet, borrowed from their nearest neighbours by text.

A new item (added live, or released after the training cut-off) has an empty row and column in the item
transitions, so the hybrid score (cosine + weight x transitions) ranks it below every warm item that has
any transition from the history: measured on the cold-item protocol, the served hybrid found no cold target
at all (eval/results/cold/NOTES.md). Here each such item gets the similarity-weighted mean of the transition
scores of its ``k`` nearest warm items, the usual content-based stand-in for a missing collaborative signal,
until a refit gives it its own. ``k`` is ``RetrievalSettings.cold_neighbours``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def cold_rows(matrix: sp.spmatrix) -> np.ndarray:
    """Rows of items with no transition in or out (no interaction in the fitted sequences)."""
    matrix = matrix.tocsr()
    out_degree = np.diff(matrix.indptr)
    in_degree = np.bincount(matrix.indices, minlength=matrix.shape[1])
    return np.flatnonzero((out_degree == 0) & (in_degree[: matrix.shape[0]] == 0))


def neighbour_weights(embeddings: np.ndarray, cold: np.ndarray, k: int) -> sp.csr_matrix:
    """[n, n] weights: row ``c`` of a cold item holds its ``k`` nearest warm items' cosines (clipped at 0,
    normalised to sum 1); every other row is empty. ``scores + W @ scores`` fills the cold items in."""
    n = len(embeddings)
    if len(cold) == 0 or k <= 0 or len(cold) == n:
        return sp.csr_matrix((n, n), dtype=np.float32)
    warm = np.setdiff1d(np.arange(n), cold)
    k = min(k, len(warm))
    rows, cols, vals = [], [], []
    for start in range(0, len(cold), 1024):
        block = cold[start:start + 1024]
        sims = embeddings[block] @ embeddings[warm].T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        weights = np.clip(np.take_along_axis(sims, top, axis=1), 0, None)
        totals = weights.sum(axis=1, keepdims=True)
        weights = np.where(totals > 0, weights / np.where(totals > 0, totals, 1), 1.0 / k)
        rows.append(np.repeat(block, k))
        cols.append(warm[top].ravel())
        vals.append(weights.ravel())
    return sp.csr_matrix((np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(n, n))

"""Transition scores for items nobody has interacted with yet, borrowed from their nearest neighbours by text.

A new item (added live, or released after the training cut-off) has an empty row and column in the item
transitions, so the hybrid score (cosine + weight x transitions) ranks it below every warm item that has
any transition from the history: measured on the cold-item protocol, the served hybrid found no cold target
at all (eval/results/cold/NOTES.md). Here each such item gets the similarity-weighted mean of the transition
scores of its ``k`` nearest warm items, the usual content-based stand-in for a missing collaborative signal,
until a refit gives it its own. ``k`` is ``RetrievalSettings.cold_neighbours``.

At a million items that is minutes of search (260k cold items at synth L), so it is done once: ``recgen fit``
saves it with the fitted folder (:meth:`ColdNeighbours.save`), and a change of the transitions (a feedback
event, items added) redoes only the rows it changes (:func:`updated_neighbours`), not every cold item.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..progress import task
from .index import search_within

#: Past this share of the cold rows changing side (cold <-> warm) in one update, or this many items turned warm
#: (each one a product with every kept cold row), a full recomputation is cheaper.
UPDATE_SHARE, UPDATE_WARMED = 0.25, 4096
_BLOCK = 1024


def cold_rows(matrix: sp.spmatrix) -> np.ndarray:
    """Rows of items with no transition in or out (no interaction in the fitted sequences)."""
    matrix = matrix.tocsr()
    entered = np.zeros(matrix.shape[1], dtype=bool)
    entered[matrix.indices] = True
    return np.flatnonzero((np.diff(matrix.indptr) == 0) & ~entered[: matrix.shape[0]])


@dataclass(frozen=True)
class ColdNeighbours:
    """Each cold item's weights over its ``k`` nearest warm items, and what an update needs to redo only the rows
    it changes: ``weights`` [n, n] (row ``c`` of a cold item: cosines clipped at 0, normalised to sum 1; every other
    row empty; ``scores + weights @ scores`` fills the cold items in), ``cold`` the cold rows (sorted), ``kth``
    each cold row's ``k``-th neighbour's cosine (-inf when fewer than ``k`` were found: any new warm item may enter)."""

    weights: sp.csr_matrix
    cold: np.ndarray
    kth: np.ndarray
    k: int

    @classmethod
    def empty(cls, n: int, cold: np.ndarray, k: int) -> "ColdNeighbours":
        return cls(sp.csr_matrix((n, n), dtype=np.float32), cold, np.full(len(cold), -np.inf, np.float32), k)

    def save(self, path: str | Path) -> None:
        w = self.weights
        np.savez(path, data=w.data.astype(np.float32), indices=w.indices.astype(np.int64),
                 indptr=w.indptr.astype(np.int64), n=np.int64(w.shape[0]), cold=self.cold.astype(np.int64),
                 kth=self.kth.astype(np.float32), k=np.int64(self.k))

    @classmethod
    def load(cls, path: str | Path) -> "ColdNeighbours":
        """The saved neighbours; a ``ValueError`` saying what is wrong when the file's arrays are not sound
        (checked before scipy's kernels see them: they trust the index arrays)."""
        with np.load(path, allow_pickle=False) as f:
            try:
                arrays = {name: f[name] for name in ("data", "indices", "indptr", "n", "cold", "kth", "k")}
            except KeyError as exc:
                raise ValueError(f"missing array {exc}") from None
        n, k = int(arrays["n"]), int(arrays["k"])
        cold, kth, data = arrays["cold"], arrays["kth"], arrays["data"]
        if n < 0 or k < 0 or arrays["indptr"].shape != (n + 1,):
            raise ValueError("its sizes do not agree")
        if cold.dtype.kind not in "iu" or data.dtype.kind != "f" or kth.dtype.kind != "f" or kth.shape != cold.shape:
            raise ValueError("its arrays are not of the types recgen writes")
        if len(cold) and (cold.min() < 0 or cold.max() >= n or np.any(np.diff(cold) <= 0)):
            raise ValueError("its cold rows are not sorted rows of the catalog")
        if not np.isfinite(data).all() or np.isnan(kth).any():
            raise ValueError("values that are not numbers")
        weights = sp.csr_matrix((data, arrays["indices"], arrays["indptr"]), shape=(n, n))
        weights.check_format(full_check=True)
        return cls(weights, cold.astype(np.int64), kth.astype(np.float32), k)


def cold_neighbours(embeddings: np.ndarray, cold: np.ndarray, k: int, index=None, kind: str = "flat") -> ColdNeighbours:
    """Every ``cold`` row's neighbours among the warm rows (all the others).

    With an approximate ``index`` (``kind`` hnsw / ivf: catalogs past ``retrieval.ann_min_items``) the neighbours
    are searched in it, restricted to the warm items, instead of a cold × warm product: that product grows with
    the catalog squared (23k cold × 77k warm items at synth M, ~10x that squared at L)."""
    n = len(embeddings)
    cold = np.asarray(cold, dtype=np.int64)
    if len(cold) == 0 or k <= 0 or len(cold) == n:
        return ColdNeighbours.empty(n, cold, k)
    weights, kth = _rows(embeddings, cold, cold, k, index, kind)
    return ColdNeighbours(weights, cold, kth, k)


def updated_neighbours(previous: ColdNeighbours, embeddings: np.ndarray, cold: np.ndarray, index=None,
                       kind: str = "flat") -> ColdNeighbours:
    """``previous`` brought to a new set of ``cold`` rows (and a catalog grown to ``len(embeddings)`` rows, the old
    rows' vectors unchanged), redoing only the rows whose neighbours can change: new cold rows, cold rows that
    lost a neighbour to the cold side, and cold rows that an item turned warm would enter (its cosine above the
    row's ``k``-th). With exact search that is the same result as :func:`cold_neighbours` (up to ties)."""
    n, k = len(embeddings), previous.k
    cold = np.asarray(cold, dtype=np.int64)
    if previous.weights.shape[0] > n or k <= 0 or len(cold) == n or len(cold) == 0:
        return cold_neighbours(embeddings, cold, k, index, kind)
    was_cold, is_cold = _mask(previous.cold, n), _mask(cold, n)  # masks, not set operations: O(n), no hashing
    warmed, new = np.flatnonzero(was_cold & ~is_cold), np.flatnonzero(is_cold & ~was_cold)
    if (len(warmed) + len(new) > UPDATE_SHARE * len(cold) or len(warmed) > UPDATE_WARMED
            or len(previous.cold) == previous.weights.shape[0]):
        return cold_neighbours(embeddings, cold, k, index, kind)
    weights = _grown(previous.weights, n)
    kept = np.flatnonzero(is_cold & was_cold)
    kept_kth = previous.kth[np.searchsorted(previous.cold, kept)]
    redo = [new]
    if len(new) and len(kept):  # a kept row whose neighbour turned cold
        turned = np.zeros(n, dtype=bool)
        turned[new] = True
        part = weights[kept]
        hit = turned[part.indices]
        owners = np.repeat(np.arange(len(kept)), np.diff(part.indptr))
        redo.append(kept[np.bincount(owners[hit], minlength=len(kept)) > 0])
    if len(warmed) and len(kept):  # a kept row an item turned warm would enter
        entering = np.zeros(len(kept), dtype=bool)
        warm_vectors = np.ascontiguousarray(embeddings[warmed], dtype=np.float32)
        step = max(256, 2**24 // len(warmed))  # at most 64 MB of cosines at a time
        for start in range(0, len(kept), step):
            sims = np.asarray(embeddings[kept[start:start + step]], dtype=np.float32) @ warm_vectors.T
            entering[start:start + step] = sims.max(axis=1) > kept_kth[start:start + step]
        redo.append(kept[entering])
    redo = np.unique(np.concatenate(redo))
    keep = (is_cold & was_cold).astype(np.float32)
    keep[redo] = 0.0
    weights = (sp.diags(keep) @ weights).tocsr()
    weights.eliminate_zeros()
    kth = np.full(len(cold), -np.inf, np.float32)
    kth[np.searchsorted(cold, kept)] = kept_kth
    if len(redo):
        fresh, fresh_kth = _rows(embeddings, cold, redo, k, index, kind)
        weights = (weights + fresh).tocsr()
        kth[np.searchsorted(cold, redo)] = fresh_kth
    return ColdNeighbours(weights.astype(np.float32), cold, kth, k)


class ColdCache:
    """The last :class:`ColdNeighbours` and the transitions they were computed for, shared by the retrievers over
    one set of item vectors (a retriever is rebound per feedback event), so the next change is an update."""

    def __init__(self):
        self.lock = threading.Lock()
        self.key: tuple | None = None
        self.value: ColdNeighbours | None = None


def _rows(embeddings: np.ndarray, cold: np.ndarray, todo: np.ndarray, k: int, index, kind: str):
    """([n, n] weights with the rows ``todo`` filled, their ``k``-th cosines), neighbours among the non-cold rows."""
    n = len(embeddings)
    warm = np.flatnonzero(~_mask(cold, n))
    k_found = min(k, len(warm))
    rows, cols, vals, kths = [], [], [], []
    searched = index is not None and kind != "flat"
    warm_vectors = None if searched else np.ascontiguousarray(embeddings[warm], dtype=np.float32)  # copied once
    with task("cold items' nearest warm items", total=len(todo)) as advance:  # minutes at 260k cold items
        for start in range(0, len(todo), _BLOCK):
            block = todo[start:start + _BLOCK]
            if searched:
                sims, top = _searched(index, kind, embeddings[block], warm, n, k_found)
            else:
                sims, top = _exact(embeddings[block], warm_vectors, warm, k_found)
            found = top >= 0
            weights = np.where(found, np.clip(sims, 0, None), 0.0)
            totals = weights.sum(axis=1, keepdims=True)
            share = np.where(found, 1.0, 0.0) / np.maximum(found.sum(axis=1, keepdims=True), 1)
            weights = np.where(totals > 0, weights / np.where(totals > 0, totals, 1), share)
            rows.append(np.repeat(block, k_found)[found.ravel()])
            cols.append(top[found])
            vals.append(weights[found])
            complete = found.all(axis=1) & (k_found == k)
            kths.append(np.where(complete, sims[:, -1], -np.inf).astype(np.float32))
            advance(len(block))
    matrix = sp.csr_matrix((np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
                           shape=(n, n))
    return matrix, np.concatenate(kths)


def _mask(rows: np.ndarray, n: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    return mask


def _grown(weights: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """``weights`` with empty rows and columns added up to ``n`` (items added to the catalog)."""
    if weights.shape[0] == n:
        return weights.tocsr()
    indptr = np.concatenate([weights.indptr, np.full(n - weights.shape[0], weights.indptr[-1])])
    return sp.csr_matrix((weights.data, weights.indices, indptr), shape=(n, n))


def _exact(queries: np.ndarray, warm_vectors: np.ndarray, warm: np.ndarray, k: int):
    """(cosines, catalog rows) of each query's ``k`` nearest warm items by exact inner product: FAISS's blocked
    search keeps a heap per query, never the [queries, warm] score matrix (1024 x 740k floats, and its argsort,
    took ~10 GB at synth L's 1M items)."""
    import faiss

    sims, top = faiss.knn(np.ascontiguousarray(queries, dtype=np.float32), warm_vectors, k,
                          metric=faiss.METRIC_INNER_PRODUCT)
    return sims, np.where(top >= 0, warm[np.maximum(top, 0)], -1)


def _searched(index, kind: str, queries: np.ndarray, warm: np.ndarray, n: int, k: int):
    """(cosines, catalog rows; -1 where fewer were found) of each query's ``k`` nearest warm items, searched in
    the approximate index restricted to the warm rows."""
    mask = np.zeros(n, dtype=bool)
    mask[warm] = True
    return search_within(index, kind, queries, mask, k)

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

from ..progress import task


def cold_rows(matrix: sp.spmatrix) -> np.ndarray:
    """Rows of items with no transition in or out (no interaction in the fitted sequences)."""
    matrix = matrix.tocsr()
    out_degree = np.diff(matrix.indptr)
    in_degree = np.bincount(matrix.indices, minlength=matrix.shape[1])
    return np.flatnonzero((out_degree == 0) & (in_degree[: matrix.shape[0]] == 0))


def neighbour_weights(embeddings: np.ndarray, cold: np.ndarray, k: int, index=None, kind: str = "flat") -> sp.csr_matrix:
    """[n, n] weights: row ``c`` of a cold item holds its ``k`` nearest warm items' cosines (clipped at 0,
    normalised to sum 1); every other row is empty. ``scores + W @ scores`` fills the cold items in.

    With an approximate ``index`` (``kind`` hnsw / ivf: catalogs past ``retrieval.ann_min_items``) the neighbours
    are searched in it, restricted to the warm items, instead of a cold × warm product: that product grows with
    the catalog squared (23k cold × 77k warm items at synth M, ~10x that squared at L)."""
    n = len(embeddings)
    if len(cold) == 0 or k <= 0 or len(cold) == n:
        return sp.csr_matrix((n, n), dtype=np.float32)
    warm = np.setdiff1d(np.arange(n), cold)
    k = min(k, len(warm))
    rows, cols, vals = [], [], []
    searched = index is not None and kind != "flat"
    warm_vectors = None if searched else np.ascontiguousarray(embeddings[warm], dtype=np.float32)  # copied once
    with task("cold items' nearest warm items", total=len(cold)) as advance:  # minutes at 260k cold items
        for start in range(0, len(cold), 1024):
            block = cold[start:start + 1024]
            if searched:
                sims, top = _searched(index, kind, embeddings[block], warm, n, k)
            else:
                sims, top = _exact(embeddings[block], warm_vectors, warm, k)
            found = top >= 0
            weights = np.where(found, np.clip(sims, 0, None), 0.0)
            totals = weights.sum(axis=1, keepdims=True)
            share = np.where(found, 1.0, 0.0) / np.maximum(found.sum(axis=1, keepdims=True), 1)
            weights = np.where(totals > 0, weights / np.where(totals > 0, totals, 1), share)
            rows.append(np.repeat(block, k)[found.ravel()])
            cols.append(top[found])
            vals.append(weights[found])
            advance(len(block))
    return sp.csr_matrix((np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(n, n))


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
    the approximate index with FAISS's per-query search parameters: an ``IDSelectorBitmap`` of the warm rows and
    the index's own efSearch / nprobe (faiss wiki, "Setting search parameters for one query")."""
    import faiss

    mask = np.zeros(n, dtype=bool)
    mask[warm] = True
    bitmap = np.packbits(mask, bitorder="little")  # bit i of byte i // 8 = row i, as IDSelectorBitmap reads it
    selector = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bitmap))
    if kind == "hnsw":
        params = faiss.SearchParametersHNSW(sel=selector, efSearch=max(int(index.hnsw.efSearch), k))
    else:
        params = faiss.SearchParametersIVF(sel=selector, nprobe=int(index.nprobe))
    sims, top = index.search(np.ascontiguousarray(queries, dtype=np.float32), k, params=params)
    return sims, top.astype(np.int64)

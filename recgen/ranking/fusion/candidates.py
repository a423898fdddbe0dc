"""Candidate sources for the second stage and the merged pool.

Each source gives each history its capped top (:meth:`Sources.scan`: the text top through the FAISS index
when it is approximate and large enough for its search to cost less than the product
(:func:`~recgen.retrieval.index.search_pays`), else the exact product in item chunks; the hybrid top from
the text top and the items with a transition score; non-zeros for the sparse signals, a precomputed order
for the shared ones), never a dense [users, n_items] array; features are read only at pooled rows. The sources: the served hybrid retriever (text cosine +
transitions), text cosine alone, short-window co-occurrence neighbours of the last items (the ItemKNN
formula, strongest on dense data), popularity, and SASRec when a fitted model is given. A pool is the union
of every pool source's top ``depth``; an item's ``pool_rank`` is its best rank over those sources, so a
smaller pool is a filter of a bigger one (depths can be compared without recomputing anything).

Ranks are only computed down to :data:`RANK_CAP` (partition, not a full sort; ties in catalog order); deeper
items get ``RANK_CAP + 1``. All signals come from training sequences only; the caller decides which histories to pass.
"""

from __future__ import annotations

import copy
import json
import zipfile
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from threadpoolctl import ThreadpoolController

from ...data.catalog import Catalog
from ...errors import DataError
from ...retrieval import Retriever
from ...retrieval.collaborative import ItemTransitions, TransitionParams, history_weights, transition_matrix
from ...retrieval.index import search_pays
from ...retrieval.sparse_files import load_checked_csr

#: Sources whose top items make up the pool (``sasrec`` only when a model is given).
POOL_SOURCES = ("hybrid", "text", "neighbours", "popularity", "sasrec")
#: Ranks deeper than this are not computed (they are all ``RANK_CAP + 1``): bounds the per-user cost.
RANK_CAP = 200


#: The BLAS product and SASRec's torch forward run on ONE thread: with two, each op waits for a second core
#: on a loaded machine. Measured at load ~20-25 on 2 cores: Beauty-sized text product 36 → 6 ms; SASRec
#: forward for one user 680 → 5 ms; batches of 256 users 34 → 19 ms/user wall (CPU 4.9 → 2.8 ms/user).
SERIAL_BATCH = 10**9

_NEIGHBOURS, _POPULARITY, _STATS_JSON = "neighbours.npz", "popularity.npz", "sources.json"

#: The ItemKNN formula (window 3, last 3, alpha 0.5): what tends to come right after the last few items.
NEIGHBOUR_PARAMS = TransitionParams(window=3, last=3, decay=0.5, backward=0.25, alpha=0.5)


@dataclass
class Pool:
    """One user's merged candidates (catalog rows) with every signal's value and capped rank for them."""

    rows: np.ndarray
    pool_rank: np.ndarray  # best rank over the pool sources (1 = top of some source)
    values: dict[str, np.ndarray] = field(default_factory=dict)
    ranks: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class SourceStats:
    """The sequence-fitted parts of :class:`Sources` that are not the retriever's: co-occurrence neighbours and
    popularity (all-time and recent). Fitted once, saved beside the recommender (npz of numeric arrays + JSON,
    no pickle), so serving never refits them."""

    neighbours: sp.csr_matrix
    popularity: np.ndarray
    recent_popularity: np.ndarray
    params: TransitionParams = NEIGHBOUR_PARAMS
    recent: int = 3

    @classmethod
    def fit(cls, sequences: list[np.ndarray], n_items: int, params: TransitionParams | None = None,
            recent: int = 3) -> "SourceStats":
        """``sequences`` as catalog rows, oldest first; ``recent``: how many of each sequence's last items count
        toward recent popularity."""
        p = params or NEIGHBOUR_PARAMS
        neighbours = transition_matrix(sequences, n_items, p.window, p.backward, p.alpha).astype(np.float32)
        flat = np.concatenate(sequences) if sequences else np.zeros(0, dtype=np.int64)
        popularity = np.bincount(flat, minlength=n_items).astype(np.float32)
        tails = np.concatenate([s[-recent:] for s in sequences]) if sequences else flat
        return cls(neighbours.tocsr(), popularity, np.bincount(tails, minlength=n_items).astype(np.float32), p, recent)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        sp.save_npz(folder / _NEIGHBOURS, self.neighbours)
        np.savez(folder / _POPULARITY, popularity=self.popularity, recent_popularity=self.recent_popularity)
        (folder / _STATS_JSON).write_text(json.dumps({"params": asdict(self.params), "recent": self.recent}))

    @classmethod
    def load(cls, folder: str | Path, n_items: int) -> "SourceStats":
        """Saved stats; unreadable or sized for another catalog → :class:`DataError` naming the file."""
        folder = Path(folder)
        path = folder / _NEIGHBOURS
        try:
            neighbours = load_checked_csr(path).astype(np.float32)
            path = folder / _POPULARITY
            with np.load(path, allow_pickle=False) as arrays:
                popularity, recent_popularity = arrays["popularity"], arrays["recent_popularity"]
            for counts in (popularity, recent_popularity):
                if counts.ndim != 1 or counts.dtype.kind not in "fiu" or not (np.isfinite(counts) & (counts >= 0)).all():
                    raise ValueError("popularity counts must be one row of finite numbers >= 0")
            path = folder / _STATS_JSON
            meta = json.loads(path.read_text(encoding="utf-8"))
            params, recent = TransitionParams(**meta["params"]), int(meta["recent"])
        except (OSError, ValueError, TypeError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path} is not a readable fitted source file ({type(exc).__name__}: {exc})") from None
        if neighbours.shape != (n_items, n_items) or len(popularity) != n_items or len(recent_popularity) != n_items:
            raise DataError(f"{folder}: fitted sources are sized for {neighbours.shape[0]} items; the catalog has "
                            f"{n_items}")
        return cls(neighbours, popularity.astype(np.float32), recent_popularity.astype(np.float32), params, recent)


class Sources:
    """Fitted first-stage signals over catalog rows, computed for a batch of histories at a time."""

    def __init__(self, catalog: Catalog, retriever: Retriever, sequences: list[np.ndarray] | None = None, *,
                 stats: SourceStats | None = None, sasrec=None, neighbours: TransitionParams | None = None,
                 recent: int = 3):
        """``sequences``: training sequences as catalog rows (oldest first), fitted into :class:`SourceStats`
        unless ``stats`` (already fitted) is given; ``sasrec``: a model with ``score_histories``."""
        n = len(catalog)
        if stats is None:
            if sequences is None:
                raise ValueError("give the sequences to fit the sources on, or fitted stats")
            stats = SourceStats.fit(sequences, n, neighbours, recent)
        self.catalog, self.retriever, self.sasrec, self.n_items, self.stats = catalog, retriever, sasrec, n, stats
        self.recent, self.neighbour_params = stats.recent, stats.params
        self.neighbours, self.popularity, self.recent_popularity = stats.neighbours, stats.popularity, stats.recent_popularity
        self.emb = np.ascontiguousarray(retriever.item_embeddings, dtype=np.float32)
        self.genres = genre_matrix(catalog)
        self._ids = catalog.ids  # a fresh list per call on Catalog; once here
        #: the thread pools loaded now (torch's OpenMP is, when a SASRec model is given): see SERIAL_BATCH
        self._threads = ThreadpoolController()
        # user-independent signals: computed once, not per request
        self._log_popularity = np.log1p(self.popularity).astype(np.float32)
        self._log_recent = np.log1p(self.recent_popularity).astype(np.float32)
        #: their order (score desc, then catalog row: capped_ranks' tie rule), so a user's ranks skip a sort
        self._static_order = {name: np.lexsort((np.arange(n), -values)) for name, values in
                              (("popularity", self._log_popularity), ("recent_popularity", self._log_recent))}

    def rebound(self, retriever: Retriever) -> "Sources":
        """These fitted signals over another retriever of the same catalog and index (e.g. with the feedback
        loop's new transitions): nothing is recomputed (the user-independent signals cost ~10 ms to rebuild)."""
        other = copy.copy(self)
        other.retriever = retriever
        return other

    def refit(self, sequences: list[np.ndarray]) -> "Sources":
        """The same sources (text index, settings) with every sequence-fitted signal refitted on ``sequences``:
        e.g. sequences cut before an earlier target, to make extra training groups whose targets the signals
        have not seen. Without SASRec (it was trained on the full sequences)."""
        transitions = self.retriever.transitions
        if transitions is not None:
            transitions = ItemTransitions(
                transition_matrix(sequences, self.n_items, transitions.params.window, transitions.params.backward,
                                  transitions.params.alpha).astype(np.float32), transitions.params)
        retriever = self.retriever.rebound(self.retriever.settings, transitions)
        return Sources(self.catalog, retriever, sequences, neighbours=self.neighbour_params, recent=self.recent)

    def _serial(self, batch: int):
        """One BLAS/OpenMP thread (OpenMP's limit holds for the calling thread only), see SERIAL_BATCH."""
        return self._threads.limit(limits=1) if batch <= SERIAL_BATCH else nullcontext()

    @property
    def pool_sources(self) -> tuple[str, ...]:
        return tuple(s for s in POOL_SOURCES if s != "sasrec" or self.sasrec is not None)

    def scan(self, histories: list[np.ndarray]) -> "Scan":
        """Every signal's capped top for each history, without a dense [histories, n_items] array: the text top
        comes from the approximate index's search where it pays (work per user independent of the catalog) or
        the exact product over :data:`ITEM_CHUNK` items at a time; the hybrid top is scored on the text top ∪
        the transition non-zeros only; the sparse signals (transitions, neighbours) are ranked from their
        non-zero entries, the shared ones from their precomputed order."""
        ids, n = self._ids, self.n_items
        transitions = self.retriever.transitions
        b, cap = len(histories), min(RANK_CAP, self.n_items)
        queries = np.stack([self.retriever.query_vector([ids[i] for i in hist]) for hist in histories]).astype(np.float32)
        if transitions is not None:
            trans = sp.vstack([transitions.sparse_scores(hist) for hist in histories], format="csr")
        else:
            trans = sp.csr_matrix((b, n), dtype=np.float32)
        trans.sort_indices()
        # the served first stage's formula (Retriever.scores), batched; tests check they agree
        weight = np.float32(self.retriever.settings.collaborative_weight if transitions is not None else 0.0)
        p = self.neighbour_params
        sparse = {"transition": trans,
                  "neighbours": _sorted_csr(history_weights(histories, n, p.last, p.decay) @ self.neighbours),
                  "last_item": _sorted_csr(history_weights(histories, n, 1, 1.0) @ self.neighbours)}
        seen = [np.unique(np.asarray(h, dtype=np.int64)) for h in histories]
        # the hybrid score is text + weight × transition (weight >= 0, transitions >= 0): its top lies in the
        # text top ∪ the items with a transition score, so only those are scored (exact: see _hybrid_top)
        followers = [_unseen_nonzero(trans, r, seen[r]) for r in range(b)]
        with self._serial(b):
            if search_pays(self.retriever.index_meta):
                text_top, follower_text = self._searched_text_top(queries, seen, followers, cap)
            else:
                text_top, follower_text = self._exact_text_top(queries, seen, followers, cap)
        tops: dict[str, list[np.ndarray]] = {"text": [rows for rows, _ in text_top]}
        tops["hybrid"] = [_hybrid_top(text_top[r], followers[r], follower_text[r], trans, r, weight, cap)
                          for r in range(b)]
        for name, matrix in sparse.items():
            tops[name] = [_sparse_top(matrix, r, seen[r], cap, n) for r in range(b)]
        for name, order in self._static_order.items():
            tops[name] = [_static_top(order, hist, cap) for hist in seen]
        dense = {}
        if self.sasrec is not None:
            with self._serial(b):
                dense["sasrec"] = np.asarray(self.sasrec.score_histories(histories), dtype=np.float32)
            tops["sasrec"] = []
            for r in range(b):
                row = dense["sasrec"][r].copy()
                row[seen[r]] = -np.inf
                tops["sasrec"].append(_top(row, cap)[0])
        return Scan(self, queries, weight, sparse, dense, tops, cap)

    def _exact_text_top(self, queries: np.ndarray, seen: list[np.ndarray], followers: list[np.ndarray],
                        cap: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[np.ndarray]]:
        """Each query's exact text top (rows, cosines) and the cosines of its ``followers`` rows, from the
        product over :data:`ITEM_CHUNK` catalog items at a time: for a flat index, or an approximate one whose
        search would cost more (:func:`~recgen.retrieval.index.search_pays`). One BLAS product per chunk, as the
        dense path computed it."""
        b, n = len(queries), self.n_items
        tops = [(np.zeros(0, np.int64), np.zeros(0, np.float32))] * b
        follower_text = [np.zeros(len(f), np.float32) for f in followers]
        for c0 in range(0, n, ITEM_CHUNK):
            c1 = min(n, c0 + ITEM_CHUNK)
            text = queries @ self.emb[c0:c1].T
            for r in range(b):
                row = text[r]
                inside = (followers[r] >= c0) & (followers[r] < c1)
                follower_text[r][inside] = row[followers[r][inside] - c0]
                local = seen[r][(seen[r] >= c0) & (seen[r] < c1)] - c0
                row[local] = -np.inf
                rows, vals = _top(row, cap)
                tops[r] = _merge(*tops[r], rows + c0, vals, cap)
        return tops, follower_text

    def _searched_text_top(self, queries: np.ndarray, seen: list[np.ndarray], followers: list[np.ndarray],
                           cap: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[np.ndarray]]:
        """Each query's text top through the approximate FAISS index (HNSW / IVF, chosen by catalog size with
        its recall@100 measured): ``cap`` + the history's length neighbours asked for, seen ones dropped; the
        found rows and the ``followers`` are then scored by the same product the features use, so a row's rank
        and value agree. Work per user does not grow with the catalog."""
        index, emb = self.retriever.index, self.emb
        tops, follower_text = [], []
        for r, q in enumerate(queries):
            want = min(self.n_items, cap + len(seen[r]))
            found = index.search(q[None, :], want)[1][0]
            found = found[found >= 0]
            found = found[~np.isin(found, seen[r])].astype(np.int64)
            vals = (emb[found] @ q).astype(np.float32)
            keep = _order(found, vals)[:cap]
            tops.append((found[keep], vals[keep]))
            follower_text.append((emb[followers[r]] @ q).astype(np.float32))
        return tops, follower_text

    def pools(self, histories: list[np.ndarray], depth: int) -> list[Pool]:
        """Each history's merged pool: the union of every pool source's top ``depth`` unseen items."""
        if not 1 <= depth <= RANK_CAP:
            raise ValueError(f"pool depth must be in 1..{RANK_CAP}, not {depth}")
        scan = self.scan(histories)
        pools = []
        for r in range(len(histories)):
            rows = np.unique(np.concatenate([scan.tops[s][r][:depth] for s in self.pool_sources]))
            pools.append(scan.pool(r, rows, depth))
        return pools

    def pools_for(self, histories: list[np.ndarray], rows: list[np.ndarray]) -> list[Pool]:
        """Pools of given candidates (catalog rows, in the caller's order): e.g. the items a request allows.
        Every signal's value and rank as in :meth:`pools`; items already in the history are dropped."""
        if len(rows) != len(histories):
            raise ValueError(f"{len(rows)} candidate lists for {len(histories)} histories")
        scan = self.scan(histories)
        pools = []
        for r, hist in enumerate(histories):
            picked = np.asarray(rows[r], dtype=np.int64)
            pools.append(scan.pool(r, picked[~np.isin(picked, np.asarray(hist, dtype=np.int64))], None))
        return pools


#: Catalog items scored per BLAS product in :meth:`Sources.scan`: a batch's dense scratch is
#: ``batch × ITEM_CHUNK`` float32 per signal (16 MB at 256 users) whatever the catalog size.
ITEM_CHUNK = 16384


@dataclass
class Scan:
    """One batch's capped tops per signal (catalog rows, best first) and what gives any row's value."""

    sources: Sources
    queries: np.ndarray
    weight: np.float32
    sparse: dict[str, sp.csr_matrix]
    dense: dict[str, np.ndarray]
    tops: dict[str, list[np.ndarray]]
    cap: int

    def values(self, r: int, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Every signal's float32 value for history ``r`` at catalog ``rows``."""
        src = self.sources
        text = (src.emb[rows] @ self.queries[r]).astype(np.float32)
        trans = _sparse_at(self.sparse["transition"], r, rows)
        out = {"hybrid": text + self.weight * trans, "text": text, "transition": trans,
               "neighbours": _sparse_at(self.sparse["neighbours"], r, rows),
               "last_item": _sparse_at(self.sparse["last_item"], r, rows),
               "popularity": src._log_popularity[rows], "recent_popularity": src._log_recent[rows]}
        out.update({name: scores[r, rows] for name, scores in self.dense.items()})
        return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}

    def ranks(self, r: int, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Every signal's int32 capped rank for history ``r`` at ``rows`` (``cap + 1`` below its top)."""
        return {name: _rank_at(tops[r], rows, self.cap) for name, tops in self.tops.items()}

    def pool(self, r: int, rows: np.ndarray, depth: int | None) -> Pool:
        """History ``r``'s pool of ``rows``: sorted by best pool-source rank (ties in catalog order) and cut to
        ``depth`` when a depth is given, else in the given order."""
        rows = np.asarray(rows, dtype=np.int64)
        ranks = self.ranks(r, rows)
        best = np.min(np.stack([ranks[s] for s in self.sources.pool_sources]), axis=0) if len(rows) else \
            np.zeros(0, dtype=np.int32)
        if depth is not None:
            order = np.argsort(best, kind="stable")
            order = order[best[order] <= depth]
            rows, best, ranks = rows[order], best[order], {k: v[order] for k, v in ranks.items()}
        return Pool(rows, best, self.values(r, rows), ranks)


def _unseen_nonzero(matrix: sp.csr_matrix, r: int, seen: np.ndarray) -> np.ndarray:
    """Row ``r``'s catalog rows with a positive stored value, not in ``seen`` (sorted indices)."""
    lo, hi = matrix.indptr[r], matrix.indptr[r + 1]
    rows = matrix.indices[lo:hi].astype(np.int64)[matrix.data[lo:hi] > 0]
    return rows[~np.isin(rows, seen)]


def _hybrid_top(text_top: tuple[np.ndarray, np.ndarray], followers: np.ndarray, follower_text: np.ndarray,
                trans: sp.csr_matrix, r: int, weight: np.float32, cap: int) -> np.ndarray:
    """The ``cap`` best unseen rows by text + ``weight`` × transition, from the text top and the rows with a
    transition score only. Exact: a row outside both scores its text value, which no row of the text top
    exceeds (each scores at least its text value there), and among equal text values the text top already
    holds the lowest rows, as a full ranking's tie rule would."""
    text_rows, text_vals = text_top
    rows = np.concatenate([text_rows, followers])
    text = np.concatenate([text_vals, follower_text])
    rows, first = np.unique(rows, return_index=True)
    text = text[first]
    # in the transition matrix's dtype (float64 from scipy's scaling), as the dense chunk product summed it
    hybrid = text + weight * _sparse_at(trans, r, rows, trans.dtype)
    return rows[_order(rows, hybrid)][:cap]


def _sorted_csr(matrix) -> sp.csr_matrix:
    out = sp.csr_matrix(matrix, dtype=np.float32)
    out.sum_duplicates()
    out.sort_indices()
    return out


def _order(rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Positions of ``rows`` sorted by value (higher first), ties by catalog row."""
    return np.lexsort((rows, -values))


def _top(scores: np.ndarray, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions, values) of the ``cap`` best finite scores of one row, best first, ties by position: the
    partition's choice among ties at the cut is replaced by the lowest positions."""
    if len(scores) > cap:
        kth = -np.partition(-scores, cap - 1)[cap - 1]
        above = np.flatnonzero(scores > kth)
        rows = np.concatenate([above, np.flatnonzero(scores == kth)[:cap - len(above)]])
    else:
        rows = np.arange(len(scores))
    rows = rows[np.isfinite(scores[rows])]
    rows = rows[_order(rows, scores[rows])]
    return rows, scores[rows]


def _merge(rows_a, vals_a, rows_b, vals_b, cap: int) -> tuple[np.ndarray, np.ndarray]:
    rows, vals = np.concatenate([rows_a, rows_b]), np.concatenate([vals_a, vals_b])
    keep = _order(rows, vals)[:cap]
    return rows[keep], vals[keep]


def _sparse_top(matrix: sp.csr_matrix, r: int, seen: np.ndarray, cap: int, n: int) -> np.ndarray:
    """Row ``r``'s ``cap`` best unseen catalog rows of a non-negative sparse score: its non-zero entries best
    first, then (the rest all score 0) the lowest unseen catalog rows, as a dense ranking would tie them."""
    lo, hi = matrix.indptr[r], matrix.indptr[r + 1]
    rows, vals = matrix.indices[lo:hi].astype(np.int64), matrix.data[lo:hi]
    keep = (vals > 0) & ~np.isin(rows, seen)
    rows, vals = rows[keep], vals[keep]
    rows = rows[_order(rows, vals)][:cap]
    need = min(cap, n - len(seen)) - len(rows)
    if need > 0:
        first = np.arange(min(n, need + len(seen) + len(rows)), dtype=np.int64)
        first = first[~np.isin(first, seen) & ~np.isin(first, rows)][:need]
        rows = np.concatenate([rows, first])
    return rows


def _static_top(order: np.ndarray, seen: np.ndarray, cap: int) -> np.ndarray:
    """The first ``cap`` unseen rows of a score every user shares, from its precomputed ``order``."""
    top = order[: cap + len(seen)]
    return top[~np.isin(top, seen)][:cap] if len(seen) else top[:cap]


def _sparse_at(matrix: sp.csr_matrix, r: int, rows: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Row ``r`` of a CSR matrix with sorted indices at ``rows`` (0 where not stored)."""
    lo, hi = matrix.indptr[r], matrix.indptr[r + 1]
    cols, data = matrix.indices[lo:hi], matrix.data[lo:hi]
    out = np.zeros(len(rows), dtype=dtype)
    if hi > lo and len(rows):
        pos = np.minimum(np.searchsorted(cols, rows), len(cols) - 1)
        hit = cols[pos] == rows
        out[hit] = data[pos[hit]]
    return out


def _rank_at(top: np.ndarray, rows: np.ndarray, cap: int) -> np.ndarray:
    """1-based position of each of ``rows`` in ``top`` (a source's capped top), ``cap + 1`` where absent."""
    out = np.full(len(rows), cap + 1, dtype=np.int32)
    if len(top) and len(rows):
        order = np.argsort(top, kind="stable")
        sorted_top = top[order]
        pos = np.minimum(np.searchsorted(sorted_top, rows), len(top) - 1)
        hit = sorted_top[pos] == rows
        out[hit] = order[pos[hit]] + 1
    return out


def genre_matrix(catalog: Catalog) -> sp.csr_matrix:
    """[n_items, n_genres] rows that sum to 1 over each item's genres/categories (empty rows for none)."""
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for r, item in enumerate(catalog):
        for g in dict.fromkeys(item.genres):
            rows.append(r)
            cols.append(vocab.setdefault(g, len(vocab)))
    m = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(catalog), len(vocab)))
    counts = np.asarray(m.sum(axis=1)).ravel()
    return (sp.diags(1.0 / np.where(counts > 0, counts, 1.0)) @ m).tocsr().astype(np.float32)

"""Candidate sources for the second stage and the merged pool.

Each source scores every catalog item for a history: the served hybrid retriever (text cosine +
transitions), text cosine alone, short-window co-occurrence neighbours of the last items (the ItemKNN
formula, strongest on dense data), popularity, and SASRec when a fitted model is given. A pool is the union
of every pool source's top ``depth``; an item's ``pool_rank`` is its best rank over those sources, so a
smaller pool is a filter of a bigger one (depths can be compared without recomputing anything).

Ranks are only computed down to :data:`RANK_CAP` (argpartition, not a full sort); deeper items get
``RANK_CAP + 1``. All signals come from training sequences only; the caller decides which histories to pass.
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

    def signals(self, histories: list[np.ndarray]) -> dict[str, np.ndarray]:
        """name → dense [len(histories), n_items] float32 scores, higher = better (history not masked)."""
        ids = self._ids
        transitions = self.retriever.transitions
        b, n = len(histories), self.n_items
        queries = np.stack([self.retriever.query_vector([ids[i] for i in hist]) for hist in histories])
        with self._serial(b):
            text = queries.astype(np.float32) @ self.emb.T  # one product for the batch
        trans = np.zeros((b, n), dtype=np.float32)
        if transitions is not None:
            for r, hist in enumerate(histories):
                if len(hist):
                    trans[r] = transitions.scores(np.asarray(hist))
        # the served first stage's formula (Retriever.scores), batched; tests check they agree
        weight = self.retriever.settings.collaborative_weight if transitions is not None else 0.0
        hybrid = text + np.float32(weight) * trans
        p = self.neighbour_params
        out = {"hybrid": hybrid, "text": text, "transition": trans,
               "neighbours": (history_weights(histories, n, p.last, p.decay) @ self.neighbours).toarray(),
               "last_item": (history_weights(histories, n, 1, 1.0) @ self.neighbours).toarray(),
               "popularity": np.broadcast_to(self._log_popularity, (b, n)),
               "recent_popularity": np.broadcast_to(self._log_recent, (b, n))}
        if self.sasrec is not None:
            with self._serial(b):
                out["sasrec"] = np.asarray(self.sasrec.score_histories(histories), dtype=np.float32)
        return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}

    def pools(self, histories: list[np.ndarray], depth: int) -> list[Pool]:
        """Each history's merged pool: the union of every pool source's top ``depth`` unseen items."""
        if not 1 <= depth <= RANK_CAP:
            raise ValueError(f"pool depth must be in 1..{RANK_CAP}, not {depth}")
        return self._pools(histories, lambda r, best: _by_best(best, depth))

    def pools_for(self, histories: list[np.ndarray], rows: list[np.ndarray]) -> list[Pool]:
        """Pools of given candidates (catalog rows, in the caller's order): e.g. the items a request allows.
        Every signal's value and rank as in :meth:`pools`; items already in the history are dropped."""
        if len(rows) != len(histories):
            raise ValueError(f"{len(rows)} candidate lists for {len(histories)} histories")

        def given(r, best):
            picked = np.asarray(rows[r], dtype=np.int64)
            return picked[~np.isin(picked, np.asarray(histories[r], dtype=np.int64))]

        return self._pools(histories, given)

    def _pools(self, histories: list[np.ndarray], choose) -> list[Pool]:
        """``choose(r, best_rank_per_item)`` → the catalog rows of history ``r``'s pool."""
        signals = self.signals(histories)
        ranks = {name: (static_ranks(self._static_order[name], histories, self.n_items) if name in self._static_order
                        else capped_ranks(values, histories)) for name, values in signals.items()}
        pools = []
        for r, hist in enumerate(histories):
            best = np.min(np.stack([ranks[s][r] for s in self.pool_sources]), axis=0)
            best[np.asarray(hist, dtype=np.int64)] = RANK_CAP + 1  # never recommend an item already seen
            rows = choose(r, best)
            pools.append(Pool(rows, best[rows], {k: v[r, rows] for k, v in signals.items()},
                              {k: v[r, rows] for k, v in ranks.items()}))
        return pools


def _by_best(best: np.ndarray, depth: int) -> np.ndarray:
    """Rows whose best pool-source rank is within ``depth``, best first (ties in catalog order)."""
    rows = np.flatnonzero(best <= depth)
    return rows[np.argsort(best[rows], kind="stable")]


def capped_ranks(scores: np.ndarray, histories: list[np.ndarray], cap: int = RANK_CAP) -> np.ndarray:
    """[B, n] int32 rank of every item among each row's unseen items (1 = best), ``cap + 1`` below the top ``cap``.

    Ties are broken by catalog order (stable), the same for every user."""
    b, n = scores.shape
    masked = np.array(scores, dtype=np.float32, copy=True)
    for r, hist in enumerate(histories):
        masked[r, np.asarray(hist, dtype=np.int64)] = -np.inf
    cap = min(cap, n)
    out = np.full((b, n), cap + 1, dtype=np.int32)
    top = np.argpartition(-masked, cap - 1, axis=1)[:, :cap] if cap < n else np.tile(np.arange(n), (b, 1))
    for r in range(b):
        order = top[r][np.lexsort((top[r], -masked[r, top[r]]))]
        out[r, order] = np.arange(1, len(order) + 1, dtype=np.int32)
    return out


def static_ranks(order: np.ndarray, histories: list[np.ndarray], n: int, cap: int = RANK_CAP) -> np.ndarray:
    """:func:`capped_ranks` of a score every user shares, from its precomputed ``order``: each history's
    items are skipped (they get ``cap + 1``; pools never contain them). Equal to ``capped_ranks`` on every
    unseen item, without a per-user partition of all items."""
    cap = min(cap, n)
    out = np.full((len(histories), n), cap + 1, dtype=np.int32)
    for r, hist in enumerate(histories):
        top = order[: cap + len(hist)]
        if len(hist):
            top = top[~np.isin(top, hist)]
        top = top[:cap]
        out[r, top] = np.arange(1, len(top) + 1, dtype=np.int32)
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

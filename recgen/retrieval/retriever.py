"""Candidate retrieval: a user's history and/or a free-text request → the nearest catalog items."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import RetrievalSettings
from ..data.catalog import Catalog, Item
from ..errors import InvalidRequestError
from ..text import has_negation
from .cold_items import ColdCache, ColdNeighbours, cold_neighbours, cold_rows, updated_neighbours
from .collaborative import ItemTransitions
from .embed_chunks import EMBED_CHUNK, embed_in_chunks
from .embedder import DEFAULT_EMBEDDER, Encoder, embed, embedder_identity, load_embedder, resolve_backend
from .growth import grown_transitions, merged_catalog
from .index import (
    IndexChoice,
    IndexMeta,
    build_index,
    extended_index,
    load_index,
    restricted_search_pays,
    save_index,
    search_pays,
    search_within,
    stored_vectors,
)
from .request_constraints import RequestConstraints, RequestReader

log = logging.getLogger(__name__)


def recency_weights(length: int, decay: float) -> np.ndarray:
    """Weight ``decay**age`` for each history position, newest = 1: recent taste counts more."""
    ages = np.arange(length - 1, -1, -1, dtype=np.float32)
    return np.power(np.float32(decay), ages)


@dataclass
class Candidates:
    """Retrieved (item_id, score) pairs, best first. ``unmatched`` are items shown although they do not satisfy
    the request's filters (nothing, or too little, matched: the closest items instead), and ``warning`` says so."""

    items: list[tuple[str, float]]
    unmatched: frozenset[str] = field(default_factory=frozenset)
    warning: str | None = None
    constraints: RequestConstraints | None = None


#: How many request texts' embeddings a retriever keeps (a few MB at 384 floats each).
QUERY_CACHE = 4096


class Retriever:
    """Holds the catalog's normalized item embeddings in a FAISS inner-product index."""

    def __init__(self, catalog: Catalog, index, settings: RetrievalSettings | None = None, *,
                 embedder_name: str | None = None, transitions: ItemTransitions | None = None,
                 index_meta: IndexMeta | None = None):
        self.catalog = catalog
        self.index = index
        self.settings = settings or RetrievalSettings()
        #: The embedder the index was built with (a resolved name; ``settings.embedder`` may be ``None``).
        self.embedder_name = embedder_name or self.settings.embedder or DEFAULT_EMBEDDER
        #: What the index is (kind, search parameters, measured recall); saved beside it.
        self.index_meta = index_meta or IndexMeta(self.embedder_name, "", index.ntotal, index.d)
        self._item_embeddings: np.ndarray | None = None
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._query_lock = threading.Lock()
        #: Item transitions fitted on the data's sequences; with a history, candidates are ranked by
        #: cosine + ``settings.collaborative_weight`` × transition score (scaled to max 1 per user).
        self.transitions = transitions
        self._reader: RequestReader | None = None
        self._cold = ColdCache()  # the cold items' neighbours for the last transitions asked about
        self._prior_cache: tuple | None = None
        #: how the catalog was embedded when this retriever was built (chunks reused / embedded); None when loaded
        self.embedding_report: dict | None = None

    # -- building and persistence -------------------------------------------------------------
    @classmethod
    def build(cls, catalog: Catalog, settings: RetrievalSettings | None = None, *, show_progress: bool = False,
              batch_size: int = 64, transitions: ItemTransitions | None = None,
              encode: Encoder | None = None, chunk: int = EMBED_CHUNK, work: Path | None = None) -> "Retriever":
        """Embed every item's text here, or with ``encode(texts, embedder, backend, batch_size)`` (the same model
        elsewhere, e.g. on a cluster's workers), ``chunk`` titles at a time, and index the vectors. With ``work``
        (a folder) each finished chunk is kept there and a restart reuses it (:mod:`.embed_chunks`)."""
        settings = settings or RetrievalSettings()
        texts = [item.text() for item in catalog]
        if encode is not None:
            run = lambda part: encode(part, settings.embedder, settings.embed_backend, batch_size)
        else:
            run = lambda part: embed(load_embedder(settings.embedder, settings.embed_backend), part,
                                     batch_size=batch_size, show_progress=show_progress)
        vectors, report = embed_in_chunks(texts, run, embedder_identity(settings, batch_size), chunk, work)
        retriever = cls.from_vectors(catalog, vectors, settings, transitions=transitions)
        retriever.embedding_report = report.as_json()
        return retriever

    @classmethod
    def from_vectors(cls, catalog: Catalog, vectors: np.ndarray, settings: RetrievalSettings | None = None, *,
                     embedder_name: str | None = None, transitions: ItemTransitions | None = None) -> "Retriever":
        """A retriever over already computed, normalized item vectors (row i = ``catalog.items[i]``), in the index
        kind ``settings`` choose for the catalog's size (:func:`~recgen.retrieval.index.build_index`)."""
        settings = settings or RetrievalSettings()
        name = embedder_name or settings.embedder or DEFAULT_EMBEDDER
        base = IndexMeta(name, catalog.fingerprint(), 0, 0, embed_backend=resolve_backend(settings.embed_backend))
        index, meta = build_index(vectors, index_choice(settings), base)
        retriever = cls(catalog, index, settings, embedder_name=name, transitions=transitions, index_meta=meta)
        stored = stored_vectors(index)  # the index copied the vectors: keep its copy, so ``vectors`` can be freed
        retriever._item_embeddings = stored if stored is not None else vectors
        log.info("retrieval index: %s", meta.describe())
        return retriever

    def save(self, folder: str | Path) -> None:
        meta = IndexMeta(**{**self.index_meta.__dict__, "embedder": self.embedder_name,
                            "catalog_fingerprint": self.catalog.fingerprint(), "n_items": self.index.ntotal,
                            "dim": self.index.d})
        save_index(folder, self.index, meta)

    @classmethod
    def load(cls, folder: str | Path, catalog: Catalog, settings: RetrievalSettings | None = None, *,
             transitions: ItemTransitions | None = None, current_build: bool = False) -> "Retriever":
        """The saved index; stale (another catalog, or another embedder than ``settings.embedder``; with
        ``current_build``, other construction settings than this version's) is an error."""
        settings = settings or RetrievalSettings()
        index, meta = load_index(folder, catalog.fingerprint(), settings.embedder or DEFAULT_EMBEDDER,
                                 index_choice(settings).resolve(len(catalog))[0], resolve_backend(settings.embed_backend),
                                 current_build)
        return cls(catalog, index, settings, embedder_name=meta.embedder, transitions=transitions, index_meta=meta)

    def rebound(self, settings: RetrievalSettings, transitions: ItemTransitions | None = None) -> "Retriever":
        """A retriever over the same index (shared, not copied) with other settings and transitions."""
        other = Retriever(self.catalog, self.index, settings, embedder_name=self.embedder_name, transitions=transitions,
                          index_meta=self.index_meta)
        other._item_embeddings = self._item_embeddings
        other._reader = self._reader
        other._cold = self._cold  # the same vectors: a feedback event's transitions update the same neighbours
        # the same embedder (``embedder_name`` is kept): a request's vector does not change, so the cache is shared
        other._query_cache, other._query_lock = self._query_cache, self._query_lock
        return other

    def add_items(self, items: list[Item], *, update: bool = False, batch_size: int = 64) -> "Retriever":
        """A retriever over the catalog plus ``items``, without a rebuild: only the new items are embedded and
        added to a copy of the FAISS index (a flat index numbers its vectors in the order they are added, so
        the id of each new vector is its catalog row). An id already in the catalog is refused unless
        ``update``; an updated item keeps its row and gets its new vector. The copy keeps this retriever
        whole for requests in flight; transitions grow zero rows for the new items (no interactions yet)."""
        catalog, new_rows, updated_rows = merged_catalog(self.catalog, items, update=update)
        vectors = embed(load_embedder(self.embedder_name, self.settings.embed_backend), [catalog.items[r].text() for r in new_rows + updated_rows],
                        batch_size=batch_size) if new_rows or updated_rows else np.zeros((0, self.index.d), np.float32)
        vectors = np.asarray(vectors, dtype=np.float32)
        embeddings = np.concatenate([self.item_embeddings, vectors[: len(new_rows)]])
        meta = self.index_meta
        if updated_rows:  # a FAISS index cannot replace a vector: a new index over the rows (no embedding)
            embeddings[updated_rows] = vectors[len(new_rows):]
            index, meta = build_index(embeddings, index_choice(self.settings), meta)
        else:  # an approximate index keeps its measured parameters; its recall was measured before the addition
            index = extended_index(self.index, vectors)
        transitions = grown_transitions(self.transitions, len(catalog))
        other = Retriever(catalog, index, self.settings, embedder_name=self.embedder_name, transitions=transitions,
                          index_meta=meta)
        stored = stored_vectors(index)
        other._item_embeddings = stored if stored is not None else embeddings
        if not updated_rows:  # the old rows' vectors are unchanged: the new items' rows are added, not all redone
            other._cold.value = self._cold.value
        return other

    @property
    def request_reader(self) -> RequestReader:
        """The catalog's request vocabulary (genres, years, title words), indexed on first use."""
        if self._reader is None:
            self._reader = RequestReader(self.catalog)
        return self._reader

    @property
    def item_embeddings(self) -> np.ndarray:
        """[n_items, dim] normalized vectors; row i is ``catalog.items[i]``."""
        if self._item_embeddings is None:
            stored = stored_vectors(self.index)  # the index's own copy, not a second one
            self._item_embeddings = stored if stored is not None else self.index.reconstruct_n(0, self.index.ntotal)
        return self._item_embeddings

    # -- queries ------------------------------------------------------------------------------
    def embed_query(self, text: str) -> np.ndarray:
        """The request's embedding (read-only). The last :data:`QUERY_CACHE` texts are kept: requests repeat
        ("a 90s comedy"), and one encoder call costs more than ranking the whole catalog."""
        with self._query_lock:
            vector = self._query_cache.get(text)
            if vector is not None:
                self._query_cache.move_to_end(text)
                return vector
        return self._remember([text], embed(load_embedder(self.embedder_name, self.settings.embed_backend), [text]))[0]

    def warm_queries(self, texts: list[str], batch: int = 64) -> None:
        """Embed the texts not cached yet in batches (one encoder call per ``batch``, not per text): for callers
        that know many requests ahead, e.g. fitting on thousands of requests. Keeps at most QUERY_CACHE."""
        with self._query_lock:
            todo = [t for t in dict.fromkeys(texts) if t and t not in self._query_cache][:QUERY_CACHE]
        if not todo:
            return
        self._remember(todo, embed(load_embedder(self.embedder_name, self.settings.embed_backend), todo, batch_size=batch))

    def _remember(self, texts: list[str], vectors: np.ndarray) -> list[np.ndarray]:
        """Cache each text's vector (a read-only copy), dropping the least recently used beyond QUERY_CACHE."""
        kept = []
        with self._query_lock:
            for text, vector in zip(texts, vectors):
                vector = np.array(vector, copy=True)
                vector.setflags(write=False)
                self._query_cache[text] = vector
                kept.append(vector)
            while len(self._query_cache) > QUERY_CACHE:
                self._query_cache.popitem(last=False)
        return kept

    def history_vector(self, history: list[str]) -> np.ndarray | None:
        recent = history[-self.settings.history:]
        if not recent:
            return None
        rows = np.array([self.catalog.index_of(i) for i in recent])
        vector = recency_weights(len(rows), self.settings.recency_decay) @ self.item_embeddings[rows]
        norm = np.linalg.norm(vector)
        return vector / norm if norm > 0 else None

    def query_vector(self, history: list[str], query: str | None = None) -> np.ndarray:
        """Recency-weighted mean of history embeddings, mixed with the request's embedding when given."""
        parts = []
        hist = self.history_vector(history)
        if hist is not None:
            parts.append((1.0 - self.settings.query_weight if query else 1.0, hist))
        if query:
            parts.append((self.settings.query_weight if hist is not None else 1.0, self.embed_query(query)))
        if not parts:
            raise InvalidRequestError("retrieval needs a history or a query")
        vector = sum(weight * vec for weight, vec in parts)
        return (vector / np.linalg.norm(vector)).astype(np.float32)

    def retrieve(self, history: list[str], query: str | None = None, n: int | None = None,
                 exclude: set[str] | None = None, *, transitions: ItemTransitions | None = None) -> list[tuple[str, float]]:
        """Top-``n`` (default ``settings.n_candidates``) (item_id, score) not in ``exclude`` (the history is always
        excluded). ``transitions`` replaces the fitted ones for this call (e.g. out-of-fold ones in training)."""
        return self.candidates(history, query, n, exclude, transitions=transitions).items

    def candidates(self, history: list[str], query: str | None = None, n: int | None = None,
                   exclude: set[str] | None = None, *, transitions: ItemTransitions | None = None) -> Candidates:
        """:meth:`retrieve` with what the request did: with a request, candidates come from the items its
        filters allow (:mod:`recgen.retrieval.request_constraints`), nearest to its text first, and the
        history orders them; items that do not match are only shown when too few do, and are labelled."""
        n = self.settings.n_candidates if n is None else n
        skip = set(history) | set(exclude or ())
        transitions = transitions if transitions is not None else self.transitions
        if query:
            return self._for_request(history, query, n, skip, transitions)
        if not history:
            raise InvalidRequestError("retrieval needs a history or a query")
        vector = self.query_vector(history)
        if transitions is not None and self.settings.collaborative_weight > 0:
            return Candidates(self._retrieve_hybrid(history, vector, n, skip, transitions))
        want = min(len(self.catalog), n + len(skip))
        scores, rows = self.index.search(vector[None, :], want)
        out = []
        for score, row in zip(scores[0], rows[0]):
            if row < 0:
                continue
            item_id = self.catalog.items[row].item_id
            if item_id in skip:
                continue
            out.append((item_id, float(score)))
            if len(out) == n:
                break
        return Candidates(out)

    def scores(self, history: list[str], vector: np.ndarray | None = None,
               transitions: ItemTransitions | None = None) -> np.ndarray:
        """What :meth:`retrieve` ranks by, for every catalog item: cosine to the query vector, plus the weighted
        transition score when transitions are fitted and the weight is above 0."""
        vector = self.query_vector(history) if vector is None else vector
        cosine = self.item_embeddings @ vector
        transitions = transitions if transitions is not None else self.transitions
        if not history or transitions is None or self.settings.collaborative_weight <= 0:
            return cosine
        rows = np.array([self.catalog.index_of(i) for i in history], dtype=np.int64)
        borrowed = self.cold_neighbours(transitions).weights
        transition = transitions.scores(rows)
        if borrowed.nnz:  # items without interactions borrow their text neighbours' transition scores
            transition = transition + borrowed @ transition
        return cosine + self.settings.collaborative_weight * transition

    def _prior(self, transitions: ItemTransitions) -> np.ndarray:
        """How many distinct items lead to each item in the fitted sequences (a popularity that needs no other
        state), as log1p scaled to [0, 1]: for a request without a history, it orders what the request allows."""
        key = ("prior", id(transitions.matrix), transitions.matrix.nnz, transitions.matrix.shape)
        if self._prior_cache is None or self._prior_cache[0] != key:
            matrix = transitions.matrix.tocsr()
            degree = np.log1p(np.bincount(matrix.indices, minlength=matrix.shape[1]).astype(np.float32))
            self._prior_cache = (key, degree / degree.max() if degree.max() > 0 else degree)
        return self._prior_cache[1]

    @property
    def borrows_for_cold_items(self) -> bool:
        """Whether scores use the cold items' neighbours (with transitions, or the request prior)."""
        s = self.settings
        return s.cold_neighbours > 0 and (s.collaborative_weight > 0 or s.request_prior > 0)

    def cold_neighbours(self, transitions: ItemTransitions) -> ColdNeighbours:
        """The cold items' neighbours (:mod:`~recgen.retrieval.cold_items`) for these transitions, kept until the
        matrix changes (another matrix, or entries added by an update); a change redoes only the rows it moves."""
        k = self.settings.cold_neighbours
        key = (id(transitions.matrix), transitions.matrix.nnz, transitions.matrix.shape, k)
        with self._cold.lock:  # one computation; a concurrent request waits for it rather than repeating it
            if self._cold.key != key:
                cold = cold_rows(transitions.matrix)
                index = self.index if search_pays(self.index_meta) else None  # else the exact product costs less
                previous = self._cold.value
                if previous is not None and previous.k == k:
                    value = updated_neighbours(previous, self.item_embeddings, cold, index, self.index_meta.kind)
                else:
                    value = cold_neighbours(self.item_embeddings, cold, k, index, self.index_meta.kind)
                self._cold.key, self._cold.value = key, value
            return self._cold.value

    def adopt_cold_neighbours(self, transitions: ItemTransitions, neighbours: ColdNeighbours) -> bool:
        """Use saved ``neighbours`` for ``transitions``; False when they were computed for another
        ``cold_neighbours`` (this config's are then computed on first use). A ``ValueError`` when they do not
        belong to these transitions (other cold rows or catalog size, or a warm row borrowing)."""
        n = len(self.catalog)
        if neighbours.k != self.settings.cold_neighbours:
            return False
        if neighbours.weights.shape != (n, n) or not np.array_equal(neighbours.cold, cold_rows(transitions.matrix)):
            raise ValueError("computed for other transitions (other cold items or another catalog size)")
        lending = np.flatnonzero(np.diff(neighbours.weights.indptr))
        if not np.isin(lending, neighbours.cold).all() or np.isin(neighbours.weights.indices, neighbours.cold).any():
            raise ValueError("a warm item borrows, or a cold item lends")
        with self._cold.lock:
            self._cold.key = (id(transitions.matrix), transitions.matrix.nnz, transitions.matrix.shape,
                              self.settings.cold_neighbours)
            self._cold.value = neighbours
        return True

    def _for_request(self, history: list[str], query: str, n: int, skip: set[str],
                     transitions: ItemTransitions | None) -> Candidates:
        """Request first. The pool is every item the request's filters allow or, for a request without filters,
        the ``request_pool`` items nearest to its text (never fewer than ``n``); the blended history + request
        score (with transitions) orders it. A text that still holds a negation
        no filter could read is only blended, never pooled on (an embedding reads it as its opposite); a
        request that is only filters ("anything but horror") is ordered by the history, or by the filters'
        own description for a new user."""
        request = self.request_reader.read(query)
        text = request.text
        if text is None and not history:
            text = request.describe(negations=False) or None
        # only negations and no history: order by the catalog's centroid (typical items), not by the words
        vector = self.query_vector(history, text) if history or text else self._centroid()
        prior = None
        if not history and request.filters and self.settings.request_prior > 0 and transitions is not None:
            # a new user's filtered request: among what it allows, what others took first (validated only for
            # filtered requests; free text keeps its own order, so an item named by its title is found first)
            prior = self._prior(transitions)
        skip_rows = np.array([self.catalog.index_of(i) for i in skip], dtype=np.int64)
        available = np.ones(len(self.catalog), dtype=bool)
        available[skip_rows] = False
        allowed, note = available, None
        if request.filters:
            match = self.request_reader.match(request)
            allowed, note = match.mask & available, match.note
        # Without filters the pool is the request's ``request_pool`` nearest items; with filters it is every
        # allowed item (the filters already say what is asked for; on validation requests "all allowed" beat
        # pools of 20 and 50 on both datasets: eval/results/requests/NOTES.md)
        pooled = (request.text is not None and not has_negation(request.text) and self.settings.request_pool > 0
                  and not request.filters)
        # an approximate index (a large catalog): the pool comes from the index's search and only pooled rows are
        # scored, never a catalog-wide product (two of them made a request cost ~200 ms at 1M items)
        searched = self.index_meta.kind != "flat"
        full = None if searched else self._request_scores(None, history, vector, transitions, prior)
        if pooled:
            size = min(max(self.settings.request_pool, n), int(allowed.sum()))
            rows = (self._nearest_allowed(self.embed_query(request.text), size, allowed) if searched else
                    _top(np.where(allowed, self.item_embeddings @ self.embed_query(request.text), -np.inf), size))
        elif searched and prior is None and restricted_search_pays(self.index_meta, int(allowed.sum())):
            rows = self._reach(vector, n, allowed, history, transitions)  # "anything but X": not 1M rows scored
        else:
            rows = np.flatnonzero(allowed)
        personal = full[rows] if full is not None else self._request_scores(rows, history, vector, transitions, prior)
        top = stable_top(personal, n)
        order, scores = list(rows[top]), dict(zip(rows[top].tolist(), personal[top].tolist()))
        unmatched: list[int] = []
        if request.filters and len(order) < n:  # too few match: the closest other items, labelled
            rest = available & ~allowed
            want = min(n - len(order), int(rest.sum()))
            if full is None and prior is None and restricted_search_pays(self.index_meta, int(rest.sum())):
                near = self._reach(vector, want, rest, history, transitions)
                at = self._request_scores(near, history, vector, transitions, prior)
                unmatched = list(near[stable_top(at, want)])
                scores.update(zip(near.tolist(), at.tolist()))
            else:
                if full is None:  # a new user's (the request prior has no reach): the catalog is scored once
                    full = self._request_scores(None, history, vector, transitions, prior)
                unmatched = list(_top(np.where(rest, full, -np.inf), want))
                scores.update((int(r), float(full[r])) for r in unmatched)
            what = request.describe()
            note = (f"only {len(order)} item(s) match the request ({what}); the others are the closest items"
                    if order else f"no catalog item matches the request ({what}); these are the closest items")
        items = [(self.catalog.items[r].item_id, scores[int(r)]) for r in order + unmatched]
        return Candidates(items, frozenset(self.catalog.items[r].item_id for r in unmatched), note, request)

    def _request_scores(self, rows: np.ndarray | None, history: list[str], vector: np.ndarray,
                        transitions: ItemTransitions | None, prior: np.ndarray | None) -> np.ndarray:
        """What a request's candidates are ordered by, at ``rows`` (None: every item): :meth:`scores` with a
        history, the cosine to ``vector`` without one, plus the weighted ``prior`` (with its cold items' borrowed
        share) when given. The same values either way; at ``rows`` the work is in proportion to the rows."""
        if rows is None:
            personal = self.scores(history, vector, transitions) if history else self.item_embeddings @ vector
            if prior is not None:
                personal = personal + self.settings.request_prior * (prior + self.cold_neighbours(transitions).weights @ prior)
            return personal
        personal = self.item_embeddings[rows] @ vector
        if history and transitions is not None and self.settings.collaborative_weight > 0:
            transition = transitions.scores(np.array([self.catalog.index_of(i) for i in history], dtype=np.int64))
            borrowed = self.cold_neighbours(transitions).weights
            at = transition[rows] + (borrowed[rows] @ transition if borrowed.nnz else 0)
            personal = personal + self.settings.collaborative_weight * at
        if prior is not None:
            personal = personal + self.settings.request_prior * (prior[rows] + self.cold_neighbours(transitions).weights[rows] @ prior)
        return personal

    def _reach(self, vector: np.ndarray, n: int, allowed: np.ndarray, history: list[str],
               transitions: ItemTransitions | None) -> np.ndarray:
        """Rows that hold the top ``n`` allowed items by the blended request score (cosine to ``vector`` +
        weight × transition score), found without scoring every allowed item: the ``n`` allowed items nearest to
        ``vector`` (a search restricted to them) and every allowed item with a (borrowed) transition score. Both
        parts outside the cosine are >= 0, so an item in neither set is outranked by the ``n`` nearest: the same
        top as scoring all allowed items wherever the index's search is exact."""
        n = min(n, int(allowed.sum()))
        found = search_within(self.index, self.index_meta.kind, vector[None, :], allowed, n)[1][0]
        rows = found[found >= 0]
        if history and transitions is not None and self.settings.collaborative_weight > 0:
            part = self._transition_part(history, transitions).indices
            rows = np.union1d(rows, part[allowed[part]])
        return rows

    def _transition_part(self, history: list[str], transitions: ItemTransitions):
        """The history's transition scores as a sparse row, cold items' borrowed share added: the only items
        whose blended score is more than their cosine."""
        part = transitions.sparse_scores(np.array([self.catalog.index_of(i) for i in history], dtype=np.int64))
        borrowed = self.cold_neighbours(transitions).weights
        if borrowed.nnz:  # items without interactions borrow their text neighbours' transition scores
            part = (part + part @ borrowed.T).tocsr()
        part.sum_duplicates()
        return part

    def _nearest_allowed(self, vector: np.ndarray, size: int, allowed: np.ndarray) -> np.ndarray:
        """Rows of the ``size`` allowed items nearest to ``vector`` by the index's search, best first; the search
        widens (doubling) while too few of what it found are allowed."""
        want = size + int((~allowed).sum())
        while True:
            found = self.index.search(vector[None, :].astype(np.float32), min(want, len(self.catalog)))[1][0]
            found = found[found >= 0]
            rows = found[allowed[found]][:size]
            if len(rows) == size or want >= len(self.catalog):
                return rows
            want *= 2

    def _centroid(self) -> np.ndarray:
        vector = self.item_embeddings.mean(axis=0)
        return (vector / np.linalg.norm(vector)).astype(np.float32)

    def _retrieve_hybrid(self, history: list[str], vector: np.ndarray, n: int, skip: set[str],
                         transitions: ItemTransitions) -> list[tuple[str, float]]:
        if self.index_meta.kind != "flat":  # one query: the exact scores would be a gemv over the whole catalog
            return self._searched_hybrid(history, vector, n, skip, transitions)
        scores = self.scores(history, vector, transitions)
        for item_id in skip:
            scores[self.catalog.index_of(item_id)] = -np.inf
        n = min(n, int(np.isfinite(scores).sum()))
        top = np.argpartition(-scores, n - 1)[:n] if n else np.array([], dtype=np.int64)
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self.catalog.items[row].item_id, float(scores[row])) for row in top]


    def _searched_hybrid(self, history: list[str], vector: np.ndarray, n: int, skip: set[str],
                         transitions: ItemTransitions) -> list[tuple[str, float]]:
        """:meth:`_retrieve_hybrid` with an approximate index, without a catalog-wide score vector: cosine +
        weight × transition (both parts >= 0 outside the cosine) can only reach the top from the index's nearest
        ``n`` (+ skipped) items or from the items with a transition score (+ the cold items borrowing one), so
        only those are scored. The same order as the dense scores wherever the index's search is exact."""
        skip_rows = np.array([self.catalog.index_of(i) for i in skip], dtype=np.int64)
        part = self._transition_part(history, transitions)
        want = min(len(self.catalog), n + len(skip_rows))
        found = self.index.search(vector[None, :].astype(np.float32), want)[1][0]
        rows = np.union1d(found[found >= 0], part.indices)
        rows = rows[~np.isin(rows, skip_rows)]
        transition = np.zeros(len(rows), dtype=np.float32)
        transition[np.searchsorted(rows, part.indices[np.isin(part.indices, rows)])] = \
            part.data[np.isin(part.indices, rows)]
        scores = self.item_embeddings[rows] @ vector + np.float32(self.settings.collaborative_weight) * transition
        top = np.argsort(-scores, kind="stable")[:n]
        return [(self.catalog.items[row].item_id, float(scores[t])) for t, row in zip(top, rows[top])]

def index_choice(settings: RetrievalSettings) -> IndexChoice:
    """The index-building part of the retrieval settings."""
    return IndexChoice(settings.index, settings.ann_min_items, settings.ann_recall)


def stable_top(scores: np.ndarray, n: int) -> np.ndarray:
    """Positions of the ``n`` highest scores, best first, ties in position order: the first ``n`` of a stable
    descending sort, without sorting everything (a request's allowed items can be most of a 1M catalog)."""
    if len(scores) <= n:
        return np.argsort(-scores, kind="stable")
    if n <= 0:
        return np.array([], dtype=np.int64)
    threshold = np.partition(scores, len(scores) - n)[len(scores) - n]  # the n-th highest
    tied_or_above = np.flatnonzero(scores >= threshold)  # position order; every tie of the n-th kept
    return tied_or_above[np.argsort(-scores[tied_or_above], kind="stable")][:n]


def _top(scores: np.ndarray, size: int) -> np.ndarray:
    """Rows of the ``size`` highest finite scores, best first."""
    size = min(size, int(np.isfinite(scores).sum()))
    if size <= 0:
        return np.array([], dtype=np.int64)
    rows = np.argpartition(-scores, size - 1)[:size]
    return rows[np.argsort(-scores[rows], kind="stable")]

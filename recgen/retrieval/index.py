"""Item-embedding FAISS index saved with what it was built from, so a stale index is never used silently.

The kind of index follows the catalog's size (faiss wiki, "Guidelines to choose an index"): exact inner-product
search (``Flat``) below ``RetrievalSettings.ann_min_items``, a graph (``HNSW32,Flat``) or an inverted file
(``IVF<n>,Flat``) above it. An approximate index's search parameter (``efSearch`` / ``nprobe``) is chosen by
measuring recall@100 against exact search on one set of queries (the smallest value whose mean recall's lower
95 % bound clears the target, so the choice does not sit on the edge), and checked on a second, held-out set; both
recalls and the parameter are stored in the index's description (``index.json``) and shown by ``recgen index``.
When no parameter reaches the target, the exact index is kept: recall is never traded silently.
"""

from __future__ import annotations

import json
import logging
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_dir, file_digest
from ..errors import IndexCorruptError, IndexStaleError
from ..version import __version__

log = logging.getLogger(__name__)

INDEX_FILE = "items.faiss"
META_FILE = "index.json"

#: The index kinds a setting may name; ``auto`` picks one by catalog size.
INDEX_KINDS = ("flat", "hnsw", "ivf")
#: How many neighbours the recall of an approximate index is measured at (the fused ranker's deepest pool).
RECALL_AT = 100
#: Search-parameter ladders, cheapest first; the first that reaches the target recall is kept.
EF_SEARCH = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
NPROBE = (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
#: HNSW graph degree; 32 is the faiss wiki's usual choice for 384-dimension embeddings at this scale.
HNSW_M = 32
#: HNSW candidates kept while the graph is built: hnswlib's default (FAISS's is 40). On 200k titles of synth L
#: (MiniLM, scores of the 90th-100th neighbours within 0.0012) recall@100 0.98 took efSearch 1,024 with 40 and
#: 256 with 200 (build 5.7x longer); at 1M items 40 reached only 0.9715 at efSearch 2,048
#: (eval/results/scale/hnsw-ef-construction.json).
HNSW_EF_CONSTRUCTION = 200
#: The FAISS file tag each kind is written with (``faiss/impl/index_write.cpp``).
FOURCC = {"flat": b"IxFI", "hnsw": b"IHNf", "ivf": b"IwFl"}


@dataclass
class IndexMeta:
    embedder: str
    catalog_fingerprint: str
    n_items: int
    dim: int
    recgen_version: str = __version__
    #: ``flat`` (exact), ``hnsw`` or ``ivf``; the FAISS factory string it was built from.
    kind: str = "flat"
    factory: str = "Flat"
    #: The kind the settings asked for (``flat`` when exact search was kept because no parameter reached the
    #: target recall): a saved index is stale when the settings now resolve to another kind.
    requested_kind: str = "flat"
    #: How the requested kind is built (HNSW's ``M`` and ``efConstruction``): an index built otherwise, or exact
    #: search kept after another build missed the target, is stale (:func:`build_params`).
    build_params: dict = field(default_factory=dict)
    #: The search parameters set after loading (``{"efSearch": 128}``, ``{"nprobe": 16}``; none for flat).
    search_params: dict = field(default_factory=dict)
    #: recall@``recall_at`` against exact search: on the queries the parameter was chosen on, and held out.
    recall_at: int = RECALL_AT
    tune_recall: float = 1.0
    held_out_recall: float = 1.0
    held_out_queries: int = 0
    #: Why this kind (size vs threshold, or the fallback to exact search).
    reason: str = ""
    #: What embedded the items (``RetrievalSettings.embed_backend``, resolved): queries must come from the same.
    embed_backend: str = "torch"
    #: Size and SHA-256 of the index file, checked before FAISS parses an approximate index.
    file_bytes: int = 0
    sha256: str = ""

    def describe(self) -> str:
        """One line for logs and ``recgen index``."""
        if self.kind == "flat":
            return f"exact inner-product index ({self.factory}) over {self.n_items} items: {self.reason}"
        params = ", ".join(f"{k}={v}" for k, v in self.search_params.items())
        return (f"{self.factory} over {self.n_items} items, {params}: recall@{self.recall_at} vs exact "
                f"{self.held_out_recall:.4f} on {self.held_out_queries} held-out queries "
                f"({self.tune_recall:.4f} on the tuning queries); {self.reason}")


@dataclass(frozen=True)
class IndexChoice:
    """How to build the index: ``kind`` is ``auto`` or one of :data:`INDEX_KINDS`."""

    kind: str = "auto"
    ann_min_items: int = 100_000
    target_recall: float = 0.98
    queries: int = 500
    seed: int = 0

    def resolve(self, n_items: int) -> tuple[str, str]:
        """The kind for a catalog of ``n_items``, and why."""
        if self.kind != "auto":
            return self.kind, "chosen by the setting retrieval.index"
        if n_items < self.ann_min_items:
            return "flat", f"{n_items} items < retrieval.ann_min_items = {self.ann_min_items}"
        return "hnsw", f"{n_items} items >= retrieval.ann_min_items = {self.ann_min_items}"


#: A batch of users' text tops (or cold items' neighbours) is searched in an HNSW index instead of computed by
#: the exact product only when the catalog holds at least this many items per unit of efSearch: a graph search
#: visits ~efSearch nodes at random addresses, the product streams the catalog through BLAS. Measured on synth
#: M (100k items, efSearch 768 for recall@100 0.98, 1,024 users, one thread, load ~10-12): feature building took
#: 7.7 CPU ms per user with the search (eval/results/scale/scan_topk-M-indexsearch.md) and 3.8 with the product
#: (scan_topk-M.md); ~1.3 ms of either is the other signals (synth S), so the product's text part is ~2.5 ms per
#: 100k items against ~6.4 ms for the search: break-even near 250k items at efSearch 768, ~330 items per unit.
#: Not measured at 1M items.
SEARCH_ITEMS_PER_EF = 300


def search_pays(meta: "IndexMeta") -> bool:
    """Whether batched top-k work should search this index rather than compute the exact product (which also
    gives exact results): never for a flat index, see :data:`SEARCH_ITEMS_PER_EF` for HNSW."""
    if meta.kind == "flat":
        return False
    if meta.kind == "hnsw":
        return meta.n_items >= SEARCH_ITEMS_PER_EF * int(meta.search_params.get("efSearch", 16))
    return True


def restricted_search_pays(meta: "IndexMeta", allowed: int) -> bool:
    """Whether a request's top items among ``allowed`` of the index's items are found by a search restricted to
    them (:func:`search_within`) rather than by scoring them: on an approximate index (as every request there
    is searched), from half the catalog allowed on. A restricted graph or list search visits about 1 / share
    as many items as a plain one to find its k allowed ones, so at most twice a plain search from there, while
    scoring half of a catalog that needed an approximate index costs far more (a negated request, "anything
    but horror", allows nearly all of it)."""
    return meta.kind != "flat" and 2 * allowed >= meta.n_items


def search_within(index, kind: str, queries: np.ndarray, allowed: np.ndarray, k: int):
    """(cosines, rows; -1 where fewer were found) of each query's ``k`` nearest items among those ``allowed``
    (a boolean mask over the index's rows), searched in the approximate index with FAISS's per-query search
    parameters: an ``IDSelectorBitmap`` of the allowed rows and the index's own efSearch / nprobe (faiss wiki,
    "Setting search parameters for one query")."""
    import faiss

    bitmap = np.packbits(allowed, bitorder="little")  # bit i of byte i // 8 = row i, as IDSelectorBitmap reads it
    selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap))
    if kind == "hnsw":
        params = faiss.SearchParametersHNSW(sel=selector, efSearch=max(int(index.hnsw.efSearch), k))
    else:
        params = faiss.SearchParametersIVF(sel=selector, nprobe=int(index.nprobe))
    sims, top = index.search(np.ascontiguousarray(queries, dtype=np.float32), k, params=params)
    return sims, top.astype(np.int64)


def make_index(vectors: np.ndarray):
    """Exact inner-product search: right for normalized vectors and catalogs below ~1M items."""
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def build_params(kind: str) -> dict:
    """The construction settings of ``kind`` this version builds with (none for flat and IVF)."""
    return {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION} if kind == "hnsw" else {}


def factory_string(kind: str, n_items: int) -> str:
    if kind == "flat":
        return "Flat"
    if kind == "hnsw":
        return f"HNSW{HNSW_M},Flat"
    if kind == "ivf":  # ~4 sqrt(n) lists (faiss wiki), at least 1, at most one per 39 training points
        return f"IVF{max(1, min(int(4 * math.sqrt(n_items)), n_items // 39 or 1))},Flat"
    raise ValueError(f"unknown index kind {kind!r}; expected one of {INDEX_KINDS}")


def build_index(vectors: np.ndarray, choice: IndexChoice | None = None, base: IndexMeta | None = None):
    """The index ``choice`` asks for over ``vectors``, its search parameter chosen on measured recall; returns
    ``(index, meta)`` where ``meta`` is ``base`` (embedder, fingerprint) completed with the choice and recalls."""
    choice = choice or IndexChoice()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    meta = IndexMeta(**{**(base.__dict__ if base else {"embedder": "", "catalog_fingerprint": ""}),
                        "n_items": n, "dim": dim})
    kind, reason = choice.resolve(n)
    meta = _with(meta, requested_kind=kind, build_params=build_params(kind))
    if kind == "flat" or n <= RECALL_AT:
        return make_index(vectors), _with(meta, kind="flat", factory="Flat", search_params={}, reason=reason,
                                          tune_recall=1.0, held_out_recall=1.0, held_out_queries=0)
    index = _approximate(vectors, kind)
    tune, held = query_sets(vectors, choice.queries, choice.seed)
    exact = make_index(vectors)
    truth_tune, truth_held = exact.search(tune, RECALL_AT)[1], exact.search(held, RECALL_AT)[1]
    del exact
    name, ladder = ("efSearch", EF_SEARCH) if kind == "hnsw" else ("nprobe", NPROBE)
    if kind == "ivf":
        ladder = tuple(v for v in ladder if v <= index.nlist)
    tried, bounds = {}, {}  # mean recall and its lower 95 % bound over the tuning queries
    for value in ladder:
        set_search_params(index, {name: value})
        per_query = query_recalls(index.search(tune, RECALL_AT)[1], truth_tune)
        tried[value] = float(per_query.mean())
        bounds[value] = tried[value] - 1.96 * float(per_query.std(ddof=1)) / math.sqrt(len(per_query))
        if bounds[value] >= choice.target_recall:
            break
    value = next((v for v, b in bounds.items() if b >= choice.target_recall), None)
    if value is None:
        best = max(tried.values())
        why = (f"{kind} reached only recall@{RECALL_AT} {best:.4f} (its lower 95 % bound "
               f"{bounds[max(tried, key=tried.get)]:.4f}) < {choice.target_recall} at the largest {name} "
               f"({max(tried)}); kept exact search")
        log.warning(why)
        return make_index(vectors), _with(meta, kind="flat", factory="Flat", search_params={}, reason=why,
                                          tune_recall=1.0, held_out_recall=1.0, held_out_queries=0)
    set_search_params(index, {name: value})
    held_recall = recall(index.search(held, RECALL_AT)[1], truth_held)
    ladder_text = ", ".join(f"{v}: {r:.4f}" for v, r in tried.items())
    meta = _with(meta, kind=kind, factory=factory_string(kind, n), search_params={name: value},
                 tune_recall=round(tried[value], 5), held_out_recall=round(held_recall, 5),
                 held_out_queries=len(held),
                 reason=f"{reason}; {name} = the smallest whose tuning recall's lower 95 % bound is >= "
                        f"{choice.target_recall} ({ladder_text})")
    if held_recall < choice.target_recall:
        log.warning("index recall on held-out queries %.4f < %.2f: %s", held_recall, choice.target_recall,
                    meta.describe())
    return index, meta


def _with(meta: IndexMeta, **changes) -> IndexMeta:
    return IndexMeta(**{**meta.__dict__, **changes})


def _approximate(vectors: np.ndarray, kind: str):
    import faiss

    n, dim = vectors.shape
    index = faiss.index_factory(dim, factory_string(kind, n), faiss.METRIC_INNER_PRODUCT)
    if kind == "hnsw":
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    if not index.is_trained:  # IVF: k-means on a sample (faiss needs 39-256 points per list)
        sample = np.random.default_rng(0).choice(n, size=min(n, 256 * index.nlist), replace=False)
        index.train(vectors[np.sort(sample)])
    index.add(vectors)
    return index


def query_sets(vectors: np.ndarray, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint sets of ``count`` queries shaped like the retriever's (``Retriever.query_vector``): half are
    recency-weighted means of 1-20 catalog items (a history), half one item moved by noise (a request's text,
    or an item not in the catalog). The two sets use disjoint items, so the held-out set checks the choice."""
    rng = np.random.default_rng(seed)
    n, dim = vectors.shape
    order = rng.permutation(n)
    halves = (order[: n // 2], order[n // 2:])
    out = []
    for pool in halves:
        queries = np.empty((count, dim), dtype=np.float32)
        for q in range(count):
            if q % 2 == 0:
                rows = rng.choice(pool, size=int(rng.integers(1, 21)))
                weights = np.power(np.float32(0.85), np.arange(len(rows) - 1, -1, -1, dtype=np.float32))
                vector = weights @ vectors[rows]
            else:
                vector = vectors[rng.choice(pool)] + rng.normal(scale=0.5 / math.sqrt(dim), size=dim)
            queries[q] = vector / max(float(np.linalg.norm(vector)), 1e-12)
        out.append(queries)
    return out[0], out[1]


def query_recalls(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Each query's share of its exact top-k found by the approximate search (ids, -1 = none)."""
    return np.array([len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) / max(int((t >= 0).sum()), 1)
                     for f, t in zip(found, truth)], dtype=np.float64)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's exact top-k found by the approximate search (1.0 for no queries)."""
    hits = query_recalls(found, truth)
    return float(hits.mean()) if len(hits) else 1.0


def set_search_params(index, params: dict) -> None:
    """Apply stored search parameters (``efSearch`` / ``nprobe``) through FAISS's ParameterSpace."""
    import faiss

    space = faiss.ParameterSpace()
    for name, value in params.items():
        space.set_index_parameter(index, name, int(value))


def extended_index(index, vectors: np.ndarray):
    """A copy of ``index`` with ``vectors`` added after its own: ids continue from ``index.ntotal`` (the new
    items' catalog rows). A copy, not the same index, so searches already running see a consistent one."""
    import faiss

    out = faiss.clone_index(index)
    out.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return out


def save_index(folder: str | Path, index, meta: IndexMeta) -> None:
    """Write to a temporary folder and rename it into place: a crash never leaves a half index. The file's size
    and SHA-256 go into the description, so a changed file is refused before FAISS parses it."""
    import faiss

    with atomic_dir(folder) as tmp:
        faiss.write_index(index, str(tmp / INDEX_FILE))
        size, digest = file_digest(tmp / INDEX_FILE)
        meta = _with(meta, file_bytes=size, sha256=digest)
        (tmp / META_FILE).write_text(json.dumps(meta.__dict__, indent=2))


def load_index(folder: str | Path, expect_fingerprint: str, expect_embedder: str | None = None,
               expect_kind: str | None = None, expect_backend: str | None = None, current_build: bool = False):
    """Load and check an index folder; raise :class:`IndexStaleError` or :class:`IndexCorruptError`.
    ``expect_kind`` (the kind the current settings resolve to) makes an index of another kind stale;
    ``current_build`` one built with other construction settings than this version's (a cached index, rebuilt
    from its vectors; a fitted folder serves the index its ranker was fitted with, its recall as measured)."""
    folder = Path(folder)
    meta_path, index_path = folder / META_FILE, folder / INDEX_FILE
    for path in (meta_path, index_path):
        if not path.is_file():
            raise IndexCorruptError(f"index folder {folder} is missing {path.name}; rebuild it with `recgen index`")
    try:
        meta = IndexMeta(**json.loads(meta_path.read_text()))
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (meta.n_items, meta.dim)):
            raise TypeError("n_items and dim must be whole numbers >= 0")
        if {meta.kind, meta.requested_kind} - set(INDEX_KINDS) or not isinstance(meta.search_params, dict):
            raise TypeError(f"kind must be one of {INDEX_KINDS} and search_params an object")
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise IndexCorruptError(f"{meta_path} is not a valid index description ({exc}); rebuild the index") from None
    if meta.catalog_fingerprint != expect_fingerprint:
        raise IndexStaleError(
            f"index in {folder} was built from another catalog (fingerprint {meta.catalog_fingerprint} != "
            f"{expect_fingerprint}); rebuild it with `recgen index`"
        )
    if expect_embedder is not None and meta.embedder != expect_embedder:
        raise IndexStaleError(
            f"index in {folder} was built with embedding model {meta.embedder!r}, not {expect_embedder!r}; "
            "rebuild it or pass the matching model"
        )
    if expect_backend is not None and meta.embed_backend != expect_backend:
        raise IndexStaleError(f"index in {folder} was embedded with the {meta.embed_backend} backend, the settings "
                              f"ask for {expect_backend}")
    if expect_kind is not None and meta.requested_kind != expect_kind:
        raise IndexStaleError(f"index in {folder} was built as a {meta.requested_kind} index, the settings ask for "
                              f"{expect_kind}")
    if current_build and expect_kind is not None and meta.build_params != build_params(expect_kind):
        raise IndexStaleError(f"index in {folder} was built with {meta.build_params or 'older settings'}, this version "
                              f"builds a {expect_kind} index with {build_params(expect_kind)}")
    return _read_checked(index_path, meta), meta


def _read_checked(index_path: Path, meta: IndexMeta):
    """The FAISS index at ``index_path``, its file checked against ``meta`` before FAISS parses it."""
    import faiss

    if meta.kind == "flat":
        check_flat_file(index_path, meta)
    else:
        check_approximate_file(index_path, meta)
    try:
        index = faiss.read_index(str(index_path))
        set_search_params(index, meta.search_params)
    except RuntimeError as exc:
        raise IndexCorruptError(f"{index_path} cannot be read ({exc}); rebuild the index") from None
    if index.ntotal != meta.n_items or index.d != meta.dim:
        raise IndexCorruptError(f"{index_path} holds {index.ntotal}x{index.d} vectors, expected {meta.n_items}x{meta.dim}")
    if index.ntotal and not np.isfinite(_vectors(index)).all():
        raise IndexCorruptError(f"{index_path} holds vectors that are not finite (nan or inf); rebuild the index")
    return index


def _vectors(index) -> np.ndarray:
    """Every stored vector, in id order (an inverted file needs its direct map for this)."""
    if hasattr(index, "make_direct_map") and index.direct_map.type == 0:
        index.make_direct_map()
    return index.reconstruct_n(0, index.ntotal)


class _StoredVectors:
    """Exposes a FAISS index's float32 vectors to numpy and holds the index: an array made from it keeps the
    index (and so its memory) alive for as long as the array or any view of it lives."""

    def __init__(self, index, address: int, shape: tuple[int, int]) -> None:
        self.index = index
        self.__array_interface__ = {"shape": shape, "typestr": "<f4", "data": (address, True), "version": 3}


def stored_vectors(index) -> np.ndarray | None:
    """The vectors a flat index (or an HNSW graph over one) stores, as a read-only array without a copy — the
    retriever's item embeddings are then not held twice (1.5 GB at 1M x 384) — or None for a kind that does
    not store them as one array (IVF)."""
    import faiss

    flat = faiss.downcast_index(index.storage) if isinstance(index, faiss.IndexHNSW) else index
    if not isinstance(flat, faiss.IndexFlat) or flat.ntotal == 0:
        return None
    address = faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d).__array_interface__["data"][0]
    return np.asarray(_StoredVectors(index, address, (flat.ntotal, flat.d)))


def saved_vectors(folder: str | Path, expect_fingerprint: str, expect_embedder: str,
                  expect_backend: str) -> np.ndarray | None:
    """The item vectors of a saved index built from this catalog with this embedder and backend, whatever kind
    or build settings it has (checked as :func:`load_index` checks it); None when there is no such index. A
    stale index is rebuilt from them: changing how items are indexed never re-embeds the catalog."""
    folder = Path(folder)
    try:
        meta = IndexMeta(**json.loads((folder / META_FILE).read_text()))
        if (meta.catalog_fingerprint, meta.embedder, meta.embed_backend) != (expect_fingerprint, expect_embedder,
                                                                              expect_backend):
            return None
        return np.ascontiguousarray(_vectors(_read_checked(folder / INDEX_FILE, meta)), dtype=np.float32)
    except (OSError, json.JSONDecodeError, TypeError, UnicodeDecodeError, KeyError, IndexCorruptError):
        return None


#: The header every FAISS index file starts with: fourcc, d (int32), ntotal (int64), two unused int64,
#: is_trained (uint8), metric (int32, 0 = inner product).
_HEADER = struct.Struct("<4siqqqBi")


def check_approximate_file(path: Path, meta: IndexMeta) -> None:
    """An HNSW / IVF file must have its kind's tag, the described size and metric, and the size and SHA-256
    recorded when it was saved: FAISS trusts the counts inside such a file, so it is never parsed unchecked."""
    with path.open("rb") as handle:
        head = handle.read(_HEADER.size)
    problem = None
    if len(head) < _HEADER.size:
        problem = "shorter than an index header"
    else:
        fourcc, d, ntotal, _, _, _, metric = _HEADER.unpack(head)
        if fourcc != FOURCC[meta.kind] or metric != 0:
            problem = f"not an inner-product FAISS {meta.kind} index"
        elif (d, ntotal) != (meta.dim, meta.n_items):
            problem = f"its header says {ntotal}x{d} vectors, not {meta.n_items}x{meta.dim}"
        elif not meta.sha256 or (meta.file_bytes, meta.sha256) != file_digest(path):
            problem = "its size or SHA-256 is not the one recorded when it was saved"
    if problem:
        raise IndexCorruptError(f"{path} cannot be read as the index {path.parent / META_FILE} describes ({problem}); "
                                "rebuild it with `recgen index`")


#: The inner-product flat index as ``faiss.write_index`` lays it out: fourcc, d (int32), ntotal (int64), two
#: unused int64, is_trained (uint8), metric (int32, 0 = inner product), the number of floats (uint64), the floats.
_FLAT_HEADER = struct.Struct("<4siqqqBiQ")


def check_flat_file(path: Path, meta: IndexMeta) -> None:
    """The file must be exactly the flat inner-product index its description promises, checked before FAISS reads
    it: FAISS trusts the sizes in the file, and a wrong metric or size would load and serve a wrong index."""
    size = path.stat().st_size
    expected = _FLAT_HEADER.size + 4 * meta.n_items * meta.dim
    with path.open("rb") as handle:
        head = handle.read(_FLAT_HEADER.size)
    problem = None
    if len(head) < _FLAT_HEADER.size:
        problem = f"{size} bytes, shorter than an index header"
    else:
        fourcc, d, ntotal, _, _, _, metric, floats = _FLAT_HEADER.unpack(head)
        if fourcc != b"IxFI" or metric != 0:
            problem = "not a flat inner-product FAISS index"
        elif (d, ntotal, floats) != (meta.dim, meta.n_items, meta.n_items * meta.dim):
            problem = f"its header says {ntotal}x{d} vectors ({floats} numbers), not {meta.n_items}x{meta.dim}"
        elif size != expected:
            problem = f"{size} bytes, not {expected} (truncated or padded)"
    if problem:
        raise IndexCorruptError(f"{path} cannot be read as the index {path.parent / META_FILE} describes ({problem}); "
                                "rebuild it with `recgen index`")

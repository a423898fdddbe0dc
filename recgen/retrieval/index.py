"""Item-embedding FAISS index saved with what it was built from, so a stale index is never used silently."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_dir
from ..errors import IndexCorruptError, IndexStaleError
from ..version import __version__

INDEX_FILE = "items.faiss"
META_FILE = "index.json"


@dataclass
class IndexMeta:
    embedder: str
    catalog_fingerprint: str
    n_items: int
    dim: int
    recgen_version: str = __version__


def make_index(vectors: np.ndarray):
    """Exact inner-product search: right for normalized vectors and catalogs below ~1M items."""
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index


def extended_index(index, vectors: np.ndarray):
    """A copy of ``index`` with ``vectors`` added after its own: ids continue from ``index.ntotal`` (the new
    items' catalog rows). A copy, not the same index, so searches already running see a consistent one."""
    import faiss

    out = faiss.clone_index(index)
    out.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return out


def save_index(folder: str | Path, index, meta: IndexMeta) -> None:
    """Write to a temporary folder and rename it into place: a crash never leaves a half index."""
    import faiss

    with atomic_dir(folder) as tmp:
        faiss.write_index(index, str(tmp / INDEX_FILE))
        (tmp / META_FILE).write_text(json.dumps(meta.__dict__, indent=2))


def load_index(folder: str | Path, expect_fingerprint: str, expect_embedder: str | None = None):
    """Load and check an index folder; raise :class:`IndexStaleError` or :class:`IndexCorruptError`."""
    import faiss

    folder = Path(folder)
    meta_path, index_path = folder / META_FILE, folder / INDEX_FILE
    for path in (meta_path, index_path):
        if not path.is_file():
            raise IndexCorruptError(f"index folder {folder} is missing {path.name}; rebuild it with `recgen index`")
    try:
        meta = IndexMeta(**json.loads(meta_path.read_text()))
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (meta.n_items, meta.dim)):
            raise TypeError("n_items and dim must be whole numbers >= 0")
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
    check_flat_file(index_path, meta)
    try:
        index = faiss.read_index(str(index_path))
    except RuntimeError as exc:
        raise IndexCorruptError(f"{index_path} cannot be read ({exc}); rebuild the index") from None
    if index.ntotal != meta.n_items or index.d != meta.dim:
        raise IndexCorruptError(f"{index_path} holds {index.ntotal}x{index.d} vectors, expected {meta.n_items}x{meta.dim}")
    if index.ntotal and not np.isfinite(index.reconstruct_n(0, index.ntotal)).all():
        raise IndexCorruptError(f"{index_path} holds vectors that are not finite (nan or inf); rebuild the index")
    return index, meta


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

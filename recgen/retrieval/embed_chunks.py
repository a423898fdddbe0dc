"""The catalog embedding in checkpointed chunks, so a fit killed midway keeps what it had embedded.

Why: embedding a 1M-title catalog takes ~25-50 min on 2 cores; a fit killed during it used to start again from the
first title. The titles are embedded ``chunk`` at a time, in catalog order; each finished chunk is written to the
index's work folder (``<index folder>.embedding`` in the cache) as ``chunk-NNNNNN.npy`` (float32) beside a small
manifest ``chunk-NNNNNN.json``: the embedder's identity (model, its files' fingerprint, backend, batch size), the
chunk's row range, a SHA-256 of its titles, and the array file's size and SHA-256. A restart reuses each chunk
whose manifest matches and embeds only the rest; any mismatch (other titles, model or backend, a damaged file)
re-embeds that chunk. Files are written to a temporary name and renamed, the manifest last, so a kill leaves
either a whole chunk or none. Every name is recorded in the folder's marker before recgen first writes it
(:func:`recgen.atomic.claim_files`): :func:`remove_chunks` (called once the index is saved) deletes only those.

A catalog of at most ``chunk`` titles is one chunk: its vectors are exactly those of one whole-catalog call.
Each chunk is one call of the encoder (local, or a cluster's: :class:`~recgen.fit.cluster_embed.ClusterEncoder`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..atomic import file_digest, remove_claimed, write_claimed
from ..config import FitSettings
from ..progress import task

log = logging.getLogger(__name__)

#: the work folder beside an index folder
WORK_SUFFIX = ".embedding"
#: titles per checkpointed chunk by default (the setting ``fit.embed_checkpoint``, where the reason is given)
EMBED_CHUNK: int = FitSettings.model_fields["embed_checkpoint"].default


def work_folder(index_folder: str | Path) -> Path:
    """Where the chunks of the index at ``index_folder`` are kept while it is being built."""
    index_folder = Path(index_folder)
    return index_folder.with_name(index_folder.name + WORK_SUFFIX)


def titles_digest(texts: list[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    return digest.hexdigest()


@dataclass
class EmbeddingReport:
    """What one build did: ``chunks`` in all, ``reused`` from the work folder, ``embedded`` now."""

    chunks: int
    chunk_titles: int
    reused: int = 0
    embedded: int = 0

    def as_json(self) -> dict:
        return {"chunks": self.chunks, "chunk_titles": self.chunk_titles, "reused": self.reused,
                "embedded": self.embedded}


def _names(number: int) -> tuple[str, str]:
    stem = f"chunk-{number:06d}"
    return f"{stem}.npy", f"{stem}.json"


def _reusable(folder: Path, number: int, expected: dict) -> np.ndarray | None:
    """The chunk's vectors when its manifest matches ``expected`` and its array file the recorded size and SHA-256."""
    npy, manifest = (folder / n for n in _names(number))
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or {k: meta.get(k) for k in expected} != expected:
            return None
        if list(file_digest(npy)) != meta.get("file"):
            return None
        vectors = np.load(npy, allow_pickle=False)
    except (OSError, ValueError, TypeError):
        return None
    rows = expected["rows"][1] - expected["rows"][0]
    if vectors.dtype != np.float32 or vectors.ndim != 2 or len(vectors) != rows or not np.isfinite(vectors).all():
        return None
    return vectors


def save_array(path: Path, array: np.ndarray) -> None:
    """``.npy`` to exactly ``path`` (``np.save`` given a name adds ``.npy`` to it)."""
    with path.open("wb") as handle:
        np.save(handle, np.ascontiguousarray(array), allow_pickle=False)


def _write(folder: Path, number: int, vectors: np.ndarray, expected: dict) -> None:
    """The array, then its manifest (with the array's size and SHA-256): each renamed into place when whole."""
    npy, manifest = _names(number)
    what = "catalog embedding chunks"
    size_sha = write_claimed(folder, npy, lambda tmp: save_array(tmp, vectors), what)
    meta = json.dumps({**expected, "file": list(size_sha)})
    write_claimed(folder, manifest, lambda tmp: tmp.write_text(meta, encoding="utf-8"), what)


def embed_in_chunks(texts: list[str], encode: Callable[[list[str]], np.ndarray], identity: dict, chunk: int,
                    folder: Path | None = None) -> tuple[np.ndarray, EmbeddingReport]:
    """``encode`` over ``texts`` ``chunk`` at a time, reusing (and writing) the chunks in ``folder`` when given;
    ``identity`` names the embedder (what a reused chunk's manifest must match besides its rows and titles)."""
    chunk = max(1, int(chunk))
    starts = list(range(0, len(texts), chunk)) or [0]
    report = EmbeddingReport(chunks=len(starts), chunk_titles=chunk)
    parts: list[np.ndarray] = []
    with task(f"catalog embedding ({len(starts)} chunks of up to {chunk:,} titles)", total=len(starts)) as advance:
        for number, start in enumerate(starts):
            part = texts[start:start + chunk]
            expected = {**identity, "rows": [start, start + len(part)], "titles_sha256": titles_digest(part)}
            vectors = _reusable(folder, number, expected) if folder is not None else None
            if vectors is not None:
                report.reused += 1
            else:
                vectors = np.ascontiguousarray(encode(part), dtype=np.float32)
                report.embedded += 1
                if folder is not None and len(starts) > 1:
                    _write(folder, number, vectors, expected)
            parts.append(vectors)
            advance()
    if report.reused:
        log.info("catalog embedding: reused %d of %d chunks from %s, embedded %d", report.reused, report.chunks,
                 folder, report.embedded)
    return (np.concatenate(parts) if len(parts) > 1 else parts[0]), report


def remove_chunks(folder: Path) -> None:
    """Delete the chunk files recgen recorded writing in ``folder`` (the index is saved: they are spent), then the
    folder when nothing else is in it; anything recgen did not write is left where it is."""
    if not remove_claimed(folder):
        log.warning("left %s in place: it holds files recgen did not write", folder)

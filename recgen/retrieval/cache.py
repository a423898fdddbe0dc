"""Where a catalog's retrieval index is cached, and reusing it when it still matches.

One layout for the CLI, batch jobs, the server and evaluation: ``cache_dir()/indexes/<dataset>-<embedder>-
<catalog fingerprint>``, so every entry point that serves a dataset reuses the same index.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..atomic import check_replaceable
from ..config import RetrievalSettings
from ..data.catalog import Catalog
from ..errors import IndexCorruptError, IndexStaleError
from ..paths import cache_dir
from .embed_chunks import EMBED_CHUNK, remove_chunks, work_folder
from .embedder import DEFAULT_EMBEDDER, Encoder, resolve_backend
from .index import saved_vectors
from .retriever import Retriever

log = logging.getLogger(__name__)


def index_folder(dataset_name: str, fingerprint: str, embedder: str | None) -> Path:
    """The cache folder of one dataset's index for one embedder and catalog version."""
    name = (embedder or DEFAULT_EMBEDDER).replace("/", "_")
    return cache_dir() / "indexes" / f"{dataset_name}-{name}-{fingerprint[:12]}"


def load_or_build_index(catalog: Catalog, settings: RetrievalSettings, folder: str | Path,
                        show_progress: bool = False, transitions=None, encode: Encoder | None = None,
                        chunk: int = EMBED_CHUNK) -> Retriever:
    """Reuse a saved index when it matches; rebuild it, with a logged reason, when stale or corrupt (embedding
    with ``encode`` when given, see :meth:`Retriever.build`). The embedding is checkpointed ``chunk`` titles at a
    time in the index's work folder (:mod:`.embed_chunks`): a build killed midway resumes from its last chunk,
    and the chunks are removed once the index is saved."""
    folder = Path(folder)
    work = work_folder(folder)
    if folder.exists():
        try:
            retriever = Retriever.load(folder, catalog, settings, transitions=transitions, current_build=True)
            remove_chunks(work)  # left by a build killed after its save
            return retriever
        except (IndexStaleError, IndexCorruptError) as exc:
            log.warning("rebuilding the index: %s", exc)
        check_replaceable(folder)  # before the (slow) embedding: a folder of someone else's files is refused now
        vectors = saved_vectors(folder, catalog.fingerprint(), settings.embedder or DEFAULT_EMBEDDER,
                                resolve_backend(settings.embed_backend))
        if vectors is not None:
            log.warning("re-indexing the %d saved item vectors (same catalog, embedder and backend): no embedding",
                        len(vectors))
            retriever = Retriever.from_vectors(catalog, vectors, settings, transitions=transitions)
            retriever.save(folder)
            return retriever
    return build_and_save(catalog, settings, folder, show_progress=show_progress, transitions=transitions,
                          encode=encode, chunk=chunk)


def build_and_save(catalog: Catalog, settings: RetrievalSettings, folder: str | Path, *, show_progress: bool = False,
                   transitions=None, encode: Encoder | None = None, chunk: int = EMBED_CHUNK) -> Retriever:
    """Embed the catalog (checkpointed in the folder's work folder: a killed build resumes there), index it, save
    it to ``folder`` and remove the spent chunks."""
    folder = Path(folder)
    work = work_folder(folder)
    retriever = Retriever.build(catalog, settings, show_progress=show_progress, transitions=transitions, encode=encode,
                                chunk=chunk, work=work)
    retriever.save(folder)
    remove_chunks(work)
    return retriever

"""The catalog embedding on a Dask cluster: title chunks mapped to the workers, each worker loading the
sentence-transformer once (``load_embedder`` is cached per process) and returning float32 L2-normalised rows.

The vectors are the local embedding's (same model, same backend, same batch size; only the padding of a batch can
differ, so cosine ≥ 0.9999, checked in ``tests/test_cluster_fit.py``); the index is then built and saved in this
process exactly as after a local embedding, so the fitted folder does not depend on where the titles were embedded.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from ..config import ClusterSettings
from ..progress import task
from ..retrieval.embedder import embed, load_embedder
from .cluster import connect, watch, workers


def embed_chunk(texts: list[str], embedder: str | None, backend: str, batch_size: int) -> np.ndarray:
    """Run on a worker: one chunk of titles, with the worker's (once loaded) model."""
    return embed(load_embedder(embedder, backend), texts, batch_size=batch_size)


class ClusterEncoder:
    """``encode(texts, embedder, backend, batch_size)`` for :meth:`~recgen.retrieval.retriever.Retriever.build`:
    the texts embedded on the cluster at ``settings.address`` in chunks of ``settings.embed_chunk``. ``texts``
    counts what it embedded (0: the index was loaded from the cache, or every checkpointed chunk was reused)."""

    def __init__(self, settings: ClusterSettings) -> None:
        self.settings, self.texts, self.workers = settings, 0, 0

    def __call__(self, texts: list[str], embedder: str | None, backend: str, batch_size: int) -> np.ndarray:
        from distributed import as_completed

        client = connect(self.settings)
        try:
            started_with = workers(client)
            step = self.settings.embed_chunk
            chunks = [texts[i:i + step] for i in range(0, len(texts), step)]

            def run() -> list[np.ndarray]:
                # the settings bound with partial: Client.map has keywords of its own (batch_size among them)
                futures = client.map(partial(embed_chunk, embedder=embedder, backend=backend, batch_size=batch_size),
                                     chunks, pure=False)
                order = {f.key: i for i, f in enumerate(futures)}
                out: list[np.ndarray | None] = [None] * len(chunks)
                with task("catalog embedding on the Dask cluster (titles)", total=len(texts)) as advance:
                    for future, vectors in as_completed(futures, with_results=True):
                        out[order[future.key]] = vectors
                        advance(len(vectors))
                return out  # type: ignore[return-value]

            parts = watch(client, run, "the catalog embedding", expected=started_with)
        finally:
            client.close()
        # called once per checkpointed chunk of the catalog (recgen.retrieval.embed_chunks): the counts add up
        self.texts, self.workers = self.texts + len(texts), max(self.workers, len(started_with))
        dim = parts[0].shape[1] if parts else 0
        return np.concatenate(parts) if parts else np.zeros((0, dim), dtype=np.float32)

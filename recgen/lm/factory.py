"""Choose and load the LM backend that settings ask for (kept apart from the protocol it implements)."""

from __future__ import annotations

from ..config import LMSettings
from .backend import LMBackend
from .scheduler import LMScheduler


def make_backend(settings: LMSettings) -> LMBackend:
    """The transformers backend (the zero-setup default) or vLLM (in-process engine, or a server URL), behind
    the scheduler that merges concurrent callers' prompts into shared backend calls (:mod:`.scheduler`)."""
    return LMScheduler(_load(settings), max_prompts=settings.batch_prompts, max_wait=settings.batch_wait_ms / 1000)


def _load(settings: LMSettings) -> LMBackend:
    if settings.backend == "vllm":
        from .vllm_engine import VLLMBackend

        return VLLMBackend.from_settings(settings)
    from .transformers_backend import TransformersBackend

    return TransformersBackend.from_settings(settings)

"""Choose and load the LM backend that settings ask for (kept apart from the protocol it implements)."""

from __future__ import annotations

from ..config import LMSettings
from .backend import LMBackend
from .cpu_priority import lower_processes
from .scheduler import LMScheduler


def make_backend(settings: LMSettings) -> LMBackend:
    """The transformers backend (the zero-setup default) or vLLM (in-process engine, or a server URL), behind
    the scheduler that merges concurrent callers' prompts into shared backend calls (:mod:`.scheduler`). LM work
    runs ``settings.nice`` lower than requests that need no LM: the scheduler's thread, and the processes an
    in-process engine starts while loading (:mod:`.cpu_priority`)."""
    import psutil

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    backend = _load(settings)
    started = [p.pid for p in psutil.Process().children(recursive=True) if p.pid not in before]
    lower_processes(started, settings.nice)
    return LMScheduler(backend, max_prompts=settings.batch_prompts, max_wait=settings.batch_wait_ms / 1000,
                       nice=settings.nice)


def _load(settings: LMSettings) -> LMBackend:
    if settings.backend == "vllm":
        from .vllm_engine import VLLMBackend

        return VLLMBackend.from_settings(settings)
    from .transformers_backend import TransformersBackend

    return TransformersBackend.from_settings(settings)

"""What the ranker needs from a language model; transformers and vLLM each implement it."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..ranking.prompts import ChatPrompt


@runtime_checkable
class LMBackend(Protocol):
    """Three operations, all batched: label scores, a constrained label list, and free text."""

    name: str

    def score_labels(self, prompts: list[ChatPrompt], labels: list[list[str]]) -> list[list[float]]:
        """For each prompt, the next-token log-probability of each of its single-token labels."""

    def generate_labels(self, prompts: list[ChatPrompt], labels: list[list[str]], k: list[int]) -> list[list[str]]:
        """For each prompt, ``k`` distinct labels written by the model, each constrained to its label set."""

    def generate_text(self, prompts: list[ChatPrompt], max_new_tokens: int) -> list[str]:
        """Greedy continuations, stopped at the first newline or end of turn."""

    def count_tokens(self, prompt: ChatPrompt) -> int:
        """Prompt length in tokens, as the model sees it (chat template applied)."""


def make_backend(config) -> LMBackend:
    """Build the backend a :class:`~recgen.config.RecgenConfig` asks for."""
    if config.backend == "vllm":
        from .vllm_backend import VLLMBackend

        return VLLMBackend.from_config(config)
    from .transformers_backend import TransformersBackend

    return TransformersBackend.from_config(config)

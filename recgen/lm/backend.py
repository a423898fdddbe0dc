"""What the ranker needs from a language model; transformers and vLLM each implement it."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..errors import ModelLoadError
from .prompt import ChatPrompt


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


class ChatTokenizing:
    """Prompt rendering and label lookup shared by backends that hold a Hugging Face ``tokenizer``."""

    tokenizer = None
    _label_cache: dict[str, int]

    def render(self, prompt: ChatPrompt) -> str:
        text = self.tokenizer.apply_chat_template(prompt.messages, tokenize=False, add_generation_prompt=True)
        return text + prompt.response_prefix

    def encode(self, prompt: ChatPrompt) -> list[int]:
        return self.tokenizer(self.render(prompt), add_special_tokens=False)["input_ids"]

    def count_tokens(self, prompt: ChatPrompt) -> int:
        return len(self.encode(prompt))

    def label_id(self, label: str) -> int:
        """The single token of a candidate label; a label of several tokens cannot be scored in one pass."""
        cache = self.__dict__.setdefault("_label_cache", {})
        if label not in cache:
            ids = self.tokenizer(label, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                raise ModelLoadError(f"label {label!r} is {len(ids)} tokens for this tokenizer; labels must be one token")
            cache[label] = ids[0]
        return cache[label]

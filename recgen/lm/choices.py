"""Decoding that writes exactly one of a prompt's sentences (a :class:`.constraint.Choice`), token by token.

The transformers form of vLLM's ``structured_outputs={"choice": [...]}``: a trie over each choice's tokens; at
every step only the tokens that continue some choice are allowed, and a row is finished once it has written a
whole choice. Greedy decoding then picks, at each branching point, the continuation the model prefers.
"""

from __future__ import annotations

from .constraint import Choice
from .prompt import ChatPrompt

#: Sentences per prompt at most (a grammar of a reason has a few dozen).
MAX_CHOICES = 256


def choices_of(prompt: ChatPrompt) -> list[str] | None:
    """The sentences a prompt may be answered with, or None: not a choice prompt."""
    choice = prompt.constraint
    return list(choice.options)[:MAX_CHOICES] if isinstance(choice, Choice) else None


class ChoiceTrie:
    """The token sequences of a prompt's choices. ``allowed(written)`` = the next tokens that keep ``written``
    on some choice; ``complete(written)`` = ``written`` is a whole choice."""

    def __init__(self, sequences: list[list[int]]):
        self.root: dict = {}
        for ids in sequences:
            if not ids:
                continue
            node = self.root
            for token in ids:
                node = node.setdefault(token, {})
            node[None] = True  # a choice ends here

    @classmethod
    def for_choices(cls, tokenizer, choices: list[str]) -> "ChoiceTrie":
        return cls([tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices])

    def _node(self, written: list[int]) -> dict | None:
        node = self.root
        for token in written:
            node = node.get(token)
            if node is None:
                return None
        return node

    def allowed(self, written: list[int]) -> list[int]:
        node = self._node(written)
        return [t for t in node if t is not None] if node else []

    def complete(self, written: list[int]) -> bool:
        node = self._node(written)
        return bool(node and node.get(None))

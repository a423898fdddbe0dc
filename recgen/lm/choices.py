"""Decoding that writes exactly one of a prompt's sentences (a :class:`.constraint.Choice`).

A trie over each choice's tokens: only the tokens that continue some choice are allowed, and a row is finished
once it has written a whole choice with nothing after it. Greedy decoding then picks, at each branching point,
the continuation the model prefers. At most nodes only one token continues any choice, so greedy's pick there
does not depend on the model: **jump-forward decoding** (SGLang's compressed FSM) asks the model only at
branching nodes and appends each forced run of tokens in one step (:meth:`ChoiceTrie.forced`), which writes the
same sentence in a fraction of the model steps (:meth:`ChoiceTrie.steps`).
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

    def finished(self, written: list[int]) -> bool:
        """``written`` is a whole choice that no longer choice continues (a choice that is the start of another
        is not an end: the row goes on, as the transformers trie always did; vLLM's choice grammar could stop
        there, but the reasons' sentences all end in "." so none starts another)."""
        node = self._node(written)
        return bool(node and node.get(None)) and len(node) == 1

    def forced(self, written: list[int]) -> list[int]:
        """The tokens that must follow ``written`` whatever the model prefers: the run of nodes with exactly one
        continuing token (empty at a branching node, at an end, or off the trie)."""
        node, run = self._node(written), []
        while node:
            children = [t for t in node if t is not None]
            if len(children) != 1:
                break
            run.append(children[0])
            node = node[children[0]]
        return run

    def steps(self, sequence: list[int]) -> tuple[int, int]:
        """Model steps (forward passes, the prompt's prefill included) that write ``sequence``: token by token
        (one per token), and jumping forward (the prefill, then one per branching node after the first token)."""
        node, asked = self.root, 0
        for n, token in enumerate(sequence):
            if n and node is not None and sum(t is not None for t in node) > 1:
                asked += 1
            node = node.get(token) if node is not None else None
        return len(sequence), 1 + asked

"""Real grammar-reason prompts (``prompt.reasons: grammar``, what the server writes) for the jump-forward tests:
the prompts the reasoner hands its backend, captured, and the comparison of two backends' sentences on them."""

from __future__ import annotations

from recgen.config import PromptSettings


class _Capture:
    """A backend that keeps the reasoner's prompts and writes nothing (the reasoner then falls back)."""

    name = "capture"

    def __init__(self):
        self.calls: list = []

    def generate_text(self, prompts, max_new_tokens):
        self.calls.append((prompts, max_new_tokens))
        return [""] * len(prompts)


def grammar_prompts(dataset, users: int, items: int) -> tuple[list[list], int]:
    """One batch of ``items`` reason prompts (one list: popular items the user has not had) per user, for the first
    ``users`` users, and the reasons' token budget."""
    from recgen.reasons.reasoner import Reasoner

    capture = _Capture()
    reasoner = Reasoner(dataset.catalog, capture, PromptSettings(reasons="grammar"))
    popular = dataset.popularity()
    for user in sorted(dataset.sequences)[:users]:
        seq = dataset.sequences[user]
        reasoner.explain(seq[:-1], None, [i for i in popular if i not in set(seq)][:items])
    return [prompts for prompts, _ in capture.calls], capture.calls[0][1]


def trie_steps(tokenizer, prompts, sentences: list[str]) -> tuple[int, int]:
    """Model steps (forward passes / engine rounds, prefill included) that write these sentences token by token
    and jumping forward, summed over the prompts (each sentence's trie is its prompt's choices)."""
    from recgen.lm.choices import ChoiceTrie, choices_of

    before = after = 0
    for prompt, sentence in zip(prompts, sentences):
        choices = choices_of(prompt)
        trie = ChoiceTrie.for_choices(tokenizer, choices)
        written = next(c for c in choices if c.strip() == sentence)  # (the answer is stripped of its space)
        steps = trie.steps(tokenizer(written, add_special_tokens=False)["input_ids"])
        before, after = before + steps[0], after + steps[1]
    return before, after

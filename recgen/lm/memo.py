"""A backend wrapper that remembers label scores per prompt, so the same users can be re-ranked many times
(for example under each ``retrieval_prior`` of a calibration grid) while the LM runs once per prompt."""

from __future__ import annotations

import json

from .prompt import ChatPrompt


def _key(prompt: ChatPrompt, labels: list[str]) -> str:
    """The prompt as the LM sees it, and a named adapter it runs under (the same text scores differently per
    adapter). Without one the key is as before adapters were typed: memo files on disk (:mod:`recgen.ranking.
    fusion.lm_features`) keep their keys."""
    key = [prompt.messages, prompt.response_prefix, list(labels)]
    return json.dumps(key if prompt.adapter is None else [*key, prompt.adapter])


class ScoreMemo:
    """Wraps an :class:`~recgen.lm.backend.LMBackend`; ``score_labels`` is memoized, the rest passes through."""

    def __init__(self, backend):
        self.backend = backend
        self.name = getattr(backend, "name", "memo")
        self._scores: dict[str, list[float]] = {}
        self.calls = 0  # prompts actually sent to the LM

    def score_labels(self, prompts: list[ChatPrompt], labels: list[list[str]]) -> list[list[float]]:
        keys = [_key(p, ls) for p, ls in zip(prompts, labels)]
        todo = [n for n, key in enumerate(keys) if key not in self._scores]
        if todo:
            fresh = self.backend.score_labels([prompts[n] for n in todo], [labels[n] for n in todo])
            for n, row in zip(todo, fresh):
                self._scores[keys[n]] = [float(x) for x in row]
            self.calls += len(todo)
        return [list(self._scores[key]) for key in keys]

    def generate_labels(self, prompts, labels, k):
        return self.backend.generate_labels(prompts, labels, k)

    def generate_text(self, prompts, max_new_tokens):
        return self.backend.generate_text(prompts, max_new_tokens)

    def count_tokens(self, prompt):
        return self.backend.count_tokens(prompt)

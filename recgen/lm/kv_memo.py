"""The KV cache of recent prompt prefixes, kept between calls of the transformers backend.

Every grammar reason prompt starts with the same system prompt and worked example (:mod:`recgen.reasons.prompts`;
only the example's answer differs between users), ~100 tokens that each list's prefix pass would otherwise run
again. Keys are causal, so the KV of a stored prefix cut to any shorter length is the KV of that shorter prefix:
a new call reuses the longest start its prefixes share with one stored entry and runs only the rest (vLLM's
prefix caching does the same, by blocks). Only for a model whose weights do not change (serving, not training).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch

#: Stored prefixes at most (each ~45 KB a token for SmolLM2-135M in float32: ~6 MB for a 140-token prefix).
MEMO_ENTRIES = 8
#: Fewest shared tokens worth a copy instead of a forward pass.
MIN_REUSE = 8


def common_prefix_length(a, b) -> int:
    length = min(len(a), len(b))
    for i in range(length):
        if a[i] != b[i]:
            return i
    return length


class PrefixMemo:
    """``(adapter, tokens) → per-layer (keys, values)`` of batch 1, the most recently used ``entries`` kept.
    The adapter is part of the key: the same tokens give other KV under another LoRA adapter."""

    def __init__(self, entries: int = MEMO_ENTRIES, min_reuse: int = MIN_REUSE):
        self.entries, self.min_reuse = entries, min_reuse
        self._store: OrderedDict[tuple, list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()
        self._lock = threading.Lock()
        #: prefix tokens taken from the memo / run by the model, over the memo's life (what it saves)
        self.reused_tokens = 0
        self.run_tokens = 0

    def lookup(self, adapter: str | None, heads: list[list[int]]) -> tuple[int, list[tuple[torch.Tensor, torch.Tensor]]]:
        """The longest start ``n`` that every head shares with one stored prefix, and that prefix's KV cut to
        ``n`` tokens; ``(0, [])`` when none shares at least ``min_reuse`` tokens."""
        best, layers = 0, []
        with self._lock:
            for (name, tokens), kv in self._store.items():
                if name != adapter:
                    continue
                shared = min(common_prefix_length(tokens, head) for head in heads)
                if shared > best:
                    best, layers, key = shared, kv, (name, tokens)
            if best < self.min_reuse:
                return 0, []
            self._store.move_to_end(key)
        return best, [(k[:, :, :best], v[:, :, :best]) for k, v in layers]

    def store(self, adapter: str | None, tokens: list[int], layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Keep ``tokens``' KV (per layer, batch 1, one position a token), dropping the least recently used."""
        key = (adapter, tuple(tokens))
        with self._lock:
            self._store[key] = [(k.detach().clone(), v.detach().clone()) for k, v in layers]
            self._store.move_to_end(key)
            while len(self._store) > self.entries:
                self._store.popitem(last=False)

    def __len__(self) -> int:
        return len(self._store)

"""The transformers backend's constrained decoding: :class:`AllowedTokensProcessor`, a ``LogitsProcessor`` over
:class:`.constrained.AllowedTokens` ids and the :class:`.constrained.WordVocabulary` word check.

Its own module because it needs torch and transformers, which the rest of :mod:`.constrained` (imported by the
reasons layer, hence by every CLI call) does not.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from .constrained import SECOND_CHANCE, WordVocabulary


class AllowedTokensProcessor(LogitsProcessor):
    """Masks, row by row, every logit outside that row's allowed ids (None = the row is free). With
    ``vocabularies`` and ``token_text`` (id → text) it also applies the word-level check
    (:class:`WordVocabulary`) to the text written so far (``input_ids`` = the generated tokens), for greedy
    decoding: only the best-scoring token that passes stays in the row."""

    def __init__(self, allowed: list[list[int] | None], vocabularies: list[WordVocabulary | None] | None = None,
                 token_text=None, stop_ids: set[int] | None = None):
        self.allowed = allowed
        self.vocabularies = vocabularies or [None] * len(allowed)
        self.token_text = token_text
        self.stop_ids = stop_ids or set()
        self._mask: torch.Tensor | None = None

    def mask(self, vocab_size: int, device) -> torch.Tensor:
        if self._mask is None or self._mask.shape[1] != vocab_size:
            mask = torch.zeros((len(self.allowed), vocab_size), dtype=torch.bool, device=device)
            for row, ids in enumerate(self.allowed):
                if ids is None:
                    mask[row] = True
                else:
                    mask[row, torch.tensor([i for i in ids if i < vocab_size], dtype=torch.long, device=device)] = True
            self._mask = mask
        return self._mask

    def __call__(self, input_ids: torch.LongTensor | None, scores: torch.FloatTensor) -> torch.FloatTensor:
        masked = scores.masked_fill(~self.mask(scores.shape[-1], scores.device), float("-inf"))
        if self.token_text is None or input_ids is None:
            return masked
        for row, words in enumerate(self.vocabularies):
            if words is not None:
                written = input_ids[row].tolist()
                best = self._best_word_token(masked[row], written, words)
                if best is None:  # the allowed ids spell words one way; a title or word begun another way
                    best = self._best_word_token(scores[row], written, words, SECOND_CHANCE)  # ("La"+"cquer")
                masked[row] = best if best is not None else self._stop(masked[row])
        return masked

    def sentence_done(self, row: int, written: list[int]) -> bool:
        """Whether a constrained row just ended a sentence ("." "!" "?" outside a title it is writing)."""
        words = self.vocabularies[row]
        if words is None or self.token_text is None or not written:
            return False
        text = "".join(self.token_text(t) for t in written).rstrip()
        return text[-1:] in (".", "!", "?") and not words.inside_phrase(text)

    def _best_word_token(self, row: torch.Tensor, written: list[int], words: WordVocabulary,
                         limit: int | None = None) -> torch.Tensor | None:
        """Greedy decoding needs only the best token that passes the word check: candidates are tried from the
        highest score down (usually one or two), and every other token of the row is masked. None: no
        candidate (of the best ``limit``) passes."""
        text = "".join(self.token_text(t) for t in written)
        finite = int(torch.isfinite(row).sum())
        if limit is not None:
            finite = min(finite, limit)
        for size in (min(finite, 32), finite):  # the best 32 almost always hold one that passes; else all
            for token_id in torch.topk(row, size).indices.tolist():
                ok = words.can_stop(text) if token_id in self.stop_ids else words.accepts(text, self.token_text(token_id))
                if ok:
                    out = torch.full_like(row, float("-inf"))
                    out[token_id] = row[token_id]
                    return out
        return None

    def _stop(self, row: torch.Tensor) -> torch.Tensor:
        """Nothing fits: end the answer (the reasoner then serves its fact-built sentence)."""
        stop = next(iter(self.stop_ids & set(range(row.shape[0]))), None)
        out = torch.full_like(row, float("-inf"))
        if stop is not None:
            out[stop] = 0.0
        return out

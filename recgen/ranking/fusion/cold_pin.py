"""Cold items keep the place text retrieval gives them in the fused order.

The ranker learns from validation targets, which almost never are items without a training interaction, so it
ranks such an item by signals it does not have (popularity 0, no co-occurrence) and pushes it below warm items:
measured on the cold-item protocol, the fused order found fewer cold targets than text retrieval alone. Pinning
each cold candidate that text ranks within ``depth`` at that text rank (warm candidates fill the other places in
the ranker's order) guarantees the fused top ``k`` holds every cold item text's top ``k`` holds, for ``k`` up to
``depth``; the fit layer chooses ``depth`` on held-out users (0 turns it off).
"""

from __future__ import annotations

import numpy as np

#: Pin depths tried by the fit (0 = off): the deepest one that costs the held-out users nothing is kept.
PIN_DEPTHS = (0, 10, 20)


def pin_cold(score: np.ndarray, text_rank: np.ndarray, cold: np.ndarray, depth: int) -> np.ndarray:
    """Scores whose descending order puts each cold row with ``text_rank <= depth`` at position ``text_rank``
    (1-based; earlier when fewer rows come before it) and the other rows in ``score`` order; ``score`` unchanged
    when no row is pinned."""
    pinned = np.flatnonzero(cold & (text_rank <= depth)) if depth > 0 else np.zeros(0, dtype=np.int64)
    if not len(pinned):
        return score
    pinned = pinned[np.argsort(text_rank[pinned], kind="stable")]
    rest = np.setdiff1d(np.arange(len(score)), pinned)
    rest = rest[np.argsort(-score[rest], kind="stable")]
    order, p, r = [], 0, 0
    while p < len(pinned) or r < len(rest):
        if p < len(pinned) and (text_rank[pinned[p]] <= len(order) + 1 or r == len(rest)):
            order.append(pinned[p])
            p += 1
        else:
            order.append(rest[r])
            r += 1
    out = np.empty(len(score), dtype=np.float64)
    out[np.asarray(order)] = np.arange(len(order), 0, -1, dtype=np.float64)
    return out

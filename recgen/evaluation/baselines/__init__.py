"""Baseline systems for offline evaluation, by name.

Vectorized scorers (all items scored for a batch of users): ``popular``, ``itemknn``, ``retrieval``,
``sasrec``. Two-stage list system (one user at a time through the public API): ``lm-zeroshot``.
"""

from __future__ import annotations

from typing import Any

SYSTEMS = ("popular", "itemknn", "retrieval", "sasrec", "lm-zeroshot")
LIST_SYSTEMS = ("lm-zeroshot",)


def make_system(name: str, params: dict[str, Any] | None = None):
    """A fresh, unfitted system; ``params`` are its constructor keywords (unknown ones are an error)."""
    params = dict(params or {})
    if name == "popular":
        from .popular import MostPopular

        if params:
            raise ValueError(f"popular takes no parameters (got {', '.join(params)})")
        return MostPopular()
    if name == "itemknn":
        from .itemknn import ItemKNN

        return ItemKNN(**params)
    if name == "retrieval":
        from .retrieval import RetrievalOnly

        return RetrievalOnly(**params)
    if name == "sasrec":
        from .sasrec import SASRecBaseline

        return SASRecBaseline(**params)
    if name == "lm-zeroshot":
        from .lm import LMZeroShot

        return LMZeroShot(**params)
    raise ValueError(f"unknown system {name!r}; choose one of {', '.join(SYSTEMS)}")

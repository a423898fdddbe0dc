"""The systems the harness evaluates, by name: a registry (a dict), not an if-chain.

Every system has one contract: ``fit(data, log=None)`` on the training part of every sequence, then either
``score(histories)`` (a vectorized scorer over all items) or ``recommend_many(histories)`` /
``candidates_many(histories)`` (a two-stage list system), and ``params()`` for the run file.
"""

from __future__ import annotations

import importlib
from typing import Any

#: name → "module:Class" under this package (imported on use: ``popular`` never loads torch).
SYSTEMS: dict[str, str] = {
    "popular": "popular:MostPopular",
    "itemknn": "itemknn:ItemKNN",
    "retrieval": "retrieval:RetrievalSystem",
    "sasrec": "sasrec:SASRecBaseline",
    "lm": "lm:LMSystem",
    "fusion": "fusion:FusionSystem",
}

#: Systems whose cost makes a validation grid search impractical here (tune them with `eval run --stage valid`).
NOT_FOR_GRIDS = ("sasrec", "lm", "fusion")


def system_class(name: str):
    try:
        module, cls = SYSTEMS[name].split(":")
    except KeyError:
        raise ValueError(f"unknown system {name!r}; choose one of {', '.join(SYSTEMS)}") from None
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def make_system(name: str, params: dict[str, Any] | None = None):
    """A fresh, unfitted system; ``params`` are its constructor keywords (unknown ones are an error)."""
    cls = system_class(name)
    try:
        return cls(**dict(params or {}))
    except TypeError as exc:  # an unknown keyword: say which system and which parameter
        raise ValueError(f"bad parameters for {name}: {exc}") from None


def is_list_system(system) -> bool:
    """Two-stage systems return lists one user at a time; scorers return a full score matrix."""
    return hasattr(system, "recommend_many") or hasattr(system, "recommend")

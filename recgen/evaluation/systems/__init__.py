"""The systems the harness evaluates, by name: a registry (a dict), not an if-chain.

Every system has one contract: ``fit(data, log=None)`` on the training part of every sequence, then either
``score(histories)`` (a vectorized scorer over all items) or ``recommend_many(histories)`` /
``candidates_many(histories)`` (a two-stage list system), and ``params()`` for the run file.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Entry:
    """Where a system lives ("module:Class" under this package, imported on use) and its one-line help."""

    target: str
    help: str = ""


#: name → entry; ``popular`` never loads torch. The CLI's help lists this registry (``systems_help``).
SYSTEMS: dict[str, Entry] = {
    "popular": Entry("popular:MostPopular", "most popular items"),
    "itemknn": Entry("itemknn:ItemKNN", "item-to-item co-occurrence"),
    "retrieval": Entry("retrieval:RetrievalSystem", "the served hybrid retrieval; -p collaborative_weight=0 = text only"),
    "sasrec": Entry("sasrec:SASRecBaseline", "self-attentive sequential model"),
    "lm": Entry("lm:LMSystem", "LM ranking of retrieved candidates; -p adapter=<folder> for a LoRA ranker"),
    "fusion": Entry("fusion:FusionSystem", "the served default: LightGBM over the sources; reuses `recgen fit`'s "
                    "evaluation-split fit when it matches"),
}

#: Systems whose cost makes a validation grid search impractical here (tune them with `eval run --stage valid`).
NOT_FOR_GRIDS = ("sasrec", "lm", "fusion")


def system_class(name: str):
    try:
        module, cls = SYSTEMS[name].target.split(":")
    except KeyError:
        raise ValueError(f"unknown system {name!r}; choose one of {', '.join(SYSTEMS)}") from None
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def systems_help(names=None) -> str:
    """``name (help) | ...`` for ``names`` (default: every registered system)."""
    return " | ".join(f"{n} ({SYSTEMS[n].help})" if SYSTEMS[n].help else n for n in (names or SYSTEMS))


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

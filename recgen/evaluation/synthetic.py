"""Small synthetic datasets made by recgen itself, for tests and examples (no third-party data)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..data import Catalog, Dataset, Item


def chain_dataset(n_items: int = 40, n_users: int = 120, length: int = 8, seed: int = 0, short_users: int = 0,
                  name: str = "synthetic-chain") -> Dataset:
    """Every user walks the item ring ``i_s, i_{s+1}, ...`` from a random start: the next item is always the
    last item + 1, an obvious sequential pattern. ``short_users`` extra users have only 2 interactions."""
    rng = np.random.default_rng(seed)
    catalog = Catalog([Item(f"i{k}", f"Synthetic item number {k}", ("ring",)) for k in range(n_items)])
    sequences = {}
    for u in range(n_users):
        start = int(rng.integers(n_items))
        sequences[f"u{u}"] = [f"i{(start + t) % n_items}" for t in range(length)]
    for u in range(short_users):
        sequences[f"short{u}"] = ["i0", "i1"]
    return Dataset(name, catalog, sequences)


def write_generic(dataset: Dataset, folder: str | Path) -> Path:
    """Write ``items.jsonl`` + ``interactions.csv`` (recgen's generic format) so ``load_dataset(folder)`` reads it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "items.jsonl").write_text(dataset.catalog.to_jsonl(), encoding="utf-8")
    with (folder / "interactions.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user", "item", "timestamp"])
        for user, seq in dataset.sequences.items():
            for t, item in enumerate(seq):
                writer.writerow([user, item, t])
    return folder

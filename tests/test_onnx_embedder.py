"""The ONNX embedding backends (issue 24) give the torch model's embeddings: onnx to float precision, onnx-int8
at the measured distance; the export is cached with a manifest and a changed file is
never handed to onnxruntime."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from recgen.retrieval.embedder import embed, load_embedder, resolve_embedder  # noqa: E402
from recgen.retrieval.onnx_embedder import MANIFEST, _valid, export_folder, source_fingerprint  # noqa: E402

TEXTS = ["Toy Story (1995) | Animation, Children's, Comedy", "a", "Olay Regenerist Micro-Sculpting Cream 1.7 oz",
         "GoldenEye (1995) | Action, Adventure, Thriller", "a 90s comedy about friends", "Heat (1995) | Action",
         "L'Oreal Paris Voluminous Mascara, Black Brown " * 8, "nail polish remover", "Star Wars (1977)", "é ü ñ 東京"]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def torch_vectors():
    return embed(load_embedder(None, "torch"), TEXTS, batch_size=4)


def test_onnx_matches_torch(torch_vectors):
    vectors = embed(load_embedder(None, "onnx"), TEXTS, batch_size=4)
    assert vectors.dtype == np.float32 and vectors.shape == torch_vectors.shape
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert (vectors * torch_vectors).sum(axis=1).min() > 0.9999


def test_onnx_int8_stays_close_to_torch(torch_vectors):
    vectors = embed(load_embedder(None, "onnx-int8"), TEXTS, batch_size=3)
    cosine = (vectors * torch_vectors).sum(axis=1)
    # int8 moves embeddings measurably (2,000 Beauty titles: cosine to torch mean 0.957, min 0.895,
    # eval/results/scale/embed_speed.json); this pins that level, the retrieval metrics judge it
    assert cosine.mean() > 0.94 and cosine.min() > 0.85


def test_a_changed_export_fails_its_manifest(tmp_path):
    path = resolve_embedder(None)
    load_embedder(None, "onnx-int8")
    folder = export_folder(path, quantized=True)
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    fingerprint = source_fingerprint(path)
    assert _valid(copy, fingerprint) is not None
    onnx_file = copy / "model_int8.onnx"
    raw = bytearray(onnx_file.read_bytes())
    raw[len(raw) // 2] ^= 1
    onnx_file.write_bytes(bytes(raw))
    assert _valid(copy, fingerprint) is None
    (copy / MANIFEST).write_text("{")
    assert _valid(copy, fingerprint) is None


def test_the_export_writes_nothing_on_stdout(tmp_path, monkeypatch, capfd):
    """`recgen fit --json` writes its summary on stdout; torch's exporter reports its steps there (a first fit
    with the onnx backend printed them before the JSON, which no parser then read)."""
    from recgen.retrieval.onnx_embedder import export

    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path))  # a fresh cache: the export runs
    path = resolve_embedder(None)
    model = load_embedder(None, "torch")
    capfd.readouterr()
    folder = export(model, path, quantized=False)
    captured = capfd.readouterr()
    assert folder.is_relative_to(tmp_path) and (folder / "model.onnx").is_file()
    assert captured.out == "" and "torch.onnx" in captured.err

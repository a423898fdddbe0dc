"""The catalog encoder exported to ONNX (optionally int8 dynamic-quantised) and run by onnxruntime on all cores.

sentence-transformers' own ONNX backend needs optimum-onnx, which pins transformers < 4.58 and would replace the
transformers this project runs; so the model's transformer is exported here with torch's exporter and quantised
with onnxruntime's ``quantize_dynamic``; mean pooling and normalisation match the model's sentence-transformers
modules. The export is done once and cached under ``cache_dir()/embedders/`` with a manifest (source fingerprint,
file sizes and SHA-256); a file that does not match its manifest is re-exported, never parsed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from ..atomic import atomic_dir, file_digest
from ..errors import ModelLoadError
from ..paths import cache_dir

MANIFEST = "manifest.json"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def source_fingerprint(model_path: str) -> str:
    """SHA-256 over the model folder's files (names and contents), or over the name for a hub model."""
    folder = Path(model_path)
    digest = hashlib.sha256()
    if not folder.is_dir():
        digest.update(model_path.encode())
        return digest.hexdigest()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(file_digest(path)[1].encode())
    return digest.hexdigest()


def export_folder(model_path: str, quantized: bool) -> Path:
    name = Path(model_path).name if Path(model_path).is_dir() else model_path.replace("/", "_")
    if name == "model":
        name = Path(model_path).parent.name
    tag = "onnx-int8" if quantized else "onnx"
    return cache_dir() / "embedders" / f"{name}-{tag}-{source_fingerprint(model_path)[:12]}"


def _valid(folder: Path, fingerprint: str) -> dict | None:
    """The manifest when every file it lists has its recorded size and SHA-256; None otherwise."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        if manifest.get("source_fingerprint") != fingerprint:
            return None
        for name, (size, sha) in manifest["files"].items():
            if file_digest(folder / name) != (size, sha):
                return None
        return manifest
    except (OSError, ValueError, KeyError, TypeError):
        return None


def export(st_model, model_path: str, quantized: bool) -> Path:
    """Export (once) the sentence-transformers model's transformer to ONNX, int8-quantised if asked."""
    import torch

    folder = export_folder(model_path, quantized)
    fingerprint = source_fingerprint(model_path)
    if _valid(folder, fingerprint) is not None:
        return folder
    transformer = st_model[0].auto_model.eval()

    class Encoder(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    sample = st_model.tokenizer(["a title", "a somewhat longer title of an item"], padding=True, return_tensors="pt")
    shapes = {k: {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq")} for k in INPUTS}
    # torch's exporter reports its steps on stdout, where `recgen fit --json` writes its summary: to stderr
    with atomic_dir(folder) as tmp, contextlib.redirect_stdout(sys.stderr):
        plain = tmp / "model.onnx"
        torch.onnx.export(Encoder(transformer), tuple(sample[k] for k in INPUTS), str(plain), input_names=list(INPUTS),
                          output_names=["last_hidden_state"], dynamic_shapes=shapes, dynamo=True,
                          external_data=False)
        files = ["model.onnx"]
        if quantized:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(plain), str(tmp / "model_int8.onnx"), weight_type=QuantType.QInt8)
            plain.unlink()
            files = ["model_int8.onnx"]
        manifest = {"source": Path(model_path).name, "source_fingerprint": fingerprint, "quantized": quantized,
                    "torch": torch.__version__, "files": {f: list(file_digest(tmp / f)) for f in files}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return folder


class OnnxEncoder:
    """``encode`` like sentence-transformers' (the subset recgen uses), on onnxruntime: texts sorted by token
    length so each batch pads little, mean pooling over the attention mask, L2 normalisation."""

    def __init__(self, st_model, model_path: str, quantized: bool):
        import onnxruntime as ort

        folder = export(st_model, model_path, quantized)
        manifest = _valid(folder, source_fingerprint(model_path))
        if manifest is None:
            raise ModelLoadError(f"the exported model in {folder} does not match its manifest; delete the folder")
        options = ort.SessionOptions()
        options.intra_op_num_threads = len(os.sched_getaffinity(0))
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        onnx_file = folder / next(iter(manifest["files"]))
        self.session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        self.tokenizer = st_model.tokenizer
        self.max_length = st_model.max_seq_length
        pooling = st_model[1]
        if getattr(pooling, "pooling_mode", "mean") != "mean" and not getattr(pooling, "pooling_mode_mean_tokens", False):
            raise ModelLoadError("the ONNX embedder supports mean pooling only; use embed_backend=torch")
        self.backend = "onnx-int8" if quantized else "onnx"

    def encode(self, texts, batch_size: int = 64, show_progress_bar: bool = False, convert_to_numpy: bool = True,
               normalize_embeddings: bool = True) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        lengths = [len(ids) for ids in self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]]
        order = np.argsort(lengths, kind="stable")
        out = np.zeros((len(texts), self.session.get_outputs()[0].shape[-1] or 384), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            batch = self.tokenizer([texts[r] for r in rows], padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="np")
            feed = {k: batch[k].astype(np.int64) for k in INPUTS if k in batch}
            if "token_type_ids" not in feed:
                feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
            hidden = self.session.run(None, feed)[0]
            mask = feed["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
            if normalize_embeddings:
                pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
            out[rows] = pooled
        return out

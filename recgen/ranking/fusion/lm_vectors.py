"""The causal LM's own representation of each catalog item: its mean-pooled last hidden state over the title.

Computed offline, once per item, and cached under ``cache_dir()/item-lm/<model>``: one npz (item keys and
float32 vectors, L2-normalised; no pickle) in a manifest-checked folder. An item's key is a digest of the text
the LM read, so a catalog update (new items, an edited title) computes only the items whose key is not cached
and re-saves the union; a damaged folder is recomputed, never trusted. Any causal LM transformers loads works
(``LMSettings.model``): a bigger one just gives vectors of another width, and the ranker is refitted on them.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from ...atomic import atomic_dir, verify_folder
from ...config import LMSettings
from ...data.catalog import Catalog, Item
from ...errors import RecgenError
from ...paths import cache_dir
from ...progress import task

_VECTORS = "vectors.npz"
#: items per forward pass: titles are short (Beauty: ~20 tokens), so a batch is a few MB of activations
BATCH = 64
#: a title longer than this is cut (its head names the item)
MAX_TOKENS = 32


def lm_text(item: Item) -> str:
    """What the LM reads for an item: its title only (the item's name is what the LM may know something about;
    the genres are already features, and every token costs ~2 x parameters FLOPs: measured 1 s per Beauty-length
    title for SmolLM2-135M on this 2-core machine at load ~19)."""
    return item.title


def item_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def vectors_folder(settings: LMSettings) -> Path:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", settings.model or "smollm2-135m-instruct").strip("_")[-80:]
    return cache_dir() / "item-lm" / name


def lm_item_vectors(catalog: Catalog, settings: LMSettings | None = None, log=None) -> np.ndarray:
    """[n_items, hidden] float32 unit vectors in catalog order; only items not cached are run through the LM."""
    settings = settings or LMSettings()
    folder = vectors_folder(settings)
    cached = _load(folder, log)
    keys = [item_key(lm_text(item)) for item in catalog]
    missing = [k for k in dict.fromkeys(keys) if k not in cached]
    if missing:
        texts = {item_key(lm_text(item)): lm_text(item) for item in catalog}
        fresh = _pooled(settings, [texts[k] for k in missing])
        cached.update(zip(missing, fresh))
        _save(folder, cached)
        if log:
            log(f"LM item vectors: {len(missing)} of {len(keys)} items computed ({folder}); the rest were cached")
    return np.stack([cached[k] for k in keys]).astype(np.float32)


def _pooled(settings: LMSettings, texts: list[str]) -> np.ndarray:
    """Mean of the last hidden state over each text's tokens (the decoder without its LM head), unit length."""
    import torch

    from ...lm.transformers_backend import TransformersBackend

    backend = TransformersBackend.from_settings(settings)
    model, tokenizer = backend.model, backend.tokenizer
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model
    tokenizer.padding_side = "right"
    # batches of similar length: padding would otherwise be most of the compute
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = []
    with task("LM item vectors (items)", total=len(texts)) as advance, torch.inference_mode():
        for start in range(0, len(texts), BATCH):
            chunk = [texts[i] for i in order[start:start + BATCH]]
            batch = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True,
                              max_length=MAX_TOKENS).to(backend.device)
            hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(mean.float(), dim=1).cpu().numpy())
            advance(len(batch["input_ids"]))
    vectors = np.empty((len(texts), out[0].shape[1]), dtype=np.float32)
    vectors[order] = np.concatenate(out)
    return vectors


def _load(folder: Path, log) -> dict[str, np.ndarray]:
    if not folder.exists():
        return {}
    try:
        verify_folder(folder, (_VECTORS,), what="LM item vectors")
        with np.load(folder / _VECTORS, allow_pickle=False) as arrays:
            keys, vectors = arrays["keys"], arrays["vectors"]
        if vectors.ndim != 2 or len(keys) != len(vectors) or not np.isfinite(vectors).all():
            raise ValueError("keys and vectors do not match")
    except (RecgenError, OSError, ValueError, KeyError) as exc:
        if log:
            log(f"LM item vectors in {folder} are not usable ({exc}); computing them again")
        return {}
    return dict(zip((str(k) for k in keys), vectors.astype(np.float32)))


def _save(folder: Path, vectors: dict[str, np.ndarray]) -> None:
    keys = list(vectors)
    with atomic_dir(folder, manifest=True, what="LM item vectors (mean-pooled last hidden state)") as tmp:
        np.savez(tmp / _VECTORS, keys=np.array(keys, dtype=str), vectors=np.stack([vectors[k] for k in keys]))

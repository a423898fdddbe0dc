"""SASRec (Kang & McAuley, ICDM 2018) in plain PyTorch, trained on CPU.

Causal self-attention over the last ``max_len`` items; the hidden state at each position is scored against
the (shared) item embeddings to predict the next item. Loss: full softmax cross-entropy over all items
(``loss="ce"``, usually stronger and cheap at these catalog sizes) or the original binary cross-entropy with
one sampled negative per position (``loss="bce"``), or, for catalogs whose full output layer does not fit in
memory, a sampled softmax over ``negatives`` items drawn by popularity with the logQ correction
(``loss="sampled"``). The item table starts from random vectors or from the catalog's text embeddings projected
to the model width by PCA (``item_init``, :func:`project_item_vectors`). Checkpoints are safetensors plus a JSON sidecar, never
pickles.

This module is what serving needs (config, model, checkpoint I/O); the training loop is
:mod:`recgen.fit.sasrec_train` (nanoGPT's model/train split), so loading a model never imports the optimiser.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ModelLoadError

SCHEDULES = ("constant", "cosine", "plateau")

#: Settings added after checkpoints were first cached, with the value that reproduces the older behaviour:
#: checkpoint keys leave them out at these values, so older checkpoints stay valid.
LATER_DEFAULTS = {"schedule": "constant", "warmup_epochs": 0.0, "decay_epochs": 20, "min_lr_ratio": 0.1,
                  "decay_factor": 0.3, "decay_patience": 2, "optimizer": "adam",
                  "positions": "from_newest", "item_init": "random", "negatives": 256, "item_lr": 1.0}
ITEM_INITS = ("random", "text", "text_frozen")
LOSSES = ("ce", "bce", "sampled")


@dataclass
class SASRecConfig:
    hidden: int = 64
    blocks: int = 2
    heads: int = 1
    max_len: int = 50
    dropout: float = 0.5
    # "ce" (softmax over all items), "bce" (one sampled negative per position) or "sampled" (softmax over the
    # target and ``negatives`` items drawn by training popularity, logQ-corrected: memory independent of n_items)
    loss: str = "ce"
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    max_epochs: int = 200
    eval_every: int = 1  # epochs between validation evaluations
    patience: int = 10  # evaluations without improvement before stopping
    max_minutes: float = 14.0  # training budget (best checkpoint so far is kept), see ``budget``
    budget: str = "wall"  # "wall": wall clock (what a user waits for); "cpu": process CPU time / threads
    all_windows: bool = True  # sequences longer than max_len contribute every max_len window, not only the last
    bf16_logits: bool = False  # compute the training-time output layer in bfloat16 (faster on CPUs with AMX/AVX512-BF16)
    # with bf16_logits: also take the softmax cross-entropy on the bfloat16 logits (accumulated in float32 inside
    # the kernel) instead of first copying them to float32; the output layer then costs a quarter (measured)
    bf16_loss: bool = False
    seed: int = 0
    threads: int = 2
    # learning-rate schedule (per step): "constant"; "cosine": linear warm-up over ``warmup_epochs``, then a
    # cosine decay to ``min_lr_ratio`` x lr at ``decay_epochs`` (a fixed horizon, so a run extended by
    # successive halving keeps its schedule); "plateau": warm-up, then lr x ``decay_factor`` whenever
    # ``decay_patience`` validations pass without a new best, never below ``min_lr_ratio`` x lr (no horizon
    # to guess, so one setting fits datasets whose curves peak after 10 or after 70 epochs)
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    decay_epochs: int = 20
    min_lr_ratio: float = 0.1
    decay_factor: float = 0.3
    decay_patience: int = 2
    # "adam": Adam with L2 ``weight_decay`` on every weight (the original); "adamw": decoupled decay on the
    # attention / feed-forward matrices only (embeddings, which are also the output layer, norms and biases
    # are not shrunk)
    optimizer: str = "adam"
    # position ids: "from_newest" (the original SASRec's left padding: the newest item always has the last
    # position, so the same short context gets a different position in training, where it is the start of a
    # longer sequence, than at inference) or "from_oldest" (the oldest item of a window has position 0 in
    # training and at inference alike, as in RecBole's right-padded SASRec)
    positions: str = "from_newest"
    # the item table's start: "random" (normal, std hidden^-0.5), "text" (the catalog's text embeddings projected
    # to ``hidden`` by PCA, then trained) or "text_frozen" (the same vectors, never updated)
    item_init: str = "random"
    negatives: int = 256  # with loss="sampled": items drawn per step, shared by every position of the batch
    # the item table's learning rate as a multiple of ``lr`` (the table is also the output layer): below 1 a
    # text-started table keeps more of what the text says while the blocks learn at the full rate (a text start
    # peaks after a few epochs and then overfits at 1; 0 would be "text_frozen")
    item_lr: float = 1.0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}")
        if self.item_init not in ITEM_INITS:
            raise ValueError(f"item_init must be one of {', '.join(ITEM_INITS)}")
        if not self.item_lr > 0:
            raise ValueError("item_lr must be > 0 (a frozen table is item_init='text_frozen')")
        if self.negatives < 1:
            raise ValueError("negatives must be >= 1")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}")
        if self.positions not in ("from_newest", "from_oldest"):
            raise ValueError("positions must be 'from_newest' or 'from_oldest'")
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError("optimizer must be 'adam' or 'adamw'")
        if not 0 < self.min_lr_ratio <= 1 or not 0 < self.decay_factor <= 1:
            raise ValueError("min_lr_ratio and decay_factor must be in (0, 1]")
        if self.budget not in ("cpu", "wall"):
            raise ValueError("budget must be 'cpu' or 'wall'")
        if self.hidden % self.heads:
            raise ValueError("hidden must be divisible by heads")


class _Block(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(hidden)
        self.attn = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.ln2 = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, hidden))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        q = self.ln1(x)
        a, _ = self.attn(q, q, q, attn_mask=attn_mask, need_weights=False)
        x = x + self.drop(a)
        x = x + self.drop(self.ffn(self.ln2(x)))
        return x * keep


class SASRec(nn.Module):
    """Item ``i`` (catalog row) is token ``i + 1``; token 0 is left padding."""

    def __init__(self, n_items: int, config: SASRecConfig, item_vectors: np.ndarray | None = None):
        """``item_vectors``: [n_items, hidden] starting rows of the item table (``config.item_init`` "text" or
        "text_frozen", see :func:`project_item_vectors`); "text_frozen" also stops their training."""
        super().__init__()
        self.n_items = n_items
        self.config = config
        h = config.hidden
        self.item_emb = nn.Embedding(n_items + 1, h, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, h)
        self.emb_drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(_Block(h, config.heads, config.dropout) for _ in range(config.blocks))
        self.final_ln = nn.LayerNorm(h)
        nn.init.normal_(self.item_emb.weight, std=h ** -0.5)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
            if item_vectors is not None:
                if tuple(item_vectors.shape) != (n_items, h):
                    raise ValueError(f"item_vectors must be [{n_items}, {h}], got {list(item_vectors.shape)}")
                self.item_emb.weight[1:] = torch.as_tensor(np.asarray(item_vectors, dtype=np.float32))
        if config.item_init == "text_frozen":
            self.item_emb.weight.requires_grad_(False)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, L] left-padded tokens → [B, L, H] hidden states (position t sees tokens ≤ t)."""
        b, length = tokens.shape
        if length > self.config.max_len:
            raise ValueError(f"sequences are cut to max_len={self.config.max_len}, got {length} columns")
        keep = (tokens > 0).unsqueeze(-1).to(self.item_emb.weight.dtype)
        if self.config.positions == "from_oldest":  # count the real tokens from the left; padding gets 0 (masked)
            positions = (torch.cumsum(tokens > 0, dim=1) - 1).clamp(min=0)
        else:  # left padding: the newest item is always at position max_len - 1, also when the batch is trimmed
            positions = torch.arange(self.config.max_len - length, self.config.max_len, device=tokens.device).unsqueeze(0)
        x = self.item_emb(tokens) * math.sqrt(self.config.hidden) + self.pos_emb(positions)
        x = self.emb_drop(x) * keep
        causal = torch.ones(length, length, dtype=torch.bool, device=tokens.device).triu(1)
        pad_key = (tokens == 0).unsqueeze(1).expand(b, length, length)
        eye = torch.eye(length, dtype=torch.bool, device=tokens.device).unsqueeze(0)
        blocked = (causal.unsqueeze(0) | pad_key) & ~eye  # a padded query may see itself: no empty rows
        blocked = blocked.repeat_interleave(self.config.heads, dim=0)
        for block in self.blocks:
            x = block(x, blocked, keep)
        return self.final_ln(x)

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[N, H] → [N, n_items] scores for every catalog item (padding token excluded)."""
        return hidden @ self.item_emb.weight[1:].T

    @torch.no_grad()
    def score_histories(self, histories: list[np.ndarray], batch_size: int = 512) -> np.ndarray:
        """Next-item scores over all items for each history (catalog rows, oldest first)."""
        self.eval()
        out = np.empty((len(histories), self.n_items), dtype=np.float32)
        for start in range(0, len(histories), batch_size):
            tokens = trim(left_pad([h + 1 for h in histories[start:start + batch_size]], self.config.max_len))
            hidden = self.encode(torch.from_numpy(tokens))[:, -1, :]
            out[start:start + len(tokens)] = self.item_logits(hidden).numpy()
        return out


def project_item_vectors(vectors: np.ndarray, hidden: int, seed: int = 0) -> np.ndarray:
    """Text embeddings [n_items, dim] → [n_items, hidden] starting rows for the item table, by PCA.

    PCA rather than a learned projection: it needs no training, keeps the largest share of the vectors'
    variance (so their cosine neighbourhoods) in ``hidden`` dimensions, and the result is an ordinary item
    table (a checkpoint holds no text vectors and serving is unchanged). The components keep their relative
    variances (not whitened) and are scaled so that the mean squared entry is 1 / hidden, as in the random
    init; components the vectors cannot fill (``dim`` or ``n_items`` below ``hidden``) are random at that scale."""
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise ValueError("text vectors must be a finite [n_items, dim] matrix")
    x = x - x.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    k = min(hidden, len(s))
    out = np.zeros((len(x), hidden), dtype=np.float64)
    out[:, :k] = u[:, :k] * s[:k]
    scale = math.sqrt(float(np.mean(out[:, :k] ** 2))) if k else 0.0
    out[:, :k] = out[:, :k] / scale * hidden ** -0.5 if scale > 0 else 0.0
    if k < hidden:
        out[:, k:] = np.random.default_rng(seed).normal(0.0, hidden ** -0.5, size=(len(x), hidden - k))
    return out.astype(np.float32)


def left_pad(sequences: list[np.ndarray], max_len: int) -> np.ndarray:
    """The last ``max_len`` tokens of each sequence, left-padded with 0."""
    out = np.zeros((len(sequences), max_len), dtype=np.int64)
    for r, seq in enumerate(sequences):
        seq = seq[-max_len:]
        if len(seq):
            out[r, max_len - len(seq):] = seq
    return out


def trim(tokens: np.ndarray) -> np.ndarray:
    """Drop leading columns that are padding in every row (a batch of short sequences stays short)."""
    used = np.flatnonzero((tokens > 0).any(axis=0))
    return tokens[:, used[0]:] if len(used) else tokens[:, -1:]


# -- checkpoints (safetensors + JSON sidecar) ---------------------------------------------------------

def save_checkpoint(model: SASRec, path: str | Path, extra: dict | None = None) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(path)
    meta = {"n_items": model.n_items, "config": asdict(model.config), **(extra or {})}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return path


def load_checkpoint(path: str | Path) -> tuple[SASRec, dict]:
    """The saved model; a damaged or edited checkpoint is a :class:`ModelLoadError` naming the file.

    The sidecar's sizes are checked against the tensor shapes in the safetensors header before the model is
    built, so an edited ``n_items`` or ``blocks`` cannot make torch allocate what the file does not hold."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    try:
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        n_items, config = meta["n_items"], SASRecConfig(**meta["config"])
        with safe_open(str(path), framework="pt") as weights:
            shapes = {key: tuple(weights.get_slice(key).get_shape()) for key in weights.keys()}
        _check_shapes(n_items, config, shapes)
        model = SASRec(n_items, config)
        model.load_state_dict(load_file(str(path)))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as exc:
        raise ModelLoadError(f"{path} is not a readable SASRec checkpoint ({type(exc).__name__}: "
                             f"{str(exc)[:200]}); refit it with `recgen fit`") from None
    if not all(bool(torch.isfinite(t).all()) for t in model.state_dict().values()):
        raise ModelLoadError(f"{path} holds weights that are not finite (nan or inf); refit it with `recgen fit`")
    model.eval()
    return model, meta


def _check_shapes(n_items, config: SASRecConfig, shapes: dict[str, tuple]) -> None:
    sizes = {"n_items": n_items, "hidden": config.hidden, "blocks": config.blocks, "heads": config.heads,
             "max_len": config.max_len}
    bad = [k for k, v in sizes.items() if not isinstance(v, int) or isinstance(v, bool) or v < 1]
    if bad:
        raise ValueError(f"{', '.join(bad)} must be whole numbers >= 1")
    if config.hidden % config.heads:
        raise ValueError(f"hidden={config.hidden} is not a multiple of heads={config.heads}")
    h = config.hidden
    blocks = {int(key.split(".")[1]) for key in shapes if key.startswith("blocks.")}
    expected = {"item_emb.weight": (n_items + 1, h), "pos_emb.weight": (config.max_len, h)}
    for key, shape in expected.items():
        if shapes.get(key) != shape:
            raise ValueError(f"{key} is {shapes.get(key)} in the weights but {shape} by the sidecar's sizes")
    if blocks != set(range(config.blocks)):
        raise ValueError(f"the weights hold {len(blocks)} blocks, the sidecar says {config.blocks}")

"""SASRec (Kang & McAuley, ICDM 2018) in plain PyTorch, trained on CPU.

Causal self-attention over the last ``max_len`` items; the hidden state at each position is scored against
the (shared) item embeddings to predict the next item. Loss: full softmax cross-entropy over all items
(``loss="ce"``, usually stronger and cheap at these catalog sizes) or the original binary cross-entropy with
one sampled negative per position (``loss="bce"``). Training uses the training part of each sequence only;
the caller supplies a validation callback (full-ranking NDCG@10) for early stopping, and the best
checkpoint is kept. Checkpoints are safetensors plus a JSON sidecar, never pickles.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class SASRecConfig:
    hidden: int = 64
    blocks: int = 2
    heads: int = 1
    max_len: int = 50
    dropout: float = 0.5
    loss: str = "ce"  # "ce" (softmax over all items) or "bce" (one sampled negative per position)
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
    seed: int = 0
    threads: int = 2

    def __post_init__(self) -> None:
        if self.loss not in ("ce", "bce"):
            raise ValueError("loss must be 'ce' or 'bce'")
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

    def __init__(self, n_items: int, config: SASRecConfig):
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

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, L] left-padded tokens → [B, L, H] hidden states (position t sees tokens ≤ t)."""
        b, length = tokens.shape
        if length > self.config.max_len:
            raise ValueError(f"sequences are cut to max_len={self.config.max_len}, got {length} columns")
        keep = (tokens > 0).unsqueeze(-1).to(self.item_emb.weight.dtype)
        # left padding: the newest item is always at position max_len - 1, also when the batch is trimmed
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


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, pool: int = 50) -> list[np.ndarray]:
    """Shuffled batches of similar-length windows: shuffle, sort within pools of ``pool`` batches, shuffle batches."""
    order = rng.permutation(len(lengths))
    batches = []
    span = batch_size * pool
    for start in range(0, len(order), span):
        chunk = order[start:start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def training_windows(train_sequences: list[np.ndarray], max_len: int, all_windows: bool) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) token matrices: input ``s[:-1]``, target ``s[1:]`` (next item), left-padded.

    A sequence longer than ``max_len + 1`` gives its last window and, with ``all_windows``, every earlier
    non-overlapping window too (the original keeps only the last, wasting most of long MovieLens histories).
    """
    inputs, targets = [], []
    for seq in train_sequences:
        tokens = np.asarray(seq, dtype=np.int64) + 1
        if len(tokens) < 2:
            continue
        end = len(tokens)
        while end >= 2:
            window = tokens[max(0, end - max_len - 1):end]
            inputs.append(window[:-1])
            targets.append(window[1:])
            end -= max_len
            if not all_windows:
                break
    return left_pad(inputs, max_len), left_pad(targets, max_len)


@dataclass
class TrainReport:
    epochs: int
    best_epoch: int
    best_valid_ndcg10: float
    history: list[dict]
    stopped: str  # "patience", "max_epochs", "time budget"
    train_seconds: float
    train_cpu_seconds: float
    n_windows: int
    n_positions: int


def train_sasrec(train_sequences: list[np.ndarray], n_items: int, config: SASRecConfig,
                 validate: Callable[[SASRec], float] | None = None,
                 log: Callable[[str], None] | None = None,
                 on_epoch: Callable[[int, float, float | None], None] | None = None) -> tuple[SASRec, TrainReport]:
    """Train with Adam; after every ``eval_every`` epochs call ``validate(model)`` (higher = better) and keep
    the best weights; stop after ``patience`` evaluations without improvement or the time budget."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    torch.set_num_threads(config.threads)
    inputs, targets = training_windows(train_sequences, config.max_len, config.all_windows)
    n_positions = int((targets > 0).sum())
    model = SASRec(n_items, config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.98),
                                 weight_decay=config.weight_decay)
    lengths = (inputs > 0).sum(axis=1)
    best_score, best_epoch, best_state = -1.0, 0, copy.deepcopy(model.state_dict())
    history: list[dict] = []
    started, cpu_started = time.perf_counter(), time.process_time()

    def used_minutes() -> float:
        if config.budget == "wall":
            return (time.perf_counter() - started) / 60
        return (time.process_time() - cpu_started) / max(1, config.threads) / 60

    stopped, evals_without_gain, epoch = "max_epochs", 0, 0
    for epoch in range(1, config.max_epochs + 1):
        model.train()
        total, steps = 0.0, 0
        for idx in length_batches(lengths, config.batch_size, rng):
            width = max(1, int(lengths[idx].max()))
            x = torch.from_numpy(inputs[idx, -width:])
            y = torch.from_numpy(targets[idx, -width:])
            hidden = model.encode(x)
            where = y > 0
            h, t = hidden[where], y[where] - 1
            if config.loss == "ce":
                # pad the position count to a multiple of 256 (ignored targets): a handful of matmul shapes
                # instead of thousands keeps oneDNN's per-shape primitive cache, and so memory, small
                extra = (-len(t)) % 256
                if extra:
                    h = torch.cat([h, h.new_zeros(extra, h.shape[1])])
                    t = torch.cat([t, t.new_full((extra,), -100)])
                if config.bf16_logits:
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        logits = model.item_logits(h)
                    loss = F.cross_entropy(logits.float(), t, ignore_index=-100)
                else:
                    loss = F.cross_entropy(model.item_logits(h), t, ignore_index=-100)
            else:
                neg = _sample_negatives(x, y, where, n_items, rng)
                emb = model.item_emb.weight
                pos_logit = (h * emb[t + 1]).sum(-1)
                neg_logit = (h * emb[neg + 1]).sum(-1)
                loss = F.binary_cross_entropy_with_logits(pos_logit, torch.ones_like(pos_logit)) + \
                    F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
            steps += 1
        entry = {"epoch": epoch, "loss": round(total / max(steps, 1), 5),
                 "seconds": round(time.perf_counter() - started, 1),
                 "cpu_seconds": round(time.process_time() - cpu_started, 1)}
        out_of_time = used_minutes() > config.max_minutes
        score = None
        if validate is not None and (epoch % config.eval_every == 0 or out_of_time or epoch == config.max_epochs):
            score = float(validate(model))
            entry["valid_ndcg@10"] = round(score, 5)
            if score > best_score:
                best_score, best_epoch, best_state = score, epoch, copy.deepcopy(model.state_dict())
                evals_without_gain = 0
            else:
                evals_without_gain += 1
        history.append(entry)
        if log:
            log("sasrec " + " ".join(f"{k}={v}" for k, v in entry.items()))
        if on_epoch:
            on_epoch(epoch, entry["loss"], score)
        if validate is not None and evals_without_gain >= config.patience:
            stopped = "patience"
            break
        if out_of_time:
            stopped = "time budget"
            break
    if validate is None:
        best_epoch, best_state = epoch, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    report = TrainReport(epoch, best_epoch, best_score, history, stopped, round(time.perf_counter() - started, 1),
                         round(time.process_time() - cpu_started, 1), len(inputs), n_positions)
    return model, report


def _sample_negatives(x: torch.Tensor, y: torch.Tensor, where: torch.Tensor, n_items: int,
                      rng: np.random.Generator) -> torch.Tensor:
    """One uniformly sampled negative per target position, resampled (up to 5 times) if it is in the row."""
    seen = torch.cat([x, y], dim=1)
    neg = torch.from_numpy(rng.integers(0, n_items, size=tuple(y.shape)))
    for _ in range(5):
        clash = ((neg + 1).unsqueeze(-1) == seen.unsqueeze(1)).any(-1)
        if not bool(clash.any()):
            break
        neg = torch.where(clash, torch.from_numpy(rng.integers(0, n_items, size=tuple(y.shape))), neg)
    return neg[where]


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
    from safetensors.torch import load_file

    path = Path(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    model = SASRec(meta["n_items"], SASRecConfig(**meta["config"]))
    model.load_state_dict(load_file(str(path)))
    model.eval()
    return model, meta

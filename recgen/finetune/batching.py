"""Batches for ranker SFT: a deterministic length-aware order, left-padded collation, label-only loss."""

from __future__ import annotations

import numpy as np
import torch

from .sft_data import IGNORE


def batch_order(n_rows: int, lengths: list[int], batch_size: int, epoch: int, seed: int) -> list[list[int]]:
    """Deterministic per (seed, epoch): shuffle, sort within windows by length (less padding), shuffle batches."""
    rng = np.random.default_rng(seed * 1000 + epoch)
    perm = rng.permutation(n_rows).tolist()
    window = batch_size * 16
    batches = []
    for start in range(0, n_rows, window):
        chunk = sorted(perm[start:start + window], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    order = rng.permutation(len(batches)).tolist()
    return [batches[i] for i in order]


def collate(rows: list[dict], pad_id: int):
    """Left padding (as the backend does at inference), explicit position ids, right-aligned labels."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for n, row in enumerate(rows):
        length = len(row["input_ids"])
        ids[n, width - length:] = torch.tensor(row["input_ids"])
        mask[n, width - length:] = 1
        labels[n, width - length:] = torch.tensor(row["labels"])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions, labels


def supervised_loss(model, ids, mask, positions, labels) -> tuple[torch.Tensor, int]:
    """Cross-entropy over supervised tokens only; logits are computed for the trailing positions only."""
    supervised = (labels != IGNORE).any(dim=0).nonzero()
    if len(supervised) == 0:
        raise ValueError("a batch without supervised tokens")
    keep = ids.shape[1] - int(supervised[0]) + 1
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
    pred = logits[:, :-1, :].float()
    target = labels[:, ids.shape[1] - keep + 1:]
    n = int((target != IGNORE).sum())
    loss = torch.nn.functional.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1),
                                             ignore_index=IGNORE, reduction="sum")
    return loss / max(n, 1), n


# -- the training run ---------------------------------------------------------------------------------------

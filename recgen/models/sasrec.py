"""SASRec (Kang & McAuley, ICDM 2018) in plain PyTorch, trained on CPU.

Causal self-attention over the last ``max_len`` items; the hidden state at each position is scored against
the (shared) item embeddings to predict the next item. Loss: full softmax cross-entropy over all items
(``loss="ce"``, usually stronger and cheap at these catalog sizes) or the original binary cross-entropy with
one sampled negative per position (``loss="bce"``). Training uses the training part of each sequence only;
the caller supplies a validation callback (full-ranking NDCG@10) for early stopping, and the best
checkpoint is kept. Checkpoints are safetensors plus a JSON sidecar, never pickles.

With ``state_path`` the full training state (weights, best weights, Adam moments, RNG states, epoch, best
score, history) is written after every epoch, so a killed run resumes where it stopped and continues
exactly as an uninterrupted run would.
"""

from __future__ import annotations

import copy
import json
import math
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ModelLoadError

SCHEDULES = ("constant", "cosine", "plateau")

#: Settings added after checkpoints were first cached, with the value that reproduces the older behaviour:
#: checkpoint keys leave them out at these values, so older checkpoints stay valid.
LATER_DEFAULTS = {"schedule": "constant", "warmup_epochs": 0.0, "decay_epochs": 20, "min_lr_ratio": 0.1,
                  "decay_factor": 0.3, "decay_patience": 2, "optimizer": "adam",
                  "positions": "from_newest"}


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

    def __post_init__(self) -> None:
        if self.loss not in ("ce", "bce"):
            raise ValueError("loss must be 'ce' or 'bce'")
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
    peak_rss_mb: float = 0.0  # of the whole process, at the end of training
    resumed_at_epoch: int = 0  # 0: trained from scratch; else the first epoch of this process


#: Settings a resumed run may change: they affect when training stops, not what one epoch does.
RESUMABLE_CHANGES = ("threads", "max_minutes", "max_epochs", "patience", "budget", "eval_every")


def _output_loss(model: SASRec, h: torch.Tensor, t: torch.Tensor, config: SASRecConfig) -> torch.Tensor:
    """Mean softmax cross-entropy of hidden states ``h`` [N, H] against target rows ``t`` [N] over all items."""
    # pad the position count to a multiple of 256 (ignored targets): a handful of matmul shapes instead of
    # thousands keeps oneDNN's per-shape primitive cache, and so memory, small
    extra = (-len(t)) % 256
    if extra:
        h = torch.cat([h, h.new_zeros(extra, h.shape[1])])
        t = torch.cat([t, t.new_full((extra,), -100)])
    if not config.bf16_logits:
        return F.cross_entropy(model.item_logits(h), t, ignore_index=-100)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model.item_logits(h)
    if not config.bf16_loss:
        return F.cross_entropy(logits.float(), t, ignore_index=-100)
    # per-row losses in bf16, summed in float32: the loss value keeps float precision for logging/early stops
    rows = F.cross_entropy(logits, t, ignore_index=-100, reduction="none")
    return rows.float().sum() / (t >= 0).sum().clamp(min=1)


def train_sasrec(train_sequences: list[np.ndarray], n_items: int, config: SASRecConfig,
                 validate: Callable[[SASRec], float] | None = None,
                 log: Callable[[str], None] | None = None,
                 on_epoch: Callable[[int, float, float | None], None] | None = None,
                 state_path: str | Path | None = None) -> tuple[SASRec, TrainReport]:
    """Train with Adam; after every ``eval_every`` epochs call ``validate(model)`` (higher = better) and keep
    the best weights; stop after ``patience`` evaluations without improvement or the time budget.

    ``state_path``: write the training state there after every epoch and, if it already holds one (from a
    killed run with the same data and settings), continue from it."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    torch.set_num_threads(config.threads)
    inputs, targets = training_windows(train_sequences, config.max_len, config.all_windows)
    n_positions = int((targets > 0).sum())
    model = SASRec(n_items, config)
    optimizer = make_optimizer(model, config)
    lengths = (inputs > 0).sum(axis=1)
    run = {"epoch": 0, "best_score": -1.0, "best_epoch": 0, "evals_without_gain": 0, "history": [],
           "stopped": None, "seconds": 0.0, "cpu_seconds": 0.0, "lr_scale": 1.0, "evals_since_decay": 0}
    best_state = copy.deepcopy(model.state_dict())
    resumed_at = 0
    if state_path is not None and Path(state_path).is_file():
        run, best_state = load_train_state(state_path, model, optimizer, rng, config, n_items, len(inputs))
        resumed_at = run["epoch"] + 1
        if log:
            log(f"sasrec: resuming from {state_path} after epoch {run['epoch']}")
    history: list[dict] = run["history"]
    started = time.perf_counter() - run["seconds"]
    cpu_started = time.process_time() - run["cpu_seconds"]

    def used_minutes() -> float:
        if config.budget == "wall":
            return (time.perf_counter() - started) / 60
        return (time.process_time() - cpu_started) / max(1, config.threads) / 60

    # a run that stopped at its epoch or time limit continues when resumed with a larger one; patience is final
    if (run["stopped"] == "max_epochs" and run["epoch"] < config.max_epochs) or \
            (run["stopped"] == "time budget" and used_minutes() <= config.max_minutes):
        run["stopped"] = None
    stopped, epoch = run["stopped"] or "max_epochs", run["epoch"]
    todo = range(run["epoch"] + 1, config.max_epochs + 1) if not run["stopped"] else range(0)
    for epoch in todo:
        epoch_started = time.perf_counter()
        model.train()
        total, steps = 0.0, 0
        batches = length_batches(lengths, config.batch_size, rng)
        for idx in batches:
            for group in optimizer.param_groups:
                group["lr"] = config.lr * lr_factor(config, epoch - 1 + steps / len(batches), run.get("lr_scale", 1.0))
            width = max(1, int(lengths[idx].max()))
            x = torch.from_numpy(inputs[idx, -width:])
            y = torch.from_numpy(targets[idx, -width:])
            hidden = model.encode(x)
            where = y > 0
            h, t = hidden[where], y[where] - 1
            if config.loss == "ce":
                loss = _output_loss(model, h, t, config)
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
        train_done = time.perf_counter()
        entry = {"epoch": epoch, "loss": round(total / max(steps, 1), 5),
                 "epoch_seconds": round(train_done - epoch_started, 2)}
        if config.schedule != "constant":
            entry["lr"] = float(f"{optimizer.param_groups[0]['lr']:.3g}")
        out_of_time = used_minutes() > config.max_minutes
        score = None
        if validate is not None and (epoch % config.eval_every == 0 or out_of_time or epoch == config.max_epochs):
            score = float(validate(model))
            entry["valid_ndcg@10"] = round(score, 5)
            entry["valid_seconds"] = round(time.perf_counter() - train_done, 2)
            if score > run["best_score"]:
                run.update(best_score=score, best_epoch=epoch, evals_without_gain=0, evals_since_decay=0)
                best_state = copy.deepcopy(model.state_dict())
            else:
                run["evals_without_gain"] += 1
                run["evals_since_decay"] = run.get("evals_since_decay", 0) + 1
                if config.schedule == "plateau" and run["evals_since_decay"] >= config.decay_patience:
                    run.update(lr_scale=max(config.min_lr_ratio, run.get("lr_scale", 1.0) * config.decay_factor),
                               evals_since_decay=0)
        entry["seconds"] = round(time.perf_counter() - started, 1)
        entry["cpu_seconds"] = round(time.process_time() - cpu_started, 1)
        history.append(entry)
        if validate is not None and run["evals_without_gain"] >= config.patience:
            stopped = "patience"
        elif out_of_time:
            stopped = "time budget"
        finished = stopped in ("patience", "time budget") or epoch == config.max_epochs
        run.update(epoch=epoch, stopped=stopped if finished else None, seconds=time.perf_counter() - started,
                   cpu_seconds=time.process_time() - cpu_started)
        if state_path is not None:
            save_train_state(state_path, model, optimizer, rng, best_state, run, config, len(inputs))
        if log:
            log("sasrec " + " ".join(f"{k}={v}" for k, v in entry.items()))
        if on_epoch:
            on_epoch(epoch, entry["loss"], score)
        if finished:
            break
    if validate is None:
        run["best_epoch"], best_state = epoch, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    report = TrainReport(epoch, run["best_epoch"], run["best_score"], history, stopped,
                         round(time.perf_counter() - started, 1), round(time.process_time() - cpu_started, 1),
                         len(inputs), n_positions, round(peak_mb, 1), resumed_at)
    return model, report


def lr_factor(config: SASRecConfig, epochs_done: float, plateau_scale: float = 1.0) -> float:
    """The multiplier of ``config.lr`` after ``epochs_done`` (fractional) epochs of training."""
    warm = min(1.0, (epochs_done + 1e-9) / config.warmup_epochs) if config.warmup_epochs > 0 else 1.0
    if config.schedule == "cosine":
        span = max(config.decay_epochs - config.warmup_epochs, 1e-9)
        t = min(1.0, max(0.0, epochs_done - config.warmup_epochs) / span)
        return warm * (config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))
    if config.schedule == "plateau":
        return warm * plateau_scale
    return warm


def make_optimizer(model: SASRec, config: SASRecConfig) -> torch.optim.Optimizer:
    """Adam (L2 on every weight, the original recipe) or AdamW with decay on the block matrices only."""
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.98), weight_decay=config.weight_decay)
    decay = [p for name, p in model.named_parameters() if p.ndim >= 2 and not name.endswith("_emb.weight")]
    keep = [p for name, p in model.named_parameters() if not (p.ndim >= 2 and not name.endswith("_emb.weight"))]
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": keep, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, 0.98))


def save_train_state(path: str | Path, model: SASRec, optimizer: torch.optim.Optimizer, rng: np.random.Generator,
                     best_state: dict, run: dict, config: SASRecConfig, n_windows: int) -> Path:
    """One safetensors file (tensors + the JSON state in its header), replaced atomically, plus a readable
    JSON copy beside it. Never a pickle: Adam's moments are plain tensors, the RNG states JSON / uint8."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model/{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"best/{k}": v.detach().contiguous() for k, v in best_state.items()})
    opt = optimizer.state_dict()
    for index, slots in opt["state"].items():
        for name, value in slots.items():
            tensors[f"opt/{index}/{name}"] = torch.as_tensor(value).contiguous()
    tensors["rng/torch"] = torch.get_rng_state()
    state = {"format": "recgen-sasrec-train-state/1", "n_items": model.n_items, "n_windows": n_windows,
             "config": asdict(config), "run": run, "param_groups": opt["param_groups"],
             "numpy_rng": rng.bit_generator.state}
    text = json.dumps(state)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"state": text})
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps(state, indent=1))
    return path


def load_train_state(path: str | Path, model: SASRec, optimizer: torch.optim.Optimizer, rng: np.random.Generator,
                     config: SASRecConfig, n_items: int, n_windows: int) -> tuple[dict, dict]:
    """Restore what :func:`save_train_state` wrote into ``model``, ``optimizer`` and ``rng``; returns
    (run counters, best weights). Refuses a state from other data or other training settings."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            state = json.loads((handle.metadata() or {})["state"])
        tensors = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ConfigError(f"SASRec training state {path} is unreadable ({exc}); delete it to start over") from exc
    saved = {k: v for k, v in state["config"].items() if k not in RESUMABLE_CHANGES}
    wanted = {k: v for k, v in asdict(config).items() if k not in RESUMABLE_CHANGES}
    if saved != wanted or state["n_items"] != n_items or state["n_windows"] != n_windows:
        changed = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
        raise ConfigError(f"SASRec training state {path} was made with other data or settings "
                          f"({', '.join(changed) or 'data'}); delete it or use the same settings to resume")
    model.load_state_dict({k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")})
    best = {k[len("best/"):]: v for k, v in tensors.items() if k.startswith("best/")}
    slots: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("opt/"):
            _, index, name = key.split("/")
            slots.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": slots, "param_groups": state["param_groups"]})
    torch.set_rng_state(tensors["rng/torch"])
    rng.bit_generator.state = state["numpy_rng"]
    return state["run"], best


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

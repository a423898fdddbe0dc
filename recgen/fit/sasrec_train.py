"""SASRec's training loop (the model is :mod:`recgen.models.sasrec`): Adam, full-softmax, sampled-softmax or
sampled BCE loss,
early stopping on a caller-supplied validation callback (full-ranking NDCG@10), the best weights kept.

Training uses the training part of each sequence only. With ``state_path`` the full training state (weights,
best weights, Adam moments, RNG states, epoch, best score, history) is written after every epoch, so a killed
run resumes where it stopped and continues exactly as an uninterrupted run would.
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

from ..errors import ConfigError
from ..models.sasrec import SASRec, SASRecConfig, left_pad


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


class NegativeSampler:
    """Draws the shared negatives of ``loss="sampled"`` from the training targets' popularity (add-one smoothed,
    so every item can be drawn) and gives each drawn item's log expected count, ``log(K * q)``: subtracting it
    from the logits (the logQ correction, Bengio & Senecal 2008; Yi et al., RecSys 2019) makes the sampled
    softmax an unbiased stand-in for the full one, so popular items are not pushed down for being drawn often."""

    def __init__(self, targets: np.ndarray, n_items: int, negatives: int):
        counts = np.bincount(targets[targets > 0] - 1, minlength=n_items).astype(np.float64) + 1.0
        q = counts / counts.sum()
        self.cdf = np.cumsum(q)
        self.cdf[-1] = 1.0
        self.log_expected = torch.from_numpy(np.log(negatives * q).astype(np.float32))
        self.negatives = negatives

    def draw(self, rng: np.random.Generator) -> torch.Tensor:
        """``negatives`` item rows (catalog rows, with replacement)."""
        return torch.from_numpy(np.searchsorted(self.cdf, rng.random(self.negatives), side="right").astype(np.int64))

    def loss(self, model: SASRec, h: torch.Tensor, t: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Mean sampled-softmax cross-entropy of ``h`` [N, H] against targets ``t`` [N]: the target and the
        drawn items, logQ-corrected; a drawn item equal to a row's target is masked (an accidental hit)."""
        neg = self.draw(rng)
        emb = model.item_emb.weight
        pos = (h * emb[t + 1]).sum(-1, keepdim=True) - self.log_expected[t].unsqueeze(1)
        other = h @ emb[neg + 1].T - self.log_expected[neg].unsqueeze(0)
        other = other.masked_fill(neg.unsqueeze(0) == t.unsqueeze(1), float("-inf"))
        logits = torch.cat([pos, other], dim=1)
        return F.cross_entropy(logits, torch.zeros(len(t), dtype=torch.long))


def train_sasrec(train_sequences: list[np.ndarray], n_items: int, config: SASRecConfig,
                 validate: Callable[[SASRec], float] | None = None,
                 log: Callable[[str], None] | None = None,
                 on_epoch: Callable[[int, float, float | None], None] | None = None,
                 state_path: str | Path | None = None,
                 item_vectors: np.ndarray | None = None) -> tuple[SASRec, TrainReport]:
    """Train with Adam; after every ``eval_every`` epochs call ``validate(model)`` (higher = better) and keep
    the best weights; stop after ``patience`` evaluations without improvement or the time budget.

    ``state_path``: write the training state there after every epoch and, if it already holds one (from a
    killed run with the same data and settings), continue from it. ``item_vectors``: the item table's starting
    rows [n_items, hidden], required by ``config.item_init`` "text" / "text_frozen"."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    torch.set_num_threads(config.threads)
    inputs, targets = training_windows(train_sequences, config.max_len, config.all_windows)
    n_positions = int((targets > 0).sum())
    if config.item_init != "random" and item_vectors is None:
        raise ConfigError(f"item_init={config.item_init!r} needs the catalog's item vectors")
    model = SASRec(n_items, config, item_vectors if config.item_init != "random" else None)
    optimizer = make_optimizer(model, config)
    sampler = NegativeSampler(targets, n_items, config.negatives) if config.loss == "sampled" else None
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
                group["lr"] = config.lr * group.get("lr_multiple", 1.0) * \
                    lr_factor(config, epoch - 1 + steps / len(batches), run.get("lr_scale", 1.0))
            width = max(1, int(lengths[idx].max()))
            x = torch.from_numpy(inputs[idx, -width:])
            y = torch.from_numpy(targets[idx, -width:])
            hidden = model.encode(x)
            where = y > 0
            h, t = hidden[where], y[where] - 1
            if config.loss == "ce":
                loss = _output_loss(model, h, t, config)
            elif sampler is not None:
                loss = sampler.loss(model, h, t, rng)
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
    """Adam (L2 on every weight, the original recipe) or AdamW with decay on the block matrices only; with
    ``config.item_lr`` != 1 the item table is a group of its own whose lr is that multiple of ``lr`` (its
    ``lr_multiple``, which the training loop applies under the schedule)."""
    trained = [(name, p) for name, p in model.named_parameters() if p.requires_grad]  # not a frozen item table
    own_table = config.item_lr != 1.0

    def groups(named, **extra) -> list[dict]:
        table = [p for name, p in named if own_table and name == "item_emb.weight"]
        rest = [p for name, p in named if not (own_table and name == "item_emb.weight")]
        out = [{"params": rest, **extra}]
        if table:
            out.append({"params": table, "lr": config.lr * config.item_lr, "lr_multiple": config.item_lr, **extra})
        return out

    if config.optimizer == "adam":
        return torch.optim.Adam(groups(trained), lr=config.lr, betas=(0.9, 0.98), weight_decay=config.weight_decay)
    matrix = lambda name, p: p.ndim >= 2 and not name.endswith("_emb.weight")  # noqa: E731
    return torch.optim.AdamW(groups([(n, p) for n, p in trained if matrix(n, p)], weight_decay=config.weight_decay)
                             + groups([(n, p) for n, p in trained if not matrix(n, p)], weight_decay=0.0),
                             lr=config.lr, betas=(0.9, 0.98))


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

"""SASRec baseline: trains :mod:`recgen.models.sasrec` on the training sequences, early-stopped on
validation NDCG@10 (full ranking, history = training items), and scores all items for the harness.

The best checkpoint is saved as safetensors under ``cache_dir()/sasrec`` keyed by the dataset, the
training data and the config; a later run with the same key reuses it instead of retraining (so an
interrupted evaluation resumes without training again). Pass ``retrain=True`` to ignore it. While training,
the full training state is written after every epoch beside it (``<key>.state.safetensors``): a killed
training run started again with the same command continues from its last finished epoch.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, fields

import numpy as np

from ...paths import cache_dir
from ..protocol import EvalData, evaluate_users, mean_of, sample_users

#: Per-dataset defaults. max_len follows the SASRec paper (200 for MovieLens, 50 for sparse Amazon data). For
#: Beauty the rest was chosen on the *validation* stage (all 22,363 users, NDCG@10; eval/results/sasrec/NOTES.md):
#: hidden 128 / dropout 0.3 (0.0646) over 128 / 0.5 (0.0640) and 64 / 0.3 (0.0627); lr 2e-3 with the bfloat16
#: output layer earlier (0.0425 vs 0.0237 for lr 1e-3 fp32 after 6 epochs). Training stops by patience (about
#: 17 epochs, 260 CPU-seconds); ``max_minutes`` is only a wall-clock cap for a crowded machine.
DATASET_DEFAULTS = {
    "ml-100k": {"max_len": 200, "dropout": 0.2, "eval_every": 2, "patience": 10},
    "amazon-beauty": {"max_len": 50, "hidden": 128, "dropout": 0.3, "lr": 2e-3, "bf16_logits": True,
                      "bf16_loss": True, "eval_every": 1, "patience": 8, "max_minutes": 50},
}


#: Early stopping validates every ``eval_every`` epochs on a fixed seeded sample of this many validation users
#: (all users when there are fewer): on Beauty (22,363 users) a full pass costs about half a training epoch,
#: 5,000 users a tenth. The final choice between settings is made on all users (``--stage valid``).
VALID_USERS = 5000


def _data_key(data: EvalData) -> str:
    digest = hashlib.sha256(data.dataset.catalog.fingerprint().encode())
    for seq in data.train_sequences():
        digest.update(np.asarray(seq, dtype=np.int64).tobytes())
        digest.update(b"|")
    return digest.hexdigest()[:16]


class SASRecBaseline:
    name = "sasrec"

    def __init__(self, retrain: bool = False, valid_users: int = VALID_USERS, **overrides) -> None:
        from ...models.sasrec import SASRecConfig

        known = {f.name for f in fields(SASRecConfig)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown SASRec parameter(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        self.overrides = overrides
        self.retrain = retrain
        self.valid_users = int(valid_users)
        self.config = None
        self.model = None
        self.fit_info: dict = {}

    def params(self) -> dict:
        out = asdict(self.config) if self.config is not None else dict(self.overrides)
        out["valid_users"] = self.valid_users or "all"
        return out

    def _config(self, dataset_name: str):
        from ...models.sasrec import SASRecConfig

        values = {**DATASET_DEFAULTS.get(dataset_name, {}), **self.overrides}
        return SASRecConfig(**values)

    def checkpoint_path(self, data: EvalData):
        cfg = asdict(self.config)
        cfg.pop("threads", None)
        valid_users = self.valid_users if 0 < self.valid_users < data.n_users else 0  # 0: all of them
        key = hashlib.sha256(json.dumps({"cfg": cfg, "data": _data_key(data), "valid_users": valid_users},
                                        sort_keys=True).encode()).hexdigest()[:16]
        return cache_dir() / "sasrec" / f"{data.dataset.name}-{key}.safetensors"

    def fit(self, data: EvalData, log=None, progress=None) -> None:
        from ...models.sasrec import load_checkpoint, save_checkpoint, train_sasrec

        self.config = self._config(data.dataset.name)
        path = self.checkpoint_path(data)
        if path.is_file() and path.with_suffix(".json").is_file() and not self.retrain:
            self.model, meta = load_checkpoint(path)
            self.fit_info = {"checkpoint": str(path), "reused_checkpoint": True, **meta.get("train", {})}
            if log:
                log(f"sasrec: reusing checkpoint {path} (best epoch {meta.get('train', {}).get('best_epoch')})")
            return
        positions = sample_users(data.n_users, self.valid_users, seed=12345)

        def validate(model) -> float:
            rows = [row for batch in evaluate_users(_ModelScorer(model), data, "valid", positions, batch_size=1024)
                    for row in batch]
            return mean_of(rows)["ndcg@10"]

        task = None
        if progress is not None:
            task = progress.add_task("training SASRec", total=self.config.max_epochs)

        def on_epoch(epoch, loss, score):
            if progress is not None:
                text = f"training SASRec (loss {loss:.3f}" + (f", valid N@10 {score:.4f})" if score is not None else ")")
                progress.update(task, completed=epoch, description=text)

        started = time.perf_counter()
        state = self.state_path(data)
        if self.retrain and state.is_file():
            state.unlink()  # retrain means from scratch; the state file is ours (same key as the checkpoint)
        self.model, report = train_sasrec(data.train_sequences(), data.n_items, self.config, validate=validate,
                                          log=log, on_epoch=on_epoch, state_path=state)
        if progress is not None:
            progress.update(task, completed=self.config.max_epochs)
        train = asdict(report)
        train["wall_seconds"] = round(time.perf_counter() - started, 1)
        save_checkpoint(self.model, path, extra={"train": train})
        for leftover in (state, state.with_suffix(".json")):
            leftover.unlink(missing_ok=True)
        self.fit_info = {"checkpoint": str(path), "reused_checkpoint": False, **train}

    def state_path(self, data: EvalData):
        """Where the resumable training state of this key lives while training runs."""
        path = self.checkpoint_path(data)
        return path.with_name(path.stem + ".state.safetensors")

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        return self.model.score_histories(histories)


class _ModelScorer:
    name = "sasrec"

    def __init__(self, model) -> None:
        self.model = model

    def score(self, histories):
        return self.model.score_histories(histories)

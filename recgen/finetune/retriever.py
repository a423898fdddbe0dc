"""Contrastive fine-tuning of the retriever's sentence-transformers model on training histories.

Pairs are (text of a history prefix -> text of the next item) from TRAINING sequences only, trained with
``MultipleNegativesRankingLoss`` (in-batch negatives). Batches never hold the same text twice (the
``NO_DUPLICATES`` rule: a duplicate positive in a batch would be a false negative). The loop is a plain
torch loop because ``SentenceTransformerTrainer`` needs the ``datasets`` package, which recgen does not
depend on. The tuned model is saved (safetensors), the FAISS index rebuilt, and Recall@20 on validation
and test targets reported before and after, alone and in the served hybrid (+ item transitions).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np

from ..atomic import atomic_folder, check_output_files, check_output_folder, claim_files
from ..config import RecgenConfig
from ..data import load_dataset
from ..errors import DataError
from ..evaluation.protocol import EvalData, evaluate_users, mean_of, sample_users
from ..evaluation.systems.retrieval import RetrievalSystem
from ..progress import progress_display
from ..retrieval import Retriever
from ..retrieval.embedder import DEFAULT_EMBEDDER, embed, resolve_embedder
from .config import RetrieverFinetuneConfig


# -- pairs ------------------------------------------------------------------------------------------
def anchor_text(catalog, history: list[str], n_items: int) -> str:
    titles = [catalog.get(i).title for i in history[-n_items:]]
    return "Liked: " + "; ".join(titles)


def build_pairs(catalog, splits, cfg: RetrieverFinetuneConfig) -> list[tuple[str, str]]:
    """(history text, next item text) from training prefixes; validation/test items never used."""
    rng = random.Random(cfg.seed)
    pairs = []
    for split in sorted(splits, key=lambda s: s.user_id):
        train = list(split.train)
        held_out = {split.valid, split.test}
        positions = list(range(cfg.train.min_history, len(train)))
        if len(positions) > cfg.train.pairs_per_user:
            positions = rng.sample(positions, cfg.train.pairs_per_user)
        for t in positions:
            if train[t] in held_out:
                continue
            pairs.append((anchor_text(catalog, train[:t], cfg.train.history_items), catalog.get(train[t]).text()))
    rng.shuffle(pairs)
    if cfg.train.max_pairs:
        pairs = pairs[: cfg.train.max_pairs]
    if len(pairs) < cfg.train.batch_size:
        raise DataError(f"only {len(pairs)} training pairs; at least batch_size={cfg.train.batch_size} are needed")
    return pairs


def no_duplicate_batches(pairs: list[tuple[str, str]], batch_size: int, seed: int) -> list[list[int]]:
    """Shuffled batches in which no anchor or positive text occurs twice (deferred pairs go to later batches)."""
    rng = random.Random(seed)
    order = list(range(len(pairs)))
    rng.shuffle(order)
    batches, pending = [], order
    while pending:
        batch, texts, deferred = [], set(), []
        for i in pending:
            a, p = pairs[i]
            if len(batch) < batch_size and a not in texts and p not in texts:
                batch.append(i)
                texts.update((a, p))
            else:
                deferred.append(i)
        if len(batch) < 2:
            break  # the rest would only be duplicates of each other
        batches.append(batch)
        pending = deferred
    return batches


# -- evaluation -----------------------------------------------------------------------------------------
def recall_by_stage(data: EvalData, positions, retriever: Retriever, config: RecgenConfig, weight: float,
                    k: int) -> dict[str, float]:
    """Recall@k of the served retrieval (cosine + ``weight`` × transitions) on validation and test targets,
    through the evaluation harness (full ranking, history masked, ties against the target)."""
    system = RetrievalSystem(config=config, retriever=retriever, collaborative_weight=weight)
    system.fit(data)
    return {stage: mean_of([row for batch in evaluate_users(system, data, stage, positions) for row in batch],
                           (k,))[f"recall@{k}"] for stage in ("valid", "test")}


# -- the run ----------------------------------------------------------------------------------------------
#: files written into ``output_dir`` (besides the ``model/`` and ``index/`` folders) and ``results_dir``
OUTPUT_FILES = ("summary.json",)
RESULT_FILES = ("metrics.json", "loss.json", "README.md")


def check_outputs(cfg: RetrieverFinetuneConfig) -> None:
    """May the run write every output? ``model/`` and ``index/`` replaceable, the files free or recgen's own."""
    out = Path(cfg.output_dir)
    for name in ("model", "index"):
        check_output_folder(out / name)
    check_output_files(out, OUTPUT_FILES, "output_dir")
    if cfg.results_dir:
        check_output_files(Path(cfg.results_dir), RESULT_FILES, "results_dir")


def finetune_retriever(cfg: RetrieverFinetuneConfig, *, command: str = "", dataset=None) -> dict:
    import torch
    from rich.console import Console
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.losses import MultipleNegativesRankingLoss


    console = Console(stderr=True)
    check_outputs(cfg)  # foreign files or a read-only place: refused now, not after training
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.seed)
    t_start = time.time()
    dataset = dataset or load_dataset(cfg.dataset)
    catalog = dataset.catalog
    data = EvalData.from_dataset(dataset)
    splits = data.split.splits
    positions = sample_users(data.n_users, cfg.train.eval_users, cfg.seed)
    serving = RecgenConfig(retrieval=cfg.retrieval)
    k = cfg.retrieval.n_candidates
    model = SentenceTransformer(resolve_embedder(cfg.retrieval.embedder), device="cpu")
    texts = [item.text() for item in catalog]
    before_emb = embed(model, texts)
    base_name = cfg.retrieval.embedder or DEFAULT_EMBEDDER
    before_retriever = Retriever.from_vectors(catalog, before_emb, serving.retrieval, embedder_name=base_name)
    before = recall_by_stage(data, positions, before_retriever, serving, 0.0, k)
    console.print(f"before: Recall@{k} valid {before['valid']:.4f}, test {before['test']:.4f}")

    pairs = build_pairs(catalog, splits, cfg)
    loss_fn = MultipleNegativesRankingLoss(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.train.lr)
    epochs_batches = [no_duplicate_batches(pairs, cfg.train.batch_size, cfg.seed + e) for e in range(cfg.train.epochs)]
    total = sum(len(b) for b in epochs_batches)
    warm = int(total * cfg.train.warmup_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / (warm + 1) if s < warm else max(0.0, (total - s) / max(1, total - warm)))
    model.train()
    losses = []
    t_train = time.time()
    with progress_display(console, "[bold]retriever", "loss {task.fields[loss]:.4f}") as progress:
        task = progress.add_task("train", total=total, loss=float("nan"))
        for batches in epochs_batches:
            for batch in batches:
                anchors = [pairs[i][0] for i in batch]
                positives = [pairs[i][1] for i in batch]
                encode = getattr(model, "preprocess", None) or model.tokenize  # tokenize: before 6.x
                features = [encode(anchors), encode(positives)]
                loss = loss_fn(features, None)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                losses.append(float(loss.detach()))
                progress.update(task, advance=1, loss=float(np.mean(losses[-20:])))
    train_seconds = time.time() - t_train
    model.eval()
    after_emb = embed(model, texts)
    out = Path(cfg.output_dir)
    model_dir = out / "model"
    after_retriever = Retriever.from_vectors(catalog, after_emb, serving.retrieval, embedder_name=str(model_dir))
    after = recall_by_stage(data, positions, after_retriever, serving, 0.0, k)
    console.print(f"after: Recall@{k} valid {after['valid']:.4f}, test {after['test']:.4f} ({train_seconds:.0f}s training)")

    # The served hybrid (retrieval.collaborative_weight): cosine + w x item transitions fitted on the training
    # part of every sequence, before and after tuning. Weights are compared on validation only.
    fusion = {}
    for name, retriever in (("base", before_retriever), ("tuned", after_retriever)):
        rows = [{"weight": w, **recall_by_stage(data, positions, retriever, serving, w, k)}
                for w in cfg.train.collaborative_weights]
        best = max(rows, key=lambda r: r["valid"])
        fusion[name] = {"grid": rows, "best_weight_on_valid": best["weight"], "valid": best["valid"], "test": best["test"]}
        console.print(f"{name} embeddings + transitions: best weight {best['weight']} -> Recall@{k} valid "
                      f"{best['valid']:.4f}, test {best['test']:.4f}")

    atomic_folder(model_dir, lambda tmp: model.save(str(tmp), safe_serialization=True))
    after_retriever.save(out / "index")
    summary = {
        "run": cfg.name, "dataset": cfg.dataset, "base_embedder": _display_path(resolve_embedder(cfg.retrieval.embedder)),
        "pairs": len(pairs), "batches": total, "epochs": cfg.train.epochs, "train_seconds": round(train_seconds, 1),
        "pairs_per_second": round(len(pairs) * cfg.train.epochs / max(train_seconds, 1e-9), 1),
        "eval_users": len(positions), "k": k,
        "valid_before": {f"recall@{k}": before["valid"]}, "valid_after": {f"recall@{k}": after["valid"]},
        "test_before": {f"recall@{k}": before["test"]}, "test_after": {f"recall@{k}": after["test"]},
        "hybrid": fusion, "loss_first_20": float(np.mean(losses[:20])),
        "loss_last_20": float(np.mean(losses[-20:])), "model_dir": str(model_dir), "index_dir": str(out / "index"),
        "wall_seconds": round(time.time() - t_start, 1), "command": command, "config": cfg.model_dump(mode="json"),
        "note": "hybrid = cosine + w x item transitions, as recgen's Retriever serves it (RecgenConfig.collaborative_weight)",
    }
    # Recall@k is the same key for every stage; also expose the plain names the CLI prints.
    summary["valid_before"]["recall@20"] = before["valid"]
    summary["valid_after"]["recall@20"] = after["valid"]
    claim_files(out, OUTPUT_FILES, "output_dir")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if cfg.results_dir:
        res = claim_files(cfg.results_dir, RESULT_FILES, "results_dir")
        (res / "metrics.json").write_text(json.dumps(summary, indent=2))
        (res / "loss.json").write_text(json.dumps([round(x, 4) for x in losses]))
        _write_retriever_card(res / "README.md", summary)
    return summary


def _display_path(path: str) -> str:
    """A site-packages path as its package-relative tail (the card must not carry this machine's paths)."""
    marker = "site-packages/"
    return path.split(marker, 1)[1] if marker in path else path


def _write_retriever_card(path: Path, s: dict) -> None:
    k = s["k"]
    f = s["hybrid"]
    weight_rows = "\n".join(
        f"| {label} hybrid, + transitions (w={row['weight']:g}) | {row['valid']:.4f} | {row['test']:.4f} |"
        for key, label in (("base", "base"), ("tuned", "fine-tuned"))
        for row in f[key]["grid"] if row["weight"] > 0)
    path.write_text(f"""# Retriever fine-tuning: {s['run']}

* Base embedder: `{s['base_embedder']}`; dataset `{s['dataset']}` (leave-one-out; pairs from training histories only)
* Loss: MultipleNegativesRankingLoss, batches without duplicate texts; {s['pairs']} (history text -> next item
  text) pairs, {s['epochs']} epoch(s), {s['batches']} batches, {s['train_seconds']} s training
  ({s['pairs_per_second']} pairs/s), wall time {s['wall_seconds']} s
* Evaluated on {s['eval_users']} users, full catalog, history excluded

| | Recall@{k} valid | Recall@{k} test |
|---|---:|---:|
| base embeddings | {s['valid_before'][f'recall@{k}']:.4f} | {s['test_before'][f'recall@{k}']:.4f} |
| fine-tuned embeddings | {s['valid_after'][f'recall@{k}']:.4f} | {s['test_after'][f'recall@{k}']:.4f} |
| base hybrid, + transitions (w={f['base']['best_weight_on_valid']}, chosen on valid) | {f['base']['valid']:.4f} | {f['base']['test']:.4f} |
| fine-tuned hybrid, + transitions (w={f['tuned']['best_weight_on_valid']}, chosen on valid) | {f['tuned']['valid']:.4f} | {f['tuned']['test']:.4f} |

Every hybrid weight of the recipe (recgen serves `collaborative_weight` = 1.0 unless told otherwise):

| | Recall@{k} valid | Recall@{k} test |
|---|---:|---:|
{weight_rows}

Model: `{s['model_dir']}` (outside git); index: `{s['index_dir']}`. Use it with
`RecgenConfig(retrieval={{"embedder": "{s['model_dir']}"}})`. {s['note']}.

Command: `{s['command']}`
""")

"""Retrieval-only vs zero-shot LM vs fine-tuned LM ranking on the same seeded users, with paired tests.

Full-catalog leave-one-out: candidates are the retriever's top-N over the whole catalog (history excluded).
A user whose target was not retrieved scores 0 for every system (the LM only reorders the candidates), so
only users with the target among the candidates are sent to the LM; means are over **all** sampled users.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np

from ..errors import ModelLoadError
from ..retrieval.embedder import DEFAULT_EMBEDDER


def _per_user(ranks, ks=(10, 20)) -> dict[str, np.ndarray]:
    from ..evaluation.metrics import metrics_from_ranks

    return metrics_from_ranks(ranks, ks=ks)


def _rank_users(ranker, requests, targets, batch_size: int) -> list[int]:
    ranks = []
    for start in range(0, len(requests), batch_size):
        chunk = requests[start:start + batch_size]
        for target, order in zip(targets[start:start + batch_size], ranker.rank(chunk, mode="score")):
            ranks.append([i for i, _ in order].index(target) + 1)
    return ranks


def _settings(adapter: Path, recipe: str | None) -> dict:
    settings_path = adapter / "recgen_config.json"
    if settings_path.is_file():
        return json.loads(settings_path.read_text())
    if recipe:
        from .config import load_ranker_config

        d = load_ranker_config(recipe)
        return {"prompt_history": d.data.prompt_history, "title_chars": d.data.title_chars,
                "n_candidates": d.data.n_candidates, "retrieval_history": d.data.retrieval_history,
                "recency_decay": d.data.recency_decay, "embedder": d.data.embedder, "lm": d.lm}
    raise ModelLoadError(f"{settings_path} is missing: the adapter folder must come from `recgen finetune ranker`"
                         " (or pass the recipe to take the prompt settings from)")


def compare_rankers(dataset: str, adapter: str, *, users: int = 500, seed: int = 0, stage: str = "test",
                    out: str | None = None, embedder: str | None = None, batch_size: int = 4, threads: int | None = 2,
                    command: str = "", recipe: str | None = None,
                    systems_to_run: tuple[str, ...] = ("zero_shot", "fine_tuned")) -> dict:
    from rich.console import Console

    from ..config import RecgenConfig
    from ..data import leave_one_out, load_dataset
    from ..evaluation.stats import compare_paired
    from ..lm.transformers_backend import TransformersBackend
    from ..ranking.ranker import RankRequest, Ranker
    from ..retrieval import Retriever

    console = Console(stderr=True)
    folder = Path(adapter)
    settings = _settings(folder, recipe)
    t0 = time.time()
    ds = load_dataset(dataset)
    splits = sorted(leave_one_out(ds).splits, key=lambda s: s.user_id)
    chosen = splits if users >= len(splits) else random.Random(seed).sample(splits, users)
    emb = embedder or settings.get("embedder")
    retriever = Retriever.build(ds.catalog, emb)
    retriever.max_history = settings["retrieval_history"]
    retriever.decay = settings["recency_decay"]
    if settings.get("collaborative_weight", 0) > 0:  # hybrid, as at inference; fitted on training parts only
        from ..retrieval.collaborative import ItemTransitions

        retriever.transitions = ItemTransitions.fit(ds.catalog, [list(s.train) for s in splits])
        retriever.collaborative_weight = settings["collaborative_weight"]
    n = settings["n_candidates"]
    retrieval_ranks, requests, targets, hit_rows = [], [], [], []
    for row, split in enumerate(chosen):
        history, target = split.history_for(stage), split.target(stage)
        candidates = [i for i, _ in retriever.retrieve(history, n=n)]
        if target in candidates:
            retrieval_ranks.append(candidates.index(target) + 1)
            requests.append(RankRequest(history=history, query=None, candidates=candidates, k=10))
            targets.append(target)
            hit_rows.append(row)
        else:
            retrieval_ranks.append(None)
    console.print(f"{len(chosen)} {stage} users, {len(requests)} with the target in the top-{n} candidates")

    base = dict(prompt_history=settings["prompt_history"], title_chars=settings["title_chars"], n_candidates=n,
                lm=settings.get("lm"), threads=threads)
    systems = {"retrieval": retrieval_ranks}
    timings = {}
    user_ids = [s.user_id for s in chosen]
    cache_dir = Path(out) if out else None
    for name, config in (("zero_shot", RecgenConfig(**base)), ("fine_tuned", RecgenConfig(**base, adapter=str(folder)))):
        cache = cache_dir / f"ranks_{stage}_{name}.json" if cache_dir else None
        key = {"user_ids": user_ids, "settings": settings, "embedder": emb, "adapter": str(folder) if name == "fine_tuned" else None}
        if cache is not None and cache.is_file():
            saved = json.loads(cache.read_text())
            if saved.get("key") == key:
                systems[name], timings[name] = saved["ranks"], saved["seconds"]
                console.print(f"{name}: reusing {cache}")
                continue
        if name not in systems_to_run:
            continue
        backend = TransformersBackend.from_config(config)
        ranker = Ranker(ds.catalog, backend, prompt_history=config.prompt_history, title_chars=config.title_chars)
        t = time.time()
        lm_ranks = _rank_users(ranker, requests, targets, batch_size)
        timings[name] = round(time.time() - t, 1)
        ranks: list[int | None] = [None] * len(chosen)
        for row, r in zip(hit_rows, lm_ranks):
            ranks[row] = r
        systems[name] = ranks
        console.print(f"{name}: {timings[name]}s for {len(requests)} users")
        del backend, ranker
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps({"key": key, "ranks": ranks, "seconds": timings[name]}))
    if not {"zero_shot", "fine_tuned"} <= set(systems):
        console.print("partial run: ranks cached; run again with both systems for the comparison")
        return {"partial": sorted(systems)}

    per_user = {name: _per_user(r) for name, r in systems.items()}
    means = {name: {m: float(v.mean()) for m, v in pu.items() if m.split("@")[0] in ("ndcg", "recall", "mrr")}
             for name, pu in per_user.items()}
    metrics = ["ndcg@10", "recall@10"]
    comparisons = {}
    for a, b in (("fine_tuned", "retrieval"), ("fine_tuned", "zero_shot"), ("zero_shot", "retrieval")):
        comparisons[f"{a}_vs_{b}"] = [r.to_dict() for r in compare_paired(per_user[a], per_user[b], metrics)]
    result = {
        "dataset": dataset, "stage": stage, "users": len(chosen), "seed": seed,
        "users_with_target_retrieved": len(requests), "n_candidates": n, "adapter": str(folder),
        "embedder": emb or DEFAULT_EMBEDDER, "prompt_settings": settings, "means": means,
        "paired": comparisons, "lm_seconds": timings, "wall_seconds": round(time.time() - t0, 1), "command": command,
        "per_user_ndcg@10": {name: [round(float(x), 5) for x in pu["ndcg@10"]] for name, pu in per_user.items()},
        "user_ids": [s.user_id for s in chosen],
    }
    for name in systems:
        console.print(f"{name:>10}: NDCG@10 {means[name]['ndcg@10']:.4f}  Recall@10 {means[name]['recall@10']:.4f}")
    for key, rows in comparisons.items():
        nd = rows[0]
        console.print(f"{key}: ΔNDCG@10 {nd['delta']:+.4f} CI {nd['ci95'][0]:+.4f}..{nd['ci95'][1]:+.4f} "
                      f"p_boot {nd['p_bootstrap']:.4f} p_wilcoxon {nd['p_wilcoxon']}")
    if out:
        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        (path / f"eval_{stage}.json").write_text(json.dumps(result, indent=2))
    return result

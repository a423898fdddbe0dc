"""Set ``retrieval_prior`` on VALIDATION users: how much of the retriever's order to keep beside the LM.

The ranker sees the candidates in retrieval order, but a small LM trained on a few thousand examples is a
noisy judge; adding ``prior * -ln(position)`` to its label log-probs blends the two orders (0 = the LM alone,
large = the retrieval order). The LM is run once per user (history = train, target = validation item, only
users whose target was retrieved: the rest score 0 under any prior) and every prior on the grid is scored
from those log-probs. Test targets are never looked at.
"""

from __future__ import annotations

import json
import time
from pathlib import Path


DEFAULT_PRIORS = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 100.0)


def grid_from_scores(label_scores: list[list[float]], target_positions: list[int], n_users: int,
                     priors=DEFAULT_PRIORS) -> list[dict]:
    """Validation NDCG@10 (over all ``n_users``; users not listed count 0) for each prior."""
    from ..ranking.ranker import with_retrieval_prior
    from .trainer import ndcg_from_ranks

    rows = []
    unranked = [None] * (n_users - len(label_scores))
    for prior in priors:
        ranks = []
        for scores, target in zip(label_scores, target_positions):
            adjusted = with_retrieval_prior(scores, prior)
            # stable: ties keep retrieval order, exactly as Ranker sorts
            order = sorted(range(len(adjusted)), key=lambda j: -adjusted[j])
            ranks.append(order.index(target) + 1)
        rows.append({"retrieval_prior": prior, "ndcg@10": ndcg_from_ranks(ranks + unranked) if n_users else 0.0})
    return rows


def pick(grid: list[dict]) -> dict:
    """The best prior; among equals, the smallest (the least retrieval-bound)."""
    best = max(row["ndcg@10"] for row in grid)
    return min((row for row in grid if row["ndcg@10"] >= best - 1e-12), key=lambda row: row["retrieval_prior"])


def calibrate(dataset: str, adapter: str | None, *, users: int = 500, seed: int = 1, threads: int | None = None,
              batch_size: int = 8, out: str | None = None, priors=DEFAULT_PRIORS, config_overrides: dict | None = None,
              command: str = "") -> dict:
    from rich.console import Console

    from ..config import RecgenConfig
    from ..data import Dataset, leave_one_out, load_dataset
    from ..recommender import Recommender
    from .trainer import make_validation_set, ndcg_from_ranks

    console = Console(stderr=True)
    t0 = time.time()
    config = RecgenConfig.validated({**(config_overrides or {}), "adapter": adapter, "threads": threads},
                                    "calibration config")
    full = load_dataset(dataset)
    splits = sorted(leave_one_out(full).splits, key=lambda s: s.user_id)
    # As the eval harness: the recommender (transitions, popularity) is fitted on training parts only.
    train_only = Dataset(full.name, full.catalog, {s.user_id: list(s.train) for s in splits})
    rec = Recommender.from_dataset(train_only, config)
    vset = make_validation_set(splits, rec.retriever, users, config.n_candidates, seed)
    console.print(f"{vset.n_users} validation users, {len(vset.requests)} with the target retrieved")
    ranker = rec.ranker
    label_scores, positions = [], []
    for start in range(0, len(vset.requests), batch_size):
        chunk = vset.requests[start:start + batch_size]
        prompts = [ranker.prompt(r) for r in chunk]
        for request, target, row in zip(chunk, vset.targets[start:start + batch_size],
                                        rec.backend.score_labels(prompts, [p.meta["labels"] for p in prompts])):
            label_scores.append([float(x) for x in row])
            positions.append(request.candidates.index(target))
        console.print(f"  {min(start + batch_size, len(vset.requests))}/{len(vset.requests)} users scored",
                      highlight=False)
    grid = grid_from_scores(label_scores, positions, vset.n_users, priors)
    best = pick(grid)
    retrieval_only = ndcg_from_ranks(vset.retrieval_ranks)
    result = {
        "dataset": dataset, "adapter": adapter, "stage": "valid", "users": vset.n_users,
        "users_with_target_retrieved": len(vset.requests), "seed": seed, "grid": grid,
        "best": best, "retrieval_order_ndcg@10": retrieval_only, "seconds": round(time.time() - t0, 1),
        "command": command, "config": config.model_dump(mode="json"),
    }
    for row in grid:
        console.print(f"  prior {row['retrieval_prior']:>6g}: validation NDCG@10 {row['ndcg@10']:.4f}", highlight=False)
    console.print(f"best prior {best['retrieval_prior']:g} (NDCG@10 {best['ndcg@10']:.4f}; retrieval order "
                  f"{retrieval_only:.4f})")
    if out:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        name = "calibration_fine_tuned.json" if adapter else "calibration_zero_shot.json"
        (folder / name).write_text(json.dumps(result, indent=2))
    return result

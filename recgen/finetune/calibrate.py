"""Set ``retrieval_prior`` on VALIDATION users: how much of the retriever's order to keep beside the LM.

The ranker sees the candidates in retrieval order, but a small LM trained on a few thousand examples is a
noisy judge; adding ``prior * -ln(position)`` to its label log-probs blends the two orders (0 = the LM alone,
large = the retrieval order). Every prior on the grid is evaluated by the harness (``lm`` system, stage
``valid``, the same seeded users); the LM's label scores are memoized, so it runs once per user however
many priors are tried. Test targets are never looked at.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..atomic import check_output_files, claim_files
from ..config import RecgenConfig
from ..data import Dataset, load_dataset
from ..evaluation.protocol import EvalData, evaluate_users, mean_of, sample_users
from ..evaluation.systems.lm import LMSystem
from ..evaluation.systems.retrieval import RetrievalSystem
from ..lm.factory import make_backend
from ..lm.memo import ScoreMemo

DEFAULT_PRIORS = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 100.0)


def pick(grid: list[dict]) -> dict:
    """The best prior; among equals, the smallest (the least retrieval-bound)."""
    best = max(row["ndcg@10"] for row in grid)
    return min((row for row in grid if row["ndcg@10"] >= best - 1e-12), key=lambda row: row["retrieval_prior"])


def calibrate(dataset: str | Dataset, adapter: str | None, *, users: int = 500, seed: int = 1, threads: int | None = None,
              batch_size: int = 8, out: str | None = None, priors=DEFAULT_PRIORS, config: RecgenConfig | None = None,
              command: str = "", backend=None, log=print) -> dict:
    """Validation NDCG@10 per prior on ``users`` seeded users; ``backend`` replaces the one ``config`` loads."""
    t0 = time.time()
    name = "calibration_fine_tuned.json" if adapter else "calibration_zero_shot.json"
    if out:
        check_output_files(Path(out), [name], "calibration folder")  # refused now, not after every prompt
    config = (config or RecgenConfig()).updated("calibration config", lm={"adapter": adapter, "threads": threads})
    data = EvalData.from_dataset(dataset if isinstance(dataset, Dataset) else load_dataset(dataset))
    positions = sample_users(data.n_users, users, seed)
    memo = ScoreMemo(backend or make_backend(config.lm))
    retriever = None
    grid = []
    for prior in priors:
        system = LMSystem(config=config.updated(ranking={"retrieval_prior": prior}), backend=memo,
                          retriever=retriever, batch=batch_size)
        system.fit(data)
        retriever = system.recommender.retriever  # one index for every prior
        rows = [row for batch in evaluate_users(system, data, "valid", positions) for row in batch]
        grid.append({"retrieval_prior": prior, "ndcg@10": mean_of(rows)["ndcg@10"]})
        log(f"  prior {prior:>6g}: validation NDCG@10 {grid[-1]['ndcg@10']:.4f} ({memo.calls} LM prompts so far)")
    reference = RetrievalSystem(config=config, retriever=retriever)
    reference.fit(data)
    retrieval_rows = [row for batch in evaluate_users(reference, data, "valid", positions) for row in batch]
    retrieval_only = mean_of(retrieval_rows)["ndcg@10"]
    best = pick(grid)
    result = {
        "dataset": data.dataset.name, "adapter": adapter, "stage": "valid", "users": len(positions),
        "users_with_target_retrieved": sum(1 for row in rows if row["retrieved"]), "seed": seed, "grid": grid,
        "best": best, "retrieval_order_ndcg@10": retrieval_only, "lm_prompts": memo.calls,
        "seconds": round(time.time() - t0, 1), "command": command, "config": config.model_dump(mode="json"),
    }
    log(f"best prior {best['retrieval_prior']:g} (NDCG@10 {best['ndcg@10']:.4f}; retrieval order {retrieval_only:.4f})")
    if out:
        folder = claim_files(out, [name], "calibration folder")
        (folder / name).write_text(json.dumps(result, indent=2))
    return result

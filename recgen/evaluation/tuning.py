"""Grid search on the **validation** stage (history = training items, target = second-last item).

Test targets are never looked at. Every configuration is scored on all eligible users (or a seeded sample)
and the grid is written to ``<results>/<dataset>/tuning/<system>-valid-grid.json``.
"""

from __future__ import annotations

import itertools
import json
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from ..data import load_dataset
from .protocol import EvalData, evaluate_users, mean_of, sample_users
from .runfiles import write_run_file
from .systems import NOT_FOR_GRIDS, make_system


def parse_grid(items: list[str]) -> dict[str, list]:
    """``key=v1,v2,...`` → {key: [v1, v2, ...]} with JSON-parsed values where possible."""
    grid = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep:
            raise ValueError(f"--grid expects key=v1,v2,..., got {item!r}")
        parsed = []
        for value in values.split(","):
            try:
                parsed.append(json.loads(value))
            except json.JSONDecodeError:
                parsed.append(value)
        grid[key.strip()] = parsed
    return grid


def grid_search(dataset: str, system: str, grid: dict[str, list], fixed: dict | None = None, users: int = 0,
                seed: int = 0, metric: str = "ndcg@10", results_dir: Path | None = None, name: str | None = None,
                log=print) -> dict:
    if system in NOT_FOR_GRIDS:
        raise ValueError(f"{system} is too slow for a grid here; tune it with `recgen eval run --stage valid`")
    started = time.perf_counter()
    data = EvalData.from_dataset(load_dataset(dataset))
    positions = sample_users(data.n_users, users, seed)
    keys = list(grid)
    results = []
    for values in itertools.product(*(grid[k] for k in keys)):
        params = {**(fixed or {}), **dict(zip(keys, values))}
        t0 = time.perf_counter()
        model = make_system(system, params)
        model.fit(data)
        rows = [row for batch in evaluate_users(model, data, "valid", positions) for row in batch]
        means = mean_of(rows, (10, 20))
        entry = {"params": params, **{k: round(v, 6) for k, v in means.items() if k.startswith(("ndcg", "recall"))},
                 "seconds": round(time.perf_counter() - t0, 2)}
        results.append(entry)
        log(f"{system} {params}: valid {metric} {means[metric]:.4f}")
    best = max(results, key=lambda e: e[metric])
    out = {
        "dataset": data.dataset.name, "system": system, "stage": "valid", "selection_metric": metric,
        "users": len(positions), "seed": seed, "grid": grid, "fixed": fixed or {}, "best": best,
        "results": sorted(results, key=lambda e: -e[metric]),
        "command": _command(),
        "wall_s": round(time.perf_counter() - started, 1),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if results_dir is not None:
        write_run_file(Path(results_dir) / data.dataset.name / "tuning", name or system + "-valid-grid", out)
    return out


def _command() -> str | None:
    """The command as a user would type it (``recgen eval tune ...``), from either entry point."""
    if not sys.argv:
        return None
    args = sys.argv[1:]
    if Path(sys.argv[0]).name == "recgen" and args[:1] == ["eval"]:
        args = args[1:]
    return shlex.join(["recgen", "eval", *args])

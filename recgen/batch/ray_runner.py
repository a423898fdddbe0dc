"""The same batch job on Ray Data: ``from_items(...).map_batches(RecommendWorker, concurrency=N)``.

Each actor loads the dataset and builds its Recommender (retriever + LM) once, then serves batches
with :func:`~recgen.batch.jobs.process_requests`, exactly as the single-process path does. The
driver writes the result lines as they arrive, with the same append + fsync discipline, so a Ray
job is resumable too. On a GPU cluster, set ``backend="vllm"`` and give each actor a GPU
(``num_gpus=1``): see docs/scaling.md.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np

from ..config import RecgenConfig
from ..data import load_dataset
from ..errors import RecgenError
from ..paths import resolve_dataset_path
from ..recommender import open_dataset
from ..retrieval.cache import index_folder, load_or_build_index
from .jobs import process_requests, thread_count
from .requests import BatchRequest

log = logging.getLogger(__name__)


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RecgenError("Ray is not installed: pip install 'recgen[ray]' (or pip install 'ray[data]')") from None
    return ray


class RecommendWorker:
    """A Ray Data callable class: one Recommender per actor, reused for every batch it is given."""

    def __init__(self, dataset_path: str, config: dict, index_dir: str, threads: int | None = None):
        import torch  # heavy, and only needed inside the actor process

        cfg = RecgenConfig.model_validate(config)
        if threads and cfg.lm.threads is None and cfg.lm.device == "cpu":
            cfg = cfg.updated(lm={"threads": threads})
        if cfg.lm.threads:
            torch.set_num_threads(cfg.lm.threads)
        self.dataset, self.recommender = open_dataset(dataset_path, cfg, index_dir=index_dir)  # the fitted folder
        _ = self.recommender.backend  # load the LM once, at actor start

    def __call__(self, batch: dict) -> dict:
        keys = ("custom_id", "line", "url", "request")
        rows = [dict(zip(keys, values)) for values in zip(*(batch[k] for k in keys))]
        items = [BatchRequest.from_row(row) for row in rows]
        lines = process_requests(self.recommender, self.dataset, items)
        return {"custom_id": np.array([i.custom_id for i in items], dtype=object),
                "line": np.array(lines, dtype=object), "worker": np.array([os.getpid()] * len(items))}


def _pool(ray, workers: int) -> dict:
    """A fixed pool of ``workers`` actors: ``compute=ActorPoolStrategy`` (Ray >= 2.51), else ``concurrency``."""
    strategy = getattr(ray.data, "ActorPoolStrategy", None)
    try:
        return {"compute": strategy(size=workers)}
    except TypeError:
        return {"concurrency": workers}


def run_on_ray(todo: list[BatchRequest], emit: Callable[[list[str]], None], *, dataset: str, config: RecgenConfig,
               index_dir: str | Path | None, batch_size: int, workers: int, summary=None,
               on_ready: Callable[[], None] | None = None, num_gpus: float = 0.0) -> None:
    """Run ``todo`` on local Ray (or the cluster ``RAY_ADDRESS`` points to) and ``emit`` result lines."""
    ray = _import_ray()

    # Resolve the dataset and build the retrieval index once, in the driver; actors only load them.
    dataset_path = str(resolve_dataset_path(dataset).resolve())
    data = load_dataset(dataset_path)
    folder = Path(index_dir) if index_dir else index_folder(data.name, data.catalog.fingerprint(), config.retrieval.embedder)
    load_or_build_index(data.catalog, config.retrieval, folder)

    started_here = not ray.is_initialized()
    if started_here:
        init = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if not os.environ.get("RAY_ADDRESS"):
            init.update(num_cpus=max(workers, 1), object_store_memory=256 * 1024 * 1024)
        ray.init(**init)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        if getattr(context, "wait_for_min_actors_s", 0) <= 0:
            # Start dispatching only when every actor has built its Recommender: work spreads over all
            # of them, and throughput is not timed while some are still loading models.
            context.wait_for_min_actors_s = 1800
        threads = None if num_gpus else thread_count(workers)
        ds = ray.data.from_items([item.to_row() for item in todo],
                                 override_num_blocks=max(1, min(len(todo) // batch_size or 1, 4 * workers)))
        ds = ds.map_batches(
            RecommendWorker,
            fn_constructor_kwargs={"dataset_path": dataset_path, "config": config.model_dump(),
                                   "index_dir": str(folder), "threads": threads},
            batch_size=batch_size, batch_format="numpy", num_cpus=1, num_gpus=num_gpus or None,
            **_pool(ray, workers),
        )
        first, seen = True, set()
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            seen.update(int(w) for w in batch["worker"])
            emit([str(line) for line in batch["line"]])
            if first and on_ready is not None:
                on_ready()  # throughput is timed after the first results (the actors' loading excluded)
                first = False
        if summary is not None:
            summary.workers_used = len(seen)
            summary.notes.append(f"ray {ray.__version__}, {workers} actors ({len(seen)} produced results), "
                                 f"{threads or 'default'} torch threads each; users/s counts the results after the "
                                 "first batch, over the time since it (the actors' model loading excluded)")
    finally:
        if started_here:
            ray.shutdown()

"""``recgen fit``: fit every stage of a dataset once for serving, and save it where serving finds it.

Settings are chosen on validation targets by the fit layer's selection (``recgen.fit``; nothing per dataset by hand);
the served sources are refitted on all interactions. ``recgen recommend``/``serve``/``batch`` on the same
dataset and retrieval settings then load the folder instead of refitting (``open_dataset``).
"""

from __future__ import annotations

import resource
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer

from ..atomic import check_output_folder, check_outside
from ..data import load_dataset
from ..data.events import EventStore, check_events_path, default_events_path
from ..feedback import served_dataset
from ..fit.cluster import check_cluster
from ..fit.cluster_embed import ClusterEncoder
from ..fit.serving import fit_for_serving
from ..paths import resolve_dataset_path
from ..pipeline import fitted_folder
from ..progress import progress_display, reporting
from .common import BadRowsOpt, console, friendly_errors, make_config, print_json, report_skipped


def peak_rss_mb() -> float:
    """The process's peak resident memory so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


@friendly_errors
def fit(dataset: str = typer.Option("ml-100k", "--dataset", "-d", help="dataset name or folder"),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="folder to write (default: the cache that "
                                           "`recgen recommend/serve/batch -d <dataset>` read)"),
        sasrec: bool = typer.Option(False, "--sasrec/--no-sasrec", help="add SASRec as a pool source and feature "
                                    "(its size is chosen on validation: ~11 CPU-min on Beauty unless the cached "
                                    "selection matches; +0.002 NDCG@10 there)"),
        threads: int = typer.Option(2, "--threads", min=1, help="LightGBM threads"),
        lm_stage: Optional[str] = typer.Option(None, "--lm-stage", help="also try the LM stage: zeroshot or a LoRA "
                                               "adapter folder of the config's LM; saved with the ranker only when "
                                               "it beats the fused order with confidence on held-out users"),
        lm_users: int = typer.Option(800, "--lm-users", min=8, help="held-out users the LM stage is fitted and "
                                     "guarded on (each costs one LM prompt)"),
        embedder: Optional[str] = typer.Option(None, help="sentence-transformers name or path"),
        config: Optional[Path] = typer.Option(None, help="config file (JSON or YAML) with RecgenConfig keys"),
        events: Optional[Path] = typer.Option(None, "--events", help="the event log applied before fitting (default: "
                                              "RECGEN_STATE_DIR/feedback/<dataset>/events.sqlite, if it exists)"),
        cluster: Optional[str] = typer.Option(None, "--cluster", help="Dask scheduler address (tcp://host:port, "
                                              "from `dask scheduler`): the LightGBM ranker trials and the catalog "
                                              "embedding run on its workers (config: fit.cluster.address)"),
        bad_rows: Optional[str] = BadRowsOpt,
        as_json: bool = typer.Option(False, "--json", help="print a JSON summary on stdout")) -> None:
    """Fit every stage of a dataset on all its interactions (settings chosen on validation) and save it.

    The data fitted is the served data: the dataset + the event log's positive events − forgotten users, as
    ``open_dataset`` serves it (so the saved folder's key matches). ``recgen refit`` is this command: run it on a
    schedule (cron, a systemd timer) to fold the feedback log into every learned stage."""
    cfg = make_config(config, retrieval={"embedder": embedder}, data={"bad_rows": bad_rows},
                      **({"fit": {"cluster": {"address": cluster}}} if cluster else {}))
    stages: list[dict] = []

    @contextmanager
    def stage(name: str):
        started, cpu = time.perf_counter(), time.process_time()
        yield
        stages.append({"stage": name, "seconds": round(time.perf_counter() - started, 1),
                       "cpu_seconds": round(time.process_time() - cpu, 1), "peak_rss_mb": peak_rss_mb()})
        console.print(f"[bold]{name}[/]: {stages[-1]['seconds']:.1f} s (peak RSS so far {stages[-1]['peak_rss_mb']:,.0f} MB)")

    encoder = None
    if cfg.fit.cluster.address:  # before the slow stages: a wrong address fails in seconds
        check_cluster(cfg.fit.cluster)
        encoder = ClusterEncoder(cfg.fit.cluster)
    started = time.perf_counter()
    with stage("load dataset"):
        base = load_dataset(dataset, cfg.data.bad_rows)
        data, log_info = _served(base, events)
    log_info.update(report_skipped(base))
    folder = out or fitted_folder(data, cfg.retrieval)
    check_output_folder(folder)  # before the slow part: a writable place, and never a folder recgen did not write
    check_outside(resolve_dataset_path(dataset), folder, "dataset")
    check_outside(events or default_events_path(data.name), folder, "event log")
    log = lambda message: console.print(f"[dim]{message}[/]")  # noqa: E731 (stderr, also with --json)
    with progress_display(console) as progress, reporting(progress):  # bars on a terminal, log lines elsewhere
        rec = fit_for_serving(data, cfg, sasrec=sasrec, threads=threads, log=log, stage=stage, lm_stage=lm_stage,
                              lm_users=lm_users, encode=encoder)
    info = rec.pipeline.state.fit_info
    info["stages"] = stages  # saved with the state (fusion/fusion.json), the save itself not included
    info["ran_on"] = ran_on(encoder, info)
    with stage("save"):
        rec.save(folder)
    summary = {"dataset": data.name, "folder": str(folder), "users": len(data.sequences), "items": len(data.catalog),
               "second_stage": "fusion" if rec.pipeline.state.ranker is not None else "hybrid order (not fitted)",
               "chosen": info.get("chosen"), "sasrec": rec.pipeline.state.sasrec is not None,
               "index_embedding": info.get("index_embedding"), "checkpoints": info.get("checkpoints"),
               "fallback": rec.pipeline.state.fallback, "stages": stages,
               "lm_stage": _lm_summary(info.get("lm_stage")), "ran_on": info["ran_on"],
               "fusion_fit_seconds": info.get("fit_seconds"), "wall_seconds": round(time.perf_counter() - started, 1),
               "peak_rss_mb": peak_rss_mb(), **log_info}
    if as_json:
        print_json(summary)
        return
    if summary["fallback"]:
        console.print(f"[yellow]{summary['fallback']}[/]")
    if summary["lm_stage"]:
        console.print(f"LM stage: {summary['lm_stage']}")
    console.print(f"fitted {data.name} ({summary['users']:,} users, {summary['items']:,} items) in "
                  f"{summary['wall_seconds']:.1f} s → {folder}; chosen {summary['chosen']}")


def _lm_summary(info: dict | None) -> dict | None:
    """The LM stage's verdict for the summary: served or not, the design and the guard's held-out figures."""
    if not info:
        return None
    return {"served": info.get("served", False), "design": info.get("design"), "candidate": info.get("candidate"),
            "guard": info.get("guard"), "cv_ndcg@10": info.get("cv_ndcg@10"), "users": info.get("users"),
            **({"why": info["why"]} if "why" in info else {})}


def ran_on(encoder: ClusterEncoder | None, info: dict) -> dict:
    """Where each stage of this fit ran (the fitted folder means the same whichever it was)."""
    here = "this process"
    if encoder is None:
        embedding = here + " (or its cached index)"
    elif encoder.texts:
        embedding = f"Dask cluster {encoder.settings.address}, {encoder.workers} workers ({encoder.texts:,} titles)"
    else:
        embedding = "its cached index (nothing embedded)"
    ranker = (info.get("ranker") or {}).get("trained_on") or "no ranker served (see fallback)"
    return {"catalog embedding": embedding, "ranker trials": ranker,
            "features, request stage, serving sources": here}


def _served(base, events: Optional[Path]):
    """``base`` with its event log applied (unchanged without a log), and what the log held."""
    path = events or default_events_path(base.name)
    check_events_path(path)  # a folder or a device is an error, not "no log"
    if not path.is_file():
        return base, {"events_log": None, "events": 0, "forgotten_users": 0}
    store = EventStore(path, create=False)
    try:
        return served_dataset(base, store), {"events_log": str(path), "events": len(store),
                                             "forgotten_users": len(store.forgotten())}
    finally:
        store.close()

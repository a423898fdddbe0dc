"""Run one system under the protocol and write its result files.

``<results>/<dataset>/<run>.json``: config, environment, user counts, metrics with 95% bootstrap CIs,
per-stage wall time / CPU / peak RSS, CPU-seconds per 1,000 users, the command.
``<results>/<dataset>/<run>.users.jsonl``: a header line with the config hash, then one row per user
(user, target, rank or null, ndcg@10, recall@10, mrr@10), written incrementally; once every user is ranked each
row also gets its segment labels (target popularity, history length: ``segments.py``) and the summary gets
the metrics per segment. After a complete run the
file is gzipped (``.users.jsonl.gz``). User and item ids appear only as
:func:`~recgen.evaluation.protocol.pseudonym` keys (the files are committed; the data may not be).

* An existing ``<run>.json`` is never overwritten silently: pass ``overwrite=True`` (``--overwrite``).
* An interrupted run (per-user file without ``<run>.json``) resumes when its config hash matches;
  otherwise the run refuses and says to use ``--overwrite``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from ..data import load_dataset
from ..errors import ConfigError, RecgenError
from ..paths import results_root
from ..progress import reporting
from .environment import environment
from .metrics import DEFAULT_KS, mean_metrics, metrics_from_ranks
from .protocol import EvalData, check_stage, evaluate_users, pseudonym, sample_users
from .resources import StageMonitor
from .runfiles import gzip_rows, read_user_file, run_paths, user_file_for, write_rows, write_run_file
from .segments import segment_summary, user_segments
from .stats import bootstrap_cis
from .systems import SYSTEMS, is_list_system, make_system

PROTOCOL_VERSION = 1


class RunExistsError(RecgenError):
    """A finished run with this name exists, or an interrupted one with another config."""


@dataclass
class RunSpec:
    dataset: str
    system: str
    stage: str = "test"
    users: int = 0
    seed: int = 0
    run_name: str | None = None
    params: dict = field(default_factory=dict)
    results_dir: Path | None = None  # None: paths.results_root() (RECGEN_RESULTS_DIR, else ./eval/results)
    batch_size: int = 512
    n_boot: int = 1000
    overwrite: bool = False
    command: str | None = None
    bad_rows: str = "error"  # config data.bad_rows: a malformed interaction row stops the load or is skipped

    def name(self) -> str:
        if self.run_name:
            return self.run_name
        sample = f"-u{self.users}-s{self.seed}" if self.users else ""
        return f"{self.system}-{self.stage}{sample}"


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def summarize(rows: list[dict], n_boot: int, seed: int, list_system: bool) -> dict:
    """Metrics (mean and 95% CI) over all rows; for list systems also retriever recall and validity."""
    ranks = [row["rank"] for row in rows]
    per_user = metrics_from_ranks(ranks, DEFAULT_KS)
    means = mean_metrics(per_user)
    cis = bootstrap_cis(per_user, n_boot=n_boot, seed=seed)
    metrics = {name: {"mean": round(means[name], 6), "ci95": [round(cis[name][0], 6), round(cis[name][1], 6)]}
               for name in per_user}
    out: dict = {"metrics": metrics}
    if list_system:
        retrieved = np.array([bool(row.get("retrieved")) for row in rows], dtype=np.float64)
        n_cand = max((row.get("n_candidates", 0) for row in rows), default=0)
        recall_ci = bootstrap_cis({"r": retrieved}, n_boot=n_boot, seed=seed)["r"]
        inside = [row["rank"] for row in rows if row.get("retrieved")]
        within = mean_metrics(metrics_from_ranks(inside, (1, 5, 10, 20))) if inside else {}
        returned = sum(row.get("n_returned", 0) for row in rows)
        valid = sum(row.get("n_valid", 0) for row in rows)
        out["pipeline"] = {
            f"retriever_recall@{n_cand}": {"mean": round(float(retrieved.mean()), 6) if len(rows) else None,
                                           "ci95": [round(recall_ci[0], 6), round(recall_ci[1], 6)]},
            "users_target_retrieved": int(retrieved.sum()),
            "ranker_within_retrieved": {k: round(v, 6) for k, v in within.items()},
            "validity": round(valid / returned, 6) if returned else None,
            "returned_items": returned,
            "invalid_items": returned - valid,
        }
    return out


def run_evaluation(spec: RunSpec, progress_factory: Callable | None = None,
                   log: Callable[[str], None] = lambda message: None) -> dict:
    """Evaluate ``spec.system`` and write the run files; returns the run summary that was written."""
    check_stage(spec.stage)
    if spec.users < 0:
        raise ConfigError("--users must be >= 0 (0 = all users)")
    if spec.system not in SYSTEMS:
        raise ConfigError(f"unknown system {spec.system!r}; choose one of {', '.join(SYSTEMS)}")
    started = time.perf_counter()
    monitor = StageMonitor()
    with monitor.stage("load"):
        dataset = load_dataset(spec.dataset, spec.bad_rows)
        data = EvalData.from_dataset(dataset)
    if dataset.skipped_note():
        log(dataset.skipped_note())
    _describe(data, log)
    try:
        system = make_system(spec.system, spec.params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad parameters for {spec.system}: {exc}") from None
    config = {
        "protocol_version": PROTOCOL_VERSION, "dataset": dataset.name, "catalog": dataset.catalog.fingerprint(),
        "n_interactions": dataset.num_interactions(), "system": spec.system, "params": spec.params,
        "stage": spec.stage, "users": spec.users, "seed": spec.seed,
        **({"bad_rows": spec.bad_rows, "skipped_rows": dataset.skipped_rows} if spec.bad_rows != "error" else {}),
    }
    chash = config_hash(config)
    paths = run_paths(results_root(spec.results_dir), dataset.name, spec.name())
    done = _resume(spec, paths, chash, log)
    positions = sample_users(data.n_users, spec.users, spec.seed)
    keys = [pseudonym(u) for u in data.user_ids]  # per-user files carry keys, not dataset ids
    todo = [int(p) for p in positions if keys[p] not in done]
    header = {"config_hash": chash, "run_name": spec.name(), "dataset": dataset.name, "system": spec.system,
              "stage": spec.stage, "users": spec.users, "seed": spec.seed, "params": spec.params}
    fit_info = _fit_and_score(spec, system, data, todo, paths, header, done, monitor, progress_factory, log)
    with monitor.stage("metrics"):
        order = [keys[p] for p in positions]
        missing = [u for u in order if u not in done]
        if missing:
            raise RecgenError(f"{len(missing)} sampled users have no result (e.g. {missing[0]}); re-run to resume")
        rows = [done[u] for u in order]
        summary = summarize(rows, spec.n_boot, spec.seed, is_list_system(system))
        labels = user_segments(data, spec.stage, positions)
        summary["segments"] = segment_summary([row["rank"] for row in rows], labels, spec.n_boot, spec.seed)
        for n, row in enumerate(rows):  # stored per user, so `eval compare` pairs segments without the data
            row["segment"] = {group: labels[group][n] for group in labels}
        write_rows(paths["users"], header, rows)
    result = _result(spec, data, system, config, chash, rows, len(todo), summary, fit_info, monitor, started,
                     gzip_rows(paths))
    write_run_file(paths["folder"], spec.name(), result)
    return result


def _describe(data: EvalData, log: Callable[[str], None]) -> None:
    log(f"{data.dataset.name}: {data.n_users:,} users evaluable, {data.excluded_users:,} excluded "
        f"(fewer than 3 interactions), {data.n_items:,} items")
    no_text = data.items_without_text()
    if no_text:
        log(f"{len(no_text)} item(s) have no title text (placeholder 'item <id>' is embedded): "
            f"{', '.join(no_text[:5])}{' ...' if len(no_text) > 5 else ''}")


def _resume(spec: RunSpec, paths: dict[str, Path], chash: str, log) -> dict[str, dict]:
    """Rows already evaluated by an interrupted run of the same config; a finished run is never overwritten
    silently, and an interrupted run of another config refuses (both unless ``spec.overwrite``)."""
    if paths["json"].exists() and not spec.overwrite:
        raise RunExistsError(f"{paths['json']} already exists; pass --overwrite to replace it, or choose another "
                             "--run-name")
    if spec.overwrite:
        for key in ("json", "users", "users_gz"):
            paths[key].unlink(missing_ok=True)
        return {}
    existing = user_file_for(paths)
    if existing is None:
        return {}
    header, rows = read_user_file(existing)
    if header is None or header.get("config_hash") != chash:
        raise RunExistsError(
            f"{existing} holds an interrupted run with a different configuration "
            f"(hash {header.get('config_hash') if header else 'missing'} != {chash}); pass --overwrite to start "
            "again, or choose another --run-name")
    done = {row["user"]: row for row in rows}
    # rewrite cleanly before appending: drops a line torn by the interrupt (and continues a .gz in plain text)
    write_rows(paths["users"], header, list(done.values()))
    if existing.suffix == ".gz":
        existing.unlink()
    log(f"resuming {spec.name()}: {len(done):,} users already evaluated")
    return done


def _fit_and_score(spec: RunSpec, system, data: EvalData, todo: list[int], paths: dict[str, Path], header: dict,
                   done: dict[str, dict], monitor: StageMonitor, progress_factory, log) -> dict:
    """Fit the system and append one row per user in ``todo`` to the per-user file (flushed per batch)."""
    paths["folder"].mkdir(parents=True, exist_ok=True)
    if not paths["users"].exists():
        write_rows(paths["users"], header, [])
    if not todo:
        return {}
    progress = progress_factory() if progress_factory else None
    try:
        if progress is not None:
            progress.start()
        with monitor.stage("fit"), reporting(progress):  # every stage of the fit reports to this display
            system.fit(data, log=log)
            fit_info = dict(getattr(system, "fit_info", {}) or {})
        with monitor.stage("score"):
            task = progress.add_task(f"ranking ({spec.system}, {spec.stage})", total=len(todo)) if progress else None
            rows_iter = evaluate_users(system, data, spec.stage, todo,
                                       batch_size=None if is_list_system(system) else spec.batch_size)
            with paths["users"].open("a", encoding="utf-8") as handle:
                for rows in rows_iter:
                    for row in rows:
                        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                        done[row["user"]] = row
                    handle.flush()
                    if progress is not None:
                        progress.advance(task, len(rows))
    finally:
        if progress is not None:
            progress.stop()
    return fit_info


def _result(spec: RunSpec, data: EvalData, system, config: dict, chash: str, rows: list[dict], n_scored: int,
            summary: dict, fit_info: dict, monitor: StageMonitor, started: float, per_user_file: str) -> dict:
    """The run summary written to ``<run>.json``."""
    list_system = is_list_system(system)
    score_stage = monitor.stages.get("score", {})
    cpu_fit_score = sum(monitor.stages.get(s, {}).get("cpu_s", 0.0) for s in ("fit", "score"))
    return {
        "run_name": spec.name(),
        "dataset": data.dataset.name,
        "system": spec.system,
        "stage": spec.stage,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": spec.command,
        "argv": [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else [],  # no folder of this machine
        "config": {**config, "system_params": _jsonable(system.params())},
        "config_hash": chash,
        "seed": spec.seed,
        "protocol": {
            "split": "leave-one-out: last item = test, second last = validation, rest = training",
            "history": "training items" if spec.stage == "valid" else "training items + validation item",
            "fitted_on": "training part of every sequence only",
            "ranking": "full ranking over all catalog items; only the user's own history items are masked",
            "ties": "count against the target",
            "averaging": "mean over all evaluated users; a miss counts 0",
            "ci": f"95% percentile bootstrap over users, {spec.n_boot} resamples, seed {spec.seed}",
        },
        "users": {
            "in_dataset": len(data.dataset.sequences),
            "excluded_fewer_than_3_interactions": data.excluded_users,
            "eligible": data.n_users,
            "requested": spec.users or "all",
            "evaluated": len(rows),
            "scored_in_this_invocation": n_scored,
            "resumed": n_scored < len(rows),
            "target_in_history": data.target_in_history(spec.stage),
            **({"ranked_by_second_stage": sum(1 for r in rows if r.get("second_stage", True))}
               if list_system else {}),
        },
        "items": {"catalog": data.n_items, "without_text": len(data.items_without_text())},
        **summary,
        "fit": _jsonable(fit_info),
        "timing": {
            "stages": monitor.stages,
            "total_wall_s": round(time.perf_counter() - started, 2),
            "cpu_s_per_1000_users_ranking": round(score_stage.get("cpu_s", 0.0) / n_scored * 1000, 3) if n_scored else None,
            "cpu_s_per_1000_users_fit_and_ranking": round(cpu_fit_score / n_scored * 1000, 3) if n_scored else None,
            "note": "times cover this invocation only" if n_scored < len(rows) else "",
        },
        "environment": environment(),
        "per_user_file": per_user_file,
    }


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    return value



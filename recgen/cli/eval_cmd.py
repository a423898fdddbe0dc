"""``recgen eval``: run a system under the offline protocol, compare two runs, regenerate reports."""

from __future__ import annotations

import json
import shlex
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..errors import ConfigError, RecgenError
from ..evaluation.systems import NOT_FOR_GRIDS, SYSTEMS, systems_help
from ..paths import results_root
from ..progress import progress_display, reporting
from .common import BadRowsOpt, make_config

eval_app = typer.Typer(help="Offline evaluation: leave-one-out, full ranking, bootstrap CIs, paired tests.",
                       no_args_is_help=True, pretty_exceptions_enable=False)
console = Console(stderr=True)

#: ``--results-dir`` of every eval command: one root, resolved by ``recgen.paths.results_root``.
RESULTS_HELP = ("results root (default: $RECGEN_RESULTS_DIR, else eval/results under the current directory)")
ResultsOpt = typer.Option(None, "--results-dir", help=RESULTS_HELP)
SYSTEM_HELP = systems_help()
THREADS_HELP = "LightGBM threads of the fusion system (default 2)"


def _fail(exc: Exception) -> None:
    console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(2)


def _parse_params(items: list[str] | None) -> dict:
    """``key=value`` pairs; values are read as JSON when they parse (numbers, true/false, lists), else text."""
    params = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param expects key=value, got {item!r}")
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value
    return params


def _progress(enabled: bool):
    """Bars on a terminal, log lines elsewhere (so a job log shows progress), nothing with --json."""
    return (lambda: progress_display(console)) if enabled else None


def _threads_param(params: dict, threads: int | None, system: str) -> dict:
    """``--threads`` as the fusion system's ``threads`` parameter (one way to say it, not two)."""
    if threads is None:
        return params
    if system != "fusion":
        raise ConfigError("--threads sets the fusion system's LightGBM threads; use it with fusion")
    if "threads" in params:
        raise ConfigError("give the threads once: --threads, not also -p threads=...")
    return {**params, "threads": threads}


def _command(dataset, system, stage, users, seed, run_name, params, config, results_dir, overwrite,
             threads=None, bad_rows=None) -> str:
    parts = ["recgen", "eval", "run", "--dataset", dataset, "--system", system, "--stage", stage]
    if threads is not None:
        parts += ["--threads", str(threads)]
    if users:
        parts += ["--users", str(users)]
    parts += ["--seed", str(seed)]
    if run_name:
        parts += ["--run-name", run_name]
    for item in params or []:
        parts += ["--param", item]
    if config:
        parts += ["--config", str(config)]
    if results_dir is not None:
        parts += ["--results-dir", str(results_dir)]
    if overwrite:
        parts.append("--overwrite")
    if bad_rows:
        parts += ["--bad-rows", bad_rows]
    return shlex.join(parts)


@eval_app.command("run")
def run(dataset: str = typer.Option("ml-100k", "--dataset", "-d", help="dataset name or folder"),
        system: str = typer.Option(..., "--system", "-s", help=SYSTEM_HELP),
        stage: str = typer.Option("test", help="test (history = train + valid) or valid (tuning; history = train)"),
        users: int = typer.Option(0, help="evaluate a seeded random sample of N users (0 = all)"),
        seed: int = typer.Option(0, help="seed of the user sample and the bootstrap"),
        run_name: Optional[str] = typer.Option(None, help="result file name (default <system>-<stage>[-u<N>-s<seed>])"),
        param: Optional[List[str]] = typer.Option(None, "--param", "-p", help="system parameter key=value (repeatable)"),
        config: Optional[Path] = typer.Option(None, help="RecgenConfig file (JSON/YAML) for the lm and retrieval systems"),
        threads: Optional[int] = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
        results_dir: Optional[Path] = ResultsOpt,
        batch_size: int = typer.Option(512, min=1, help="users scored per batch (vectorized systems)"),
        bootstrap: int = typer.Option(1000, min=100, help="bootstrap resamples for the 95% CIs"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing run with this name"),
        report: bool = typer.Option(True, "--report/--no-report", help="regenerate README.md, SUMMARY.md and plots"),
        bad_rows: Optional[str] = BadRowsOpt,
        as_json: bool = typer.Option(False, "--json", help="print the run summary as JSON on stdout")) -> None:
    """Evaluate one system and write <results root>/<dataset>/<run>.json (+ per-user JSONL)."""
    from ..evaluation.report import write_reports
    from ..evaluation.runner import RunSpec, run_evaluation

    try:
        params = _threads_param(_parse_params(param), threads, system)
        if config is not None:
            if system not in ("lm", "retrieval"):
                raise ConfigError("--config applies to --system lm and retrieval")
            from ..config import RecgenConfig

            params = {"config": RecgenConfig.from_file(config).model_dump(exclude_defaults=True), **params}
        command = _command(dataset, system, stage, users, seed, run_name, param, config, results_dir, overwrite,
                           threads, bad_rows)
        spec = RunSpec(dataset=dataset, system=system, stage=stage, users=users, seed=seed, run_name=run_name,
                       params=params, results_dir=results_root(results_dir), batch_size=batch_size, n_boot=bootstrap,
                       overwrite=overwrite, command=command,
                       bad_rows=make_config(data={"bad_rows": bad_rows}).data.bad_rows)
        result = run_evaluation(spec, progress_factory=_progress(not as_json),
                                log=lambda message: console.print(f"[dim]{message}[/]"))
    except (RecgenError, ValueError) as exc:
        _fail(exc)
    if report:
        try:
            write_reports(results_root(results_dir), result["dataset"])
        except Exception as exc:  # the run files are written; a report problem must not hide that
            console.print(f"[yellow]warning:[/] the run is saved, but the report could not be regenerated ({exc}); "
                          "run `recgen eval report`")
    if as_json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return
    _show_run(result)


def _show_run(result: dict) -> None:
    users = result["users"]
    table = Table(title=f"{result['run_name']}: {result['system']} on {result['dataset']} ({result['stage']}, "
                        f"{users['evaluated']:,} users, {users['excluded_fewer_than_3_interactions']} excluded)")
    table.add_column("metric")
    table.add_column("mean", justify="right")
    table.add_column("95% CI", justify="right")
    for name in ("ndcg@10", "recall@10", "mrr@10", "ndcg@20", "recall@20"):
        entry = result["metrics"][name]
        table.add_row(name, f"{entry['mean']:.4f}", f"[{entry['ci95'][0]:.4f}, {entry['ci95'][1]:.4f}]")
    for key, value in (result.get("pipeline") or {}).items():
        if isinstance(value, dict) and "mean" in value:
            table.add_row(key, f"{value['mean']:.4f}", f"[{value['ci95'][0]:.4f}, {value['ci95'][1]:.4f}]")
        elif key == "validity" and value is not None:
            table.add_row("validity", f"{100 * value:.2f}%", "")
    console.print(table)
    if result.get("segments"):
        _show_segments(result["segments"])
    timing = result["timing"]
    console.print(f"wall {timing['total_wall_s']:.1f} s; stages: " + ", ".join(
        f"{name} {s['wall_s']:.1f} s (peak {s['peak_rss_mb']:.0f} MB)" for name, s in timing["stages"].items()))


def _show_segments(segments: dict) -> None:
    from ..evaluation.segments import GROUPS, SEGMENT_METRICS

    table = Table(title="by segment (target popularity in training; items seen)")
    first = SEGMENT_METRICS[0]
    for col in ("grouping", "segment", "users", first, "95% CI", *SEGMENT_METRICS[1:]):
        table.add_column(col, justify="right")
    for group in GROUPS:
        for name, entry in segments[group].items():
            m = entry.get("metrics")
            cells = ([f"{m[first]['mean']:.4f}", f"[{m[first]['ci95'][0]:.4f}, {m[first]['ci95'][1]:.4f}]",
                      *(f"{m[k]['mean']:.4f}" for k in SEGMENT_METRICS[1:])] if m
                     else ["-"] * (len(SEGMENT_METRICS) + 1))
            table.add_row(group, name, f"{entry['users']:,}", *cells)
    console.print(table)


def _compare_segments(dataset: str, stage: str, users: list[str], rows: dict[str, dict], ranks_a: list,
                      ranks_b: list, bootstrap: int, seed: int) -> dict:
    """Paired comparison per segment; labels from the run rows, or from the dataset for older run files."""
    from ..evaluation.protocol import EvalData
    from ..evaluation.segments import GROUPS, label_rows, paired_segments

    if all("segment" in rows[u] for u in users):
        labels = {group: [rows[u]["segment"][group] for u in users] for group in GROUPS}
    else:
        from ..data import load_dataset

        labels = label_rows([rows[u] for u in users], EvalData.from_dataset(load_dataset(dataset)), stage)
    return paired_segments(ranks_a, ranks_b, labels, n_boot=bootstrap, seed=seed)


@eval_app.command("compare")
def compare(run_a: str = typer.Argument(..., help="run name (or path to its .json)"),
            run_b: str = typer.Argument(..., help="run name (or path to its .json)"),
            dataset: str = typer.Option("ml-100k", "--dataset", "-d"),
            results_dir: Optional[Path] = ResultsOpt,
            metrics: str = typer.Option("ndcg@10,recall@10,mrr@10,ndcg@20,recall@20", help="comma-separated"),
            bootstrap: int = typer.Option(10000, min=100, help="paired bootstrap resamples"),
            seed: int = typer.Option(0),
            intersect: bool = typer.Option(False, help="compare on the users both runs share (else they must match)"),
            by_segment: bool = typer.Option(True, "--segments/--no-segments",
                                            help="also compare per segment (target popularity, history length); "
                                                 "run files made before segments need the dataset to label users"),
            as_json: bool = typer.Option(False, "--json")) -> None:
    """Paired comparison of two runs on the same users: paired bootstrap CI/p and Wilcoxon on NDCG@10, overall
    and per segment."""
    from ..evaluation.metrics import metrics_from_ranks
    from ..evaluation.runfiles import load_run
    from ..evaluation.stats import compare_paired

    try:
        (sa, rows_a), (sb, rows_b) = load_run(results_root(results_dir), dataset, run_a), load_run(results_root(results_dir), dataset, run_b)
        for key in ("dataset", "stage"):
            if sa[key] != sb[key]:
                raise RecgenError(f"the runs differ in {key} ({sa[key]} vs {sb[key]}); a paired test needs the same")
        a = {r["user"]: r for r in rows_a}
        b = {r["user"]: r for r in rows_b}
        if set(a) != set(b):
            if not intersect:
                raise RecgenError(f"the runs cover different users ({len(a)} vs {len(b)}, {len(set(a) & set(b))} shared); "
                                  "evaluate both with the same --users/--seed, or pass --intersect")
        users = [u for u in a if u in b]
        if not users:
            raise RecgenError("the runs share no users")
        for u in users:
            if a[u]["target"] != b[u]["target"]:
                raise RecgenError(f"user {u} has different targets in the two runs; they are not comparable")
        names = [m.strip() for m in metrics.split(",") if m.strip()]
        ks = sorted({int(m.split("@")[1]) for m in names} | {10})
        per_a = metrics_from_ranks([a[u]["rank"] for u in users], ks)
        per_b = metrics_from_ranks([b[u]["rank"] for u in users], ks)
        unknown = [m for m in names if m not in per_a]
        if unknown:
            raise ConfigError(f"unknown metric(s) {', '.join(unknown)}; use ndcg@K, recall@K, mrr@K")
        results = compare_paired(per_a, per_b, names, n_boot=bootstrap, seed=seed)
        if "ndcg@10" not in names:
            results += [r for r in compare_paired(per_a, per_b, ["ndcg@10"], n_boot=bootstrap, seed=seed)]
        segments = (_compare_segments(dataset, sa["stage"], users, a, [a[u]["rank"] for u in users],
                                      [b[u]["rank"] for u in users], bootstrap, seed) if by_segment else None)
    except (RecgenError, ValueError) as exc:
        _fail(exc)
    out = {"dataset": sa["dataset"], "stage": sa["stage"], "run_a": sa["run_name"], "run_b": sb["run_name"],
           "users": len(users), "comparisons": [r.to_dict() for r in results]}
    if segments is not None:
        out["segments"] = segments
    wil = next(r for r in results if r.metric == "ndcg@10")
    out["wilcoxon_ndcg@10"] = {"p_value": wil.p_wilcoxon, "nonzero_pairs": wil.n_nonzero}
    if as_json:
        print(json.dumps(out, indent=2))
        return
    table = Table(title=f"{sa['run_name']} (A) vs {sb['run_name']} (B): {sa['dataset']}, {sa['stage']}, "
                        f"{len(users):,} paired users")
    for col in ("metric", "A", "B", "A - B", "95% CI (paired bootstrap)", "p (bootstrap)", "p (Wilcoxon)"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(r.metric, f"{r.mean_a:.4f}", f"{r.mean_b:.4f}", f"{r.delta:+.4f}",
                      f"[{r.ci95[0]:+.4f}, {r.ci95[1]:+.4f}]",
                      f"< {1 / (bootstrap + 1):.0e}" if r.p_bootstrap <= 1 / (bootstrap + 1) + 1e-12 else f"{r.p_bootstrap:.4g}",
                      "-" if r.p_wilcoxon is None else f"{r.p_wilcoxon:.4g}")
    console.print(table)
    console.print(f"Wilcoxon signed-rank on per-user NDCG@10: p = {wil.p_wilcoxon:.4g} "
                  f"({wil.n_nonzero:,} users with a non-zero difference; ties dropped)")
    if segments is not None:
        _show_paired_segments(segments, bootstrap)


def _p_text(p: float, bootstrap: int) -> str:
    return f"< {1 / (bootstrap + 1):.0e}" if p <= 1 / (bootstrap + 1) + 1e-12 else f"{p:.4g}"


def _show_paired_segments(segments: dict, bootstrap: int) -> None:
    """One row per segment: NDCG@10 A, B, A - B [CI], p; Recall@10 A - B, p (all metrics are in --json)."""
    from ..evaluation.segments import GROUPS

    table = Table(title="A vs B by segment (paired; all metrics in --json)")
    for col in ("segment", "users", "NDCG@10 A", "B", "A - B [95% CI]", "p", "Recall@10 A - B", "p "):
        table.add_column(col, justify="right")
    for group in GROUPS:
        for name, entry in segments[group].items():
            by = {r["metric"]: r for r in entry.get("comparisons", [])}
            if "ndcg@10" not in by:
                table.add_row(f"{group}: {name}", f"{entry['users']:,}", *["-"] * 6)
                continue
            n, r = by["ndcg@10"], by.get("recall@10")
            table.add_row(f"{group}: {name}", f"{entry['users']:,}", f"{n['mean_a']:.4f}", f"{n['mean_b']:.4f}",
                          f"{n['delta']:+.4f} [{n['ci95'][0]:+.4f}, {n['ci95'][1]:+.4f}]",
                          _p_text(n["p_bootstrap"], bootstrap),
                          "-" if r is None else f"{r['delta']:+.4f}",
                          "-" if r is None else _p_text(r["p_bootstrap"], bootstrap))
    console.print(table)


@eval_app.command("segments")
def segments(runs: List[str] = typer.Argument(..., help="finished run names (the first is paired with each other)"),
             dataset: str = typer.Option("ml-100k", "--dataset", "-d"),
             results_dir: Optional[Path] = ResultsOpt,
             out: Optional[Path] = typer.Option(None, help="folder for <dataset>.json and <dataset>.md "
                                                           "(default: <results root>/segments)"),
             bootstrap: int = typer.Option(10000, min=100, help="paired bootstrap resamples"),
             seed: int = typer.Option(0)) -> None:
    """Finished runs per segment (target popularity, history length, cold items), the first paired with the rest."""
    from ..evaluation.runfiles import dataset_key, write_run_file
    from ..evaluation.segment_report import segments_markdown, segments_report

    command = shlex.join(["recgen", "eval", "segments", *runs, "--dataset", dataset, "--bootstrap", str(bootstrap),
                          "--seed", str(seed)])
    folder = out or results_root(results_dir) / "segments"
    name = dataset_key(dataset)
    try:
        _check_segments_target(folder / f"{name}.json", list(runs))  # before the work: never over another report
        report = segments_report(results_root(results_dir), dataset, list(runs), n_boot=bootstrap, seed=seed,
                                 command=command)
    except (RecgenError, ValueError) as exc:
        _fail(exc)
    folder.mkdir(parents=True, exist_ok=True)
    write_run_file(folder, name, report)
    markdown = segments_markdown(report)
    (folder / f"{name}.md").write_text(markdown, encoding="utf-8")
    print(markdown)


def _check_segments_target(path: Path, runs: list[str]) -> None:
    """A segments report may replace only a report of the same runs (the same command made again): one of other
    runs (e.g. a committed comparison) is refused, naming them, before any work."""
    if not path.exists():
        return
    try:
        had = list(json.loads(path.read_text(encoding="utf-8")).get("runs", {}))
    except (OSError, ValueError, AttributeError):
        had = None
    if had != runs:
        held = ", ".join(had) if had else "something recgen did not write as a segments report"
        raise RecgenError(f"{path} holds the segments of {held}, not of {', '.join(runs)}: pass --out <folder> "
                          "for this comparison (nothing was overwritten)")


@eval_app.command("tune")
def tune(dataset: str = typer.Option("ml-100k", "--dataset", "-d"),
         system: str = typer.Option("itemknn", "--system", "-s",
                                    help=systems_help([n for n in SYSTEMS if n not in NOT_FOR_GRIDS])),
         grid: List[str] = typer.Option(..., "--grid", "-g", help="key=v1,v2,... (repeatable)"),
         param: Optional[List[str]] = typer.Option(None, "--param", "-p", help="fixed key=value"),
         users: int = typer.Option(0, help="seeded sample of validation users (0 = all)"),
         seed: int = typer.Option(0),
         metric: str = typer.Option("ndcg@10", help="selection metric on the validation stage"),
         results_dir: Optional[Path] = ResultsOpt,
         name: Optional[str] = typer.Option(None, help="output file name (default <system>-valid-grid)"),
         as_json: bool = typer.Option(False, "--json")) -> None:
    """Grid search on the validation stage only; writes <dataset>/tuning/<name>.json."""
    from ..evaluation.tuning import grid_search, parse_grid

    try:
        out = grid_search(dataset, system, parse_grid(grid), _parse_params(param), users=users, seed=seed,
                          metric=metric, results_dir=results_root(results_dir), name=name,
                          log=lambda m: console.print(f"[dim]{m}[/]"))
    except (RecgenError, ValueError, TypeError) as exc:
        _fail(exc)
    if as_json:
        print(json.dumps(out, indent=2))
    else:
        console.print(f"best on validation ({out['users']:,} users): {out['best']}")


@eval_app.command("requests")
def requests(dataset: str = typer.Option("ml-100k", "--dataset", "-d", help="dataset name or folder"),
             ranker: str = typer.Option("lm", help="lm (the LM second stage), retrieval (the first stage alone) or "
                                        "fusion (the learned second stage with its request ranker)"),
             users: int = typer.Option(200, help="seeded sample of test users (0 = all)"),
             seed: int = typer.Option(0, help="seed of the user sample and of the requests"),
             stage: str = typer.Option("test", help="test, or valid (requests from validation targets: for tuning)"),
             config: Optional[Path] = typer.Option(None, help="RecgenConfig file (JSON/YAML)"),
             param: Optional[List[str]] = typer.Option(None, "--param", "-p",
                                                       help="fusion system parameter key=value (repeatable)"),
             threads: Optional[int] = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
             results_dir: Optional[Path] = ResultsOpt,
             as_json: bool = typer.Option(False, "--json")) -> None:
    """Request following: requests built from held-out targets' attributes, run with and without the
    history and against the history alone; writes <dataset>/requests-<ranker>-test-u<N>-s<seed>.json."""
    import time

    from ..config import RecgenConfig
    from ..data import load_dataset
    from ..data.split_arrays import EvalData, check_stage, sample_users
    from ..evaluation.requests import evaluate_requests
    from ..evaluation.runfiles import write_run_file
    from ..evaluation.systems.fusion import fusion_requests
    from ..recommender import Recommender
    from ..retrieval.cache import index_folder

    display = progress_display(console) if not as_json else nullcontext()
    try:
        with display as progress, reporting(progress):  # the fit's stages and the users
            if ranker not in ("lm", "retrieval", "fusion"):
                raise ConfigError("--ranker must be lm, retrieval or fusion")
            if param and ranker != "fusion":
                raise ConfigError("--param sets fusion system parameters; use it with --ranker fusion")
            cfg = RecgenConfig.from_file(config) if config else RecgenConfig()
            cfg = cfg.updated(ranking={"second_stage": "lm"}) if ranker == "lm" else cfg  # the LM's order is measured
            started = time.perf_counter()
            data = EvalData.from_dataset(load_dataset(dataset))
            catalog = data.dataset.catalog
            folder = index_folder(data.dataset.name, catalog.fingerprint(), cfg.retrieval.embedder)
            if ranker == "fusion":
                recommend, fitted = fusion_requests(data, cfg, folder, log=lambda m: console.print(f"[dim]{m}[/]"),
                                                    **_threads_param(_parse_params(param), threads, ranker))
            else:
                rec = Recommender.from_dataset(data.train_dataset(), cfg, index_dir=folder)
                fitted = None

                def recommend(history: list[str], query: str | None, k: int) -> list[str]:
                    if ranker == "retrieval":
                        return [i for i, _ in rec.retriever.retrieve(history, query, n=k)]
                    return [r.item_id for r in rec.recommend(history=history, query=query, k=k, reasons=False)]

            positions = sample_users(data.n_users, users, seed)
            result = evaluate_requests(recommend, data, positions, seed=seed, stage=check_stage(stage))
    except (RecgenError, ValueError) as exc:
        _fail(exc)
    pool = cfg.retrieval.request_pool
    name = f"requests-{ranker}-{stage}-u{len(positions)}-s{seed}" + (f"-pool{pool}" if pool else "")
    summary = {"run_name": name, "dataset": data.dataset.name, "ranker": ranker, "stage": stage, "users": len(positions),
               "seed": seed, "command": shlex.join(["recgen", "eval", "requests", *sys.argv[3:]]),
               "config": cfg.model_dump(mode="json"), "wall_s": round(time.perf_counter() - started, 1),
               **({"fusion": fitted} if fitted else {}),
               "summary": result["summary"], "per_request_file": f"{name}.rows.jsonl.gz"}
    write_run_file(results_root(results_dir) / data.dataset.name, name, summary, rows=result["rows"])
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    table = Table(title=f"{name}: request following on {data.dataset.name} ({len(positions)} users)")
    for column in ("requests", "way", "satisfying share", "Hit@10", "NDCG@10"):
        table.add_column(column)
    for kind, entry in result["summary"].items():
        for way in ("request+history", "request", "history"):
            row = entry[way]
            table.add_row(f"{kind} ({entry['requests']})", way, f"{row['satisfying_share']}", f"{row['hit@10']:.4f}",
                          f"{row['ndcg@10']:.4f}")
    console.print(table)


@eval_app.command("cold")
def cold(dataset: str = typer.Option("ml-100k", "--dataset", "-d", help="dataset name or folder"),
         protocol: str = typer.Option("items", help="items (cold items released after the cut-off) or users "
                                      "(new users with 1-3 interactions, and query-only users)"),
         share: float = typer.Option(0.1, help="items: share of the test-target items released after the cut-off"),
         users: int = typer.Option(300, help="users: new users held out of training"),
         lm_users: int = typer.Option(300, help="items: seeded sample of cold-target users the LM ranks (0 = no LM)"),
         seed: int = typer.Option(0, help="seed of the cold items / new users and of the samples"),
         fusion: Optional[List[str]] = typer.Option(None, "--fusion", help="items: add the fused ranker, fitted on "
                                                    "the cold view, with these item-representation groups "
                                                    "(comma-separated, 'none' = the base layout); repeatable"),
         fusion_param: Optional[List[str]] = typer.Option(None, "--fusion-param", help="items: key=value for every "
                                                          "--fusion system (repeatable), as `eval run -p`"),
         results_dir: Optional[Path] = typer.Option(None, "--results-dir", help=RESULTS_HELP + "; the file goes "
                                                    "to <root>/cold/<dataset>-cold-<protocol>.json"),
         as_json: bool = typer.Option(False, "--json")) -> None:
    """Cold start (recgen.evaluation.cold): Recall@20 / NDCG@10 with 95% CIs of text retrieval, the served
    hybrid, the LM (paired with the text order) and the collaborative baselines on cold items or new users."""
    import time

    from ..data import load_dataset
    from ..evaluation.cold import run_cold_items, run_cold_users
    from ..evaluation.protocol import EvalData
    from ..evaluation.runfiles import write_run_file
    from ..evaluation.systems import make_system

    try:
        if protocol not in ("items", "users"):
            raise ConfigError("--protocol must be items or users")
        started = time.perf_counter()
        data = EvalData.from_dataset(load_dataset(dataset))
        systems = {"popular": make_system("popular"), "itemknn": make_system("itemknn"),
                   "text": make_system("retrieval", {"collaborative_weight": 0}),
                   "hybrid": make_system("retrieval")}
        for groups in fusion or []:
            chosen = [] if groups == "none" else [g.strip() for g in groups.split(",") if g.strip()]
            systems["fusion" + "".join(f"+{g}" for g in chosen)] = make_system(
                "fusion", {**_parse_params(fusion_param), "item_features": chosen})
        log = lambda message: console.print(f"[dim]{message}[/]")
        if protocol == "items":
            lm = make_system("lm", {"config": {"retrieval": {"collaborative_weight": 0}}}) if lm_users else None
            result = run_cold_items(data, systems, share=share, seed=seed, lm=lm, lm_users=lm_users, log=log)
        else:
            result = run_cold_users(data, systems, users=users, seed=seed, log=log)
    except (RecgenError, ValueError) as exc:
        _fail(exc)
    out = {"dataset": data.dataset.name, "protocol": protocol,
           "command": shlex.join(["recgen", "eval", "cold", *sys.argv[3:]]),
           "wall_s": round(time.perf_counter() - started, 1), **result}
    write_run_file(results_root(results_dir) / "cold", f"{data.dataset.name}-cold-{protocol}", out)
    print(json.dumps(out, indent=2)) if as_json else console.print_json(json.dumps(out))


@eval_app.command("reasons")
def reasons(dataset: str = typer.Option("ml-100k", "--dataset", "-d", help="dataset name or folder"),
            users: int = typer.Option(200, help="seeded sample of users (0 = all)"),
            seed: int = typer.Option(0, help="seed of the user sample and of the audit sample"),
            k: int = typer.Option(10, min=1, help="reasons per user (the served top k)"),
            variant: str = typer.Option("today", help="name of the generation setting; runs land side by side"),
            config: Optional[Path] = typer.Option(None, help="RecgenConfig file (JSON/YAML)"),
            adapter: Optional[str] = typer.Option(None, help="LoRA adapter folder (sets lm.adapter)"),
            threads: Optional[int] = typer.Option(None, min=1, help="torch CPU threads (sets lm.threads)"),
            audit_size: int = typer.Option(150, min=1, help="reasons in the audit file"),
            results_dir: Optional[Path] = typer.Option(None, "--results-dir", help=RESULTS_HELP + "; aggregates go "
                                                       "to <root>/reasons/<dataset>/"),
            audit_dir: Optional[Path] = typer.Option(None, help="per-user rows and audit file (they quote dataset "
                                                     "text, so not the repo); default ~/.cache/recgen/reasons"),
            overwrite: bool = typer.Option(False, "--overwrite", help="start this variant again instead of resuming"),
            grade_only: bool = typer.Option(False, "--grade-only", help="no LM: grade and aggregate the users done "
                                            "so far (a partial run, or new measures)"),
            hand_graded: Optional[Path] = typer.Option(None, help="hand grades (JSONL) to compare with the automatic "
                                                       "measure: agreement and Cohen's kappa"),
            requests: bool = typer.Option(False, "--requests", help="each user also asks for something (a request "
                                          "built from their validation item: 'a 90s comedy film', 'a conditioner')"),
            as_json: bool = typer.Option(False, "--json")) -> None:
    """Reason quality: model-written share, grounding in the facts, personalisation, degenerate text and
    latency, on a seeded sample of users (resumable); writes <root>/reasons/<dataset>/<variant>-u<N>-s<seed>.json/.md."""
    import re

    from ..config import RecgenConfig
    from ..evaluation.reasons import ReasonEvalSpec, run_reason_eval

    try:
        if not re.fullmatch(r"[A-Za-z0-9_.+-]{1,60}", variant):
            raise ConfigError("--variant must be 1-60 letters, digits or _.+- (it names result files)")
        cfg = RecgenConfig.from_file(config) if config else RecgenConfig()
        changes = {k_: v for k_, v in (("adapter", adapter), ("threads", threads)) if v is not None}
        if changes:
            cfg = cfg.updated(lm=changes)
        spec = ReasonEvalSpec(dataset=dataset, users=users, seed=seed, k=k, variant=variant, config=cfg,
                              results_dir=results_root(results_dir) / "reasons", audit_dir=audit_dir, audit_size=audit_size,
                              overwrite=overwrite, grade_only=grade_only, hand_graded=hand_graded, requests=requests,
                              command=shlex.join(["recgen", "eval", "reasons",
                                                  *(a for a in sys.argv[3:] if a != "--grade-only")]))
        summary = run_reason_eval(spec, log=lambda message: console.print(f"[dim]{message}[/]"))
    except (RecgenError, ValueError) as exc:
        _fail(exc)
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    served = summary["served"]
    console.print(f"{summary['run_name']} on {summary['dataset']}: {summary['users']} users; model-written and "
                  f"passing {served.get('model_written_and_passing')}, with an unsupported claim "
                  f"{served.get('grounding', {}).get('with_unsupported_claim')}, related item or request "
                  f"{served.get('personalisation', {}).get('names_related_item_or_request')}; "
                  f"{summary['latency'].get('per_list_s', {}).get('mean')} s per list")


@eval_app.command("report")
def report(dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="one dataset folder (default: all)"),
           results_dir: Optional[Path] = ResultsOpt,
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Regenerate README.md tables, SUMMARY.md and PNG plots (metrics by K, wall time per stage)."""
    from ..evaluation.report import write_reports

    root = results_root(results_dir)
    if not root.is_dir():
        _fail(RecgenError(f"no results folder {root}; run `recgen eval run` first"))
    written = write_reports(root, dataset)
    if as_json:
        print(json.dumps({"written": [str(p) for p in written]}, indent=2))
    else:
        for path in written:
            console.print(f"wrote {path}")


if __name__ == "__main__":
    eval_app()

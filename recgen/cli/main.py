"""``recgen``: index, recommend, demo (and eval, finetune, serve, chat, batch from their modules)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..atomic import check_output_folder, check_outside
from ..config import MAX_CANDIDATES
from ..data import load_catalog_file, load_dataset
from ..pipeline import fitted_folder
from ..recommender import Recommender, open_dataset
from ..retrieval.cache import build_and_save, index_folder
from ..text import check_id, check_text
from ..types import RANKER_NAMES
from . import batch_cmd, eval_cmd, feedback_cmd, finetune_cmd, fit_cmd, serve_cmd, synth_cmd
from .common import (
    BadRowsOpt,
    console,
    friendly_errors,
    history_for_user,
    make_config,
    parse_history,
    print_json,
    report_skipped,
)

app = typer.Typer(help="LLM-based generative recommender: ranked catalog items, each with a reason.",
                  no_args_is_help=True, pretty_exceptions_enable=False)



@app.callback()
def _main() -> None:
    # Input decoding policy, for every command: bytes on stdin that are not UTF-8 (a Latin-1 terminal, a binary
    # pipe) are decoded as lone surrogates, as Python already decodes argv, instead of crashing the read; the one
    # text validator (recgen.text) then refuses them with a clear error (exit 2; the terminal chat prints it and
    # goes on), so they never reach a tokenizer.
    reconfigure = getattr(sys.stdin, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="surrogateescape")


DatasetOpt = typer.Option("ml-100k", "--dataset", "-d", help="dataset name (under RECGEN_DATA_DIR or ../shared/data) or folder")


@app.command()
@friendly_errors
def index(dataset: str = DatasetOpt, embedder: Optional[str] = typer.Option(None, help="sentence-transformers name or path"),
          out: Optional[Path] = typer.Option(None, help="index folder (default: the cache)"),
          add: Optional[Path] = typer.Option(None, "--add", help="items file (JSONL/CSV) to add to the saved "
                                              "recommender in --out (made from --dataset when absent), no rebuild"),
          update: bool = typer.Option(False, "--update", help="with --add: replace items whose id exists"),
          config: Optional[Path] = typer.Option(None, help="config file (JSON or YAML): retrieval.embed_backend, "
                                                "retrieval.index, fit.embed_checkpoint, ..."),
          bad_rows: Optional[str] = BadRowsOpt,
          as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Build the retrieval index for a dataset's catalog (cached; rebuilt when the catalog changes), or add
    items to a saved recommender's catalog and index (--add). The embedding is checkpointed in chunks: a build
    killed midway resumes from its last finished chunk."""
    cfg = make_config(config, retrieval={"embedder": embedder}, data={"bad_rows": bad_rows})
    if add is not None:
        return add_items_cmd(dataset, add, out, update, as_json, cfg)
    data = load_dataset(dataset, cfg.data.bad_rows)
    skipped = report_skipped(data)
    folder = out or index_folder(data.name, data.catalog.fingerprint(), cfg.retrieval.embedder)
    check_output_folder(folder)  # before the (slow) embedding: writable, and never a folder recgen did not write
    start = time.perf_counter()
    retriever = build_and_save(data.catalog, cfg.retrieval, folder, show_progress=not as_json,
                               chunk=cfg.fit.embed_checkpoint)
    seconds = time.perf_counter() - start
    meta = retriever.index_meta
    info = {"dataset": data.name, "items": len(data.catalog), "index": str(folder), "seconds": round(seconds, 2),
            "embedding": retriever.embedding_report,
            "kind": meta.kind, "factory": meta.factory, "search_params": meta.search_params,
            f"recall@{meta.recall_at}": meta.held_out_recall, "held_out_queries": meta.held_out_queries,
            "reason": meta.reason, **skipped}
    if as_json:
        print_json(info)
    else:
        console.print(f"indexed {info['items']} items of {data.name} in {seconds:.1f} s → {folder}\n{meta.describe()}")


def add_items_cmd(dataset: str, items_file: Path, out: Optional[Path], update: bool, as_json: bool,
                  cfg) -> None:
    """`recgen index --add`: the saved recommender in ``out`` (or a new one from ``dataset``) grows by the
    items of ``items_file`` (only they are embedded) and is saved back with its new catalog fingerprint."""
    if out is None:
        raise typer.BadParameter("--add needs --out: the saved recommender folder to update (or create)")
    check_outside(items_file, out, "items file")
    check_output_folder(out)  # before embedding anything: writable, and never a folder recgen did not write
    items = load_catalog_file(items_file).items
    rec = Recommender.load(out) if (out / "config.json").is_file() else open_dataset(dataset, cfg)[1]
    start = time.perf_counter()
    before = len(rec.catalog)
    size = rec.add_items(items, update=update)
    rec.save(out)
    info = {"added": size - before, "updated": len(items) - (size - before), "items": size, "recommender": str(out),
            "catalog_fingerprint": rec.catalog.fingerprint(), "seconds": round(time.perf_counter() - start, 2)}
    if as_json:
        print_json(info)
    else:
        console.print(f"added {info['added']} and updated {info['updated']} item(s): {size} items in {out} "
                      f"({info['seconds']:.1f} s)")


def _show(recs, title: str) -> None:
    ranker = recs[0].ranker if recs else None
    table = Table(title=title, show_lines=False, caption=f"ordered by: {RANKER_NAMES[ranker]}" if ranker else None)
    for column in ("#", "item", "title", "score", "reason"):
        table.add_column(column, overflow="fold")
    for r in recs:
        table.add_row(str(r.rank), r.item_id, r.title, f"{r.score:.3f}", r.reason or "")
    console.print(table)


@app.command()
@friendly_errors
def recommend(dataset: str = DatasetOpt,
              user: Optional[str] = typer.Option(None, "--user", "-u", help="a user id of the dataset"),
              history: Optional[str] = typer.Option(None, help="comma-separated item ids, oldest first"),
              query: Optional[str] = typer.Option(None, "--query", "-q", help="free-text request"),
              k: int = typer.Option(10, "-k", min=1, max=MAX_CANDIDATES, help="how many items"),
              mode: str = typer.Option("score", help="score (verbalizer) or generate (constrained decoding)"),
              reasons: bool = typer.Option(True, "--reasons/--no-reasons"),
              lm: Optional[str] = typer.Option(None, help="HF model id or folder (default SmolLM2-135M-Instruct)"),
              adapter: Optional[str] = typer.Option(None, help="peft LoRA adapter folder"),
              embedder: Optional[str] = typer.Option(None),
              config: Optional[Path] = typer.Option(None, help="config file (JSON or YAML) with RecgenConfig keys"),
              as_json: bool = typer.Option(False, "--json")) -> None:
    """Recommend for a dataset user, a given history, and/or a free-text request."""
    if mode not in ("score", "generate"):
        raise typer.BadParameter("mode must be 'score' or 'generate'")
    if query is not None:
        check_text(query, "--query")  # before loading anything (the request schema checks it again)
    if user is not None:
        check_id(user, "--user")
    cfg = make_config(config, lm={"model": lm, "adapter": adapter}, retrieval={"embedder": embedder})
    data, rec = open_dataset(dataset, cfg, show_progress=not as_json)
    items = parse_history(history) or []
    if user is not None:
        items = history_for_user(data, user) + items
    start = time.perf_counter()
    recs = rec.recommend(history=items, query=query, k=k, mode=mode, reasons=reasons)
    seconds = time.perf_counter() - start
    if as_json:
        print_json({"user": user, "history": items, "query": query, "seconds": round(seconds, 3),
                    "ranker": recs[0].ranker if recs else None, "recommendations": [r.model_dump() for r in recs],
                    "unused_words": list(recs.unused_words)})
        return
    if items:
        console.print("[bold]history[/] (last 5): " + "; ".join(data.catalog.get(i).title for i in items[-5:]))
    _show(recs, f"recgen — {len(recs)} for {'user ' + user if user else 'you'} ({seconds:.1f} s)")
    for warning in dict.fromkeys(r.warning for r in recs if r.warning):
        console.print(f"[yellow]note:[/] {warning} (marked items do not match the request)")
    if recs.unused_note():
        console.print(f"[yellow]note:[/] {recs.unused_note()}")


@app.command()
@friendly_errors
def demo(data_path: str = typer.Option("ml-100k", "--dataset", "-d", help="MovieLens-100k folder or name"),
         user: str = typer.Option("1", help="user to recommend for"),
         k: int = typer.Option(5, "-k", min=1, max=MAX_CANDIDATES, help="how many items"),
         as_json: bool = typer.Option(False, "--json")) -> None:
    """The main job on the embedded defaults: the fused order of a fitted dataset, with reasons, for one user.
    The first run fits the dataset (``recgen fit``, ~30 s on ml-100k) and caches it, so a newcomer sees the
    default path, not the unfitted fallback; later runs load the cached fit."""
    cfg = make_config()
    fit_if_missing(data_path, cfg)
    data, rec = open_dataset(data_path, cfg, show_progress=not as_json)
    items = history_for_user(data, user)
    start = time.perf_counter()
    recs = rec.recommend(history=items, k=k, reasons=True)
    seconds = time.perf_counter() - start
    if as_json:
        print_json({"user": user, "seconds": round(seconds, 3), "recommendations": [r.model_dump() for r in recs]})
        return
    console.print("[bold]history[/] (last 5): " + "; ".join(data.catalog.get(i).title for i in items[-5:]))
    _show(recs, f"recgen demo — user {user} of {data.name} ({seconds:.1f} s)")


def fit_if_missing(dataset: str, cfg) -> bool:
    """Run ``recgen fit`` for ``dataset`` (True) when the fused second stage is configured and no fit is cached
    where ``open_dataset`` looks for it; progress goes to stderr, so ``--json`` output stays clean."""
    folder = fitted_folder(load_dataset(dataset), cfg.retrieval)
    if cfg.ranking.second_stage != "fusion" or (folder / "config.json").is_file():  # what open_dataset loads
        return False
    console.print(f"[bold]first run:[/] fitting {dataset} once (retrieval index + fused second stage; cached for "
                  "the next runs)")
    command_defaults(fit_cmd.fit)(dataset=dataset, threads=2)
    return True


def command_defaults(command):
    """``command`` (a typer command function) callable from Python with its options' defaults: typer keeps each
    default inside an ``OptionInfo``, which a direct call would pass on as the value (twice a new ``recgen fit``
    option broke the first-run fit that way: --lm-stage, then --bad-rows)."""
    import inspect

    from typer.models import ParameterInfo

    defaults = {name: p.default.default if isinstance(p.default, ParameterInfo) else p.default
                for name, p in inspect.signature(command).parameters.items() if p.default is not inspect.Parameter.empty}
    return lambda **given: command(**{**defaults, **given})


app.add_typer(eval_cmd.eval_app, name="eval")
app.add_typer(finetune_cmd.finetune_app, name="finetune")
app.command(name="serve")(serve_cmd.serve)
app.command(name="chat")(serve_cmd.chat)
app.command(name="batch")(batch_cmd.batch)
app.command(name="fit")(fit_cmd.fit)
app.command(name="synth")(synth_cmd.synth)
app.command(name="forget")(feedback_cmd.forget)
app.command(name="refit", help="Same as `recgen fit`: re-fit every stage on the dataset + its event log.")(fit_cmd.fit)

if __name__ == "__main__":
    app()

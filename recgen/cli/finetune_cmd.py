"""`recgen finetune ...`: LoRA SFT of the ranker and contrastive tuning of the retriever."""

from __future__ import annotations

import shlex
import sys
from typing import Optional

import typer

finetune_app = typer.Typer(help="Fine-tune the ranker (LoRA SFT) or the retriever (contrastive).")


@finetune_app.callback(invoke_without_command=True)
def by_recipe(ctx: typer.Context,
              config: Optional[str] = typer.Option(None, "--config", "-c",
                                                   help="finetune/<name>.yaml; its `kind` picks ranker or retriever"),
              resume: Optional[str] = typer.Option(None, help="ranker only: 'latest' or a checkpoint folder")) -> None:
    """`recgen finetune --config finetune/<name>.yaml` runs the recipe, whichever kind it is."""
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
    from ..errors import RecgenError
    from ..finetune.config import recipe_kind

    try:
        kind = recipe_kind(config)
    except RecgenError as exc:
        _fail(exc)
    if kind == "retriever":
        if resume is not None:
            _fail(ValueError("--resume applies to ranker recipes only"))
        retriever(config)
    else:
        ranker(config, resume=resume, max_steps=None, output_dir=None)


def _command() -> str:
    args = sys.argv[1:]
    if args[:1] != ["finetune"]:  # run as the finetune app itself rather than through `recgen`
        args = ["finetune", *args]
    return "recgen " + " ".join(shlex.quote(a) for a in args)


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@finetune_app.command()
def ranker(config: str = typer.Option(..., "--config", "-c", help="finetune/<name>.yaml"),
           resume: Optional[str] = typer.Option(None, help="'latest' or a checkpoint folder"),
           max_steps: Optional[int] = typer.Option(None, help="override train.max_steps"),
           output_dir: Optional[str] = typer.Option(None, help="override output_dir")) -> None:
    """LoRA SFT of the LM ranker on verbalizer-label targets; writes a peft adapter folder."""
    from ..errors import RecgenError
    from ..finetune.config import load_ranker_config
    from ..finetune.trainer import RankerTrainer

    try:
        cfg = load_ranker_config(config)
        if max_steps is not None:
            cfg.train.max_steps = max_steps
        if output_dir is not None:
            cfg.output_dir = output_dir
        trainer = RankerTrainer(cfg, command=_command()).prepare()
        summary = trainer.train(resume=resume)
    except RecgenError as exc:
        _fail(exc)
    typer.echo(f"best validation NDCG@10 {summary['best_validation_ndcg@10']} at step {summary['best_step']}; "
               f"adapter: {summary['adapter_dir']}")


@finetune_app.command()
def retriever(config: str = typer.Option(..., "--config", "-c", help="finetune/<name>.yaml")) -> None:
    """Contrastive (MultipleNegativesRankingLoss) tuning of the embedding model; rebuilds the index."""
    from ..errors import RecgenError
    from ..finetune.config import load_retriever_config
    from ..finetune.retriever import finetune_retriever

    try:
        summary = finetune_retriever(load_retriever_config(config), command=_command())
    except RecgenError as exc:
        _fail(exc)
    typer.echo(f"validation Recall@20 {summary['valid_before']['recall@20']:.4f} -> "
               f"{summary['valid_after']['recall@20']:.4f}; model: {summary['model_dir']}")


@finetune_app.command("calibrate")
def calibrate(dataset: str = typer.Option("ml-100k", "--dataset", "-d"),
              adapter: Optional[str] = typer.Option(None, help="adapter folder (none = the zero-shot LM)"),
              users: int = typer.Option(500, help="seeded sample of VALIDATION users"),
              seed: int = typer.Option(1, help="seed of the validation sample"),
              threads: Optional[int] = typer.Option(None, help="torch CPU threads"),
              out: Optional[str] = typer.Option(None, help="folder for calibration_*.json"),
              as_json: bool = typer.Option(False, "--json", help="print the result as JSON on stdout")) -> None:
    """Choose retrieval_prior (LM log-prob + prior x -ln(retrieval position)) on validation users."""
    import json

    from ..errors import RecgenError
    from ..finetune.calibrate import calibrate as run

    try:
        result = run(dataset, adapter, users=users, seed=seed, threads=threads, out=out, command=_command(),
                     log=lambda message: typer.echo(message, err=True))
    except RecgenError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo(f"use -p retrieval_prior={result['best']['retrieval_prior']:g} "
                   f"(validation NDCG@10 {result['best']['ndcg@10']:.4f})")


if __name__ == "__main__":
    finetune_app()

"""``recgen batch``: a JSONL file of requests → OpenAI-batch-shaped JSONL results, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import console, friendly_errors, make_config, print_json


@friendly_errors
def batch(input: Path = typer.Option(..., "--input", "-i", help="requests, one JSON object a line (recgen or OpenAI batch format)"),
          output: Path = typer.Option(..., "--output", "-o", help="results (appended; ids already there are skipped)"),
          dataset: str = typer.Option("ml-100k", "--dataset", "-d", help="dataset name or folder (users are resolved in it)"),
          batch_size: int = typer.Option(8, "--batch-size", min=1, help="requests ranked together in one LM batch"),
          errors: Optional[Path] = typer.Option(None, "--errors", help="bad input lines (default: <output>.errors.jsonl)"),
          lm: Optional[str] = typer.Option(None, help="HF model id or folder (default SmolLM2-135M-Instruct)"),
          adapter: Optional[str] = typer.Option(None, help="peft LoRA adapter folder"),
          embedder: Optional[str] = typer.Option(None, help="sentence-transformers name or path"),
          backend: Optional[str] = typer.Option(None, help="transformers (default) or vllm"),
          threads: Optional[int] = typer.Option(None, min=1, help="torch CPU threads (per worker with --ray)"),
          config: Optional[Path] = typer.Option(None, help="config file (JSON or YAML) with RecgenConfig keys"),
          ray: bool = typer.Option(False, "--ray", help="run on Ray Data (pip install 'recgen\\[ray]')"),
          workers: int = typer.Option(2, "--workers", min=1, help="Ray actors, each with its own Recommender"),
          gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", min=0.0,
                                                help="GPUs per Ray actor (1 with --backend vllm on a GPU cluster)"),
          as_json: bool = typer.Option(False, "--json", help="print a JSON summary on stdout")) -> None:
    """Recommend for every request of a JSONL file. Re-running the same command resumes a killed job.

    Input, output and errors file must be three different files; one job at a time writes an output
    (a lock on <output>.lock)."""
    from ..batch.runner import run_batch

    cfg = make_config(config, lm={"model": lm, "adapter": adapter, "backend": backend, "threads": threads},
                      retrieval={"embedder": embedder})
    try:
        summary = run_batch(input, output, dataset=dataset, config=cfg, batch_size=batch_size, errors_path=errors,
                            use_ray=ray, ray_workers=workers, ray_gpus_per_worker=gpus_per_worker,
                            show_progress=not as_json and console.is_terminal, console=console)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished batches are in the output; run the same command to resume")
        raise typer.Exit(130) from None
    if as_json:
        print_json(summary.to_dict())
        return
    bad = summary.malformed + summary.duplicates
    console.print(
        f"{summary.processed} processed ({summary.failed} with an error), {summary.already_done} already done, "
        f"{bad} bad line(s){' → ' + summary.errors_file if bad else ''}; "
        f"{summary.users_per_second:.2f} users/s over {summary.seconds:.1f} s (+{summary.load_seconds:.1f} s loading) → {output}"
    )

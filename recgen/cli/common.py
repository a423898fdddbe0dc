"""Options and loading shared by CLI commands: dataset → recommender, user → history, errors → exit 2."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Callable

import typer
from rich.console import Console
from rich.markup import escape

from ..config import RecgenConfig
from ..data import Dataset
from ..errors import RecgenError
from ..lm.adapters import check_named

console = Console(stderr=True)

#: ``--bad-rows`` of the commands that load a dataset's files (config ``data.bad_rows``; default error).
BadRowsOpt = typer.Option(None, "--bad-rows", help="a malformed row of the interactions file: error = stop "
                          "with its file and line (exit 2, the default), skip = leave it out and name its lines "
                          "(config: data.bad_rows)")


def report_skipped(dataset: Dataset) -> dict:
    """Print which rows ``--bad-rows skip`` left out (stderr, also with --json); their count and first lines
    for a JSON summary."""
    note = dataset.skipped_note()
    if note:
        console.print(f"[yellow]{escape(note)}[/]")
    return {"skipped_rows": dataset.skipped_rows, "skipped_lines": dataset.skipped_lines[:100]}


def friendly_errors(func: Callable) -> Callable:
    """Turn a :class:`RecgenError` into one red line and exit code 2, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except RecgenError as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}")
            raise typer.Exit(2) from None

    return wrapper


def make_config(config_file: Path | None = None, **groups: dict) -> RecgenConfig:
    """The config file (or the defaults) with the command-line options that were given on top, e.g.
    ``make_config(path, lm={"model": lm, "adapter": None})``: options left at ``None`` change nothing."""
    base = RecgenConfig.from_file(config_file) if config_file else RecgenConfig()
    given = {group: {k: v for k, v in values.items() if v is not None} for group, values in groups.items()}
    config = base.updated(str(config_file or "options"), **{g: v for g, v in given.items() if v})
    check_named(config.lm)  # now, not when (or if) the LM is first needed
    return config


def history_for_user(dataset: Dataset, user: str, holdout: int = 0) -> list[str]:
    """A user's history; ``holdout`` drops the last items (e.g. 2 to hide leave-one-out targets)."""
    seq = dataset.history(user)
    return list(seq[: len(seq) - holdout] if holdout else seq)


def parse_history(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]


def print_json(data) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")

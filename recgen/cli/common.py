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

console = Console(stderr=True)


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


def make_config(config_file: Path | None = None, **overrides) -> RecgenConfig:
    base = RecgenConfig.from_file(config_file).model_dump() if config_file else {}
    base.update({k: v for k, v in overrides.items() if v is not None})
    return RecgenConfig.validated(base, str(config_file or "options"))


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

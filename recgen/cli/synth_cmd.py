"""``recgen synth``: write a synthetic dataset with learnable structure (``recgen.data.synth``) at a named or
custom size, for cost curves and scale tests; then ``recgen fit -d <folder>`` / ``recgen eval run -d <folder>``."""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import typer

from ..data.synth import FORMATS, SIZES, SynthSpec, generate
from ..errors import ConfigError
from ..progress import progress_display, reporting, task
from .common import console, friendly_errors, print_json

SIZE_HELP = "named size: " + ", ".join(f"{k} ({v[0]:,} items, {v[1]:,} interactions, {v[2]:,} users)"
                                       for k, v in SIZES.items())


@friendly_errors
def synth(size: Optional[str] = typer.Option(None, "--size", "-s", help=SIZE_HELP),
          items: Optional[int] = typer.Option(None, "--items", help="catalog size (overrides --size)"),
          interactions: Optional[int] = typer.Option(None, "--interactions", help="interactions (overrides --size)"),
          users: Optional[int] = typer.Option(None, "--users", help="users (overrides --size)"),
          seed: int = typer.Option(0, "--seed", help="same size + seed, same bytes"),
          out: Path = typer.Option(..., "--out", "-o", help="folder to write (refused if it holds files recgen "
                                   "did not write)"),
          fmt: str = typer.Option("csv", "--format", help=f"interactions file: {' or '.join(FORMATS)}"),
          as_json: bool = typer.Option(False, "--json", help="print the summary as JSON on stdout")) -> None:
    """Generate a dataset: topics with titles/attributes from topic vocabularies, power-law popularity, drifting
    user tastes, Markov transitions and cold items, written as items.jsonl + interactions.csv (or .parquet)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    spec = SynthSpec.sized(size, items=items, interactions=interactions, users=users, seed=seed)
    started = time.perf_counter()
    display = nullcontext() if as_json else progress_display(console)  # bars on a terminal, log lines elsewhere
    with display as progress, reporting(progress), task("synth: items", spec.items) as advance_items, \
            task("synth: users", spec.users) as advance_users:
        steps = {"items": advance_items, "users": advance_users}
        info = generate(spec, out, fmt, on_progress=lambda stage, done, total: steps[stage](done))
    info["seconds"] = round(time.perf_counter() - started, 1)
    if as_json:
        print_json(info)
    else:
        console.print(f"wrote {spec.items:,} items, {spec.interactions:,} interactions, {spec.users:,} users "
                      f"({info['topics']} topics, cold share {info['cold_share']:.1%}) to {out} in "
                      f"{info['seconds']:.1f} s")


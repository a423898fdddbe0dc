"""Progress for long steps, one way everywhere: a rich bar on a terminal, plain log lines elsewhere (a job log,
CI, ``nohup``), so progress is visible either way. Both offer the part of rich's ``Progress`` API recgen uses:
``start``, ``stop``, ``add_task``, ``update``, ``advance``, and use as a context manager.

A command makes its display the active one (:func:`reporting`); any stage deep inside (feature building, a
LightGBM trial, SASRec epochs) then reports through :func:`task` without a display being passed down every
signature, and reports nothing when no display is active (the Python API, tests, ``--json``)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator

_ACTIVE: ContextVar = ContextVar("recgen_progress", default=None)


@contextmanager
def reporting(progress) -> Iterator:
    """Make ``progress`` (a display, or None for none) the one :func:`task` reports to, inside the block."""
    token = _ACTIVE.set(progress)
    try:
        yield progress
    finally:
        _ACTIVE.reset(token)


def active():
    """The active display, or None."""
    return _ACTIVE.get()


@contextmanager
def task(description: str, total: float | None = None) -> Iterator[Callable[..., None]]:
    """A task on the active display; yields ``advance(n=1)`` (a no-op when no display is active)."""
    progress = _ACTIVE.get()
    if progress is None:
        yield lambda n=1: None
        return
    task_id = progress.add_task(description, total=total)
    try:
        yield lambda n=1: progress.advance(task_id, n)
    finally:
        if total is None:
            progress.update(task_id, total=1, completed=1)
        if hasattr(progress, "finish"):  # a log display says where the task ended (a bar already shows it)
            progress.finish(task_id)


class LogProgress:
    """Progress as plain log lines (every 10% or 60 s) where stderr is not a terminal (a job log, CI, nohup),
    with the part of rich's Progress API the harness uses."""

    def __init__(self, console, every_s: float = 60.0):
        self.console = console
        self.every_s = every_s
        self.tasks: dict[int, dict] = {}

    def start(self) -> None:
        pass

    def stop(self) -> None:
        for task in self.tasks.values():
            if task["done"] != task["logged"]:
                self._log(task)

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **_) -> int:
        self.tasks[len(self.tasks)] = {"description": description, "total": total, "done": completed,
                                       "logged": completed,
                                       "started": time.monotonic(), "last": time.monotonic()}
        return len(self.tasks) - 1

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(self, task_id: int, advance: float = 0, completed: float | None = None, total: float | None = None,
               **_) -> None:
        task = self.tasks[task_id]
        if total is not None:
            task["total"] = total
        task["done"] = completed if completed is not None else task["done"] + advance
        step = (task["total"] or 0) / 10
        if time.monotonic() - task["last"] >= self.every_s or (step and task["done"] - task["logged"] >= step):
            self._log(task)

    def finish(self, task_id: int) -> None:
        """A task ended (maybe short of its total: an early-stopped trial): log where it ended, now."""
        task = self.tasks[task_id]
        if task["done"] != task["logged"]:
            self._log(task)

    def _log(self, task: dict) -> None:
        elapsed = time.monotonic() - task["started"]
        total = f"/{task['total']:,.0f}" if task["total"] else ""
        self.console.print(f"{task['description']}: {task['done']:,.0f}{total} ({elapsed:.0f} s)", highlight=False)
        task["logged"], task["last"] = task["done"], time.monotonic()

    def __enter__(self) -> "LogProgress":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def progress_display(console, title: str = "{task.description}", *fields: str, every_s: float = 60.0):
    """A rich ``Progress`` (title, bar, M/N, ``fields`` text columns, elapsed, remaining) when ``console`` is a
    terminal, else a :class:`LogProgress` printing a line every 10% or ``every_s`` seconds."""
    if not console.is_terminal:
        return LogProgress(console, every_s)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn(title), BarColumn(), MofNCompleteColumn(), *(TextColumn(f) for f in fields),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)

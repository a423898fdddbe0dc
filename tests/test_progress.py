"""Progress is visible without a terminal: log lines every 10% (or every N seconds), none with a bar."""

from __future__ import annotations

import io

from rich.console import Console

from recgen.progress import LogProgress, progress_display


def test_without_a_terminal_progress_is_log_lines_every_tenth():
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    with progress_display(console, "[bold]batch[/]", "{task.fields[rate]} users/s") as progress:
        assert isinstance(progress, LogProgress)
        task = progress.add_task("ranking", total=100, rate="-")
        for _ in range(100):
            progress.advance(task, 1)
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and lines[0].startswith("ranking: 10/100") and lines[-1].startswith("ranking: 100/100")


def test_on_a_terminal_it_is_a_rich_bar():
    from rich.progress import Progress

    console = Console(file=io.StringIO(), force_terminal=True)
    assert isinstance(progress_display(console), Progress)


def test_resumed_tasks_count_from_where_they_were():
    out = io.StringIO()
    progress = LogProgress(Console(file=out, force_terminal=False, width=200), every_s=3600)
    task = progress.add_task("train", total=10, completed=7)
    progress.update(task, completed=8)
    progress.stop()
    assert out.getvalue().strip().startswith("train: 8/10")

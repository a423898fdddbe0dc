"""Reading data files so that every bad byte or malformed row becomes a :class:`DataError` naming file and line.

UTF-8 files are read as ``utf-8-sig``: a byte-order mark (Excel writes one) is dropped instead of
becoming part of the first column name.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Iterator

from ..errors import DataError


def need_file(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"missing file {path}")
    return path


def read_text(path: Path, encoding: str = "utf-8-sig") -> str:
    """The whole file decoded; a byte that is not valid in ``encoding`` is reported with its line."""
    path = need_file(Path(path))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError(f"{path}:{line}: byte 0x{data[exc.start]:02x} at column {column} is not valid "
                        f"{encoding.replace('-sig', '').upper()}; save the file as UTF-8") from None


def csv_rows(path: Path, text: str, **options) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` for each CSV record of ``text``; a malformed record (NUL byte, a field
    over the size limit, a bad quote) is a :class:`DataError` naming its line."""
    reader = csv.reader(io.StringIO(text, newline=""), **options)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(f"{path}:{reader.line_num}: not a valid CSV record ({exc})") from None
        yield reader.line_num, row


def csv_records(path: Path, text: str, required: tuple[str, ...], what: str
                ) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """The header and ``(line, {column: value})`` records of a CSV with a header that has ``required``.

    Missing trailing fields are ``""`` (never ``None``); extra fields are ignored."""
    rows = csv_rows(path, text)
    first = next(rows, None)
    header = [h.strip() for h in first[1]] if first else []
    missing = [name for name in required if name not in header]
    if missing:
        wanted = " and ".join(repr(name) for name in required)
        raise DataError(f"{path}: {what} needs a header with {wanted} column(s); found {header[:8]!r}")

    def records() -> Iterator[tuple[int, dict[str, str]]]:
        for line, row in rows:
            if not any(field.strip() for field in row):
                continue
            yield line, {name: (row[i] if i < len(row) else "") for i, name in enumerate(header)}

    return header, records()


def finite_number(raw: str, path: Path, line: int, what: str = "timestamp") -> float:
    """``raw`` as a finite float; ``nan``/``inf`` would silently scramble an ordering, so they are errors."""
    try:
        value = float(raw)
    except ValueError:
        raise DataError(f"{path}:{line}: {what} {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{path}:{line}: {what} {raw!r} is not a finite number")
    return value

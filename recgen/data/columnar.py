"""Interaction files read as columns (pyarrow): ids become int codes once per batch, no Python object per row.

CSV is read in blocks of whole lines, each parsed by ``pyarrow.csv`` (every value as bytes, so nothing is
guessed); a block is a known run of physical lines, so a bad value is reported with its line. A block that
pyarrow refuses (a row with too few or too many fields) is parsed again by the ``csv`` module, which
names each bad line: the load then stops (``bad_rows="error"``, the default) or skips it and counts it
(``"skip"``). Parquet is read by row groups (``iter_batches``); there a bad value is named by its row number.
Items not in the catalog are dropped and counted (as before); the sequences are built with one sort.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..errors import DataError
from .catalog import Catalog

BadRows = Literal["error", "skip"]
BLOCK_BYTES = 8 << 20  # CSV bytes parsed at once: memory per block, not per file
_REQUIRED = ("user", "item")


@dataclass
class Interactions:
    """Each user's item ids, oldest first, and what was left out."""

    sequences: dict[str, list[str]]
    dropped_unknown: int = 0
    skipped_rows: list[int] = field(default_factory=list)  # lines (CSV) or rows (Parquet) skipped as malformed


@dataclass
class _Batch:
    """Raw columns of consecutive rows; ``lines[i]`` is row i's line (CSV) or row number (Parquet)."""

    user: pa.Array
    item: pa.Array
    stamp: pa.Array | None
    lines: np.ndarray


def load_interactions(path: str | Path, catalog: Catalog, bad_rows: BadRows = "error") -> Interactions:
    """``user,item[,timestamp]`` from ``interactions.csv`` (header required) or ``interactions.parquet``.

    A timestamp that is not a finite number, an empty user or a malformed row is an error naming its line (or
    skipped and counted, with ``bad_rows="skip"``); without timestamps the file order is kept; ties in
    timestamp keep the file order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing file {path}")
    if bad_rows not in ("error", "skip"):
        raise DataError(f"bad_rows must be 'error' or 'skip', not {bad_rows!r}")
    batches = _parquet_batches(path) if path.suffix.lower() == ".parquet" else _csv_batches(path, bad_rows)
    item_ids = pa.array(catalog.ids, pa.string())
    user_codes: dict[str, int] = {}
    parts: list[tuple[np.ndarray, ...]] = []
    dropped, skipped = 0, []
    try:
        for batch in batches:
            if isinstance(batch, list):  # lines skipped by the CSV reader
                skipped += batch
                continue
            users, items, stamps, lines, bad = _columns(path, batch, item_ids, user_codes, bad_rows)
            skipped += bad
            known = items >= 0
            dropped += int((~known).sum())
            parts.append((users[known], items[known], stamps[known], lines[known]))
    except pa.ArrowException as exc:  # anything pyarrow refuses that was not named above
        raise DataError(f"{path}: cannot read the interactions ({exc})") from None
    if not parts or not sum(len(p[0]) for p in parts):
        return Interactions({}, dropped, sorted(skipped))
    users, items, stamps, lines = (np.concatenate(column) for column in zip(*parts))
    order = np.lexsort((lines, stamps, users))
    users, items = users[order], items[order]
    cuts = np.flatnonzero(np.diff(users)) + 1
    ids = np.array(catalog.ids, dtype=object)
    names = list(user_codes)
    sequences = {names[group[0]]: ids[chunk].tolist()
                 for group, chunk in zip(np.split(users, cuts), np.split(items, cuts))}
    return Interactions(sequences, dropped, sorted(skipped))


def _columns(path: Path, batch: _Batch, item_ids: pa.Array, user_codes: dict[str, int], bad_rows: BadRows):
    """(user code, item code or -1, timestamp, line) arrays of a batch, plus the lines skipped as bad."""
    where = "row" if path.suffix.lower() == ".parquet" else None
    user = _text(path, batch.user, batch.lines, "user", where)
    item = _text(path, batch.item, batch.lines, "item", where)
    user, item = pc.utf8_trim_whitespace(user), pc.utf8_trim_whitespace(item)
    keep = np.ones(len(batch.lines), dtype=bool)
    bad: list[int] = []
    empty_user = np.asarray(pc.equal(user, "").fill_null(True), dtype=bool)
    if empty_user.any():
        first = int(batch.lines[np.argmax(empty_user)])
        if bad_rows == "error":
            raise DataError(f"{_at(path, first, where)}: empty 'user'")
        bad += batch.lines[empty_user].tolist()
        keep &= ~empty_user
    stamps = batch.lines.astype(np.float64)  # no timestamp: the file order
    if batch.stamp is not None:
        raw = pc.utf8_trim_whitespace(_text(path, batch.stamp, batch.lines, "timestamp", where))
        given = np.asarray(pc.not_equal(raw, "").fill_null(False), dtype=bool)
        values, wrong = _numbers(raw, given)
        wrong &= keep
        if wrong.any():
            first = int(np.argmax(wrong))
            if bad_rows == "error":
                text = raw[first].as_py()
                kind = "is not a finite number" if _is_float(text) else "is not a number"
                raise DataError(f"{_at(path, int(batch.lines[first]), where)}: timestamp {text[:40]!r} {kind}")
            bad += batch.lines[wrong].tolist()
            keep &= ~wrong
        stamps = np.where(given, values, stamps)
    codes = np.asarray(pc.index_in(item, value_set=item_ids).fill_null(-1), dtype=np.int64)
    encoded = pc.dictionary_encode(user)
    local = np.array([user_codes.setdefault(name, len(user_codes)) for name in encoded.dictionary.to_pylist()]
                     + [0], dtype=np.int64)  # one dict lookup per distinct user of the batch, not per row
    users = local[np.asarray(encoded.indices.fill_null(len(local) - 1), dtype=np.int64)]
    return users[keep], codes[keep], stamps[keep], batch.lines[keep], bad


def _numbers(raw: pa.Array, given: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``raw`` as float64 where given, and a mask of given values that are not finite numbers."""
    try:
        values = np.asarray(pc.cast(pc.if_else(pa.array(given), raw, "0"), pa.float64()), dtype=np.float64)
        return values, given & ~np.isfinite(values)
    except pa.ArrowInvalid:  # some value is not a number: find which, row by row (the error path only)
        texts = raw.to_pylist()
        values = np.array([_float(t) if g else 0.0 for t, g in zip(texts, given)], dtype=np.float64)
        return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0), given & ~np.isfinite(values)


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _text(path: Path, column: pa.Array, lines: np.ndarray, name: str, where: str | None) -> pa.Array:
    """A column as UTF-8 strings; a value that is not UTF-8 is an error naming its line and byte."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column
    if not pa.types.is_binary(column.type):
        return pc.cast(column, pa.string())  # Parquet ints, say
    try:
        return pc.cast(column, pa.string())
    except pa.ArrowInvalid:
        for row, value in enumerate(column.to_pylist()):
            try:
                (value or b"").decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{_at(path, int(lines[row]), where)}: byte 0x{value[exc.start]:02x} in the "
                                f"{name!r} field is not valid UTF-8; save the file as UTF-8") from None
        raise


def _at(path: Path, line: int, where: str | None) -> str:
    return f"{path}: row {line}" if where == "row" else f"{path}:{line}"


# -- sources of batches -------------------------------------------------------------------------------
def _parquet_batches(path: Path) -> Iterator[_Batch]:
    try:
        handle = pq.ParquetFile(path)
    except pa.ArrowException as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    names = handle.schema_arrow.names
    _check_header(path, names)
    columns = [c for c in ("user", "item", "timestamp") if c in names]
    first = 1
    for batch in handle.iter_batches(batch_size=1 << 20, columns=columns):
        lines = np.arange(first, first + batch.num_rows, dtype=np.int64)
        first += batch.num_rows
        yield _Batch(batch.column("user"), batch.column("item"),
                     batch.column("timestamp") if "timestamp" in columns else None, lines)


def _check_header(path: Path, header: list[str]) -> None:
    missing = [name for name in _REQUIRED if name not in header]
    if missing:
        raise DataError(f"{path}: an interactions file needs a header with 'user' and 'item' column(s); "
                        f"found {header[:8]!r}")


def _csv_batches(path: Path, bad_rows: BadRows) -> Iterator[_Batch | list[int]]:
    """Blocks of whole lines parsed by pyarrow; line numbers are known because every physical line is a row
    (empty lines too: ``ignore_empty_lines=False``; they are dropped as empty afterwards)."""
    with path.open("rb") as handle:
        first_line = handle.readline()
        try:
            text = first_line.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}:1: byte 0x{first_line[exc.start]:02x} is not valid UTF-8; save the file as "
                            "UTF-8") from None
        try:
            header = [h.strip() for h in next(csv.reader([text.rstrip("\r\n")]), [])]
        except csv.Error as exc:  # a lone-CR file (one "line"), a huge field: nothing to read columns from
            raise DataError(f"{path}:1: not a valid CSV header ({exc}); lines must end in LF or CRLF") from None
        _check_header(path, header)
        wanted = [c for c in ("user", "item", "timestamp") if c in header]
        line = 2
        rest = b""
        while True:
            data = handle.read(BLOCK_BYTES)
            block = rest + data
            if not data:
                rest = b""
            else:
                cut = block.rfind(b"\n") + 1
                if cut == 0:
                    rest = block
                    continue
                block, rest = block[:cut], block[cut:]
            if block:
                count = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
                yield from _parse_block(path, block, header, wanted, line, count, bad_rows)
                line += count
            if not data:
                return


def _parse_block(path: Path, block: bytes, header: list[str], wanted: list[str], line: int, count: int,
                 bad_rows: BadRows) -> Iterator[_Batch | list[int]]:
    names = [f"{i}:{name}" for i, name in enumerate(header)]  # unique even if the header repeats a name
    try:
        table = pacsv.read_csv(
            io.BytesIO(block),
            read_options=pacsv.ReadOptions(column_names=names, use_threads=False, block_size=len(block) + 1),
            parse_options=pacsv.ParseOptions(ignore_empty_lines=False, newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(column_types={n: pa.binary() for n in names},
                                                 include_columns=[names[header.index(w)] for w in wanted]))
    except pa.ArrowInvalid:
        table = None
    if table is not None and table.num_rows == count:  # a malformed row raised: parse the block slowly
        columns = {w: table.column(names[header.index(w)]).combine_chunks() for w in wanted}
        lines = np.arange(line, line + count, dtype=np.int64)
        empty = np.asarray(pc.and_(pc.equal(pc.binary_length(columns["user"]), 0),
                                   pc.equal(pc.binary_length(columns["item"]), 0)), dtype=bool)
        if empty.any():  # blank lines (or ",,"), ignored as before
            keep = pa.array(~empty)
            columns = {w: c.filter(keep) for w, c in columns.items()}
            lines = lines[~empty]
        yield _Batch(columns["user"], columns["item"], columns.get("timestamp"), lines)
        return
    yield from _parse_block_slowly(path, block, header, wanted, line, bad_rows)


def _parse_block_slowly(path: Path, block: bytes, header: list[str], wanted: list[str], line: int,
                        bad_rows: BadRows) -> Iterator[_Batch | list[int]]:
    """The block through the ``csv`` module, line by line: names each malformed row (too few or too many
    fields, a bad quote, a NUL byte) and stops or skips it."""
    at = {w: header.index(w) for w in wanted}
    values: dict[str, list[bytes]] = {w: [] for w in wanted}
    lines, skipped = [], []
    for number, raw in enumerate(block.splitlines(), line):
        try:
            row = next(csv.reader([raw.decode("utf-8", "surrogateescape")]), [])
        except csv.Error as exc:
            row, problem = None, f"not a valid CSV record ({exc})"
        else:
            problem = None if not row or len(row) == len(header) else \
                f"expected {len(header)} fields (the header's), found {len(row)}"
        if row is not None and not any(field.strip() for field in row):
            continue
        if problem:
            if bad_rows == "error":
                raise DataError(f"{path}:{number}: {problem}")
            skipped.append(number)
            continue
        for w, i in at.items():
            values[w].append(row[i].encode("utf-8", "surrogateescape"))
        lines.append(number)
    if skipped:
        yield skipped
    if lines:
        columns = {w: pa.array(v, pa.binary()) for w, v in values.items()}
        yield _Batch(columns["user"], columns["item"], columns.get("timestamp"), np.array(lines, dtype=np.int64))

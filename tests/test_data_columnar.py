"""Columnar interaction loading (recgen.data.columnar): CSV blocks and Parquet give the same sequences as the
rows say, a malformed row is named by its line and stops the load or is skipped as configured."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recgen.data import Catalog, columnar, load_dataset
from recgen.data.columnar import load_interactions
from recgen.errors import DataError

CATALOG = Catalog.from_jsonl_text("".join(f'{{"item_id": "i{k}", "title": "T{k}"}}\n' for k in range(5)))


def _write(path, text: str):
    path.write_bytes(text.encode())
    return path


def test_csv_orders_by_timestamp_then_file_order_and_drops_unknown_items(tmp_path):
    path = _write(tmp_path / "interactions.csv",
                  "user,item,timestamp\nu1,i2,20\nu2,i0,1\nu1,i1,10\n\nu1,zzz,5\nu1,i3,10\n u2 , i4 ,\n")
    read = load_interactions(path, CATALOG)
    assert read.sequences == {"u1": ["i1", "i3", "i2"], "u2": ["i0", "i4"]}  # an empty stamp is its line: 8 > 1
    assert read.dropped_unknown == 1 and read.skipped_rows == []


def test_many_blocks_give_the_same_result_as_one(tmp_path, monkeypatch):
    rows = "".join(f"u{n % 7},i{n % 5},{n}\n" for n in range(500))
    path = _write(tmp_path / "interactions.csv", "user,item,timestamp\n" + rows)
    whole = load_interactions(path, CATALOG).sequences
    monkeypatch.setattr(columnar, "BLOCK_BYTES", 64)
    assert load_interactions(path, CATALOG).sequences == whole
    assert sum(map(len, whole.values())) == 500


@pytest.mark.parametrize("bad, message", [("u9,i1,3,extra", "expected 3 fields"), ("u9,i1", "expected 3 fields"),
                                          ("u9,i1,soon", "timestamp 'soon' is not a number"),
                                          (",i1,3", "empty 'user'")])
def test_a_malformed_row_is_named_by_line_then_stops_or_is_skipped(tmp_path, monkeypatch, bad, message):
    monkeypatch.setattr(columnar, "BLOCK_BYTES", 40)  # the bad row deep in a later block: lines still exact
    good = "".join(f"u{n % 3},i{n % 5},{n}\n" for n in range(30))
    path = _write(tmp_path / "interactions.csv", "user,item,timestamp\n" + good + bad + "\n" + good)
    with pytest.raises(DataError, match=rf"interactions\.csv:32: {message}"):
        load_interactions(path, CATALOG)
    read = load_interactions(path, CATALOG, bad_rows="skip")
    assert read.skipped_rows == [32] and sum(map(len, read.sequences.values())) == 60


def test_parquet_loads_like_csv_and_the_generic_folder_reads_it(tmp_path):
    csv_path = _write(tmp_path / "interactions.csv", "user,item,timestamp\nu1,i2,20\nu2,i0,1\nu1,i1,10\n")
    folder = tmp_path / "pq"
    folder.mkdir()
    (folder / "items.jsonl").write_text(CATALOG.to_jsonl())
    pq.write_table(pa.table({"user": ["u1", "u2", "u1"], "item": ["i2", "i0", "i1"], "timestamp": [20, 1, 10]}),
                   folder / "interactions.parquet")
    assert load_interactions(folder / "interactions.parquet", CATALOG).sequences == \
        load_interactions(csv_path, CATALOG).sequences == load_dataset(folder).sequences
    pq.write_table(pa.table({"user": ["u1"], "item": ["i1"], "timestamp": [float("nan")]}),
                   folder / "interactions.parquet")
    with pytest.raises(DataError, match=r"interactions\.parquet: row 1: timestamp .* not a finite number"):
        load_dataset(folder)

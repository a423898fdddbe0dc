"""Issue 12 #6: every loader turns bad input into a DataError naming the file and line (no traceback)."""

from __future__ import annotations

import json

import pytest

from recgen.data import Catalog, load_catalog_file, load_dataset
from recgen.data.columnar import load_interactions
from recgen.errors import DataError


def generic(folder, items=None, interactions=None, items_name="items.jsonl"):
    folder.mkdir(parents=True, exist_ok=True)
    rows = items if items is not None else b'{"item_id": "a", "title": "A"}\n{"item_id": "b", "title": "B"}\n'
    (folder / items_name).write_bytes(rows)
    (folder / "interactions.csv").write_bytes(interactions if interactions is not None else
                                              b"user,item,timestamp\nu1,a,1\nu1,b,2\n")
    return folder


def movielens(folder, data=b"1\t1\t5\t881250949\n1\t2\t3\t881250950\n"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.genre").write_bytes(b"unknown|0\nAction|1\n")
    (folder / "u.item").write_bytes(b"1|Film A (1995)|01-Jan-1995||url|0|1\n2|Film B (1996)|01-Jan-1996||url|0|0\n")
    (folder / "u.data").write_bytes(data)
    return folder


def amazon(folder, titles=b"asin\ttitle\nA1\tFirst\nA2\tSecond\n", sequences=b"u1 A1 A2\n"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "item_titles.tsv").write_bytes(titles)
    (folder / "user_sequence.txt").write_bytes(sequences)
    return folder


def test_valid_fixtures_load(tmp_path):
    assert load_dataset(generic(tmp_path / "g")).sequences == {"u1": ["a", "b"]}
    assert load_dataset(movielens(tmp_path / "m")).sequences == {"1": ["1", "2"]}
    assert load_dataset(amazon(tmp_path / "a")).sequences == {"u1": ["A1", "A2"]}


@pytest.mark.parametrize("where, make, pattern", [
    ("items.jsonl", lambda f: generic(f, items=b'{"item_id": "a", "title": "A"}\n{"item_id": "b", "title": "\xff"}\n'),
     r"items\.jsonl:2: byte 0xff"),
    ("interactions.csv", lambda f: generic(f, interactions=b"user,item\nu1,a\nu\xe91,b\n"),
     r"interactions\.csv:3: byte 0xe9"),
    ("item_titles.tsv", lambda f: amazon(f, titles=b"asin\ttitle\nA1\tFirst\nA2\tCaf\xe9\n"),
     r"item_titles\.tsv:3: byte 0xe9"),
    ("user_sequence.txt", lambda f: amazon(f, sequences=b"u1 A1\nu2 A\x802\n"), r"user_sequence\.txt:2"),
])
def test_non_utf8_byte_is_a_data_error_naming_file_and_line(tmp_path, where, make, pattern):
    with pytest.raises(DataError, match=pattern):
        load_dataset(make(tmp_path / "d"))


def test_non_integer_timestamp_in_u_data(tmp_path):
    with pytest.raises(DataError, match=r"u\.data:2: timestamp 'soon' is not a whole number"):
        load_dataset(movielens(tmp_path / "m", b"1\t1\t5\t881250949\n1\t2\t3\tsoon\n"))


def test_u_data_item_not_in_u_item(tmp_path):
    with pytest.raises(DataError, match=r"u\.data:1: item '99'"):
        load_dataset(movielens(tmp_path / "m", b"1\t99\t5\t881250949\n"))


def test_bom_in_csv_header_is_accepted(tmp_path):
    bom = b"\xef\xbb\xbf"
    folder = generic(tmp_path / "g", items=bom + b"item_id,title\na,A\nb,B\n", items_name="items.csv",
                     interactions=bom + b"user,item,timestamp\nu1,b,2\nu1,a,1\n")
    assert load_dataset(folder).sequences == {"u1": ["a", "b"]}
    titles = amazon(tmp_path / "a", titles=bom + b"asin\ttitle\nA1\tFirst\nA2\tSecond\n")
    assert load_dataset(titles).catalog.get("A1").title == "First"


@pytest.mark.parametrize("stamp", ["nan", "inf", "-inf", "NaN", "1e400"])
def test_nan_or_infinite_timestamp_names_the_line(tmp_path, stamp):
    folder = generic(tmp_path / "g", interactions=f"user,item,timestamp\nu1,a,1\nu1,b,{stamp}\n".encode())
    with pytest.raises(DataError, match=r"interactions\.csv:3: timestamp .* not a finite number"):
        load_dataset(folder)


@pytest.mark.parametrize("row, pattern", [
    ({"item_id": "a", "genres": 5}, "'genres' must be a list"),
    ({"item_id": "a", "genres": [{"x": 1}]}, "'genres' must be text"),
    ({"item_id": None}, "missing 'item_id'"),
    ({"item_id": ["a"]}, "'item_id' must be text"),
    ({"item_id": ""}, "'item_id' is empty"),
    ({"item_id": "a", "title": {"en": "A"}}, "'title' must be text"),
    ({"item_id": "a", "year": 1e308 * 10}, "year"),
    ({"item_id": "a", "year": 1999.5}, "year"),
    ({"item_id": "a", "title": "\ud800"}, "surrogate"),
])
def test_wrong_json_types_are_data_errors_with_the_line(tmp_path, row, pattern):
    path = tmp_path / "items.jsonl"
    path.write_text('{"item_id": "z", "title": "Z"}\n' + json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"items\.jsonl:2: .*" + pattern):
        load_catalog_file(path)


def test_deeply_nested_or_huge_json_is_a_data_error(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text("[" * 200_000 + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"items\.jsonl:1"):
        load_catalog_file(path)
    path.write_text('{"item_id": ' + "9" * 5000 + "}\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"items\.jsonl:1"):
        load_catalog_file(path)


def test_csv_catalog_problems_name_the_line(tmp_path):
    path = tmp_path / "items.csv"
    path.write_bytes(b"item_id,title,year\na,A,1999\nb,B,later\n")
    with pytest.raises(DataError, match=r"items\.csv:3: .*year 'later'"):
        load_catalog_file(path)
    path.write_bytes(b"item_id,title\na,A\na,again\n")
    with pytest.raises(DataError, match=r"items\.csv: .*duplicate item id"):
        load_catalog_file(path)
    path.write_bytes(b"item_id,title\na," + b"x" * 200_000 + b"\n")
    with pytest.raises(DataError, match=r"items\.csv:2"):
        load_catalog_file(path)


def test_interactions_short_row_and_missing_column(tmp_path):
    catalog = Catalog.from_jsonl_text('{"item_id": "a"}\n')
    path = tmp_path / "interactions.csv"
    path.write_bytes(b"user,item\n,a\n")
    with pytest.raises(DataError, match=r"interactions\.csv:2: empty 'user'"):
        load_interactions(path, catalog)
    path.write_bytes(b"person,item\nu1,a\n")
    with pytest.raises(DataError, match=r"interactions\.csv: .*'user' and 'item'"):
        load_interactions(path, catalog)


def test_duplicate_users_or_asins_in_amazon_files(tmp_path):
    with pytest.raises(DataError, match=r"user_sequence\.txt:2: user 'u1' is listed twice"):
        load_dataset(amazon(tmp_path / "a", sequences=b"u1 A1\nu1 A2\n"))
    with pytest.raises(DataError, match=r"item_titles\.tsv:3: asin 'A1' is listed twice"):
        load_dataset(amazon(tmp_path / "b", titles=b"asin\ttitle\nA1\tx\nA1\ty\n"))


def test_bad_genre_file(tmp_path):
    folder = movielens(tmp_path / "m")
    (folder / "u.genre").write_bytes(b"unknown|0\nAction|one\n")
    with pytest.raises(DataError, match=r"u\.genre:2"):
        load_dataset(folder)

"""Loaders, catalog validation and the leave-one-out split, on files the tests write themselves."""

import json

import pytest
from builders import make_dataset

from recgen.data import Catalog, Item, leave_one_out, load_dataset
from recgen.errors import DataError, UnknownItemError, UnknownUserError


def test_duplicate_ids_are_an_error():
    with pytest.raises(DataError, match="duplicate item id"):
        Catalog([Item("1", "A"), Item("1", "B")])


def test_empty_title_gets_placeholder_and_unknown_id_is_named():
    catalog = Catalog([Item("x1", "  ")])
    assert catalog.get("x1").title == "item x1"
    with pytest.raises(UnknownItemError, match="'nope'"):
        catalog.get("nope")


def test_fingerprint_changes_with_text():
    a = Catalog([Item("1", "Alpha")])
    b = Catalog([Item("1", "Alpha 2")])
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == Catalog([Item("1", "Alpha")]).fingerprint()


def test_generic_jsonl_and_csv(tmp_path):
    (tmp_path / "items.jsonl").write_text(
        json.dumps({"item_id": "a", "title": "Apple", "genres": "Fruit|Red", "year": 2001}) + "\n"
        + json.dumps({"item_id": "b", "title": "Banana"}) + "\n"
    )
    (tmp_path / "interactions.csv").write_text("user,item,timestamp\nu1,b,20\nu1,a,10\nu1,zzz,5\nu2,a,1\n")
    data = load_dataset(tmp_path)
    assert data.catalog.get("a").genres == ("Fruit", "Red")
    assert data.sequences["u1"] == ["a", "b"]  # ordered by timestamp
    assert data.dropped_unknown == 1


def test_generic_bad_json_line_names_the_line(tmp_path):
    (tmp_path / "items.jsonl").write_text('{"item_id": "a", "title": "A"}\n{oops\n')
    (tmp_path / "interactions.csv").write_text("user,item\nu,a\n")
    with pytest.raises(DataError, match=r"items.jsonl:2"):
        load_dataset(tmp_path)


def test_amazon_format_unescapes_html_and_handles_empty_titles(tmp_path):
    (tmp_path / "item_titles.tsv").write_text("asin\ttitle\nA1\tCream &amp; Oil &#9733;\nA2\t\n")
    (tmp_path / "user_sequence.txt").write_text("U1 A1 A2 A3\n")
    data = load_dataset(tmp_path)
    assert data.catalog.get("A1").title == "Cream & Oil \u2605"
    assert data.catalog.get("A2").title == "item A2"
    assert data.catalog.get("A3").title == "item A3"  # in a sequence, not in titles
    assert data.sequences["U1"] == ["A1", "A2", "A3"]


def test_movielens_format_latin1_genres_and_stable_ties(tmp_path):
    (tmp_path / "u.genre").write_text("unknown|0\nComedy|1\nDrama|2\n\n", encoding="latin-1")
    (tmp_path / "u.item").write_bytes("1|Caf\xe9 Film (1995)|01-Jan-1995||url|0|1|1\n2|Other (1990)|01-Jan-1990||url|1|0|0\n"
                                      .encode("latin-1"))
    (tmp_path / "u.data").write_text("7\t2\t5\t100\n7\t1\t3\t100\n7\t2\t4\t50\n")
    data = load_dataset(tmp_path)
    assert data.catalog.get("1").title == "Caf\u00e9 Film (1995)"
    assert data.catalog.get("1").genres == ("Comedy", "Drama")
    assert data.catalog.get("2").genres == ()
    assert data.sequences["7"] == ["2", "2", "1"]  # by time, ties in file order


def test_leave_one_out_and_short_users():
    data = make_dataset()
    data.sequences["short"] = ["1", "2"]
    split = leave_one_out(data)
    assert split.excluded_users == 1
    s = split.by_user()["u0"]
    seq = data.sequences["u0"]
    assert (list(s.train), s.valid, s.test) == (seq[:-2], seq[-2], seq[-1])
    assert s.history_for("test") == seq[:-1]
    assert s.history_for("valid") == seq[:-2]


def test_unknown_user_and_missing_dataset():
    with pytest.raises(UnknownUserError, match="'nobody'"):
        make_dataset().history("nobody")
    with pytest.raises(DataError, match="not found"):
        load_dataset("no-such-dataset-anywhere")


@pytest.mark.integration
def test_real_datasets_load(shared_data):
    ml = load_dataset(shared_data / "ml-100k")
    assert (len(ml.catalog), len(ml.sequences), ml.num_interactions()) == (1682, 943, 100000)
    beauty = load_dataset(shared_data / "amazon-beauty")
    assert (len(beauty.catalog), len(beauty.sequences), beauty.num_interactions()) == (12101, 22363, 198502)
    assert not any("&amp;" in item.title for item in beauty.catalog)

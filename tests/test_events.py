"""The event log (recgen/data/events.py): durable settings, idempotent ids, validation, forgetting on disk."""

from __future__ import annotations

import sqlite3

import pytest

from recgen.data.events import EventConflictError, EventStore, default_events_path, make_event
from recgen.errors import DataError, InvalidRequestError


def test_the_log_is_wal_with_full_sync_and_secure_delete(tmp_path):
    store = EventStore(tmp_path / "e.sqlite")
    pragmas = {name: store._db.execute(f"PRAGMA {name}").fetchone()[0]
               for name in ("journal_mode", "synchronous", "secure_delete")}
    assert pragmas == {"journal_mode": "wal", "synchronous": 2, "secure_delete": 1}  # 2 = FULL


def test_same_event_id_is_stored_once_and_other_content_is_a_conflict(tmp_path):
    store = EventStore(tmp_path / "e.sqlite")
    first, new = store.record(make_event("u1", "3", "purchase", event_id="e-1", ts=10.0))
    again, new_again = store.record(make_event("u1", "3", "purchase", event_id="e-1"))  # a retry: ts defaults to now
    assert (new, new_again) == (True, False)
    assert again == first and again.ts == 10.0
    with pytest.raises(EventConflictError, match="e-1"):
        store.record(make_event("u1", "4", "purchase", event_id="e-1"))
    assert len(store) == 1


def test_events_come_back_in_arrival_order_after_reopening(tmp_path):
    path = tmp_path / "e.sqlite"
    store = EventStore(path)
    for n, event in enumerate(["click", "reject", "rating", "purchase"]):
        store.record(make_event(f"u{n % 2}", str(n), event, value=4.5 if event == "rating" else None, ts=100.0 - n))
    store.close()
    events = EventStore(path).events()
    assert [e.item for e in events] == ["0", "1", "2", "3"]  # arrival order, not ts order
    assert [e.value for e in events] == [None, None, 4.5, None]
    assert [e.item for e in EventStore(path).events("u1")] == ["1", "3"]


@pytest.mark.parametrize("args, message", [
    (("", "1", "click"), "user id is empty"),
    (("   ", "1", "click"), "user id is empty"),
    (("u\x00", "1", "click"), "control characters"),
    (("u" * 257, "1", "click"), "limit is 256"),
    ((7, "1", "click"), "must be a string"),
    (("u", "1", "like"), "event must be one of"),
    (("u", "1", "rating"), "finite numeric value"),
])
def test_malformed_events_are_clear_errors(args, message):
    with pytest.raises(InvalidRequestError, match=message):
        make_event(*args)


def test_values_belong_to_ratings_only_and_must_be_finite():
    with pytest.raises(InvalidRequestError, match="only a rating has a value"):
        make_event("u", "1", "click", value=3.0)
    with pytest.raises(InvalidRequestError, match="finite"):
        make_event("u", "1", "rating", value=float("nan"))
    with pytest.raises(InvalidRequestError, match="ts must be"):
        make_event("u", "1", "click", ts=float("inf"))
    assert make_event("u", "1", "rating", value=5).value == 5.0


def test_forget_deletes_rows_leaves_no_copy_in_the_file_and_tombstones_base_users(tmp_path):
    path = tmp_path / "e.sqlite"
    store = EventStore(path)
    secret = "purchase-by-user-zq9"
    store.record(make_event("zq9", "5", "purchase", event_id=secret))
    store.record(make_event("other", "6", "click"))
    assert store.forget("zq9", tombstone=True) == 1
    assert store.forget("other", tombstone=False) == 1
    assert store.forgotten() == {"zq9"} and len(store) == 0
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert secret.encode() not in raw  # secure_delete + WAL checkpoint: the row is gone from the bytes too


def test_a_file_that_is_not_an_event_log_is_a_data_error(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(DataError, match="not a readable event log"):
        EventStore(junk)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE customers (name TEXT)")
    with pytest.raises(DataError, match="not a recgen event log"):
        EventStore(other)
    with pytest.raises(DataError, match="no event log"):
        EventStore(tmp_path / "missing.sqlite", create=False)


def test_the_default_log_lives_in_the_state_dir_not_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RECGEN_STATE_DIR", str(tmp_path))
    assert default_events_path("ml-100k") == tmp_path / "feedback" / "ml-100k" / "events.sqlite"


# -- the log's path (issue 22: /dev/null let SQLite create /dev/null-journal; a folder was "no log") -------------
def _beside(path):
    return {p.name for p in path.parent.iterdir() if p.name.startswith(path.name)} if path.parent.is_dir() else set()


@pytest.mark.parametrize("kind", ["folder", "/dev/null", "fifo"])
def test_a_log_path_that_is_not_a_file_is_a_clear_error_creating_nothing(tmp_path, kind):
    import os
    from pathlib import Path

    if kind == "folder":
        path = tmp_path / "events.sqlite"
        path.mkdir()
    elif kind == "fifo":
        path = tmp_path / "events.sqlite"
        os.mkfifo(path)
    else:
        path = Path(os.devnull)
    before = _beside(path)
    for create in (True, False):
        with pytest.raises(DataError, match="is a folder|not a regular file"):
            EventStore(path, create=create)
    assert _beside(path) == before  # no -journal, -wal or -shm beside it


@pytest.mark.parametrize("kind", ["folder", "/dev/null"])
def test_cli_forget_and_fit_refuse_a_log_that_is_not_a_file(tmp_path, monkeypatch, synthetic_dataset_dir, kind):
    import os

    from typer.testing import CliRunner

    from recgen.cli import fit_cmd
    from recgen.cli.main import app

    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(fit_cmd, "fit_for_serving", lambda *a, **k: pytest.fail("fitted with a bad log path"))
    path = tmp_path / "log"
    if kind == "folder":
        path.mkdir()
    else:
        path = os.devnull
    journal_before = os.path.exists(os.devnull + "-journal")
    for args in (["forget", "-u", "u1", "-d", synthetic_dataset_dir, "--events", path],
                 ["fit", "-d", synthetic_dataset_dir, "-o", tmp_path / "out", "--events", path]):
        result = CliRunner().invoke(app, [str(a) for a in args])
        said = " ".join(result.output.split())
        assert result.exit_code == 2 and ("is a folder" in said or "not a regular file" in said), result.output
    assert os.path.exists(os.devnull + "-journal") == journal_before and not (tmp_path / "out").exists()


def test_a_served_dataset_with_a_folder_as_its_log_is_refused(tmp_path, dataset):
    from recgen.feedback import Feedback

    path = tmp_path / "events.sqlite"
    path.mkdir()
    with pytest.raises(DataError, match="is a folder"):
        Feedback.open(dataset, path)

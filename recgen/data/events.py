"""The feedback event log: what users did (clicked, bought, rated, rejected), durable and forgettable.

SQLite in WAL mode with ``synchronous=FULL``, not an append-only file: a commit is fsynced before
:meth:`EventStore.record` returns, so an acknowledged event survives ``kill -9`` (and power loss); the event id
is a primary key, so a retried event is stored once; and forgetting a user is one transaction (delete their
rows, write a tombstone) instead of rewriting a log. ``secure_delete`` and a WAL checkpoint after forgetting
leave no copy of the forgotten rows in the file. One writer at a time (a lock here, SQLite's across
processes); readers never block it.

Tombstones list forgotten users of the BASE data (the dataset's files, which recgen never modifies): every
fit and load drops their base interactions. A user known only from the log gets no tombstone; deleting
their rows removes every trace of them.

Items added to a served catalog (``POST /v1/items``) are kept here too, one row per request: the server
replays them at start, so they are served again and the events on them count again.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import stat
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import DataError, InvalidRequestError
from ..text import MAX_ID_CHARS, check_id  # noqa: F401 - the one id validator, re-exported for the log's callers

EventType = Literal["click", "purchase", "rating", "reject"]
EVENT_TYPES: tuple[str, ...] = ("click", "purchase", "rating", "reject")
#: Events that mean "the user took this item": they extend the user's history and the statistics, like a
#: dataset interaction (a rating of any value is an interaction, as in the datasets' own files).
POSITIVE_EVENTS = frozenset({"click", "purchase", "rating"})
SCHEMA_VERSION = 1
FILE_NAME = "events.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    user     TEXT NOT NULL,
    item     TEXT NOT NULL,
    event    TEXT NOT NULL,
    value    REAL,
    ts       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_user ON events(user);
CREATE TABLE IF NOT EXISTS forgotten (user TEXT PRIMARY KEY, ts REAL NOT NULL);
CREATE TABLE IF NOT EXISTS added_items (seq INTEGER PRIMARY KEY AUTOINCREMENT, items TEXT NOT NULL,
                                        replace_existing INTEGER NOT NULL, ts REAL NOT NULL);
"""


class EventConflictError(InvalidRequestError):
    """An event id that was already stored with other content (a retry must repeat the same event)."""


@dataclass(frozen=True)
class Event:
    """One thing a user did. ``seq`` is the arrival order (histories follow it); ``ts`` is informational."""

    event_id: str
    user: str
    item: str
    event: str
    value: float | None = None
    ts: float = 0.0
    seq: int | None = None

    @property
    def positive(self) -> bool:
        return self.event in POSITIVE_EVENTS

    def same_as(self, other: "Event") -> bool:
        """Same content (the server's arrival ``seq`` and a defaulted ``ts`` aside)."""
        return (self.user, self.item, self.event, self.value) == (other.user, other.item, other.event, other.value)

    def as_dict(self) -> dict:
        return {"event_id": self.event_id, "user": self.user, "item": self.item, "event": self.event,
                "value": self.value, "ts": self.ts}


def make_event(user, item, event, *, value=None, event_id=None, ts=None) -> Event:
    """A validated event; a missing ``event_id`` gets a random one (then a retry is NOT deduplicated)."""
    check_id(user, "user id")
    check_id(item, "item id")
    if event not in EVENT_TYPES:
        raise InvalidRequestError(f"event must be one of {', '.join(EVENT_TYPES)}, not {event!r}")
    if event == "rating":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidRequestError(f"a rating needs a finite numeric value, not {value!r}")
        value = float(value)
    elif value is not None:
        raise InvalidRequestError(f"only a rating has a value; a {event} does not")
    if ts is None:
        ts = time.time()
    elif isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        raise InvalidRequestError(f"ts must be a finite number of seconds since the epoch, not {ts!r}")
    event_id = uuid.uuid4().hex if event_id is None else check_id(event_id, "event id")
    return Event(event_id, user, item, event, value, float(ts))


def state_dir() -> Path:
    """Where recgen keeps user data it must not lose (NOT the cache): ``RECGEN_STATE_DIR``, else
    ``$XDG_DATA_HOME/recgen``, else ``~/.local/share/recgen``."""
    root = os.environ.get("RECGEN_STATE_DIR")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "recgen"


def default_events_path(dataset_name: str) -> Path:
    """The log of one dataset: ``state_dir()/feedback/<dataset>/events.sqlite``."""
    return state_dir() / "feedback" / dataset_name / FILE_NAME


def check_events_path(path: str | Path) -> None:
    """:class:`DataError` unless ``path`` is a regular file or can become one: a folder, ``/dev/null`` or another
    device is refused before SQLite opens it (it would create ``<path>-journal`` and ``-wal`` beside it), and a
    folder is never taken for "no log yet"."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise DataError(f"cannot use the event log {path}: {exc.strerror or exc}") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise DataError(f"the event log {path} is a folder; give the path of a file (e.g. {path / FILE_NAME})")
    if mode is not None and not stat.S_ISREG(mode):
        raise DataError(f"the event log {path} is not a regular file (a device, pipe or socket); give a file path")
    if mode is None:
        place = path.absolute().parent
        while not place.exists() and place != place.parent:
            place = place.parent
        if not place.is_dir():
            raise DataError(f"cannot create the event log {path}: {place} is not a folder")


class EventStore:
    """The SQLite event log of one dataset. Thread-safe (one connection behind a lock)."""

    def __init__(self, path: str | Path, *, create: bool = True):
        self.path = Path(path)
        check_events_path(self.path)
        if not create and not self.path.is_file():
            raise DataError(f"no event log at {self.path}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"cannot create the folder of the event log {self.path}: {exc.strerror or exc}") from None
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if version not in (0, SCHEMA_VERSION) or (version == 0 and tables - {"sqlite_sequence"}):
                raise DataError(f"{self.path} is not a recgen event log (schema {version}, tables {sorted(tables)})")
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise DataError(f"{self.path}: SQLite refused WAL mode ({mode}); put the log on a local disk")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path} is not a readable event log ({exc})") from None

    # -- writing -----------------------------------------------------------------------------------------
    def record(self, event: Event) -> tuple[Event, bool]:
        """Store ``event`` durably; returns (the stored event, whether it is new). The same event id again
        returns the stored one unchanged; with other content it raises :class:`EventConflictError`."""
        with self._lock, self._write():
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO events (event_id, user, item, event, value, ts) VALUES (?, ?, ?, ?, ?, ?)",
                (event.event_id, event.user, event.item, event.event, event.value, event.ts))
            stored = self._get(event.event_id)
            if cursor.rowcount == 1:
                return stored, True
        if not stored.same_as(event):
            raise EventConflictError(f"event id {event.event_id!r} was already recorded as a {stored.event} of item "
                                     f"{stored.item!r} by user {stored.user!r}; a retry must repeat the same event")
        return stored, False

    def forget(self, user: str, *, tombstone: bool) -> int:
        """Delete ``user``'s events (and, with ``tombstone``, mark them forgotten in the base data) in one
        transaction; returns how many events were deleted."""
        with self._lock:
            with self._write():
                removed = self._db.execute("DELETE FROM events WHERE user = ?", (user,)).rowcount
                if tombstone:
                    self._db.execute("INSERT OR REPLACE INTO forgotten (user, ts) VALUES (?, ?)", (user, time.time()))
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # no copy of the deleted rows left in the WAL
        return removed

    def record_items(self, items: list[dict], *, update: bool) -> int:
        """Store one ``POST /v1/items`` batch durably (fsynced commit) before it is applied; returns its number.
        Items live beside the events so that, replayed at the next start, the events on them count again."""
        with self._lock, self._write():
            cursor = self._db.execute('INSERT INTO added_items (items, replace_existing, ts) VALUES (?, ?, ?)',
                                      (json.dumps(items, ensure_ascii=False), int(update), time.time()))
            return cursor.lastrowid

    def drop_items(self, seq: int) -> None:
        """Take back a batch whose application failed (it was never acknowledged)."""
        with self._lock, self._write():
            self._db.execute("DELETE FROM added_items WHERE seq = ?", (seq,))

    def added_items(self) -> list[tuple[list[dict], bool]]:
        """Every recorded batch of added items, ``(items, update)``, in the order they were applied."""
        with self._lock:
            rows = self._db.execute('SELECT items, replace_existing FROM added_items ORDER BY seq').fetchall()
        return [(json.loads(items), bool(update)) for items, update in rows]

    def _write(self):
        return _Transaction(self._db)

    # -- reading -----------------------------------------------------------------------------------------
    def _get(self, event_id: str) -> Event:
        row = self._db.execute("SELECT event_id, user, item, event, value, ts, seq FROM events WHERE event_id = ?",
                               (event_id,)).fetchone()
        return Event(*row)

    def events(self, user: str | None = None) -> list[Event]:
        """All events (or one user's) in arrival order."""
        sql = "SELECT event_id, user, item, event, value, ts, seq FROM events"
        with self._lock:
            if user is None:
                rows = self._db.execute(sql + " ORDER BY seq").fetchall()
            else:
                rows = self._db.execute(sql + " WHERE user = ? ORDER BY seq", (user,)).fetchall()
        return [Event(*row) for row in rows]

    def forgotten(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT user FROM forgotten")}

    def is_forgotten(self, user: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM forgotten WHERE user = ?", (user,)).fetchone() is not None

    def has_user(self, user: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM events WHERE user = ? LIMIT 1", (user,)).fetchone() is not None

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back on error): the commit is the durable point."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind, exc, tb):
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
        return False

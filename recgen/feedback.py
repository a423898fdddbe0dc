"""The feedback loop: recorded events and forgotten users, reflected in the served statistics at once.

The served user data is the dataset's base interactions, minus forgotten users (tombstones in the log), plus
each user's positive events in arrival order (an item already in the user's sequence is not added twice; a
rating of any value is an interaction, as in the datasets). Rejected items are excluded from that user's
recommendations. Popularity and item transitions are updated per event and per forgotten user by adding and
removing whole user sequences (exact integer counts), so they always EQUAL a fit on the served user data;
``recgen refit`` re-fits every stage on it (:func:`served_dataset`) for what cannot be updated per event.
Each change is handed to the pipeline as a new :class:`FittedState` (:meth:`Pipeline.serve`): the loop
never writes into the pipeline or its stages.

Who is a user: any well-formed id may send events (a new user starts that way). Forgetting is idempotent: any
well-formed id may be forgotten, and the result counts what that call removed (nothing for an id nobody knows,
or one already forgotten: a log-only user leaves no trace to tell the two apart). Unknown items are errors.

The event is made durable first and applied second, under one lock: a crash in between loses nothing (the
next start replays the log), and statistics follow the log's order exactly.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, replace
from itertools import chain
from pathlib import Path

import numpy as np

from .data.dataset import Dataset
from .data.events import Event, EventStore, check_events_path, check_id, default_events_path, make_event
from .errors import InvalidRequestError, UnknownItemError
from .pipeline import Pipeline
from .retrieval.collaborative import ItemTransitions, TransitionParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UserData:
    """The served user data: sequences (base − forgotten + positive events) and rejected items per user."""

    sequences: dict[str, list[str]]
    rejected: dict[str, set[str]]
    forgotten: set[str]
    events: int


def served_user_data(base: dict[str, list[str]], store: EventStore | None, catalog=None) -> UserData:
    """What the log makes of the base sequences (``base`` is not modified). Events on items no longer in
    ``catalog`` (the catalog changed since they were recorded) are skipped, with a warning: they stay in the log.
    Items the log itself added (``POST /v1/items``, replayed by the server) are skipped without one: they count
    again once replayed (:meth:`Feedback.resync`)."""
    sequences = {u: list(s) for u, s in base.items()}
    rejected: dict[str, set[str]] = {}
    forgotten: set[str] = set()
    events: list[Event] = []
    if store is not None:
        forgotten = store.forgotten() & set(base)
        for user in forgotten:
            del sequences[user]
        events = store.events()
    stale = [e for e in events if catalog is not None and e.item not in catalog]
    added = {item["item_id"] for items, _ in store.added_items() for item in items} if stale else set()
    gone = [e for e in stale if e.item not in added]
    if gone:
        log.warning("%d logged event(s) name items that are not in the catalog any more (e.g. %r); they are "
                    "skipped", len(gone), gone[0].item)
    if stale:
        events = [e for e in events if e.item in catalog]
    for event in events:
        if event.positive:
            seq = sequences.setdefault(event.user, [])
            if event.item not in seq:
                seq.append(event.item)
        else:
            rejected.setdefault(event.user, set()).add(event.item)
    return UserData(sequences, rejected, forgotten, len(events))


def served_dataset(dataset: Dataset, store: EventStore | None) -> Dataset:
    """A new :class:`Dataset` with the served user data (for ``recgen refit`` and tests)."""
    data = served_user_data(dataset.sequences, store, dataset.catalog)
    return Dataset(dataset.name, dataset.catalog, data.sequences, dataset.dropped_unknown)


def forget_durably(store: EventStore, base_users: set[str] | frozenset[str], user: str) -> dict:
    """Delete ``user``'s events, and tombstone them when they are a base-data user; no live statistics (what
    ``recgen forget`` does on disk). Idempotent for any well-formed id: the result says what THIS call removed
    (``tombstoned``: whether this call wrote the tombstone), so a repeat, or an id nobody knows, removes nothing."""
    check_id(user, "user id")
    in_base = user in base_users
    newly = in_base and not store.is_forgotten(user)
    removed = store.forget(user, tombstone=in_base)
    return {"user": user, "events_removed": removed, "dataset_user": in_base, "tombstoned": newly}


def nothing_forgotten(user: str, in_base: bool) -> dict:
    """The result of forgetting a user there is nothing of (no log to write to): the same shape, all zero."""
    check_id(user, "user id")
    return {"user": user, "events_removed": 0, "dataset_user": in_base, "interactions_removed": 0}


class Feedback:
    """Keeps one recommender's user data and statistics in step with its event log.

    ``dataset`` is changed in place to the served user data (so everything that reads user histories from it,
    the server included, sees events and forgotten users at once). Writers are serialised by a lock; readers
    (the recommending thread) need none: each change replaces a user's list (:meth:`Dataset.set_sequence`) and
    hands the pipeline a new fitted state (new popularity and transitions values) in single assignments."""

    def __init__(self, pipeline: Pipeline, dataset: Dataset, path: str | Path | None = None, *, create: bool = True):
        """The log of ``dataset`` applied to it and to ``pipeline``, which was fitted on ``dataset`` as it was
        (the base data): the statistics are changed by the users the log changes."""
        self._open(dataset, path, create)
        self.attach(pipeline, fitted_on_base=True)

    @classmethod
    def open(cls, dataset: Dataset, path: str | Path | None = None, *, create: bool = False) -> "Feedback":
        """The log applied to ``dataset`` before anything is fitted: fit on the served user data, then
        :meth:`attach` the pipeline (what ``open_dataset`` does: one fit, on the right data)."""
        self = cls.__new__(cls)
        self._open(dataset, path, create)
        return self

    def _open(self, dataset: Dataset, path: str | Path | None, create: bool) -> None:
        self.pipeline: Pipeline | None = None
        self.dataset = dataset
        self.path = Path(path) if path is not None else default_events_path(dataset.name)
        check_events_path(self.path)  # a folder or a device is an error, not "no log yet"
        self.base_users = frozenset(dataset.sequences)
        self._base = {u: list(seq) for u, seq in dataset.sequences.items()}  # for resync: the log re-read
        #: whether the server replayed the log's added items into the catalog (once per log)
        self.items_replayed = False
        self._lock = threading.Lock()
        self._store = EventStore(self.path) if create or self.path.is_file() else None
        data = served_user_data(dataset.sequences, self._store, dataset.catalog)
        before = dataset.sequences
        changed = [u for u in set(before) | set(data.sequences) if before.get(u) != data.sequences.get(u)]
        #: (removed, added) sequences: the change from the base data to the served user data
        self._changes = ([before[u] for u in changed if before.get(u)],
                         [data.sequences[u] for u in changed if data.sequences.get(u)])
        for user in changed:
            dataset.set_sequence(user, data.sequences.get(user))
        self.rejected: dict[str, set[str]] = data.rejected

    def attach(self, pipeline: Pipeline, *, fitted_on_base: bool = False) -> "Feedback":
        """Serve ``pipeline``'s statistics from now on: fitted on the served user data (default), or on the
        base data (``fitted_on_base``: the log's change is applied to them first)."""
        with self._lock:
            self.pipeline = pipeline
            removed, added = self._changes
            transitions = pipeline.state.transitions
            if fitted_on_base and (removed or added):
                if transitions is not None and transitions.counts is None:
                    transitions = self._fitted(transitions.params)  # no counts to change: fit on the served data
                else:
                    transitions = self._updated(add=added, remove=removed)
            self._changes = ([], [])
            self.counts = self._count(self.dataset.sequences.values())
            self._publish(transitions)
        return self

    # -- state ---------------------------------------------------------------------------------------
    @property
    def store(self) -> EventStore:
        """The log, created on the first write when it did not exist yet."""
        if self._store is None:
            self._store = EventStore(self.path)
        return self._store

    @property
    def catalog(self):
        return self.dataset.catalog if self.pipeline is None else self.pipeline.catalog

    def _rows(self, seq: list[str]) -> np.ndarray:
        return np.array([self.catalog.index_of(i) for i in seq], dtype=np.int64)

    def _fitted(self, params: TransitionParams) -> ItemTransitions:
        """Transitions fitted on the served user data as it is now."""
        return ItemTransitions.fit(self.catalog, list(self.dataset.sequences.values()), params)

    def _count(self, sequences) -> np.ndarray:
        """Interactions per catalog row: counted by id first (in C), then one lookup per distinct item, not one per
        interaction (10M lookups were 20 s of opening synth L)."""
        by_id = Counter(chain.from_iterable(sequences))
        rows = np.array([self.catalog.index_of(i) for i in by_id], dtype=np.int64)
        return np.bincount(rows, weights=np.fromiter(by_id.values(), dtype=np.float64, count=len(by_id)),
                           minlength=len(self.catalog)).astype(np.int64)

    def _updated(self, add: list[list[str]], remove: list[list[str]]) -> ItemTransitions | None:
        """The served transitions with these sequences added and removed, as a new value (call it before the
        served user data changes: without counts, they are fitted on it first)."""
        transitions = self.pipeline.state.transitions
        if transitions is None or not (add or remove):
            return transitions
        if transitions.counts is None:  # loaded from a folder saved without counts: fit once, update from then on
            transitions = self._fitted(transitions.params)
        return transitions.updated(add=[self._rows(s) for s in add], remove=[self._rows(s) for s in remove],
                                   n_items=len(self.catalog))

    def _grow(self) -> None:
        """Counts for items added to the catalog since (``Recommender.add_items``)."""
        if len(self.counts) < len(self.catalog):
            self.counts = np.concatenate([self.counts, np.zeros(len(self.catalog) - len(self.counts), np.int64)])

    def _publish(self, transitions: ItemTransitions | None) -> None:
        """Hand the pipeline its new fitted state: the popularity list from the counts (ties by catalog order,
        like :meth:`Dataset.popularity`) and ``transitions``."""
        self._grow()
        rows = np.flatnonzero(self.counts)
        rows = rows[np.lexsort((rows, -self.counts[rows]))]
        ids = self.catalog.ids
        self.pipeline.serve(replace(self.pipeline.state, popularity=[ids[r] for r in rows], transitions=transitions))

    # -- what callers use --------------------------------------------------------------------------------
    def _check_attached(self) -> None:
        if self.pipeline is None:
            raise InvalidRequestError("this event log is not attached to a recommender yet (Recommender.use_feedback)")

    def history(self, user: str) -> list[str]:
        return self.dataset.history(user)

    def rejected_items(self, user: str | None) -> list[str]:
        return sorted(self.rejected.get(user, ())) if user is not None else []

    def record(self, user, item, event, *, value=None, event_id=None, ts=None) -> tuple[Event, bool]:
        """Store one event durably, then apply it; returns (the stored event, whether it was new). A duplicate
        event id changes nothing (its first recording is returned)."""
        self._check_attached()
        candidate = make_event(user, item, event, value=value, event_id=event_id, ts=ts)
        if candidate.item not in self.catalog:
            raise UnknownItemError(f"item {candidate.item!r} is not in the catalog ({len(self.catalog)} items)")
        with self._lock:
            stored, new = self.store.record(candidate)
            if new:
                self._apply(stored)
        return stored, new

    def _apply(self, event: Event) -> None:
        if not event.positive:
            self.rejected.setdefault(event.user, set()).add(event.item)
            return
        seq = self.dataset.sequences.get(event.user, [])
        if event.item in seq:
            return
        extended = seq + [event.item]
        transitions = self._updated(add=[extended], remove=[seq] if seq else [])
        self.dataset.set_sequence(event.user, extended)
        self._grow()
        self.counts[self.catalog.index_of(event.item)] += 1
        self._publish(transitions)

    def forget(self, user: str) -> dict:
        """Remove ``user``'s events and their base interactions (tombstone) from the log and the statistics;
        ``interactions_removed`` counts the served interactions this call took out (0 on a repeat)."""
        self._check_attached()
        check_id(user, "user id")
        with self._lock:
            if self._store is None and user not in self.base_users:
                return nothing_forgotten(user, False)  # no log, no such user: nothing to write
            result = forget_durably(self.store, self.base_users, user)
            del result["tombstoned"]  # the served count below says what this call removed
            seq = self.dataset.sequences.get(user)
            self.rejected.pop(user, None)
            transitions = self._updated(add=[], remove=[seq] if seq else [])
            self.dataset.set_sequence(user, None)
            if seq:
                np.subtract.at(self.counts, self._rows(seq), 1)
                self._publish(transitions)
        return {**result, "interactions_removed": len(seq or [])}

    def added_items(self) -> list[tuple[list[dict], bool]]:
        """The batches of items added to the served catalog, as recorded (none without a log)."""
        return self._store.added_items() if self._store is not None else []

    def resync(self) -> None:
        """Re-read the log against the catalog as it is now: events on items it did not hold when the log was
        opened (items added over HTTP, replayed at start) count again, in the log's order, as a fit would."""
        self._check_attached()
        with self._lock:
            data = served_user_data(self._base, self._store, self.catalog)
            current = self.dataset.sequences
            changed = [u for u in set(current) | set(data.sequences) if current.get(u) != data.sequences.get(u)]
            removed = [current[u] for u in changed if current.get(u)]
            added = [data.sequences[u] for u in changed if data.sequences.get(u)]
            transitions = self._updated(add=added, remove=removed)  # first: it may refit on the data as it was
            for user in changed:
                self.dataset.set_sequence(user, data.sequences.get(user))
            self.rejected = data.rejected
            self.counts = self._count(self.dataset.sequences.values())
            self._publish(transitions)


def no_feedback_error() -> InvalidRequestError:
    return InvalidRequestError("this recommender has no event log: open it with open_dataset(...) or call "
                               "recommender.use_feedback(dataset) first")

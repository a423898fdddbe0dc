"""``recgen forget``: remove a user from the event log and the base data's fits (``recgen refit`` is ``recgen fit``).

Both work on the dataset's event log on disk (``RECGEN_STATE_DIR``/feedback/<dataset>/events.sqlite, or
``--events``). A running server keeps its live statistics until it restarts: to forget a user a server is
serving, use ``DELETE /v1/users/{id}`` (it updates both the log and the live statistics).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..data import load_dataset
from ..data.events import EventStore, default_events_path
from ..feedback import forget_durably, nothing_forgotten
from .common import console, friendly_errors, print_json

DatasetOpt = typer.Option("ml-100k", "--dataset", "-d", help="dataset name (under RECGEN_DATA_DIR or ../shared/data) or folder")
EventsOpt = typer.Option(None, "--events", help="the event log (default: RECGEN_STATE_DIR/feedback/<dataset>/events.sqlite)")


@friendly_errors
def forget(user: str = typer.Option(..., "--user", "-u", help="the user id to forget"),
           dataset: str = DatasetOpt, events: Optional[Path] = EventsOpt,
           as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Forget a user: delete their events and tombstone their base interactions (the data files are not
    modified; every fit and load drops a tombstoned user). Idempotent: the counts are what this call removed."""
    data = load_dataset(dataset)
    path = events or default_events_path(data.name)
    if user not in data.sequences and not path.is_file():
        result = nothing_forgotten(user, False)  # idempotent, as DELETE /v1/users/{id}: nothing to remove
    else:
        store = EventStore(path)
        try:
            result = forget_durably(store, frozenset(data.sequences), user)
        finally:
            store.close()
        # what THIS call took out: the base interactions once, when it wrote the tombstone (0 on a repeat)
        result["interactions_removed"] = len(data.sequences.get(user, ())) if result["tombstoned"] else 0
    result.pop("tombstoned", None)  # the same fields as DELETE /v1/users/{id} answers
    result["events_log"] = str(path)
    if as_json:
        print_json(result)
    elif not (result["events_removed"] or result["interactions_removed"]):
        console.print(f"nothing to forget for user {user!r}: no events in {path}"
                      + (" and already tombstoned" if result["dataset_user"] else ", not a dataset user"))
    else:
        console.print(f"forgot user {user!r}: {result['events_removed']} event(s) deleted"
                      + (f", {result['interactions_removed']} base interaction(s) tombstoned" if result["dataset_user"]
                         else "") + f" ({path})")

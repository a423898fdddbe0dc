"""``recgen forget`` (remove a user from the event log and the base data's fits) and ``recgen refit``.

Both work on the dataset's event log on disk (``RECGEN_STATE_DIR``/feedback/<dataset>/events.sqlite, or
``--events``). A running server keeps its live statistics until it restarts: to forget a user a server is
serving, use ``DELETE /v1/users/{id}`` (it updates both the log and the live statistics).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from ..data import load_dataset
from ..data.events import EventStore, default_events_path
from ..errors import DataError
from ..feedback import forget_durably, served_dataset
from ..pipeline import FittedState
from ..recommender import Recommender
from ..retrieval.cache import index_folder
from .common import console, friendly_errors, make_config, print_json

DatasetOpt = typer.Option("ml-100k", "--dataset", "-d", help="dataset name (under RECGEN_DATA_DIR or ../shared/data) or folder")
EventsOpt = typer.Option(None, "--events", help="the event log (default: RECGEN_STATE_DIR/feedback/<dataset>/events.sqlite)")


@friendly_errors
def forget(user: str = typer.Option(..., "--user", "-u", help="the user id to forget"),
           dataset: str = DatasetOpt, events: Optional[Path] = EventsOpt,
           as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Forget a user: delete their events and tombstone their base interactions (the data files are not
    modified; every fit and load drops a tombstoned user)."""
    data = load_dataset(dataset)
    path = events or default_events_path(data.name)
    if user not in data.sequences and not path.is_file():
        raise DataError(f"user {user!r} is not in dataset {data.name!r} and there is no event log at {path}")
    store = EventStore(path)
    try:
        result = forget_durably(store, frozenset(data.sequences), user)
    finally:
        store.close()
    result["interactions_removed"] = len(data.sequences.get(user, ()))
    result["events_log"] = str(path)
    if as_json:
        print_json(result)
    else:
        console.print(f"forgot user {user!r}: {result['events_removed']} event(s) deleted"
                      + (f", {result['interactions_removed']} base interaction(s) tombstoned" if result["dataset_user"]
                         else "") + f" ({path})")


@friendly_errors
def refit(dataset: str = DatasetOpt, events: Optional[Path] = EventsOpt,
          out: Optional[Path] = typer.Option(None, help="save the refitted recommender here (a folder "
                                             "Recommender.load reads); default: only report"),
          config: Optional[Path] = typer.Option(None, help="config file (JSON or YAML) with RecgenConfig keys"),
          as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Re-fit the learned stages (FittedState.fit: popularity, item transitions) on the base data + the event
    log − forgotten users. Run it on a schedule (cron, a systemd timer); see the README."""
    cfg = make_config(config)
    start = time.perf_counter()
    base = load_dataset(dataset)
    path = events or default_events_path(base.name)
    store = EventStore(path, create=False) if path.is_file() else None
    try:
        data = served_dataset(base, store)
        n_events, forgotten = (len(store), len(store.forgotten())) if store is not None else (0, 0)
    finally:
        if store is not None:
            store.close()
    state = FittedState.fit(data, cfg.retrieval)
    info = {"dataset": base.name, "events_log": str(path) if store is not None else None, "events": n_events,
            "forgotten_users": forgotten, "users": len(data.sequences), "interactions": data.num_interactions(),
            "fitted": ["popularity"] + (["transitions"] if state.transitions is not None else [])}
    if out is not None:
        folder = index_folder(data.name, data.catalog.fingerprint(), cfg.retrieval.embedder)
        Recommender(data.catalog, cfg, state=state, index_dir=folder).save(out)
        info["saved"] = str(out)
    info["seconds"] = round(time.perf_counter() - start, 2)
    if as_json:
        print_json(info)
    else:
        console.print(f"refitted {', '.join(info['fitted'])} of {base.name} on {info['users']} users "
                      f"({info['interactions']} interactions; {n_events} logged events, {forgotten} forgotten "
                      f"users) in {info['seconds']} s" + (f" → {out}" if out else ""))

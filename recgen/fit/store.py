"""The fusion fit made on the evaluation split, stored once and reused by ``recgen fit``, ``recgen eval run -s
fusion`` and ``recgen eval requests --ranker fusion`` (each used to fit the same second stage from scratch).

Only the fit :class:`~recgen.fit.fusion.FusionFitter` makes on the **evaluation split** is stored (signals fitted
on each user's training part, settings and ranker chosen on validation targets), never the served fit: its sources
are refitted on every interaction, test targets included, so an evaluation reading it would be scored on targets
it has seen. The folder is keyed by the data (every sequence: the split is a function of it), the fitter's settings
and the code (version + a digest of the fitting and splitting modules), so a change to any of them is another
folder. Files, no pickle: the source statistics (npz + JSON), the rankers (LightGBM text), SASRec (safetensors),
the held-out mask (npz) and ``fit.json``; written with :func:`recgen.atomic.atomic_dir` (manifest) and verified
before use (a damaged folder is refitted and replaced, never trusted).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..atomic import atomic_dir, remove_claimed, verify_folder
from ..data.split_arrays import EvalData
from ..errors import RecgenError
from ..paths import cache_dir
from ..pipeline import data_fingerprint, load_sasrec, save_sasrec
from ..ranking.fusion import (
    FusionRanker,
    FusionStage,
    RequestStage,
    Sources,
    SourceStats,
    feature_names,
    request_feature_names,
)
from ..version import __version__
from .fusion import FusionFit, FusionFitter
from .request_stage import RequestFit

_PACKAGE = Path(__file__).resolve().parents[1]
#: the modules whose code decides what a fit is (a change to any of them is another key)
FIT_CODE = ("fit/*.py", "ranking/fusion/*.py", "data/split.py", "data/split_arrays.py", "metrics.py",
            "retrieval/*.py")
_FIT_JSON, _HELD, _RANKER, _REQUEST_RANKER, _SASREC = "fit.json", "held.npz", "ranker.txt", "ranker-request.txt", \
    "sasrec.safetensors"
#: fitter settings that do not change the main fit (the request stage is checked on its own)
_NOT_KEYED = ("fitted_on",)


def code_digest() -> str:
    """recgen's version and a digest of the source of every module in :data:`FIT_CODE`."""
    digest = hashlib.sha256(__version__.encode())
    for pattern in FIT_CODE:
        for path in sorted(_PACKAGE.glob(pattern)):
            digest.update(path.relative_to(_PACKAGE).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def fit_key(fitter: FusionFitter, data: EvalData) -> str:
    """Data + settings + code: equal keys mean the same fit."""
    params = {k: v for k, v in fitter.params().items() if k not in _NOT_KEYED}
    wanted = {"data": data_fingerprint(data.dataset), "users": data.n_users, "train": train_digest(data), "params": params,
              "threads": fitter.threads, "code": code_digest(),
              "split": "leave-one-out; signals on training parts, ranker on validation targets"}
    return hashlib.sha256(json.dumps(wanted, sort_keys=True, default=str).encode()).hexdigest()[:12]


def train_digest(data: EvalData) -> str:
    """A digest of the training parts the fit sees: a view of the same dataset with other training sequences (the
    cold-item protocol removes the released items from them) must never reuse a fit that saw those items."""
    digest = hashlib.sha256()
    for seq in data.train_sequences():
        digest.update(np.asarray(seq, dtype=np.int64).tobytes() + b"|")
    return digest.hexdigest()[:16]


def fit_folder(data: EvalData, key: str) -> Path:
    return cache_dir() / "fusion-eval" / f"{data.dataset.name}-{key}"


def checkpoint_folder(data: EvalData, key: str) -> Path:
    """Where the fit of ``key`` keeps its finished LightGBM trials and feature batches until it is stored
    (:mod:`.checkpoints`)."""
    return cache_dir() / "fusion-checkpoints" / f"{data.dataset.name}-{key}"


def fit_once(fitter: FusionFitter, data: EvalData, log=None) -> tuple[FusionFit, dict]:
    """The stored fit when one matches (says so), else a fresh fit, stored for the next caller; and what happened
    (``{"key", "reused"}``, for a run file: no folder of this machine)."""
    say = log or (lambda message: None)
    key = fit_key(fitter, data)
    folder = fit_folder(data, key)
    if folder.exists():
        try:
            found = load_fit(fitter, data, folder, key)
        except RecgenError as exc:  # damaged or unreadable: refit and replace it, never trust it
            say(f"fusion: the stored fit in {folder} is not usable ({exc}); fitting again")
            found = None
        if found is not None:
            say(f"fusion: reusing the fit from {folder} (key {key}: same data, settings and code); not refitting")
            return found, {"key": key, "reused": True}
    say(f"fusion: no stored fit for key {key}; fitting on the evaluation split (saved to {folder})")
    checkpoints = checkpoint_folder(data, key)
    fitted = fitter.fit(data, log=log, checkpoints=checkpoints)  # a killed fit's finished work is reused
    try:
        save_fit(fitted, folder, key, fitter)
    except RecgenError as exc:  # the fit is done: a cache that cannot be written must not lose it
        say(f"fusion: the fit could not be stored ({exc}); the next run fits again")
    else:
        remove_claimed(checkpoints)  # stored: its checkpoints are spent
    return fitted, {"key": key, "reused": False}


def save_fit(fitted: FusionFit, folder: Path, key: str, fitter: FusionFitter) -> Path:
    request = fitted.request
    with atomic_dir(folder, manifest=True, what="fusion fit on the evaluation split") as tmp:
        fitted.sources.stats.save(tmp)
        fitted.ranker.save(tmp / _RANKER)
        np.savez(tmp / _HELD, held=fitted.held)
        if fitted.sources.sasrec is not None:
            save_sasrec(fitted.sources.sasrec, tmp / _SASREC)
        if request is not None and request.ranker is not None:
            request.ranker.save(tmp / _REQUEST_RANKER)
        meta = {"key": key, "depth": fitted.depth, "held_out": fitted.held_out, "info": fitted.info,
                "sasrec": fitted.sources.sasrec is not None,
                "request": None if request is None else {"info": request.info, "users": fitter.request_users,
                                                         "ranker": request.ranker is not None}}
        (tmp / _FIT_JSON).write_text(json.dumps(meta, indent=1, default=str), encoding="utf-8")
    return folder


def load_fit(fitter: FusionFitter, data: EvalData, folder: Path, key: str) -> FusionFit | None:
    """The stored fit, or None when it lacks what ``fitter`` asks for (a request stage of this size)."""
    verify_folder(folder, (_FIT_JSON, _RANKER, _HELD), what="stored fusion fit")
    meta = json.loads((folder / _FIT_JSON).read_text(encoding="utf-8"))
    stored_request = meta.get("request")
    if meta.get("key") != key or (fitter.fit_requests and (stored_request is None
                                                            or stored_request["users"] != fitter.request_users)):
        return None
    catalog, n_items = data.dataset.catalog, len(data.dataset.catalog)
    sasrec = None
    if meta["sasrec"]:
        sasrec, problem = load_sasrec(folder / _SASREC, n_items)
        if problem:
            raise RecgenError(problem)
    sources = Sources(catalog, fitter.retriever_for(data), stats=SourceStats.load(folder, n_items), sasrec=sasrec)
    groups = (meta["info"].get("item_features") or {}).get("chosen", [])
    items = fitter.item_features(sources, groups)  # the LM vectors come from their own per-item cache
    ranker = FusionRanker.load(folder / _RANKER, feature_names(sasrec is not None, False, items.groups))
    with np.load(folder / _HELD, allow_pickle=False) as arrays:
        held = arrays["held"].astype(bool)
    info, request = dict(meta["info"]), None
    if fitter.fit_requests:
        loaded = None
        if stored_request["ranker"]:
            loaded = FusionRanker.load(folder / _REQUEST_RANKER, request_feature_names(sasrec is not None))
        request = RequestFit(stored_request["info"], loaded, RequestStage(sources, loaded) if loaded else None)
    else:
        info.pop("request_stage", None)  # what a fit without the request stage reports
    depth = int(meta["depth"])
    stage = FusionStage(sources, ranker, depth, items, int((info.get("cold_pin") or {}).get("chosen", 0)))
    return FusionFit(sources, ranker, depth, stage, held, meta["held_out"], fitter.model_path(data), info, request,
                     items)

"""Finished LightGBM trials of a fusion fit kept on disk, so a fit killed during its selection resumes there.

Why: on synth M the selection's LightGBM trials took 850 s and a fit killed among them started them all again.
:class:`CheckpointedTrainer` wraps whichever trainer runs the trials (this process or a Dask cluster,
:mod:`.ranker_training`): before training it looks for a finished trial under a key made of everything that
decides the result, i.e. the rows themselves (a digest of the training and held-out features, labels and group
sizes: the depth, the shifts, the columns and the learning curve's user sample all show there), the feature
names, the LightGBM settings (leaves, rounds, threads, seed, the fixed parameters, LightGBM's version) and the
trainer; the folder itself is per fit key (data, settings, code: :func:`recgen.fit.store.fit_key`). A finished
trial is its ranker in LightGBM's text format (the best iteration, as :meth:`FusionRanker.save` writes it) and
a manifest (the key, the ranker's info, the text file's size and SHA-256), written last. LightGBM runs
deterministically here (``deterministic``, the same threads: part of the key), so a reused trial's ranker
predicts what an uninterrupted fit's would, and the selection makes the same choice with the same held-out NDCG.

The folder is recgen's own (names recorded with :func:`recgen.atomic.claim_files`) and removed once the fit is
stored (:func:`recgen.atomic.remove_claimed`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..atomic import file_digest, write_claimed
from ..errors import RecgenError
from ..ranking.fusion import FusionRanker
from ..ranking.fusion.groups import Stacked
from ..ranking.fusion.model import BASE_PARAMS
from .ranker_training import Groups, RankerTrainer

WHAT = "fusion fit trial checkpoints"


def rows_digest(groups: Groups) -> str:
    """A digest of the rows a trial is given: features, labels and group sizes (a stacked cut or pairs)."""
    digest = hashlib.blake2b(digest_size=16)
    parts = [(groups.X, groups.y, groups.sizes)] if isinstance(groups, Stacked) else \
        [(X, y, np.array([len(y)])) for X, y in groups]
    for X, y, sizes in parts:
        for array in (X, y, sizes):
            array = np.ascontiguousarray(array)
            digest.update(str((array.dtype.str, array.shape)).encode())
            digest.update(array.data)
    return digest.hexdigest()


class CheckpointedTrainer:
    """A :class:`~.ranker_training.RankerTrainer` that reuses the finished trials in ``folder`` and saves new ones
    there; ``reused`` and ``trained`` count what it did."""

    def __init__(self, inner: RankerTrainer, folder: str | Path) -> None:
        self.inner, self.folder = inner, Path(folder)
        self.reused = self.trained = 0

    def report(self) -> dict:
        return {"trials_reused": self.reused, "trials_trained": self.trained}

    def train(self, train: Groups, valid: Groups, feature_names: Sequence[str], *, num_leaves: int, max_rounds: int,
              threads: int, seed: int, log: Callable[[str], None] | None = None,
              callbacks: Sequence[Callable] = ()) -> FusionRanker:
        import lightgbm

        key = hashlib.sha256(json.dumps({
            "train": rows_digest(train), "valid": rows_digest(valid), "names": list(feature_names),
            "num_leaves": int(num_leaves), "max_rounds": int(max_rounds), "threads": int(threads), "seed": int(seed),
            "params": BASE_PARAMS, "lightgbm": lightgbm.__version__, "trainer": type(self.inner).__name__,
        }, sort_keys=True).encode()).hexdigest()[:24]
        found = self._load(key, feature_names)
        if found is not None:
            self.reused += 1
            if log:
                log(f"fusion: trial {key} reused from its checkpoint ({found.info})")
            return found
        rows = [train, valid]  # handed over without a reference left here, so the rows are freed once binned
        del train, valid
        ranker = self.inner.train(rows.pop(0), rows.pop(0), feature_names, num_leaves=num_leaves,
                                  max_rounds=max_rounds, threads=threads, seed=seed, log=log, callbacks=callbacks)
        self._save(key, ranker)
        self.trained += 1
        return ranker

    def _save(self, key: str, ranker: FusionRanker) -> None:
        """The ranker's text file, then the manifest naming its size and SHA-256 (a kill leaves no manifest of a
        half-written trial). A disk that refuses costs only the checkpoint, never the fit."""
        try:
            size_sha = write_claimed(self.folder, f"{key}.txt", ranker.save, WHAT)
            meta = json.dumps({"key": key, "info": ranker.info, "file": list(size_sha)})
            write_claimed(self.folder, f"{key}.json", lambda tmp: tmp.write_text(meta, encoding="utf-8"), WHAT)
        except (OSError, RecgenError):
            pass

    def _load(self, key: str, feature_names: Sequence[str]) -> FusionRanker | None:
        """The finished trial under ``key`` when its manifest and file check out, else None (it is trained again)."""
        try:
            meta = json.loads((self.folder / f"{key}.json").read_text(encoding="utf-8"))
            text = self.folder / f"{key}.txt"
            if meta.get("key") != key or list(file_digest(text)) != meta.get("file"):
                return None
            ranker = FusionRanker.load(text, feature_names)
        except (OSError, ValueError, TypeError, AttributeError, RecgenError):
            return None
        ranker.info = dict(meta.get("info") or {})
        return ranker

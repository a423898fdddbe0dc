"""What a fusion fit keeps on disk while it runs, so a fit killed during its selection resumes there.

Why: on synth M the selection's LightGBM trials took 850 s and its feature groups ~540 s, and a fit killed among
them started them all again. Both are kept in the fit's checkpoint folder, which is per fit key (data, settings,
code: :func:`recgen.fit.store.fit_key`), recgen's own (names recorded with :func:`recgen.atomic.claim_files`, each
file renamed into place when whole, its manifest last) and removed once the fit is stored.

- :class:`CheckpointedTrainer` wraps whichever trainer runs the trials (this process or a Dask cluster,
  :mod:`.ranker_training`): a trial is keyed by everything that decides its result, i.e. the rows themselves (a
  digest of the training and held-out features, labels and group sizes: the depth, the shifts, the columns and
  the learning curve's user sample all show there), the feature names, the LightGBM settings (leaves, rounds,
  threads, seed, the fixed parameters, LightGBM's version) and the trainer. It is kept as its ranker in LightGBM's
  text format (the best iteration, as :meth:`FusionRanker.save` writes it) and a manifest (the ranker's info, the
  file's size and SHA-256). LightGBM runs deterministically here (``deterministic``, the same threads: part of
  the fit key), so a reused trial predicts what an uninterrupted fit's would: same choice, same held-out NDCG.
- :class:`FeatureCheckpoints` keeps each batch of feature groups (``FusionFitter._groups``: validation targets,
  the learning curve's training users, the prefix targets; the request stage's requests) as float32 features,
  candidate rows and pool ranks, keyed by what the batch is (its description, the pool depth, the feature names
  and the users' positions): at synth L the request stage alone was ~1 h of features.
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
from ..ranking.fusion.features import Group
from ..ranking.fusion.groups import Stacked
from ..ranking.fusion.model import BASE_PARAMS
from .ranker_training import Groups, RankerTrainer

WHAT = "fusion fit checkpoints"


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


def _key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _save(folder: Path, name: str, write: Callable[[Path], object], info: dict) -> None:
    """``name`` written by ``write``, then ``name.json`` with ``info`` and the file's size and SHA-256 (a kill leaves
    no manifest of a half-written file). A disk that refuses costs only the checkpoint, never the fit."""
    try:
        size_sha = write_claimed(folder, name, write, WHAT)
        meta = json.dumps({**info, "file": list(size_sha)})
        write_claimed(folder, name + ".json", lambda tmp: tmp.write_text(meta, encoding="utf-8"), WHAT)
    except (OSError, RecgenError):
        pass


def _checked(folder: Path, name: str, key: str) -> dict | None:
    """The manifest of ``name`` when it names ``key`` and the file has the recorded size and SHA-256."""
    try:
        meta = json.loads((folder / (name + ".json")).read_text(encoding="utf-8"))
        if isinstance(meta, dict) and meta.get("key") == key and list(file_digest(folder / name)) == meta.get("file"):
            return meta
    except (OSError, ValueError, TypeError):
        pass
    return None


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

        key = _key({"train": rows_digest(train), "valid": rows_digest(valid), "names": list(feature_names),
                    "num_leaves": int(num_leaves), "max_rounds": int(max_rounds), "threads": int(threads),
                    "seed": int(seed), "params": BASE_PARAMS, "lightgbm": lightgbm.__version__,
                    "trainer": type(self.inner).__name__})
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
        _save(self.folder, f"trial-{key}.txt", ranker.save, {"key": key, "info": ranker.info})

    def _load(self, key: str, feature_names: Sequence[str]) -> FusionRanker | None:
        """The finished trial under ``key`` when its manifest and file check out, else None (it is trained again)."""
        meta = _checked(self.folder, f"trial-{key}.txt", key)
        if meta is None:
            return None
        try:
            ranker = FusionRanker.load(self.folder / f"trial-{key}.txt", feature_names)
        except RecgenError:
            return None
        ranker.info = dict(meta.get("info") or {})
        return ranker


class FeatureCheckpoints:
    """Batches of feature groups kept in ``folder``; ``reused`` and ``built`` count batches."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.reused = self.built = 0

    def report(self) -> dict:
        return {"feature_batches_reused": self.reused, "feature_batches_built": self.built}

    @staticmethod
    def key(what: str, depth: int, names: Sequence[str], positions: Sequence[int]) -> str:
        return _key({"what": what, "depth": int(depth), "names": list(names), "positions": [int(p) for p in positions]})

    def groups(self, key: str, build: Callable[[], list[Group]]) -> list[Group]:
        """The batch under ``key`` from its checkpoint, or ``build()`` (then kept)."""
        return self.tagged_groups(key, lambda: (build(), np.zeros(0, dtype=np.int64)))[0]

    def tagged_groups(self, key: str, build: Callable[[], tuple[list[Group], np.ndarray]]
                      ) -> tuple[list[Group], np.ndarray]:
        """:meth:`groups` with an int64 array kept beside them (the request stage: each request's target position
        in its candidates)."""
        found = self._load(key)
        if found is not None:
            self.reused += 1
            return found
        groups, tags = build()
        tags = np.asarray(tags, dtype=np.int64)
        sizes = np.array([len(g.rows) for g in groups], dtype=np.int64)
        arrays = {"sizes": sizes, "rows": np.concatenate([g.rows for g in groups]) if groups else np.zeros(0, np.int64),
                  "X": (np.concatenate([g.X for g in groups]) if groups else np.zeros((0, 0))).astype(np.float32),
                  "pool_rank": np.concatenate([g.pool_rank for g in groups]) if groups else np.zeros(0, np.int64),
                  "tags": tags}

        def write(tmp: Path) -> None:
            with tmp.open("wb") as handle:
                np.savez(handle, **arrays)

        _save(self.folder, f"features-{key}.npz", write, {"key": key})
        self.built += 1
        return groups, tags

    def _load(self, key: str) -> tuple[list[Group], np.ndarray] | None:
        if _checked(self.folder, f"features-{key}.npz", key) is None:
            return None
        try:
            with np.load(self.folder / f"features-{key}.npz", allow_pickle=False) as data:
                sizes, rows, X, pool_rank, tags = (data[k] for k in ("sizes", "rows", "X", "pool_rank", "tags"))
        except (OSError, ValueError, KeyError):
            return None
        ends = np.cumsum(sizes)
        if (X.dtype != np.float32 or len(rows) != len(X) or len(pool_rank) != len(X) or tags.dtype != np.int64
                or (len(ends) and ends[-1] != len(X))):
            return None
        starts = np.concatenate([[0], ends[:-1]])
        return [Group(rows[a:b], X[a:b], pool_rank[a:b]) for a, b in zip(starts, ends)], tags

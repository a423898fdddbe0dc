"""The learned ranker: LightGBM ``lambdarank`` over candidate groups, saved in LightGBM's own text format.

A group is one user's candidates with label 1 on the held-out target. Groups whose target is not among the
candidates carry no ranking signal and are dropped from training. Early stopping watches NDCG@10 on the
groups of users held out from training. The file is ``booster.save_model`` text (never a pickle), checked in
Python before LightGBM parses it (:mod:`.lgb_text`: an edited file must not abort the process); loading checks
that the model's feature names are the ones the caller will provide, so a ranker fitted with, say, LM features
is refused when served without an LM, with the file and the missing features named.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from ...errors import DataError, ModelLoadError
from .groups import Stacked
from .lgb_text import checked_model_text

if TYPE_CHECKING:  # lightgbm (and the scikit-learn it imports, ~2 s) loads when a ranker is trained or read
    import lightgbm as lgb

#: LightGBM settings that are not tuned (the caller tunes ``num_leaves``; rounds stop early).
BASE_PARAMS = {
    "objective": "lambdarank", "metric": "ndcg", "eval_at": [10], "learning_rate": 0.05,
    "min_data_in_leaf": 50, "feature_fraction": 0.9, "lambdarank_truncation_level": 20,
    "verbose": -1, "deterministic": True, "force_row_wise": True,
}


def stack_groups(groups: Sequence[tuple[np.ndarray, np.ndarray]] | Stacked) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(X, y, group sizes) from (features, labels) pairs, keeping only groups that contain a positive; a
    :class:`~.groups.Stacked` cut (already positives only) is passed through without a copy."""
    if isinstance(groups, Stacked):
        return groups.X, groups.y, [int(n) for n in groups.sizes]
    kept = [(X, y) for X, y in groups if len(y) and y.max() > 0]
    if not kept:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.float32), []
    return (np.concatenate([X for X, _ in kept]), np.concatenate([y for _, y in kept]), [len(y) for _, y in kept])


class FusionRanker:
    """A fitted booster and the feature names it expects, in order."""

    def __init__(self, booster: lgb.Booster, feature_names: Sequence[str], info: dict | None = None):
        self.booster = booster
        self.feature_names = list(feature_names)
        self.info = dict(info or {})

    @classmethod
    def train(cls, train: Sequence[tuple[np.ndarray, np.ndarray]] | Stacked,
              valid: Sequence[tuple[np.ndarray, np.ndarray]] | Stacked,
              feature_names: Sequence[str], *, num_leaves: int = 31, max_rounds: int = 500, patience: int = 30,
              threads: int = 2, seed: int = 0, log: Callable[[str], None] | None = None,
              callbacks: Sequence[Callable] = ()) -> "FusionRanker":
        """Fit on ``train`` groups, early-stopped on ``valid`` groups' NDCG@10; ``callbacks``: LightGBM's, called
        after each iteration (progress). The stacked rows are dropped once LightGBM has binned them (pass a
        cut without keeping a reference to it, and its block is freed before boosting starts)."""
        X, y, sizes = stack_groups(train)
        Xv, yv, sizes_v = stack_groups(valid)
        del train, valid
        if not sizes or not sizes_v:
            raise DataError("too few users whose target is among the candidates to fit a second-stage ranker "
                            f"({len(sizes)} training, {len(sizes_v)} held-out groups); serve the hybrid order")
        import lightgbm as lgb

        names = list(feature_names)
        params = {**BASE_PARAMS, "num_leaves": int(num_leaves), "num_threads": int(threads), "seed": int(seed)}
        dtrain = lgb.Dataset(X, y, group=sizes, feature_name=names, free_raw_data=True, params=dict(params))
        dvalid = lgb.Dataset(Xv, yv, group=sizes_v, feature_name=names, reference=dtrain, params=dict(params))
        dtrain.construct(), dvalid.construct()  # binned: the float rows are not needed while boosting
        n_rows = int(len(y))
        del X, y, Xv, yv
        booster = lgb.train(params, dtrain, num_boost_round=max_rounds, valid_sets=[dvalid], valid_names=["held_out"],
                            callbacks=[lgb.early_stopping(patience, verbose=False), *callbacks])
        info = {"num_leaves": int(num_leaves), "best_iteration": int(booster.best_iteration),
                "held_out_ndcg@10_in_pool": float(booster.best_score["held_out"]["ndcg@10"]),
                "train_groups": len(sizes), "train_rows": n_rows, "held_out_groups": len(sizes_v)}
        if log:
            log(f"fusion ranker: {info}")
        return cls(booster, names, info)

    def predict(self, X: np.ndarray) -> np.ndarray:
        if X.shape[1] != len(self.feature_names):
            raise ValueError(f"{X.shape[1]} feature columns for a ranker of {len(self.feature_names)} features")
        if not len(X):
            return np.zeros(0)
        return self.booster.predict(X, num_iteration=self.booster.best_iteration or None, num_threads=1)

    def importance(self) -> dict[str, float]:
        gains = self.booster.feature_importance("gain", iteration=self.booster.best_iteration or None)
        total = float(gains.sum()) or 1.0
        return {n: round(float(g) / total, 4) for n, g in sorted(zip(self.feature_names, gains), key=lambda t: -t[1])}

    def save(self, path: str | Path) -> Path:
        """LightGBM's text format, best iteration only."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(path), num_iteration=self.booster.best_iteration or None)
        return path

    @classmethod
    def load(cls, path: str | Path, feature_names: Sequence[str]) -> "FusionRanker":
        """A saved ranker, refused (ModelLoadError naming the file) when unreadable or when its features are not
        exactly ``feature_names`` — the ones the caller can compute."""
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"ranker file {path} does not exist")
        text = checked_model_text(path, model_text(path))
        import lightgbm as lgb

        try:
            booster = lgb.Booster(model_str=text)
            names = booster.feature_name()
        except lgb.basic.LightGBMError as exc:
            raise ModelLoadError(f"{path} is not a readable LightGBM ranker: {str(exc).strip()[:200]}") from None
        provided = list(feature_names)
        if names != provided:
            missing = [n for n in names if n not in provided]
            extra = [n for n in provided if n not in names]
            raise ModelLoadError(
                f"ranker {path} was fitted with other features than this setup provides; "
                f"missing: {', '.join(missing) or 'none'}; not used by the ranker: {', '.join(extra) or 'none'}"
                + ("" if missing or extra else "; same names in another order"))
        return cls(booster, names)


def model_text(path: Path) -> str:
    """The file's text when it looks like a whole LightGBM text model.

    Checked before LightGBM sees it: its parser loops forever on some binary content (a NUL byte after the
    header), and a truncated file would otherwise fail deep inside the library or load a partial model."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read ranker file {path}: {exc.strerror or exc}") from None
    if b"\0" in data:
        raise ModelLoadError(f"{path} is not a LightGBM text model (binary content)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelLoadError(f"{path} is not a LightGBM text model (not UTF-8 text)") from None
    if not text.startswith("tree\n") or "\nfeature_names=" not in text or "\nend of trees" not in text:
        raise ModelLoadError(f"{path} is not a whole LightGBM text model (header or 'end of trees' missing: "
                             "empty, truncated or another kind of file)")
    return text

"""The LM as a feature of the learned second stage, so its weight is learned rather than hand-set.

The LM ranker's score path (:class:`~recgen.ranking.ranker.Ranker`, label log-probs over at most 26 lettered
candidates) is run on each user's top ``m`` candidates of the fused (no-LM) order. Per candidate it gives the
label log-prob, its rank among the ``m`` and the normalised probability (softmax over the ``m``). A small
LightGBM lambdarank model (:class:`LMStackedRanker`) then re-orders those ``m`` from [fused score, fused rank,
LM features]; the fused order below the ``m`` is kept. A weak LM gets a small weight; a stronger LM (a bigger
model, an adapter) is dropped in by re-running the LM over the same users and re-fitting this model.

LM scores are memoized on disk (:class:`DiskScoreMemo`: one JSONL line per prompt, keyed by a hash of the
prompt and labels, one file per model + adapter), so reruns and resumed runs cost nothing for prompts already
scored. The stacked model is saved in LightGBM's text format with its feature names; serving loads it through
:meth:`LMStackedRanker.load`, which refuses a file whose features differ from :func:`stack_feature_names`.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ...lm.memo import ScoreMemo, _key
from ..ranker import Ranker, RankRequest
from .model import FusionRanker

#: Candidates the LM sees per user: the top of the fused order, within the ranker's 26-label limit.
TOP_M = 20
#: Stacked model: few leaves, few features; rounds stop early on held-out users.
STACK_LEAVES, STACK_MAX_ROUNDS = 7, 300


def lm_feature_names() -> list[str]:
    """What :func:`compute_lm_features` returns per candidate, in column order."""
    return ["lm_logprob", "lm_rank", "lm_prob"]


def stack_feature_names(use_lm: bool = True) -> list[str]:
    """Columns of the stacked model: the fused score and rank, then (with an LM) :func:`lm_feature_names`."""
    return ["fused_score", "fused_rank"] + (lm_feature_names() if use_lm else [])


class DiskScoreMemo(ScoreMemo):
    """:class:`ScoreMemo` that also appends every fresh score row to a JSONL file and reads it back.

    One file per model + adapter (the prompt key does not name the model). Before sending prompts to the LM it
    reads lines other processes appended since (several processes may share one file: each batch is one
    append). A torn line (a killed run) is skipped, so a resumed run re-scores at most that line's prompts."""

    def __init__(self, backend, path: str | Path):
        super().__init__(backend)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.loaded = 0
        self._offset = 0
        self._read_new()

    def _read_new(self) -> None:
        if not self.path.is_file():
            return
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a last line without its newline may still be being written
        for line in data[:end].splitlines():
            try:
                key, row = json.loads(line)
                self._scores[key] = [float(x) for x in row]
            except (ValueError, TypeError):
                continue
            self.loaded += 1
        self._offset += end

    def score_labels(self, prompts, labels):
        keys = [_hashed(p, ls) for p, ls in zip(prompts, labels)]
        if any(key not in self._scores for key in keys):
            self._read_new()
        todo = [n for n, key in enumerate(keys) if key not in self._scores]
        if todo:
            fresh = self.backend.score_labels([prompts[n] for n in todo], [labels[n] for n in todo])
            lines = []
            for n, row in zip(todo, fresh):
                self._scores[keys[n]] = [float(x) for x in row]
                lines.append(json.dumps([keys[n], self._scores[keys[n]]]) + "\n")
            with self.path.open("a", encoding="utf-8") as out:
                out.write("".join(lines))  # one append per batch
            self.calls += len(todo)
        return [list(self._scores[key]) for key in keys]


def _hashed(prompt, labels) -> str:
    return hashlib.sha256(_key(prompt, labels).encode()).hexdigest()


def memo_path(folder: str | Path, model: str | None, adapter: str | None) -> Path:
    """The memo file for one LM: the model name and a hash of the adapter's weights file (or 'zeroshot')."""
    tag = "zeroshot"
    if adapter:
        weights = Path(adapter) / "adapter_model.safetensors"
        digest = hashlib.sha256(weights.read_bytes() if weights.is_file() else str(adapter).encode()).hexdigest()
        tag = f"adapter-{digest[:12]}"
    name = (model or "default").replace("/", "_")
    return Path(folder) / f"{name}-{tag}.jsonl"


def lm_logprobs(ranker: Ranker, histories: Sequence[Sequence[str]], queries: Sequence[str | None],
                candidate_lists: Sequence[Sequence[str]], batch: int = 8,
                log: Callable[[str], None] | None = None) -> list[np.ndarray]:
    """Each candidate's label log-prob (aligned with ``candidate_lists``), by the ranker's score path in batches
    of ``batch`` prompts. The ranker's retrieval prior is not applied: the stacked model weighs position."""
    if not len(histories) == len(queries) == len(candidate_lists):
        raise ValueError("histories, queries and candidate_lists must have one entry per user")
    out: list[np.ndarray] = []
    started, last = time.perf_counter(), 0.0
    for start in range(0, len(histories), batch):
        requests = [RankRequest(list(h), q, list(c), len(c))
                    for h, q, c in zip(histories[start:start + batch], queries[start:start + batch],
                                       candidate_lists[start:start + batch]) if len(c)]
        prompts = [ranker.prompt(r) for r in requests]
        scores = iter(ranker.backend.score_labels(prompts, [list(p.labels) for p in prompts]) if prompts else [])
        for c in candidate_lists[start:start + batch]:
            out.append(np.asarray(next(scores), dtype=np.float64) if len(c) else np.zeros(0))
        elapsed = time.perf_counter() - started
        if log and elapsed - last > 60:
            last = elapsed
            log(f"lm features: {len(out):,}/{len(histories):,} users, {elapsed:.0f} s")
    return out


def features_from_logprobs(logprob: np.ndarray) -> np.ndarray:
    """[m, 3] columns of :func:`lm_feature_names` from one user's label log-probs."""
    logprob = np.asarray(logprob, dtype=np.float64)
    if not len(logprob):
        return np.zeros((0, 3))
    rank = np.empty(len(logprob))
    rank[np.argsort(-logprob, kind="stable")] = np.arange(1, len(logprob) + 1)
    prob = np.exp(logprob - logprob.max())
    return np.stack([logprob, rank, prob / prob.sum()], axis=1)


def compute_lm_features(ranker: Ranker, histories: Sequence[Sequence[str]], queries: Sequence[str | None],
                        candidate_lists: Sequence[Sequence[str]], batch: int = 8,
                        log: Callable[[str], None] | None = None) -> list[np.ndarray]:
    """Per user, an [len(candidates), 3] array of :func:`lm_feature_names` for its candidates (item ids, at most
    26; pass the top :data:`TOP_M` of the fused order). The serving entry point: wrap the backend in
    :class:`DiskScoreMemo` (or :class:`ScoreMemo`) to reuse scores."""
    return [features_from_logprobs(lp) for lp in lm_logprobs(ranker, histories, queries, candidate_lists, batch, log)]


def top_of_fused(rows: np.ndarray, fused: np.ndarray, m: int = TOP_M) -> np.ndarray:
    """Indices (into ``rows``) of the top ``m`` by fused score, best first (ties: pool order)."""
    return np.argsort(-np.asarray(fused, dtype=np.float64), kind="stable")[:m]


def stack_matrix(fused_top: np.ndarray, lm: np.ndarray | None) -> np.ndarray:
    """[m, n_features] rows of the stacked model for one user's top-m (fused scores best first)."""
    fused_top = np.asarray(fused_top, dtype=np.float64)
    cols = [fused_top, np.arange(1, len(fused_top) + 1, dtype=np.float64)]
    if lm is not None:
        cols += [lm[:, j] for j in range(lm.shape[1])]
    return np.stack(cols, axis=1).astype(np.float32) if len(fused_top) else np.zeros((0, len(cols)), np.float32)


class LMStackedRanker(FusionRanker):
    """A lambdarank model over one user's top-m of the fused order (see the module doc); a
    :class:`~.model.FusionRanker` with the stacked feature names, so it is saved and checked the same way."""

    @classmethod
    def fit(cls, train: Sequence[tuple[np.ndarray, np.ndarray]], valid: Sequence[tuple[np.ndarray, np.ndarray]],
            use_lm: bool = True, threads: int = 1, seed: int = 0, log=None) -> "LMStackedRanker":
        """Fit on ``train`` groups (top-m rows, labels), early-stopped on ``valid`` groups' NDCG@10."""
        fitted = FusionRanker.train(train, valid, stack_feature_names(use_lm), num_leaves=STACK_LEAVES,
                                    max_rounds=STACK_MAX_ROUNDS, threads=threads, seed=seed, log=log)
        return cls(fitted.booster, fitted.feature_names, fitted.info)

    @classmethod
    def load(cls, path: str | Path, use_lm: bool = True) -> "LMStackedRanker":
        fitted = FusionRanker.load(path, stack_feature_names(use_lm))
        return cls(fitted.booster, fitted.feature_names, fitted.info)

    def rerank(self, X: np.ndarray) -> np.ndarray:
        """The new order of the m rows (indices into them, best first); ties keep the fused order."""
        return np.argsort(-self.predict(X), kind="stable")

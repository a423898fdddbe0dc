"""Cold start: items nobody has interacted with yet, and users who have barely started (issue 15).

Both protocols are views of the leave-one-out split (:class:`~recgen.evaluation.protocol.EvalData`) that the
one harness (:func:`~recgen.evaluation.protocol.evaluate_users`) ranks targets on, so every system (popular,
itemknn, retrieval, lm, ...) is measured the same way: full ranking, a miss counts 0.

* **Cold items** (:func:`cold_items`): a seeded share of the items that are some user's test target is
  *released after the cut-off*: every interaction with them falls after it, so they are removed from every
  training sequence and every history (no transitions, no popularity, no SASRec embedding: only their text).
  The users evaluated are those whose test target is a cold item. (The split's own cut-off, each user's last
  two positions, leaves only 3 cold test targets on ml-100k and 52 on Beauty: too few to measure, so the
  released share is drawn instead, deterministically from the seed.)
* **Cold users** (:func:`cold_users`): a seeded sample of users is held out of training entirely (nothing
  learned from them); each is then served with the first ``m`` of their interactions (m = 1, 2, 3) and
  asked for their ``m+1``-th. ``m = 0`` is the query-only user: no history, a request built from the target's
  attributes (:class:`~recgen.evaluation.requests.RequestBuilder`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..data import Dataset
from .metrics import metrics_from_ranks, rank_of, ranks_from_scores
from .protocol import EvalData, check_stage, evaluate_users, sample_users
from .requests import RequestBuilder
from .stats import bootstrap_cis, compare_paired


class ColdItemData(EvalData):
    """An :class:`EvalData` whose training sequences and histories never contain the cold items."""

    cold: np.ndarray  # bool [n_items]

    @classmethod
    def of(cls, data: EvalData, cold: np.ndarray) -> "ColdItemData":
        train = [t[~cold[t]] for t in data.train]
        out = cls(data.dataset, data.split, data.user_ids, train, data.valid, data.test, dict(data._pos))
        out.cold = cold
        return out

    def history(self, stage: str, p: int) -> np.ndarray:
        if check_stage(stage) == "valid":
            return self.train[p]
        return self.train[p] if self.cold[self.valid[p]] else np.append(self.train[p], self.valid[p])

    def train_dataset(self) -> Dataset:
        ids = self.dataset.catalog.ids
        return Dataset(self.dataset.name, self.dataset.catalog,
                       {u: [ids[i] for i in t] for u, t in zip(self.user_ids, self.train) if len(t)})


@dataclass
class ColdItems:
    data: ColdItemData
    positions: np.ndarray  # users whose test target is cold (and who keep a history)
    n_cold: int


def cold_items(data: EvalData, share: float = 0.1, seed: int = 0) -> ColdItems:
    """Release ``share`` of the test-target items after the cut-off (seeded); see the module doc."""
    if not 0 < share < 1:
        raise ValueError("the cold share must be between 0 and 1")
    targets = np.unique(data.test)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(targets, size=max(1, int(round(share * len(targets)))), replace=False)
    cold = np.zeros(data.n_items, dtype=bool)
    cold[chosen] = True
    view = ColdItemData.of(data, cold)
    positions = np.array([p for p in range(data.n_users) if cold[data.test[p]] and len(view.history("test", p))],
                         dtype=np.int64)
    return ColdItems(view, positions, int(cold.sum()))


class ColdUserData(EvalData):
    """An :class:`EvalData` in which the new users are left out of training and, at ``stage="test"``, have
    only their first ``m`` interactions as history and their ``m+1``-th as target."""

    new: np.ndarray  # bool [n_users]
    m: int

    @classmethod
    def of(cls, data: EvalData, new: np.ndarray, m: int) -> "ColdUserData":
        train = [np.zeros(0, dtype=np.int64) if new[p] else t for p, t in enumerate(data.train)]
        out = cls(data.dataset, data.split, data.user_ids, train, data.valid, data.test, dict(data._pos))
        out.new, out.m, out._full = new, m, data
        return out

    def _sequence(self, p: int) -> np.ndarray:
        return np.append(self._full.train[p], [self._full.valid[p], self._full.test[p]])

    def history(self, stage: str, p: int) -> np.ndarray:
        check_stage(stage)
        return self._sequence(p)[: self.m] if self.new[p] else super().history(stage, p)

    def target(self, stage: str, p: int) -> int:
        check_stage(stage)
        return int(self._sequence(p)[self.m]) if self.new[p] else super().target(stage, p)

    def targets(self, stage: str, positions) -> np.ndarray:
        return np.array([self.target(stage, int(p)) for p in positions], dtype=np.int64)

    def train_dataset(self) -> Dataset:
        ids = self.dataset.catalog.ids
        return Dataset(self.dataset.name, self.dataset.catalog,
                       {u: [ids[i] for i in t] for u, t in zip(self.user_ids, self.train) if len(t)})


def cold_users(data: EvalData, users: int = 300, seed: int = 0) -> np.ndarray:
    """A seeded sample of user positions to hold out of training as new users."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(data.n_users, size=min(users, data.n_users), replace=False))


def cold_user_view(data: EvalData, positions: np.ndarray, m: int) -> ColdUserData:
    new = np.zeros(data.n_users, dtype=bool)
    new[positions] = True
    return ColdUserData.of(data, new, m)


# -- running the protocols ------------------------------------------------------------------------------

#: What the cold protocols report per system: the issue's Recall@20 and NDCG@10, each with a 95% CI.
COLD_METRICS = ("recall@20", "ndcg@10")


def summary_of(ranks: list, n_boot: int = 1000, seed: int = 0) -> dict:
    """Means and bootstrap 95% CIs of :data:`COLD_METRICS` from per-user target ranks (None = a miss)."""
    per_user = metrics_from_ranks(ranks, (10, 20))
    chosen = {m: per_user[m] for m in COLD_METRICS}
    cis = bootstrap_cis(chosen, n_boot=n_boot, seed=seed)
    return {"users": len(ranks), **{m: {"mean": round(float(np.mean(v)), 4) if len(v) else None,
                                        "ci95": [round(x, 4) for x in cis[m]]} for m, v in chosen.items()}}


def ranks_of(system, data: EvalData, positions, log: Callable[[str], None] = lambda m: None) -> list:
    """Per-user target ranks of a fitted system under the one harness (test stage)."""
    rows = [row for batch in evaluate_users(system, data, "test", positions) for row in batch]
    log(f"{system.name}: {len(rows)} users ranked")
    return [row["rank"] for row in rows]


def paired(ranks_a: list, ranks_b: list, seed: int = 0) -> list[dict]:
    """Paired bootstrap (and Wilcoxon on NDCG@10) of system a against b on the same users."""
    a, b = metrics_from_ranks(ranks_a, (10, 20)), metrics_from_ranks(ranks_b, (10, 20))
    return [r.to_dict() for r in compare_paired(a, b, list(COLD_METRICS), seed=seed)]


def run_cold_items(data: EvalData, systems: dict[str, object], *, share: float = 0.1, seed: int = 0,
                   lm=None, lm_users: int = 300, log: Callable[[str], None] = lambda m: None) -> dict:
    """Every system of ``systems`` (name → unfitted system) on the cold-item users; ``lm`` (an unfitted LM
    system over text-only candidates) on a seeded sample of at most ``lm_users`` of them, paired with the
    text order (``systems["text"]``) on the same users."""
    cold = cold_items(data, share, seed)
    log(f"cold items: {cold.n_cold} items released after the cut-off; {len(cold.positions)} users with a cold target")
    out: dict = {"protocol": {"cold_share_of_test_targets": share, "cold_items": cold.n_cold,
                              "users": len(cold.positions), "seed": seed}, "systems": {}}
    ranks: dict[str, list] = {}
    for name, system in systems.items():
        system.fit(cold.data, log=log)
        ranks[name] = ranks_of(system, cold.data, cold.positions, log)
        out["systems"][name] = summary_of(ranks[name], seed=seed)
        fitted = getattr(system, "fit_info", {})
        if "cold_pin" in fitted:  # what the fit chose on its held-out users: the pin decides what cold items keep
            out["systems"][name]["fit"] = {"chosen": fitted.get("chosen"), "cold_pin": fitted["cold_pin"]}
    if "text" in ranks:  # what the served and fused orders lose (or win) against text alone, on the same users
        out["vs_text"] = {name: paired(r, ranks["text"], seed) for name, r in ranks.items()
                          if name not in ("text", "popular", "itemknn")}
    if lm is not None:
        sample = sample_users(len(cold.positions), lm_users, seed)
        positions = cold.positions[sample]
        lm.fit(cold.data, log=log)
        lm_ranks = ranks_of(lm, cold.data, positions, log)
        text = [ranks["text"][i] for i in sample]
        out["lm_sample"] = {"users": len(positions), "lm": summary_of(lm_ranks, seed=seed),
                            "text": summary_of(text, seed=seed), "lm_vs_text": paired(lm_ranks, text, seed)}
    return out


def run_cold_users(data: EvalData, systems: dict[str, object], *, users: int = 300, seed: int = 0,
                   prefixes=(1, 2, 3), request_system: str = "hybrid",
                   log: Callable[[str], None] = lambda m: None) -> dict:
    """Every system on new users with ``m`` interactions (``prefixes``), and the query-only user (m = 0):
    the served request path (``systems[request_system]``'s retriever: the hybrid, with its popularity prior for
    requests without a history) against popularity."""
    positions = cold_users(data, users, seed)
    views = {m: cold_user_view(data, positions, m) for m in prefixes}
    out: dict = {"protocol": {"new_users": len(positions), "prefixes": list(prefixes), "seed": seed}, "by_prefix": {}}
    first = views[prefixes[0]]
    for system in systems.values():
        system.fit(first, log=log)  # training leaves the new users out whatever m is: fit once
    for m, view in views.items():
        out["by_prefix"][str(m)] = {name: summary_of(ranks_of(s, view, positions, log), seed=seed)
                                    for name, s in systems.items()}
    out["query_only"] = _query_only(first, positions, systems, request_system, seed, log)
    return out


def _query_only(view: ColdUserData, positions, systems: dict, request_system: str, seed: int, log) -> dict:
    """No history: the first interaction is the target and a request is built from its attributes."""
    catalog = view.dataset.catalog
    ids = catalog.ids
    builder = RequestBuilder(catalog)
    rng = random.Random(seed)
    retriever = systems[request_system].retriever
    request_ranks, popular_ranks, satisfied, returned = [], [], 0, 0
    popular = systems.get("popular")
    pop_scores = popular.score([np.zeros(0, dtype=np.int64)])[0] if popular is not None else None
    for p in positions:
        target = int(view._sequence(int(p))[0])
        request = builder.positive(catalog.items[target], rng)
        if request is None:
            continue
        got = [i for i, _ in retriever.retrieve([], request.text, n=20)]
        request_ranks.append(rank_of(got, ids[target]))
        satisfied += sum(request.satisfied(catalog.get(i)) for i in got)
        returned += len(got)
        if pop_scores is not None:
            popular_ranks.append(int(ranks_from_scores(pop_scores[None, :], np.array([target]))[0]))
    log(f"query-only: {len(request_ranks)} users with a request")
    out = {"request": {**summary_of(request_ranks, seed=seed),
                       "satisfying_share@20": round(satisfied / returned, 4) if returned else None}}
    if popular_ranks:
        out["popular"] = summary_of(popular_ranks, seed=seed)
        out["request_vs_popular"] = paired(request_ranks, popular_ranks, seed)
    return out

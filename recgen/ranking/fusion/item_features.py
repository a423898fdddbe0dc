"""Item-representation features for the fused ranker: what an item's text / LM embedding says about it.

The base layout's text features are the cosine to the whole (recency-weighted) history. Each group here adds,
from one item embedding table (unit rows, float32):

* ``<group>_last1`` / ``<group>_last3``: cosine of the candidate to the user's last item / to the mean of the
  last 3 (what the user is doing *now*, which a whole-history profile blurs);
* ``<group>_pc0`` .. ``<group>_pc{k-1}``: the candidate's embedding projected on the catalog's first ``k``
  principal components (fitted on the catalog's items only, no interaction): a coarse "kind of item"
  coordinate the trees can split on, which is known for a cold item as for a warm one.

Groups: ``textrep`` (the retriever's sentence-transformer vectors) and ``lmrep`` (the causal LM's mean-pooled
last hidden state, :mod:`.lm_vectors`). Which groups a ranker uses is chosen on validation by the fit layer;
a saved ranker's feature names say which it needs (:func:`groups_in`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...config import LMSettings
from ...data.catalog import Catalog
from .lm_vectors import lm_item_vectors

#: The representation groups, in layout order.
ITEM_GROUPS = ("textrep", "lmrep")
#: Principal components per group, and the history tail the "recent" cosine averages.
COMPONENTS, RECENT = 4, 3


def group_names(group: str) -> list[str]:
    return [f"{group}_last1", f"{group}_last{RECENT}"] + [f"{group}_pc{i}" for i in range(COMPONENTS)]


def groups_in(feature_names: list[str]) -> tuple[str, ...]:
    """The representation groups a feature layout holds (in :data:`ITEM_GROUPS` order)."""
    return tuple(g for g in ITEM_GROUPS if f"{g}_last1" in feature_names)


@dataclass(frozen=True)
class ItemTable:
    """One group's unit item vectors [n_items, d] and their catalog PCA coordinates [n_items, COMPONENTS]."""

    group: str
    vectors: np.ndarray
    components: np.ndarray

    @classmethod
    def of(cls, group: str, vectors: np.ndarray) -> "ItemTable":
        if group not in ITEM_GROUPS:
            raise ValueError(f"unknown item-representation group {group!r}; expected one of {ITEM_GROUPS}")
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim != 2 or not len(x) or not np.isfinite(x).all():
            raise ValueError(f"{group}: item vectors must be a finite, non-empty [n_items, dim] matrix")
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
        return cls(group, x, pca_coordinates(x, COMPONENTS))

    def columns(self, history: np.ndarray, rows: np.ndarray) -> list[np.ndarray]:
        """This group's feature columns (float32) for candidate ``rows`` of one user's ``history``."""
        cand = self.vectors[rows]
        hist = np.asarray(history, dtype=np.int64)
        if len(hist):
            last1 = cand @ self.vectors[hist[-1]]
            recent = self.vectors[hist[-RECENT:]].mean(axis=0)
            last3 = cand @ recent / max(float(np.linalg.norm(recent)), 1e-6)
        else:
            last1 = last3 = np.full(len(rows), np.nan, dtype=np.float32)
        pcs = self.components[rows]
        return [np.asarray(last1, np.float32), np.asarray(last3, np.float32), *(pcs[:, i] for i in range(pcs.shape[1]))]


def pca_coordinates(x: np.ndarray, k: int) -> np.ndarray:
    """[n, k] float32 coordinates of the rows of ``x`` on its first ``k`` principal components (sign fixed so
    each component's largest-magnitude loading is positive: the same vectors give the same features)."""
    centred = x - x.mean(axis=0, keepdims=True)
    k = min(k, *centred.shape)
    # the [d, d] covariance (d = 384 / 576) is cheaper than an SVD of [n, d] for large catalogs
    cov = (centred.T @ centred).astype(np.float64)
    values, vectors = np.linalg.eigh(cov)
    basis = vectors[:, np.argsort(-values)[:k]]
    basis *= np.sign(basis[np.abs(basis).argmax(axis=0), np.arange(basis.shape[1])])
    out = np.zeros((len(x), COMPONENTS), dtype=np.float32)
    out[:, :k] = (centred @ basis).astype(np.float32)
    return out


@dataclass(frozen=True)
class ItemFeatures:
    """The representation groups a feature layout carries, in :data:`ITEM_GROUPS` order."""

    tables: tuple[ItemTable, ...] = ()

    def __post_init__(self):
        order = [t.group for t in self.tables]
        if order != [g for g in ITEM_GROUPS if g in order]:
            raise ValueError(f"item-representation groups must be distinct and in the order {ITEM_GROUPS}: {order}")

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(t.group for t in self.tables)

    @property
    def names(self) -> list[str]:
        return [n for t in self.tables for n in group_names(t.group)]

    def subset(self, groups) -> "ItemFeatures":
        return ItemFeatures(tuple(t for t in self.tables if t.group in set(groups)))

    def columns(self, history: np.ndarray, rows: np.ndarray) -> list[np.ndarray]:
        return [c for t in self.tables for c in t.columns(history, rows)]


def item_features(catalog: Catalog, text_vectors: np.ndarray, groups, lm: LMSettings | None = None,
                  log=None) -> ItemFeatures:
    """The tables of ``groups`` for ``catalog``: ``textrep`` from the retriever's vectors, ``lmrep`` from the LM's
    pooled hidden states (per-item cache: only items not seen before run through the LM)."""
    tables = []
    for group in (g for g in ITEM_GROUPS if g in set(groups)):
        vectors = text_vectors if group == "textrep" else lm_item_vectors(catalog, lm, log)
        tables.append(ItemTable.of(group, vectors))
    return ItemFeatures(tuple(tables))

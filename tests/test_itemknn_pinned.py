"""ItemKNN is built on the retrieval layer's transition code; committed results depend on its scores, so they
are pinned here against the formula as it was first committed (a frozen copy, not the shared code)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recgen.evaluation.protocol import EvalData
from recgen.evaluation.synthetic import chain_dataset
from recgen.evaluation.systems import make_system


def reference_scores(train: list[np.ndarray], n: int, histories: list[np.ndarray], window=3, last=3, decay=0.5,
                     backward=0.25, alpha=0.5) -> np.ndarray:
    rows, cols, vals = [], [], []
    for seq in train:
        for d in range(1, window + 1):
            if len(seq) <= d:
                break
            a, b = seq[:-d], seq[d:]
            rows.append(a)
            cols.append(b)
            vals.append(np.full(len(a), 1.0 / d))
            if backward > 0:
                rows.append(b)
                cols.append(a)
                vals.append(np.full(len(a), backward / d))
    counts = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    counts.sum_duplicates()
    out_w = np.asarray(counts.sum(axis=1)).ravel()
    in_w = np.asarray(counts.sum(axis=0)).ravel()
    sim = (sp.diags(np.where(out_w > 0, out_w, 1.0) ** -alpha) @ counts
           @ sp.diags(np.where(in_w > 0, in_w, 1.0) ** -(1.0 - alpha))).tocsr()
    pop = np.bincount(np.concatenate(train), minlength=n).astype(np.float64)
    scale = min(1e-6, 1e-3 * sim.data.min() * decay ** (last - 1))
    tiebreak = scale * pop / (pop.max() + 1.0)
    r, c, v = [], [], []
    for i, hist in enumerate(histories):
        recent = hist[-last:][::-1]
        r.append(np.full(len(recent), i))
        c.append(recent)
        v.append(decay ** np.arange(len(recent)))
    weights = sp.csr_matrix((np.concatenate(v), (np.concatenate(r), np.concatenate(c))), shape=(len(histories), n))
    return (weights @ sim).toarray() + tiebreak


def test_itemknn_scores_are_exactly_the_committed_formula():
    data = EvalData.from_dataset(chain_dataset(n_items=40, n_users=120, length=8, seed=4))
    histories = [data.history("test", p) for p in range(50)]
    for params in ({}, {"window": 5, "last": 2, "alpha": 0.75, "backward": 0.0}, {"decay": 0.8, "backward": 1.0}):
        system = make_system("itemknn", params)
        system.fit(data)
        expected = reference_scores(data.train_sequences(), data.n_items, histories, **params)
        np.testing.assert_array_equal(system.score(histories), expected)

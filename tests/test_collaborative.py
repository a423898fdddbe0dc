"""Item transitions on hand-made sequences, and hybrid retrieval that uses them."""

import numpy as np
from builders import make_catalog

from recgen.config import RetrievalSettings
from recgen.retrieval import Retriever
from recgen.retrieval.collaborative import ItemTransitions, TransitionParams


def test_transitions_follow_the_sequences():
    catalog = make_catalog(10)
    seqs = [["0", "1", "2"], ["0", "1", "3"], ["5", "1", "2"]]
    t = ItemTransitions.fit(catalog, seqs, TransitionParams(window=1, last=1, backward=0.0, alpha=1.0))
    scores = t.scores(np.array([catalog.index_of("1")]))
    # after 1 came 2 twice and 3 once: transition probabilities 2/3 and 1/3, scaled to max 1
    assert np.isclose(scores[catalog.index_of("2")], 1.0)
    assert np.isclose(scores[catalog.index_of("3")], 0.5)
    assert scores[catalog.index_of("0")] == 0.0


def test_save_load_roundtrip(tmp_path):
    catalog = make_catalog(10)
    t = ItemTransitions.fit(catalog, [["0", "1", "2", "3"]])
    t.save(tmp_path / "t.npz")
    u = ItemTransitions.load(tmp_path / "t.npz")
    assert u.params == t.params and (u.matrix != t.matrix).nnz == 0


def test_hybrid_retrieval_puts_the_observed_next_item_first():
    catalog = make_catalog(30)
    seqs = [["3", "17"], ["3", "17"], ["8", "3", "17"]]
    retriever = Retriever.build(catalog, RetrievalSettings(collaborative_weight=5.0),
                                transitions=ItemTransitions.fit(catalog, seqs))
    top = retriever.retrieve(["3"], n=5)
    assert top[0][0] == "17"
    assert "3" not in [i for i, _ in top]
    text_only = [i for i, _ in retriever.rebound(RetrievalSettings(collaborative_weight=0.0)).retrieve(["3"], n=5)]
    assert len(text_only) == 5 and "3" not in text_only

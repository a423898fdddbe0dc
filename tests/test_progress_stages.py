"""Long stages report progress to the active display (``recgen.progress.reporting``): the fusion fit's feature
building and every LightGBM trial (iterations, through a callback), the request stage, the evaluation users;
with no display active they report nothing and still run."""

from __future__ import annotations

from builders import make_dataset

from recgen.data import load_dataset
from recgen.evaluation.protocol import EvalData, sample_users
from recgen.evaluation.requests import evaluate_requests
from recgen.evaluation.synthetic import chain_dataset, write_generic
from recgen.fit.fusion import FusionFitter
from recgen.progress import reporting, task


class Recorder:
    """The part of rich's Progress API that recgen.progress.task uses, recording what it is told."""

    def __init__(self):
        self.tasks: list[dict] = []

    def add_task(self, description, total=None, **_):
        self.tasks.append({"description": description, "total": total, "done": 0})
        return len(self.tasks) - 1

    def advance(self, task_id, advance=1):
        self.tasks[task_id]["done"] += advance

    def update(self, task_id, completed=None, total=None, **_):
        self.tasks[task_id].update({k: v for k, v in (("done", completed), ("total", total)) if v is not None})

    def named(self, prefix: str) -> list[dict]:
        return [t for t in self.tasks if t["description"].startswith(prefix)]


def test_the_fusion_fit_reports_features_and_each_lightgbm_trial(tmp_path, monkeypatch):
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    data = EvalData.from_dataset(load_dataset(write_generic(chain_dataset(n_items=40, n_users=150, length=8, seed=4),
                                                            tmp_path / "chain")))
    recorder = Recorder()
    fitter = FusionFitter(threads=1, depths=[10, 20], leaves=[7], prefixes=(), requests=True, request_users=60)
    with reporting(recorder):
        fitted = fitter.fit(data)
    features = recorder.named("fusion features (validation targets, ")  # held-out users, then training users
    assert len(features) == 2 and all(f["done"] == f["total"] for f in features)
    assert sum(f["total"] for f in features) == data.n_users  # a small set: every user in the curve's one step
    trials = recorder.named("LightGBM trial")
    # two depths, then the default item-representation group (textrep) at the chosen settings
    assert len(trials) == len(fitted.info["selection"]) == 2 + len(fitted.info["item_features"]["tried"]) == 3
    for trial, chosen in zip(trials, fitted.info["selection"]):
        assert trial["total"] == fitter.max_rounds and trial["done"] >= chosen["best_iteration"] >= 1
    requests = recorder.named("request stage features")
    assert requests and requests[0]["done"] == requests[0]["total"] > 0
    assert recorder.named("LightGBM request-stage trial")


def test_evaluation_users_are_reported():
    data = EvalData.from_dataset(make_dataset())
    recorder = Recorder()
    positions = sample_users(data.n_users, 6, 0)
    with reporting(recorder):
        evaluate_requests(lambda history, query, k: list(data.dataset.catalog.ids[:k]), data, positions)
    (users,) = recorder.named("requests")
    assert users["done"] == users["total"] == len(positions)


def test_without_a_display_nothing_is_reported_and_nothing_breaks():
    recorder = Recorder()
    with reporting(recorder):
        with reporting(None):
            with task("inner", total=3) as advance:
                advance(3)
    assert recorder.tasks == []


def test_log_lines_say_where_each_task_ended(capsys):
    """Without a terminal a task that ends short of its total (an early-stopped LightGBM trial) is logged when
    it ends, not only when the whole command stops."""
    from rich.console import Console

    from recgen.progress import LogProgress

    display = LogProgress(Console(stderr=True, force_terminal=False, width=200))
    with reporting(display):
        with task("LightGBM trial", total=500) as advance:
            for _ in range(12):
                advance()
        assert "LightGBM trial: 12/500" in capsys.readouterr().err

"""The LM stage is served when it earns it: with a stand-in LM that carries real signal (``lm_standin``: it knows
which new titles are good, which the interactions barely show), ``recgen fit --lm-stage`` finds that the stage
beats the fused order with confidence on held-out users, saves it with the ranker, and ``recommend`` (Python and
CLI), ``recgen batch`` and ``recgen serve`` score with it — the very scores evaluation computes. A folder whose LM
is missing or has other weights is refused naming the LM; an LM without signal (the tiny random one) is kept out
and changes nothing, and the fit info says why."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from builders import write_generic_dataset
from lm_standin import gem_world, save_gem_lm
from typer.testing import CliRunner

from recgen import RecgenConfig, Recommender
from recgen.cli.main import app
from recgen.data import load_dataset
from recgen.errors import ModelLoadError
from recgen.evaluation.protocol import EvalData
from recgen.evaluation.systems.fusion import FusionSystem
from recgen.fit.serving import fit_for_serving
from recgen.pipeline import FittedState, fitted_folder
from recgen.ranking.fusion.lm_stage import LMFusionStage

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("recgen_cache_env")]

LM_USERS = 200  # more than the held-out users: the stage is fitted and guarded on all of them


@pytest.fixture(scope="module")
def world(tmp_path_factory, smollm_tokenizer_dir):
    """(dataset folder, the stand-in LM's folder, a config file naming it)."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("gems")
    # 960 users in 80 topics, three duds a gem, 90 % gem targets: the LM's knowledge is decisive (held-out gain
    # +0.147, one-sided lower bound +0.104 on an AVX2 machine), so float differences between CPUs cannot flip the
    # guard; the first world (480 users, a dud a gem, 70 %) passed on one machine and failed on another (+0.039,
    # bound -0.025), its gain within the noise of 96 held-out users
    dataset, gem_words = gem_world(AutoTokenizer.from_pretrained(smollm_tokenizer_dir), n_users=960, topics=80,
                                   duds=12, p_gem=0.9)
    data_dir = write_generic_dataset(dataset, root / "gems")
    lm = save_gem_lm(smollm_tokenizer_dir, root / "gem-lm", gem_words)
    config = root / "config.json"
    config.write_text(json.dumps({"lm": {"model": lm}}), encoding="utf-8")
    return data_dir, lm, config


@pytest.fixture(scope="module")
def fitted(world, recgen_cache):
    """``recgen fit --lm-stage zeroshot`` as a user runs it: (its JSON summary, the folder it wrote)."""
    data_dir, _, config = world
    mp = pytest.MonkeyPatch()
    mp.setenv("RECGEN_CACHE_DIR", str(recgen_cache))
    try:
        result = CliRunner().invoke(app, ["fit", "-d", str(data_dir), "--lm-stage", "zeroshot", "--lm-users",
                                          str(LM_USERS), "--threads", "1", "--config", str(config), "--json"])
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        return summary, fitted_folder(load_dataset(str(data_dir)), RecgenConfig().retrieval)
    finally:
        mp.undo()


def _histories(data_dir, n=12):
    dataset = load_dataset(str(data_dir))
    return [dataset.sequences[u] for u in sorted(dataset.sequences)[:n]]


def _pairs(recs):
    return [(r.item_id, round(r.score, 6)) for r in recs]


def test_the_guard_passes_and_fit_saves_the_stage_with_the_lm_it_needs(fitted, world):
    summary, folder = fitted
    _, lm, _ = world
    stage = summary["lm_stage"]
    assert stage["served"] and stage["design"] in ("stacked", "refit") and stage["guard"]["passed"]
    assert stage["guard"]["lower_bound_95_one_sided"] > 0 and stage["guard"]["users"] >= 80
    assert stage["cv_ndcg@10"][stage["design"]] > stage["cv_ndcg@10"]["fused"]
    saved = json.loads((folder / "fusion" / "lm-stage.json").read_text())
    assert saved["design"] == stage["design"] and saved["lm"]["model"] == lm and saved["lm"]["model_digest"]
    assert (folder / "fusion" / "lm-stage.txt").is_file()
    assert json.loads((folder / "fusion" / "fusion.json").read_text())["fit"]["lm_stage"]["guard"]["passed"]


def test_served_scores_are_the_evaluated_scores(fitted, world, tmp_path):
    """The evaluation system's fitted parts and LM stage, saved and loaded as a folder, recommend with exactly the
    scores ``FusionSystem.score`` gives (the stored fit and the LM's memo are reused: nothing is refitted).

    One history per call on both sides: an LM scoring prompts in a padded batch gives log-probs that differ from
    the unbatched ones by ~1e-6 (float kernels), which can move a candidate across a split of the stage's trees."""
    data_dir, lm, _ = world
    config = RecgenConfig(lm={"model": lm})
    data = EvalData.from_dataset(load_dataset(str(data_dir)))
    system = FusionSystem(config, lm="zeroshot", lm_users=LM_USERS, threads=1, requests=True)
    system.fit(data)
    assert system.fit_info["stored_fit"]["reused"]
    assert system.fit_info["lm_stage"]["guard"] == fitted[0]["lm_stage"]["guard"]  # what recgen fit decided
    state = FittedState(data.train_dataset().popularity(), system.sources.retriever.transitions).with_second_stage(
        system.sources.stats, system.ranker, system.depth, lm_stage=system.lm.served())
    Recommender(data.dataset.catalog, config, retriever=system.sources.retriever, state=state).save(tmp_path / "r")
    served = Recommender.load(tmp_path / "r")
    assert isinstance(served.fusion, LMFusionStage)
    ids, moved = data.dataset.catalog.ids, 0
    positions = range(0, data.n_users, 20)
    histories = [data.history("test", p) for p in positions]
    for hist in histories:
        row, plain = system.score([hist])[0], system.base_score([hist])[0]
        row[hist] = plain[hist] = -np.inf
        recs = served.recommend(history=[ids[i] for i in hist], k=10, reasons=False)
        rows = [data.dataset.catalog.index_of(r.item_id) for r in recs]
        np.testing.assert_allclose([r.score for r in recs], row[rows], rtol=1e-9)
        np.testing.assert_allclose([r.score for r in recs], np.sort(row)[::-1][:10], rtol=1e-9)
        moved += list(np.argsort(-row, kind="stable")[:10]) != list(np.argsort(-plain, kind="stable")[:10])
    assert moved, "the LM stage never changed a top 10: the test would not see it ignored"


def test_recommend_batch_and_serve_use_the_stage(fitted, world, recgen_cache, tmp_path):
    data_dir, lm, _ = world
    _, folder = fitted
    api = Recommender.load(folder)  # the stage's LM comes from the folder (the config names another)
    assert isinstance(api.fusion, LMFusionStage) and "LM stage" in api.pipeline.describe_second_stage()
    history = _histories(data_dir)[3]
    want = api.recommend(history=history, k=8, reasons=False)
    assert [r.ranker for r in want] == ["fusion"] * 8

    runner = CliRunner()
    result = runner.invoke(app, ["recommend", "-d", str(data_dir), "--history", ",".join(history), "-k", "8",
                                 "--no-reasons", "--json"])
    assert result.exit_code == 0, result.output
    got = [(r["item_id"], round(r["score"], 6)) for r in json.loads(result.stdout)["recommendations"]]
    assert got == _pairs(want)

    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"custom_id": "a", "history": history, "k": 8, "reasons": False}) + "\n")
    result = runner.invoke(app, ["batch", "-i", str(src), "-o", str(tmp_path / "out.jsonl"), "-d", str(data_dir),
                                 "--threads", "1", "--json"])
    assert result.exit_code == 0, result.output
    line = json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])
    body = line["response"]["body"]
    assert [(r["item_id"], round(r["score"], 6)) for r in body["recommendations"]] == _pairs(want)

    port = _free_port()
    env = {**os.environ, "RECGEN_CACHE_DIR": str(recgen_cache), "TOKENIZERS_PARALLELISM": "false"}
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "recgen.cli.main", "serve", "--dataset", str(data_dir),
                                 "--lm", lm, "--port", str(port), "--log-level", "warning"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        url = _wait_for(proc, f"http://127.0.0.1:{port}", log_path)
        response = httpx.post(url + "/v1/recommendations", json={"history": history, "k": 8, "reasons": False},
                              timeout=60)
        assert response.status_code == 200, response.text
        assert [(r["item_id"], round(r["score"], 6)) for r in response.json()["recommendations"]] == _pairs(want)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert "LM stage" in log_path.read_text()  # the startup summary says what orders the lists


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(proc, url, log_path, seconds=300):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"recgen serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return url
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    pytest.fail(f"recgen serve did not start in time:\n{log_path.read_text()[-3000:]}")


def _copy_with_lm(folder, cache2, lm_model):
    """The fitted folder under another cache dir, its LM stage pointing at ``lm_model``."""
    copy = cache2 / "fitted" / folder.name
    shutil.copytree(folder, copy)
    path = copy / "fusion" / "lm-stage.json"
    meta = json.loads(path.read_text())
    meta["lm"]["model"] = str(lm_model)
    path.write_text(json.dumps(meta))
    return copy


def test_a_folder_whose_lm_is_not_here_is_refused_naming_it(fitted, world, tmp_path, monkeypatch):
    data_dir, lm, _ = world
    _, folder = fitted
    gone = tmp_path / "moved-away-lm"
    copy = _copy_with_lm(folder, tmp_path / "cache2", gone)
    with pytest.raises(ModelLoadError) as err:
        Recommender.load(copy)
    assert str(gone) in str(err.value) and "not available" in str(err.value) and "LM stage" in str(err.value)
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache2"))
    runner = CliRunner()
    for command in (["recommend", "--history", "x", "--no-reasons"], ["serve", "--lm", lm, "--port", "1"]):
        result = runner.invoke(app, [command[0], "-d", str(data_dir), *command[1:]])
        assert result.exit_code == 2, result.output
        assert str(gone) in "".join(result.output.split())  # the message names the LM (rich may wrap it)

    other = tmp_path / "other-weights"  # the same name and files, other weights: its scores are not the stage's
    shutil.copytree(lm, other)
    from safetensors.torch import load_file, save_file

    weights = load_file(other / "model.safetensors")
    weights["lm_head.weight"][:, 40] += 1.0
    save_file(weights, other / "model.safetensors", metadata={"format": "pt"})
    copy = _copy_with_lm(folder, tmp_path / "cache3", other)
    with pytest.raises(ModelLoadError) as err:
        Recommender.load(copy)
    assert str(other) in str(err.value) and "differs" in str(err.value)


def test_an_lm_without_signal_is_kept_out_and_changes_nothing(world, tiny_lm_dir, tmp_path):
    data_dir, _, _ = world
    dataset = load_dataset(str(data_dir))
    with_lm = fit_for_serving(dataset, RecgenConfig(lm={"model": tiny_lm_dir}), threads=1, lm_stage="zeroshot",
                              lm_users=LM_USERS)
    info = with_lm.pipeline.state.fit_info["lm_stage"]
    assert not info["served"] and info["design"] == "none" and not info["guard"]["passed"]
    assert {"mean_diff", "lower_bound_95_one_sided", "users"} <= set(info["guard"]) and "cv_ndcg@10" in info
    assert with_lm.pipeline.state.lm_stage is None
    with_lm.save(tmp_path / "f")
    assert not (tmp_path / "f" / "fusion" / "lm-stage.json").exists()
    plain = fit_for_serving(dataset, RecgenConfig(), threads=1)
    for history in _histories(data_dir, 5):
        assert _pairs(Recommender.load(tmp_path / "f").recommend(history=history, k=8, reasons=False)) == \
            _pairs(plain.recommend(history=history, k=8, reasons=False))

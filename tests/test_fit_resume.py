"""A fit killed midway resumes (issue 24): the catalog embedding keeps its finished chunks and the fusion selection
its finished LightGBM trials; a restart reuses them and ends where an uninterrupted fit ends.

The unit tests check the two checkpoint stores directly (a counting encoder; a real LightGBM ranker). The slow test
SIGKILLs real ``recgen fit`` processes on a small generated dataset with the real MiniLM embedder: once during the
embedding (after the first chunk file appears), once during the selection (after the first trial checkpoint).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from recgen.atomic import MARKER, claim_files
from recgen.fit.checkpoints import CheckpointedTrainer, FeatureCheckpoints
from recgen.fit.ranker_training import LocalRankerTrainer
from recgen.retrieval.embed_chunks import embed_in_chunks, remove_chunks, work_folder

IDENTITY = {"embedder": "counting", "model_fingerprint": "x", "backend": "torch", "batch_size": 64}


class Counting:
    """An encoder that counts the titles it is asked for (vectors: a hash of each title, normalised)."""

    def __init__(self):
        self.calls: list[int] = []

    def __call__(self, texts):
        self.calls.append(len(texts))
        rows = np.array([[hash(t) % 997, len(t), 1.0] for t in texts], dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_embedding_chunks_are_reused_and_a_mismatch_is_embedded_again(tmp_path):
    texts = [f"title {n}" for n in range(25)]
    work = work_folder(tmp_path / "index")
    first = Counting()
    vectors, report = embed_in_chunks(texts, first, IDENTITY, 10, work)
    assert first.calls == [10, 10, 5] and report.as_json()["embedded"] == 3
    assert sorted(p.name for p in work.glob("chunk-*.npy")) == ["chunk-000000.npy", "chunk-000001.npy",
                                                                 "chunk-000002.npy"]
    # a restart of the same build: nothing embedded, the same vectors
    again = Counting()
    reused, report = embed_in_chunks(texts, again, IDENTITY, 10, work)
    assert again.calls == [] and report.reused == 3
    assert np.array_equal(reused, vectors)
    # other titles in chunk 1, a damaged file for chunk 2, another backend: only what no longer matches is embedded
    changed = texts[:12] + ["another title"] + texts[13:]
    (work / "chunk-000002.npy").write_bytes((work / "chunk-000002.npy").read_bytes()[:-8] + b"\0" * 8)
    mixed = Counting()
    out, report = embed_in_chunks(changed, mixed, IDENTITY, 10, work)
    assert mixed.calls == [10, 5] and (report.reused, report.embedded) == (1, 2)
    assert np.array_equal(out, Counting()(changed))
    other = Counting()
    embed_in_chunks(changed, other, {**IDENTITY, "backend": "onnx-int8"}, 10, work)
    assert other.calls == [10, 10, 5]


def test_spent_chunks_are_removed_but_never_a_file_recgen_did_not_write(tmp_path):
    work = work_folder(tmp_path / "index")
    embed_in_chunks([f"t{n}" for n in range(6)], Counting(), IDENTITY, 2, work)
    (work / "notes.txt").write_text("mine")
    remove_chunks(work)
    assert sorted(p.name for p in work.iterdir()) == [MARKER, "notes.txt"]
    (work / "notes.txt").unlink()
    claim_files(work, ["x"])  # a marker with entries but no files: the folder goes
    remove_chunks(work)
    assert not work.exists()


def _groups(rng, n_groups, n_features=6, size=20):
    groups = []
    for _ in range(n_groups):
        X = rng.normal(size=(size, n_features)).astype(np.float32)
        y = np.zeros(size, dtype=np.float32)
        y[int(np.argmax(X[:, 0] + 0.5 * rng.normal(size=size)))] = 1
        groups.append((X, y))
    return groups


def test_a_finished_lightgbm_trial_is_reused_with_the_same_predictions(tmp_path):
    rng = np.random.default_rng(0)
    train, valid = _groups(rng, 300), _groups(rng, 80)
    names = [f"f{i}" for i in range(6)]
    settings = dict(num_leaves=7, max_rounds=60, threads=1, seed=0)
    first = CheckpointedTrainer(LocalRankerTrainer(), tmp_path / "trials")
    fresh = first.train(train, valid, names, **settings)
    again = CheckpointedTrainer(LocalRankerTrainer(), tmp_path / "trials")
    reused = again.train(train, valid, names, **settings)
    assert (first.report(), again.report()) == ({"trials_reused": 0, "trials_trained": 1},
                                                {"trials_reused": 1, "trials_trained": 0})
    X = np.concatenate([X for X, _ in valid])
    assert np.array_equal(fresh.predict(X), reused.predict(X))
    assert reused.info["best_iteration"] == fresh.info["best_iteration"]
    # other leaves, or other rows (one label moved): trained, not reused
    again.train(train, valid, names, **{**settings, "num_leaves": 15})
    moved = [(X, np.roll(y, 1)) if n == 0 else (X, y) for n, (X, y) in enumerate(train)]
    again.train(moved, valid, names, **settings)
    assert again.report() == {"trials_reused": 1, "trials_trained": 2}


def test_feature_batches_come_back_as_built_and_a_damaged_one_is_built_again(tmp_path):
    from recgen.ranking.fusion.features import Group

    rng = np.random.default_rng(1)
    made = [Group(rng.permutation(50)[:n], rng.normal(size=(n, 4)).astype(np.float32), np.arange(1, n + 1))
            for n in (7, 0, 12)]
    calls = []
    build = lambda: calls.append(1) or made
    saved = FeatureCheckpoints(tmp_path / "ck")
    key = FeatureCheckpoints.key("validation targets", 100, ["a", "b", "c", "d"], [3, 5, 9])
    assert saved.groups(key, build) is made
    again = FeatureCheckpoints(tmp_path / "ck")
    back = again.groups(key, build)
    assert calls == [1] and again.report() == {"feature_batches_reused": 1, "feature_batches_built": 0}
    for a, b in zip(made, back):
        assert all(np.array_equal(x, y) and x.dtype == y.dtype for x, y in
                   ((a.rows, b.rows), (a.X, b.X), (a.pool_rank, b.pool_rank)))
    assert FeatureCheckpoints.key("validation targets", 50, ["a", "b", "c", "d"], [3, 5, 9]) != key
    [npz] = (tmp_path / "ck").glob("features-*.npz")
    npz.write_bytes(npz.read_bytes()[:-10])
    assert FeatureCheckpoints(tmp_path / "ck").groups(key, build) is made and calls == [1, 1]
    # the request stage's batches keep each request's target position beside the groups
    tagged = FeatureCheckpoints(tmp_path / "ck")
    positions = np.array([3, 0, 17], dtype=np.int64)
    other = FeatureCheckpoints.key("request stage", 100, ["a", "b", "c", "d"], [3, 5, 9])
    assert tagged.tagged_groups(other, lambda: (made, positions))[1] is positions
    groups, back = FeatureCheckpoints(tmp_path / "ck").tagged_groups(other, lambda: pytest.fail("built again"))
    assert np.array_equal(back, positions) and back.dtype == np.int64 and len(groups) == 3


# -- real `recgen fit` processes, killed -----------------------------------------------------------------------
CHUNK = 40


def _fit(data: Path, config: Path, env: dict, log: Path) -> subprocess.Popen:
    with open(log, "wb") as err:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "recgen.cli.main", "fit", "-d", str(data), "--threads", "1",
                                 "--config", str(config), "--json"], env=env, stdout=subprocess.PIPE, stderr=err)


def _kill_when(proc: subprocess.Popen, ready, log: Path, what: str) -> None:
    deadline = time.monotonic() + 600
    while not ready():
        assert proc.poll() is None, f"the fit ended before {what}: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"no {what} after 600 s"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def _finish(proc: subprocess.Popen, log: Path) -> dict:
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, log.read_text()[-3000:]
    return json.loads(out)


@pytest.mark.slow
def test_a_fit_killed_in_the_embedding_and_in_the_selection_resumes(tmp_path):
    from recgen.data import load_dataset
    from recgen.data.synth import SynthSpec, generate
    from recgen.retrieval.embedder import embed, load_embedder

    data = tmp_path / "synth"
    generate(SynthSpec.sized(items=5 * CHUNK, interactions=4000, users=400, seed=3), data)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"fit": {"embed_checkpoint": CHUNK}}))
    cache = tmp_path / "cache"
    env = {**os.environ, "RECGEN_CACHE_DIR": str(cache), "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    chunks = lambda: list(cache.glob("indexes/*.embedding/chunk-*.json"))

    # 1. killed once a chunk is on disk; the restart embeds only the missing chunks and the fit ends normally
    _kill_when(_fit(data, config, env, tmp_path / "run1.log"), lambda: chunks(), tmp_path / "run1.log",
               "embedding chunk")
    kept = len(chunks())
    assert 1 <= kept < 5, f"{kept} chunks written before the kill: the kill did not land mid-embedding"
    resumed = _finish(_fit(data, config, env, tmp_path / "run2.log"), tmp_path / "run2.log")
    assert resumed["index_embedding"] == {"chunks": 5, "chunk_titles": CHUNK, "reused": kept, "embedded": 5 - kept}
    assert not chunks() and not list(cache.glob("indexes/*.embedding"))  # spent chunks removed with the index
    # the index holds what an uninterrupted embedding (same model, same chunks) gives
    import faiss

    [index_dir] = [p for p in cache.glob("indexes/*") if p.is_dir()]
    index = faiss.read_index(str(index_dir / "items.faiss"))
    saved = index.reconstruct_n(0, index.ntotal)
    texts = [item.text() for item in load_dataset(data).catalog]
    model = load_embedder(None, "torch")
    reference = np.concatenate([embed(model, texts[i:i + CHUNK]) for i in range(0, len(texts), CHUNK)])
    assert np.array_equal(saved, reference)  # bit-equal here (same machine, same torch threads in both processes)

    # 2. the same selection again (the stored fit and the fitted folder removed; the index stays), killed once
    # a LightGBM trial is checkpointed; the restart reuses it and chooses what the uninterrupted run 2 chose
    shutil.rmtree(cache / "fusion-eval")
    shutil.rmtree(cache / "fitted")
    trials = lambda: list(cache.glob("fusion-checkpoints/*/trial-*.json"))
    _kill_when(_fit(data, config, env, tmp_path / "run3.log"), lambda: trials(), tmp_path / "run3.log",
               "trial checkpoint")
    assert trials()
    final = _finish(_fit(data, config, env, tmp_path / "run4.log"), tmp_path / "run4.log")
    assert final["index_embedding"] is None  # the saved index was loaded
    assert resumed["checkpoints"]["selection"]["trials_reused"] == 0  # run 2 selected uninterrupted
    assert final["checkpoints"]["selection"]["trials_reused"] >= 1
    assert final["checkpoints"]["selection"]["feature_batches_reused"] >= 1
    assert final["chosen"] == resumed["chosen"]
    assert not trials()  # spent once the fit is stored

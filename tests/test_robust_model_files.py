"""Hand-edited, truncated and damaged model files (issue 22): every file recgen hands to a native library — the
LightGBM ranker text, the FAISS index, the npz matrices, the SASRec safetensors checkpoint — is a RecgenError
naming the file, never a native abort, a segfault, a hang or a traceback.

Each input is loaded (and, when it loads, used once: predict, search, a row product) in a child process, so an
abort is a failed case here instead of the end of pytest. ``test_outcomes_are_counted`` prints the counts the
robustness report quotes (inputs, native aborts, tracebacks).
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recgen.ranking.fusion import FusionRanker, SourceStats

NAMES = ["a_value", "b_value", "c_value"]

#: Hand edits of a LightGBM text model as LightGBM saved it (with ``tree_sizes``): each aborted the process.
LGB_EDITS = {
    "leaf_digit_removed": lambda t: re.sub(r"^(leaf_value=-?\d\.\d+)\d", r"\1", t, count=1, flags=re.M),
    "leaf_nan": lambda t: re.sub(r"^(leaf_value=)\S+", r"\1nan", t, count=1, flags=re.M),
    "leaf_inf": lambda t: re.sub(r"^(leaf_value=)\S+", r"\1inf", t, count=1, flags=re.M),
    "split_feature_999": lambda t: re.sub(r"^(split_feature=)\d+", r"\g<1>999", t, count=1, flags=re.M),
    "split_feature_-5": lambda t: re.sub(r"^(split_feature=)\d+", r"\g<1>-5", t, count=1, flags=re.M),
    "num_leaves": lambda t: re.sub(r"^(num_leaves=)\d+", r"\g<1>40", t, count=1, flags=re.M),
    "left_child": lambda t: re.sub(r"^(left_child=)\S+", r"\g<1>77", t, count=1, flags=re.M),
    "tree_sizes": lambda t: re.sub(r"^(tree_sizes=)\d+", r"\g<1>9999", t, count=1, flags=re.M),
}
#: The same kind of edits made carefully (``tree_sizes`` dropped, so sizes cannot give them away), plus a loop
#: between nodes: LightGBM loaded these and then read out of bounds or walked forever at predict time.
STRUCTURAL = ("leaf_nan", "leaf_inf", "split_feature_999", "split_feature_-5", "num_leaves", "left_child")

_CHILD = r'''
import json, sys
import numpy as np
from recgen.errors import RecgenError

def run(case):
    kind, path = case["kind"], case["path"]
    if kind == "ranker":
        from recgen.ranking.fusion import FusionRanker
        ranker = FusionRanker.load(path, case["names"])
        ranker.predict(np.random.default_rng(0).normal(size=(16, len(case["names"]))))
    elif kind == "index":
        from recgen.retrieval.index import load_index
        index, meta = load_index(path, case["fingerprint"], case["embedder"])
        index.search(np.ones((1, index.d), dtype=np.float32), 5)
    elif kind == "sources":
        from recgen.ranking.fusion import SourceStats
        stats = SourceStats.load(path, case["n"])
        stats.neighbours[[0, case["n"] - 1]] @ np.ones(case["n"], dtype=np.float32)
    elif kind == "sasrec":
        from recgen.models.sasrec import load_checkpoint
        load_checkpoint(path)

for line in sys.stdin:
    case = json.loads(line)
    print("@@" + json.dumps({"start": case["name"]}), flush=True)
    try:
        run(case)
        outcome, message = "loaded", ""
    except RecgenError as exc:
        outcome, message = "RecgenError", str(exc)
    except BaseException as exc:
        outcome, message = "traceback", f"{type(exc).__name__}: {exc}"[:300]
    print("@@" + json.dumps({"name": case["name"], "outcome": outcome, "message": message}), flush=True)
'''


def outcomes(cases: list[dict]) -> dict[str, dict]:
    """Run ``cases`` in child processes (one, restarted after a case kills it); name → outcome and message.
    A case whose child died is ``died`` with the signal or exit code; one that ran 60 s is ``hung``."""
    results: dict[str, dict] = {}
    todo = list(cases)
    while todo:
        proc = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, errors="replace", env={**_env(), "OMP_NUM_THREADS": "1"})
        try:
            out, err = proc.communicate("".join(json.dumps(c) + "\n" for c in todo), timeout=60 + 5 * len(todo))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            hung = True
        else:
            hung = False
        started = None
        for line in out.splitlines():  # LightGBM writes its warnings to stdout too: only "@@" lines are ours
            if not line.startswith("@@"):
                continue
            row = json.loads(line[2:])
            if "start" in row:
                started = row["start"]
            else:
                results[row["name"]] = row
                started = None
        if started is not None:
            why = "hung" if hung else "died"
            results[started] = {"name": started, "outcome": why, "message": f"exit {proc.returncode}: {err[-300:]}"}
        elif not results.keys() >= {c["name"] for c in todo}:
            raise AssertionError(f"the child failed before any case: {err[-2000:]}")
        todo = [c for c in todo if c["name"] not in results]
    return results


def _env() -> dict:
    import os

    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


# -- inputs ------------------------------------------------------------------------------------------------------

def _ranker_text(tmp: Path) -> str:
    rng = np.random.default_rng(0)
    groups = []
    for _ in range(60):
        X = rng.normal(size=(8, len(NAMES))).astype(np.float32)
        y = np.zeros(8, dtype=np.float32)
        y[int(np.argmax(X[:, 0] + X[:, 1]))] = 1
        groups.append((X, y))
    ranker = FusionRanker.train(groups[:45], groups[45:], NAMES, num_leaves=4, max_rounds=20, threads=1)
    return ranker.save(tmp / "whole.txt").read_text()


def _ranker_cases(tmp: Path) -> list[dict]:
    text = _ranker_text(tmp)
    assert "\ntree_sizes=" in text
    cases = {}
    for name, edit in LGB_EDITS.items():
        cases[f"lgb/{name}"] = edit(text)
    no_sizes = re.sub(r"^tree_sizes=.*\n", "", text, flags=re.M)
    for name in STRUCTURAL:
        cases[f"lgb-careful/{name}"] = LGB_EDITS[name](no_sizes)
    cases["lgb-careful/child_loop"] = re.sub(r"^(left_child=)\S+", r"\g<1>0", no_sizes, count=1, flags=re.M)
    rng = np.random.default_rng(22)
    raw = text.encode()
    trees = raw.index(b"Tree=0"), raw.index(b"end of trees")
    for n in range(40):  # one byte of a tree replaced by a digit, a sign, a space or a newline
        at = int(rng.integers(*trees))
        cases[f"lgb-byte/{n}"] = (raw[:at] + b"0123456789- \n."[n % 14:n % 14 + 1] + raw[at + 1:]).decode()
    for n, cut in enumerate(np.linspace(len(raw) * 0.1, len(raw) - 1, 8).astype(int)):
        cases[f"lgb-cut/{n}"] = raw[:cut].decode() + "\nend of trees\n"
    out = []
    for name, content in cases.items():
        path = tmp / (name.replace("/", "_") + ".txt")
        path.write_text(content)
        out.append({"name": name, "kind": "ranker", "path": str(path), "names": NAMES})
    return out


def _index_cases(tmp: Path) -> list[dict]:
    from recgen.retrieval.index import IndexMeta, make_index, save_index

    vectors = np.random.default_rng(1).normal(size=(30, 8)).astype(np.float32)
    whole = tmp / "index-whole"
    save_index(whole, make_index(vectors), IndexMeta("fake", "fp", 30, 8))
    raw = (whole / "items.faiss").read_bytes()
    edits = {
        "truncated": raw[:-17], "padded": raw + b"\0" * 32, "header_only": raw[:45],
        "d_edited": raw[:4] + struct.pack("<i", 16) + raw[8:], "ntotal_edited": raw[:8] + struct.pack("<q", 60) + raw[16:],
        "metric_l2": raw[:33] + struct.pack("<i", 1) + raw[37:], "float_count": raw[:37] + struct.pack("<Q", 10**12) + raw[45:],
        "fourcc": b"IxHf" + raw[4:], "nan_vector": raw[:45] + np.full(8, np.nan, dtype=np.float32).tobytes() + raw[77:],
    }
    out = []
    for name, content in edits.items():
        folder = tmp / f"index-{name}"
        folder.mkdir()
        (folder / "index.json").write_text((whole / "index.json").read_text())
        (folder / "items.faiss").write_bytes(content)
        out.append({"name": f"faiss/{name}", "kind": "index", "path": str(folder), "fingerprint": "fp",
                    "embedder": "fake"})
    meta = json.loads((whole / "index.json").read_text())
    for name, change in {"meta_n_items_text": {"n_items": "30"}, "meta_dim_negative": {"dim": -8}}.items():
        folder = tmp / f"index-{name}"
        folder.mkdir()
        (folder / "index.json").write_text(json.dumps({**meta, **change}))
        (folder / "items.faiss").write_bytes(raw)
        out.append({"name": f"faiss/{name}", "kind": "index", "path": str(folder), "fingerprint": "fp",
                    "embedder": "fake"})
    return out


def _sources_cases(tmp: Path) -> list[dict]:
    n = 12
    stats = SourceStats.fit([np.arange(n) % n, np.arange(n)[::-1].copy()], n)
    out = []

    def case(name, neighbours=None, popularity=None):
        folder = tmp / f"sources-{name}"
        stats.save(folder)
        if neighbours is not None:
            sp.save_npz(folder / "neighbours.npz", neighbours)
        if popularity is not None:
            np.savez(folder / "popularity.npz", popularity=popularity, recent_popularity=stats.recent_popularity)
        out.append({"name": f"npz/{name}", "kind": "sources", "path": str(folder), "n": n})

    m = stats.neighbours
    case("column_past_the_matrix", _unchecked_csr(m.data, np.where(m.indices == 1, 10**8, m.indices), m.indptr, m.shape))
    case("negative_column", _unchecked_csr(m.data, np.where(m.indices == 1, -3, m.indices), m.indptr, m.shape))
    bad_indptr = m.indptr.copy()
    bad_indptr[3] = bad_indptr[-1] + 50
    case("row_pointer_past_the_data", _unchecked_csr(m.data, m.indices, bad_indptr, m.shape))
    case("nan_weight", _unchecked_csr(np.full_like(m.data, np.nan), m.indices, m.indptr, m.shape))
    case("popularity_2d", popularity=np.ones((n, 2), dtype=np.float32))
    case("popularity_negative", popularity=-np.ones(n, dtype=np.float32))
    return out


def _unchecked_csr(data, indices, indptr, shape) -> sp.csr_matrix:
    """A CSR matrix with the given arrays as they are (scipy's constructor would refuse some of them)."""
    matrix = sp.csr_matrix(shape, dtype=np.float32)
    matrix.data, matrix.indices, matrix.indptr = data, indices, indptr
    return matrix


def _sasrec_cases(tmp: Path) -> list[dict]:
    from safetensors.numpy import load_file, save_file

    from recgen.models.sasrec import SASRec, SASRecConfig, save_checkpoint

    whole = save_checkpoint(SASRec(10, SASRecConfig(hidden=8, blocks=1, heads=1, max_len=5)), tmp / "sasrec.safetensors")
    raw, meta, tensors = whole.read_bytes(), json.loads(whole.with_suffix(".json").read_text()), load_file(str(whole))
    cases = {
        "truncated": (raw[: len(raw) // 2], meta), "n_items_huge": (raw, {**meta, "n_items": 10**12}),
        "blocks_huge": (raw, {**meta, "config": {**meta["config"], "blocks": 10**4}}),
        "heads_not_dividing": (raw, {**meta, "config": {**meta["config"], "heads": 3}}),
        "n_items_text": (raw, {**meta, "n_items": "10"}), "sidecar_list": (raw, [1, 2]),
    }
    nan = {k: (np.full_like(v, np.nan) if k == "pos_emb.weight" else v) for k, v in tensors.items()}
    save_file(nan, str(tmp / "nan.safetensors"))
    cases["nan_weights"] = ((tmp / "nan.safetensors").read_bytes(), meta)
    out = []
    for name, (content, sidecar) in cases.items():
        path = tmp / f"sasrec-{name}.safetensors"
        path.write_bytes(content)
        path.with_suffix(".json").write_text(json.dumps(sidecar))
        out.append({"name": f"sasrec/{name}", "kind": "sasrec", "path": str(path)})
    return out


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, dict]:
    tmp = tmp_path_factory.mktemp("model-files")
    cases = _ranker_cases(tmp) + _index_cases(tmp) + _sources_cases(tmp) + _sasrec_cases(tmp)
    return outcomes(cases)


# -- the checks ---------------------------------------------------------------------------------------------------

def _refused(results, name: str) -> str:
    row = results[name]
    assert row["outcome"] == "RecgenError", f"{name}: {row['outcome']} {row['message']}"
    return row["message"]


@pytest.mark.parametrize("edit", sorted(LGB_EDITS))
def test_an_edited_lightgbm_ranker_is_a_model_load_error_not_an_abort(results, edit):
    """Regression (issue 22): each of these killed the process with SIGABRT inside LightGBM's parser."""
    message = _refused(results, f"lgb/{edit}")
    assert ".txt" in message and "LightGBM" in message


@pytest.mark.parametrize("edit", [*STRUCTURAL, "child_loop"])
def test_a_carefully_edited_ranker_is_refused_before_lightgbm_reads_it(results, edit):
    """With consistent sizes LightGBM loaded these, then read past its arrays or looped at predict time."""
    _refused(results, f"lgb-careful/{edit}")


def test_random_byte_edits_and_cuts_of_a_ranker_never_abort(results):
    bad = {k: v for k, v in results.items() if k.startswith(("lgb-byte/", "lgb-cut/"))
           and v["outcome"] not in ("loaded", "RecgenError")}
    assert not bad, bad


@pytest.mark.parametrize("edit", ["truncated", "padded", "header_only", "d_edited", "ntotal_edited", "metric_l2",
                                  "float_count", "fourcc", "nan_vector", "meta_n_items_text", "meta_dim_negative"])
def test_an_edited_faiss_index_is_an_index_corrupt_error(results, edit):
    assert "items.faiss" in _refused(results, f"faiss/{edit}") or "index.json" in results[f"faiss/{edit}"]["message"]


@pytest.mark.parametrize("edit", ["column_past_the_matrix", "negative_column", "row_pointer_past_the_data",
                                  "nan_weight", "popularity_2d", "popularity_negative"])
def test_an_edited_npz_source_is_a_data_error_not_a_segfault(results, edit):
    """Regression: a column index past the matrix loaded, then segfaulted in scipy at the first product."""
    assert ".npz" in _refused(results, f"npz/{edit}")


@pytest.mark.parametrize("edit", ["truncated", "n_items_huge", "blocks_huge", "heads_not_dividing", "n_items_text",
                                  "sidecar_list", "nan_weights"])
def test_an_edited_sasrec_checkpoint_is_a_model_load_error(results, edit):
    assert "sasrec-" in _refused(results, f"sasrec/{edit}")


def test_outcomes_are_counted(results):
    counts = {kind: sum(r["outcome"] == kind for r in results.values())
              for kind in ("loaded", "RecgenError", "traceback", "died", "hung")}
    print(f"\nmodel-file inputs: {len(results)}; " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    assert counts["traceback"] == counts["died"] == counts["hung"] == 0


def test_recgen_recommend_on_a_fitted_folder_with_an_edited_ranker_exits_2_not_134(synthetic_dataset_dir, tmp_path):
    """Regression (issue 22), as reported: one digit removed from one leaf value of fusion/ranker.txt made
    `recgen recommend` (and `serve`) die with SIGABRT (exit 134) before it could say anything."""
    from recgen import RecgenConfig, Recommender
    from recgen.data import load_dataset
    from recgen.pipeline import FittedState, fitted_folder, history_rows
    from recgen.ranking.fusion import feature_names

    dataset = load_dataset(str(synthetic_dataset_dir))
    config = RecgenConfig()
    rows = [history_rows(dataset.catalog, s) for s in dataset.sequences.values()]
    names = feature_names(sasrec=False)
    rng = np.random.default_rng(0)
    groups = [(rng.normal(size=(8, len(names))).astype(np.float32), np.eye(8, dtype=np.float32)[k % 8])
              for k in range(60)]
    ranker = FusionRanker.train(groups[:45], groups[45:], names, num_leaves=4, max_rounds=5, threads=1)
    state = FittedState.fit(dataset, config.retrieval).with_second_stage(
        SourceStats.fit(rows, len(dataset.catalog)), ranker, depth=20)
    env = {**_env(), "RECGEN_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    folder = fitted_folder(dataset, config.retrieval).relative_to(fitted_folder(dataset, config.retrieval).parents[1])
    folder = tmp_path / "cache" / folder
    Recommender(dataset.catalog, config, state=state).save(folder)
    path = folder / "fusion" / "ranker.txt"
    path.write_text(LGB_EDITS["leaf_digit_removed"](path.read_text()))
    result = subprocess.run([sys.executable, "-m", "recgen.cli.main", "recommend", "-d", str(synthetic_dataset_dir),
                             "--history", "1,2", "--no-reasons", "-k", "3"], capture_output=True, text=True,
                            errors="replace", env=env, timeout=600)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "ranker.txt" in result.stderr and "Traceback" not in result.stderr


def test_a_ranker_that_splits_missing_values_off_loads_and_predicts_as_trained(tmp_path):
    """LightGBM writes ``threshold=inf`` for a split that sends every number one way and NaN (a feature a row
    does not have, e.g. a request's cosine without request text) the other; such a file is a valid ranker, read
    back with the same scores. A NaN threshold is still refused before LightGBM parses it."""
    from recgen.errors import ModelLoadError

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 3)).astype(np.float32)
    missing = rng.random(2000) < 0.3
    X[missing, 0] = np.nan
    y = (missing | (X[:, 1] > 1)).astype(np.float32)
    groups = [(X[s:s + 20], y[s:s + 20]) for s in range(0, 2000, 20)]
    ranker = FusionRanker.train(groups[:80], groups[80:], NAMES, num_leaves=4, max_rounds=5, patience=5)
    path = ranker.save(tmp_path / "ranker.txt")
    assert re.search(r"^threshold=.*\binf\b", path.read_text(), flags=re.M)  # the case this test is about
    loaded = FusionRanker.load(path, NAMES)
    np.testing.assert_allclose(loaded.predict(X), ranker.predict(X))
    path.write_text(re.sub(r"^(threshold=)inf", r"\1nan", path.read_text(), count=1, flags=re.M))
    with pytest.raises(ModelLoadError, match="finite"):
        FusionRanker.load(path, NAMES)

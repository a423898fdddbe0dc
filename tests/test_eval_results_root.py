"""One results root for every eval writer: ``--results-dir``, else ``RECGEN_RESULTS_DIR``, else ./eval/results."""

from __future__ import annotations

import gzip
import json

import pytest
from typer.testing import CliRunner

from recgen.cli.eval_cmd import eval_app
from recgen.evaluation.runfiles import write_run_file
from recgen.evaluation.synthetic import chain_dataset, write_generic
from recgen.paths import results_root

runner = CliRunner()


@pytest.fixture()
def chain(tmp_path, monkeypatch):
    """A tiny dataset, run from an empty working folder (so a stray ./eval/results would show)."""
    folder = write_generic(chain_dataset(n_items=20, n_users=30, length=6, short_users=0, name="chain"),
                           tmp_path / "data" / "chain")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("RECGEN_RESULTS_DIR", raising=False)
    return folder


def _run(dataset, *extra):
    result = runner.invoke(eval_app, ["run", "-d", str(dataset), "-s", "popular", "--bootstrap", "100", "--no-report",
                                      "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_eval_run_honours_the_results_dir_option(chain, tmp_path):
    summary = _run(chain, "--results-dir", str(tmp_path / "opt"))
    assert (tmp_path / "opt" / "chain" / "popular-test.json").is_file()
    assert (tmp_path / "opt" / "chain" / "popular-test.users.jsonl.gz").is_file()
    assert "--results-dir" in summary["command"]
    saved = json.loads((tmp_path / "opt" / "chain" / "popular-test.json").read_text())
    assert "/" not in saved["argv"][0]  # the program's name, not where it is installed on this machine
    assert not (tmp_path / "work" / "eval").exists()


def test_eval_run_honours_the_environment_variable(chain, tmp_path, monkeypatch):
    monkeypatch.setenv("RECGEN_RESULTS_DIR", str(tmp_path / "env"))
    _run(chain)
    assert (tmp_path / "env" / "chain" / "popular-test.json").is_file()
    assert not (tmp_path / "work" / "eval").exists()
    _run(chain, "--results-dir", str(tmp_path / "opt"))  # the option wins over the variable
    assert (tmp_path / "opt" / "chain" / "popular-test.json").is_file()


def test_the_fallback_is_eval_results_under_the_current_folder(chain, tmp_path):
    assert results_root() == results_root(None)
    _run(chain)
    assert (tmp_path / "work" / "eval" / "results" / "chain" / "popular-test.json").is_file()


def test_tune_and_report_use_the_same_root(chain, tmp_path, monkeypatch):
    monkeypatch.setenv("RECGEN_RESULTS_DIR", str(tmp_path / "env"))
    tuned = runner.invoke(eval_app, ["tune", "-d", str(chain), "-s", "itemknn", "-g", "window=2,3", "--json"])
    assert tuned.exit_code == 0, tuned.output
    assert (tmp_path / "env" / "chain" / "tuning" / "itemknn-valid-grid.json").is_file()
    _run(chain)
    report = runner.invoke(eval_app, ["report", "--json"])
    assert report.exit_code == 0, report.output
    assert (tmp_path / "env" / "chain" / "README.md").is_file()


def test_write_run_file_writes_rows_then_the_whole_summary(tmp_path):
    path = write_run_file(tmp_path / "r" / "chain", "requests-x", {"run_name": "requests-x"}, rows=[{"a": 1}])
    assert json.loads(path.read_text()) == {"run_name": "requests-x"}
    with gzip.open(tmp_path / "r" / "chain" / "requests-x.rows.jsonl.gz", "rt") as handle:
        assert [json.loads(line) for line in handle] == [{"a": 1}]
    assert sorted(p.name for p in path.parent.iterdir()) == ["requests-x.json", "requests-x.rows.jsonl.gz"]


def test_run_files_name_no_folder_of_this_machine(tmp_path, monkeypatch):
    """Run files are committed: the cache, the data root and the current folder appear as placeholders."""
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("RECGEN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    summary = {"fit": {"file": str(tmp_path / "cache" / "fusion" / "m.txt")},
               "command": f"recgen eval run -d {tmp_path / 'data' / 'ml-100k'} --config {tmp_path / 'c.json'}",
               "sources": [str(tmp_path / "cache" / "sasrec" / "x.safetensors"), 3]}
    path = write_run_file(tmp_path / "out", "run", summary, rows=[{"memo": str(tmp_path / "cache" / "m.jsonl")}])
    text = path.read_text() + gzip.open(tmp_path / "out" / "run.rows.jsonl.gz", "rt").read()
    assert str(tmp_path) not in text
    saved = json.loads(path.read_text())
    assert saved["fit"]["file"] == "<cache>/fusion/m.txt"
    assert saved["command"] == "recgen eval run -d <data>/ml-100k --config c.json"
    assert saved["sources"] == ["<cache>/sasrec/x.safetensors", 3]

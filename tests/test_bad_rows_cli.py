"""``--bad-rows`` (config ``data.bad_rows``) on the commands that load a dataset: a malformed interaction row
stops the command with its file and line (exit 2, the default) or is skipped, counted and named, and the
command goes on with the other rows."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from recgen.cli.main import app
from recgen.evaluation.synthetic import chain_dataset, write_generic

runner = CliRunner()


def flat(text: str) -> str:
    """The text without whitespace: the console wraps long paths anywhere."""
    return "".join(text.split())


@pytest.fixture()
def broken(tmp_path, monkeypatch):
    """A generic dataset whose interactions file has one row with a timestamp that is not a number; the line."""
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("RECGEN_RESULTS_DIR", str(tmp_path / "results"))
    folder = write_generic(chain_dataset(n_items=30, n_users=80, length=6, seed=2), tmp_path / "chain")
    path = folder / "interactions.csv"
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    bad = {"user": "u-bad", "item": "i3", "timestamp": "soon"}
    lines.insert(41, ",".join(bad.get(col, "") for col in header))
    path.write_text("\n".join(lines) + "\n")
    return folder, 42  # 1-based line of the inserted row


def test_a_bad_row_stops_each_command_by_default_naming_its_line(broken):
    folder, line = broken
    for command in (["eval", "run", "-s", "popular", "--stage", "valid"], ["index"], ["fit"],
                    ["eval", "run", "-s", "popular", "--stage", "valid", "--bad-rows", "error"]):
        result = runner.invoke(app, [*command, "-d", str(folder)])
        assert result.exit_code == 2, (command, result.output)
        assert f"interactions.csv:{line}:timestamp'soon'" in flat(result.output), (command, result.output)
        assert "Traceback" not in result.output


def test_skip_goes_on_without_the_row_and_names_it(broken):
    folder, line = broken
    result = runner.invoke(app, ["eval", "run", "-s", "popular", "--stage", "valid", "-d", str(folder),
                                 "--bad-rows", "skip", "--json", "--no-report"])
    assert result.exit_code == 0, result.output
    assert flat(f"interactions.csv: skipped 1 malformed row(s) (bad_rows = skip) at line(s) {line}") in flat(result.output)
    run = json.loads(result.stdout[result.stdout.index("{"):])
    assert run["config"]["bad_rows"] == "skip" and run["config"]["skipped_rows"] == 1
    assert "--bad-rows skip" in run["command"]
    index = runner.invoke(app, ["index", "-d", str(folder), "--bad-rows", "skip", "--json"])
    assert index.exit_code == 0, index.output
    info = json.loads(index.stdout[index.stdout.index("{"):])
    assert info["skipped_rows"] == 1 and info["skipped_lines"] == [line] and info["items"] == 30


def test_an_unknown_bad_rows_value_is_a_clear_error(broken):
    folder, _ = broken
    for command in (["index"], ["fit"], ["eval", "run", "-s", "popular"]):
        result = runner.invoke(app, [*command, "-d", str(folder), "--bad-rows", "maybe"])
        assert result.exit_code == 2, (command, result.output)
        assert "bad_rows" in result.output and flat("'error' or 'skip'") in flat(result.output), result.output

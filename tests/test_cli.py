"""The CLI as a user runs it: real default models on real ml-100k (skipped where absent), clear errors."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from recgen.cli.main import app

runner = CliRunner()


def test_unknown_dataset_is_a_clear_error_not_a_traceback():
    result = runner.invoke(app, ["recommend", "--dataset", "/no/such/folder", "--user", "1"])
    assert result.exit_code == 2
    assert "not found" in result.output and "Traceback" not in result.output


def test_bad_mode_is_rejected():
    result = runner.invoke(app, ["recommend", "--mode", "dance", "--user", "1"])
    assert result.exit_code != 0


@pytest.mark.integration
def test_recommend_json_for_a_real_user(shared_data, tmp_path):
    env_cmd = [sys.executable, "-m", "recgen.cli.main", "recommend", "--dataset", str(shared_data / "ml-100k"),
               "--user", "1", "-k", "3", "--json"]
    out = subprocess.run(env_cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout)
    recs = data["recommendations"]
    assert len(recs) == 3 and [r["rank"] for r in recs] == [1, 2, 3]
    assert not {r["item_id"] for r in recs} & set(data["history"])
    assert all(r["reason"] for r in recs)


@pytest.mark.integration
def test_unknown_user_exit_code_2(shared_data):
    result = runner.invoke(app, ["recommend", "--dataset", str(shared_data / "ml-100k"), "--user", "99999",
                                 "--no-reasons"])
    assert result.exit_code == 2
    assert "'99999' is not in dataset" in result.output

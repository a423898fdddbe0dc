"""`recgen batch --ray`: the same job on local Ray Data with 2 actors gives the same results as one process.

Ray is the optional extra ``recgen[ray]``; this test skips with a message where it is not installed.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from recgen.batch.runner import run_batch
from recgen.config import RecgenConfig

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                       reason="Ray is not installed: pip install 'recgen[ray]' (or 'ray[data]') to run the Ray batch test"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # Ray Data's own deprecated settings
]


def _by_id(path) -> dict:
    return {r["custom_id"]: r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())}


@pytest.mark.slow
def test_ray_job_equals_single_process_job(tmp_path, synthetic_dataset_dir, tiny_lm_dir, dataset):
    users = dataset.users
    rows = [{"custom_id": f"r{n}", "user": users[n], "k": 3, "reasons": n % 2 == 0,
             "mode": "generate" if n == 3 else "score"} for n in range(10)]
    rows.append({"custom_id": "ghost", "user": "not-a-user", "k": 3})
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = RecgenConfig(lm={"model": tiny_lm_dir, "threads": 1})

    local = tmp_path / "local.jsonl"
    run_batch(src, local, dataset=str(synthetic_dataset_dir), config=config, batch_size=1, show_progress=False)
    distributed = tmp_path / "ray.jsonl"
    summary = run_batch(src, distributed, dataset=str(synthetic_dataset_dir), config=config, batch_size=1,
                        use_ray=True, ray_workers=2, show_progress=False)

    assert summary.engine == "ray" and summary.processed == len(rows) and summary.failed == 1
    assert summary.workers_used == 2  # both actors served batches
    got, want = _by_id(distributed), _by_id(local)
    assert len(distributed.read_text().splitlines()) == len(rows)  # every id once
    assert got == want  # same lines, modulo order
    assert got["ghost"]["response"]["status_code"] == 400

    # Resuming works the same way on Ray: nothing left to do.
    again = run_batch(src, distributed, dataset=str(synthetic_dataset_dir), config=config, use_ray=True,
                      show_progress=False)
    assert (again.processed, again.already_done) == (0, len(rows))

"""atomic_dir: a failure while writing leaves the old folder as it was and no temporary folder behind."""

import pytest

from recgen.atomic import atomic_dir


def test_success_replaces_and_failure_keeps_old(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("v1")
    assert (target / "a.txt").read_text() == "v1"
    with pytest.raises(OSError):
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("half")
            raise OSError(28, "No space left on device")
    assert (target / "a.txt").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]

"""Issue 12 robustness (c): a SIGKILL or a full disk while saving an index or a checkpoint leaves the previous
folder intact, never a half folder at the target path, and (for the disk) a clear SaveError."""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures import fault_writer
from fixtures.fault_writer import WRITERS

from recgen.atomic import recover_interrupted
from recgen.errors import SaveError

REPO = Path(__file__).resolve().parents[1]
KILLS = int(os.environ.get("RECGEN_FAULT_KILLS", "5"))  # random-time kills per kind (slow test)


def start_writer(kind: str, target: Path, version: int, point: str, ready: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    return subprocess.Popen([sys.executable, fault_writer.__file__, kind, str(target), str(version), point,
                             str(ready)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_when_ready(proc: subprocess.Popen, ready: Path, delay: float = 0.0) -> None:
    deadline = time.time() + 60
    while not ready.exists():
        if proc.poll() is not None:
            raise AssertionError(f"writer exited early: {proc.stderr.read().decode()[-2000:]}")
        assert time.time() < deadline, "writer never reached the kill point"
        time.sleep(0.01)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def leftovers(target: Path) -> list[str]:
    return sorted(p.name for p in target.parent.iterdir() if p != target)


def assert_nothing_half_at_visible_paths(target: Path) -> None:
    """Only hidden temporaries may remain next to the target (never picked up as an index or step-* folder)."""
    for name in leftovers(target):
        assert name.startswith((f".tmp-{target.name}-", f".old-{target.name}-")), name


@pytest.mark.parametrize("kind", sorted(WRITERS))
@pytest.mark.parametrize("point", ["body", "commit", "swap"])
def test_sigkill_while_saving_keeps_the_old_folder(tmp_path, kind, point):
    write, version_of = WRITERS[kind]
    target = tmp_path / "out" / "step-000001"
    write(target, 1)
    proc = start_writer(kind, target, 2, point, tmp_path / "ready")
    kill_when_ready(proc, tmp_path / "ready")
    assert_nothing_half_at_visible_paths(target)
    if point == "swap":  # the two-rename fallback (no renameat2): the old folder is aside, not half
        assert not target.exists()
        recover_interrupted(target)
    assert version_of(target) == 1
    write(target, 3)  # the next save cleans up after the killed writer
    assert version_of(target) == 3 and leftovers(target) == []


@pytest.mark.slow
@pytest.mark.release
@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_sigkill_at_random_moments_of_repeated_saves(tmp_path, kind):
    write, version_of = WRITERS[kind]
    target = tmp_path / "out" / "index"
    write(target, 1)
    rng = random.Random(kind)
    seen = []
    for attempt in range(KILLS):
        ready = tmp_path / f"ready{attempt}"
        proc = start_writer(kind, target, 10 * (attempt + 1), "loop", ready)
        kill_when_ready(proc, ready, delay=rng.uniform(0.0, 0.3))
        assert_nothing_half_at_visible_paths(target)
        recover_interrupted(target)
        seen.append(version_of(target))  # complete and self-consistent, whichever version it is
    write(target, 999)
    assert version_of(target) == 999 and leftovers(target) == []
    print(f"\n{kind}: {KILLS} random kills, versions found after each: {seen}")


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_full_disk_during_save_is_a_clear_error_and_keeps_the_old_folder(tmp_path, kind, monkeypatch):
    import recgen.atomic as atomic

    write, version_of = WRITERS[kind]
    target = tmp_path / "out" / "step-000001"
    write(target, 1)

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "_fsync_tree", no_space)  # the disk fills as the files are flushed
    with pytest.raises(SaveError, match="No space left on device.*unchanged"):
        write(target, 2)
    monkeypatch.undo()
    assert version_of(target) == 1 and leftovers(target) == []


@pytest.fixture
def tiny_disk(tmp_path):
    """A 512 KiB tmpfs (root only; skipped elsewhere): a real ENOSPC, not a simulated one."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if not shutil.which("mount") or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)],
                                                   capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_real_full_disk_keeps_the_old_folder(tiny_disk, kind):
    write, version_of = WRITERS[kind]
    target = tiny_disk / "step-000001"
    write(target, 1)
    fd = os.open(tiny_disk / "filler.bin", os.O_WRONLY | os.O_CREAT)
    try:
        while True:  # fill the disk ...
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    os.ftruncate(fd, max(0, os.fstat(fd).st_size - 8192))  # ... then leave two pages: the save fails midway
    os.close(fd)
    with pytest.raises(SaveError) as info:
        write(target, 2)
    assert info.value.errno == errno.ENOSPC
    assert version_of(target) == 1
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler.bin", "step-000001"]

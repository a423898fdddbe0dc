"""Checkpoint folders (recgen/finetune/checkpoint.py): old ones are replaceable, user files never deleted,
half-written ones never picked up, damaged ones refused with a RecgenError."""

from __future__ import annotations

import json

import pytest
from fixtures.fault_writer import checkpoint_version, write_checkpoint

from recgen.atomic import MARKER, write_manifest
from recgen.errors import FolderCorruptError, RecgenError, UnsafeOverwriteError
from recgen.finetune.checkpoint import (
    CheckpointError,
    check_output_dir,
    latest_checkpoint,
    prune_checkpoints,
    verify_checkpoint,
)


def test_a_checkpoint_written_before_the_marker_is_replaced(tmp_path):
    target = tmp_path / "checkpoints" / "step-000001"
    write_checkpoint(target, 1)
    (target / MARKER).unlink()  # as the previous trainer wrote it: files + manifest.json, no marker
    write_checkpoint(target, 2)
    assert checkpoint_version(target) == 2


def test_prune_keeps_newest_and_never_a_folder_with_user_files(tmp_path):
    for step in (1, 2, 3, 4):
        write_checkpoint(tmp_path / "checkpoints" / f"step-{step:06d}", step)
    notes = tmp_path / "checkpoints" / "step-000001" / "my-notes.txt"
    notes.write_text("keep")
    (tmp_path / "checkpoints" / "step-000001" / MARKER).unlink()
    prune_checkpoints(tmp_path, keep=2)
    left = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert left == ["step-000001", "step-000003", "step-000004"] and notes.read_text() == "keep"


def test_check_output_dir_finds_user_files_before_training(tmp_path):
    check_output_dir(tmp_path / "new")  # nothing there yet: fine
    write_checkpoint(tmp_path / "checkpoints" / "step-000001", 1)
    check_output_dir(tmp_path)
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "mine.bin").write_bytes(b"x")
    with pytest.raises(UnsafeOverwriteError, match="adapter"):
        check_output_dir(tmp_path)


def test_half_written_checkpoint_is_not_latest_and_damaged_one_is_refused(tmp_path):
    write_checkpoint(tmp_path / "checkpoints" / "step-000001", 1)
    half = tmp_path / "checkpoints" / ".tmp-step-000002-999-abc"  # a killed writer's temporary folder
    half.mkdir()
    assert latest_checkpoint(tmp_path).name == "step-000001"
    target = tmp_path / "checkpoints" / "step-000001"
    state = json.loads((target / "trainer_state.json").read_text())
    (target / "trainer_state.json").write_text(json.dumps({**state, "step": 7}))
    with pytest.raises(CheckpointError, match="trainer_state.json") as info:
        verify_checkpoint(target)
    assert isinstance(info.value, FolderCorruptError) and isinstance(info.value, RecgenError)
    write_manifest(target)  # a manifest that lists everything except rng.json
    manifest = json.loads((target / "manifest.json").read_text())
    del manifest["files"]["rng.json"]
    (target / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="rng.json"):
        verify_checkpoint(target)

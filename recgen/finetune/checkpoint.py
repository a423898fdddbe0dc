"""Training checkpoints: optimizer, scheduler and RNG state as safetensors + JSON (no pickle), and the
checks that refuse a half-written or damaged checkpoint.

A checkpoint folder is written with :func:`recgen.atomic.atomic_folder` (temporary sibling, sha256
manifest written last, one rename), so a kill or a full disk never leaves one that looks complete.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from ..atomic import (
    MANIFEST,
    atomic_folder,
    check_output_files,
    check_output_folder,
    check_replaceable,
    replaceable,
    verify_folder,
)
from ..errors import FolderCorruptError

#: files the ranker writes into ``output_dir`` and ``results_dir`` (each recorded in the folder's marker)
OUTPUT_FILES = ("train_log.jsonl",)
RESULT_FILES = ("metrics.json", "train_log.jsonl", "loss_curve.png", "MODEL_CARD.md")
CHECKPOINT_FILES = ("adapter_model.safetensors", "adapter_config.json", "optimizer.safetensors", "optimizer.json",
                    "scheduler.json", "rng.safetensors", "rng.json", "trainer_state.json")

__all__ = ["CHECKPOINT_FILES", "MANIFEST", "CheckpointError", "atomic_folder", "verify_folder", "verify_checkpoint",
           "latest_checkpoint", "prune_checkpoints", "check_output_dir", "OUTPUT_FILES", "RESULT_FILES", "optimizer_to_files", "optimizer_from_files",
           "rng_to_files", "rng_from_files", "scheduler_state"]


class CheckpointError(FolderCorruptError):
    """A checkpoint folder that is missing files or whose files do not match their recorded hashes."""


def verify_checkpoint(folder: Path) -> dict:
    """The manifest lists every checkpoint file and each hash matches; else :class:`CheckpointError`."""
    return verify_folder(folder, CHECKPOINT_FILES, what="checkpoint", error=CheckpointError)


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The highest ``checkpoints/step-*`` folder (temporary ``.tmp-*`` siblings never match)."""
    folder = Path(output_dir) / "checkpoints"
    if not folder.is_dir():
        return None
    steps = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-"))
    return steps[-1] if steps else None


def prune_checkpoints(output_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` ``step-*`` checkpoints (only folders recgen may replace)."""
    folder = Path(output_dir) / "checkpoints"
    steps = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-"))
    for old in steps[: -keep] if keep > 0 else []:
        if replaceable(old):
            shutil.rmtree(old, ignore_errors=True)


def check_output_dir(output_dir: Path, results_dir: Path | None = None) -> None:
    """Before training: raise :class:`~recgen.errors.UnsafeOverwriteError` if ``adapter/``, ``best/`` or a
    ``checkpoints/step-*`` folder holds files recgen did not write, or a file the run writes into
    ``output_dir`` / ``results_dir`` exists without recgen's record of writing it; :class:`SaveError` if a
    place is not writable (found now, not after hours of training)."""
    out = Path(output_dir)
    for name in ("adapter", "best"):
        check_output_folder(out / name)
    check_output_files(out, OUTPUT_FILES, "output_dir")
    if results_dir is not None:
        check_output_files(Path(results_dir), RESULT_FILES, "results_dir")
    if (out / "checkpoints").is_dir():
        for step in (out / "checkpoints").iterdir():
            if step.name.startswith("step-"):
                check_replaceable(step)


# -- state (de)serialisation without pickle -------------------------------------------------------------
def optimizer_to_files(optimizer, folder: Path) -> None:
    from safetensors.torch import save_file

    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{pid}.{key}"] = value
    save_file(tensors, str(folder / "optimizer.safetensors"))
    (folder / "optimizer.json").write_text(json.dumps({"param_groups": state["param_groups"], "scalars": scalars}))


def optimizer_from_files(optimizer, folder: Path) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "optimizer.safetensors"))
    meta = json.loads((folder / "optimizer.json").read_text())
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_to_files(folder: Path) -> None:
    from safetensors.torch import save_file

    save_file({"torch": torch.get_rng_state()}, str(folder / "rng.safetensors"))
    np_state = np.random.get_state()
    py_state = random.getstate()
    (folder / "rng.json").write_text(json.dumps({
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }))


def rng_from_files(folder: Path) -> None:
    from safetensors.torch import load_file

    torch.set_rng_state(load_file(str(folder / "rng.safetensors"))["torch"])
    data = json.loads((folder / "rng.json").read_text())
    version, internal, gauss = data["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = data["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def scheduler_state(scheduler) -> dict:
    """The LambdaLR state minus its lambdas (code, not data); floats made JSON-safe."""
    state = scheduler.state_dict()
    state.pop("lr_lambdas", None)
    return json.loads(json.dumps(state, default=float))

"""What a run records about where it ran: package versions, git commit, platform, threads."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

from ..version import __version__

PACKAGES = ("numpy", "scipy", "torch", "sentence-transformers", "faiss-cpu", "transformers", "peft", "safetensors")


def environment() -> dict:
    from importlib import metadata

    versions = {"recgen": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    repo = Path(__file__).resolve().parents[2]
    commit, dirty = None, None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                capture_output=True, text=True, timeout=10)
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        import torch

        threads = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        threads = None
    return {"packages": versions, "git_commit": commit or "none (no commit yet)", "git_dirty": dirty,
            "platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": threads}

"""The errors file of a batch job: one record per request that could not be served, replaced atomically
and never written over a file that recgen did not write."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from ..errors import DataError

log = logging.getLogger(__name__)
_ERROR_KEYS = {"line", "custom_id", "error"}


# -- the errors file ----------------------------------------------------------------------------
def check_errors_file(path: str | Path) -> None:
    """An existing errors file is rewritten only if it is one (empty, or only error records): never a file
    recgen did not write."""
    path = Path(path)
    if not path.exists():
        return
    if not path.is_file():
        raise DataError(f"the errors file {path} is not a regular file; give a file path")
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                record = None
            if not (isinstance(record, dict) and "error" in record and set(record) <= _ERROR_KEYS):
                raise DataError(f"the errors file {path} exists and is not a recgen errors file (line {number}); "
                                "refusing to overwrite it: choose another --errors path")


def _error_json(record: dict) -> str:
    text = json.dumps(record, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a message quoting a lone surrogate: escape it rather than fail the job
        text = json.dumps(record)
    return text


def write_errors(path: str | Path, errors: list[dict]) -> None:
    """The errors file is rewritten on every run (it describes the input, which is re-read each time),
    atomically: a temporary sibling, fsynced, then renamed over it."""
    check_errors_file(path)
    target = Path(os.path.realpath(path))  # through a symlink: replace the file, keep the link
    target.parent.mkdir(parents=True, exist_ok=True)
    mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for error in errors:
                handle.write(_error_json(error) + "\n")
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)

"""The files of a batch job, checked before anything is written: the input, the output, the errors file and
the output's lock must be four different files (through symlinks and hard links), the output and errors
paths must be writable, and only one job at a time may append to an output.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ..errors import DataError, RecgenError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; jobs on one output are then not serialised
    fcntl = None


class OutputLockedError(RecgenError):
    """Another batch job holds the output's lock."""


def lock_path(output: str | Path) -> Path:
    """The sidecar lock file recgen creates next to an output (and leaves there: deleting it would race)."""
    output = Path(output)
    return output.with_name(output.name + ".lock")


def same_file(a: str | Path, b: str | Path) -> bool:
    """Same path after resolving symlinks, or (both existing) the same inode: a hard link is the same file."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def check_distinct(input_path: Path, output_path: Path, errors_path: Path) -> None:
    """:class:`DataError` when two of the job's files are one: writing one would destroy the other."""
    roles = [("input", input_path), ("output", output_path), ("errors file", errors_path),
             ("output's lock file", lock_path(output_path))]
    for n, (name_a, a) in enumerate(roles):
        for name_b, b in roles[n + 1:]:
            if same_file(a, b):
                raise DataError(f"the {name_b} {b} is the same file as the {name_a} {a}: give each its own path "
                                "(recgen would overwrite one with the other)")


def check_writable(path: Path, what: str) -> None:
    """A clear error now, rather than a traceback after the models are loaded: ``path`` must be a file (or
    not exist yet, under a writable folder: the nearest existing one, as missing folders are made later)."""
    if path.is_dir():
        raise DataError(f"the {what} {path} is a folder; give a file path")
    if path.exists():
        if not path.is_file():
            raise DataError(f"the {what} {path} is not a regular file")
        if not os.access(path, os.W_OK):
            raise DataError(f"the {what} {path} is not writable")
        return
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise DataError(f"cannot create the folder for the {what} {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DataError(f"the {what} {path} cannot be created: the folder {folder} is not writable")


class OutputLock:
    """An exclusive, non-blocking ``flock`` on ``<output>.lock`` for the whole job. The kernel releases it
    when the process dies, so a killed job never blocks its own resume."""

    def __init__(self, output: str | Path):
        self.output = Path(output)
        self.path = lock_path(output)
        self._fd: int | None = None

    def __enter__(self) -> "OutputLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise DataError(f"cannot create the lock file {self.path} next to the output: "
                            f"{exc.strerror or exc}") from None
        if fcntl is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(self._fd)
                self._fd = None
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    raise DataError(f"cannot lock {self.path}: {exc.strerror or exc}") from None
                raise OutputLockedError(f"another recgen batch is writing {self.output} (it holds {self.path}); "
                                        "wait for it to finish, or choose another --output") from None
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None

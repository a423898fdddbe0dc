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
    """The sidecar lock file recgen creates next to an output's real path (and leaves there: deleting it
    would race with a job about to lock it)."""
    real = Path(os.path.realpath(output))
    return real.with_name(real.name + ".lock")


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
    """Exclusive, non-blocking ``flock``s for the whole job: on ``<output>.lock`` (next to the output's real
    path, so a symlink to the output finds the same lock) and on the output file itself (created if missing;
    a flock belongs to the inode, so a hard link to the output finds it too). The kernel releases both when
    the process dies, so a killed job never blocks its own resume."""

    def __init__(self, output: str | Path):
        self.output = Path(output)
        self.path = lock_path(output)
        self._fds: list[int] = []

    def __enter__(self) -> "OutputLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            for path, flags in ((self.path, os.O_RDWR), (self.output, os.O_WRONLY | os.O_APPEND)):
                self._fds.append(os.open(path, flags | os.O_CREAT, 0o644))
                self._lock(self._fds[-1])
        except OSError as exc:
            self.__exit__()
            raise DataError(f"cannot create or lock {exc.filename or self.path}: {exc.strerror or exc}") from None
        except BaseException:
            self.__exit__()
            raise
        return self

    def _lock(self, fd: int) -> None:
        if fcntl is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                raise
            raise OutputLockedError(f"another recgen batch is writing {self.output} (it holds {self.path}); "
                                    "wait for it to finish, or choose another --output") from None

    def __exit__(self, *exc) -> None:
        while self._fds:
            os.close(self._fds.pop())  # releases the lock

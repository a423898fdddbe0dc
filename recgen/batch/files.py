"""The files of a batch job, checked before anything is written: the input, the output, the errors file and
the output's lock must be four different files (through symlinks and hard links), the output and errors
paths must be writable, and only one job at a time may append to an output.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ..atomic import check_place_writable
from ..errors import DataError, RecgenError, SaveError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; jobs on one output are then not serialised
    fcntl = None


class OutputLockedError(RecgenError):
    """Another batch job holds the output's lock."""


def lock_path(output: str | Path) -> Path:
    """The sidecar lock file recgen creates next to an output's real path (see :class:`OutputLock` for when
    it is deleted again)."""
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
    try:
        check_place_writable(path, what)  # probed, not os.access: root ignores permission bits, not a read-only disk
    except SaveError as exc:
        raise DataError(exc.strerror or str(exc)) from None


class OutputLock:
    """Exclusive, non-blocking ``flock``s for the whole job: on ``<output>.lock`` (next to the output's real
    path, so a symlink to the output finds the same lock) and on the output file itself (created if missing;
    a flock belongs to the inode, so a hard link to the output finds it too). The kernel releases both when
    the process dies, so a killed job never blocks its own resume.

    A job that is refused or fails (any exception inside or while locking) leaves nothing it created: the
    lock file it created (deleted while it still holds it) and an output it created that is still empty.
    A locker checks, once locked, that the path still names the inode it locked, so deleting a held lock
    file never lets two jobs in. A finished job leaves its lock file (harmless, reused by the next job)."""

    _ATTEMPTS = 5

    def __init__(self, output: str | Path):
        self.output = Path(output)
        self.path = lock_path(output)
        self._fds: list[int] = []
        self._created: list[tuple[Path, int]] = []  # (path, fd) of files this job created

    def __enter__(self) -> "OutputLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open_locked(self.path, os.O_RDWR, verify=True)
            self._open_locked(self.output, os.O_WRONLY | os.O_APPEND, verify=False)
        except OSError as exc:
            self._release(failed=True)
            raise DataError(f"cannot create or lock {exc.filename or self.path}: {exc.strerror or exc}") from None
        except BaseException:
            self._release(failed=True)
            raise
        return self

    def _open_locked(self, path: Path, flags: int, *, verify: bool) -> None:
        """Open ``path`` (creating it if missing, remembered as ours) and lock it; with ``verify``, retry when
        the file was deleted or replaced between open and lock (its holder cleaned up after a refusal)."""
        for _ in range(self._ATTEMPTS):
            try:
                fd, created = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644), True
            except FileExistsError:
                fd, created = os.open(path, flags | os.O_CREAT), False
            self._fds.append(fd)
            if created:
                self._created.append((path, fd))
            self._lock(fd)
            if not verify or _same_inode(fd, path):
                return
            self._forget(fd)
        raise OutputLockedError(f"the lock {path} keeps changing; another recgen batch is starting on {self.output}")

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

    def _forget(self, fd: int) -> None:
        self._fds.remove(fd)
        self._created = [(p, f) for p, f in self._created if f != fd]
        os.close(fd)

    def _release(self, *, failed: bool) -> None:
        """Unlock; after a failure, first delete what this job created (while still holding its locks)."""
        if failed:
            for path, fd in reversed(self._created):
                try:
                    if _same_inode(fd, path) and (path == self.path or os.fstat(fd).st_size == 0):
                        os.unlink(path)
                except OSError:
                    pass
        self._created = []
        while self._fds:
            os.close(self._fds.pop())  # releases the lock

    def __exit__(self, kind=None, exc=None, tb=None) -> None:
        self._release(failed=kind is not None)


def _same_inode(fd: int, path: Path) -> bool:
    """The open file ``fd`` is still what ``path`` names (not deleted, not replaced)."""
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)

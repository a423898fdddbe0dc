"""Write a folder completely or not at all, and never replace a folder recgen did not write.

Every folder written here is filled as a hidden temporary sibling (``.tmp-<name>-<pid>-*``) and swapped
into place in one rename, so a crash, a kill or a full disk never leaves a half folder at the target
path. It carries a marker file, :data:`MARKER`, naming what wrote it. An existing target is replaced
only when it is safe to delete (see :func:`replaceable`); anything else raises
:class:`~recgen.errors.UnsafeOverwriteError` and nothing is deleted. With ``manifest=True`` a
``manifest.json`` holding every file's sha256 is written last, and :func:`verify_folder` checks it.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .errors import FolderCorruptError, SaveError, UnsafeOverwriteError
from .version import __version__

MARKER = ".recgen-folder"
MANIFEST = "manifest.json"

# Folders written before the marker existed. A folder is accepted as one of these only when it holds the
# layout's required files and nothing outside its allowed names (sub-folders must be replaceable themselves).
LEGACY_LAYOUTS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "retrieval index": (frozenset({"index.json", "items.faiss"}), frozenset({"index.json", "items.faiss"})),
    "saved recommender": (frozenset({"config.json", "catalog.jsonl"}),
                          frozenset({"config.json", "catalog.jsonl", "popularity.json", "transitions.npz", "index"})),
    "converted language model": (frozenset({"config.json", "tokenizer_config.json"}), frozenset({
        "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
        "special_tokens_map.json", "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja"})),
}
# sentence-transformers module folders inside a fine-tuned embedder (their files are not in the manifest)
_MODULE_FOLDER = re.compile(r"^\d+_[A-Za-z]+$")
# errors that mean "the disk refused": reported as SaveError, with the errno kept
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EIO}
_RENAME_EXCHANGE = 2


# -- may this folder be replaced? ----------------------------------------------------------------------
def _manifest_covers(folder: Path) -> bool:
    """A legacy manifest folder (checkpoint, adapter): every top-level file is listed in its manifest."""
    try:
        listed = set(json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    for entry in folder.iterdir():
        if entry.name in (MANIFEST, MARKER):
            continue
        if entry.is_dir() and not entry.is_symlink():
            if not (_MODULE_FOLDER.match(entry.name) and all(p.is_file() for p in entry.iterdir())):
                return False
        elif entry.name not in listed:
            return False
    return True


def replaceable(folder: Path) -> bool:
    """True when ``folder`` may be deleted to make room for a new version.

    The rule: the folder is empty, or carries :data:`MARKER`, or (written before the marker) has exactly
    a known recgen layout: an index (``index.json`` + ``items.faiss``), a saved recommender
    (``config.json`` + ``catalog.jsonl`` with optional ``popularity.json``, ``transitions.npz`` and an
    ``index/`` that is replaceable itself), the converted default LM (``config.json`` +
    ``tokenizer_config.json`` and only the standard transformers file names), or a ``manifest.json`` that
    lists every top-level file (checkpoints, adapters, fine-tuned embedders; numbered sentence-transformers
    module folders allowed). A single unknown file makes it not replaceable."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return False
    names = {p.name for p in folder.iterdir()}
    if not names or (folder / MARKER).is_file():
        return True
    for required, allowed in LEGACY_LAYOUTS.values():
        if required <= names <= allowed:
            subfolders = [folder / n for n in names if (folder / n).is_dir()]
            if all(replaceable(sub) for sub in subfolders) and all(
                    (folder / n).is_file() for n in names if (folder / n) not in subfolders):
                return True
    return MANIFEST in names and _manifest_covers(folder)


def check_outside(path: str | Path, folder: Path, what: str) -> None:
    """Raise :class:`UnsafeOverwriteError` when ``path`` (an input) is ``folder`` or inside it: replacing the
    output folder would delete the input. Checked before any work, so nothing is computed in vain."""
    inner, outer = os.path.realpath(path), os.path.realpath(folder)
    if inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep):
        raise UnsafeOverwriteError(f"the {what} {path} is inside the output folder {folder}: writing the output "
                                   "would replace it; choose an output folder outside it")


def check_replaceable(folder: Path) -> None:
    """Raise :class:`UnsafeOverwriteError` (deleting nothing) unless ``folder`` is absent or replaceable."""
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_symlink() or not folder.is_dir():
        raise UnsafeOverwriteError(f"refusing to write the folder {folder}: a file with that name exists; "
                                   "choose another path")
    if not replaceable(folder):
        foreign = sorted(p.name for p in folder.iterdir())
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise UnsafeOverwriteError(
            f"refusing to replace {folder}: it holds files recgen did not write ({shown}); nothing was deleted. "
            "Choose a new or empty folder, or remove it yourself")


# -- writing -------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_tree(folder: Path) -> None:
    """Flush file contents and folder entries so the rename never publishes data still in the page cache."""
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    for path in [folder, *(p for p in folder.rglob("*") if p.is_dir() and not p.is_symlink())]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False when the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_interrupted(folder: Path) -> None:
    """Remove temporary siblings left by a killed writer (dead pid, carrying the marker); restore a target
    that a killed two-step swap left aside. Called before every write; safe to call any time."""
    folder = Path(folder)
    if not folder.parent.is_dir():
        return
    pattern = re.compile(rf"^\.(tmp|old)-{re.escape(folder.name)}-(\d+)-")
    for sibling in folder.parent.iterdir():
        match = pattern.match(sibling.name)
        if not match or _pid_alive(int(match.group(2))) or not sibling.is_dir() or sibling.is_symlink():
            continue
        if not (sibling / MARKER).is_file():
            if not any(sibling.iterdir()):  # killed between mkdtemp and the marker
                sibling.rmdir()
            continue
        if match.group(1) == "old" and not folder.exists():
            os.replace(sibling, folder)
        else:
            _discard(sibling)


def _discard_quietly(folder: Path) -> None:
    try:
        _discard(folder)
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)


def _discard(folder: Path) -> None:
    """Delete a folder recgen wrote, its marker last: a kill midway leaves it recognisable for cleanup."""
    for entry in folder.iterdir():
        if entry.name == MARKER:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    (folder / MARKER).unlink(missing_ok=True)
    folder.rmdir()


def write_manifest(folder: Path) -> dict:
    """Record every top-level file's sha256 in ``manifest.json`` (the marker and the manifest excepted)."""
    files = {p.name: _sha256(p) for p in sorted(folder.iterdir())
             if p.is_file() and p.name not in (MANIFEST, MARKER)}
    (folder / MANIFEST).write_text(json.dumps({"files": files}, indent=2))
    return files


def _write_marker(folder: Path, what: str) -> None:
    (folder / MARKER).write_text(json.dumps({"written_by": f"recgen {__version__}", "what": what or folder.name}))


@contextmanager
def atomic_dir(folder: str | Path, *, manifest: bool = False, what: str = "") -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success it replaces ``folder`` in one rename.

    Refuses (before writing anything) to replace a folder that holds files recgen did not write. On any
    error the temporary folder is removed and ``folder`` is untouched; disk errors (full, read-only, no
    permission) are raised as :class:`SaveError`. ``what`` names the content in the marker file."""
    folder = Path(folder)
    tmp: Path | None = None
    try:
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            recover_interrupted(folder)
            check_replaceable(folder)
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-{os.getpid()}-", dir=folder.parent))
            _write_marker(tmp, what)
            yield tmp
            if not (tmp / MARKER).is_file():
                _write_marker(tmp, what)
            if manifest:
                write_manifest(tmp)
            _fsync_tree(tmp)
            _commit(tmp, folder)
        except OSError as exc:
            if isinstance(exc, SaveError) or exc.errno not in _DISK_ERRNOS:
                raise
            raise SaveError(exc.errno, f"could not write {folder}: {exc.strerror or exc}; "
                                       "the previous version (if any) is unchanged") from exc
    finally:
        if tmp is not None and tmp.exists():
            _discard_quietly(tmp)


def _commit(tmp: Path, folder: Path) -> None:
    """Publish ``tmp`` as ``folder``: a plain rename, or an atomic swap with the old one (then deleted)."""
    if not folder.exists():
        os.replace(tmp, folder)
        return
    check_replaceable(folder)  # it may have changed while we were writing
    if not (folder / MARKER).is_file():  # a legacy folder: mark it so a kill mid-swap or mid-delete is recoverable
        _write_marker(folder, "previous version being replaced")
    if _exchange(tmp, folder):  # tmp now holds the old version
        _discard_quietly(tmp)
        return
    old = folder.with_name(f".old-{folder.name}-{os.getpid()}-{os.urandom(4).hex()}")
    os.replace(folder, old)
    os.replace(tmp, folder)
    _discard_quietly(old)


def atomic_folder(target: str | Path, write: Callable[[Path], object], *, manifest: bool = True,
                  what: str = "") -> Path:
    """Call ``write(tmp)`` inside :func:`atomic_dir` (with a sha256 manifest by default); return ``target``."""
    with atomic_dir(target, manifest=manifest, what=what) as tmp:
        write(tmp)
    return Path(target)


def verify_folder(folder: str | Path, required: tuple[str, ...] = (), *, what: str = "folder",
                  error: type[FolderCorruptError] = FolderCorruptError) -> dict:
    """Check the manifest and every listed file's hash; raise ``error`` naming the bad file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise error(f"{what} folder {folder} does not exist")
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise error(f"{what} {folder} is incomplete: missing {MANIFEST}; refusing to use it")
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = data["files"]
        if not isinstance(files, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise error(f"{what} {folder}: {MANIFEST} is corrupted; refusing to use it") from None
    for name in required:
        if name not in files:
            raise error(f"{what} {folder}: {name} is not listed in {MANIFEST}; refusing to use it")
    for name, digest in files.items():
        path = folder / name
        if not path.is_file():
            raise error(f"{what} {folder} is missing {name}; refusing to use it")
        if _sha256(path) != digest:
            raise error(f"{what} {folder}: {name} is corrupted (sha256 mismatch); refusing to use it")
    return data

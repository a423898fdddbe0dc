"""Write a folder completely or not at all, and never replace a folder recgen did not write.

Every folder written here is filled as a hidden temporary sibling (``.tmp-<name>-<pid>-*``) and swapped
into place in one rename, so a crash, a kill or a full disk never leaves a half folder at the target
path. It carries a marker file, :data:`MARKER`, naming what wrote it and listing every entry it wrote
(``entries``, relative paths). An existing target is replaced only when every entry in it is one recgen
recorded writing (see :func:`replaceable`); anything else raises :class:`~recgen.errors.UnsafeOverwriteError`
naming the foreign entries, and nothing is deleted. With ``manifest=True`` a ``manifest.json`` holding every
file's sha256 is written last, and :func:`verify_folder` checks it.

Folders recgen fills piece by piece (a fine-tuning ``output_dir``, a ``results_dir``) use the same marker:
:func:`claim_files` records a file name just before recgen first writes it, and refuses a name that exists
without that record. :func:`check_output_folder` and :func:`check_output_files` answer "may recgen write
here?" (no foreign content, a writable place) before any long work starts.

Folders without a list of entries (written before the list existed, or not by recgen) are not replaced:
looking like a recgen layout is no proof, so the user is told to move or delete the folder. Two exceptions:
a legacy ``manifest.json`` folder (checkpoints, adapters) whose manifest lists every file with a matching
sha256, and a marked folder inside recgen's own cache (``RECGEN_CACHE_DIR``: indexes, fitted states), which
an older recgen wrote before the list existed and which is rebuilt rather than refused after an upgrade.
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
from typing import Callable, Iterable, Iterator

from .errors import FolderCorruptError, SaveError, UnsafeOverwriteError
from .paths import cache_dir
from .version import __version__

MARKER = ".recgen-folder"
MANIFEST = "manifest.json"
# sentence-transformers module folders inside a fine-tuned embedder (their files are not in the manifest)
_MODULE_FOLDER = re.compile(r"^\d+_[A-Za-z]+$")
# errors that mean "the disk refused": reported as SaveError, with the errno kept
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EIO}
_RENAME_EXCHANGE = 2


# -- may this folder be replaced? ----------------------------------------------------------------------
def read_marker(folder: Path) -> dict | None:
    """The marker's content, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def recorded_entries(folder: Path) -> set[str] | None:
    """The entries the marker says recgen wrote (relative paths), or None when nothing is recorded: no
    marker, or one written before the list existed."""
    marker = read_marker(folder)
    entries = marker.get("entries") if marker else None
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        return None
    return set(entries)


def _entries(folder: Path) -> list[str]:
    """Every entry under ``folder`` (files, folders, symlinks, not followed) as a relative path; not the marker."""
    found = []
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        found += [(rel / name).as_posix() for name in dirs + files]
    return sorted(e for e in found if e != MARKER)


def foreign_entries(folder: str | Path) -> list[str]:
    """Entries of ``folder`` that its marker does not list (all of them when nothing is recorded). A listed
    sub-folder with its own list (an index inside a saved recommender) is checked against that list."""
    folder = Path(folder)
    listed = recorded_entries(folder)
    if listed is None:
        return sorted(p.name for p in folder.iterdir())
    foreign: list[str] = []

    def walk(directory: Path, prefix: str, own: set[str], owner: Path) -> None:
        for entry in sorted(directory.iterdir()):
            rel = entry.relative_to(owner).as_posix()
            if entry.parent == owner and entry.name == MARKER:
                continue
            if rel not in own:
                foreign.append(prefix + rel)
            elif entry.is_dir() and not entry.is_symlink():
                nested = recorded_entries(entry) if (entry / MARKER).is_file() else None
                if nested is None:
                    walk(entry, prefix, own, owner)
                else:
                    walk(entry, f"{prefix}{rel}/", nested, entry)

    walk(folder, "", listed, folder)
    return foreign


def _manifest_covers(folder: Path) -> bool:
    """A legacy manifest folder (checkpoint, adapter): every top-level file is listed in its manifest with
    the sha256 it has now (proof that recgen wrote it, not a look-alike name)."""
    try:
        listed = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["files"]
        if not isinstance(listed, dict):
            return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    for entry in folder.iterdir():
        if entry.name in (MANIFEST, MARKER):
            continue
        if entry.is_dir() and not entry.is_symlink():
            if not (_MODULE_FOLDER.match(entry.name) and all(p.is_file() for p in entry.iterdir())):
                return False
        elif entry.is_symlink() or entry.name not in listed or _sha256(entry) != listed[entry.name]:
            return False
    return True


def replaceable(folder: Path) -> bool:
    """True when ``folder`` may be deleted to make room for a new version.

    The rule: the folder is empty, or its marker lists every entry in it (:func:`foreign_entries` is
    empty), or it is a legacy ``manifest.json`` folder whose manifest lists every top-level file with a
    matching sha256 (numbered sentence-transformers module folders allowed). A folder without a recorded
    list is never replaced, however much it looks like a recgen layout: a user's ``config.json`` +
    ``catalog.jsonl`` is no proof."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return False
    names = {p.name for p in folder.iterdir()}
    if not names:
        return True
    if recorded_entries(folder) is not None:
        return not foreign_entries(folder)
    if MARKER in names and _inside_cache(folder):
        return True  # recgen's own cache, marked by a recgen that wrote no list yet: rebuilt, not refused
    return MANIFEST in names and _manifest_covers(folder)


def _inside_cache(folder: Path) -> bool:
    """``folder`` lies inside recgen's cache (``RECGEN_CACHE_DIR``), where only recgen writes."""
    inner, outer = os.path.realpath(folder), os.path.realpath(cache_dir())
    return inner.startswith(outer.rstrip(os.sep) + os.sep)


def check_outside(path: str | Path, folder: Path, what: str) -> None:
    """Raise :class:`UnsafeOverwriteError` when ``path`` (an input) is ``folder`` or inside it: replacing the
    output folder would delete the input. Checked before any work, so nothing is computed in vain."""
    inner, outer = os.path.realpath(path), os.path.realpath(folder)
    if inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep):
        raise UnsafeOverwriteError(f"the {what} {path} is inside the output folder {folder}: writing the output "
                                   "would replace it; choose an output folder outside it")


def _shown(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f", ... ({len(names)} in all)" if len(names) > 5 else "")


def check_replaceable(folder: Path) -> None:
    """Raise :class:`UnsafeOverwriteError` (deleting nothing) unless ``folder`` is absent or replaceable."""
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_symlink() or not folder.is_dir():
        raise UnsafeOverwriteError(f"refusing to write the folder {folder}: a file with that name exists; "
                                   "choose another path")
    if replaceable(folder):
        return
    if recorded_entries(folder) is not None:
        raise UnsafeOverwriteError(
            f"refusing to replace {folder}: it holds entries recgen did not write ({_shown(foreign_entries(folder))});"
            " nothing was deleted. Move them out, or choose a new or empty folder")
    raise UnsafeOverwriteError(
        f"refusing to replace {folder}: it has no record of the files recgen wrote there (it was written by an "
        f"older recgen, or not by recgen: {_shown(sorted(p.name for p in folder.iterdir()))}), so recgen cannot "
        "tell its files from yours; nothing was deleted. Move or delete it yourself, or choose a new or empty folder")


# -- may recgen write here? ----------------------------------------------------------------------------
def check_place_writable(path: str | Path, what: str = "output") -> None:
    """Raise :class:`SaveError` unless a file or folder can be created at ``path``: its nearest existing
    ancestor is a folder where recgen can really create an entry (probed: root ignores permission bits,
    a read-only file system does not). Called before long work, so a fit never ends in "read-only"."""
    path = Path(path).absolute()
    place = path.parent
    while not place.exists() and place != place.parent:
        place = place.parent
    if not place.is_dir():
        raise SaveError(errno.ENOTDIR, f"cannot create the folder for the {what} {path}: {place} is not a folder")
    try:
        probe = tempfile.mkdtemp(prefix=".recgen-probe-", dir=place)
        os.rmdir(probe)
    except OSError as exc:
        raise SaveError(exc.errno or errno.EACCES, f"cannot write the {what} {path}: {place} is not writable "
                                                   f"({exc.strerror or exc}); nothing was started") from None


def check_output_folder(folder: str | Path, what: str = "output folder") -> None:
    """May recgen write the folder ``folder`` (whole, atomically)? It is absent or :func:`replaceable`, and
    its parent is writable; else :class:`UnsafeOverwriteError` or :class:`SaveError`, nothing touched."""
    folder = Path(folder)
    check_replaceable(folder)
    check_place_writable(folder, what)
    if folder.is_dir() and any(folder.iterdir()):
        check_place_writable(folder / MARKER, what)  # the previous version's entries must be deletable too


def check_output_files(folder: str | Path, names: Iterable[str], what: str = "output folder") -> None:
    """May recgen write the files ``names`` into ``folder`` (which it fills piece by piece)? Each is absent
    or recorded as recgen's in the folder's marker, and the folder can be written; nothing is created."""
    folder = Path(folder)
    if folder.exists() or folder.is_symlink():
        if not folder.is_dir():
            raise UnsafeOverwriteError(f"the {what} {folder} is not a folder; choose another path")
        listed = recorded_entries(folder) or set()
        foreign = sorted(n for n in names if ((folder / n).exists() or (folder / n).is_symlink()) and n not in listed)
        if foreign:
            raise UnsafeOverwriteError(
                f"refusing to write into the {what} {folder}: {_shown(foreign)} already exist(s) and recgen did not "
                "write it; nothing was changed. Move it out, or choose another folder")
        check_place_writable(folder / MARKER, what)
    else:
        check_place_writable(folder, what)


def claim_files(folder: str | Path, names: Iterable[str], what: str = "output folder") -> Path:
    """Just before recgen first writes ``names`` into ``folder``: check them (:func:`check_output_files`),
    then record them in the folder's marker, so a later run may rewrite them and never a user's file."""
    folder, names = Path(folder), list(names)
    check_output_files(folder, names, what)
    folder.mkdir(parents=True, exist_ok=True)
    marker = read_marker(folder) or {"written_by": f"recgen {__version__}", "what": what}
    listed = recorded_entries(folder) or set()
    if set(names) <= listed and "entries" in marker:
        return folder
    marker["entries"] = sorted(listed | set(names))
    tmp = folder / f"{MARKER}.tmp-{os.getpid()}"
    try:
        tmp.write_text(json.dumps(marker))
        os.replace(tmp, folder / MARKER)
    finally:
        tmp.unlink(missing_ok=True)
    return folder


def write_claimed(folder: str | Path, name: str, write: Callable[[Path], object],
                  what: str = "output folder") -> tuple[int, str]:
    """Write the file ``name`` of a folder recgen fills piece by piece (checkpoints): claimed with its temporary
    name (:func:`claim_files`), written by ``write(tmp_path)``, flushed and renamed into place, so a kill leaves
    the previous file or the new one, never half of one. Returns the file's size and SHA-256."""
    folder = Path(folder)
    claim_files(folder, [name, name + ".tmp"], what)
    tmp = folder / (name + ".tmp")
    write(tmp)
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, folder / name)
    return file_digest(folder / name)


def remove_claimed(folder: str | Path) -> bool:
    """Delete every file recgen recorded writing in ``folder`` (:func:`claim_files`), then the folder when nothing
    else is left in it; anything recgen did not write stays. True when the folder is gone."""
    folder = Path(folder)
    listed = recorded_entries(folder) if folder.is_dir() and not folder.is_symlink() else None
    if listed is None:
        return not folder.exists()
    for name in listed:
        if Path(name).is_absolute() or ".." in Path(name).parts:
            continue  # a marker edited to name "../x" or "/x" never reaches outside the folder
        path = folder / name
        if path.is_file() or path.is_symlink():
            path.unlink()
    if {p.name for p in folder.iterdir()} == {MARKER}:
        (folder / MARKER).unlink()
        folder.rmdir()
        return True
    return False


# -- writing -------------------------------------------------------------------------------------------
def file_digest(path: Path) -> tuple[int, str]:
    """A file's size and SHA-256, read in 4 MiB blocks (model and index files are checked against these)."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


#: Where :func:`remembered_digest` keeps what it read (inside the cache: recgen's own files).
DIGESTS_DIR = "digests"


def remembered_digest(path: Path) -> str:
    """A file's SHA-256, read once per version of the file: remembered in the cache under its resolved path with
    its size, mtime (ns) and inode, and read again when any of them changes (make's and rsync's test). Why: a
    fitted LM stage checks the ~540 MB LM folder's digest on every load; reading it took seconds per start."""
    path = Path(path).resolve()
    stat = path.stat()
    stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
    note = cache_dir() / DIGESTS_DIR / (hashlib.sha256(str(path).encode()).hexdigest()[:24] + ".json")
    try:
        saved = json.loads(note.read_text())
        if saved.get("path") == str(path) and saved.get("stamp") == stamp:
            return str(saved["sha256"])
    except (OSError, ValueError, KeyError, AttributeError):
        pass  # not read before, or a note from an interrupted write: read the file
    sha = file_digest(path)[1]
    note.parent.mkdir(parents=True, exist_ok=True)
    tmp = note.with_name(f".{note.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"path": str(path), "stamp": stamp, "sha256": sha}))
    os.replace(tmp, note)
    return sha


def _sha256(path: Path) -> str:
    return file_digest(path)[1]


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


def _write_marker(folder: Path, what: str, entries: list[str] | None = None) -> None:
    """The marker; ``entries`` (every entry recgen wrote) is added when the folder is complete."""
    data = {"written_by": f"recgen {__version__}", "what": what or folder.name}
    if entries is not None:
        data["entries"] = entries
    (folder / MARKER).write_text(json.dumps(data))


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
            if manifest:
                write_manifest(tmp)
            _write_marker(tmp, what, _entries(tmp))  # the list of what recgen wrote: only these may be replaced
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

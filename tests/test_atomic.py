"""recgen/atomic.py: folders are written completely or not at all, and a folder recgen did not write is never
replaced (issue 12 High #2: ``--out`` / ``index_dir`` / ``save`` on a folder holding user files deleted them)."""

from __future__ import annotations

import errno
import hashlib
import json
import os

import numpy as np
import pytest

from recgen import atomic
from recgen.atomic import MANIFEST, MARKER, atomic_dir, atomic_folder, replaceable, verify_folder
from recgen.errors import DataError, FolderCorruptError, RecgenError, SaveError, UnsafeOverwriteError


def user_folder(tmp_path, name="project"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "thesis.tex").write_text("months of work")
    return folder


def assert_untouched(folder):
    assert (folder / "thesis.tex").read_text() == "months of work"
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.tex"]
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_success_replaces_and_failure_keeps_old(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("v1")
    assert (target / "a.txt").read_text() == "v1"
    assert json.loads((target / MARKER).read_text())["written_by"].startswith("recgen")
    with pytest.raises(OSError):
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("half")
            raise OSError(28, "No space left on device")
    assert (target / "a.txt").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_recgen_folder_is_replaced_whole(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "old.txt").write_text("v1")
    with atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("v2")
    assert sorted(p.name for p in target.iterdir()) == [MARKER, "new.txt"]


def test_atomic_dir_refuses_a_folder_with_user_files(tmp_path):
    folder = user_folder(tmp_path)
    with pytest.raises(UnsafeOverwriteError, match="thesis.tex") as info:
        with atomic_dir(folder) as tmp:
            (tmp / "items.faiss").write_bytes(b"x")
    assert isinstance(info.value, DataError)
    assert_untouched(folder)


def test_atomic_dir_refuses_a_file_and_a_symlink(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("keep")
    with pytest.raises(UnsafeOverwriteError):
        with atomic_dir(path):
            pass
    assert path.read_text() == "keep"
    elsewhere = user_folder(tmp_path, "elsewhere")
    link = tmp_path / "link"
    link.symlink_to(elsewhere)
    with pytest.raises(UnsafeOverwriteError):
        with atomic_dir(link):
            pass
    assert (elsewhere / "thesis.tex").read_text() == "months of work" and link.is_symlink()


def test_a_user_file_added_to_a_marked_folder_while_writing_is_not_deleted(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("v1")
    with pytest.raises(UnsafeOverwriteError, match="mine.txt"):
        with atomic_dir(target) as tmp:
            (target / "mine.txt").write_text("added by the user meanwhile")
    assert (target / "mine.txt").is_file() and (target / "a.txt").read_text() == "v1"


def test_a_user_file_added_while_writing_is_not_deleted(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("v1")
    with pytest.raises(UnsafeOverwriteError):
        with atomic_dir(target) as tmp:
            (target / MARKER).unlink()
            (target / "mine.txt").write_text("added by the user meanwhile")
    assert (target / "mine.txt").is_file()


def test_empty_folder_is_filled(tmp_path):
    target = tmp_path / "empty"
    target.mkdir()
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("v1")
    assert (target / "a.txt").read_text() == "v1"


# -- the marker's list of entries (issue 22: user files in a recgen folder were deleted on rewrite) ----------
LEGACY_LOOKALIKES = [
    {"config.json": "{}", "catalog.jsonl": ""},                                       # a user's config + catalog
    {"index.json": "{}", "items.faiss": "x"},                                         # a pre-marker index
    {"config.json": "{}", "catalog.jsonl": "", "popularity.json": "[]",
     "index/index.json": "{}", "index/items.faiss": "x"},                             # a pre-marker saved recommender
    {"config.json": "{}", "tokenizer_config.json": "{}", "model.safetensors": "x"},  # a pre-marker converted LM
]


def write_files(folder, files):
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def test_the_marker_lists_every_entry_written_and_stays_readable(tmp_path):
    from recgen.atomic import foreign_entries

    target = tmp_path / "out"
    with atomic_dir(target, what="saved recommender") as tmp:
        (tmp / "a.txt").write_text("v1")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("v1")
    marker = json.loads((target / MARKER).read_text())
    assert marker["written_by"].startswith("recgen") and marker["what"] == "saved recommender"
    assert marker["entries"] == ["a.txt", "sub", "sub/b.txt"]
    assert foreign_entries(target) == []


@pytest.mark.parametrize("extra", ["my_notes.txt", "sub/my_notes.txt", "new_folder/x.txt"])
def test_a_recgen_folder_with_a_user_entry_is_refused_naming_it(tmp_path, extra):
    from recgen.atomic import foreign_entries

    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("v1")
        (tmp / "sub").mkdir()
    write_files(target, {extra: "notes"})
    foreign = "new_folder" if extra.startswith("new_") else extra  # an unlisted folder is foreign whole
    assert foreign_entries(target) == [foreign]
    assert not replaceable(target)
    with pytest.raises(UnsafeOverwriteError, match=foreign):
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("v2")
    assert (target / extra).read_text() == "notes" and (target / "a.txt").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_user_file_added_to_a_nested_recgen_folder_is_found(tmp_path):
    from recgen.atomic import foreign_entries
    from recgen.retrieval.index import IndexMeta, make_index, save_index

    target = tmp_path / "rec"
    with atomic_dir(target) as tmp:
        save_index(tmp / "index", make_index(np.eye(4, dtype="float32")), IndexMeta("e", "f", 4, 4))
    assert replaceable(target)
    (target / "index" / "notes.txt").write_text("mine")
    assert foreign_entries(target) == ["index/notes.txt"] and not replaceable(target)


@pytest.mark.parametrize("files", LEGACY_LOOKALIKES)
def test_folders_without_a_recorded_list_are_refused_not_guessed(tmp_path, files):
    target = tmp_path / "legacy"
    write_files(target, files)
    before = sorted(p.relative_to(target).as_posix() for p in target.rglob("*"))
    assert not replaceable(target)
    with pytest.raises(UnsafeOverwriteError, match="no record of the files recgen wrote"):
        with atomic_dir(target) as tmp:
            (tmp / "new.txt").write_text("v2")
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == before


def test_a_marker_from_before_the_list_is_refused(tmp_path):
    target = tmp_path / "old"
    write_files(target, {"config.json": "{}", "catalog.jsonl": "", "my_notes.txt": "notes"})
    (target / MARKER).write_text(json.dumps({"written_by": "recgen 0.1.0", "what": "saved recommender"}))
    with pytest.raises(UnsafeOverwriteError, match="Move or delete it yourself"):
        with atomic_dir(target):
            pass
    assert (target / "my_notes.txt").read_text() == "notes"


def test_legacy_manifest_folder_is_replaceable_only_when_every_hash_matches(tmp_path):
    import hashlib

    target = tmp_path / "step-000002"
    target.mkdir()
    (target / "optimizer.json").write_text("{}")
    digest = hashlib.sha256(b"{}").hexdigest()
    (target / MANIFEST).write_text(json.dumps({"files": {"optimizer.json": digest}}))
    assert replaceable(target)
    (target / MANIFEST).write_text(json.dumps({"files": {"optimizer.json": "0" * 64}}))
    assert not replaceable(target)  # a look-alike manifest is no proof
    (target / MANIFEST).write_text(json.dumps({"files": {"optimizer.json": digest}}))
    (target / "notes.md").write_text("mine")
    assert not replaceable(target)


def test_a_folder_with_only_config_json_is_not_taken_for_a_recgen_folder(tmp_path):
    target = tmp_path / "project"
    target.mkdir()
    (target / "config.json").write_text("{}")
    assert not replaceable(target)


@pytest.mark.parametrize("extra", ["thesis.tex", "index/thesis.tex"])
def test_legacy_layout_plus_a_user_file_is_refused(tmp_path, extra):
    target = tmp_path / "legacy"
    (target / "index").mkdir(parents=True)
    for name in ("config.json", "catalog.jsonl", "index/index.json", "index/items.faiss", extra):
        (target / name).write_text("x")
    assert not replaceable(target)
    with pytest.raises(UnsafeOverwriteError):
        with atomic_dir(target):
            pass
    assert (target / extra).read_text() == "x"


def test_save_index_keeps_a_folder_with_user_files(tmp_path):
    from recgen.retrieval.index import IndexMeta, make_index, save_index

    folder = user_folder(tmp_path)
    vectors = np.eye(4, dtype="float32")
    with pytest.raises(UnsafeOverwriteError):
        save_index(folder, make_index(vectors), IndexMeta("e", "f", 4, 4))
    assert_untouched(folder)
    save_index(tmp_path / "idx", make_index(vectors), IndexMeta("e", "f", 4, 4))  # then a fresh one works
    save_index(tmp_path / "idx", make_index(vectors), IndexMeta("e", "f", 4, 4))  # and is replaceable


def test_recommender_save_and_index_dir_keep_a_folder_with_user_files(tmp_path, dataset):
    from recgen import RecgenConfig, Recommender

    folder = user_folder(tmp_path)
    with pytest.raises(RecgenError):
        Recommender.from_dataset(dataset, RecgenConfig(), index_dir=folder)
    assert_untouched(folder)
    rec = Recommender.from_dataset(dataset, RecgenConfig(), index_dir=tmp_path / "idx")
    with pytest.raises(UnsafeOverwriteError):
        rec.save(folder)
    assert_untouched(folder)
    rec.save(tmp_path / "rec")
    rec.save(tmp_path / "rec")  # its own folder is replaced
    assert Recommender.load(tmp_path / "rec").catalog.ids == dataset.catalog.ids


def test_cli_index_out_keeps_a_folder_with_user_files(tmp_path, dataset):
    from conftest import write_generic_dataset
    from typer.testing import CliRunner

    from recgen.cli.main import app

    data = write_generic_dataset(dataset, tmp_path / "data") or tmp_path / "data"
    folder = user_folder(tmp_path)
    result = CliRunner().invoke(app, ["index", "--dataset", str(data), "--out", str(folder)])
    assert result.exit_code == 2, result.output
    assert "refusing to replace" in result.output
    assert_untouched(folder)


# -- manifest folders (checkpoints, adapters) -----------------------------------------------------------------
def test_atomic_folder_manifest_is_written_last_and_verified(tmp_path):
    target = atomic_folder(tmp_path / "ckpt", lambda tmp: (tmp / "a.bin").write_bytes(b"abc"))
    manifest = verify_folder(target, ("a.bin",))
    assert set(manifest["files"]) == {"a.bin"}  # the marker is not part of the content
    (target / "a.bin").write_bytes(b"abd")
    with pytest.raises(FolderCorruptError, match="a.bin"):
        verify_folder(target)
    (target / MANIFEST).write_text("{not json")
    with pytest.raises(FolderCorruptError, match=MANIFEST):
        verify_folder(target)


def test_full_disk_is_a_clear_save_error_and_keeps_the_old_folder(tmp_path):
    target = atomic_folder(tmp_path / "adapter", lambda tmp: (tmp / "a.txt").write_text("ok"))

    def full_disk(tmp):
        (tmp / "a.txt").write_text("ha")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(SaveError, match="No space left on device") as info:
        atomic_folder(target, full_disk)
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    assert "unchanged" in str(info.value)
    assert (target / "a.txt").read_text() == "ok"
    verify_folder(target)
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_stale_temporary_of_a_dead_writer_is_removed(tmp_path):
    dead = 2 ** 22 + 12345  # above the default pid_max: no such process
    stale = tmp_path / f".tmp-out-{dead}-abc"
    stale.mkdir()
    (stale / MARKER).write_text("{}")
    (stale / "half.bin").write_bytes(b"x")
    foreign = tmp_path / f".tmp-out-{dead}-mine"  # no marker and not empty: not provably ours, kept
    foreign.mkdir()
    (foreign / "mine.txt").write_text("x")
    empty = tmp_path / f".tmp-out-{dead}-new"  # killed between mkdtemp and the marker: removed
    empty.mkdir()
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "a.txt").write_text("v1")
    assert not stale.exists() and not empty.exists() and (foreign / "mine.txt").exists()


def test_read_only_disk_is_a_save_error(tmp_path, monkeypatch):
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    with pytest.raises(SaveError, match="Read-only"):
        with atomic_dir(tmp_path / "out"):
            pass


# -- entry points: refit, save(), index --add, fit -o (issue 22) -------------------------------------------------
@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    """The CLI with its cache and state in ``tmp_path``, and a fit that must never start."""
    from recgen.cli import fit_cmd

    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("RECGEN_STATE_DIR", str(tmp_path / "state"))

    def no_fit(*args, **kwargs):
        raise AssertionError("the fit started although its output folder is refused")

    monkeypatch.setattr(fit_cmd, "fit_for_serving", no_fit)


def invoke(*args):
    from typer.testing import CliRunner

    from recgen.cli.main import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    result.said = " ".join(result.output.split())  # rich wraps long lines
    return result


def test_refit_and_save_keep_a_user_file_in_a_saved_recommender(tmp_path, dataset, synthetic_dataset_dir, cli_env):
    from recgen import RecgenConfig, Recommender

    rec = Recommender.from_dataset(dataset, RecgenConfig(), index_dir=tmp_path / "idx")
    folder = tmp_path / "F"
    rec.save(folder)
    (folder / "my_notes.txt").write_text("notes")
    result = invoke("refit", "-d", synthetic_dataset_dir, "-o", folder)  # the README's cron pattern
    assert result.exit_code == 2 and "my_notes.txt" in result.said, result.output
    with pytest.raises(UnsafeOverwriteError, match="my_notes.txt"):
        rec.save(folder)
    assert (folder / "my_notes.txt").read_text() == "notes"
    assert Recommender.load(folder).catalog.ids == dataset.catalog.ids  # recgen's own files untouched too


def test_a_folder_that_merely_looks_like_a_saved_recommender_is_kept(tmp_path, dataset, synthetic_dataset_dir,
                                                                      cli_env):
    from recgen import RecgenConfig, Recommender

    folder = tmp_path / "mine"
    write_files(folder, {"config.json": '{"note": "my settings"}', "catalog.jsonl": '{"id": "my row"}\n'})
    before = {p.name: p.read_text() for p in folder.iterdir()}
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"id": "new1", "title": "New"}) + "\n")
    for args in (["fit", "-d", synthetic_dataset_dir, "-o", folder],
                 ["index", "-d", synthetic_dataset_dir, "--add", items, "--out", folder]):
        result = invoke(*args)
        assert result.exit_code == 2 and "no record of the files recgen wrote" in result.said, result.output
    with pytest.raises(UnsafeOverwriteError):
        Recommender.from_dataset(dataset, RecgenConfig(), index_dir=tmp_path / "idx").save(folder)
    assert {p.name: p.read_text() for p in folder.iterdir()} == before


@pytest.mark.parametrize("where", ["under a file", "read-only place"])
def test_fit_to_an_unwritable_place_fails_before_fitting(tmp_path, synthetic_dataset_dir, cli_env, where):
    if where == "under a file":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "fitted"
    else:
        from pathlib import Path

        out = Path("/proc/recgen-no-such-dir/fitted")  # root ignores permission bits; /proc refuses even root
    result = invoke("fit", "-d", synthetic_dataset_dir, "-o", out)
    assert result.exit_code == 2 and "cannot" in result.said, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_marker_from_before_the_list_inside_recgens_cache_is_rebuilt(tmp_path, monkeypatch):
    """Cached indexes and fitted states written by an older recgen (marker, no list) are rebuilt after an
    upgrade, not refused: only recgen writes inside its cache. The same folder outside the cache is refused."""
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    for root, expected in ((tmp_path / "cache" / "indexes", True), (tmp_path / "elsewhere", False)):
        old = root / "ml-100k-abc"
        old.mkdir(parents=True)
        (old / "index.faiss").write_bytes(b"x")
        (old / MARKER).write_text(json.dumps({"written_by": "recgen 0.9"}))
        assert replaceable(old) is expected


def test_a_remembered_digest_is_read_again_when_the_file_changes(tmp_path, monkeypatch):
    """The digest is the file's real SHA-256; an unchanged file is not read again (the note answers); a rewrite
    of the same size is found by its mtime and read again; a corrupt note is ignored, never trusted."""
    monkeypatch.setenv("RECGEN_CACHE_DIR", str(tmp_path / "cache"))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 1000)
    assert atomic.remembered_digest(weights) == hashlib.sha256(b"a" * 1000).hexdigest()
    reads = []
    monkeypatch.setattr(atomic, "file_digest", lambda path: reads.append(path) or (0, "read"))
    assert atomic.remembered_digest(weights) == hashlib.sha256(b"a" * 1000).hexdigest() and reads == []
    weights.write_bytes(b"b" * 1000)  # same size, other bytes
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert atomic.remembered_digest(weights) == "read" and len(reads) == 1
    for note in (tmp_path / "cache" / atomic.DIGESTS_DIR).iterdir():
        note.write_text("{not json")
    assert atomic.remembered_digest(weights) == "read" and len(reads) == 2

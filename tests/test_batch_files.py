"""The files of a batch job: input, output, errors file and the output's lock are four different files (by path,
symlink or hard link) or the job stops before writing anything; outputs and errors files recgen did not write are
never touched; an unwritable output is a clear error before any work; one job at a time per output."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from recgen.batch import results as bres
from recgen.batch.files import OutputLock, OutputLockedError, lock_path, same_file
from recgen.batch.runner import run_batch
from recgen.errors import DataError, RecgenError

INPUT = '{"custom_id": "a", "history": ["1", "2"], "k": 2, "reasons": false}\n{broken\n'


class Untouchable:
    """A recommender that fails the test if the job gets as far as using it."""

    def __getattr__(self, name):
        raise AssertionError(f"the job used the recommender ({name}) before rejecting its files")


def _run(src, out, errors=None, **kw):
    return run_batch(src, out, errors_path=errors, recommender=Untouchable(), loaded_dataset=None,
                     show_progress=False, **kw)


@pytest.fixture
def src(tmp_path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text(INPUT, encoding="utf-8")
    return path


def _snapshot(folder: Path) -> dict:
    return {p.name: (p.read_bytes() if p.is_file() else None) for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("case", ["errors=input", "output=input", "errors=output", "errors=lock"])
def test_same_path_twice_is_refused_before_writing(tmp_path, src, case):
    out = tmp_path / "out.jsonl"
    out.write_text('{"id":"batch_req_1","custom_id":"old","response":{},"error":null}\n', encoding="utf-8")
    errors = {"errors=input": src, "output=input": None, "errors=output": out, "errors=lock": lock_path(out)}[case]
    target = src if case == "output=input" else out
    before = _snapshot(tmp_path)
    with pytest.raises(DataError, match="is the same file as"):
        _run(src, target, errors)
    assert _snapshot(tmp_path) == before  # the input and the earlier results are intact, nothing created


def test_input_that_is_the_default_errors_file_is_refused(tmp_path):
    src = tmp_path / "out.errors.jsonl"  # the default errors path of -o out.jsonl
    src.write_text(INPUT, encoding="utf-8")
    with pytest.raises(DataError, match="same file"):
        _run(src, tmp_path / "out.jsonl")
    assert src.read_text(encoding="utf-8") == INPUT


def test_input_that_is_the_lock_file_is_refused(tmp_path):
    src = tmp_path / "out.jsonl.lock"
    src.write_text(INPUT, encoding="utf-8")
    with pytest.raises(DataError, match="same file"):
        _run(src, tmp_path / "out.jsonl")
    assert src.read_text(encoding="utf-8") == INPUT


@pytest.mark.parametrize("role", ["errors", "output"])
@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_links_to_the_input_are_the_input(tmp_path, src, role, link):
    alias = tmp_path / "alias.jsonl"
    (os.symlink if link == "symlink" else os.link)(src, alias)
    assert same_file(alias, src)
    with pytest.raises(DataError, match="same file"):
        if role == "errors":
            _run(src, tmp_path / "out.jsonl", alias)
        else:
            _run(src, alias)
    assert src.read_text(encoding="utf-8") == INPUT
    assert not (tmp_path / "out.jsonl").exists()


def test_symlinked_folder_to_the_output(tmp_path, src):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "via").symlink_to(real)
    out = real / "out.jsonl"
    out.write_text('{"id":"batch_req_1","custom_id":"old","response":{},"error":null}\n', encoding="utf-8")
    with pytest.raises(DataError, match="same file"):
        _run(src, out, tmp_path / "via" / "out.jsonl")
    assert json.loads(out.read_text())["custom_id"] == "old"


def test_cli_exit_code_2_for_errors_equal_input(tmp_path, src):
    from typer.testing import CliRunner

    from recgen.cli.main import app

    result = CliRunner().invoke(app, ["batch", "-i", str(src), "-o", str(tmp_path / "out.jsonl"), "--errors", str(src)])
    assert result.exit_code == 2, result.output
    assert "same file" in result.output and "Traceback" not in result.output
    assert src.read_text(encoding="utf-8") == INPUT


# -- files recgen did not write ------------------------------------------------------------------
def test_foreign_output_is_never_appended_to_or_truncated(tmp_path, src):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\nlast line without newline", encoding="utf-8")
    with pytest.raises(DataError, match="not a recgen batch result"):
        _run(src, notes)
    assert notes.read_text(encoding="utf-8") == "my notes\nlast line without newline"
    tail_only = tmp_path / "tail.txt"
    tail_only.write_text("no newline at all", encoding="utf-8")
    with pytest.raises(DataError, match="not a recgen batch result"):
        _run(src, tail_only)
    assert tail_only.read_text(encoding="utf-8") == "no newline at all"


def test_foreign_errors_file_is_never_overwritten(tmp_path, src):
    precious = tmp_path / "precious.jsonl"
    precious.write_text('{"name": "not an error record"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="not a recgen errors file"):
        _run(src, tmp_path / "out.jsonl", precious)
    assert precious.read_text(encoding="utf-8") == '{"name": "not an error record"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "precious.jsonl"]


def test_errors_file_written_through_a_symlink_keeps_the_link(tmp_path, dataset, tiny_recommender):
    src = tmp_path / "in.jsonl"
    src.write_text(INPUT, encoding="utf-8")
    real = tmp_path / "real-errors.jsonl"
    link = tmp_path / "errors.jsonl"
    link.symlink_to(real)
    run_batch(src, tmp_path / "out.jsonl", errors_path=link, recommender=tiny_recommender, loaded_dataset=dataset,
              show_progress=False)
    assert link.is_symlink() and [json.loads(x)["line"] for x in real.read_text().splitlines()] == [2]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# -- unwritable outputs: a clear error before any work --------------------------------------------
def test_output_that_is_a_folder(tmp_path, src):
    with pytest.raises(DataError, match="is a folder"):
        _run(src, tmp_path)
    with pytest.raises(DataError, match="is a folder"):
        _run(src, tmp_path / "out.jsonl", tmp_path)


def test_output_under_a_file_or_in_a_read_only_place(tmp_path, src):
    with pytest.raises(DataError, match="cannot create the folder"):
        _run(src, src / "deeper" / "out.jsonl")
    with pytest.raises(DataError, match="cannot create|not writable"):
        _run(src, Path("/proc/recgen-no-such-dir/out.jsonl"))
    with pytest.raises(DataError, match="cannot create the folder"):
        _run(src, tmp_path / "out.jsonl", src / "errors.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]  # nothing created on the way


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_folder_and_file(tmp_path, src):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(DataError, match="not writable"):
            _run(src, ro / "out.jsonl")
    finally:
        ro.chmod(0o755)
    out = tmp_path / "out.jsonl"
    out.write_text("", encoding="utf-8")
    out.chmod(0o444)
    with pytest.raises(DataError, match="not writable"):
        _run(src, out)


def test_cli_output_folder_is_exit_2_without_traceback(tmp_path, src):
    from typer.testing import CliRunner

    from recgen.cli.main import app

    result = CliRunner().invoke(app, ["batch", "-i", str(src), "-o", str(tmp_path)])
    assert result.exit_code == 2 and "is a folder" in result.output, result.output


# -- one job per output ---------------------------------------------------------------------------
def test_lock_is_exclusive_and_released(tmp_path):
    out = tmp_path / "out.jsonl"
    with OutputLock(out):
        with pytest.raises(OutputLockedError, match=f"another recgen batch is writing {out}"):
            with OutputLock(out):
                pass
    with OutputLock(out):  # released on exit
        pass
    assert lock_path(out).exists() and isinstance(OutputLockedError("x"), RecgenError)


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_lock_holds_through_links_to_the_output(tmp_path, link):
    out = tmp_path / "out.jsonl"
    out.write_text("", encoding="utf-8")
    alias = tmp_path / "elsewhere" / "alias.jsonl"
    alias.parent.mkdir()
    (os.symlink if link == "symlink" else os.link)(out, alias)
    with OutputLock(out):
        with pytest.raises(OutputLockedError, match="another recgen batch is writing"):
            with OutputLock(alias):
                pass


def test_second_runner_on_the_same_output_is_refused(tmp_path, dataset, tiny_recommender):
    rows = [{"custom_id": f"r{n}", "user": user, "k": 2, "reasons": False} for n, user in enumerate(dataset.users[:4])]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    refused = []

    def start_a_second_job(done: int) -> None:
        if done == 1:  # the first job is mid-run and holds the lock
            with pytest.raises(OutputLockedError, match="another recgen batch is writing"):
                run_batch(src, out, recommender=tiny_recommender, loaded_dataset=dataset, batch_size=1,
                          show_progress=False)
            refused.append(done)

    run_batch(src, out, recommender=tiny_recommender, loaded_dataset=dataset, batch_size=1, show_progress=False,
              on_batch=start_a_second_job)
    assert refused == [1]
    ids = [json.loads(line)["custom_id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == sorted(r["custom_id"] for r in rows)  # every id once


def test_a_full_disk_mid_job_is_a_clear_error_and_resumable(tmp_path, dataset, tiny_recommender, monkeypatch):
    rows = [{"custom_id": f"r{n}", "user": user, "k": 2, "reasons": False} for n, user in enumerate(dataset.users[:3])]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    real_write = bres.ResultWriter.write
    calls = []

    def write_then_fill_the_disk(self, lines):
        calls.append(len(lines))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_write(self, lines)

    monkeypatch.setattr(bres.ResultWriter, "write", write_then_fill_the_disk)
    with pytest.raises(DataError, match="No space left on device.*run the same command again to resume"):
        run_batch(src, out, recommender=tiny_recommender, loaded_dataset=dataset, batch_size=1, show_progress=False)
    monkeypatch.setattr(bres.ResultWriter, "write", real_write)
    again = run_batch(src, out, recommender=tiny_recommender, loaded_dataset=dataset, batch_size=1,
                      show_progress=False)
    assert (again.already_done, again.processed) == (1, 2)
    assert sorted(json.loads(x)["custom_id"] for x in out.read_text().splitlines()) == ["r0", "r1", "r2"]


# -- a refused job leaves nothing behind (issue 22) --------------------------------------------------------------
def test_a_job_refused_for_a_foreign_output_leaves_no_lock(src, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("my own notes, not results\n", encoding="utf-8")
    with pytest.raises(DataError, match="not a recgen batch result"):
        _run(src, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]
    assert out.read_text(encoding="utf-8") == "my own notes, not results\n"


def test_a_job_refused_through_a_hard_link_to_a_locked_output_leaves_nothing(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("", encoding="utf-8")
    alias = tmp_path / "alias.jsonl"
    os.link(out, alias)
    with OutputLock(out):
        with pytest.raises(OutputLockedError):
            with OutputLock(alias):
                pass
        assert not lock_path(alias).exists()  # the refused job's own lock file is gone
        assert lock_path(out).exists()  # the running job's lock is never touched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alias.jsonl", "out.jsonl", "out.jsonl.lock"]


def test_a_job_that_fails_inside_its_lock_removes_the_empty_output_it_created(tmp_path):
    out = tmp_path / "new" / "out.jsonl"
    with pytest.raises(DataError):
        with OutputLock(out):
            raise DataError("refused after locking")
    assert list((tmp_path / "new").iterdir()) == []
    with OutputLock(out):  # a finished job keeps its output and lock (the next job reuses the lock)
        pass
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["out.jsonl", "out.jsonl.lock"]


def test_a_lock_file_deleted_by_its_holder_is_not_trusted(tmp_path, monkeypatch):
    import recgen.batch.files as files

    out = tmp_path / "out.jsonl"
    lock = OutputLock(out)
    opened = []
    real_open = os.open

    def open_then_vanish(path, flags, *mode):
        fd = real_open(path, flags, *mode)
        if str(path).endswith(".lock") and not opened:  # the holder deletes it between our open and our flock
            opened.append(fd)
            os.unlink(path)
        return fd

    monkeypatch.setattr(files.os, "open", open_then_vanish)
    with lock:
        assert files._same_inode(lock._fds[0], lock.path)  # it locked the file the path names now
    assert opened

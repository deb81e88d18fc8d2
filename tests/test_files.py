import os

import pytest

from tgpipe.errors import InputError
from tgpipe.files import atomic_open, atomic_write, atomic_write_all, check_writable


def test_written_file_has_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "out.txt", "hello")
    finally:
        os.umask(old)
    assert path.read_text() == "hello"
    assert path.stat().st_mode & 0o777 == 0o644


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(path) as fh:
            fh.write("half")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_unwritable_place_is_one_line(tmp_path):
    with pytest.raises(InputError, match="cannot write .*no folder .*create it or choose another"):
        atomic_write(tmp_path / "missing" / "out.txt", "x")
    with pytest.raises(InputError, match="it is a folder; give a file name"):
        atomic_write(tmp_path, "x")


def test_check_writable_tries_for_real_and_leaves_nothing(tmp_path):
    assert check_writable(tmp_path / "out.txt") == tmp_path / "out.txt"
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="file is not a folder"):
        check_writable(tmp_path / "file" / "out.txt")
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_write_all_is_all_or_none(tmp_path):
    (tmp_path / "a").write_text("old")
    with pytest.raises(InputError, match="no folder"):
        atomic_write_all([(tmp_path / "a", "new"), (tmp_path / "no" / "b", "b")])
    assert [p.name for p in tmp_path.iterdir()] == ["a"] and (tmp_path / "a").read_text() == "old"
    assert (
        atomic_write_all([(tmp_path / "a", "new"), (tmp_path / "b", b"b")])[1].read_bytes() == b"b"
    )
    assert (tmp_path / "a").read_text() == "new"

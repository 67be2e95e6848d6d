"""Atomic output: complete or absent, never half-written; modes as a plain open() gives."""

from __future__ import annotations

import os
import stat

import pytest

from royalty.atomic import atomic_path, write_text


def test_written_file_has_the_umask_mode(tmp_path):
    dest = tmp_path / "out.txt"
    write_text(dest, "hello\n")
    plain = tmp_path / "plain.txt"
    plain.write_text("hello\n")
    assert stat.S_IMODE(dest.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    dest = tmp_path / "out.txt"
    dest.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer died")
    assert dest.read_text() == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["out.txt"]

"""Atomic writes: never a half-written file, never a lost earlier one."""

from __future__ import annotations

import os
import stat

import pytest

from easytrain.fsutil import atomic_path, atomic_write_text


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "x.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "y.txt", "data")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "y.txt").stat().st_mode) == 0o644

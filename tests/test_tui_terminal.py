"""The wizard as a person meets it: in a real terminal (tmux), and refusing to run without one."""

from __future__ import annotations

import os
import pty
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from easytrain import questions as Q
from tests._tmux import Tmux
from tests._tui_helpers import make_workdir

PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[1]


def default_flow_after_image_folder() -> list[Q.Question]:
    values = Q.applicable_values({"base_model": Q.BUILTIN_TINY, "architecture": "sd1", "image_folder": "images"})
    order = [q.id for q in Q.BASIC]
    later = order[order.index("image_folder") + 1:]
    return [Q.BY_ID[key] for key in later if Q.BY_ID[key].applies(values)] + [Q.ADVANCED_GATE]


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_wizard_in_tmux_saves_a_file_that_check_accepts(tmp_path):
    work = make_workdir(tmp_path / "work")
    session = Tmux(f"{shlex.quote(PYTHON)} -m easytrain", work)
    try:
        session.wait_for("What do you want to do?")
        session.keys("Enter")
        session.wait_for("Which base model")
        session.type("builtin:tiny")
        session.wait_for("Detected: SD1.x")
        session.keys("Enter")
        session.wait_for("Where is your image folder?")
        session.type("ima")
        session.keys("Tab")
        session.wait_for("images/")
        session.keys("Enter")
        screen = session.wait_for("Found in images")
        assert "5_shapes" in screen
        session.keys("Enter")
        session.wait_for("Suggested repeats and epochs")
        session.keys("Enter")  # keep mine
        screen = session.wait_for("Top tags")
        assert "16  shapes" in screen
        session.keys("Enter")  # skip the captions step
        for q in default_flow_after_image_folder():
            screen = session.wait_for(q.prompt)
            assert "= 80 / batch 2 = 40 steps x 10 epochs = 400 steps" in screen  # the steps preview
            session.keys("Enter")
        session.wait_for("Enter on a row changes it")
        session.keys("s")
        session.wait_for(Q.SAVE_AS.prompt)
        session.keys("Enter")
        session.wait_for("Saved the answers to answers/shapes.json")
        session.keys("e")
        screen = session.wait_for("EXIT=")
    finally:
        session.close()
    assert "EXIT=0" in screen and "easytrain train answers/shapes.json" in screen
    saved = work / "answers" / "shapes.json"
    assert saved.is_file()
    check = subprocess.run([PYTHON, "-m", "easytrain", "check", str(saved)], cwd=work, capture_output=True,
                           text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr


NO_TTY_MESSAGE = "needs an interactive terminal"


def test_without_a_terminal_the_wizard_exits_at_once(tmp_path):
    started = time.monotonic()
    out = subprocess.run([PYTHON, "-m", "easytrain"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         cwd=tmp_path, timeout=30)
    assert time.monotonic() - started < 10
    assert out.returncode == 2
    assert NO_TTY_MESSAGE in out.stderr and "easytrain train FILE" in out.stderr


def test_a_terminal_on_stdin_only_is_not_enough(tmp_path):
    """stdout piped (e.g. into tee or a log) with a terminal on stdin: a Textual app would hang."""
    controller, terminal = pty.openpty()
    try:
        out = subprocess.run([PYTHON, "-m", "easytrain"], stdin=terminal, capture_output=True, text=True,
                             cwd=tmp_path, timeout=30)
    finally:
        os.close(controller)
        os.close(terminal)
    assert out.returncode == 2 and NO_TTY_MESSAGE in out.stderr

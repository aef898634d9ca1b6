"""The wizard as a person meets it: in a real terminal (tmux), and refusing to run without one."""

from __future__ import annotations

import os
import pty
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from easytrain import questions as Q
from tests._tui_helpers import make_workdir

PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[1]


class Tmux:
    """A detached session on a private tmux server (its own socket), killed at the end."""

    def __init__(self, command: str, cwd: Path, width: int = 100, height: int = 30) -> None:
        self.socket = f"easytrain-test-{uuid.uuid4().hex[:10]}"
        env = {"TERM": "xterm-256color", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO),
               "EASYTRAIN_CACHE": os.environ.get("EASYTRAIN_CACHE", "")}
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        self.tmux("new-session", "-d", "-s", "wizard", "-x", str(width), "-y", str(height), "-c", str(cwd),
                  f"env {exports} {command}; echo EXIT=$?; sleep 60")

    def tmux(self, *args: str) -> str:
        out = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=20)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "wizard")

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        end = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if text in screen:
                return screen
            if time.monotonic() > end:
                raise AssertionError(f"{text!r} did not appear; the screen shows:\n{screen}")
            time.sleep(0.05)

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "wizard", *keys)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "wizard", "-l", text)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=20)


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
        screen = session.wait_for("Top tags")
        assert "16  shapes" in screen
        session.keys("Enter")  # skip the captions step
        for q in default_flow_after_image_folder():
            screen = session.wait_for(q.prompt)
            assert "per epoch / batch 2 = 40 steps x 10 epochs = 400" in screen  # the steps preview
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

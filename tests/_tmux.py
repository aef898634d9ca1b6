"""A detached tmux session for tests that need a real terminal (the wizard, the live view)."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
import uuid
from pathlib import Path

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

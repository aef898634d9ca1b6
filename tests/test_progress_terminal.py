"""The live view in a real terminal (tmux at 80x24): Ctrl+C leaves no stray copy of the panel behind."""

from __future__ import annotations

import shlex
import shutil
import sys
import textwrap

import pytest

from tests._tmux import Tmux

LIVE_RUN = textwrap.dedent("""
    import time
    from rich.console import Console
    from easytrain.commands.stop_signals import stop_on_signals
    from easytrain.progress import RichView
    from easytrain.train import events as ev
    from easytrain.train.control import TrainControl
    from tests._progress_helpers import run_started, step

    control = TrainControl()
    with RichView(Console()) as view, stop_on_signals(control, say=view.note):
        view(run_started(total_steps=100000, epochs=2000))
        i = 0
        while not control.stop_requested:
            i += 1
            view(step(i))
            time.sleep(0.05)
        view(ev.CheckpointSaved("/out/run/mylora-step.safetensors", (i - 1) // 50 + 1, i, epoch_finished=False))
        view(ev.RunStopped(i, "Ctrl+C"))
    print("LIVE-DONE")
""")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_ctrl_c_in_the_live_view_leaves_one_panel_in_the_scrollback(tmp_path):
    script = tmp_path / "live.py"
    script.write_text(LIVE_RUN)
    session = Tmux(f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}", tmp_path, width=80, height=24)
    try:
        session.wait_for("ETA")
        session.keys("C-c")
        session.wait_for("LIVE-DONE")
        history = session.tmux("capture-pane", "-p", "-S", "-", "-t", "wizard")
    finally:
        session.close()
    assert history.count("easytrain · mylora") == 1, history
    assert "Ctrl+C: finishing this step, then saving" in history
    assert "saved at step" in history and "in progress)" in history
    assert "Traceback" not in history

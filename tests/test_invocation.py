"""Printed commands run as typed: the launcher's form, `easytrain` on PATH, or `python -m easytrain`."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path = REPO, launcher: bool, path: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("EASYTRAIN_LAUNCHER", None)
    if launcher:  # what wizard.py sets before it starts easytrain in .venv
        env["EASYTRAIN_LAUNCHER"] = json.dumps([sys.executable, str(REPO / "wizard.py")])
    if path is not None:
        env["PATH"] = path
    return subprocess.run([sys.executable, "-m", "easytrain", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL, env=env)


def test_check_from_the_launcher_prints_the_launcher_command_and_that_command_runs():
    out = run("check", "answers/demo.json", launcher=True)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip().splitlines()[-1]
    python = Path(sys.executable).name  # on PATH (conftest), so its bare name
    assert line == f"OK: ready to train with `{python} wizard.py train answers/demo.json`"


def test_the_launcher_path_is_relative_only_inside_the_working_folder(tmp_path):
    out = run("check", str(REPO / "answers" / "demo.json"), cwd=tmp_path, launcher=True)
    assert out.returncode == 0, out.stderr
    assert f" {REPO / 'wizard.py'} train {REPO / 'answers' / 'demo.json'}`" in out.stdout


def test_without_the_launcher_the_installed_command_or_python_m():
    on_path = run("check", "answers/demo.json", launcher=False)
    assert "ready to train with `easytrain train answers/demo.json`" in on_path.stdout
    bare = run("check", "answers/demo.json", launcher=False, path="/nonexistent")
    assert f"ready to train with `{sys.executable} -m easytrain train answers/demo.json`" in bare.stdout


def test_messages_with_commands_follow_the_launcher(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema_version": 1, "netwrok_dim": 4}))
    out = run("check", str(bad), launcher=True)
    assert out.returncode == 2 and "wizard.py questions` for the keys" in out.stderr
    out = run(launcher=True)  # the wizard without a terminal
    assert out.returncode == 2 and "wizard.py train FILE`" in out.stderr


def test_wizard_py_tells_easytrain_how_it_was_started(monkeypatch):
    spec = importlib.util.spec_from_file_location("launcher_under_test", REPO / "wizard.py")
    launcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launcher)
    started = {}

    def execv(program, argv):
        started.update(program=program, argv=argv, env=dict(os.environ))
        raise SystemExit(0)

    environment = {k: v for k, v in os.environ.items() if k != "EASYTRAIN_LAUNCHER"}
    monkeypatch.setattr(launcher.os, "environ", environment)  # what run_in_venv sets stays in this test
    monkeypatch.setattr(launcher.os, "execv", execv)
    monkeypatch.setattr(launcher.subprocess, "call", lambda command: execv(command[0], command))
    with pytest.raises(SystemExit):
        launcher.run_in_venv(["-m", "easytrain", "check", "x.json"])
    assert json.loads(started["env"]["EASYTRAIN_LAUNCHER"]) == [sys.executable, str(REPO / "wizard.py")]
    assert started["argv"][1:] == ["-m", "easytrain", "check", "x.json"]


def test_set_up_keeps_pip_output_in_a_log_and_shows_it_on_failure(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("launcher_log_test", REPO / "wizard.py")
    launcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launcher)
    chatty = [sys.executable, "-c", "print('Collecting torch'); print('  Downloading torch.whl'); print('done')"]
    log = tmp_path / "install.log"
    assert launcher.run_logged(chatty, log)
    assert capsys.readouterr().out == "  Collecting torch\n"   # not a terminal: pip's steps as lines, 1 per 5 s
    assert log.read_text().splitlines() == ["Collecting torch", "  Downloading torch.whl", "done"]
    failing = [sys.executable, "-c", "import sys; print('ERROR: No matching distribution for torch'); sys.exit(1)"]
    assert not launcher.run_logged(failing, log)
    assert "No matching distribution" in capsys.readouterr().err        # the reason is on screen too
    assert "ERROR: No matching distribution for torch" in log.read_text()

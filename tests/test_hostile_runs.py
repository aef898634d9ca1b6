"""Issue 28, runs: nothing saved is lost (a finished run resumed, two runs at once, two names in one
folder), a full disk's advice, the exit codes of several jobs, and the wizard in a tiny terminal."""

from __future__ import annotations

import shlex
import shutil
import sys
import time
from pathlib import Path

import pytest

from _robust_helpers import run_cli, start_cli, wait_for, write_answers
from easytrain.cli import main as cli_main
from easytrain.invocation import command


def run(args, capsys) -> tuple[int, str, str]:
    code = cli_main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "unexpected error" not in err, err
    return code, out, err


# ---- 1: --resume after the run finished -----------------------------------------------------------


def test_resume_after_a_finished_run_says_there_is_nothing_to_resume_and_keeps_the_lora(tmp_path, capsys):
    path = write_answers(tmp_path, epochs=2, save_state=True)
    assert run(["train", path, "--plain"], capsys)[0] == 0
    final = tmp_path / "out" / "run.safetensors"
    before = final.read_bytes()
    code, _, err = run(["train", path, "--resume", "--plain"], capsys)
    assert code == 2 and "finished" in err and "nothing to resume" in err
    assert command("train", str(path)) in err
    assert final.read_bytes() == before and not (tmp_path / "out" / "previous-1").exists()


# ---- 2: two train runs on one output at once -----------------------------------------------------


def test_a_second_train_on_the_same_output_is_refused_naming_the_first(tmp_path):
    path = write_answers(tmp_path, epochs=2)
    first = start_cli(["train", str(path), "--plain"], tmp_path)
    lock = tmp_path / "out" / ".run.lock"
    try:
        wait_for(lock.is_file, first)
        second = run_cli(["train", str(path), "--plain"], tmp_path)
        assert second.returncode == 2, second.stderr
        assert "another easytrain run" in second.stderr and "Traceback" not in second.stderr
        assert f"pid {first.pid}" in second.stderr
        out, err = first.communicate(timeout=600)
        assert first.returncode == 0, err[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    assert not lock.exists() and not (tmp_path / "out" / "previous-1").exists()
    assert (tmp_path / "out" / "run.safetensors").is_file()


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path, capsys):
    path = write_answers(tmp_path, epochs=1)
    (tmp_path / "out").mkdir()
    import json
    import socket

    (tmp_path / "out" / ".run.lock").write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname(),
                                                            "since": "earlier"}))
    code, out, _ = run(["train", path, "--plain"], capsys)
    assert code == 0 and "stale" in out and not (tmp_path / "out" / ".run.lock").exists()


# ---- 3: two names in one output folder ----------------------------------------------------------


def test_a_second_name_in_the_same_folder_keeps_the_first_runs_metrics_and_compare_finds_them(tmp_path, capsys):
    first = write_answers(tmp_path, epochs=1, output_name="first")
    second = write_answers(tmp_path, "second.json", epochs=2, output_name="second", unet_lr=1e-2)
    assert run(["train", first, "--plain"], capsys)[0] == 0
    out_dir = tmp_path / "out"
    metrics = out_dir / "first.metrics.csv"
    first_rows = metrics.read_text()
    assert (out_dir / "first.loss.png").is_file()
    assert run(["train", second, "--plain"], capsys)[0] == 0
    assert metrics.read_text() == first_rows and (out_dir / "second.metrics.csv").is_file()
    assert not (out_dir / "metrics.csv").exists() and not (out_dir / "loss.png").exists()
    code, out, _ = run(["compare", out_dir, "--name", "first"], capsys)
    assert code == 0 and "first.safetensors" in out
    from easytrain.review.saved_files import review_run

    losses = [float(row.split(",")[2]) for row in first_rows.strip().splitlines()[1:]]
    assert review_run(out_dir, "first").files[-1].training_loss == pytest.approx(sum(losses) / len(losses))


# ---- 13: a full disk while caching latents, with no state to resume ------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="file size limits are POSIX")
def test_a_full_disk_while_caching_latents_does_not_advise_resume(tmp_path):
    path = write_answers(tmp_path, epochs=1, cache_latents="disk", bucket_no_upscale=False, resolution=128)
    prelude = ("import resource, signal\n"
               "from easytrain.families.sd.tiny import tiny_model_paths\n"
               "tiny_model_paths()\n"
               "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
               "resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))\n")   # 128 px latents are 4 kB
    process = start_cli(["train", str(path), "--plain"], tmp_path, prelude=prelude)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 2, err[-3000:]
    message = err.strip().splitlines()[-1]
    assert ".easytrain-cache" in message and "could not be saved" in message, message
    assert "--resume" not in message and command("train", str(path)) in message


# ---- 14: exit codes of several jobs --------------------------------------------------------------


def test_train_with_a_bad_and_a_good_file_exits_2(tmp_path, capsys):
    good = write_answers(tmp_path, epochs=1)
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 1, "network_dim": "abc"}', encoding="utf-8")
    code, out, _ = run(["train", bad, good, "--plain"], capsys)
    assert code == 2 and "1 of 2 jobs finished" in out


def test_a_queue_with_a_mistaken_job_exits_2(tmp_path, capsys):
    write_answers(tmp_path, epochs=1)
    queue = tmp_path / "queue"
    queue.mkdir()
    good = write_answers(tmp_path, "b_good.json", epochs=1)
    shutil.move(good, queue / "b_good.json")
    (queue / "b_good.json").write_text((queue / "b_good.json").read_text().replace('"images"', '"../images"')
                                       .replace('"out"', '"../out"'), encoding="utf-8")
    (queue / "a_bad.json").write_text('{"schema_version": 1, "network_dim": "abc"}', encoding="utf-8")
    code, out, _ = run(["queue", queue, "--plain"], capsys)
    assert code == 2 and "1 of 2 jobs finished" in out


# ---- 15: the wizard in a terminal too small for it -----------------------------------------------


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
@pytest.mark.parametrize("width", [6, 10])
def test_the_wizard_in_a_tiny_terminal_says_it_is_too_small(tmp_path, width):
    from tests._tmux import Tmux

    session = Tmux(f"{shlex.quote(sys.executable)} -m easytrain", tmp_path, width=width, height=24)
    try:
        session.wait_for("EXIT=", timeout=30)
        text = "".join(session.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "wizard").split())
        assert "EXIT=2" in text and "Traceback" not in text and "Error" not in text
        assert "terminalistoosmall" in text
    finally:
        session.close()


async def test_the_wizard_survives_a_terminal_shrunk_to_a_few_columns_mid_run(tmp_path, monkeypatch):
    """Started in a big enough terminal and then narrowed: every screen to the review still draws (clipped)."""
    from tests._tui_helpers import SIZE, make_workdir, new_app, press, screen_name, start_new, to_review

    monkeypatch.chdir(tmp_path)
    app = new_app(make_workdir(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.resize_terminal(8, 24)
        await press(pilot, "enter")
        await pilot.resize_terminal(*SIZE)
        await start_new(pilot)
        await pilot.resize_terminal(10, 24)
        await to_review(pilot)
        await pilot.resize_terminal(*SIZE)
        await pilot.pause()
        assert screen_name(app) == "ReviewScreen"
    assert app.return_code in (None, 0)


def test_check_says_when_a_run_is_training_into_the_output_now(tmp_path, capsys):
    import json
    import os
    import socket

    path = write_answers(tmp_path, epochs=1)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".run.lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                            "since": "now"}))
    code, out, _ = run(["check", path], capsys)
    assert code == 0 and f"another easytrain run is training into this output now (pid {os.getpid()}" in out
    code, _, err = run(["train", path, "--plain"], capsys)
    assert code == 2 and "another easytrain run is training into this output" in err

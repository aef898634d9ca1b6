"""The output folder: refused before loading when unusable, earlier runs kept, leftovers cleaned."""

from __future__ import annotations

import json
import os
import sys

import pytest

from _robust_helpers import write_answers
from easytrain.cli import main as cli_main
from easytrain.commands.preflight import find_earlier_outputs, output_place_problem
from easytrain.invocation import command

SHORT = dict(epochs=1, save_every_n_epochs=0)


def check(path, capsys):
    code = cli_main(["check", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("output_folder, says", [
    ("images", "is inside the image folder"),
    ("images/2_colours/out", "is inside the image folder"),
    ("/etc/easytrain", "is a system folder"),
    ("/", "is a system folder"),
    ("a_file/out", "cannot be created: "),
])
def test_check_refuses_unusable_output_folders(tmp_path, capsys, output_folder, says):
    path = write_answers(tmp_path, output_folder=output_folder)
    (tmp_path / "a_file").write_text("in the way")
    code, out, err = check(path, capsys)
    assert code == 2 and says in err and "output_folder: " in err and "Traceback" not in err


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="permissions do not bind root")
def test_check_refuses_a_read_only_output_folder(tmp_path, capsys):
    path = write_answers(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out").chmod(0o500)
    try:
        code, _, err = check(path, capsys)
    finally:
        (tmp_path / "out").chmod(0o700)
    assert code == 2 and "is not writable" in err


def test_a_read_only_folder_is_refused_even_for_root(tmp_path):
    """access() says yes to root; a real write probe does not (here: a folder that cannot hold files)."""
    assert output_place_problem(tmp_path / "x", "run", []) is None
    assert "is a file, not a folder" in output_place_problem(write_answers(tmp_path), "run", [])
    too_long = "n" * 240
    assert "too long for this file system" in output_place_problem(tmp_path / "out", too_long, [])


def test_a_finished_run_is_kept_and_a_stopped_one_is_advertised_with_resume(tmp_path, capsys):
    path = write_answers(tmp_path, epochs=2, save_every_n_epochs=1)
    assert cli_main(["train", str(path), "--plain"]) == 0
    out_dir = tmp_path / "out"
    capsys.readouterr()

    # a finished run: listed, nothing to resume, moved aside by the next train
    code, out, _ = check(path, capsys)
    assert code == 0 and f"already in {out_dir}: run-000001-state/, run-000001.safetensors" in out
    assert "resumable" not in out and f"`train` moves them to {out_dir / 'previous-1'}/ first" in out

    # the final file gone: the epoch-1 state is a stopped run that --resume continues
    (out_dir / "run.safetensors").rename(tmp_path / "first.safetensors")
    (out_dir / ".run-000002.safetensors.x1y2.tmp").write_bytes(b"half a save")
    code, out, _ = check(path, capsys)
    assert code == 0 and "a resumable state is there: run-000001-state (step 4)" in out
    assert f"to continue that run: {command('train', str(path), '--resume')}" in out

    from easytrain.commands.train import keep_earlier_outputs, prepare

    lines = keep_earlier_outputs(prepare(str(path))[1], str(path), resume="latest")
    assert lines[-1] == "  --resume continues in place; nothing is moved"
    assert not (out_dir / "previous-1").exists() and (out_dir / "run-000001-state").is_dir()
    assert not list(out_dir.glob(".*.tmp"))   # the interrupted save's leftover is gone

    # a new run without --resume moves every file of the earlier run, and trains afresh
    earlier = sorted(p.name for p in out_dir.iterdir())
    path = write_answers(tmp_path, save_every_n_epochs=0, epochs=2)
    assert cli_main(["train", str(path), "--plain"]) == 0
    out, _ = capsys.readouterr()
    assert f"kept: moved to {out_dir / 'previous-1'}/ before this run starts" in out
    again = command("train", str(path), "--resume", str(out_dir / "previous-1" / "run-000001-state"))
    assert f"to continue the earlier run instead: {again}" in out
    assert sorted(p.name for p in (out_dir / "previous-1").iterdir()) == earlier
    assert (out_dir / "run.safetensors").is_file() and not (out_dir / "run-000001.safetensors").exists()


def test_a_fresh_folder_says_nothing_about_earlier_runs(tmp_path, capsys):
    path = write_answers(tmp_path, **SHORT)
    code, out, _ = check(path, capsys)
    assert code == 0 and "already in" not in out
    assert not find_earlier_outputs(tmp_path / "out", "run").worth_keeping


def test_a_bad_prompts_file_and_a_broken_lora_to_continue_are_refused_by_check(tmp_path, capsys):
    (tmp_path / "prompts.txt").write_text("a cat --w abc\n")
    (tmp_path / "old.safetensors").write_bytes(b"not a safetensors file at all")
    path = write_answers(tmp_path, sample_images=True, sample_prompts="prompts.txt")
    code, _, err = check(path, capsys)
    assert code == 2 and "prompts.txt" in err
    data = json.loads(path.read_text())
    data.update(sample_images=False, network_weights="old.safetensors")
    data.pop("sample_prompts")
    path.write_text(json.dumps(data))
    code, _, err = check(path, capsys)
    assert code == 2 and "old.safetensors" in err


@pytest.mark.skipif(sys.platform == "win32", reason="file size limits are POSIX")
def test_a_disk_that_refuses_a_save_names_both_files_and_keeps_the_saved_one(tmp_path):
    """Files over 300 kB fail as on a full disk: the epoch's LoRA (150 kB) saves, its state (450 kB) does not."""
    from _robust_helpers import start_cli

    path = write_answers(tmp_path, epochs=2, save_every_n_epochs=1)
    prelude = ("import resource, signal\n"
               "from easytrain.families.sd.tiny import tiny_model_paths\n"
               "tiny_model_paths()\n"
               "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
               "resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))\n")
    process = start_cli(["train", str(path), "--plain"], tmp_path, prelude=prelude)
    out, err = process.communicate(timeout=600)
    out_dir = tmp_path / "out"
    assert process.returncode == 2, err[-3000:]
    assert "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert message.startswith(f"easytrain: {out_dir / 'run-000001-state'}: could not be saved (File too large); "
                              f"{out_dir / 'run-000001.safetensors'} was saved and stays"), message
    assert "--resume` continues" in message
    from safetensors import safe_open

    with safe_open(str(out_dir / "run-000001.safetensors"), "pt") as lora:   # complete and loadable
        assert len(list(lora.keys())) > 0
    assert not (out_dir / "run-000001-state").exists() and not list(out_dir.glob(".*.tmp"))

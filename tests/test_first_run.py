"""Issue 26: a first run without a stumble (the command line side; the wizard's side is in test_tui_first_run.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def easytrain(*args: str, cwd: Path = REPO, env: dict | None = None, timeout: int = 120):
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "easytrain", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=full_env)


def small_answers(tmp_path: Path, demo_images: Path, **changes) -> Path:
    values = {"schema_version": 1, "base_model": "builtin:tiny", "architecture": "sd1", "image_folder": "images",
              "output_folder": "out", "output_name": "mychar", "optimizer": "AdamW", "resolution": 128,
              "batch_size": 2, "epochs": 1, "mixed_precision": "no", **changes}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(values))
    return path


# ---- 1. third-party start-up noise ---------------------------------------------------------------


def test_the_kernels_packages_offline_note_is_silenced(tmp_path):
    """bitsandbytes asks `kernels` for CPU kernels; offline it logs a trust-check note on stderr."""
    script = (
        "import logging\n"
        "from easytrain.model.quiet import quiet_model_libraries\n"
        "quiet_model_libraries()\n"
        "logging.getLogger('kernels._internals.hf_hub').warning(\"Skipping publisher trust check for "
        "'kernels-community/quantization-bitsandbytes' because Hugging Face Hub is in offline mode.\")\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    assert "kernels-community" not in out.stdout + out.stderr


def test_the_kernels_packages_warnings_go_to_the_run_log(tmp_path, capsys):
    import logging

    from easytrain.commands.library_log import library_log

    log = tmp_path / "run.log"
    with library_log(log):
        logging.getLogger("kernels._internals.hf_hub").warning("Skipping publisher trust check for 'x/y'")
    assert "Skipping publisher" not in capsys.readouterr().err
    assert "kernels._internals.hf_hub WARNING: Skipping publisher trust check" in log.read_text()


# ---- 2. tests and the demo never touch the checkout's output/ -------------------------------------


def test_the_demo_output_folder_can_be_moved(tmp_path):
    from easytrain import answers as answers_file
    from easytrain.demo import demo_answers_in
    from easytrain.plan import TrainPlan

    path = demo_answers_in(REPO / "answers" / "demo.json", tmp_path / "elsewhere")
    assert path == tmp_path / "elsewhere" / "demo.json"
    plan = TrainPlan.from_answers(answers_file.load(path))
    assert Path(plan.saving.output_dir) == tmp_path / "elsewhere"
    assert plan.train_scan.subsets[0].folder == (REPO / "answers" / "demo" / "images" / "5_shapes")


def test_demo_help_names_the_output_option():
    out = easytrain("demo", "--help")
    assert out.returncode == 0 and "--output DIR" in out.stdout and "EASYTRAIN_DEMO_OUTPUT" in out.stdout


# ---- 3. the command people are told to type exists -------------------------------------------------


def test_help_shows_the_launchers_form_when_started_by_the_launcher():
    env = {"EASYTRAIN_LAUNCHER": json.dumps([sys.executable, str(REPO / "wizard.py")])}
    out = easytrain("--help", env=env)
    assert out.returncode == 0
    usage = out.stdout.splitlines()[0]
    assert usage.startswith("usage: ") and usage.split()[2] == "wizard.py", usage
    assert "wizard.py train FILE` trains from such a file" in out.stdout
    assert "`easytrain train" not in out.stdout


def test_the_readme_writes_every_command_the_way_the_set_up_installs_it():
    """No `easytrain ...` command in the README: the set-up puts none on PATH; `python3 wizard.py ...` runs."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    in_blocks = [line for block in blocks for line in block.splitlines() if re.match(r"\s*easytrain [a-z]", line)]
    in_spans = re.findall(r"`easytrain(?: [^`]*)?`", re.sub(r"```.*?```", "", text, flags=re.S))
    assert in_blocks == [] and in_spans == []
    assert "**The command is `python3 wizard.py`**" in text


# ---- 4. train --resume FILE ----------------------------------------------------------------------------


def test_resume_flag_before_the_answers_file_reads_the_file():
    from easytrain.cli import train_files

    assert train_files([], "answers/my.json") == (["answers/my.json"], "latest")
    assert train_files(["a.json"], "out/a-000002-state") == (["a.json"], "out/a-000002-state")
    assert train_files(["a.json"], "latest") == (["a.json"], "latest")


def test_train_resume_file_in_either_order_gives_the_same_answer(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"schema_version": 1, "base_model": "builtin:tiny",
                                                    "image_folder": "missing"}))
    first = easytrain("train", "--resume", "bad.json", cwd=tmp_path)
    last = easytrain("train", "bad.json", "--resume", cwd=tmp_path)
    assert "the following arguments are required" not in first.stderr
    assert first.returncode == last.returncode == 2 and first.stderr == last.stderr
    assert "image_folder: folder not found" in first.stderr
    missing = easytrain("train", "--resume", cwd=tmp_path)
    assert missing.returncode == 2 and "required: FILE" in missing.stderr


# ---- 5. a text file named .ckpt -------------------------------------------------------------------------


@pytest.mark.parametrize("content, says", [
    (b"this is not a model\n", "this is a text file ('this is not a model'...), not a checkpoint"),
    (b"<!DOCTYPE html><html><body>Sign in</body></html>", "this is a web page (HTML)"),
    (b"\x89PNG\r\n\x1a\n" + bytes(40), "this is a PNG image, not a checkpoint"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\n", "this is a Git LFS pointer"),
])
def test_check_says_what_a_fake_ckpt_really_is(tmp_path, demo_images, content, says):
    (tmp_path / "fake.ckpt").write_bytes(content)
    path = small_answers(tmp_path, demo_images, base_model="fake.ckpt")
    out = easytrain("check", str(path), cwd=tmp_path)
    assert out.returncode == 2, out.stdout
    assert "OK: ready" not in out.stdout and "Traceback" not in out.stderr
    assert "fake.ckpt: " + says in out.stderr


def test_a_legacy_pickle_ckpt_is_left_to_the_loader(tmp_path):
    from easytrain.commands.file_kind import legacy_ckpt_problem

    (tmp_path / "old.ckpt").write_bytes(b"\x80\x02\x8a\x0alZ\xfc\x9cF\xf9 j\xa8P\x19.")
    assert legacy_ckpt_problem(tmp_path / "old.ckpt") is None


# ---- 8. the end-of-run summary ---------------------------------------------------------------------------


def _finished_run_output(start_step: int = 0) -> tuple[str, list[str]]:
    """What a finished run prints: the plain view's lines, then the summary (as train_one prints them)."""
    import io

    from easytrain.commands.train import SavedFiles
    from easytrain.progress import PlainView, fan_out, summary_lines
    from easytrain.train import events as ev

    out, saved = io.StringIO(), SavedFiles()
    view = PlainView(out, every=100)
    sink = fan_out(view, saved)
    sink(ev.RunStarted("mychar", 200, 2, 100, 2, 200, "cpu", "/o", start_step=start_step))
    for step in range(start_step + 1, 201):
        sink(ev.StepEnded(step, 1 + step // 101, 0.1, (1e-4,), 0.01, 2))
        if step % 100 == 0:
            sink(ev.SampleSaved(f"/o/sample/mychar_e{step // 100:06d}_00_1.png", step // 100, "mychar"))
            if step < 200:
                sink(ev.CheckpointSaved(f"/o/mychar-{step // 100:06d}.safetensors", step // 100, step))
    sink(ev.CheckpointSaved("/o/mychar-step00000150.safetensors", 2, 150, epoch_finished=False))
    finished = ev.RunFinished(200, 61.0, "/o/mychar.safetensors", 0.1, files=("/o/mychar.answers.json",))
    sink(finished)
    lines = summary_lines(finished, extra_files=[*saved.summary_files(), "/o/metrics.csv"],
                          start_step=saved.start_step, trigger="mychar")
    return out.getvalue(), lines


def test_finished_is_said_once():
    view_text, summary = _finished_run_output()
    text = view_text + "\n".join(summary)
    assert text.count("finished") == 1 and summary[0].startswith("Training finished: 200 steps in 0:01:01")


def test_a_resumed_session_says_which_steps_it_ran():
    _, summary = _finished_run_output(start_step=120)
    assert summary[0] == ("Training finished: steps 121-200 (resumed after step 120; 200 steps in all) in "
                          "0:01:01, final average loss 0.1000.")


def test_files_written_lists_epoch_and_step_files_and_the_samples():
    _, summary = _finished_run_output()
    listed = [line.strip() for line in summary[summary.index("Files written:") + 1:] if line.startswith("  ")]
    assert listed == ["/o/mychar.safetensors", "/o/mychar-000001.safetensors", "/o/mychar-step00000150.safetensors",
                      "/o/mychar.answers.json", "/o/sample/ (2 sample images)", "/o/metrics.csv"]


def test_how_to_use_it_names_the_trigger_word():
    _, summary = _finished_run_output()
    assert "then add mychar and <lora:mychar:1> to a prompt (lower the 1, e.g. 0.7, if it overpowers the image)." \
        in summary


def test_the_usual_trigger_is_the_tag_most_captions_start_with(tmp_path, demo_images):
    from easytrain import answers as answers_file
    from easytrain.commands.check import usual_trigger
    from easytrain.plan import TrainPlan

    plan = TrainPlan.from_answers(answers_file.load(small_answers(tmp_path, demo_images)))
    assert usual_trigger(plan) == "shapes"
    for caption in (demo_images / "5_shapes").glob("*.txt"):
        caption.write_text(caption.stem + ", red\n")
    plan = TrainPlan.from_answers(answers_file.load(small_answers(tmp_path, demo_images)))
    assert usual_trigger(plan) is None


# ---- 15. previous-N folders pile up --------------------------------------------------------------------


def _backups(out: Path, count: int) -> None:
    for n in range(1, count + 1):
        (out / f"previous-{n}").mkdir(parents=True)
        (out / f"previous-{n}" / "mychar.safetensors").write_bytes(bytes(1000 * n))
        os.utime(out / f"previous-{n}" / "mychar.safetensors", (1_700_000_000 + n * 60,) * 2)


def test_previous_lists_the_earlier_runs_newest_first(tmp_path):
    out = tmp_path / "out"
    _backups(out, 3)
    (out / "mychar.safetensors").write_bytes(b"x")          # the current run is not listed
    result = easytrain("previous", str(out))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{out}: 3 earlier runs moved aside, 0 MiB in all (newest first):"
    assert [line.split()[0] for line in lines[1:4]] == ["previous-3", "previous-2", "previous-1"]
    assert "1 file  (mychar.safetensors)" in lines[1]
    assert lines[-1].endswith(f"previous {out} --keep 2 --apply")


def test_previous_keep_is_a_dry_run_until_apply(tmp_path):
    out = tmp_path / "out"
    _backups(out, 4)
    dry = easytrain("previous", str(out), "--keep", "1")
    assert dry.returncode == 0 and "would remove previous-3, previous-2, previous-1" in dry.stdout
    assert len(list(out.glob("previous-*"))) == 4
    done = easytrain("previous", str(out), "--keep", "1", "--apply")
    assert done.returncode == 0 and "removed previous-3, previous-2, previous-1" in done.stdout
    assert [p.name for p in out.iterdir()] == ["previous-4"]


def test_train_mentions_previous_once_they_pile_up(tmp_path):
    from easytrain.commands.previous import PILE_UP, pile_up_line

    out = tmp_path / "out"
    _backups(out, PILE_UP)
    assert pile_up_line(out) is None
    _backups(tmp_path / "more", PILE_UP + 1)
    line = pile_up_line(tmp_path / "more")
    assert line.startswith(f"{tmp_path / 'more'} holds 4 previous-N folders") and "previous " in line


# ---- 9. tags and images pointed at an output folder -----------------------------------------------------


@pytest.mark.parametrize("command", ["tags", "images"])
def test_tags_and_images_say_an_output_folder_is_not_a_dataset(tmp_path, command):
    from PIL import Image

    out = tmp_path / "output"
    (out / "sample").mkdir(parents=True)
    (out / "mychar.safetensors").write_bytes(b"x")
    Image.new("RGB", (64, 64)).save(out / "loss.png")
    Image.new("RGB", (64, 64)).save(out / "sample" / "mychar_e000001_00_1.png")
    (out / "metrics.csv").write_text("step,loss\n")
    (out / "mychar.answers.json").write_text(json.dumps({"schema_version": 1, "image_folder": "/data/pics"}))
    result = easytrain(command, str(out))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"easytrain: {out}: this is a training run's output folder (mychar.safetensors, "
                                    "metrics.csv, loss.png, mychar.answers.json, sample/), not a dataset")
    assert "this run trained on /data/pics (image_folder in mychar.answers.json)" in result.stderr


def test_a_dataset_with_a_stray_safetensors_is_still_a_dataset(tmp_path, demo_images):
    (demo_images / "5_shapes" / "old.safetensors").write_bytes(b"x")
    result = easytrain("tags", str(demo_images))
    assert result.returncode == 0, result.stderr


# ---- 10. an N_name folder given as the image folder ---------------------------------------------------


def test_an_n_name_folder_as_image_folder_gets_one_suggestion(tmp_path, demo_images):
    path = small_answers(tmp_path, demo_images, image_folder="images/5_shapes")
    out = easytrain("check", str(path), cwd=tmp_path)
    assert out.returncode == 2
    problems = [line for line in out.stderr.splitlines() if line.startswith("  - ")]
    assert problems == [f"  - {demo_images / '5_shapes'}: this looks like one of the N_name subfolders itself (one "
                        f"level too deep); pick its parent folder {demo_images} as the image folder"]
    assert "5_shapes/10_5_shapes" not in out.stderr and "5_shapes/10_shapes" not in out.stderr


# ---- 14. install progress when the output is not a terminal ---------------------------------------------


def _launcher_module(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "wizard.py")
    launcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launcher)
    return launcher


def test_set_up_without_a_terminal_prints_pip_steps_as_lines(tmp_path, capsys, monkeypatch):
    launcher = _launcher_module("launcher_plain_progress")
    script = ("import time\n"
              "for name in ('torch', 'diffusers', 'peft'):\n"
              "    print('Collecting ' + name); print('  Downloading ' + name + '.whl', flush=True)\n"
              "    time.sleep(0.3)\n"
              "print('Installing collected packages: torch, diffusers, peft')\n"
              "print('Successfully installed torch diffusers peft')\n")
    monkeypatch.setattr(launcher, "PLAIN_EVERY", 0.2)
    assert launcher.run_logged([sys.executable, "-c", script], tmp_path / "install.log")
    out = capsys.readouterr().out
    assert "\r" not in out and "\x1b" not in out
    assert out.splitlines() == ["  Collecting torch", "  Collecting diffusers", "  Collecting peft",
                                "  Installing collected packages: torch, diffusers, peft",
                                "  Successfully installed torch diffusers peft"]


# ---- 13. how long the run will take ---------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _timed_steps(view, clock: _Clock, steps: int, total: int = 1000, seconds: float = 2.0) -> None:
    from easytrain.train import events as ev

    view(ev.RunStarted("mychar", total, 10, total // 10, 2, 200, "cpu", "/o"))
    for step in range(1, steps + 1):
        clock.now += seconds
        view(ev.StepEnded(step, 1, 0.1, (1e-4,), seconds, 2))


def test_the_plain_view_says_how_long_the_run_will_take_once():
    import io

    from easytrain.progress import PlainView

    out, clock = io.StringIO(), _Clock()
    view = PlainView(out, every=100, clock=clock)
    _timed_steps(view, clock, 20)
    estimates = [line for line in out.getvalue().splitlines() if line.startswith("time estimate")]
    assert len(estimates) == 1
    assert estimates[0].startswith("time estimate: about 0:33:10 for the 995 steps left at this pace "
                                   "(2.00 s/it), done around ")


def test_the_live_view_says_it_above_the_panel():
    import io

    from rich.console import Console

    from easytrain.progress.rich_view import RichView

    console = Console(file=io.StringIO(), width=100, record=True, force_terminal=True)
    clock = _Clock()
    with RichView(console, clock=clock) as view:
        _timed_steps(view, clock, 6)
    assert "time estimate: about 0:33:10 for the 995 steps left" in console.export_text()


def test_check_says_plainly_that_a_full_size_model_on_a_cpu_is_very_slow(tmp_path, demo_images):
    from _model_helpers import write_fake_checkpoint

    write_fake_checkpoint(tmp_path / "sd15.safetensors", "sd1")
    path = small_answers(tmp_path, demo_images, base_model="sd15.safetensors")
    out = easytrain("check", str(path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert ("! no NVIDIA GPU on this machine: a full-size model trains on the CPU, which is very slow (minutes "
            "per step, so days for a usual run)") in out.stdout.replace("\n      ", " ")
    tiny = easytrain("check", str(small_answers(tmp_path, demo_images)), cwd=tmp_path)
    assert "very slow" not in tiny.stdout


def test_the_wizards_help_texts_name_the_launcher_too(monkeypatch):
    from easytrain import questions as Q
    from easytrain.tui.question_screen import as_typed

    monkeypatch.setenv("EASYTRAIN_LAUNCHER", json.dumps(["python3", str(REPO / "wizard.py")]))
    monkeypatch.chdir(REPO)
    help_text = as_typed(Q.BY_ID["save_state"].help)
    assert "`python3 wizard.py train FILE --resume`" in help_text and "`easytrain " not in help_text


# ---- 11. the tiny model on a CPU, in check -----------------------------------------------------------------


def test_check_of_the_tiny_model_on_a_cpu_has_no_full_size_figures(tmp_path, demo_images):
    out = easytrain("check", str(small_answers(tmp_path, demo_images)), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "16 images x repeats = 80 / batch 2 = 40 steps x 1 epoch = 40 steps" in out.stdout
    assert "GPU memory" not in out.stdout and "steps is well below the usual" not in out.stdout


# ---- 16. a short "train on your own pictures" near the top of the README ---------------------------------


def test_the_readme_starts_with_a_short_own_pictures_section():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("## Train on your own pictures")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("## "))
    assert start < 70 and end - start <= 30
    section = "\n".join(lines[start:end])
    for needed in ("10_mychar", "python3 wizard.py images data", "python3 wizard.py tags", "python3 wizard.py`",
                   "<lora:mychar:1>"):
        assert needed in section, needed

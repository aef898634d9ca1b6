"""Issue 28, inputs: odd file names, read-only datasets, old tools' files, link loops, odd captions and
answers whose condition is not met. No traceback for any of them, and `check` says what `train` will do."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from _robust_helpers import write_answers
from easytrain.cli import main as cli_main

NON_UTF8_NAME = os.fsdecode(b"bad\xff\xfe")


def run(args, capsys) -> tuple[int, str, str]:
    code = cli_main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "unexpected error" not in err, err
    return code, out, err


@contextmanager
def read_only(folder: Path):
    """``folder`` on a read-only mount (a bind mount remounted read-only); skips where that is not allowed."""
    if sys.platform != "linux" or shutil.which("mount") is None:
        pytest.skip("read-only bind mounts need Linux")
    done = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("mounting is not allowed here")
    try:
        remount = subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True)
        if remount.returncode != 0:
            pytest.skip("remounting read-only is not allowed here")
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


# ---- 4: file names that are not UTF-8 ------------------------------------------------------------


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="the file system must allow any bytes in names")
def test_an_image_name_that_is_not_utf8_fingerprints_and_its_tags_can_be_applied(tmp_path, capsys):
    from easytrain.plan import TrainPlan
    from easytrain import answers as answers_file
    from easytrain.train.state import fingerprint

    path = write_answers(tmp_path)
    subset = tmp_path / "images" / "2_colours"
    shutil.copy(subset / "red.png", subset / f"{NON_UTF8_NAME}.png")
    shutil.copy(subset / "red.txt", subset / f"{NON_UTF8_NAME}.txt")
    plan = TrainPlan.from_answers(answers_file.load(path))
    assert json.dumps(fingerprint(plan))  # the dataset fingerprint of the resume check
    from easytrain.run_files import write_run_files

    assert all(p.is_file() for p in write_run_files(plan))   # the plan copy names the images
    code, _, _ = run(["tags", tmp_path / "images", "--add-trigger", "zq", "--apply"], capsys)
    assert code == 0
    assert (subset / f"{NON_UTF8_NAME}.txt").read_text(encoding="utf-8").startswith("zq, ")
    code, _, _ = run(["tags", tmp_path / "images", "--undo"], capsys)
    assert code == 0 and not (subset / f"{NON_UTF8_NAME}.txt").read_text(encoding="utf-8").startswith("zq")


# ---- 5: a read-only dataset ----------------------------------------------------------------------


def test_check_refuses_a_disk_latent_cache_on_a_read_only_dataset(tmp_path, capsys):
    path = write_answers(tmp_path, cache_latents="disk")
    with read_only(tmp_path / "images"):
        code, _, err = run(["check", path], capsys)
        assert code == 2 and "cache_latents" in err and ".easytrain-cache" in err and "read-only" in err
        memory = write_answers(tmp_path, "memory.json", cache_latents="memory")
        assert run(["check", memory], capsys)[0] == 0


def test_tags_apply_on_a_read_only_dataset_says_so_and_changes_nothing(tmp_path, capsys):
    write_answers(tmp_path)
    before = (tmp_path / "images" / "2_colours" / "red.txt").read_bytes()
    with read_only(tmp_path / "images"):
        code, _, err = run(["tags", tmp_path / "images", "--add-trigger", "zq", "--apply"], capsys)
    assert code == 2 and "read-only" in err and "nothing" in err
    assert (tmp_path / "images" / "2_colours" / "red.txt").read_bytes() == before


# ---- 6: kohya_ss GUI files with impossible values -----------------------------------------------


@pytest.mark.parametrize("extra, says", [
    ('"max_resolution": 1e999', "resolution: must be"),
    ('"max_resolution": NaN', "resolution: must be"),
    ('"max_resolution": "1e999"', "resolution: must be"),
])
def test_kohya_gui_resolutions_that_are_not_numbers_are_reported(tmp_path, capsys, extra, says):
    write_answers(tmp_path)
    path = tmp_path / "kohya.json"
    path.write_text('{"pretrained_model_name_or_path": "builtin:tiny", "train_data_dir": "images", '
                    f'"output_dir": "out", "output_name": "k", {extra}}}', encoding="utf-8")
    code, _, err = run(["check", path], capsys)
    assert code == 2 and says in err


def test_a_blank_network_weights_means_none(tmp_path, capsys):
    write_answers(tmp_path)
    path = tmp_path / "kohya.json"
    path.write_text(json.dumps({"pretrained_model_name_or_path": "builtin:tiny", "train_data_dir": "images",
                                "output_dir": "out", "output_name": "k", "max_resolution": "64,64",
                                "network_weights": " "}), encoding="utf-8")
    code, _, _ = run(["check", path], capsys)
    assert code == 0
    ours = write_answers(tmp_path, "ours.json", network_weights="  ")
    assert run(["check", ours], capsys)[0] == 0


# ---- 7: a symbolic-link loop in the image folder -------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links")
@pytest.mark.parametrize("command", ["tags", "images"])
def test_tags_and_images_skip_a_link_loop_as_check_does(tmp_path, capsys, command):
    path = write_answers(tmp_path)
    (tmp_path / "images" / "loop").symlink_to("loop")
    (tmp_path / "images" / "2_colours" / "self").symlink_to("self")
    (tmp_path / "images" / "2_colours" / "self.png").symlink_to("self.png")
    assert run(["check", path], capsys)[0] == 0
    code, out, _ = run([command, tmp_path / "images"], capsys)
    assert code == 0 and out


# ---- 11: GIFs: images, check and train agree -----------------------------------------------------


def test_check_names_the_gifs_it_leaves_out_as_images_does(tmp_path, capsys):
    from PIL import Image

    path = write_answers(tmp_path)
    subset = tmp_path / "images" / "2_colours"
    frames = [Image.new("RGB", (64, 64), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(subset / "moving.gif", save_all=True, append_images=frames[1:], duration=100)
    (subset / "moving.txt").write_text("colours, moving", encoding="utf-8")
    code, out, _ = run(["check", path], capsys)
    assert code == 0 and "moving.gif" in out and "not used for training" in out
    code, out, _ = run(["images", tmp_path / "images"], capsys)
    assert code == 0 and "moving.gif" in out
    assert "first frame" not in out and "not used for training" in out


# ---- 12: a UTF-16 caption without a byte-order mark ----------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_a_utf16_caption_without_bom_is_read_as_text_and_reported(tmp_path, encoding):
    from easytrain.data.captions import read_caption

    path = tmp_path / "a.txt"
    path.write_bytes("shapes, a red square\n".encode(encoding))
    caption, warnings = read_caption(path)
    assert caption == "shapes, a red square"
    assert len(warnings) == 1 and "UTF-16" in warnings[0] and "save it as UTF-8" in warnings[0]
    path.write_bytes("shapes, a red square\n".encode("utf-16"))          # with a byte-order mark too
    assert read_caption(path)[0] == "shapes, a red square"


def test_check_reports_a_utf16_caption(tmp_path, capsys):
    path = write_answers(tmp_path)
    (tmp_path / "images" / "2_colours" / "red.txt").write_bytes("colours, red square".encode("utf-16-le"))
    code, out, _ = run(["check", path], capsys)
    assert code == 0 and "red.txt" in out and "UTF-16" in out
    code, out, _ = run(["tags", tmp_path / "images", "--add-trigger", "zq", "--apply"], capsys)
    assert code == 0 and "UTF-16" in out      # the tags tool leaves it alone instead of editing NULs
    assert (tmp_path / "images" / "2_colours" / "red.txt").read_bytes() == "colours, red square".encode("utf-16-le")


# ---- 9 and 10: answers that would do nothing, or that are not used -------------------------------


def test_both_learning_rates_zero_is_refused(tmp_path, capsys):
    path = write_answers(tmp_path, unet_lr=0, text_encoder_lr=0)
    code, _, err = run(["check", path], capsys)
    assert code == 2 and "unet_lr" in err and "nothing would train" in err
    only = write_answers(tmp_path, "unet_only.json", unet_lr=0, train_parts="unet_only")
    code, _, err = run(["check", only], capsys)
    assert code == 2 and "nothing would train" in err


@pytest.mark.parametrize("answer, depends_on", [
    ({"max_steps": 100}, "length_by"),
    ({"conv_dim": 8}, "network_type"),
    ({"sample_prompts": "prompts.txt"}, "sample_images"),
])
def test_an_answer_whose_condition_is_not_met_is_named_with_what_it_depends_on(tmp_path, capsys, answer,
                                                                                 depends_on):
    (tmp_path / "prompts.txt").write_text("a red square\n", encoding="utf-8")
    path = write_answers(tmp_path, **answer)
    code, out, _ = run(["check", path], capsys)
    key = next(iter(answer))
    warned = [line for line in out.splitlines() if f"! {key}:" in line]
    assert code == 0 and len(warned) == 1 and depends_on in warned[0] and "not used" in warned[0]


def test_an_answer_that_applies_is_not_warned_about(tmp_path, capsys):
    path = write_answers(tmp_path, length_by="steps", max_steps=12)
    code, out, _ = run(["check", path], capsys)
    assert code == 0 and "! max_steps" not in out


# ---- 8: what check accepts, train does not refuse ------------------------------------------------


def _sd1_shapes(vocab: int) -> dict:
    from _model_helpers import fake_checkpoint_tensors

    tensors = fake_checkpoint_tensors("sd1")
    key = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
    import torch

    tensors[key] = torch.zeros(vocab, 768, dtype=torch.int8)  # only the shape matters
    return tensors


def test_check_refuses_an_sd1_file_whose_vocabulary_is_not_clips(tmp_path):
    from safetensors.torch import save_file

    from easytrain.errors import UserError
    from easytrain.families.detect import detect_architecture

    path = tmp_path / "odd.safetensors"
    save_file(_sd1_shapes(32000), str(path))
    with pytest.raises(UserError, match="32000-token vocabulary"):
        detect_architecture(path)
    save_file(_sd1_shapes(49408), str(path))
    assert detect_architecture(path).arch == "sd1"


def test_check_refuses_a_ckpt_that_carries_code_without_running_it(tmp_path):
    import torch

    from easytrain.errors import UserError
    from easytrain.families.detect import detect_architecture

    from _model_helpers import RunsCode

    marker = tmp_path / "ran.txt"
    state = _sd1_shapes(49408)
    state["payload"] = RunsCode(marker)
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(UserError, match="contains code, which easytrain will not run"):
        detect_architecture(path)
    assert not marker.exists()


def test_check_refuses_a_ckpt_that_train_would_not_read_as_tensors(tmp_path):
    import torch

    from easytrain.errors import UserError
    from easytrain.families.detect import detect_architecture

    state = _sd1_shapes(49408)
    path = tmp_path / "flat.ckpt"
    torch.save({**state, "global_step": 10}, path)            # no state_dict, and a number among the tensors
    with pytest.raises(UserError, match="does not hold a plain state dict of tensors"):
        detect_architecture(path)
    torch.save({"state_dict": state, "global_step": 10}, path)
    assert detect_architecture(path).arch == "sd1"
    torch.save({"state_dict": _sd1_shapes(1000)}, path)        # the vocabulary is read from a .ckpt too
    with pytest.raises(UserError, match="1000-token vocabulary"):
        detect_architecture(path)


def test_a_new_run_moves_the_earlier_runs_step_samples_aside_too(tmp_path):
    from easytrain.commands.preflight import find_earlier_outputs

    samples = tmp_path / "out" / "sample"
    samples.mkdir(parents=True)
    names = ["run_e000001_00_1.png", "run_e000001_sheet.png", "run_000100_00_1.png", "run_000100_sheet.png"]
    for name in names + ["run2_000100_00_1.png", "other.png"]:
        (samples / name).write_bytes(b"png")
    (tmp_path / "out" / "run.safetensors").write_bytes(b"lora")
    earlier = find_earlier_outputs(tmp_path / "out", "run")
    assert sorted(p.name for p in earlier.files if p.parent == samples) == sorted(names)

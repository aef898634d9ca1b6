"""The step arithmetic users plan their runs with, against hand-computed cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from easytrain import answers as A
from easytrain.errors import UserError
from easytrain.plan import TrainPlan, count_steps, steps_warning


def make_folder(root: Path, name: str, count: int, size=(512, 512)) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    for i in range(count):
        Image.new("RGB", size, (i * 7 % 255, 80, 120)).save(folder / f"img{i:03d}.png")
        (folder / f"img{i:03d}.txt").write_text(f"tag{i}, thing\n")


def plan_for(tmp_path: Path, **answers) -> TrainPlan:
    data = {"schema_version": 1, "base_model": "builtin:tiny", "image_folder": "images", **answers}
    (tmp_path / "a.json").write_text(json.dumps(data))
    return TrainPlan.from_answers(A.load(tmp_path / "a.json"))


@pytest.mark.parametrize("images,repeats,epochs,batch,total", [
    (20, 10, 10, 2, 1000), (100, 3, 10, 2, 1500), (400, 1, 10, 2, 2000),
])
def test_reference_points_from_the_guides(images, repeats, epochs, batch, total):
    per_epoch = images * repeats
    count = count_steps(images=images, images_per_epoch=per_epoch, steps_per_epoch=per_epoch // batch,
                        batch_size=batch, length_by="epochs", epochs=epochs, max_steps=None)
    assert count.total_steps == total


def test_plan_of_a_real_folder(tmp_path):
    make_folder(tmp_path / "images", "10_char", 20)
    plan = plan_for(tmp_path, batch_size=2, epochs=10, warmup_ratio=0.05)
    assert (plan.images_per_epoch, plan.steps_per_epoch, plan.epochs, plan.total_steps) == (200, 100, 10, 1000)
    assert plan.schedule.warmup_steps == 50
    assert plan.steps.line() == "20 images x repeats = 200 / batch 2 = 100 steps x 10 epochs = 1000 steps"
    assert plan.saving.output_name == "char"
    assert plan.output_files[0].endswith("char-000001.safetensors") and plan.output_files[-1].endswith("char.safetensors")
    assert len(plan.output_files) == 10  # nine epoch files + the final one


def test_steps_line_by_steps_shows_the_real_arithmetic(tmp_path):
    make_folder(tmp_path / "images", "5_char", 16)
    plan = plan_for(tmp_path, batch_size=2, length_by="steps", max_steps=12)
    assert plan.steps.line() == "16 images x repeats = 80 / batch 2 = 40 steps per epoch; max 12 steps, stops in epoch 1"
    count = count_steps(images=16, images_per_epoch=80, steps_per_epoch=40, batch_size=2, length_by="steps",
                        epochs=None, max_steps=100)
    assert count.line().endswith("max 100 steps, stops in epoch 3")


def test_steps_line_singular_forms():
    count = count_steps(images=1, images_per_epoch=1, steps_per_epoch=1, batch_size=1, length_by="epochs",
                        epochs=1, max_steps=None)
    assert count.line() == "1 image x repeats = 1 / batch 1 = 1 step x 1 epoch = 1 step"


def test_partial_batches_count_per_bucket(tmp_path):
    # 3 square + 3 wide images, batch 2: each bucket rounds up on its own -> 2 + 2 steps.
    make_folder(tmp_path / "images", "1_a", 3, size=(512, 512))
    make_folder(tmp_path / "images", "1_b", 3, size=(768, 384))
    plan = plan_for(tmp_path, batch_size=2, epochs=1)
    assert plan.images_per_epoch == 6 and plan.steps_per_epoch == 4 and len(plan.bucket_counts) == 2


def test_length_by_steps(tmp_path):
    make_folder(tmp_path / "images", "5_x", 10)
    plan = plan_for(tmp_path, batch_size=2, length_by="steps", max_steps=60)
    assert (plan.steps_per_epoch, plan.total_steps, plan.epochs) == (25, 60, 3)


def test_constant_scheduler_has_no_warmup_and_zero_te_lr_trains_unet_only(tmp_path):
    make_folder(tmp_path / "images", "5_x", 4)
    plan = plan_for(tmp_path, scheduler="constant", text_encoder_lr=0)
    assert plan.schedule.warmup_steps == 0 and plan.network.train_unet and not plan.network.train_text_encoder
    assert any("UNet only" in w for w in plan.warnings)


def test_warnings_for_unusual_totals():
    assert steps_warning(2000) is None
    assert "well below" in steps_warning(300)
    assert "well above" in steps_warning(6000)
    assert "almost surely a mistake" in steps_warning(20000)


def test_no_images_is_a_clear_error(tmp_path):
    (tmp_path / "images" / "10_empty").mkdir(parents=True)
    with pytest.raises(UserError, match="no usable training images"):
        plan_for(tmp_path)


def test_plan_is_immutable_and_serialisable(tmp_path):
    make_folder(tmp_path / "images", "2_x", 4)
    plan = plan_for(tmp_path)
    with pytest.raises(Exception):
        plan.total_steps = 5  # type: ignore[misc]
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["total_steps"] == plan.total_steps and data["buckets"] == {"512x512": 8}


def test_dataset_toml_settings_drive_the_plan(tmp_path):
    make_folder(tmp_path / "imgs", "a", 6)
    (tmp_path / "data.toml").write_text(
        '[general]\nresolution = 768\n[[datasets]]\nbatch_size = 3\n'
        '[[datasets.subsets]]\nimage_dir = "imgs/a"\nnum_repeats = 4\n')
    data = {"schema_version": 1, "base_model": "builtin:tiny", "dataset_config": "data.toml", "batch_size": 1,
            "output_name": "toml_run"}
    (tmp_path / "a.json").write_text(json.dumps(data))
    plan = TrainPlan.from_answers(A.load(tmp_path / "a.json"))
    assert plan.data.batch_size == 3 and plan.resolution == (768, 768)
    assert (plan.images_per_epoch, plan.steps_per_epoch) == (24, 8)


def test_held_out_images_leave_the_steps_and_step_saves_are_planned(tmp_path):
    make_folder(tmp_path / "images", "10_char", 10)
    plan = plan_for(tmp_path, validation_split=0.2, batch_size=2, epochs=2, save_every_n_steps=30)
    assert (plan.train_scan.total_images, plan.validation.images) == (8, 2)
    assert plan.total_steps == 8 * 10 // 2 * 2 == 80
    names = [Path(p).name for p in plan.output_files]
    assert names == ["char-000001.safetensors", "char-step00000030.safetensors", "char-step00000060.safetensors",
                     "char.safetensors"]
    assert plan.validation.seed == plan.run.seed == 42 and plan.run.tensorboard is True
    from easytrain.commands.check import plan_lines

    assert "    validation: 2 held-out images, never trained on; their loss is measured at each saved file" in (
        plan_lines(plan))


def run_check(tmp_path, capsys, **answers) -> tuple[int, str]:
    from easytrain.cli import main

    data = {"schema_version": 1, "base_model": "builtin:tiny", "image_folder": "images", **answers}
    (tmp_path / "c.json").write_text(json.dumps(data))
    code = main(["check", str(tmp_path / "c.json")])
    return code, capsys.readouterr().err


def test_check_refuses_a_split_that_leaves_no_training_image(tmp_path, capsys):
    make_folder(tmp_path / "images", "10_char", 6)
    make_folder(tmp_path / "images", "2_one", 1)
    code, err = run_check(tmp_path, capsys, validation_split=0.5)
    assert code == 2 and err.startswith("easytrain: validation_split: 0.5 holds out all 1 image(s) of ")
    assert "Traceback" not in err


def test_check_refuses_an_empty_or_missing_validation_folder(tmp_path, capsys):
    make_folder(tmp_path / "images", "10_char", 6)
    (tmp_path / "held").mkdir()
    code, err = run_check(tmp_path, capsys, validation_folder="held")
    assert code == 2 and err.startswith("easytrain: validation_folder: ") and "has no images" in err
    code, err = run_check(tmp_path, capsys, validation_folder="gone")
    assert code == 2 and "validation_folder" in err and "not found" in err


def test_another_split_is_another_dataset_for_resume(tmp_path):
    from easytrain.train.state import fingerprint, fingerprint_differences

    make_folder(tmp_path / "images", "10_char", 10)
    plain = plan_for(tmp_path)
    assert fingerprint_differences(fingerprint(plain), fingerprint(plan_for(tmp_path, validation_split=0.0))) == []
    split = plan_for(tmp_path, validation_split=0.2)
    assert [line.split(":")[0] for line in fingerprint_differences(fingerprint(plain), fingerprint(split))] == [
        "dataset", "images_per_epoch", "steps_per_epoch", "total_steps", "warmup_steps"]

"""The answers file: strict load with every problem named, atomic save, schema."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from easytrain import answers as A
from easytrain import questions as Q
from easytrain.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, data) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data, encoding="utf-8")
    return path


@pytest.fixture
def base(tmp_path, demo_images):
    return {"schema_version": 1, "base_model": "builtin:tiny", "image_folder": "images"}


def problems_of(path: Path) -> list[str]:
    with pytest.raises(A.AnswersError) as err:
        A.load(path)
    assert str(path) in str(err.value)
    return err.value.problems


def test_round_trip_of_every_field(tmp_path, demo_images):
    (tmp_path / "reg" / "1_person").mkdir(parents=True)
    (tmp_path / "prompts.txt").write_text("a shape\n")
    (tmp_path / "data.toml").write_text("")
    (tmp_path / "old.safetensors").write_bytes(b"")
    full = {
        "schema_version": 1, "base_model": "builtin:tiny", "architecture": "sd1", "image_folder": "images",
        "output_folder": "out", "output_name": "round_trip", "realistic_model": True,
        "use_regularization": True, "reg_image_folder": "reg", "optimizer": "Lion", "network_type": "LoCon",
        "network_dim": 32, "network_alpha": 3.5, "conv_dim": 6, "conv_alpha": 2.0, "unet_lr": 2e-4,
        "text_encoder_lr": 0.0, "scheduler": "polynomial", "scheduler_power": 2.0, "warmup_ratio": 0.1,
        "resolution": 768, "height": 512, "batch_size": 3, "length_by": "steps", "max_steps": 1234,
        "save_every_n_epochs": 0, "save_every_n_steps": 500, "shuffle_captions": False, "keep_tokens": 0, "train_parts": "unet_only",
        "flip_aug": True, "comment": "trigger: rt", "bucket_no_upscale": True, "mixed_precision": "bf16",
        "save_precision": "float", "cache_latents": "disk", "min_snr_gamma": 0.0, "tag_summary": "alphabetical",
        "sample_images": True, "sample_prompts": "prompts.txt", "sample_every_n_epochs": 2,
        "sample_every_n_steps": 250, "validation_split": 0.2,
        "noise_offset": 0.05, "max_token_length": 150, "caption_extension": ".caption", "enable_bucket": True,
        "min_bucket_reso": 320, "max_bucket_reso": 960, "bucket_reso_steps": 32, "gradient_checkpointing": False,
        "seed": 7, "validation_seed": 3, "validate_every_n_steps": 50, "max_grad_norm": 0.5, "save_state": True, "keep_states": 3,
        "optimizer_args": {"weight_decay": 0.01}, "clip_skip": 1, "prior_loss_weight": 0.5,
        "dataset_config": "data.toml", "folder_repeats": {"5_shapes": 2}, "vae": "builtin:tiny",
        "network_weights": "old.safetensors", "sample_before_training": True,
        "torch_compile": True, "log_every_n_steps": 5, "tensorboard": False,
        "gradient_accumulation_steps": 4, "caption_dropout_rate": 0.1, "caption_dropout_every_n_epochs": 3,
        "caption_tag_dropout_rate": 0.2, "keep_tokens_separator": "|||", "random_crop": True, "color_aug": True,
        "alpha_mask": True, "mask_folder": "reg", "multires_noise_iterations": 6, "multires_noise_discount": 0.4,
        "adaptive_noise_scale": 0.005, "ip_noise_gamma": 0.1, "zero_terminal_snr": True,
        "v_parameterization": True, "scale_v_pred_loss_like_noise_pred": True, "debiased_estimation_loss": True,
        "loss_type": "huber", "huber_schedule": "exponential", "huber_c": 0.2, "huber_scale": 1.5, "dora": True,
        "down_lr_weight": "cosine+0.5", "mid_lr_weight": "0.5", "up_lr_weight": "1,1,0.5",
        "block_lr_zero_threshold": 0.1, "block_dims": ",".join(["4"] * 25), "block_alphas": ",".join(["2"] * 25),
        "conv_block_dims": ",".join(["2"] * 25), "conv_block_alphas": ",".join(["1"] * 25), "ema": True,
        "ema_decay": 0.995,
    }
    assert set(full) - {"schema_version"} == (set(Q.KEYS) - {"epochs", "scheduler_restarts", "validation_folder"}
                                              - Q.FAMILY_OPTION_KEYS)   # a family's own: in its tests
    src = write(tmp_path / "in.json", full)
    loaded = A.load(src)
    for key, value in full.items():
        if key != "schema_version":
            assert getattr(loaded, key) == value, key
    A.save(loaded, tmp_path / "out.json")
    text = (tmp_path / "out.json").read_text()
    assert json.loads(text) == full
    assert list(json.loads(text)) == list(full)  # question order, schema_version first
    assert text.startswith('{\n  "schema_version": 1,')


def test_defaults_filled_for_missing_optional_keys(tmp_path, base):
    loaded = A.load(write(tmp_path / "a.json", base))
    assert loaded.network_dim == 16 and loaded.optimizer == "AdamW8bit" and loaded.epochs == 10
    assert loaded.output_name == "shapes"  # from the 5_shapes folder
    assert loaded.conv_dim is None  # does not apply to LoRA


@pytest.mark.parametrize("key,value,expect", [
    ("network_dim", "abc", "network_dim: must be an integer from 1 to 1024, got 'abc'"),
    ("network_dim", 0, "network_dim: must be an integer from 1 to 1024, got 0"),
    ("network_dim", 2000, "network_dim: must be an integer from 1 to 1024, got 2000"),
    ("unet_lr", -1, "unet_lr: must be a number >= 0, got -1"),
    ("flip_aug", "yes", "flip_aug: must be true or false, got 'yes'"),
    ("optimizer", "Adam", "optimizer: must be one of 'AdamW8bit'"),
    ("resolution", 500, "resolution: must be an integer from 64 to 4096 and a multiple of 64, got 500"),
    ("output_name", "a b", "output_name: may only contain letters"),
    ("image_folder", "nowhere", "image_folder: folder not found"),
    ("base_model", "model.bin", "base_model: must end in .safetensors or .sft or .ckpt"),
    ("base_model", "missing.safetensors", "base_model: file not found"),
    ("warmup_ratio", 0.9, "warmup_ratio: must be a number from 0 to 0.5, got 0.9"),
])
def test_each_bad_value_is_named(tmp_path, base, key, value, expect):
    problems = problems_of(write(tmp_path / "bad.json", {**base, key: value}))
    assert any(expect in p for p in problems), problems


def test_unknown_key_is_an_error_with_a_hint(tmp_path, base):
    problems = problems_of(write(tmp_path / "bad.json", {**base, "network_dims": 16}))
    assert problems == ["network_dims: unknown key (did you mean 'network_dim'?); see `easytrain questions` for the keys"]


def test_missing_required_key(tmp_path):
    problems = problems_of(write(tmp_path / "bad.json", {"schema_version": 1, "base_model": "builtin:tiny"}))
    assert any(p.startswith("image_folder: missing; it is required") for p in problems)


def test_every_problem_reported_at_once(tmp_path, base):
    data = {**base, "network_dim": "x", "batch_size": 0, "typo": 1, "save_precision": "fp8"}
    problems = problems_of(write(tmp_path / "bad.json", data))
    assert [p.split(":")[0] for p in problems] == ["typo", "network_dim", "batch_size", "save_precision"]


def test_not_json_and_not_an_object(tmp_path):
    with pytest.raises(UserError, match=r"not valid JSON \(line 1"):
        A.load(write(tmp_path / "x.json", "{oops"))
    with pytest.raises(UserError, match="must hold a JSON object"):
        A.load(write(tmp_path / "y.json", "[1, 2]"))
    with pytest.raises(UserError, match="answers file not found"):
        A.load(tmp_path / "none.json")


def test_relative_paths_resolve_against_the_file(tmp_path, base):
    sub = tmp_path / "elsewhere"
    sub.mkdir()
    loaded = A.load(write(tmp_path / "a.json", base))
    assert loaded.path("image_folder") == (tmp_path / "images").resolve()
    # Saved elsewhere, paths become absolute so the copy still points at the data.
    A.save(loaded, sub / "copy.json")
    again = A.load(sub / "copy.json")
    assert again.path("image_folder") == (tmp_path / "images").resolve()
    # Saved beside the original, relative paths stay relative.
    A.save(loaded, tmp_path / "b.json")
    assert json.loads((tmp_path / "b.json").read_text())["image_folder"] == "images"


def test_save_is_atomic(tmp_path, base, monkeypatch):
    target = tmp_path / "a.json"
    A.save(A.load(write(target, base)), target)
    before = target.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        A.save(A.load(target).replace(network_dim=64), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_replace_reapplies_conditions(tmp_path, base):
    loaded = A.load(write(tmp_path / "a.json", {**base, "network_type": "LoCon"}))
    assert loaded.conv_dim == 8
    assert loaded.replace(network_type="LoRA").conv_dim is None


def test_shipped_schema_matches_the_model():
    shipped = json.loads((REPO / "answers" / "answers.schema.json").read_text())
    assert shipped == A.json_schema(), "run `easytrain schema --write answers/answers.schema.json`"


def test_demo_answers_validate_against_the_schema():
    jsonschema = pytest.importorskip("jsonschema")
    demo = json.loads((REPO / "answers" / "demo.json").read_text())
    jsonschema.validate(demo, A.json_schema())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**demo, "network_dim": 0}, A.json_schema())

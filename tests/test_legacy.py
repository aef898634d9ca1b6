"""Popup-era and kohya_ss GUI answers files load with their values mapped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from easytrain import answers as A

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def legacy_dir(tmp_path, demo_images):
    (tmp_path / "model.safetensors").write_bytes(b"")
    for name in ("popup_era.json", "kohya_ss.json"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    return tmp_path


def test_popup_era_file_maps_every_value(legacy_dir):
    a = A.load(legacy_dir / "popup_era.json")
    assert a.path("base_model") == (legacy_dir / "model.safetensors").resolve()
    assert a.path("image_folder") == (legacy_dir / "images").resolve()
    assert (a.output_folder, a.output_name, a.comment) == ("out", "popup_char", "trigger: popchar")
    assert (a.optimizer, a.optimizer_args) == ("DAdaptAdam", {"decouple": True, "weight_decay": 0.01, "betas": [0.9, 0.99]})
    assert (a.scheduler, a.scheduler_restarts, a.warmup_ratio) == ("cosine_with_restarts", 4, 0.1)
    # learning_rate stands in for an unset UNet rate; the TE rate given wins.
    assert (a.unet_lr, a.text_encoder_lr) == (1.0, 0.5)
    assert (a.network_type, a.network_dim, a.network_alpha, a.conv_dim, a.conv_alpha) == ("LoCon", 32, 16.0, 16, 8.0)
    assert (a.resolution, a.height, a.batch_size, a.length_by, a.epochs) == (768, 512, 3, "epochs", 12)
    assert (a.save_every_n_epochs, a.shuffle_captions, a.keep_tokens, a.flip_aug) == (2, True, 2, True)
    assert (a.clip_skip, a.realistic_model, a.seed, a.mixed_precision, a.save_precision) == (2, False, 23, "bf16", "fp16")
    assert (a.cache_latents, a.min_snr_gamma, a.noise_offset, a.max_token_length) == ("disk", 5.0, 0.05, 150)
    assert (a.min_bucket_reso, a.max_bucket_reso, a.bucket_no_upscale, a.tag_summary) == (320, 960, True, "alphabetical")
    assert (a.train_parts, a.use_regularization, a.sample_images, a.architecture) == ("both", False, False, "auto")
    assert (a.gradient_checkpointing, a.save_state) == (True, False)
    assert any("popup-era" in w for w in a.warnings)
    unmapped = [w for w in a.warnings if w.startswith("ignored keys")]
    assert unmapped and "face_crop_aug_range" in unmapped[0]
    assert "color_aug" not in unmapped[0] and "gradient_acc_steps" not in unmapped[0]   # mapped now
    assert (a.color_aug, a.random_crop, a.gradient_accumulation_steps) == (False, False, 1)


def test_kohya_ss_file_maps_every_value(legacy_dir):
    a = A.load(legacy_dir / "kohya_ss.json")
    assert (a.output_name, a.network_type, a.network_dim, a.network_alpha) == ("kohya_char", "LoRA", 16, 8.0)
    assert (a.unet_lr, a.text_encoder_lr) == (1e-4, 5e-5)
    assert (a.scheduler, a.warmup_ratio) == ("cosine", pytest.approx(0.10))  # lr_warmup is a percent
    assert (a.resolution, a.height) == (512, 640)  # max_resolution "512,640"
    assert (a.batch_size, a.epochs, a.length_by, a.save_every_n_epochs) == (2, 8, "epochs", 1)
    assert (a.clip_skip, a.realistic_model, a.keep_tokens, a.seed) == (1, True, 1, 1234)
    assert (a.optimizer, a.optimizer_args) == ("AdamW8bit", {"weight_decay": 0.05, "betas": [0.9, 0.999]})
    assert (a.max_token_length, a.cache_latents, a.shuffle_captions, a.bucket_no_upscale) == (75, "memory", False, True)
    assert (a.min_snr_gamma, a.gradient_checkpointing, a.comment) == (0.0, False, "kc")
    assert any("kohya_ss" in w for w in a.warnings)


def test_popup_typo_sample_every_n_epoch(legacy_dir):
    data = json.loads((legacy_dir / "popup_era.json").read_text())
    (legacy_dir / "prompts.txt").write_text("a red circle\n")
    data.update(sample_prompts="prompts.txt", sample_every_n_epoch=3)
    (legacy_dir / "p.json").write_text(json.dumps(data))
    a = A.load(legacy_dir / "p.json")
    assert (a.sample_images, a.sample_prompts, a.sample_every_n_epochs) == (True, "prompts.txt", 3)


def test_kohya_steps_and_lycoris_types(legacy_dir):
    data = json.loads((legacy_dir / "kohya_ss.json").read_text())
    data.update(max_train_steps="900", LoRA_type="LyCORIS/LoHa", conv_dim=4, conv_alpha=1, v2=True,
                v_parameterization=True)
    (legacy_dir / "k.json").write_text(json.dumps(data))
    a = A.load(legacy_dir / "k.json")
    assert (a.length_by, a.max_steps, a.epochs) == ("steps", 900, None)
    assert (a.network_type, a.conv_dim, a.conv_alpha, a.architecture) == ("LoHa", 4, 1.0, "sd2-v")


@pytest.mark.parametrize("source, extra, arch, parts", [
    ("kohya_ss.json", dict(sdxl=True, network_train_unet_only=True, cache_text_encoder_outputs=True),
     "sdxl", "unet_only"),
    ("kohya_ss.json", dict(sdxl=True, v_parameterization=True), "sdxl-v", "both"),
    ("popup_era.json", dict(sdxl=True, v_parameterization=True, unet_only=True), "sdxl-v", "unet_only"),
])
def test_sdxl_settings_of_the_old_tools(legacy_dir, source, extra, arch, parts):
    data = json.loads((legacy_dir / source).read_text()) | extra
    (legacy_dir / "x.json").write_text(json.dumps(data))
    a = A.load(legacy_dir / "x.json")
    assert (a.architecture, a.train_parts) == (arch, parts)
    assert not any("cache_text_encoder_outputs" in w for w in a.warnings)


def test_bad_legacy_value_is_named_by_our_key(legacy_dir):
    data = json.loads((legacy_dir / "popup_era.json").read_text())
    data["net_dim"] = "lots"
    (legacy_dir / "bad.json").write_text(json.dumps(data))
    with pytest.raises(A.AnswersError) as err:
        A.load(legacy_dir / "bad.json")
    assert any(p.startswith("network_dim: must be an integer") for p in err.value.problems)


def test_saving_a_legacy_file_writes_our_format(legacy_dir):
    a = A.load(legacy_dir / "popup_era.json")
    A.save(a, legacy_dir / "converted.json")
    data = json.loads((legacy_dir / "converted.json").read_text())
    assert list(data)[0] == "schema_version" and "net_dim" not in data and data["network_dim"] == 32
    assert A.load(legacy_dir / "converted.json") == a


def test_kohya_step_saves_validation_and_logging_map(legacy_dir):
    a = A.load(legacy_dir / "kohya_ss.json")
    assert a.tensorboard is True            # kohya logs to TensorBoard when only logging_dir is set
    data = json.loads((legacy_dir / "kohya_ss.json").read_text())
    data.update(save_every_n_steps="500", sample_every_n_steps=250, sample_prompts="prompts.txt",
                validation_split="0.1", validation_seed=7, validate_every_n_steps=100, log_with="wandb")
    (legacy_dir / "prompts.txt").write_text("a red circle\n")
    (legacy_dir / "k.json").write_text(json.dumps(data))
    a = A.load(legacy_dir / "k.json")
    assert (a.save_every_n_steps, a.sample_every_n_steps) == (500, 250)
    assert (a.validation_split, a.validation_seed, a.validate_every_n_steps) == (0.1, 7, 100)
    assert a.tensorboard is False
    assert not [w for w in a.warnings if w.startswith("ignored keys") and "validation" in w]


def test_a_legacy_vae_path_is_kept(tmp_path):
    from easytrain.legacy import import_legacy

    for data in ({"pretrained_model_name_or_path": "m.safetensors", "train_data_dir": "img", "LoRA_type": "Standard",
                  "vae": "/models/vae-ft-mse.safetensors"},
                 {"base_model": "m.safetensors", "img_folder": "img", "net_dim": 16, "vae": "/models/kl-f8.pt"}):
        out, _warnings = import_legacy(data)
        assert out["vae"] == data["vae"]


# ---------------------------------------------------------------- kohya's further settings (issue 16)

KOHYA_FURTHER = {
    "noise_offset": 0.05, "gradient_accumulation_steps": 4, "caption_dropout_rate": "0.1", "caption_dropout_every_n_epochs": 3.0,
    "caption_tag_dropout_rate": 0.2, "keep_tokens_separator": "|||", "random_crop": True, "color_aug": "true",
    "multires_noise_iterations": 8, "multires_noise_discount": 0.4, "adaptive_noise_scale": 0.005,
    "ip_noise_gamma": 0.1, "zero_terminal_snr": True, "v_parameterization": True,
    "scale_v_pred_loss_like_noise_pred": True, "debiased_estimation_loss": True, "loss_type": "huber",
    "huber_schedule": "exponential", "huber_c": 0.2, "huber_scale": 1.5, "alpha_mask": True, "masked_loss": True,
    "down_lr_weight": "cosine+0.5", "mid_lr_weight": "0.5", "up_lr_weight": "1,1,0.5",
    "block_lr_zero_threshold": 0.1, "block_dims": ",".join(["4"] * 25), "block_alphas": ",".join(["2"] * 25),
    "conv_block_dims": ",".join(["2"] * 25), "conv_block_alphas": ",".join(["1"] * 25),
}
EXPECTED_FURTHER = {
    "gradient_accumulation_steps": 4, "caption_dropout_rate": 0.1, "caption_dropout_every_n_epochs": 3,
    "caption_tag_dropout_rate": 0.2, "keep_tokens_separator": "|||", "random_crop": True, "color_aug": True,
    "multires_noise_iterations": 8, "multires_noise_discount": 0.4, "adaptive_noise_scale": 0.005,
    "ip_noise_gamma": 0.1, "zero_terminal_snr": True, "v_parameterization": True,
    "scale_v_pred_loss_like_noise_pred": True, "debiased_estimation_loss": True, "loss_type": "huber",
    "huber_schedule": "exponential", "huber_c": 0.2, "huber_scale": 1.5, "alpha_mask": True,
    "down_lr_weight": "cosine+0.5", "mid_lr_weight": "0.5", "up_lr_weight": "1,1,0.5",
    "block_lr_zero_threshold": 0.1, "block_dims": ",".join(["4"] * 25), "block_alphas": ",".join(["2"] * 25),
    "conv_block_dims": ",".join(["2"] * 25), "conv_block_alphas": ",".join(["1"] * 25), "dora": True,
}


def _further(a) -> dict:
    return {key: a.get(key) for key in EXPECTED_FURTHER}


def test_kohya_ss_gui_maps_every_further_setting(legacy_dir):
    data = json.loads((legacy_dir / "kohya_ss.json").read_text())
    data.update(KOHYA_FURTHER, LoRA_type="LyCORIS/LoCon", conv_dim=4, conv_alpha=2, dora_wd=True)
    (legacy_dir / "further.json").write_text(json.dumps(data))
    a = A.load(legacy_dir / "further.json")
    assert _further(a) == EXPECTED_FURTHER
    assert (a.network_type, a.conv_dim, a.architecture) == ("LoCon", 4, "auto")
    ignored = " ".join(w for w in a.warnings if w.startswith("ignored keys")).replace(",", " ").split()
    assert not set(KOHYA_FURTHER) & set(ignored) and "dora_wd" not in ignored


def test_kohya_toml_maps_the_command_line_names(legacy_dir):
    further = "\n".join(f"{k} = {json.dumps(v)}" for k, v in KOHYA_FURTHER.items()
                        if k not in ("down_lr_weight", "block_dims", "dora_wd"))
    (legacy_dir / "kohya.toml").write_text(f"""
[model_arguments]
pretrained_model_name_or_path = "model.safetensors"
v2 = false

[dataset_arguments]
train_data_dir = "images"
resolution = "512,768"
shuffle_caption = true
keep_tokens = 1

[training_arguments]
output_dir = "out"
output_name = "toml_char"
train_batch_size = 2
max_train_steps = 400
lr_warmup_steps = 40
optimizer_type = "AdamW8bit"
optimizer_args = ["weight_decay=0.05"]
learning_rate = 1e-4
unet_lr = 2e-4
lr_scheduler = "cosine"
mixed_precision = "bf16"
network_module = "lycoris.kohya"
network_dim = 16
network_alpha = 8
network_args = ["algo=locon", "conv_dim=4", "conv_alpha=1", "dora_wd=True", "down_lr_weight=cosine+0.5",
                "block_dims={','.join(['4'] * 25)}", "rank_dropout=0.1"]
{further}
""")
    a = A.load(legacy_dir / "kohya.toml")
    assert _further(a) == EXPECTED_FURTHER
    assert (a.output_name, a.resolution, a.height, a.batch_size) == ("toml_char", 512, 768, 2)
    assert (a.length_by, a.max_steps, a.warmup_ratio) == ("steps", 400, pytest.approx(0.1))
    assert (a.optimizer, a.optimizer_args, a.unet_lr, a.text_encoder_lr) == ("AdamW8bit", {"weight_decay": 0.05}, 2e-4, 1e-4)
    assert (a.network_type, a.network_dim, a.conv_dim, a.conv_alpha) == ("LoCon", 16, 4, 1.0)
    assert any("kohya TOML" in w for w in a.warnings)
    ignored = [w for w in a.warnings if w.startswith("ignored keys")]
    assert ignored and "network_args rank_dropout" in ignored[0]


def test_kohya_toml_warmup_steps_without_a_total_are_named(legacy_dir):
    (legacy_dir / "w.toml").write_text('pretrained_model_name_or_path = "model.safetensors"\n'
                                      'train_data_dir = "images"\nlr_warmup_steps = 50\n'
                                      'network_module = "networks.oft"\n')
    a = A.load(legacy_dir / "w.toml")
    ignored = [w for w in a.warnings if w.startswith("ignored keys")][0]
    assert "lr_warmup_steps" in ignored and "network_module networks.oft" in ignored
    (legacy_dir / "bad.toml").write_text("x = [")
    with pytest.raises(Exception, match="not valid TOML"):
        A.load(legacy_dir / "bad.toml")


def test_popup_era_further_settings(legacy_dir):
    data = json.loads((legacy_dir / "popup_era.json").read_text())
    data.update(gradient_acc_steps=3, color_aug=True, cache_latents=False, v_parameterization=True,
                network_args={"algo": "lora", "conv_dim": 16, "conv_alpha": 8, "down_lr_weight": "0,1,1",
                              "block_dims": [8] * 25})
    (legacy_dir / "p.json").write_text(json.dumps(data))
    a = A.load(legacy_dir / "p.json")
    assert (a.gradient_accumulation_steps, a.color_aug, a.v_parameterization) == (3, True, True)
    assert (a.down_lr_weight, a.block_dims) == ("0,1,1", ",".join(["8"] * 25))
    data.update(gradient_checkpointing=False)              # the popup scripts dropped accumulation then
    (legacy_dir / "p.json").write_text(json.dumps(data))
    assert A.load(legacy_dir / "p.json").gradient_accumulation_steps == 1


def test_sdxl_block_settings_pass_through_both_kohya_importers(legacy_dir):
    sdxl_dims = ",".join(["4"] * 11 + ["0"] + ["4"] * 11)          # 23 blocks on SDXL, the middle transformer out
    nine = ",".join(["0.5"] * 9)
    data = json.loads((legacy_dir / "kohya_ss.json").read_text())
    data.update(sdxl=True, block_dims=sdxl_dims, down_lr_weight=nine, mid_lr_weight="1,0.5,1")
    (legacy_dir / "xl.json").write_text(json.dumps(data))
    a = A.load(legacy_dir / "xl.json")
    assert (a.architecture, a.block_dims, a.down_lr_weight, a.mid_lr_weight) == ("sdxl", sdxl_dims, nine, "1,0.5,1")
    data.update(block_dims=",".join(["4"] * 25))                    # SD's count with the sdxl flag: named
    (legacy_dir / "xl25.json").write_text(json.dumps(data))
    with pytest.raises(Exception, match="block_dims: needs 23 values on SDXL"):
        A.load(legacy_dir / "xl25.json")
    (legacy_dir / "xl.toml").write_text(
        'pretrained_model_name_or_path = "model.safetensors"\ntrain_data_dir = "images"\n'
        f'network_module = "networks.lora"\nnetwork_args = ["block_dims={sdxl_dims}", "up_lr_weight=cosine"]\n')
    a = A.load(legacy_dir / "xl.toml")                              # sdxl_train_network.py's TOML: no sdxl key
    assert (a.architecture, a.block_dims, a.up_lr_weight) == ("auto", sdxl_dims, "cosine")

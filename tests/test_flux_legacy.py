"""kohya's Flux arguments in a kohya TOML (flux_train_network.py --config_file) and a kohya_ss GUI JSON, mapped to
our answers; a GUI file for another model with the GUI's Flux fields at their defaults maps none of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from easytrain import answers as A


@pytest.fixture(scope="module")
def tiny():
    from easytrain.families.flux.tiny import tiny_flux_paths

    return tiny_flux_paths()


def _dataset(tmp_path: Path) -> Path:
    from _train_helpers import make_colour_dataset

    return make_colour_dataset(tmp_path / "images", size=64)


def test_a_kohya_flux_toml_maps_kohyas_flux_arguments(tmp_path, tiny):
    images = _dataset(tmp_path)
    (tmp_path / "flux.toml").write_text(f"""
[model_arguments]
pretrained_model_name_or_path = "{tiny.dev}"
clip_l = "{tiny.clip_l}"
t5xxl = "{tiny.t5xxl}"
ae = "{tiny.ae}"
fp8_base = true
blocks_to_swap = 18
t5xxl_max_token_length = 512
apply_t5_attn_mask = true

[dataset_arguments]
train_data_dir = "{images}"
resolution = "1024,1024"
cache_latents = true

[training_arguments]
output_dir = "{tmp_path / 'out'}"
output_name = "my_flux_lora"
network_module = "networks.lora_flux"
network_dim = 16
network_alpha = 1
network_train_unet_only = true
learning_rate = 1e-4
optimizer_type = "AdamW8bit"
lr_scheduler = "constant"
max_train_epochs = 10
mixed_precision = "bf16"
gradient_checkpointing = true
cache_text_encoder_outputs = true
guidance_scale = 1.0
timestep_sampling = "flux_shift"
sigmoid_scale = 1.0
discrete_flow_shift = 3.1582
model_prediction_type = "raw"
weighting_scheme = "none"
""")
    a = A.load(tmp_path / "flux.toml")
    assert (a.get("clip_l"), a.get("t5xxl"), a.vae) == (str(tiny.clip_l), str(tiny.t5xxl), str(tiny.ae))
    assert (a.get("fp8_base"), a.get("blocks_to_swap"), a.get("apply_t5_attn_mask")) == (True, 18, True)
    assert (a.get("timestep_sampling"), a.get("discrete_flow_shift"), a.get("sigmoid_scale")) == ("flux_shift", 3.1582, 1.0)
    assert (a.get("model_prediction_type"), a.get("guidance_scale"), a.get("weighting_scheme")) == ("raw", 1.0, "none")
    assert (a.network_dim, a.network_alpha, a.train_parts, a.unet_lr) == (16, 1.0, "unet_only", 1e-4)
    assert not [w for w in a.warnings if w.startswith("ignored keys") or "t5xxl_max_token_length" in w]


def test_a_different_t5_length_is_a_warning(tmp_path, tiny):
    (tmp_path / "f.toml").write_text(f'pretrained_model_name_or_path = "{tiny.dev}"\nt5xxl = "{tiny.t5xxl}"\n'
                                     f'train_data_dir = "{_dataset(tmp_path)}"\nt5xxl_max_token_length = 128\n')
    a = A.load(tmp_path / "f.toml")
    assert any(w.startswith("t5xxl_max_token_length 128 is not used") for w in a.warnings)


def test_kohyas_chroma_model_type(tmp_path, tiny):
    (tmp_path / "c.toml").write_text(f'pretrained_model_name_or_path = "{tiny.chroma}"\nmodel_type = "chroma"\n'
                                     f't5xxl = "{tiny.t5xxl}"\nae = "{tiny.ae}"\napply_t5_attn_mask = true\n'
                                     f'guidance_scale = 0.0\ntimestep_sampling = "sigmoid"\n'
                                     f'train_data_dir = "{_dataset(tmp_path)}"\n')
    a = A.load(tmp_path / "c.toml")
    assert (a.architecture, a.get("timestep_sampling"), a.get("apply_t5_attn_mask")) == ("chroma", "sigmoid", True)


def kohya_ss_gui(tmp_path: Path, model: Path, **fields) -> Path:
    """A kohya_ss GUI (v24/v25) LoRA config as its Save button writes it: every field, Flux's included."""
    data = {
        "LoRA_type": "Flux1", "pretrained_model_name_or_path": str(model), "train_data_dir": str(_dataset(tmp_path)),
        "output_dir": str(tmp_path / "out"), "output_name": "gui_flux", "logging_dir": "", "reg_data_dir": "",
        "train_batch_size": 1, "epoch": 10, "max_train_steps": 0, "max_train_epochs": 0, "save_every_n_epochs": 1,
        "mixed_precision": "bf16", "save_precision": "bf16", "seed": 42, "max_resolution": "1024,1024",
        "enable_bucket": True, "min_bucket_reso": 256, "max_bucket_reso": 2048, "bucket_reso_steps": 64,
        "bucket_no_upscale": True, "cache_latents": True, "cache_latents_to_disk": True, "caption_extension": ".txt",
        "clip_skip": 1, "flip_aug": False, "gradient_accumulation_steps": 1, "gradient_checkpointing": True,
        "keep_tokens": 0, "learning_rate": 0.0001, "lr_scheduler": "constant", "lr_scheduler_num_cycles": 1,
        "lr_scheduler_power": 1, "lr_warmup": 0, "lr_warmup_steps": 0, "max_grad_norm": 1, "max_token_length": 75,
        "min_snr_gamma": 0, "network_alpha": 16, "network_dim": 16, "network_weights": "", "noise_offset": 0,
        "noise_offset_type": "Original", "optimizer": "AdamW8bit", "optimizer_args": "", "sample_prompts": "",
        "sample_every_n_epochs": 0, "sample_every_n_steps": 0, "save_model_as": "safetensors", "save_state": False,
        "sdxl": False, "shuffle_caption": False, "text_encoder_lr": 0, "unet_lr": 0.0001,
        "network_train_unet_only": True, "network_train_text_encoder_only": False, "v2": False,
        "v_parameterization": False, "xformers": "sdpa", "vae": "", "huber_c": 0.1, "huber_schedule": "snr",
        "loss_type": "l2", "ip_noise_gamma": 0, "debiased_estimation_loss": False, "scale_v_pred_loss_like_noise_pred": False,
        # the GUI's Flux.1 tab
        "flux1_checkbox": True, "ae": "", "clip_l": "", "t5xxl": "", "t5xxl_max_token_length": 512,
        "discrete_flow_shift": 3.1582, "model_prediction_type": "raw", "timestep_sampling": "shift",
        "guidance_scale": 1.0, "sigmoid_scale": 1.0, "apply_t5_attn_mask": False, "fp8_base": True,
        "fp8_base_unet": False, "blocks_to_swap": 0, "split_mode": False, "train_blocks": "all",
        "split_qkv": False, "train_t5xxl": False, "t5xxl_lr": 0, "cpu_offload_checkpointing": False,
        "flux_fused_backward_pass": False, "mem_eff_save": False, "single_blocks_to_swap": 0,
        "double_blocks_to_swap": 0, "blockwise_fused_optimizers": False, "enable_all_linear": False,
        "img_attn_dim": "", "img_mlp_dim": "", "img_mod_dim": "", "single_dim": "", "txt_attn_dim": "",
        "txt_mlp_dim": "", "txt_mod_dim": "", "single_mod_dim": "", "in_dims": "", "weighting_scheme": "logit_normal",
    }
    data.update(fields)
    path = tmp_path / "gui.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def test_the_kohya_ss_gui_flux_tab(tmp_path, tiny):
    a = A.load(kohya_ss_gui(tmp_path, tiny.dev, ae=str(tiny.ae), clip_l=str(tiny.clip_l), t5xxl=str(tiny.t5xxl),
                            blocks_to_swap=16, train_t5xxl=True))
    assert a.architecture == "flux-dev"  # flux1_checkbox: the catalog's legacy flag
    assert (a.vae, a.get("clip_l"), a.get("t5xxl")) == (str(tiny.ae), str(tiny.clip_l), str(tiny.t5xxl))
    assert (a.get("fp8_base"), a.get("blocks_to_swap"), a.get("timestep_sampling"), a.get("guidance_scale")) == \
        (True, 16, "shift", 1.0)
    assert (a.get("weighting_scheme"), a.get("train_t5")) == ("logit_normal", True)
    ignored = [w for w in a.warnings if w.startswith("ignored keys")]
    assert not any("flux" in w or "t5xxl" in w or "blocks_to_swap" in w for w in ignored), ignored


def test_a_gui_file_for_another_model_keeps_no_flux_answers(tmp_path):
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"")
    a = A.load(kohya_ss_gui(tmp_path, model, flux1_checkbox=False, LoRA_type="Standard", fp8_base=False))
    assert a.get("timestep_sampling") is None and a.get("guidance_scale") is None and a.get("fp8_base") is None
    ignored = [w for w in a.warnings if w.startswith("ignored keys")]
    # at their defaults the GUI's Flux fields ask for nothing; only the ones set away from them are named
    assert not ignored or "split_mode" not in ignored[0] and "blocks_to_swap" not in ignored[0]

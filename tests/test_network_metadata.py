"""build_metadata: kohya's ss_* keys and modelspec.*, all strings, dicts as JSON."""

from __future__ import annotations

import datetime
import json

import pytest

from easytrain.network.metadata import build_metadata
from easytrain.network.spec import NetworkSpec


def test_full_metadata_for_an_sd1_run():
    spec = NetworkSpec("LoRA", dim=16, alpha=8.0)
    started = 1_700_000_000.5
    tags = {"5_alice": {"alice": 20, "smile": 7}}
    dirs = {"5_alice": {"n_repeats": 5, "img_count": 20}}
    meta = build_metadata(
        spec=spec, output_name="alice", training_started_at=started, comment="alice, smile",
        tag_frequency=tags, dataset_dirs=dirs, num_train_images=100, num_reg_images=0, steps=500, epoch=10,
        num_epochs=10, learning_rate=5e-4, unet_lr=5e-4, text_encoder_lr=1e-4, clip_skip=2, resolution=(512, 768),
        mixed_precision="bf16", seed=42, optimizer="AdamW8bit", lr_scheduler="cosine_with_restarts",
        shuffle_caption=True, keep_tokens=1,
    )
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    assert json.loads(meta["ss_tag_frequency"]) == tags
    assert json.loads(meta["ss_dataset_dirs"]) == dirs
    expected = {
        "ss_network_module": "networks.lora", "ss_network_dim": "16", "ss_network_alpha": "8.0",
        "ss_base_model_version": "sd_v1", "ss_v2": "False", "ss_output_name": "alice",
        "ss_training_comment": "alice, smile", "ss_num_train_images": "100", "ss_steps": "500", "ss_epoch": "10",
        "ss_learning_rate": "0.0005", "ss_unet_lr": "0.0005", "ss_text_encoder_lr": "0.0001", "ss_clip_skip": "2",
        "ss_resolution": "(512, 768)", "ss_training_started_at": "1700000000.5", "ss_shuffle_caption": "True",
        "modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": "stable-diffusion-v1/lora",
        "modelspec.implementation": "diffusers", "modelspec.title": "alice", "modelspec.resolution": "512x768",
        "modelspec.prediction_type": "epsilon", "modelspec.encoder_layer": "2",
        "modelspec.date": datetime.datetime.fromtimestamp(1_700_000_000).isoformat(),
    }
    assert {k: meta.get(k) for k in expected} == expected
    assert "ss_network_args" not in meta and "ss_seed" in meta
    assert not any(v == "None" for v in meta.values())


@pytest.mark.parametrize("arch,prediction,version,spec_arch,v2,reso", [
    ("sd2", "epsilon", "sd_v2", "stable-diffusion-v2-512/lora", "True", "512x512"),
    ("sd2-v", "v_prediction", "sd_v2_768_v", "stable-diffusion-v2-768-v/lora", "True", "768x768"),
    ("sdxl", "epsilon", "sdxl_base_v1-0", "stable-diffusion-xl-v1-base/lora", "False", "1024x1024"),
])
def test_architectures(arch, prediction, version, spec_arch, v2, reso):
    meta = build_metadata(spec=NetworkSpec("LoRA", 8, 4.0), output_name="x", arch=arch, prediction_type=prediction)
    assert meta["ss_base_model_version"] == version
    assert meta["modelspec.architecture"] == spec_arch
    assert meta["ss_v2"] == v2
    assert meta["modelspec.resolution"] == reso
    assert meta["modelspec.prediction_type"] == ("v" if prediction == "v_prediction" else "epsilon")
    implementation = "https://github.com/Stability-AI/generative-models" if arch == "sdxl" else "diffusers"
    assert meta["modelspec.implementation"] == implementation


def test_network_args_for_each_type():
    def args(spec):
        return json.loads(build_metadata(spec=spec, output_name="x")["ss_network_args"])

    assert args(NetworkSpec("LoCon", 16, 8.0, conv_dim=8, conv_alpha=4.0)) == {"conv_dim": "8", "conv_alpha": "4.0"}
    assert args(NetworkSpec("LoHa", 8, 4.0, conv_dim=4, conv_alpha=1.0))["algo"] == "loha"
    assert args(NetworkSpec("LoKr", 8, 4.0)) == {"algo": "lokr"}
    loha = build_metadata(spec=NetworkSpec("LoHa", 8, 4.0), output_name="x")
    assert loha["ss_network_module"] == "lycoris.kohya"


def test_extra_keys_and_bad_arch():
    meta = build_metadata(spec=NetworkSpec("LoRA", 8, 4.0), output_name="x", extra={"ss_custom": {"a": 1}})
    assert json.loads(meta["ss_custom"]) == {"a": 1}
    with pytest.raises(ValueError, match="arch"):
        build_metadata(spec=NetworkSpec("LoRA", 8, 4.0), output_name="x", arch="sd3")

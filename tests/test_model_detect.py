"""Architecture detection from file headers and folders, and the refusals for files that are not base models."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from easytrain.errors import UserError
from easytrain.families.detect import detect_architecture
from easytrain.model.detect import read_safetensors_header

from _model_helpers import write_fake_checkpoint


def test_detect_imports_only_the_standard_library():
    code = "import sys, easytrain.families.detect; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    loaded = set(out.stdout.split())
    assert not loaded & {"torch", "safetensors", "diffusers", "transformers", "numpy"}


def test_header_is_read_without_loading_tensors(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file({"a.b": torch.zeros(2, 3)}, str(path), metadata={"k": "v"})
    header = read_safetensors_header(path)
    assert header.tensors["a.b"]["shape"] == [2, 3]
    assert header.metadata == {"k": "v"}


def test_sd1(tmp_path):
    d = detect_architecture(write_fake_checkpoint(tmp_path / "anything-v3.safetensors", "sd1"))
    assert (d.arch, d.prediction_type, d.sure) == ("sd1", "epsilon", True)
    assert "SD 1" in d.description


def test_sd1_old_text_encoder_layout(tmp_path):
    path = tmp_path / "old.safetensors"
    save_file({
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1),
        "cond_stage_model.transformer.embeddings.token_embedding.weight": torch.zeros(2, 768),
    }, str(path))
    assert detect_architecture(path).arch == "sd1"


def test_sd2_without_a_hint_is_unsure(tmp_path):
    d = detect_architecture(write_fake_checkpoint(tmp_path / "mymodel.safetensors", "sd2"))
    assert (d.arch, d.prediction_type, d.sure) == ("sd2", None, False)
    assert "cannot be read from the weights" in d.description


@pytest.mark.parametrize("name, arch, prediction", [
    ("v2-1_768-ema-pruned.safetensors", "sd2-v", "v_prediction"),
    ("wd15-beta-v.safetensors", "sd2-v", "v_prediction"),
    ("v2-1_512-ema-pruned.safetensors", "sd2", "epsilon"),
])
def test_sd2_file_name_hints(tmp_path, name, arch, prediction):
    d = detect_architecture(write_fake_checkpoint(tmp_path / name, "sd2"))
    assert (d.arch, d.prediction_type, d.sure) == (arch, prediction, True)


@pytest.mark.parametrize("yaml_text, arch", [
    ('model:\n  params:\n    parameterization: "v"\n    image_size: 96\n', "sd2-v"),
    ("model:\n  params:\n    image_size: 64\n", "sd2"),
])
def test_sd2_sidecar_yaml(tmp_path, yaml_text, arch):
    path = write_fake_checkpoint(tmp_path / "mymodel.safetensors", "sd2")
    (tmp_path / "mymodel.yaml").write_text(yaml_text)
    d = detect_architecture(path)
    assert (d.arch, d.sure) == (arch, True)
    assert "mymodel.yaml" in d.description


def test_sd2_modelspec_metadata(tmp_path):
    path = write_fake_checkpoint(tmp_path / "m.safetensors", "sd2", metadata={"modelspec.prediction_type": "v"})
    assert detect_architecture(path).arch == "sd2-v"


def test_sdxl(tmp_path):
    d = detect_architecture(write_fake_checkpoint(tmp_path / "xl.safetensors", "sdxl"))
    assert (d.arch, d.prediction_type, d.sure, d.zero_terminal_snr) == ("sdxl", "epsilon", True, False)


@pytest.mark.parametrize("markers, arch, prediction, ztsnr, words", [
    (("v_pred",), "sdxl-v", "v_prediction", False, "v-prediction"),
    (("v_pred", "ztsnr"), "sdxl-v", "v_prediction", True, "v-prediction, zero terminal SNR"),
    (("ztsnr",), "sdxl", "epsilon", True, "zero terminal SNR"),
])
@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_sdxl_noobai_markers(tmp_path, markers, arch, prediction, ztsnr, words, suffix):
    """NoobAI-style v-pred files carry empty v_pred (and often ztsnr) tensors."""
    from _model_helpers import fake_checkpoint_tensors

    tensors = fake_checkpoint_tensors("sdxl") | {key: torch.zeros(0) for key in markers}
    path = tmp_path / f"noob{suffix}"
    if suffix == ".ckpt":
        torch.save({"state_dict": tensors}, path)
    else:
        save_file(tensors, str(path))
    d = detect_architecture(path)
    assert (d.arch, d.prediction_type, d.zero_terminal_snr) == (arch, prediction, ztsnr)
    assert d.description.endswith(words)


def test_sdxl_folder_with_v_prediction_and_zero_terminal_snr(tmp_path):
    root = _diffusers_folder(tmp_path / "m", 2048, "v_prediction", xl=True)
    config = root / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({"prediction_type": "v_prediction", "rescale_betas_zero_snr": True}))
    d = detect_architecture(root)
    assert (d.arch, d.prediction_type, d.zero_terminal_snr) == ("sdxl-v", "v_prediction", True)
    assert "zero terminal SNR" in d.description


def test_lora_file_is_refused(tmp_path):
    path = tmp_path / "my_lora.safetensors"
    save_file({
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 320),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(320, 4),
        "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(4.0),
    }, str(path))
    with pytest.raises(UserError) as err:
        detect_architecture(path)
    message = str(err.value)
    assert "this looks like a LoRA (lora_unet_" in message
    assert "give the checkpoint you generate images with" in message
    assert str(path) in message


def test_random_tensors_are_refused(tmp_path):
    path = tmp_path / "random.safetensors"
    save_file({"weight": torch.randn(3, 3), "bias": torch.randn(3)}, str(path))
    with pytest.raises(UserError, match="not a Stable Diffusion checkpoint"):
        detect_architecture(path)


def test_vae_file_is_refused(tmp_path):
    path = tmp_path / "vae.safetensors"
    save_file({"encoder.down.0.block.0.conv1.weight": torch.zeros(1), "decoder.up.0.block.0.conv1.weight": torch.zeros(1)},
              str(path))
    with pytest.raises(UserError, match="VAE file"):
        detect_architecture(path)


@pytest.mark.parametrize("content", [b"", b"hello world, not safetensors", struct.pack("<Q", 10**12) + b"{}"])
def test_garbage_file_is_refused(tmp_path, content):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(content)
    with pytest.raises(UserError, match="safetensors"):
        detect_architecture(path)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="base model not found"):
        detect_architecture(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("name", ["model.pt", "model.bin", "picture.png", "model"])
def test_wrong_extension(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"x")
    with pytest.raises(UserError, match=r"must be a \.safetensors or \.ckpt file or a diffusers folder"):
        detect_architecture(path)


def test_folder_without_model_index(tmp_path):
    with pytest.raises(UserError, match="model_index.json"):
        detect_architecture(tmp_path)


def _diffusers_folder(root, cross, prediction=None, xl=False):
    root.mkdir()
    index = {"_class_name": "StableDiffusionXLPipeline" if xl else "StableDiffusionPipeline"}
    if xl:
        index["text_encoder_2"] = ["transformers", "CLIPTextModelWithProjection"]
    (root / "model_index.json").write_text(json.dumps(index))
    (root / "unet").mkdir()
    (root / "unet" / "config.json").write_text(json.dumps({"cross_attention_dim": cross}))
    if prediction:
        (root / "scheduler").mkdir()
        (root / "scheduler" / "scheduler_config.json").write_text(json.dumps({"prediction_type": prediction}))
    return root


@pytest.mark.parametrize("cross, prediction, xl, arch, sure", [
    (768, "epsilon", False, "sd1", True),
    (1024, "epsilon", False, "sd2", True),
    (1024, "v_prediction", False, "sd2-v", True),
    (1024, None, False, "sd2", False),
    (2048, "epsilon", True, "sdxl", True),
])
def test_diffusers_folders(tmp_path, cross, prediction, xl, arch, sure):
    d = detect_architecture(_diffusers_folder(tmp_path / "m", cross, prediction, xl))
    assert (d.arch, d.sure) == (arch, sure)


def test_ckpt_keys_are_read_without_unpickling(tmp_path):
    path = tmp_path / "sd2.ckpt"
    torch.save({"state_dict": {k: v for k, v in __import__("_model_helpers").fake_checkpoint_tensors("sd2").items()}},
               path)
    d = detect_architecture(path)
    assert (d.arch, d.sure) == ("sd2", False)


def test_shipped_tiny_files_are_marked():
    from easytrain.families.sd.tiny import tiny_model_paths

    paths = tiny_model_paths()
    for path in paths:
        d = detect_architecture(path)
        assert (d.arch, d.is_tiny, d.sure) == ("sd1", True, True)


def test_a_truncated_checkpoint_is_refused_before_loading(tmp_path, capsys):
    path = write_fake_checkpoint(tmp_path / "model.safetensors", "sd1")
    whole = path.read_bytes()
    assert detect_architecture(path).arch == "sd1"
    path.write_bytes(whole[:-100])                    # a download that stopped early
    with pytest.raises(UserError, match=f"the file is incomplete: its header needs {len(whole):,} bytes, "
                                        f"the file has {len(whole) - 100:,}"):
        detect_architecture(path)


def test_a_diffusers_folder_with_a_truncated_weights_file_is_refused(tmp_path):
    from easytrain.families.sd.tiny import save_tiny_diffusers

    folder = save_tiny_diffusers(tmp_path / "tiny")
    weights = sorted(folder.glob("unet/*.safetensors"))[0]
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(UserError, match=f"{weights}: the file is incomplete"):
        detect_architecture(folder)


@pytest.mark.parametrize("keys, words", [
    (["model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight", "text_encoders.clip_l.x"], "an SD3 / SD3.5 model"),
    (["double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight"], "a Flux model"),
    (["model.diffusion_model.double_blocks.0.img_attn.qkv.weight", "vae.x"], "a Flux model"),
])
def test_other_model_families_are_named(tmp_path, keys, words):
    path = tmp_path / "other.safetensors"
    save_file({key: torch.zeros(1) for key in keys}, str(path))
    with pytest.raises(UserError, match=rf"other\.safetensors: this is {words}; easytrain trains LoRAs for SD1"):
        detect_architecture(path)


def test_a_flux_lora_is_still_called_a_lora(tmp_path):
    path = tmp_path / "flux_lora.safetensors"
    save_file({"diffusion_model.double_blocks.0.img_attn.qkv.lora_down.weight": torch.zeros(1)}, str(path))
    with pytest.raises(UserError, match="looks like a LoRA"):
        detect_architecture(path)


def test_sdxl_refiner_is_refused_with_the_reason(tmp_path):
    tensors = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1),
               "conditioner.embedders.0.model.transformer.resblocks.0.attn.in_proj_weight": torch.zeros(1)}
    path = tmp_path / "refiner.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(UserError, match=r"refiner\.safetensors: this is the SDXL refiner"):
        detect_architecture(path)


def test_sdxl_unet_without_text_encoders_is_named(tmp_path):
    key = "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"
    path = tmp_path / "xl_unet.safetensors"
    save_file({key: torch.zeros(640, 2048)}, str(path))
    with pytest.raises(UserError, match=r"this SDXL file has a UNet but no text encoder"):
        detect_architecture(path)


def test_a_transformer_pipeline_folder_is_named(tmp_path):
    (tmp_path / "flux" / "transformer").mkdir(parents=True)
    (tmp_path / "flux" / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(UserError, match=r"flux: this is a FluxPipeline folder \(a transformer, not a UNet\)"):
        detect_architecture(tmp_path / "flux")


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="named pipes are POSIX-only")
def test_a_pipe_named_like_a_model_is_refused_without_reading_it(tmp_path):
    import os

    from easytrain import answers as answers_file

    pipe = tmp_path / "model.safetensors"
    os.mkfifo(pipe)
    with pytest.raises(UserError, match="not a regular file"):
        detect_architecture(pipe)
    (tmp_path / "img" / "5_x").mkdir(parents=True)
    with pytest.raises(UserError) as refused:  # the architecture's defaults must not read it either
        answers_file.from_dict({"schema_version": 1, "base_model": "model.safetensors", "image_folder": "img"},
                               source=tmp_path / "a.json")
    assert "base_model: not a regular file (a pipe or a device)" in "\n".join(refused.value.problems)

"""`check` on a full-size FLUX.1-dev tree: header-only files (the data a sparse hole, never loadable) with the
shapes of families/flux/model.py's FluxConfig for dev and the shipped CLIP-L, T5-XXL and AE configs.

The file is what detection and `check` read: 780 transformer tensors, its companions found in a ComfyUI
tree, and the per-lever estimates at the plan's size.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from _train_helpers import tiny_answers

from easytrain.errors import UserError

BENCH = Path(__file__).resolve().parents[1] / "bench" / "load_full_sd15.py"
CONFIGS = Path(__file__).resolve().parents[1] / "easytrain" / "families" / "flux" / "configs"
DEV_TENSORS = 780


def _write_header_only(path: Path, shapes: dict, dtype=torch.bfloat16) -> Path:
    spec = importlib.util.spec_from_file_location("load_full_sd15", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    path.parent.mkdir(parents=True, exist_ok=True)
    bench.write_random_safetensors(path, shapes, dtype=dtype, header_only=True)
    return path


def _shapes(module) -> dict:
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


def full_size_shapes() -> dict:
    """part -> {key: shape} of full-size FLUX.1-dev, CLIP-L, T5-XXL and the AE, in the files' layouts."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from easytrain.families.flux.convert import ae_key
    from easytrain.families.flux.model import FluxConfig, build_model

    transformer = _shapes(build_model(FluxConfig(), "meta"))
    with torch.device("meta"):
        clip = CLIPTextModel(CLIPTextConfig.from_dict(json.loads((CONFIGS / "clip_l.json").read_text())))
        t5 = T5EncoderModel(T5Config.from_dict(json.loads((CONFIGS / "t5xxl.json").read_text())))
        ae = AutoencoderKL.from_config(json.loads((CONFIGS / "ae.json").read_text()))
    clip_l = {k if k.startswith("text_model.") else "text_model." + k: v
              for k, v in _shapes(clip).items() if not k.endswith("position_ids")}
    t5xxl = {k: v for k, v in _shapes(t5).items() if k != "encoder.embed_tokens.weight"}
    levels = len(ae.config.block_out_channels)
    vae = {ae_key(k, levels): (v + (1, 1) if ".attentions." in k and len(v) == 2 else v)
           for k, v in _shapes(ae).items()}
    return {"transformer": transformer, "clip_l": clip_l, "t5xxl": t5xxl, "ae": vae}


@pytest.fixture(scope="module")
def comfy_tree(tmp_path_factory) -> Path:
    """ComfyUI's models/ tree with header-only full-size files."""
    shapes = full_size_shapes()
    comfy = tmp_path_factory.mktemp("ComfyUI")
    models = comfy / "models"
    tokenizer = comfy / "comfy" / "text_encoders" / "t5_tokenizer"  # ComfyUI ships the T5 tokenizer here
    tokenizer.mkdir(parents=True)
    (tokenizer / "tokenizer.json").write_text("{}", encoding="utf-8")  # the plan checks it is there, no more
    _write_header_only(models / "diffusion_models" / "flux1-dev.safetensors", shapes["transformer"])
    _write_header_only(models / "text_encoders" / "clip_l.safetensors", shapes["clip_l"], torch.float16)
    _write_header_only(models / "text_encoders" / "t5xxl_fp16.safetensors", shapes["t5xxl"], torch.float16)
    _write_header_only(models / "vae" / "ae.safetensors", shapes["ae"], torch.float32)
    return models


@pytest.fixture(autouse=True)
def no_other_tokenizer(tmp_path, monkeypatch):
    from easytrain.families.flux import tokenizer

    monkeypatch.delenv(tokenizer.T5_TOKENIZER_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-hub"))


def _check(tmp_path, model: Path, **answers) -> str:
    from easytrain.commands.check import plan_lines
    from easytrain.plan import TrainPlan

    settings = dict(base_model=str(model), architecture="auto", resolution=1024, mixed_precision="bf16",
                    optimizer="AdamW8bit", gradient_checkpointing=True, batch_size=1, network_dim=16,
                    network_alpha=16.0, train_parts="unet_only", text_encoder_lr=0.0, bucket_no_upscale=False)
    plan = TrainPlan.from_answers(tiny_answers(tmp_path, **{**settings, **answers}))
    return "\n".join(plan_lines(plan))


def test_the_full_size_dev_file_has_780_tensors(comfy_tree):
    from easytrain.model.detect import read_safetensors_header

    header = read_safetensors_header(comfy_tree / "diffusion_models" / "flux1-dev.safetensors").tensors
    assert len([key for key in header if key != "__metadata__"]) == DEV_TENSORS


def test_check_detects_full_size_dev_and_prints_each_lever(tmp_path, comfy_tree):
    text = _check(tmp_path, comfy_tree / "diffusion_models" / "flux1-dev.safetensors")
    assert "Flux.1 [dev]" in text and "tiny test model" not in text
    for part in ("clip_l: ", "t5xxl: ", "vae: "):
        assert part + str(comfy_tree) in text
    assert "T5 tokenizer: " in text  # the shipped one, else the ComfyUI install's (tests/test_flux_tokenizer_lookup.py)
    assert "GPU memory for Flux.1 at 1024x1024, batch 1, LoRA dim 16 (estimates):" in text
    for lever in ("bf16", "fp8 base", "fp8 base, 16 blocks swapped, 8-bit AdamW",
                  "fp8 base, 28 blocks swapped, 8-bit AdamW"):
        assert f"  {lever} " in text


def test_the_levers_reach_12_gb_at_1024_and_8_gb_at_512(tmp_path, comfy_tree):
    """The goal, by the estimate: 1024 px batch 1 within 12 GB and 512 px within 8 GB with some lever."""
    from easytrain.families.flux.memory import propose_levers

    assert propose_levers(12, 1024, 1024) is not None
    assert propose_levers(8, 512, 512) is not None
    assert propose_levers(24, 1024, 1024)[0].startswith("fp8 base")  # bf16 alone does not fit a 24 GB card


def test_check_needs_the_companions(tmp_path, comfy_tree):
    lonely = tmp_path / "lonely" / "flux1-dev.safetensors"
    # written afresh, header only: a copy would fill its 23 GB hole with zeros
    _write_header_only(lonely, full_size_shapes()["transformer"])
    with pytest.raises(UserError) as caught:
        _check(tmp_path, lonely)
    text = str(caught.value) + " ".join(getattr(caught.value, "problems", []))
    assert "no CLIP-L text encoder (clip_l.safetensors) found in" in text and "set clip_l in the answers" in text

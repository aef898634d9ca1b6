"""kohya's Flux module set and names (families/flux/targets.py) and the metadata ids (families/flux/metadata.py)."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from easytrain.families.flux import targets as ft
from easytrain.families.flux.metadata import flux_metadata, metadata_ids
from easytrain.families.flux.objective import FlowSettings
from tests.flux_train_standin import StandInFlux


def _full_depth(chroma=False):
    with torch.device("meta"):
        return StandInFlux(hidden=64, depth=19, depth_single=38, chroma=chroma)


def _tiny_clip():
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(vocab_size=99, hidden_size=16, intermediate_size=32, num_hidden_layers=12,
                            num_attention_heads=2, max_position_embeddings=77)
    with torch.device("meta"):
        return CLIPTextModel(config)


def _tiny_t5():
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=99, d_model=16, d_kv=8, d_ff=32, num_layers=24, num_heads=2,
                      feed_forward_proj="gated-gelu")
    with torch.device("meta"):
        return T5EncoderModel(config)


def _shapes(model: nn.Module, prefix="") -> dict[str, list[int]]:
    return {prefix + k: list(v.shape) for k, v in model.state_dict().items()}


def test_flux_has_kohya_304_modules_named_by_bfl_paths():
    found = ft.transformer_targets(_full_depth())
    names = [t.kohya_name for t in found]
    assert len(found) == ft.MODULE_COUNTS["flux"] == 19 * 10 + 38 * 3
    assert len(set(names)) == len(names)
    for name in ("lora_unet_double_blocks_0_img_attn_qkv", "lora_unet_double_blocks_0_img_mod_lin",
                 "lora_unet_double_blocks_18_txt_mlp_2", "lora_unet_single_blocks_37_linear1",
                 "lora_unet_single_blocks_37_modulation_lin"):
        assert name in names
    assert {t.part for t in found} == {"unet"}
    assert not [n for n in names if re.search(r"img_in|txt_in|time_in|final_layer|query_norm", n)]
    by_name = {t.kohya_name: t.path for t in found}
    assert by_name["lora_unet_double_blocks_0_img_mlp_0"] == "double_blocks.0.img_mlp.0"


def test_chroma_has_228_modules_and_no_modulation():
    found = ft.transformer_targets(_full_depth(chroma=True))
    assert len(found) == ft.MODULE_COUNTS["chroma"] == 19 * 8 + 38 * 2
    assert not [t for t in found if "mod" in t.path.split(".")[1] or "modulation" in t.path]


def test_text_encoders_clip_72_and_t5_168_with_kohya_prefixes():
    clip, t5 = _tiny_clip(), _tiny_t5()
    flux = ft.flux_targets({"unet": _full_depth(), "clip_l": clip, "t5": t5}, "dev", train_clip=True, train_t5=True)
    parts = {}
    for t in flux:
        parts.setdefault(t.part, []).append(t.kohya_name)
    assert {k: len(v) for k, v in parts.items()} == {"unet": 304, "text_encoder": 72, "text_encoder_2": 168}
    assert "lora_te1_text_model_encoder_layers_0_self_attn_q_proj" in parts["text_encoder"]
    assert "lora_te1_text_model_encoder_layers_11_mlp_fc2" in parts["text_encoder"]
    assert "lora_te3_encoder_block_0_layer_0_SelfAttention_q" in parts["text_encoder_2"]
    assert "lora_te3_encoder_block_23_layer_1_DenseReluDense_wi_1" in parts["text_encoder_2"]
    # by default only the transformer trains; CLIP-L when asked; Chroma has none
    assert len(ft.flux_targets({"unet": _full_depth(), "clip_l": clip, "t5": t5}, "dev")) == 304
    chroma = ft.flux_targets({"unet": _full_depth(True), "clip_l": None, "t5": t5}, "chroma",
                             train_clip=True, train_t5=True)
    t5_names = [t.kohya_name for t in chroma if t.part == "text_encoder"]
    assert len(t5_names) == 168 and all(n.startswith("lora_te1_encoder_block_") for n in t5_names)


def test_module_set_from_headers_matches_the_targets():
    model, clip, t5 = _full_depth(), _tiny_clip(), _tiny_t5()
    header = _shapes(model, "model.diffusion_model.")
    expected = ft.expected_modules(header, variant="dev", clip_l=_shapes(clip, "text_encoders.clip_l.transformer."),
                                   t5=_shapes(t5))
    targets = ft.flux_targets({"unet": model, "clip_l": clip, "t5": t5}, "dev", train_clip=True, train_t5=True)
    assert set(expected) == {t.kohya_name for t in targets}
    for t in targets:
        owner = {"unet": model, "text_encoder": clip, "text_encoder_2": t5}[t.part]
        weight = dict(owner.named_modules())[t.path].weight
        assert expected[t.kohya_name] == tuple(weight.shape)
    shapes = ft.expected_lora_shapes({"lora_unet_single_blocks_0_linear1": (192, 64)}, 16)
    assert shapes == {"lora_unet_single_blocks_0_linear1.lora_down.weight": (16, 64),
                      "lora_unet_single_blocks_0_linear1.lora_up.weight": (192, 16),
                      "lora_unet_single_blocks_0_linear1.alpha": ()}
    chroma = ft.expected_modules(_shapes(_full_depth(True)), variant="chroma", t5=_shapes(t5))
    assert len(chroma) == 228 + 168 and any(k.startswith("lora_te1_encoder_block_") for k in chroma)


def test_header_shapes_reads_a_safetensors_header(tmp_path):
    from safetensors.torch import save_file

    from easytrain.model.detect import read_safetensors_header

    path = tmp_path / "tiny.safetensors"
    save_file({"double_blocks.0.img_attn.qkv.weight": torch.zeros(6, 2),
               "double_blocks.0.img_attn.norm.query_norm.scale": torch.zeros(2)}, str(path))
    shapes = ft.header_shapes(read_safetensors_header(path))
    assert ft.expected_modules(shapes, variant="dev") == {"lora_unet_double_blocks_0_img_attn_qkv": (6, 2)}


def _comfy_key_map(unet_keys, clip_keys):
    """ComfyUI's rules (comfy/lora.py at 3cd7b32f) for a BFL-layout model: ``lora_unet_`` + the
    diffusion_model key with "_" for "."; CLIP-L layers from ``lora_te1_text_model_...``; T5 from
    ``lora_te{1 + clip_g + clip_l}_`` (and ``lora_te2_`` beside CLIP-L)."""
    key_map = {}
    for k in unet_keys:
        if k.startswith("diffusion_model.") and k.endswith(".weight"):
            key_map["lora_unet_" + k[len("diffusion_model."):-len(".weight")].replace(".", "_")] = k
    clip_l = any(k.startswith("clip_l.transformer.") for k in clip_keys)
    for k in clip_keys:
        m = re.match(r"clip_l\.transformer\.text_model\.encoder\.layers\.(\d+)\.(.+)\.weight$", k)
        if m:
            key_map[f"lora_te1_text_model_encoder_layers_{m.group(1)}_{m.group(2).replace('.', '_')}"] = k
        if k.startswith("t5xxl.transformer.") and k.endswith(".weight"):
            path = k[len("t5xxl.transformer."):-len(".weight")].replace(".", "_")
            index = 1 + int(clip_l)
            if index == 2:
                key_map[f"lora_te2_{path}"] = k
                index = 3
            key_map[f"lora_te{index}_{path}"] = k
    return key_map


@pytest.mark.parametrize("variant", ["dev", "chroma"])
def test_comfyui_key_rules_apply_every_module(variant):
    chroma = variant == "chroma"
    model, t5 = _full_depth(chroma), _tiny_t5()
    clip = None if chroma else _tiny_clip()
    unet_keys = ["diffusion_model." + k for k in model.state_dict()]
    clip_keys = ["t5xxl.transformer." + k for k in t5.state_dict()]
    if clip is not None:
        clip_keys += ["clip_l.transformer." + ("" if k.startswith("text_model.") else "text_model.") + k
                      for k in clip.state_dict()]
    key_map = _comfy_key_map(unet_keys, clip_keys)
    targets = ft.flux_targets({"unet": model, "clip_l": clip, "t5": t5}, variant, train_clip=True, train_t5=True)
    missing = [t.kohya_name for t in targets if t.kohya_name not in key_map]
    assert not missing
    # kohya's own Chroma T5 prefix would not load in ComfyUI: the reason for lora_te1_ there
    if chroma:
        assert "lora_te3_encoder_block_0_layer_0_SelfAttention_q" not in key_map


@pytest.mark.parametrize("variant,base,arch", [("dev", "flux1", "flux-1-dev/lora"),
                                               ("schnell", "flux1", "flux-1-schnell/lora"),
                                               ("chroma", "chroma", "chroma/lora")])
def test_metadata_ids(variant, base, arch):
    ids = metadata_ids(variant)
    assert ids["ss_base_model_version"] == base
    assert ids["ss_network_module"] == "networks.lora_flux"
    assert ids["ss_model_type"] == ("chroma" if variant == "chroma" else "flux")
    assert ids["modelspec.architecture"] == arch
    with pytest.raises(ValueError):
        metadata_ids("sdxl")


def test_flux_metadata_keys_as_kohya_writes_them():
    meta = flux_metadata(FlowSettings(), "dev")
    assert {k: meta[k] for k in ("ss_timestep_sampling", "ss_discrete_flow_shift", "ss_model_prediction_type",
                                 "ss_guidance_scale", "ss_weighting_scheme", "ss_apply_t5_attn_mask",
                                 "ss_sigmoid_scale", "ss_logit_mean", "ss_logit_std", "ss_mode_scale")} == {
        "ss_timestep_sampling": "shift", "ss_discrete_flow_shift": "3.1582", "ss_model_prediction_type": "raw",
        "ss_guidance_scale": "1.0", "ss_weighting_scheme": "none", "ss_apply_t5_attn_mask": "False",
        "ss_sigmoid_scale": "1.0", "ss_logit_mean": "0.0", "ss_logit_std": "1.0", "ss_mode_scale": "1.29"}
    assert all(isinstance(v, str) for v in meta.values())
    assert flux_metadata(FlowSettings(apply_t5_attn_mask=True), "chroma")["ss_apply_t5_attn_mask"] == "True"


@pytest.mark.parametrize("kind,count", [("flux-dev", 304), ("flux-schnell", 304), ("chroma", 228)])
def test_full_size_transformer_on_the_meta_device(kind, count):
    from easytrain.families.flux.model import FluxConfig, build_model

    config = FluxConfig(kind=kind, vec_in_dim=0 if kind == "chroma" else 768, guidance_embed=kind == "flux-dev")
    model = build_model(config)  # the meta device: 12B parameters, no memory
    found = ft.transformer_targets(model)
    assert len(found) == count
    variant = {"flux-dev": "dev", "flux-schnell": "schnell", "chroma": "chroma"}[kind]
    header = {"model.diffusion_model." + k: list(v.shape) for k, v in model.state_dict().items()}
    expected = ft.expected_modules(header, variant=variant)
    assert set(expected) == {t.kohya_name for t in found}
    assert expected["lora_unet_double_blocks_0_img_attn_qkv"] == (9216, 3072)
    assert expected["lora_unet_single_blocks_37_linear1"] == (21504, 3072)
    assert expected["lora_unet_single_blocks_37_linear2"] == (3072, 15360)
    if kind != "chroma":
        assert expected["lora_unet_double_blocks_18_txt_mod_lin"] == (18432, 3072)
        assert expected["lora_unet_single_blocks_0_modulation_lin"] == (9216, 3072)
    # LoRA parameters at dim 1: what the memory estimate counts
    per_dim = sum(rows + cols for rows, cols in expected.values())
    assert per_dim == sum(m.in_features + m.out_features for m in
                          (dict(model.named_modules())[t.path] for t in found))


def test_with_flux_metadata_over_the_shared_builder():
    from easytrain.families.flux.metadata import with_flux_metadata
    from easytrain.network.metadata import build_metadata
    from easytrain.network.spec import NetworkSpec

    base = build_metadata(spec=NetworkSpec("LoRA", 16, 16.0, train_text_encoder=False), output_name="x",
                          training_started_at=0.0, resolution=1024)
    meta = with_flux_metadata(base, FlowSettings(), "schnell")
    assert "modelspec.prediction_type" not in meta and "modelspec.prediction_type" in base
    assert meta["ss_base_model_version"] == "flux1" and meta["modelspec.architecture"] == "flux-1-schnell/lora"
    assert meta["ss_network_module"] == "networks.lora_flux" and meta["ss_network_dim"] == "16"
    assert meta["modelspec.implementation"] == "https://github.com/black-forest-labs/flux"

"""kohya's SDXL LoRA module set: Stability-style UNet names, lora_te1_/lora_te2_, the 722/72/192 (788) counts.

The expected names are derived independently from the Stability single-file
layout, the way kohya's own SDXL UNet names its modules: every Linear/Conv2d
weight inside a transformer (and, with conv layers, inside a resnet or a
sampler) is a module, named by its key with dots turned into underscores.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from easytrain.families.sdxl.targets import sdxl_text_encoder_targets, sdxl_unet_targets
from easytrain.network.targets import CONV, CONV_1X1, LINEAR

BENCH = Path(__file__).resolve().parents[1] / "bench" / "load_full_sdxl.py"
UNET = "model.diffusion_model."
_IN_TRANSFORMER = re.compile(
    r"^(input_blocks\.\d+\.1|middle_block\.1|output_blocks\.\d+\.1)\."
    r"(proj_in|proj_out|transformer_blocks\.\d+\.(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.0\.proj|ff\.net\.2))"
    r"\.weight$"
)
_IN_RESNET_OR_SAMPLER = re.compile(
    r"^((input_blocks\.\d+\.0|middle_block\.[02]|output_blocks\.\d+\.0)\.(in_layers\.2|out_layers\.3|emb_layers\.1|skip_connection)"
    r"|input_blocks\.\d+\.0\.op|output_blocks\.\d+\.[12]\.conv)\.weight$"
)


def _bench_module():
    spec = importlib.util.spec_from_file_location("load_full_sdxl", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def full_size():
    """SDXL 1.0's models on the meta device and the shapes of its single file."""
    bench = _bench_module()
    models = bench.sdxl_meta_models()
    return bench, models, bench.sdxl_original_shapes(models)


def _kohya_names_from_layout(shapes, with_convs: bool) -> dict[str, tuple]:
    names = {}
    for key, shape in shapes.items():
        if not key.startswith(UNET):
            continue
        inner = key[len(UNET):]
        if _IN_TRANSFORMER.match(inner) or (with_convs and _IN_RESNET_OR_SAMPLER.match(inner)):
            names["lora_unet_" + inner.removesuffix(".weight").replace(".", "_")] = shape
    return names


def _text_encoder_names(prefix: str, layers: int) -> set[str]:
    modules = ("self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj", "self_attn_out_proj", "mlp_fc1", "mlp_fc2")
    return {f"{prefix}_text_model_encoder_layers_{i}_{m}" for i in range(layers) for m in modules}


@pytest.mark.parametrize("with_convs, count", [(False, 722), (True, 788)])
def test_unet_modules_are_kohyas_set_with_the_files_shapes(full_size, with_convs, count):
    _bench, models, shapes = full_size
    unet = models["unet"]
    targets = sdxl_unet_targets(unet, with_convs=with_convs)
    expected = _kohya_names_from_layout(shapes, with_convs)
    assert len(targets) == len(expected) == count
    assert {t.kohya_name for t in targets} == expected.keys()
    for target in targets:
        weight = unet.get_submodule(target.path).weight
        assert tuple(weight.shape) == expected[target.kohya_name], target.kohya_name
        assert target.kind == (LINEAR if weight.ndim == 2 else CONV_1X1 if weight.shape[-1] == 1 else CONV)


def test_kohya_names_of_known_modules(full_size):
    _bench, models, _shapes = full_size
    names = {t.path: t.kohya_name for t in sdxl_unet_targets(models["unet"], with_convs=True)}
    assert names["down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"] == \
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
    assert names["mid_block.attentions.0.proj_in"] == "lora_unet_middle_block_1_proj_in"
    assert names["up_blocks.0.attentions.2.transformer_blocks.9.ff.net.2"] == \
        "lora_unet_output_blocks_2_1_transformer_blocks_9_ff_net_2"
    assert names["down_blocks.0.resnets.0.conv1"] == "lora_unet_input_blocks_1_0_in_layers_2"
    assert names["down_blocks.1.resnets.0.conv_shortcut"] == "lora_unet_input_blocks_4_0_skip_connection"
    assert names["mid_block.resnets.1.time_emb_proj"] == "lora_unet_middle_block_2_emb_layers_1"
    assert names["up_blocks.2.resnets.2.conv2"] == "lora_unet_output_blocks_8_0_out_layers_3"
    assert names["down_blocks.0.downsamplers.0.conv"] == "lora_unet_input_blocks_3_0_op"
    assert names["up_blocks.1.upsamplers.0.conv"] == "lora_unet_output_blocks_5_2_conv"


def test_proj_in_and_proj_out_are_linear(full_size):
    _bench, models, _shapes = full_size
    projections = [t for t in sdxl_unet_targets(models["unet"], with_convs=False) if t.path.endswith(("proj_in", "proj_out"))]
    assert len(projections) == 22 and {t.kind for t in projections} == {LINEAR}


def test_text_encoder_modules(full_size):
    _bench, models, _shapes = full_size
    first = sdxl_text_encoder_targets(models["text_encoder"], second=False)
    second = sdxl_text_encoder_targets(models["text_encoder_2"], second=True)
    assert (len(first), len(second)) == (72, 192)
    assert {t.kohya_name for t in first} == _text_encoder_names("lora_te1", 12)
    assert {t.kohya_name for t in second} == _text_encoder_names("lora_te2", 32)
    assert {t.part for t in first} == {"text_encoder"} and {t.part for t in second} == {"text_encoder_2"}
    for target in second:
        assert models["text_encoder_2"].get_submodule(target.path).weight.shape[1] in (1280, 5120)


def test_bench_counts_match_kohya(full_size):
    bench, models, _shapes = full_size
    counts = bench.lora_module_counts(models["unet"], models["text_encoder"], models["text_encoder_2"])
    assert counts == bench.LORA_MODULES == {"unet": 722, "unet_with_convs": 788, "text_encoder": 72, "text_encoder_2": 192}


def test_tiny_sdxl_follows_the_same_rule():
    from easytrain.families.sdxl.convert import sdxl_original_state_dict
    from easytrain.families.sdxl.tiny import build_tiny_sdxl_components

    parts = build_tiny_sdxl_components()
    state = sdxl_original_state_dict(parts["unet"], parts["vae"], parts["text_encoder"], parts["text_encoder_2"])
    shapes = {key: tuple(t.shape) for key, t in state.items()}
    for with_convs in (False, True):
        targets = sdxl_unet_targets(parts["unet"], with_convs=with_convs)
        assert {t.kohya_name for t in targets} == _kohya_names_from_layout(shapes, with_convs).keys()


def _kohyas_sdxl_block_index(lora_name: str) -> int:
    """kohya's networks/lora.py get_block_index(lora_name, is_sdxl=True), as written there."""
    if not lora_name.startswith("lora_unet_"):
        return -1
    name = lora_name[len("lora_unet_"):]
    if name.startswith(("time_embed_", "label_emb_")):
        return 0
    for part, first in (("input_blocks_", 1), ("middle_block_", 10), ("output_blocks_", 13)):
        if name.startswith(part):
            return first + int(name.split("_")[2])
    return 22 if name.startswith("out_") else -1


def test_full_size_blocks_are_kohyas(full_size):
    from collections import Counter

    from easytrain.families.sdxl.blocks import SDXL
    from easytrain.network.blocks import block_index

    _bench, models, _shapes = full_size
    targets = sdxl_unet_targets(models["unet"], with_convs=True)
    assert all(block_index(t.kohya_name, SDXL) == _kohyas_sdxl_block_index(t.kohya_name) for t in targets)
    linear = sdxl_unet_targets(models["unet"], with_convs=False)
    transformers = Counter(block_index(t.kohya_name, SDXL) for t in linear)
    # 2 transformer blocks at input 4-5 and output 3-5, 10 at input 7-8, the middle and output 0-2
    assert transformers == {5: 22, 6: 22, 8: 102, 9: 102, 11: 102, 13: 102, 14: 102, 15: 102, 16: 22, 17: 22, 18: 22}

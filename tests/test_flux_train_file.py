"""A tiny Flux / Chroma LoRA trained with the flow objective, and its file checked against kohya's
module set derived from the checkpoint headers, and against ComfyUI's key rules."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from easytrain.families.flux.metadata import flux_metadata
from easytrain.families.flux.objective import FlowObjective
from easytrain.families.flux.options import defaults_for
from easytrain.families.flux.targets import (
    expected_lora_shapes, expected_modules, file_problems, flux_targets, header_shapes)
from easytrain.model.detect import read_safetensors_header
from easytrain.network.build import build_network
from easytrain.network.export import save_lora
from easytrain.network.spec import NetworkSpec
from tests.test_flux_targets import _comfy_key_map

DIM = 4


def _train(model, network, variant, steps=12):
    """Overfit one fixed batch: the loss must fall."""
    objective = FlowObjective(defaults_for(variant), variant)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 16, 4, 4, generator=generator)
    text = SimpleNamespace(t5=torch.randn(2, 6, model.config.context_in_dim, generator=generator),
                           pooled=(torch.randn(2, model.config.vec_in_dim, generator=generator)
                                   if model.config.vec_in_dim else None),
                           t5_mask=torch.tensor([[1] * 6, [1] * 3 + [0] * 3]))
    fixed = objective.prepare(latents, generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.AdamW(network.trainable_parameters(), lr=3e-3)
    model.train()

    def loss_now():
        return objective.loss(model(**objective.model_inputs(fixed, text)), fixed)

    with torch.no_grad():
        first = loss_now().item()
    for _ in range(steps):
        loss = loss_now()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        last = loss_now().item()
    return first, last


@pytest.mark.parametrize("kind,variant", [("flux-dev", "dev"), ("chroma", "chroma")])
def test_tiny_lora_file_is_kohya_module_set_from_the_headers(tmp_path, kind, variant):
    from safetensors import safe_open

    from easytrain.families.flux.tiny import (
        build_tiny_text_and_ae, build_tiny_transformer, write_bfl_transformer, write_clip_l, write_t5xxl)

    model = build_tiny_transformer(kind)
    parts = build_tiny_text_and_ae()
    clip = None if variant == "chroma" else parts["clip_l"]
    t5 = parts["t5"]
    transformer_file = write_bfl_transformer(model, tmp_path / "flux.safetensors", prefix="model.diffusion_model.")
    clip_file = write_clip_l(parts["clip_l"], tmp_path / "clip_l.safetensors")
    t5_file = write_t5xxl(t5, tmp_path / "t5xxl.safetensors")

    models = {"unet": model, "text_encoder": clip if clip is not None else t5}
    if clip is not None:
        models["text_encoder_2"] = t5
    targets = flux_targets({"unet": model, "clip_l": clip, "t5": t5}, variant, train_clip=True, train_t5=True)
    network = build_network(models, targets, NetworkSpec("LoRA", DIM, 2.0), seed=0)
    first, last = _train(model, network, variant)
    assert last < first * 0.9

    path = save_lora(network, tmp_path / "lora.safetensors", dtype=torch.bfloat16,
                     metadata=flux_metadata(defaults_for(variant), variant))

    expected = expected_lora_shapes(expected_modules(
        header_shapes(read_safetensors_header(transformer_file)), variant=variant,
        clip_l=header_shapes(read_safetensors_header(clip_file)),
        t5=header_shapes(read_safetensors_header(t5_file))), DIM)
    header = read_safetensors_header(path)
    assert {k: tuple(v["shape"]) for k, v in header.tensors.items()} == expected
    assert file_problems(header_shapes(header), expected) == []
    wrong = dict(header_shapes(header))
    first = sorted(wrong)[0]
    wrong[first] = [1, 1]
    wrong["lora_unet_img_in.alpha"] = []
    del wrong[sorted(wrong)[-1]]
    assert len(file_problems(wrong, expected)) == 3
    assert {v["dtype"] for v in header.tensors.values()} == {"BF16"}
    with safe_open(str(path), "pt") as fh:
        assert fh.get_tensor("lora_unet_double_blocks_0_img_attn_qkv.alpha").item() == 2.0
    meta = header.metadata
    assert meta["ss_network_module"] == "networks.lora_flux"
    assert meta["modelspec.architecture"] == ("chroma/lora" if variant == "chroma" else "flux-1-dev/lora")
    assert meta["ss_apply_t5_attn_mask"] == ("True" if variant == "chroma" else "False")
    names = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in header.tensors}
    counts = {prefix: len([n for n in names if n.startswith(prefix)]) for prefix in ("lora_unet_", "lora_te1_",
                                                                                     "lora_te3_")}
    if variant == "chroma":
        assert counts == {"lora_unet_": 2 * 8 + 2 * 2, "lora_te1_": 7 * t5.config.num_layers, "lora_te3_": 0}
    else:
        assert counts == {"lora_unet_": 2 * 10 + 2 * 3, "lora_te1_": 6 * parts["clip_l"].config.num_hidden_layers,
                          "lora_te3_": 7 * t5.config.num_layers}

    # ComfyUI's rules: every module of the file finds its weight, and up @ down has that weight's shape
    unet_keys = {"diffusion_model." + k[len("model.diffusion_model."):]: v
                 for k, v in header_shapes(read_safetensors_header(transformer_file)).items()}
    clip_keys = {"t5xxl.transformer." + k: v for k, v in header_shapes(read_safetensors_header(t5_file)).items()}
    if clip is not None:
        clip_keys.update({"clip_l.transformer." + k: v
                          for k, v in header_shapes(read_safetensors_header(clip_file)).items()})
    key_map = _comfy_key_map(unet_keys, clip_keys)
    shapes = {**unet_keys, **clip_keys}
    for name in names:
        assert name in key_map, name
        weight = shapes[key_map[name]]
        assert (expected[f"{name}.lora_up.weight"][0], expected[f"{name}.lora_down.weight"][1]) == tuple(weight)

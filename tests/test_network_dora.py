"""DoRA: trains, exports `dora_scale` as LyCORIS does, and A1111's and ComfyUI's merges reproduce the network.

The two merges below are ports of the clients' code: AUTOMATIC1111
extensions-builtin/Lora/network.py (finalize_updown + apply_weight_decompose; Forge
is the same) and ComfyUI comfy/weight_adapter/base.py weight_decompose, applied
to the file's tensors with the up @ down product of network_lora.py / lora.py.
"""

from __future__ import annotations

import pytest
import torch

from tests._network_helpers import (
    kohya_module_map, randomize_adapters, run_text_encoder, run_unet, tiny_parts, token_ids, unet_inputs,
)


def build(network_type="LoCon", seed=0):
    from easytrain.families.sd.targets import apply_network
    from easytrain.network.spec import NetworkSpec

    parts = tiny_parts()
    spec = NetworkSpec(network_type=network_type, dim=4, alpha=2.0, conv_dim=3, conv_alpha=1.5, dora=True)
    network = apply_network(parts["unet"], parts["text_encoder"], spec, seed=seed)
    randomize_adapters(network)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for slot in network.slots:                  # magnitudes near the weight's own column norms
            base = slot.layer.get_base_layer().weight
            norm = base.transpose(0, 1).reshape(base.shape[1], -1).norm(dim=1)
            slot.layer.dora_scale.copy_(norm * (1 + 0.3 * torch.randn(norm.shape, generator=gen)))
    return parts, network


def updown(sd, name, weight):
    down, up = sd[f"{name}.lora_down.weight"].float(), sd[f"{name}.lora_up.weight"].float()
    return (up.flatten(1) @ down.flatten(1)).reshape(weight.shape), sd[f"{name}.alpha"].item() / down.shape[0]


def column_norm_like_clients(w):
    return w.transpose(0, 1).reshape(w.shape[1], -1).norm(dim=1, keepdim=True).reshape(
        w.shape[1], *[1] * (w.dim() - 1)).transpose(0, 1)


@torch.no_grad()
def merge_a1111(modules, sd, multiplier=1.0):
    for name in {k.split(".")[0] for k in sd}:
        weight = modules[name].weight
        delta, scale = updown(sd, name, weight)
        delta = delta * scale                                   # finalize_updown: calc_scale first
        merged = delta + weight
        final = merged * (sd[f"{name}.dora_scale"].float() / column_norm_like_clients(merged)) - weight
        weight += final * multiplier


@torch.no_grad()
def merge_comfyui(modules, sd, strength=1.0):
    for name in {k.split(".")[0] for k in sd}:
        weight = modules[name].weight
        delta, alpha = updown(sd, name, weight)
        calc = weight + delta * alpha
        calc *= sd[f"{name}.dora_scale"].float() / column_norm_like_clients(calc)
        weight += strength * (calc - weight)


@pytest.fixture(scope="module")
def trained():
    parts, network = build()
    inputs, ids = unet_inputs(), token_ids()
    return network, network.kohya_state_dict(torch.float32), run_unet(parts["unet"], inputs), \
        run_text_encoder(parts["text_encoder"], ids)


def test_file_layout_is_lycoris_dora(trained):
    network, sd, _, _ = trained
    names = {k.split(".")[0] for k in sd}
    assert all(f"{n}.dora_scale" in sd for n in names)
    for slot in network.slots:
        base = slot.layer.get_base_layer().weight
        scale = sd[f"{slot.target.kohya_name}.dora_scale"]
        assert scale.shape == ((1, base.shape[1]) if base.ndim == 2 else (1, base.shape[1], 1, 1))


@pytest.mark.parametrize("merge", [merge_a1111, merge_comfyui])
def test_clients_merges_reproduce_the_trained_network(trained, merge):
    _, sd, unet_out, te_out = trained
    fresh = tiny_parts()
    merge(kohya_module_map(fresh["unet"], fresh["text_encoder"]), sd)
    assert torch.allclose(run_unet(fresh["unet"], unet_inputs()), unet_out, atol=1e-4)
    assert torch.allclose(run_text_encoder(fresh["text_encoder"], token_ids()), te_out, atol=1e-4)
    assert not torch.allclose(run_unet(tiny_parts()["unet"], unet_inputs()), unet_out, atol=1e-3)


def test_fresh_dora_changes_nothing_and_trains_its_magnitudes():
    from easytrain.families.sd.targets import apply_network
    from easytrain.network.spec import NetworkSpec

    parts, plain = tiny_parts(), tiny_parts()
    network = apply_network(parts["unet"], parts["text_encoder"],
                            NetworkSpec(network_type="LoRA", dim=4, alpha=2.0, dora=True), seed=0)
    assert torch.allclose(run_unet(parts["unet"], unet_inputs()), run_unet(plain["unet"], unet_inputs()), atol=1e-5)
    sample, timesteps, context = unet_inputs()
    parts["unet"](sample, timesteps, context).sample.square().mean().backward()
    magnitudes = [s.layer.dora_scale for s in network.slots_of("unet")]
    assert all(m.grad is not None and m.grad.abs().sum() > 0 for m in magnitudes)
    assert set(map(id, magnitudes)) <= set(map(id, network.trainable_parameters()))


def test_saved_dora_loads_back(tmp_path, trained):
    from easytrain.network.export import save_lora
    from easytrain.network.load import load_lora_into

    network, sd, unet_out, _ = trained
    path = save_lora(network, tmp_path / "d.safetensors", dtype="float")
    parts, again = build(seed=9)
    randomize_adapters(again, seed=77)
    load_lora_into(again, path)
    assert torch.allclose(run_unet(parts["unet"], unet_inputs()), unet_out, atol=1e-5)


def test_dora_is_for_lora_and_locon_only():
    from easytrain.errors import UserError
    from easytrain.network.spec import NetworkSpec

    with pytest.raises(UserError) as info:
        NetworkSpec(network_type="LoHa", dim=4, alpha=1.0, dora=True)
    assert "dora: works with LoRA and LoCon only" in str(info.value.problems)

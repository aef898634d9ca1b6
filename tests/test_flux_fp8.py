"""fp8 storage of the base weights (families/flux/fp8.py): the same loss as weights rounded to fp8 beforehand."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from easytrain.families.flux import fp8
from easytrain.families.flux.block_swap import BlockSwap
from easytrain.families.flux.objective import FlowObjective
from easytrain.families.flux.targets import flux_targets
from easytrain.network.build import build_network
from easytrain.network.spec import NetworkSpec
from tests.flux_train_standin import StandInFlux


def _with_network(model):
    network = build_network({"unet": model}, flux_targets({"unet": model}, "dev"),
                            NetworkSpec("LoRA", 4, 4.0, train_text_encoder=False), seed=1)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(2)
        for p in network.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    return network


def _step(model, network, autocast: bool):
    objective = FlowObjective()
    generator = torch.Generator().manual_seed(3)
    batch = objective.prepare(torch.randn(2, 16, 4, 4, generator=generator), generator=generator)
    txt = torch.randn(2, 5, 12, generator=generator)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(img=batch.model_input, img_ids=batch.img_ids, txt=txt, txt_ids=torch.zeros(2, 5, 3),
                    timesteps=batch.timesteps, guidance=batch.guidance)
    loss = objective.loss(out, batch)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in network.trainable_parameters()]


def _pair():
    torch.manual_seed(0)
    base = StandInFlux(hidden=16, depth=2, depth_single=3, context=12)
    rounded = copy.deepcopy(base)
    with torch.no_grad():
        for module in rounded.modules():
            if type(module) is nn.Linear:
                module.weight.copy_(fp8.round_to_fp8(module.weight))
    return base, rounded


@pytest.mark.parametrize("autocast", [False, True])
def test_fp8_storage_gives_the_loss_of_prerounded_weights(autocast):
    stored, rounded = _pair()
    rounded_net = _with_network(rounded)
    stored_net = _with_network(stored)
    converted = fp8.store_in_fp8(stored, compute_dtype=torch.float32)
    assert converted == len([m for m in rounded.modules() if type(m) is nn.Linear and not m.weight.requires_grad])
    assert stored.double_blocks[0].img_attn.qkv.base_layer.weight.dtype == torch.float8_e4m3fn
    assert isinstance(stored.double_blocks[0].img_attn.qkv.base_layer, nn.Linear)
    loss_a, grads_a = _step(rounded, rounded_net, autocast)
    loss_b, grads_b = _step(stored, stored_net, autocast)
    assert torch.equal(loss_a, loss_b)
    for a, b in zip(grads_a, grads_b):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    # and differs from the unrounded model's: the test would see a layer left in full precision
    unrounded, _ = _pair()
    assert not torch.equal(_step(unrounded, _with_network(unrounded), autocast)[0], loss_b)


def test_fp8_halves_the_stored_weights_and_keeps_the_network_in_fp32():
    model, _ = _pair()
    network = _with_network(model)
    linear_bytes = sum(m.weight.numel() * 4 for m in model.modules() if type(m) is nn.Linear
                       and not m.weight.requires_grad)
    before = fp8.fp8_bytes(model)
    fp8.store_in_fp8(model)
    assert before - fp8.fp8_bytes(model) == linear_bytes * 3 // 4
    assert all(p.dtype == torch.float32 for p in network.trainable_parameters())
    layer = model.single_blocks[0].linear1.base_layer
    assert type(layer) is fp8.Fp8Linear and layer.compute_dtype == torch.bfloat16
    out = layer(torch.randn(2, 16))
    assert out.dtype == torch.bfloat16


def test_peft_wraps_an_fp8_layer_and_the_network_trains():
    torch.manual_seed(0)
    model = StandInFlux(hidden=16, depth=2, depth_single=3, context=12)
    model.requires_grad_(False)
    fp8.store_in_fp8(model, compute_dtype=torch.float32)
    network = build_network({"unet": model}, flux_targets({"unet": model}, "dev"),
                            NetworkSpec("LoRA", 4, 4.0, train_text_encoder=False), seed=1)
    assert len(network.slots) == 2 * 10 + 3 * 3
    assert all(p.dtype == torch.float32 for p in network.trainable_parameters())
    loss, grads = _step(model, network, autocast=False)
    assert torch.isfinite(loss) and any(g.abs().sum() > 0 for g in grads)


def test_fp8_and_block_swap_together():
    stored, rounded = _pair()
    stored_net, rounded_net = _with_network(stored), _with_network(rounded)
    fp8.store_in_fp8(stored, compute_dtype=torch.float32)
    BlockSwap([stored.double_blocks[1], stored.single_blocks[2]], "cpu", "cpu")
    assert stored.single_blocks[2].linear1.base_layer.weight.dtype == torch.float8_e4m3fn
    loss_a, _ = _step(rounded, rounded_net, False)
    loss_b, _ = _step(stored, stored_net, False)
    assert torch.equal(loss_a, loss_b)


def test_a_trainable_fp8_weight_is_refused():
    layer = nn.Linear(4, 4)
    layer.requires_grad_(False)
    assert fp8.store_in_fp8(layer) == 1
    layer.weight.requires_grad_(True)
    with pytest.raises(RuntimeError, match="cannot be trained"):
        layer(torch.zeros(1, 4))

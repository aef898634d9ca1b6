"""Block swap (families/flux/block_swap.py) on the CPU, the CPU standing in for both devices."""

from __future__ import annotations

import pytest
import torch

from easytrain.families.flux import block_swap as bs
from easytrain.families.flux.objective import FlowObjective, FlowSettings
from easytrain.families.flux.targets import flux_targets
from easytrain.network.build import build_network
from easytrain.network.export import save_lora
from easytrain.network.spec import NetworkSpec
from tests.flux_train_standin import StandInFlux


def _model_and_network():
    torch.manual_seed(0)
    model = StandInFlux(hidden=16, depth=4, depth_single=6, context=12)
    spec = NetworkSpec("LoRA", 4, 2.0, train_text_encoder=False)
    network = build_network({"unet": model}, flux_targets({"unet": model}, "dev"), spec, seed=1)
    with torch.no_grad():  # lora_up starts at zero; make every LoRA weight matter from the first step
        generator = torch.Generator().manual_seed(2)
        for p in network.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    return model, network


def _train(model, network, steps=3, dropout_like=False):
    objective = FlowObjective(FlowSettings(), "dev")
    optimizer = torch.optim.AdamW(network.trainable_parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(3)
    losses, grads = [], []
    for _ in range(steps):
        latents = torch.randn(2, 16, 4, 4, generator=generator)
        txt = torch.randn(2, 5, 12, generator=generator)
        batch = objective.prepare(latents, generator=generator)
        prediction = model(img=batch.model_input, img_ids=batch.img_ids, txt=txt, txt_ids=torch.zeros(2, 5, 3),
                           timesteps=batch.timesteps, guidance=batch.guidance)
        loss = objective.loss(prediction, batch)
        loss.backward()
        losses.append(loss.detach().clone())
        grads.append([p.grad.detach().clone() for p in network.trainable_parameters()])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return losses, grads


def _file(path):
    """A LoRA file's tensors (as bytes) and metadata; safetensors orders the metadata keys at random."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        return ({k: fh.get_tensor(k).numpy().tobytes() for k in fh.keys()}, fh.metadata())


def test_kohya_split_of_blocks_to_swap():
    assert bs.flux_swap_counts(16) == (8, 16)
    assert bs.flux_swap_counts(28) == (14, 28)
    assert bs.flux_swap_counts(0) == (0, 0)
    assert bs.max_blocks_to_swap() == 35
    with pytest.raises(ValueError, match="at most 35"):
        bs.flux_swap_counts(36)


def test_swapped_training_matches_unswapped_bit_for_bit(tmp_path):
    plain_model, plain_net = _model_and_network()
    plain_losses, plain_grads = _train(plain_model, plain_net)

    model, network = _model_and_network()
    log = []
    swap = bs.enable_block_swap(model, 3, "cpu", "cpu", log=log)   # 1 double + 4 single blocks
    assert [m.name for m in swap.movers] == ["double_blocks.3", "single_blocks.2", "single_blocks.3",
                                             "single_blocks.4", "single_blocks.5"]
    assert bs.is_swapped(model.double_blocks[3]) and not bs.is_swapped(model.double_blocks[2])
    losses, grads = _train(model, network)

    for a, b in zip(plain_losses, losses):
        assert torch.equal(a, b)
    for step_a, step_b in zip(plain_grads, grads):
        for a, b in zip(step_a, step_b):
            assert torch.equal(a, b)
    # every swapped block came in and went out for its forward and again for its backward, each step
    assert len(log) == 3 * 5 * 4
    assert log[:2] == [("double_blocks.3", "in"), ("double_blocks.3", "out")]
    backward = log[10:20]  # step 1's backward: the last block first
    assert backward[:2] == [("single_blocks.5", "in"), ("single_blocks.5", "out")]

    plain_file = save_lora(plain_net, tmp_path / "plain.safetensors", dtype=torch.float32)
    swapped_file = save_lora(network, tmp_path / "swapped.safetensors", dtype=torch.float32)
    assert _file(plain_file) == _file(swapped_file)

    swap.remove()
    assert not bs.is_swapped(model.double_blocks[3]) and "forward" not in model.double_blocks[3].__dict__


def test_without_grad_the_block_moves_in_and_out_once():
    model, _ = _model_and_network()
    log = []
    bs.enable_block_swap(model, 2, "cpu", "cpu", log=log)  # 1 double + 2 single
    objective = FlowObjective()
    batch = objective.prepare(torch.zeros(1, 16, 4, 4), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(img=batch.model_input, img_ids=batch.img_ids, txt=torch.zeros(1, 3, 12),
              txt_ids=torch.zeros(1, 3, 3), timesteps=batch.timesteps)
    assert len(log) == 3 * 2


def test_only_frozen_weights_move_and_the_first_block_still_trains():
    model, network = _model_and_network()
    lora = network.trainable_parameters()
    before = {id(p): p.data_ptr() for p in lora}
    frozen = model.double_blocks[0].img_attn.qkv.base_layer.weight
    original = frozen.data_ptr()
    log = []
    swap = bs.BlockSwap([model.double_blocks[0]], "cpu", "cpu", log=log)
    assert {id(p): p.data_ptr() for p in lora} == before         # the network's weights never move
    home = frozen.data_ptr()
    assert home != original                                        # the offload copy, made once
    seen = []
    model.double_blocks[0].img_attn.qkv.base_layer.register_forward_pre_hook(
        lambda module, args: seen.append(module.weight.data_ptr()))
    objective = FlowObjective()
    batch = objective.prepare(torch.randn(1, 16, 4, 4), generator=torch.Generator().manual_seed(0))
    out = model(img=batch.model_input, img_ids=batch.img_ids, txt=torch.zeros(1, 3, 12),
                txt_ids=torch.zeros(1, 3, 3), timesteps=batch.timesteps, guidance=batch.guidance)
    objective.loss(out, batch).backward()
    assert len(seen) == 2 and home not in seen                     # forward and recompute ran on a copy
    assert frozen.data_ptr() == home and log == [("0", "in"), ("0", "out")] * 2
    first = [p for s in network.slots if s.target.path.startswith("double_blocks.0.") for p in s.parameters()]
    assert first and all(p.grad is not None and p.grad.abs().sum() > 0 for p in first)
    swap.remove()


def _real_model(kind):
    import dataclasses

    from easytrain.families.flux.model import FluxTransformer
    from easytrain.families.flux.tiny import tiny_config

    torch.manual_seed(0)
    model = FluxTransformer(dataclasses.replace(tiny_config(kind), depth=4, depth_single_blocks=6))
    spec = NetworkSpec("LoRA", 4, 2.0, train_text_encoder=False)
    variant = "chroma" if kind == "chroma" else "dev"
    network = build_network({"unet": model}, flux_targets({"unet": model}, variant), spec, seed=1)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(2)
        for p in network.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    return model, network, variant


def _real_steps(model, network, variant, steps=2):
    objective = FlowObjective(FlowSettings(apply_t5_attn_mask=True), variant)
    optimizer = torch.optim.AdamW(network.trainable_parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(3)
    context, pooled = model.config.context_in_dim, model.config.vec_in_dim
    losses = []
    for _ in range(steps):
        batch = objective.prepare(torch.randn(2, 16, 4, 4, generator=generator), generator=generator)
        text = type("Text", (), dict(t5=torch.randn(2, 6, context, generator=generator),
                                     pooled=torch.randn(2, pooled, generator=generator) if pooled else None,
                                     t5_mask=torch.tensor([[1] * 6, [1] * 4 + [0] * 2])))
        loss = objective.loss(model(**objective.model_inputs(batch, text)), batch)
        loss.backward()
        losses.append(loss.detach().clone())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return losses, [p.detach().clone() for p in network.trainable_parameters()]


@pytest.mark.parametrize("kind,checkpointing", [("flux-dev", False), ("flux-dev", True), ("chroma", False)])
def test_the_flux_transformer_swapped_trains_the_same_weights(kind, checkpointing):
    plain, plain_net, variant = _real_model(kind)
    swapped, swapped_net, _ = _real_model(kind)
    for model in (plain, swapped):
        if checkpointing:
            model.enable_gradient_checkpointing()
        model.train()
    enable_log = []
    bs.enable_block_swap(swapped, 3, "cpu", "cpu", log=enable_log)
    losses_a, weights_a = _real_steps(plain, plain_net, variant)
    losses_b, weights_b = _real_steps(swapped, swapped_net, variant)
    # 5 swapped blocks, 2 steps: in and out for the forward and for the backward, not checkpointed again
    assert len(enable_log) == 5 * 2 * 4
    assert all(torch.equal(a, b) for a, b in zip(losses_a, losses_b))
    assert all(torch.equal(a, b) for a, b in zip(weights_a, weights_b))


def test_move_except_swapped_leaves_the_swapped_weights_offloaded():
    model, network = _model_and_network()
    swap = bs.enable_block_swap(model, 3, "cpu", "cpu")
    swapped = {id(p) for m in swap.movers for p in m.block.parameters() if not p.requires_grad}
    moved = {id(module._parameters[key]) for module, key, is_param in bs.unswapped_tensors(model) if is_param}
    assert swapped and not swapped & moved
    assert moved | swapped == {id(p) for p in model.parameters()}
    assert {id(p) for p in network.trainable_parameters()} <= moved
    before = {id(p): p.data_ptr() for p in model.parameters()}
    bs.move_except_swapped(model, "cpu")
    assert before == {id(p): p.data_ptr() for p in model.parameters()}


def test_swapped_under_autocast_matches_bit_for_bit():
    def run(swap):
        model, network, variant = _real_model("flux-dev")
        if swap:
            bs.enable_block_swap(model, 3, "cpu", "cpu")
        objective = FlowObjective(FlowSettings(), variant)
        generator = torch.Generator().manual_seed(3)
        batch = objective.prepare(torch.randn(1, 16, 4, 4, generator=generator), generator=generator)
        text = type("Text", (), dict(t5=torch.randn(1, 6, model.config.context_in_dim, generator=generator),
                                     pooled=torch.randn(1, model.config.vec_in_dim, generator=generator)))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            prediction = model(**objective.model_inputs(batch, text))
        assert prediction.dtype == torch.bfloat16
        loss = objective.loss(prediction, batch)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in network.trainable_parameters()]

    loss_a, grads_a = run(False)
    loss_b, grads_b = run(True)
    assert torch.equal(loss_a, loss_b)
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))

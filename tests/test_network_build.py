"""Targets like kohya (full-size SD1.5 on meta), peft injection, freezing, groups, seeds, casting."""

from __future__ import annotations

import pytest
import torch

from easytrain.errors import UserError
from tests._network_helpers import full_sd15_on_meta, randomize_adapters, run_unet, tiny_parts, unet_inputs


def _spec(kind="LoRA", **kw):
    from easytrain.network.spec import NetworkSpec

    conv = {} if kind == "LoRA" else dict(conv_dim=8, conv_alpha=4.0)
    return NetworkSpec(**{"network_type": kind, "dim": 16, "alpha": 8.0, **conv, **kw})


def _apply(parts, spec, seed=0):
    from easytrain.families.sd.targets import apply_network

    return apply_network(parts["unet"], parts["text_encoder"], spec, seed=seed)


@pytest.fixture(scope="module")
def sd15_meta_targets():
    from easytrain.families.sd.targets import text_encoder_targets, unet_targets

    unet, text_encoder = full_sd15_on_meta()
    return unet_targets(unet, with_convs=False), unet_targets(unet, with_convs=True), text_encoder_targets(text_encoder)


def test_full_size_sd15_module_counts_equal_kohyas(sd15_meta_targets):
    lora, locon, te = sd15_meta_targets
    assert (len(lora), len(te)) == (192, 72)
    assert len(locon) == 278
    # 16 transformers x (proj_in, proj_out, attn1/attn2 q/k/v/out_0, ff_net_0_proj, ff_net_2)
    assert sum(t.path.endswith("attn1.to_q") for t in lora) == 16
    assert sum(t.path.endswith("proj_in") for t in lora) == 16
    # LoCon: 22 resnets x (conv1, conv2, time_emb_proj) + 14 conv_shortcuts + 3 down + 3 up samplers
    extra = [t for t in locon if t not in lora]
    assert sum(t.path.endswith("time_emb_proj") for t in extra) == 22
    assert sum(t.path.endswith("conv_shortcut") for t in extra) == 14
    assert sum("samplers" in t.path for t in extra) == 6
    assert sum(t.uses_conv_dim for t in locon) == 50  # the 3x3 convs
    assert not any(t.uses_conv_dim for t in lora)
    assert {t.path.split(".")[-1] for t in te} == {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}
    assert te[0].kohya_name.startswith("lora_te_text_model_encoder_layers_0_")


@pytest.mark.parametrize("kind,unet_modules", [("LoRA", 192), ("LoCon", 278), ("LoHa", 278), ("LoKr", 278)])
def test_peft_adapts_exactly_the_targets_on_full_size_sd15(kind, unet_modules):
    from peft.tuners.tuners_utils import BaseTunerLayer

    unet, text_encoder = full_sd15_on_meta()
    network = _apply(dict(unet=unet, text_encoder=text_encoder), _spec(kind), seed=None)
    assert len(network.slots_of("unet")) == unet_modules
    assert len(network.slots_of("text_encoder")) == 72
    assert sum(isinstance(m, BaseTunerLayer) for m in unet.modules()) == unet_modules
    assert sum(isinstance(m, BaseTunerLayer) for m in text_encoder.modules()) == 72
    for slot in network.slots:
        assert slot.layer.r["default"] == (8 if slot.target.uses_conv_dim else 16)
        assert slot.layer.scaling["default"] == pytest.approx((4.0 / 8) if slot.target.uses_conv_dim else 0.5)
    if kind in ("LoRA", "LoCon"):
        proj_in = unet.get_submodule("down_blocks.0.attentions.0.proj_in")
        assert proj_in.lora_A["default"].weight.shape == (16, 320, 1, 1)
    if kind == "LoCon":
        conv1 = unet.get_submodule("down_blocks.0.resnets.0.conv1")
        assert conv1.lora_A["default"].weight.shape == (8, 320, 3, 3)
        assert conv1.lora_B["default"].weight.shape == (320, 8, 1, 1)


def test_lora_size_matches_the_wizards_promise():
    unet, text_encoder = full_sd15_on_meta()
    network = _apply(dict(unet=unet, text_encoder=text_encoder), _spec("LoRA"), seed=None)
    megabytes = sum(p.numel() for p in network.trainable_parameters()) * 2 / 1e6
    assert 17 < megabytes < 20  # "16 makes an ~18 MB file" in fp16


def test_only_adapters_train_and_start_as_identity():
    parts = tiny_parts()
    base_out = run_unet(parts["unet"], unet_inputs())
    network = _apply(parts, _spec("LoCon"))
    trainable = {id(p) for p in network.trainable_parameters()}
    for model in (network.unet, network.text_encoder):
        for name, p in model.named_parameters():
            assert p.requires_grad == (id(p) in trainable), name
    for slot in network.slots:
        assert slot.layer.lora_B["default"].weight.abs().max() == 0  # up = 0, as kohya
        assert slot.layer.lora_A["default"].weight.abs().max() > 0
    torch.testing.assert_close(run_unet(network.unet, unet_inputs()), base_out)


def test_seed_makes_initialisation_repeatable_without_touching_global_rng():
    torch.manual_seed(99)
    expected_next = torch.rand(3)
    torch.manual_seed(99)
    a = _apply(tiny_parts(), _spec("LoRA"), seed=5)
    assert torch.equal(torch.rand(3), expected_next)
    b = _apply(tiny_parts(), _spec("LoRA"), seed=5)
    c = _apply(tiny_parts(), _spec("LoRA"), seed=6)
    pa, pb, pc = (torch.cat([p.flatten() for p in n.trainable_parameters()]) for n in (a, b, c))
    assert torch.equal(pa, pb)
    assert not torch.equal(pa, pc)


@pytest.mark.parametrize("parts_trained", ["both", "unet_only", "text_encoder_only"])
def test_untrained_part_gets_no_adapters(parts_trained):
    from peft.tuners.tuners_utils import BaseTunerLayer

    train_unet = parts_trained != "text_encoder_only"
    train_te = parts_trained != "unet_only"
    parts = tiny_parts()
    network = _apply(parts, _spec("LoRA", train_unet=train_unet, train_text_encoder=train_te))
    assert any(isinstance(m, BaseTunerLayer) for m in parts["unet"].modules()) == train_unet
    assert any(isinstance(m, BaseTunerLayer) for m in parts["text_encoder"].modules()) == train_te
    groups = network.parameter_groups(unet_lr=5e-4, text_encoder_lr=1e-4)
    assert [g["name"] for g in groups] == [n for n, on in (("unet", train_unet), ("text_encoder", train_te)) if on]
    for g in groups:
        assert g["lr"] == (5e-4 if g["name"] == "unet" else 1e-4)
    assert sum(len(g["params"]) for g in groups) == len(network.trainable_parameters())
    assert not any(p.requires_grad for p in parts["text_encoder"].parameters()) or train_te
    assert not any(p.requires_grad for p in parts["unet"].parameters()) or train_unet


@pytest.mark.parametrize("kind", ["LoRA", "LoCon", "LoHa", "LoKr"])
def test_cast_base_keeps_fp32_adapters_and_trains(kind):
    parts = tiny_parts()
    network = _apply(parts, _spec(kind, dim=4, alpha=2.0))
    randomize_adapters(network)
    before = [p.detach().clone() for p in network.trainable_parameters()]
    optimizer = torch.optim.SGD(network.trainable_parameters(), lr=0.1)
    network.cast_base(torch.bfloat16)
    adapter_ids = {id(p) for p in network.trainable_parameters()}
    for name, p in network.unet.named_parameters():
        assert p.dtype == (torch.float32 if id(p) in adapter_ids else torch.bfloat16), name
    for p, old in zip(network.trainable_parameters(), before):
        assert torch.equal(p, old)
    sample, timesteps, context = (t[:1] for t in unet_inputs())
    sample = sample[..., :16, :16]
    loss = network.unet(sample.bfloat16(), timesteps, context.bfloat16()).sample.float().square().mean()
    loss.backward()
    optimizer.step()
    for p, old in zip(network.parameters_of("unet"), before):
        assert p.dtype == torch.float32 and not torch.equal(p, old)


def test_spec_rejects_bad_values_naming_them():
    from easytrain.network.spec import NetworkSpec

    with pytest.raises(UserError) as err:
        NetworkSpec("LoRB", 0, -1.0)
    text = str(err.value)
    assert "network_type" in text and "network_dim" in text and "network_alpha" in text
    with pytest.raises(UserError, match="conv_dim"):
        NetworkSpec("LoCon", 8, 4.0)
    with pytest.raises(UserError, match="train_parts"):
        NetworkSpec("LoRA", 8, 4.0, train_unet=False, train_text_encoder=False)
    assert NetworkSpec("LoCon", 8, 4.0, conv_dim=4).effective_conv_alpha == 1.0  # kohya's default

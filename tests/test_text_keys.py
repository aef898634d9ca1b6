"""The cross-attention's keys and values of a fixed text made once a checkpointed training step
(families/ddpm/text_keys.py): the same LoRA as diffusers' processor alone trains, bit for bit."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from easytrain.families.ddpm import text_keys


def _train(folder, monkeypatch, *, enabled: bool, **overrides) -> tuple[dict, int]:
    """The LoRA a run trains, and how many attention calls used keys and values made ahead."""
    from _train_helpers import Recorder, tiny_plan
    from easytrain.train.loop import run_training

    used = []
    original = text_keys.TextKeysOnce.__call__

    def counting(self, attn, hidden_states, encoder_hidden_states=None, *args, **kwargs):
        if self.held_for(attn, encoder_hidden_states) is not None:
            used.append(id(attn))
        return original(self, attn, hidden_states, encoder_hidden_states, *args, **kwargs)

    monkeypatch.setattr(text_keys, "ENABLED", enabled)
    monkeypatch.setattr(text_keys.TextKeysOnce, "__call__", counting)
    plan = tiny_plan(folder, epochs=1, gradient_checkpointing=True, shuffle_captions=False, **overrides)
    return load_file(str(run_training(plan, Recorder()).final_path)), len(used)


def _same(expected: dict, got: dict) -> None:
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_a_frozen_text_trains_the_same_lora_with_its_keys_made_once(tmp_path, monkeypatch):
    """SD1, UNet only: every cross-attention of both runs of each block (forward and the checkpoint's
    recomputation) uses the keys made ahead, and the LoRA is the one diffusers' processor trains."""
    alone, not_used = _train(tmp_path / "alone", monkeypatch, enabled=False, train_parts="unet_only")
    once, used = _train(tmp_path / "once", monkeypatch, enabled=True, train_parts="unet_only")
    assert not_used == 0 and used > 0
    _same(alone, once)


def test_sdxl_with_cached_text_outputs_trains_the_same_lora(tmp_path, monkeypatch):
    from easytrain.families.sdxl.tiny import tiny_sdxl_paths

    options = dict(base_model=str(tiny_sdxl_paths().single_file), architecture="sdxl", train_parts="unet_only")
    alone, _ = _train(tmp_path / "alone", monkeypatch, enabled=False, **options)
    once, used = _train(tmp_path / "once", monkeypatch, enabled=True, **options)
    assert used > 0
    _same(alone, once)


def test_a_text_that_trains_is_left_to_diffusers(tmp_path, monkeypatch):
    """Its gradient would be summed in another order: nothing is made ahead."""
    _, used = _train(tmp_path / "both", monkeypatch, enabled=True, train_parts="both")
    assert used == 0


@pytest.mark.parametrize("checkpointing, grad, training", [(False, True, True), (True, False, True),
                                                            (True, True, False)])
def test_nothing_is_made_ahead_outside_checkpointed_training(checkpointing, grad, training):
    """Sampling, validation and runs without checkpointing use diffusers' processor as it is; what a training
    step made is used only by that step's passes."""
    from easytrain.families.load import load_base_model

    base = load_base_model("builtin:tiny", dtype=torch.float32)
    unet = base.unet
    processor = unet.attn_processors[next(iter(unet.attn_processors))]
    assert isinstance(processor, text_keys.TextKeysOnce)
    if checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train(training)
    text = torch.randn(1, 77, unet.config.cross_attention_dim)
    with torch.set_grad_enabled(grad):
        unet(torch.randn(1, 4, 8, 8), torch.tensor([10]), encoder_hidden_states=text)
    assert processor._held == {}
    unet.enable_gradient_checkpointing()
    unet.train(True)
    unet(torch.randn(1, 4, 8, 8), torch.tensor([10]), encoder_hidden_states=text)
    held = processor._held[id(text)][1]  # the case that does make them ahead
    assert len(held) == len(processor._attentions) > 0
    attn = processor._attentions[0]
    assert processor.held_for(attn, text) is not None
    with torch.no_grad():  # a validation pass after the optimizer's step: they would be stale
        assert processor.held_for(attn, text) is None
    assert processor.held_for(attn, text.clone()) is None


def test_adapters_with_dropout_are_left_to_diffusers():
    layer = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.1))
    assert not text_keys._deterministic(layer)
    assert text_keys._deterministic(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.0)))
    holder = torch.nn.Linear(4, 4)
    holder.rank_dropout = {"default": 0.25}  # LyCORIS-style dropouts, as peft's LoHa/LoKr keep them
    assert not text_keys._deterministic(holder)


def test_what_a_step_made_is_not_used_by_a_later_forward_that_makes_none():
    """A cached text is the same tensor every step: a later forward that makes nothing ahead (here: with the
    flag off) must not find the earlier step's keys, whose graph its backward pass has freed."""
    from easytrain.families.load import load_base_model

    base = load_base_model("builtin:tiny", dtype=torch.float32)
    unet = base.unet
    unet.enable_gradient_checkpointing()
    unet.train(True)
    weight = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_k.weight
    weight.requires_grad_(True)
    text = torch.randn(1, 77, unet.config.cross_attention_dim)
    for enabled in (True, False, True):
        text_keys.ENABLED = enabled
        try:
            unet(torch.randn(1, 4, 8, 8), torch.tensor([10]), encoder_hidden_states=text).sample.mean().backward()
        finally:
            text_keys.ENABLED = True
    assert weight.grad is not None


def test_adapters_given_dropout_after_a_step_are_left_out_from_the_next():
    """Which attentions may share is remembered between steps, and worked out again when a to_k or to_v is
    replaced (as adapters are injected)."""
    from easytrain.families.load import load_base_model

    base = load_base_model("builtin:tiny", dtype=torch.float32)
    unet = base.unet
    unet.enable_gradient_checkpointing()
    unet.train(True)
    processor = unet.attn_processors[next(iter(unet.attn_processors))]
    text = torch.randn(1, 77, unet.config.cross_attention_dim)
    unet(torch.randn(1, 4, 8, 8), torch.tensor([10]), encoder_hidden_states=text)
    attn = processor._attentions[0]
    assert id(attn) in processor._held[id(text)][1]
    attn.to_k = torch.nn.Sequential(attn.to_k, torch.nn.Dropout(0.5))
    unet(torch.randn(1, 4, 8, 8), torch.tensor([10]), encoder_hidden_states=text)
    held = processor._held[id(text)][1]
    assert id(attn) not in held and len(held) == len(processor._attentions) - 1

"""load_lora_into: round trips for every type, alpha differences, and errors that name keys."""

from __future__ import annotations

import re

import pytest
import torch

from easytrain.errors import UserError
from tests._network_helpers import randomize_adapters, run_text_encoder, run_unet, tiny_parts, token_ids, unet_inputs

KINDS = {
    "LoRA": dict(dim=4, alpha=1.5),
    "LoCon": dict(dim=4, alpha=1.5, conv_dim=2, conv_alpha=3.0),
    "LoHa": dict(dim=4, alpha=1.5, conv_dim=2, conv_alpha=3.0),
    "LoKr": dict(dim=4, alpha=1.5, conv_dim=2, conv_alpha=3.0),
}


def _network(kind, seed=0, **overrides):
    from easytrain.families.sd.targets import apply_network
    from easytrain.network.spec import NetworkSpec

    parts = tiny_parts()
    spec = NetworkSpec(kind, **{**KINDS[kind], **overrides})
    return apply_network(parts["unet"], parts["text_encoder"], spec, seed=seed)


def _save(network, path, dtype="float"):
    from easytrain.network.export import save_lora

    return save_lora(network, path, dtype=dtype, metadata={"ss_output_name": "x"})


def _outputs(network):
    return run_unet(network.unet, unet_inputs()), run_text_encoder(network.text_encoder, token_ids())


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_round_trip_restores_weights_and_outputs(kind, tmp_path):
    from easytrain.network.load import load_lora_into

    source = _network(kind)
    randomize_adapters(source, seed=1)
    path = _save(source, tmp_path / "a.safetensors")
    target = _network(kind, seed=9)
    report = load_lora_into(target, path)
    assert report.modules_loaded == len(source.slots) and report.parts_absent == []
    for p, q in zip(source.trainable_parameters(), target.trainable_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=0)
    for a, b in zip(_outputs(source), _outputs(target)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kind", ["LoRA", "LoHa", "LoKr"])
def test_a_file_with_another_alpha_loads_at_the_strength_it_was_saved_with(kind, tmp_path):
    from easytrain.network.load import load_lora_into

    source = _network(kind, alpha=0.5)
    randomize_adapters(source, seed=2)
    path = _save(source, tmp_path / "a.safetensors")
    target = _network(kind, alpha=4.0)
    load_lora_into(target, path)
    for a, b in zip(_outputs(source), _outputs(target)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # and it saves back to a file with the same deltas
    again = _save(target, tmp_path / "b.safetensors")
    restored = _network(kind, alpha=0.5, seed=3)
    load_lora_into(restored, again)
    torch.testing.assert_close(_outputs(restored)[0], _outputs(source)[0], rtol=1e-4, atol=1e-5)


def test_fp16_file_loads_into_fp32_adapters(tmp_path):
    from easytrain.network.load import load_lora_into

    source = _network("LoCon")
    randomize_adapters(source, seed=4)
    target = _network("LoCon", seed=5)
    load_lora_into(target, _save(source, tmp_path / "h.safetensors", dtype="fp16"))
    for p, q in zip(source.trainable_parameters(), target.trainable_parameters()):
        assert q.dtype == torch.float32
        torch.testing.assert_close(q, p.half().float())


def test_wrong_rank_names_the_keys_and_changes_nothing(tmp_path):
    from easytrain.network.load import load_lora_into

    path = _save(_network("LoRA", dim=8), tmp_path / "rank8.safetensors")
    target = _network("LoRA", dim=4)
    before = [p.detach().clone() for p in target.trainable_parameters()]
    with pytest.raises(UserError) as err:
        load_lora_into(target, path)
    text = str(err.value)
    assert "rank8.safetensors" in text
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in text
    assert "file has [8, 32], this network needs [4, 32]" in text
    assert all(torch.equal(p, b) for p, b in zip(target.trainable_parameters(), before))


def test_other_network_type_lists_unknown_and_missing_keys(tmp_path):
    from easytrain.network.load import load_lora_into

    path = _save(_network("LoHa"), tmp_path / "loha.safetensors")
    with pytest.raises(UserError) as err:
        load_lora_into(_network("LoCon"), path)
    text = str(err.value)
    assert "the file holds a LoHa network; this run trains LoCon" in text
    assert re.search(r"unknown key: lora_te_text_model_encoder_layers_0_\w+\.hada_w1_a", text)
    assert "missing key: lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight" in text


def test_keys_for_modules_the_network_lacks_are_named(tmp_path):
    from easytrain.network.load import load_lora_into

    path = _save(_network("LoCon"), tmp_path / "locon.safetensors")
    with pytest.raises(UserError) as err:
        load_lora_into(_network("LoRA"), path)
    assert "unknown key: lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight" in str(err.value)


def test_unet_only_file_continues_into_a_network_that_also_trains_the_text_encoder(tmp_path):
    from easytrain.network.load import load_lora_into

    source = _network("LoRA", train_text_encoder=False)
    randomize_adapters(source, seed=6)
    target = _network("LoRA")
    report = load_lora_into(target, _save(source, tmp_path / "u.safetensors"))
    assert report.parts_absent == ["text_encoder"]
    torch.testing.assert_close(_outputs(target)[0], _outputs(source)[0])


def test_kohya_file_without_alpha_means_scale_one(tmp_path):
    from safetensors.torch import save_file

    from easytrain.network.load import load_lora_into

    source = _network("LoRA")
    randomize_adapters(source, seed=7)
    tensors = {k: v for k, v in source.kohya_state_dict().items() if not k.endswith(".alpha")}
    save_file(tensors, str(tmp_path / "noalpha.safetensors"))
    target = _network("LoRA")
    load_lora_into(target, tmp_path / "noalpha.safetensors")
    slot = target.slots[0]
    delta = slot.layer.get_delta_weight("default")
    down = tensors[f"{slot.target.kohya_name}.lora_down.weight"]
    up = tensors[f"{slot.target.kohya_name}.lora_up.weight"]
    torch.testing.assert_close(delta, (up.flatten(1) @ down.flatten(1)).reshape(delta.shape))


@pytest.mark.parametrize("content,name,message", [
    (None, "missing.safetensors", "no such LoRA file"),
    (b"not a safetensors file", "broken.safetensors", "not a readable .safetensors file"),
    (b"x", "old.ckpt", "must be a .safetensors file"),
])
def test_unreadable_files_are_user_errors(tmp_path, content, name, message):
    from easytrain.network.load import load_lora_into

    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=message) as err:
        load_lora_into(_network("LoRA"), path)
    assert name in str(err.value)

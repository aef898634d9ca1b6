"""LoRA/LoCon export: kohya keys and shapes, diffusers loads every key, outputs equal a manual merge."""

from __future__ import annotations

import json
import logging
import re

import pytest
import torch

from tests._network_helpers import (
    merge_lora_by_hand,
    randomize_adapters,
    run_text_encoder,
    run_unet,
    tiny_parts,
    token_ids,
    unet_inputs,
)

SPECS = {
    "LoRA": dict(network_type="LoRA", dim=4, alpha=1.5),
    "LoCon": dict(network_type="LoCon", dim=4, alpha=1.5, conv_dim=3, conv_alpha=5.0),
}

# What AUTOMATIC1111 and ComfyUI convert for SD1 LoRAs (kohya names in diffusers layout).
UNET_KEY = re.compile(
    r"^lora_unet_(down_blocks_[0-3]|mid_block|up_blocks_[0-3])_"
    r"(attentions_\d+_(proj_in|proj_out|transformer_blocks_\d+_(attn[12]_to_(q|k|v|out_0)|ff_net_0_proj|ff_net_2))"
    r"|resnets_\d+_(conv1|conv2|time_emb_proj|conv_shortcut)|downsamplers_0_conv|upsamplers_0_conv)$"
)
TE_KEY = re.compile(r"^lora_te_text_model_encoder_layers_\d+_(self_attn_(q|k|v|out)_proj|mlp_fc(1|2))$")


def _build(kind: str, seed: int = 0):
    from easytrain.families.sd.targets import apply_network
    from easytrain.network.spec import NetworkSpec

    parts = tiny_parts()
    network = apply_network(parts["unet"], parts["text_encoder"], NetworkSpec(**SPECS[kind]), seed=seed)
    randomize_adapters(network)
    return network


@pytest.fixture(scope="module", params=sorted(SPECS))
def exported(request, tmp_path_factory):
    """A network with random adapters, saved in fp32 (kind, network, path)."""
    from easytrain.network.export import save_lora
    from easytrain.network.metadata import build_metadata

    kind = request.param
    network = _build(kind)
    path = tmp_path_factory.mktemp(kind) / f"{kind}.safetensors"
    metadata = build_metadata(spec=network.spec, output_name=kind, comment="trigger: zzz", steps=12, epoch=3)
    save_lora(network, path, dtype="float", metadata=metadata)
    return kind, network, path


def _read(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, fh.metadata()


def test_keys_are_kohya_names_that_a1111_and_comfyui_convert(exported):
    kind, network, path = exported
    tensors, _ = _read(path)
    modules = {k.split(".")[0] for k in tensors}
    for name in modules:
        assert UNET_KEY.match(name) or TE_KEY.match(name), name
        assert {f"{name}.lora_down.weight", f"{name}.lora_up.weight", f"{name}.alpha"} <= set(tensors)
    assert len(tensors) == 3 * len(modules) == 3 * len(network.slots)
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q" in modules
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj" in modules
    assert "lora_te_text_model_encoder_layers_1_mlp_fc2" in modules
    has_resnets = any("_resnets_" in m for m in modules)
    assert has_resnets == (kind == "LoCon")


def test_shapes_and_alpha(exported):
    kind, network, path = exported
    spec = network.spec
    tensors, _ = _read(path)
    proj_in = "lora_unet_down_blocks_0_attentions_0_proj_in"
    assert tensors[f"{proj_in}.lora_down.weight"].shape == (spec.dim, 32, 1, 1)
    assert tensors[f"{proj_in}.lora_up.weight"].shape == (32, spec.dim, 1, 1)
    q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    assert tensors[f"{q}.lora_down.weight"].shape == (spec.dim, 32)
    for key, t in tensors.items():
        if key.endswith(".alpha"):
            assert t.dim() == 0 and t.dtype == torch.float32
    if kind == "LoCon":
        conv1 = "lora_unet_down_blocks_1_resnets_0_conv1"
        assert tensors[f"{conv1}.lora_down.weight"].shape == (spec.conv_dim, 32, 3, 3)
        assert tensors[f"{conv1}.lora_up.weight"].shape == (64, spec.conv_dim, 1, 1)
        assert tensors[f"{conv1}.alpha"].item() == spec.conv_alpha
        shortcut = "lora_unet_down_blocks_1_resnets_0_conv_shortcut"  # 1x1: network dim and alpha
        assert tensors[f"{shortcut}.lora_down.weight"].shape == (spec.dim, 32, 1, 1)
        assert tensors[f"{shortcut}.alpha"].item() == spec.alpha
        assert tensors["lora_unet_up_blocks_0_upsamplers_0_conv.lora_down.weight"].shape == (spec.conv_dim, 64, 3, 3)
    assert tensors[f"{proj_in}.alpha"].item() == spec.alpha
    assert tensors[f"{q}.alpha"].item() != spec.dim


def test_diffusers_loads_every_key_and_matches_a_manual_merge(exported):
    import diffusers
    from diffusers import StableDiffusionPipeline
    from peft.tuners.tuners_utils import BaseTunerLayer

    kind, network, path = exported
    tensors, _ = _read(path)

    parts = tiny_parts()
    pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    handler = _Collect()
    logger = diffusers.utils.logging.get_logger("diffusers")
    diffusers.utils.logging.set_verbosity_warning()
    logger.addHandler(handler)
    try:
        pipe.load_lora_weights(str(path))  # raises if a key cannot be converted
    finally:
        logger.removeHandler(handler)
        diffusers.utils.logging.set_verbosity_error()
    complaints = [m for m in handler.messages if "unexpected" in m.lower() or "not been" in m.lower()]
    assert not complaints, complaints

    n_unet = sum(isinstance(m, BaseTunerLayer) for m in pipe.unet.modules())
    n_te = sum(isinstance(m, BaseTunerLayer) for m in pipe.text_encoder.modules())
    assert n_unet == sum(k.startswith("lora_unet_") and k.endswith(".alpha") for k in tensors)
    assert n_te == sum(k.startswith("lora_te_") and k.endswith(".alpha") for k in tensors)

    merged = tiny_parts()
    assert merge_lora_by_hand(merged["unet"], merged["text_encoder"], tensors) == len(network.slots)

    inputs, ids = unet_inputs(), token_ids()
    expected_unet = run_unet(merged["unet"], inputs)
    expected_te = run_text_encoder(merged["text_encoder"], ids)
    base_unet = run_unet(tiny_parts()["unet"], inputs)
    assert (expected_unet - base_unet).abs().max() > 1e-3  # the adapters change the output

    for unet, te in ((pipe.unet, pipe.text_encoder), (network.unet, network.text_encoder)):
        torch.testing.assert_close(run_unet(unet, inputs), expected_unet, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(run_text_encoder(te, ids), expected_te, rtol=1e-4, atol=1e-5)


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_metadata_round_trips_and_model_hash_matches_file(exported):
    import hashlib
    import struct

    kind, network, path = exported
    _, meta = _read(path)
    blob = path.read_bytes()
    (header_len,) = struct.unpack("<Q", blob[:8])
    assert meta["sshs_model_hash"] == hashlib.sha256(blob[8 + header_len:]).hexdigest()
    # kohya's legacy hash: 64 KiB at 1 MiB of a serialisation that carries only the ss_* metadata
    from safetensors.torch import save

    tensors, _ = _read(path)
    probe = save(tensors, metadata={k: v for k, v in meta.items() if k.startswith("ss_")})
    assert meta["sshs_legacy_hash"] == hashlib.sha256(probe[0x100000:0x110000]).hexdigest()[:8]
    assert all(isinstance(v, str) for v in meta.values())
    assert meta["ss_network_module"] == "networks.lora"
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "1.5"
    assert meta["ss_output_name"] == kind and meta["ss_training_comment"] == "trigger: zzz"
    assert meta["ss_steps"] == "12" and meta["ss_epoch"] == "3"
    assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_v2"] == "False"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert meta["modelspec.resolution"] == "512x512"
    if kind == "LoCon":
        assert json.loads(meta["ss_network_args"]) == {"conv_dim": "3", "conv_alpha": "5.0"}
    else:
        assert "ss_network_args" not in meta


@pytest.mark.parametrize("precision,dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_save_dtype_is_honoured(tmp_path, precision, dtype):
    from easytrain.network.export import save_lora

    network = _build("LoCon")
    path = save_lora(network, tmp_path / "x.safetensors", dtype=precision, metadata={"ss_output_name": "x"})
    tensors, meta = _read(path)
    assert {t.dtype for t in tensors.values()} == {dtype}
    alpha = tensors["lora_unet_down_blocks_0_attentions_0_proj_in.alpha"]
    assert alpha.dim() == 0 and alpha.item() == 1.5
    for p in network.trainable_parameters():
        assert p.dtype == torch.float32  # saving never touches the live weights


def test_save_is_atomic_and_keeps_the_old_file_on_failure(tmp_path):
    from easytrain.network.export import save_lora

    network = _build("LoRA")
    path = save_lora(network, tmp_path / "keep.safetensors", dtype="fp16", metadata={})
    before = path.read_bytes()
    with pytest.raises(TypeError):
        save_lora(network, path, dtype="fp16", metadata={"ss_steps": 5})  # not a string
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.safetensors"]

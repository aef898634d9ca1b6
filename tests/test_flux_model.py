"""Flux.1 / Chroma: our BFL-layout transformer against diffusers', and its sizes read off shapes."""

from __future__ import annotations

import pytest
import torch

from easytrain.families.flux.convert import bfl_to_diffusers, diffusers_config, diffusers_to_bfl
from easytrain.families.flux.detect import CHROMA, FLUX_DEV, FLUX_SCHNELL
from easytrain.families.flux.model import (
    FluxConfig,
    build_model,
    image_ids,
    pack_latents,
    text_ids,
    unpack_latents,
)
from easytrain.families.flux.tiny import build_tiny_transformer, diffusers_transformer, tiny_config

BATCH, TOKENS = 2, 5


def _inputs(kind: str, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    config = tiny_config(kind)
    latents = torch.randn(BATCH, 16, 8, 8, generator=generator)
    inputs = dict(img=pack_latents(latents), img_ids=image_ids(BATCH, 8, 8),
                  txt=torch.randn(BATCH, TOKENS, config.context_in_dim, generator=generator),
                  txt_ids=text_ids(BATCH, TOKENS), timesteps=torch.rand(BATCH, generator=generator))
    if kind != CHROMA:
        inputs["y"] = torch.randn(BATCH, config.vec_in_dim, generator=generator)
    if kind == FLUX_DEV:
        inputs["guidance"] = torch.tensor([3.5, 1.0])
    return inputs


def _diffusers_forward(model, inputs: dict) -> torch.Tensor:
    kwargs = dict(hidden_states=inputs["img"], encoder_hidden_states=inputs["txt"], timestep=inputs["timesteps"],
                  img_ids=inputs["img_ids"][0], txt_ids=inputs["txt_ids"][0], return_dict=False)
    if "y" in inputs:
        kwargs["pooled_projections"] = inputs["y"]
    if "guidance" in inputs:
        kwargs["guidance"] = inputs["guidance"]
    return model(**kwargs)[0]


@pytest.mark.parametrize("kind", [FLUX_DEV, FLUX_SCHNELL, CHROMA])
def test_forward_equals_diffusers_on_the_same_weights(kind):
    ours = build_tiny_transformer(kind).eval()
    theirs = diffusers_transformer(ours)  # bfl_to_diffusers, sizes from shapes
    inputs = _inputs(kind)
    with torch.no_grad():
        expected = _diffusers_forward(theirs, inputs)
        got = ours(**inputs)
    assert got.shape == (BATCH, 16, 64)
    assert expected.abs().mean() > 0.1  # a real signal, not a vanishing one
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", [FLUX_DEV, CHROMA])
def test_key_conversion_round_trips(kind):
    state = build_tiny_transformer(kind).state_dict()
    converted = bfl_to_diffusers(state)
    assert not any(k.startswith(("double_blocks.", "single_blocks.")) for k in converted)
    back = diffusers_to_bfl(converted)
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_every_input_matters():
    model = build_tiny_transformer(FLUX_DEV).eval()
    inputs = _inputs(FLUX_DEV)
    with torch.no_grad():
        base = model(**inputs)
        for name in ("timesteps", "y", "guidance", "txt"):
            changed = dict(inputs, **{name: inputs[name] + 0.5})
            assert not torch.allclose(model(**changed), base), name


def test_gradient_checkpointing_gives_the_same_gradients():
    inputs = _inputs(FLUX_DEV)
    grads = []
    for checkpointing in (False, True):
        model = build_tiny_transformer(FLUX_DEV).train()
        model.requires_grad_(True)
        if checkpointing:
            model.enable_gradient_checkpointing()
        model(**inputs).square().mean().backward()
        grads.append(model.double_blocks[0].img_attn.qkv.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_t5_attention_mask_hides_padding_tokens():
    model = build_tiny_transformer(CHROMA).eval()
    inputs = _inputs(CHROMA)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    padded = inputs["txt"].clone()
    padded[mask == 0] = 7.0  # different padding contents
    with torch.no_grad():
        a = model(**inputs, txt_attention_mask=mask)
        b = model(**dict(inputs, txt=padded), txt_attention_mask=mask)
        unmasked = model(**dict(inputs, txt=padded))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, unmasked)


def test_block_lists_and_kohya_module_names():
    model = build_tiny_transformer(FLUX_DEV)
    assert isinstance(model.double_blocks, torch.nn.ModuleList) and len(model.double_blocks) == 2
    assert isinstance(model.single_blocks, torch.nn.ModuleList) and len(model.single_blocks) == 2
    linears = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    for name in ("img_in", "txt_in", "time_in.in_layer", "time_in.out_layer", "vector_in.in_layer",
                 "guidance_in.out_layer", "double_blocks.0.img_mod.lin", "double_blocks.0.img_attn.qkv",
                 "double_blocks.0.img_attn.proj", "double_blocks.0.img_mlp.0", "double_blocks.0.img_mlp.2",
                 "double_blocks.1.txt_mod.lin", "double_blocks.1.txt_attn.qkv", "double_blocks.1.txt_mlp.2",
                 "single_blocks.1.linear1", "single_blocks.1.linear2", "single_blocks.0.modulation.lin",
                 "final_layer.linear", "final_layer.adaLN_modulation.1"):
        assert name in linears, name
    block_linears = [n for n in linears if n.startswith(("double_blocks.", "single_blocks."))]
    assert len(block_linears) == 2 * 10 + 2 * 3  # kohya's 10 per double block, 3 per single block
    params = dict(model.named_parameters())
    assert "double_blocks.0.img_attn.norm.query_norm.scale" in params
    assert "single_blocks.0.norm.key_norm.scale" in params


def test_chroma_has_no_modulation_layers():
    model = build_tiny_transformer(CHROMA)
    names = [n for n, _ in model.named_parameters()]
    assert not any(part in n for n in names for part in ("_mod.", "modulation.", "adaLN", "time_in",
                                                         "vector_in", "guidance_in"))
    assert "distilled_guidance_layer.layers.1.out_layer.weight" in names
    assert "distilled_guidance_layer.norms.0.scale" in names
    block_linears = [n for n, m in model.named_modules()
                     if isinstance(m, torch.nn.Linear) and n.startswith(("double_blocks.", "single_blocks."))]
    assert len(block_linears) == 2 * 8 + 2 * 2  # kohya's Chroma: 8 per double block, 2 per single block


@pytest.mark.parametrize("kind", [FLUX_DEV, FLUX_SCHNELL, CHROMA])
def test_config_from_shapes(kind):
    model = build_tiny_transformer(kind)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert FluxConfig.from_header(shapes) == tiny_config(kind)
    prefixed = {"model.diffusion_model." + k: {"dtype": "BF16", "shape": v} for k, v in shapes.items()}
    assert FluxConfig.from_header(prefixed) == tiny_config(kind)


def test_not_flux_shapes_are_refused():
    with pytest.raises(ValueError, match="not a Flux-layout transformer"):
        FluxConfig.from_header({"model.diffusion_model.input_blocks.0.0.weight": [320, 4, 3, 3]})


def test_full_size_dev_on_the_meta_device():
    model = build_model(FluxConfig())
    state = model.state_dict()
    assert len(state) == 780
    assert sum(p.numel() for p in model.parameters()) == 11_901_408_320
    assert all(p.is_meta for p in model.parameters())
    assert FluxConfig.from_header({k: v.shape for k, v in state.items()}) == FluxConfig()
    assert diffusers_config(FluxConfig())["attention_head_dim"] == 128


def test_full_size_chroma_on_the_meta_device():
    config = FluxConfig(kind=CHROMA, vec_in_dim=0, guidance_embed=False)
    model = build_model(config)
    assert config.modulation_count == 344
    assert 8.5e9 < sum(p.numel() for p in model.parameters()) < 9.0e9
    assert FluxConfig.from_header({k: v.shape for k, v in model.state_dict().items()}) == config


def test_packing_round_trips():
    latents = torch.randn(2, 16, 6, 10)
    packed = pack_latents(latents)
    assert packed.shape == (2, 15, 64)
    assert torch.equal(unpack_latents(packed, 6, 10), latents)
    ids = image_ids(2, 6, 10)
    assert ids.shape == (2, 15, 3) and ids[0, 6].tolist() == [0.0, 1.0, 1.0]

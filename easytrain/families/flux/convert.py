"""Transformer key names between diffusers' Flux/Chroma layout and Black Forest Labs' (ours).

diffusers splits what BFL fuses: ``to_q``/``to_k``/``to_v`` are one ``qkv`` in a double block; in a
single block ``to_q``/``to_k``/``to_v``/``proj_mlp`` are one ``linear1``. diffusers' final norm
holds (scale, shift) where BFL's ``adaLN_modulation.1`` holds (shift, scale). One table, built from
the block counts, serves both ways: loading a diffusers folder (``bfl_recipes`` then ``fuse``) and
writing our models as diffusers (``bfl_to_diffusers``, used for the tiny folder and the tests).
Sizes come from the shapes, never from a hard-coded 3072 (diffusers' own single-file converter has one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

LINEAR = (("weight", "weight"), ("bias", "bias"))
NORM = (("scale", "weight"),)


@dataclass(frozen=True)
class Recipe:
    """How one BFL tensor is made: the diffusers tensors joined along dim 0, then (shift, scale) swapped."""

    sources: tuple[str, ...]
    swap_halves: bool = False


def _modules(depth: int, single: int, chroma: bool, approximator_layers: int) -> list[tuple[str, tuple, tuple, bool]]:
    """(BFL module, diffusers modules, parameter pairs, swap) for every module of the transformer."""
    rows: list[tuple[str, tuple, tuple, bool]] = [
        ("img_in", ("x_embedder",), LINEAR, False),
        ("txt_in", ("context_embedder",), LINEAR, False),
        ("final_layer.linear", ("proj_out",), LINEAR, False),
    ]
    if chroma:
        rows += [("distilled_guidance_layer.in_proj", ("distilled_guidance_layer.in_proj",), LINEAR, False),
                 ("distilled_guidance_layer.out_proj", ("distilled_guidance_layer.out_proj",), LINEAR, False)]
        for n in range(approximator_layers):
            at = f"distilled_guidance_layer.layers.{n}."
            rows += [(at + "in_layer", (at + "linear_1",), LINEAR, False),
                     (at + "out_layer", (at + "linear_2",), LINEAR, False),
                     (f"distilled_guidance_layer.norms.{n}", (f"distilled_guidance_layer.norms.{n}",), NORM, False)]
    else:
        for bfl, dif in (("time_in", "timestep_embedder"), ("vector_in", "text_embedder"),
                         ("guidance_in", "guidance_embedder")):
            rows += [(f"{bfl}.in_layer", (f"time_text_embed.{dif}.linear_1",), LINEAR, False),
                     (f"{bfl}.out_layer", (f"time_text_embed.{dif}.linear_2",), LINEAR, False)]
        rows.append(("final_layer.adaLN_modulation.1", ("norm_out.linear",), LINEAR, True))
    for i in range(depth):
        b, d = f"double_blocks.{i}.", f"transformer_blocks.{i}."
        rows += [
            (b + "img_attn.qkv", (d + "attn.to_q", d + "attn.to_k", d + "attn.to_v"), LINEAR, False),
            (b + "txt_attn.qkv", (d + "attn.add_q_proj", d + "attn.add_k_proj", d + "attn.add_v_proj"), LINEAR, False),
            (b + "img_attn.norm.query_norm", (d + "attn.norm_q",), NORM, False),
            (b + "img_attn.norm.key_norm", (d + "attn.norm_k",), NORM, False),
            (b + "txt_attn.norm.query_norm", (d + "attn.norm_added_q",), NORM, False),
            (b + "txt_attn.norm.key_norm", (d + "attn.norm_added_k",), NORM, False),
            (b + "img_attn.proj", (d + "attn.to_out.0",), LINEAR, False),
            (b + "txt_attn.proj", (d + "attn.to_add_out",), LINEAR, False),
            (b + "img_mlp.0", (d + "ff.net.0.proj",), LINEAR, False),
            (b + "img_mlp.2", (d + "ff.net.2",), LINEAR, False),
            (b + "txt_mlp.0", (d + "ff_context.net.0.proj",), LINEAR, False),
            (b + "txt_mlp.2", (d + "ff_context.net.2",), LINEAR, False),
        ]
        if not chroma:
            rows += [(b + "img_mod.lin", (d + "norm1.linear",), LINEAR, False),
                     (b + "txt_mod.lin", (d + "norm1_context.linear",), LINEAR, False)]
    for i in range(single):
        b, d = f"single_blocks.{i}.", f"single_transformer_blocks.{i}."
        rows += [
            (b + "linear1", (d + "attn.to_q", d + "attn.to_k", d + "attn.to_v", d + "proj_mlp"), LINEAR, False),
            (b + "linear2", (d + "proj_out",), LINEAR, False),
            (b + "norm.query_norm", (d + "attn.norm_q",), NORM, False),
            (b + "norm.key_norm", (d + "attn.norm_k",), NORM, False),
        ]
        if not chroma:
            rows.append((b + "modulation.lin", (d + "norm.linear",), LINEAR, False))
    return rows


def _count(keys: Iterable[str], pattern: str) -> int:
    regex = re.compile(pattern)
    found = {int(m.group(1)) for k in keys for m in [regex.match(k)] if m}
    return max(found) + 1 if found else 0


def bfl_recipes(diffusers_keys: Iterable[str]) -> dict[str, Recipe]:
    """BFL key -> Recipe for every tensor a diffusers Flux/Chroma transformer with these keys has."""
    keys = set(diffusers_keys)
    chroma = any(k.startswith("distilled_guidance_layer.") for k in keys)
    rows = _modules(_count(keys, r"transformer_blocks\.(\d+)\."), _count(keys, r"single_transformer_blocks\.(\d+)\."),
                    chroma, _count(keys, r"distilled_guidance_layer\.layers\.(\d+)\."))
    recipes = {}
    for bfl, sources, params, swap in rows:
        for ours, theirs in params:
            names = tuple(f"{s}.{theirs}" for s in sources)
            if all(n in keys for n in names):
                recipes[f"{bfl}.{ours}"] = Recipe(names, swap)
    return recipes


def bfl_shapes(diffusers_shapes: Mapping[str, tuple]) -> dict[str, tuple]:
    """The BFL shapes a diffusers transformer of these shapes converts to (for FluxConfig.from_header)."""
    result = {}
    for key, recipe in bfl_recipes(diffusers_shapes).items():
        shapes = [tuple(diffusers_shapes[s]) for s in recipe.sources]
        result[key] = (sum(s[0] for s in shapes),) + shapes[0][1:]
    return result


def fuse(recipe: Recipe, get: Callable[[str], object]):
    """The BFL tensor for ``recipe``, reading each diffusers tensor through ``get``."""
    import torch

    parts = [get(name) for name in recipe.sources]
    tensor = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
    return _swap(tensor) if recipe.swap_halves else tensor


def _swap(tensor):
    import torch

    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def diffusers_to_bfl(state: Mapping[str, object]) -> dict:
    """A whole diffusers transformer state dict in BFL's layout (copies where tensors are fused)."""
    return {key: fuse(recipe, state.__getitem__) for key, recipe in bfl_recipes(state).items()}


def bfl_to_diffusers(state: Mapping[str, object]) -> dict:
    """A BFL transformer state dict (bare keys) in diffusers' layout, split by its own shapes."""
    keys = set(state)
    chroma = any(k.startswith("distilled_guidance_layer.") for k in keys)
    hidden = state["img_in.weight"].shape[0]
    rows = _modules(_count(keys, r"double_blocks\.(\d+)\."), _count(keys, r"single_blocks\.(\d+)\."),
                    chroma, _count(keys, r"distilled_guidance_layer\.layers\.(\d+)\."))
    result = {}
    for bfl, sources, params, swap in rows:
        for ours, theirs in params:
            key = f"{bfl}.{ours}"
            if key not in state:
                continue
            tensor = _swap(state[key]) if swap else state[key]
            if len(sources) == 1:
                pieces = [tensor]
            elif len(sources) == 3:
                pieces = list(tensor.chunk(3, dim=0))
            else:  # linear1: q, k, v, then the MLP's input
                pieces = list(tensor.split([hidden, hidden, hidden, tensor.shape[0] - 3 * hidden], dim=0))
            for name, piece in zip(sources, pieces):
                result[f"{name}.{theirs}"] = piece.contiguous()
    return result


def diffusers_config(config) -> dict:
    """diffusers' FluxTransformer2DModel / ChromaTransformer2DModel config for a FluxConfig."""
    common = dict(patch_size=1, in_channels=config.in_channels, out_channels=config.out_channels,
                  num_layers=config.depth, num_single_layers=config.depth_single_blocks,
                  attention_head_dim=config.head_dim, num_attention_heads=config.num_heads,
                  joint_attention_dim=config.context_in_dim, axes_dims_rope=tuple(config.axes_dim))
    if config.chroma:
        return dict(common, approximator_num_channels=config.approximator_in_dim,
                    approximator_hidden_dim=config.approximator_hidden_dim,
                    approximator_layers=config.approximator_layers)
    return dict(common, pooled_projection_dim=config.vec_in_dim, guidance_embeds=config.guidance_embed)


# ---- the AE: diffusers' AutoencoderKL names <-> the LDM / BFL layout of ae.safetensors ----------

_AE_INNER = (("conv_shortcut.", "nin_shortcut."), ("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."),
             ("to_v.", "v."), ("to_out.0.", "proj_out."))


def ae_key(name: str, levels: int) -> str:
    """The ``ae.safetensors`` key of a diffusers AutoencoderKL parameter with ``levels`` resolution levels."""
    part, _, rest = name.partition(".")
    match = re.match(r"(down_blocks|up_blocks)\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.*)", rest)
    if match:
        kind, level, inner, index, tail = match.groups()
        level = int(level) if kind == "down_blocks" else levels - 1 - int(level)
        where = {"resnets": f"block.{index}.", "downsamplers": "downsample.", "upsamplers": "upsample."}[inner]
        rest = f"{'down' if kind == 'down_blocks' else 'up'}.{level}.{where}{tail}"
    elif rest.startswith("mid_block."):
        rest = (rest.replace("mid_block.resnets.0.", "mid.block_1.").replace("mid_block.resnets.1.", "mid.block_2.")
                .replace("mid_block.attentions.0.", "mid.attn_1."))
    elif rest.startswith("conv_norm_out."):
        rest = "norm_out." + rest[len("conv_norm_out."):]
    head, dot, last = rest.rpartition(".")
    for old, new in _AE_INNER:
        marker = "." + old
        if marker in "." + head + ".":
            head = ("." + head + ".").replace(marker, "." + new, 1).strip(".")
            break
    return f"{part}.{head}{dot}{last}" if part in ("encoder", "decoder") else name


def ae_key_map(names: Iterable[str], levels: int) -> dict[str, str]:
    """diffusers AutoencoderKL parameter name -> its ``ae.safetensors`` key."""
    return {name: ae_key(name, levels) for name in names}

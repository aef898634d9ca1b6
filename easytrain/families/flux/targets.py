"""Which Flux layers get an adapter, and kohya's names for them (sd-scripts networks/lora_flux.py).

kohya adapts every Linear inside the ``DoubleStreamBlock`` and ``SingleStreamBlock`` modules of its
Flux model, which is in Black Forest Labs' layout, and names each by its module path:

- transformer (``lora_unet_``): per double block img_mod.lin, img_attn.qkv, img_attn.proj, img_mlp.0,
  img_mlp.2 and the same five for txt (10); per single block linear1, linear2, modulation.lin (3).
  Flux.1 dev/schnell: 19 x 10 + 38 x 3 = 304 modules. Chroma has no modulation layers (a guidance
  approximator, ``distilled_guidance_layer``, outside the blocks, computes them): 19 x 8 + 38 x 2 = 228.
  The input/output layers (img_in, txt_in, time_in, vector_in, guidance_in, final_layer) are not adapted.
- CLIP-L (``lora_te1_``): q/k/v/out_proj and fc1/fc2 of the 12 layers, 72 modules, named in the
  transformers 4 layout (``lora_te1_text_model_encoder_layers_0_self_attn_q_proj``).
- T5-XXL, only when asked: q/k/v/o and wi_0/wi_1/wo of the 24 blocks, 168 modules
  (``lora_te3_encoder_block_0_layer_0_SelfAttention_q``).

ComfyUI (comfy/lora.py, model_lora_keys_clip) maps T5 keys from ``lora_te{1 + clip_g + clip_l}_``:
``lora_te3_`` for Flux (CLIP-L present; it also accepts ``lora_te2_``), but ``lora_te1_`` for Chroma,
whose only text encoder is T5. kohya writes Chroma's T5 under ``lora_te3_`` and ComfyUI drops those
("lora key not loaded"), so easytrain writes Chroma's T5 modules as ``lora_te1_encoder_block_...``.

The network's part names follow the rest of easytrain: "unet" for the transformer (kohya's
``lora_unet_``), "text_encoder" for the first text encoder (CLIP-L; T5 on Chroma), "text_encoder_2"
for T5 beside CLIP-L.
"""

from __future__ import annotations

import re
from typing import Mapping, Optional, Sequence

from torch import nn

from easytrain.network.targets import (
    LINEAR,
    TEXT_ENCODER_BLOCKS,
    Target,
    collect,
    kohya_name,
    text_encoder_kohya_path,
)

UNET_PREFIX = "lora_unet"
CLIP_PREFIX = "lora_te1"
T5_PREFIX = "lora_te3"
CHROMA_T5_PREFIX = "lora_te1"   # what ComfyUI applies to Chroma's T5

BLOCK_LISTS = ("double_blocks", "single_blocks")
T5_BLOCKS = ("T5Attention", "T5DenseGatedActDense", "T5DenseActDense")

DOUBLE_LINEARS = tuple(f"{stream}_{layer}" for stream in ("img", "txt")
                       for layer in ("mod.lin", "attn.qkv", "attn.proj", "mlp.0", "mlp.2"))
SINGLE_LINEARS = ("linear1", "linear2", "modulation.lin")
MODULATION_LINEARS = ("img_mod.lin", "txt_mod.lin", "modulation.lin")

# kohya's default module counts (measured on sd-scripts 48d368fa).
MODULE_COUNTS = {"flux": 304, "chroma": 228, "clip_l": 72, "t5": 168}


def t5_prefix(variant: str) -> str:
    """The prefix of T5's LoRA keys: ``lora_te1`` on Chroma (T5 is its only encoder), else ``lora_te3``."""
    return CHROMA_T5_PREFIX if variant == "chroma" else T5_PREFIX


def t5_part(variant: str) -> str:
    return "text_encoder" if variant == "chroma" else "text_encoder_2"


def transformer_targets(transformer: nn.Module) -> list[Target]:
    """Every Linear inside the double and single blocks, named ``lora_unet_<BFL path>``."""
    out = []
    for path, module in transformer.named_modules():
        if isinstance(module, nn.Linear) and path.split(".", 1)[0] in BLOCK_LISTS:
            out.append(Target("unet", path, LINEAR, kohya_name(UNET_PREFIX, path)))
    return out


def clip_targets(clip: nn.Module) -> list[Target]:
    """CLIP-L's attention and MLP Linears, ``lora_te1_text_model_encoder_layers_N_...``."""
    return [Target("text_encoder", path, kind, kohya_name(CLIP_PREFIX, text_encoder_kohya_path(path)))
            for path, kind in collect(clip, TEXT_ENCODER_BLOCKS, with_convs=False)]


def t5_targets(t5: nn.Module, variant: str) -> list[Target]:
    """T5's attention and gated-MLP Linears, ``lora_te3_encoder_block_N_...`` (``lora_te1_`` on Chroma)."""
    prefix, part = t5_prefix(variant), t5_part(variant)
    return [Target(part, path, kind, kohya_name(prefix, path))
            for path, kind in collect(t5, T5_BLOCKS, with_convs=False)]


def flux_targets(models: Mapping[str, Optional[nn.Module]], variant: str, *, train_transformer: bool = True,
                 train_clip: bool = False, train_t5: bool = False) -> list[Target]:
    """All targets. ``models``: "unet" (the transformer), "clip_l" and "t5" (either may be None)."""
    targets: list[Target] = []
    if train_transformer and models.get("unet") is not None:
        targets += transformer_targets(models["unet"])
    if train_clip and variant != "chroma" and models.get("clip_l") is not None:
        targets += clip_targets(models["clip_l"])
    if train_t5 and models.get("t5") is not None:
        targets += t5_targets(models["t5"], variant)
    return targets


# ---- kohya's module set from a checkpoint's header ---------------------------------------------------

_TRANSFORMER_KEY = re.compile(r"^(?:model\.diffusion_model\.)?((?:double|single)_blocks\.\d+\..+)\.weight$")
_CLIP_KEY = re.compile(r"(?:^|\.)((?:text_model\.)?encoder\.layers\.\d+\.(?:self_attn\.(?:q|k|v|out)_proj|mlp\.fc[12]))"
                       r"\.weight$")
_T5_KEY = re.compile(r"(?:^|\.)(encoder\.block\.\d+\.layer\.\d+\."
                     r"(?:SelfAttention\.[qkvo]|DenseReluDense\.(?:wi_0|wi_1|wi|wo)))\.weight$")


def _linears(shapes: Mapping[str, Sequence[int]], pattern: re.Pattern, prefix: str,
             rename=lambda path: path) -> dict[str, tuple[int, int]]:
    found = {}
    for key, shape in shapes.items():
        match = pattern.search(key)
        if match and shape is not None and len(shape) == 2:
            found[kohya_name(prefix, rename(match.group(1)))] = (int(shape[0]), int(shape[1]))
    return found


def expected_modules(transformer: Mapping[str, Sequence[int]], *, variant: str,
                     clip_l: Optional[Mapping[str, Sequence[int]]] = None,
                     t5: Optional[Mapping[str, Sequence[int]]] = None) -> dict[str, tuple[int, int]]:
    """kohya's module name -> the adapted weight's (out, in), from checkpoint headers (key -> shape).

    ``transformer`` is the BFL-layout file's shapes (with or without ``model.diffusion_model.``);
    ``clip_l`` / ``t5`` the text encoders' when they are trained (their module sets are added then).
    Only 2-D weights count: the blocks' norm scales are 1-D.
    """
    modules = _linears(transformer, _TRANSFORMER_KEY, UNET_PREFIX)
    if clip_l is not None and variant != "chroma":
        modules.update(_linears(clip_l, _CLIP_KEY, CLIP_PREFIX, text_encoder_kohya_path))
    if t5 is not None:
        modules.update(_linears(t5, _T5_KEY, t5_prefix(variant)))
    return modules


def expected_lora_shapes(modules: Mapping[str, tuple[int, int]], dim: int) -> dict[str, tuple[int, ...]]:
    """The LoRA file's keys and shapes for ``modules``: lora_down [dim, in], lora_up [out, dim], alpha []."""
    out: dict[str, tuple[int, ...]] = {}
    for name, (rows, cols) in modules.items():
        out[f"{name}.lora_down.weight"] = (dim, cols)
        out[f"{name}.lora_up.weight"] = (rows, dim)
        out[f"{name}.alpha"] = ()
    return out


def header_shapes(header) -> dict[str, list[int]]:
    """key -> shape from a model.detect.SafetensorsHeader (or its ``tensors`` dict)."""
    tensors = getattr(header, "tensors", header)
    return {key: list(value["shape"]) for key, value in tensors.items() if isinstance(value, dict)}


def file_problems(lora: Mapping[str, Sequence[int]], expected: Mapping[str, tuple[int, ...]]) -> list[str]:
    """How a LoRA file's tensors (key -> shape) differ from ``expected_lora_shapes``: missing, extra, misshapen."""
    problems = [f"missing {key}" for key in expected if key not in lora]
    problems += [f"not in kohya's module set: {key}" for key in lora if key not in expected]
    problems += [f"{key}: shape {list(lora[key])}, kohya's is {list(expected[key])}"
                 for key in expected if key in lora and tuple(lora[key]) != tuple(expected[key])]
    return problems

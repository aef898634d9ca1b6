"""The Flux.1 transformer (and Chroma's) as our own module, in Black Forest Labs' layout.

Every parameter has the name it has in a BFL checkpoint (``double_blocks.N.img_attn.qkv.weight``,
``single_blocks.N.linear1.weight``, ``final_layer.adaLN_modulation.1.weight``, ...), so a ComfyUI
``flux1-dev.safetensors`` loads with no key conversion and a LoRA's targets have kohya's names.

The math is the reference model's: two streams (image tokens, T5 tokens) through ``depth`` double
blocks with their own weights and a joint attention, then one stream through ``depth_single_blocks``
single blocks (attention and MLP in parallel from one ``linear1``), RoPE over 3-axis position ids,
adaLN modulation from a conditioning vector. Flux builds that vector from the timestep, CLIP-L's
pooled output and (dev) the guidance; Chroma drops those inputs and every per-block modulation
layer, and an "approximator" (``distilled_guidance_layer``) produces all the modulations at once.

Inputs are packed latents: ``img`` is (B, L, in_channels) with 2x2 latent patches (``pack_latents``),
``timesteps`` are sigmas in [0, 1] (the model multiplies by 1000, as BFL's does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from easytrain.families.flux.block_swap import is_swapped
from easytrain.families.flux.detect import CHROMA, FLUX_DEV, FLUX_SCHNELL, strip_prefix

TIME_EMBED_DIM = 256  # the sinusoidal width fed to time_in and guidance_in
BFL_HEAD_DIM = 128
BFL_AXES_DIM = (16, 56, 56)


# ---- sizes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FluxConfig:
    """The sizes of a Flux-shaped transformer; ``from_header`` reads them off a checkpoint's shapes."""

    kind: str = FLUX_DEV  # "flux-dev" | "flux-schnell" | "chroma"
    in_channels: int = 64
    out_channels: int = 64
    hidden_size: int = 3072
    num_heads: int = 24
    depth: int = 19
    depth_single_blocks: int = 38
    context_in_dim: int = 4096
    vec_in_dim: int = 768  # CLIP-L's pooled width; 0 for Chroma
    mlp_ratio: float = 4.0
    guidance_embed: bool = True
    qkv_bias: bool = True
    axes_dim: tuple = BFL_AXES_DIM
    theta: int = 10000
    # Chroma's approximator (distilled_guidance_layer); unused by Flux
    approximator_in_dim: int = 64
    approximator_hidden_dim: int = 5120
    approximator_layers: int = 5

    @property
    def chroma(self) -> bool:
        return self.kind == CHROMA

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_hidden_dim(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    @property
    def modulation_count(self) -> int:
        """Chroma: the approximator's output rows (3 per single block, 6 + 6 per double block, 2 final)."""
        return 3 * self.depth_single_blocks + 12 * self.depth + 2

    @classmethod
    def from_header(cls, tensors: Mapping[str, object]) -> "FluxConfig":
        """Sizes from a state dict's shapes: ``{key: shape}``, ``{key: tensor}`` or a safetensors header
        (``{key: {"shape": [...]}}``), with or without the ``model.diffusion_model.`` prefix."""
        shapes = _shapes(tensors)
        try:
            hidden, in_channels = shapes["img_in.weight"]
            head_dim = shapes["double_blocks.0.img_attn.norm.query_norm.scale"][0]
            kind = _kind(shapes)
            chroma = kind == CHROMA
            values = dict(
                kind=kind,
                in_channels=in_channels,
                out_channels=shapes["final_layer.linear.weight"][0],
                hidden_size=hidden,
                num_heads=hidden // head_dim,
                depth=_count(shapes, "double_blocks."),
                depth_single_blocks=_count(shapes, "single_blocks."),
                context_in_dim=shapes["txt_in.weight"][1],
                vec_in_dim=0 if chroma else shapes["vector_in.in_layer.weight"][1],
                mlp_ratio=shapes["double_blocks.0.img_mlp.0.weight"][0] / hidden,
                guidance_embed=kind == FLUX_DEV,
                qkv_bias="double_blocks.0.img_attn.qkv.bias" in shapes,
                axes_dim=axes_for(head_dim),
            )
            if chroma:
                approx_hidden, approx_in = shapes["distilled_guidance_layer.in_proj.weight"]
                values.update(approximator_in_dim=approx_in, approximator_hidden_dim=approx_hidden,
                              approximator_layers=_count(shapes, "distilled_guidance_layer.layers."))
        except (KeyError, ValueError, IndexError, TypeError) as exc:
            raise ValueError(f"not a Flux-layout transformer: {exc!r} is missing or misshapen") from None
        if values["depth"] < 1 or hidden % head_dim:
            raise ValueError("not a Flux-layout transformer: no double blocks, or heads that do not divide")
        return cls(**values)


def axes_for(head_dim: int) -> tuple:
    """RoPE's split of one head over the 3 id axes: BFL's (16, 56, 56) at 128, the same proportions else."""
    if head_dim == BFL_HEAD_DIM:
        return BFL_AXES_DIM
    first = max(2, 2 * round(head_dim / 16))
    rest = head_dim - first
    second = (rest // 4) * 2
    return (first, second, rest - second)


def _shapes(tensors: Mapping[str, object]) -> dict[str, tuple]:
    result = {}
    for key, value in tensors.items():
        if isinstance(value, dict):
            value = value.get("shape")
        elif hasattr(value, "shape"):
            value = value.shape
        if value is not None and not isinstance(value, str):
            result[key] = tuple(int(v) for v in value)
    return strip_prefix(result)


def _kind(shapes: Mapping[str, tuple]) -> str:
    if any(k.startswith("distilled_guidance_layer.") for k in shapes):
        return CHROMA
    return FLUX_DEV if any(k.startswith("guidance_in.") for k in shapes) else FLUX_SCHNELL


def _count(shapes: Mapping[str, tuple], prefix: str) -> int:
    indices = {int(k[len(prefix):].split(".", 1)[0]) for k in shapes
               if k.startswith(prefix) and k[len(prefix):].split(".", 1)[0].isdigit()}
    return max(indices) + 1 if indices else 0


# ---- position and time embeddings -------------------------------------------------------------


def rope(pos: Tensor, dim: int, theta: int) -> Tensor:
    """(..., n) positions -> (..., n, dim/2, 2, 2) rotation matrices, computed in float64."""
    scale = torch.arange(0, dim, 2, dtype=torch.float64, device=pos.device) / dim
    omega = 1.0 / (theta ** scale)
    angles = pos.to(torch.float64)[..., None] * omega
    cos, sin = torch.cos(angles), torch.sin(angles)
    out = torch.stack([cos, -sin, sin, cos], dim=-1)
    return out.reshape(*out.shape[:-1], 2, 2).float()


def apply_rope(x: Tensor, freqs: Tensor) -> Tensor:
    """Rotate q or k (B, H, L, D) by ``freqs`` (B, 1, L, D/2, 2, 2); pairs are adjacent channels."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 1, 2)
    out = freqs[..., 0] * pairs[..., 0] + freqs[..., 1] * pairs[..., 1]
    return out.reshape(*x.shape).type_as(x)


class EmbedND(nn.Module):
    """RoPE frequencies for 3-axis ids (B, L, 3): axis 0 unused by Flux (0), axes 1-2 row and column."""

    def __init__(self, theta: int, axes_dim: Sequence[int]):
        super().__init__()
        self.theta = theta
        self.axes_dim = tuple(axes_dim)

    def forward(self, ids: Tensor) -> Tensor:
        emb = torch.cat([rope(ids[..., i], self.axes_dim[i], self.theta) for i in range(ids.shape[-1])], dim=-3)
        return emb.unsqueeze(1)


def timestep_embedding(t: Tensor, dim: int, max_period: int = 10000, time_factor: float = 1000.0) -> Tensor:
    """BFL's sinusoidal embedding of ``t * time_factor``: [cos, sin] halves, float32."""
    t = time_factor * t.float()
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


def attention(q: Tensor, k: Tensor, v: Tensor, pe: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """RoPE, then scaled dot-product attention; (B, H, L, D) -> (B, L, H*D). ``mask``: True = attend."""
    q, k = apply_rope(q, pe), apply_rope(k, pe)
    x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1)


# ---- layers -----------------------------------------------------------------------------------


class MLPEmbedder(nn.Module):
    def __init__(self, in_dim: int, hidden_dim: int):
        super().__init__()
        self.in_layer = nn.Linear(in_dim, hidden_dim, bias=True)
        self.silu = nn.SiLU()
        self.out_layer = nn.Linear(hidden_dim, hidden_dim, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_layer(self.silu(self.in_layer(x)))


class RMSNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(torch.mean(x * x, dim=-1, keepdim=True) + 1e-6)
        return x.to(dtype) * self.scale.to(dtype)


class QKNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.query_norm = RMSNorm(dim)
        self.key_norm = RMSNorm(dim)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return self.query_norm(q).to(v), self.key_norm(k).to(v)


class SelfAttention(nn.Module):
    """Holds qkv, norm and proj; the double block runs the attention itself (two streams joined)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.norm = QKNorm(dim // num_heads)
        self.proj = nn.Linear(dim, dim)


@dataclass
class ModulationOut:
    shift: Tensor  # (B, 1, hidden)
    scale: Tensor
    gate: Tensor

    def modulate(self, x: Tensor) -> Tensor:
        return (1 + self.scale) * x + self.shift


class Modulation(nn.Module):
    def __init__(self, dim: int, double: bool):
        super().__init__()
        self.multiplier = 6 if double else 3
        self.lin = nn.Linear(dim, self.multiplier * dim, bias=True)

    def forward(self, vec: Tensor) -> list[ModulationOut]:
        out = self.lin(F.silu(vec))[:, None, :].chunk(self.multiplier, dim=-1)
        return [ModulationOut(*out[i:i + 3]) for i in range(0, self.multiplier, 3)]


def _mods(rows: Tensor, count: int) -> list[ModulationOut]:
    """Chroma: ``count`` x 3 consecutive approximator rows (B, 3*count, hidden) as ModulationOuts."""
    return [ModulationOut(rows[:, 3 * i:3 * i + 1], rows[:, 3 * i + 1:3 * i + 2], rows[:, 3 * i + 2:3 * i + 3])
            for i in range(count)]


def _mlp(hidden: int, mlp_hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(hidden, mlp_hidden, bias=True), nn.GELU(approximate="tanh"),
                         nn.Linear(mlp_hidden, hidden, bias=True))


def _layer_norm(hidden: int) -> nn.LayerNorm:
    return nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)


def _clip_half(x: Tensor) -> Tensor:
    return x.clip(-65504, 65504) if x.dtype == torch.float16 else x


class DoubleStreamBlock(nn.Module):
    """Image and text streams, each with its own weights, joined in one attention.

    ``vec`` is the conditioning vector (B, hidden) for Flux, or for Chroma (modulated=False) the
    block's approximator rows (B, 12, hidden): image mods then text mods.
    """

    def __init__(self, hidden: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, modulated: bool = True):
        super().__init__()
        mlp_hidden = int(hidden * mlp_ratio)
        self.num_heads = num_heads
        self.modulated = modulated
        if modulated:
            self.img_mod = Modulation(hidden, double=True)
        self.img_norm1 = _layer_norm(hidden)
        self.img_attn = SelfAttention(hidden, num_heads, qkv_bias)
        self.img_norm2 = _layer_norm(hidden)
        self.img_mlp = _mlp(hidden, mlp_hidden)
        if modulated:
            self.txt_mod = Modulation(hidden, double=True)
        self.txt_norm1 = _layer_norm(hidden)
        self.txt_attn = SelfAttention(hidden, num_heads, qkv_bias)
        self.txt_norm2 = _layer_norm(hidden)
        self.txt_mlp = _mlp(hidden, mlp_hidden)

    def _qkv(self, attn: SelfAttention, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        qkv = attn.qkv(x)
        q, k, v = qkv.view(qkv.shape[0], qkv.shape[1], 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k = attn.norm(q, k, v)
        return q, k, v

    def forward(self, img: Tensor, txt: Tensor, vec: Tensor, pe: Tensor,
                attn_mask: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        if self.modulated:
            img_mod1, img_mod2 = self.img_mod(vec)
            txt_mod1, txt_mod2 = self.txt_mod(vec)
        else:
            img_mod1, img_mod2, txt_mod1, txt_mod2 = _mods(vec, 4)

        img_q, img_k, img_v = self._qkv(self.img_attn, img_mod1.modulate(self.img_norm1(img)))
        txt_q, txt_k, txt_v = self._qkv(self.txt_attn, txt_mod1.modulate(self.txt_norm1(txt)))
        attn = attention(torch.cat((txt_q, img_q), dim=2), torch.cat((txt_k, img_k), dim=2),
                         torch.cat((txt_v, img_v), dim=2), pe, attn_mask)
        txt_attn, img_attn = attn[:, :txt.shape[1]], attn[:, txt.shape[1]:]

        img = img + img_mod1.gate * self.img_attn.proj(img_attn)
        img = img + img_mod2.gate * self.img_mlp(img_mod2.modulate(self.img_norm2(img)))
        txt = txt + txt_mod1.gate * self.txt_attn.proj(txt_attn)
        txt = txt + txt_mod2.gate * self.txt_mlp(txt_mod2.modulate(self.txt_norm2(txt)))
        return _clip_half(img), _clip_half(txt)


class SingleStreamBlock(nn.Module):
    """One stream (text then image tokens); attention and MLP in parallel from ``linear1``.

    ``vec``: (B, hidden) for Flux, the block's 3 approximator rows (B, 3, hidden) for Chroma.
    """

    def __init__(self, hidden: int, num_heads: int, mlp_ratio: float, modulated: bool = True):
        super().__init__()
        self.hidden_size = hidden
        self.num_heads = num_heads
        self.mlp_hidden_dim = int(hidden * mlp_ratio)
        self.modulated = modulated
        self.linear1 = nn.Linear(hidden, hidden * 3 + self.mlp_hidden_dim)
        self.linear2 = nn.Linear(hidden + self.mlp_hidden_dim, hidden)
        self.norm = QKNorm(hidden // num_heads)
        self.pre_norm = _layer_norm(hidden)
        self.mlp_act = nn.GELU(approximate="tanh")
        if modulated:
            self.modulation = Modulation(hidden, double=False)

    def forward(self, x: Tensor, vec: Tensor, pe: Tensor, attn_mask: Optional[Tensor] = None) -> Tensor:
        mod = self.modulation(vec)[0] if self.modulated else _mods(vec, 1)[0]
        qkv, mlp = torch.split(self.linear1(mod.modulate(self.pre_norm(x))),
                               [3 * self.hidden_size, self.mlp_hidden_dim], dim=-1)
        q, k, v = qkv.view(qkv.shape[0], qkv.shape[1], 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k = self.norm(q, k, v)
        attn = attention(q, k, v, pe, attn_mask)
        output = self.linear2(torch.cat((attn, self.mlp_act(mlp)), dim=2))
        return _clip_half(x + mod.gate * output)


class LastLayer(nn.Module):
    def __init__(self, hidden: int, out_channels: int, modulated: bool = True):
        super().__init__()
        self.modulated = modulated
        self.norm_final = _layer_norm(hidden)
        self.linear = nn.Linear(hidden, out_channels, bias=True)
        if modulated:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden, bias=True))

    def forward(self, x: Tensor, vec: Tensor) -> Tensor:
        if self.modulated:
            shift, scale = self.adaLN_modulation(vec)[:, None, :].chunk(2, dim=-1)
        else:  # Chroma: the approximator's last two rows
            shift, scale = vec[:, -2:-1], vec[:, -1:]
        return self.linear((1 + scale) * self.norm_final(x) + shift)


class Approximator(nn.Module):
    """Chroma's ``distilled_guidance_layer``: one row per modulation from (time, guidance, row index)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int, n_layers: int):
        super().__init__()
        self.in_proj = nn.Linear(in_dim, hidden_dim, bias=True)
        self.layers = nn.ModuleList([MLPEmbedder(hidden_dim, hidden_dim) for _ in range(n_layers)])
        self.norms = nn.ModuleList([RMSNorm(hidden_dim) for _ in range(n_layers)])
        self.out_proj = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.in_proj(x)
        for layer, norm in zip(self.layers, self.norms):
            x = x + layer(norm(x))
        return self.out_proj(x)


# ---- the model --------------------------------------------------------------------------------


class FluxTransformer(nn.Module):
    """Flux.1 dev/schnell or Chroma in BFL's layout. ``double_blocks`` and ``single_blocks`` are
    ModuleLists that block swap may move between devices; ``gradient_checkpointing`` recomputes
    each block in the backward pass."""

    def __init__(self, config: FluxConfig):
        super().__init__()
        if sum(config.axes_dim) != config.head_dim:
            raise ValueError(f"RoPE axes {config.axes_dim} do not add up to the head width {config.head_dim}")
        self.config = config
        self.gradient_checkpointing = False
        hidden, modulated = config.hidden_size, not config.chroma
        self.pe_embedder = EmbedND(config.theta, config.axes_dim)
        self.img_in = nn.Linear(config.in_channels, hidden, bias=True)
        if config.chroma:
            self.distilled_guidance_layer = Approximator(config.approximator_in_dim, hidden,
                                                         config.approximator_hidden_dim, config.approximator_layers)
        else:
            self.time_in = MLPEmbedder(TIME_EMBED_DIM, hidden)
            self.vector_in = MLPEmbedder(config.vec_in_dim, hidden)
            if config.guidance_embed:
                self.guidance_in = MLPEmbedder(TIME_EMBED_DIM, hidden)
        self.txt_in = nn.Linear(config.context_in_dim, hidden)
        self.double_blocks = nn.ModuleList([
            DoubleStreamBlock(hidden, config.num_heads, config.mlp_ratio, config.qkv_bias, modulated)
            for _ in range(config.depth)])
        self.single_blocks = nn.ModuleList([
            SingleStreamBlock(hidden, config.num_heads, config.mlp_ratio, modulated)
            for _ in range(config.depth_single_blocks)])
        self.final_layer = LastLayer(hidden, config.out_channels, modulated)

    # diffusers-style switches, so the training loop treats it like a UNet
    def enable_gradient_checkpointing(self) -> None:
        self.gradient_checkpointing = True

    def disable_gradient_checkpointing(self) -> None:
        self.gradient_checkpointing = False

    @property
    def dtype(self) -> torch.dtype:
        return self.img_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.img_in.weight.device

    def _run(self, block: nn.Module, *args):
        # A swapped block (block_swap.py) is recomputed in the backward already: no second checkpoint.
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled() and not is_swapped(block):
            from torch.utils.checkpoint import checkpoint

            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def chroma_modulations(self, timesteps: Tensor, guidance: Optional[Tensor], dtype: torch.dtype) -> Tensor:
        """Chroma: the approximator's (B, modulation_count, hidden) rows for sigmas ``timesteps``."""
        quarter = self.config.approximator_in_dim // 4
        batch, count, device = timesteps.shape[0], self.config.modulation_count, timesteps.device
        if guidance is None:
            guidance = torch.zeros_like(timesteps)
        index = timestep_embedding(torch.arange(count, device=device), 2 * quarter)  # rows x 1000, as BFL
        time_guidance = torch.cat([timestep_embedding(timesteps, quarter), timestep_embedding(guidance, quarter)], 1)
        rows = torch.cat([time_guidance[:, None, :].expand(batch, count, -1),
                          index[None].expand(batch, count, -1)], dim=-1)
        return self.distilled_guidance_layer(rows.to(dtype))

    def forward(self, img: Tensor, img_ids: Tensor, txt: Tensor, txt_ids: Tensor, timesteps: Tensor,
                y: Optional[Tensor] = None, guidance: Optional[Tensor] = None,
                txt_attention_mask: Optional[Tensor] = None) -> Tensor:
        """Packed latents (B, L, in_channels) -> the prediction (B, L, out_channels).

        ``img_ids`` (B, L, 3) / ``txt_ids`` (B, T, 3) (or without the batch axis); ``timesteps`` (B,)
        sigmas in [0, 1]; ``y`` CLIP-L's pooled output (Flux); ``guidance`` (B,) for dev (and Chroma's
        approximator, 0 when None); ``txt_attention_mask`` (B, T), 1 for real T5 tokens: with it,
        no token attends to masked text tokens (kohya's apply_t5_attn_mask, Chroma's mask).
        """
        config = self.config
        if img.ndim != 3 or txt.ndim != 3:
            raise ValueError("img and txt must be (batch, tokens, channels)")
        batch = img.shape[0]
        img = self.img_in(img)
        if config.chroma:
            mods = self.chroma_modulations(timesteps, guidance, img.dtype)
            single_rows, double_rows = 3 * config.depth_single_blocks, 6 * config.depth
        else:
            vec = self.time_in(timestep_embedding(timesteps, TIME_EMBED_DIM).to(img.dtype))
            if config.guidance_embed:
                if guidance is None:
                    raise ValueError("Flux.1 dev needs the guidance value")
                vec = vec + self.guidance_in(timestep_embedding(guidance, TIME_EMBED_DIM).to(img.dtype))
            if y is None:
                raise ValueError("Flux needs CLIP-L's pooled output (y)")
            vec = vec + self.vector_in(y.to(img.dtype))
        txt = self.txt_in(txt)

        if img_ids.ndim == 2:
            img_ids = img_ids[None].expand(batch, -1, -1)
        if txt_ids.ndim == 2:
            txt_ids = txt_ids[None].expand(batch, -1, -1)
        pe = self.pe_embedder(torch.cat((txt_ids, img_ids), dim=1))
        mask = None
        if txt_attention_mask is not None:
            keys = torch.cat([txt_attention_mask.bool(),
                              torch.ones(batch, img.shape[1], dtype=torch.bool, device=img.device)], dim=1)
            mask = keys[:, None, None, :]

        for i, block in enumerate(self.double_blocks):
            if config.chroma:
                img_at, txt_at = single_rows + 6 * i, single_rows + double_rows + 6 * i
                block_vec = torch.cat([mods[:, img_at:img_at + 6], mods[:, txt_at:txt_at + 6]], dim=1)
            else:
                block_vec = vec
            img, txt = self._run(block, img, txt, block_vec, pe, mask)

        x = torch.cat((txt, img), dim=1)
        for i, block in enumerate(self.single_blocks):
            block_vec = mods[:, 3 * i:3 * i + 3] if config.chroma else vec
            x = self._run(block, x, block_vec, pe, mask)
        x = x[:, txt.shape[1]:]
        return self.final_layer(x, mods[:, -2:] if config.chroma else vec)


# ---- packing ----------------------------------------------------------------------------------


def pack_latents(latents: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H/2 * W/2, C*4): 2x2 patches as tokens, BFL's order (c, ph, pw)."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: Tensor, height: int, width: int) -> Tensor:
    """The inverse of ``pack_latents`` for latents of ``height`` x ``width``."""
    b, _, d = tokens.shape
    c = d // 4
    x = tokens.view(b, height // 2, width // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, height, width)


def image_ids(batch: int, height: int, width: int, device=None, dtype=torch.float32) -> Tensor:
    """(B, H/2 * W/2, 3) position ids of packed latents of ``height`` x ``width``: (0, row, column)."""
    h, w = height // 2, width // 2
    ids = torch.zeros(h, w, 3, device=device, dtype=dtype)
    ids[..., 1] = torch.arange(h, device=device, dtype=dtype)[:, None]
    ids[..., 2] = torch.arange(w, device=device, dtype=dtype)[None, :]
    return ids.reshape(1, h * w, 3).expand(batch, -1, -1)


def text_ids(batch: int, length: int, device=None, dtype=torch.float32) -> Tensor:
    """(B, T, 3) zeros: text tokens all sit at position 0."""
    return torch.zeros(batch, length, 3, device=device, dtype=dtype)


def build_model(config: FluxConfig, device: str | torch.device = "meta",
                dtype: Optional[torch.dtype] = None) -> FluxTransformer:
    """A FluxTransformer with no weights (``meta``) or random ones, for a loader to fill."""
    with torch.device(device):
        model = FluxTransformer(config)
    return model if dtype is None else model.to(dtype)


__all__ = [
    "FluxConfig", "FluxTransformer", "DoubleStreamBlock", "SingleStreamBlock", "build_model",
    "pack_latents", "unpack_latents", "image_ids", "text_ids", "timestep_embedding", "axes_for",
]

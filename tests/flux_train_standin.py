"""A small module tree with Black Forest Labs' Flux names, for the training-side tests.

Not Flux's math (families/flux/model.py has that): blocks that use every Linear a Flux block has,
under the names a BFL checkpoint gives them, so targets, block swap and fp8 storage can be tested
on a model made in code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _Attn(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.norm = nn.Module()
        self.norm.query_norm = nn.Module()
        self.norm.query_norm.scale = nn.Parameter(torch.ones(hidden))
        self.proj = nn.Linear(hidden, hidden)


class _Mod(nn.Module):
    def __init__(self, hidden, factor):
        super().__init__()
        self.lin = nn.Linear(hidden, factor * hidden)


class DoubleStreamBlock(nn.Module):
    def __init__(self, hidden, modulated=True):
        super().__init__()
        for stream in ("img", "txt"):
            if modulated:
                setattr(self, f"{stream}_mod", _Mod(hidden, 6))
            setattr(self, f"{stream}_attn", _Attn(hidden))
            setattr(self, f"{stream}_mlp", nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(approximate="tanh"),
                                                         nn.Linear(2 * hidden, hidden)))
        self.modulated = modulated

    def _stream(self, name, x, vec):
        shift = getattr(self, f"{name}_mod").lin(F.silu(vec))[:, None, : x.shape[-1]] if self.modulated else 0
        attn = getattr(self, f"{name}_attn")
        q, k, v = attn.qkv(F.layer_norm(x, x.shape[-1:]) + shift).chunk(3, dim=-1)
        q = q * attn.norm.query_norm.scale
        w = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1)
        x = x + attn.proj(w @ v)
        return x + getattr(self, f"{name}_mlp")(x)

    def forward(self, img, txt, vec, pe=None, mask=None):
        return self._stream("img", img, vec), self._stream("txt", txt, vec)


class SingleStreamBlock(nn.Module):
    def __init__(self, hidden, modulated=True):
        super().__init__()
        self.linear1 = nn.Linear(hidden, 3 * hidden)
        self.linear2 = nn.Linear(3 * hidden, hidden)
        if modulated:
            self.modulation = _Mod(hidden, 3)
        self.modulated = modulated

    def forward(self, x, vec, pe=None, mask=None):
        shift = self.modulation.lin(F.silu(vec))[:, None, : x.shape[-1]] if self.modulated else 0
        mixed = F.layer_norm(x, x.shape[-1:]) + shift + x.mean(dim=1, keepdim=True)  # tokens see each other
        return x + self.linear2(F.gelu(self.linear1(mixed)))


class StandInFlux(nn.Module):
    """img (B, L, 64) + txt (B, T, context) + timesteps (B,) -> (B, L, 64), through BFL-named blocks."""

    def __init__(self, hidden=32, depth=2, depth_single=3, context=24, chroma=False):
        super().__init__()
        self.img_in = nn.Linear(64, hidden)
        self.txt_in = nn.Linear(context, hidden)
        self.time_in = nn.Module()
        self.time_in.in_layer = nn.Linear(1, hidden)
        if chroma:
            self.distilled_guidance_layer = nn.Module()
            self.distilled_guidance_layer.in_proj = nn.Linear(1, hidden)
        self.double_blocks = nn.ModuleList([DoubleStreamBlock(hidden, not chroma) for _ in range(depth)])
        self.single_blocks = nn.ModuleList([SingleStreamBlock(hidden, not chroma) for _ in range(depth_single)])
        self.final_layer = nn.Module()
        self.final_layer.linear = nn.Linear(hidden, 64)

    def forward(self, img, img_ids, txt, txt_ids, timesteps, y=None, guidance=None, txt_attention_mask=None):
        vec = self.time_in.in_layer(timesteps[:, None].float())
        img, txt = self.img_in(img), self.txt_in(txt)
        for block in self.double_blocks:
            img, txt = block(img, txt, vec, None, None)
        x = torch.cat([txt, img], dim=1)
        for block in self.single_blocks:
            x = block(x, vec, None, None)
        return self.final_layer.linear(x[:, txt.shape[1]:])

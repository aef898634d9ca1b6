"""Block-wise learning rates and dims, as kohya's networks/lora.py sets them (SD1/SD2 layout).

The UNet counts 25 blocks: 0-11 down (IN00-IN11), 12 the middle block, 13-24 up
(OUT00-OUT11). A module's block comes from its kohya name
(``lora_unet_down_blocks_1_attentions_0_...`` -> 1 + 3*1 + 0 = 4). Settings
are kohya's --network_args strings:

- down_lr_weight / up_lr_weight: 12 numbers ("1,1,0.5,..."; fewer are padded with
  1, more are cut), or a preset ``cosine``, ``sine``, ``linear``, ``reverse_linear``,
  ``zeros``, optionally ``+base`` ("cosine+0.5"); mid_lr_weight: one number.
  Weights at or below block_lr_zero_threshold become 0; a block of weight 0 gets
  no modules at all (they are left out of the file).
- block_dims / block_alphas / conv_block_dims / conv_block_alphas: 25 numbers each;
  a dim of 0 leaves the block's modules out.
Stdlib only: the answers validation uses the parsers.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional, Sequence

NUM_BLOCKS = 12  # down (or up) blocks in the full-size layout
NUM_TOTAL = NUM_BLOCKS * 2 + 1
MID_INDEX = NUM_BLOCKS
PRESETS = ("cosine", "sine", "linear", "reverse_linear", "zeros")
_UPDOWN = re.compile(r"(up|down)_blocks_(\d+)_(resnets|upsamplers|downsamplers|attentions)_(\d+)_")


def block_index(kohya_name: str) -> int:
    """The block (0-24) of a UNet module's kohya name; -1 for names outside the blocks."""
    match = _UPDOWN.search(kohya_name)
    if match:
        side, outer, kind, inner = match.groups()
        index = 3 * int(outer) + (2 if kind in ("upsamplers", "downsamplers") else int(inner))
        return 1 + index if side == "down" else NUM_BLOCKS + 1 + index
    if "mid_block_" in kohya_name:
        return MID_INDEX
    return -1


def parse_numbers(text: str, kind=float) -> list:
    """'1, 2,,3' -> [1.0, 2.0, 0.0, 3.0] (kohya reads an empty entry as 0); ValueError names the bad entry."""
    values = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            values.append(kind(0))
            continue
        try:
            number = float(part)
        except ValueError:
            raise ValueError(f"{part!r} is not a number") from None
        if kind is int and not number.is_integer():
            raise ValueError(f"{part!r} is not a whole number")
        values.append(kind(number))
    return values


def side_weights(text: str) -> list[float]:
    """12 weights for the down or up side from a list or a preset ("cosine+0.5")."""
    name, _, base_text = str(text).strip().partition("+")
    if name in PRESETS:
        base = float(base_text) if base_text else 0.0
        steps = [i / (NUM_BLOCKS - 1) for i in range(NUM_BLOCKS)]
        curves = {
            "cosine": [math.sin(math.pi * s / 2) for s in reversed(steps)],
            "sine": [math.sin(math.pi * s / 2) for s in steps],
            "linear": steps,
            "reverse_linear": list(reversed(steps)),
            "zeros": [0.0] * NUM_BLOCKS,
        }
        return [w + base for w in curves[name]]
    values = parse_numbers(text)
    return (values + [1.0] * NUM_BLOCKS)[:NUM_BLOCKS]


def lr_weights(down: Optional[str], mid: Optional[str], up: Optional[str],
               zero_threshold: float = 0.0) -> Optional[tuple[float, ...]]:
    """The 25 learning-rate multipliers, or None when no side is given."""
    if down is None and mid is None and up is None:
        return None

    def cut(values: list[float]) -> list[float]:
        return [w if w > zero_threshold else 0.0 for w in values]

    down_w = cut(side_weights(down)) if down is not None else [1.0] * NUM_BLOCKS
    mid_w = cut(parse_numbers(mid)[:1]) if mid is not None else [1.0]
    up_w = cut(side_weights(up)) if up is not None else [1.0] * NUM_BLOCKS
    return tuple(down_w + mid_w + up_w)


def per_block(text: str, kind=float) -> tuple:
    """25 per-block values; ValueError when the count is wrong."""
    values = parse_numbers(text, kind)
    if len(values) != NUM_TOTAL:
        raise ValueError(f"needs {NUM_TOTAL} values (12 down, 1 middle, 12 up), got {len(values)}")
    return tuple(values)


@dataclass(frozen=True)
class BlockSettings:
    """Per-block dims, alphas and learning-rate weights (each 25 long, or None for "as the network")."""
    dims: Optional[tuple[int, ...]] = None
    alphas: Optional[tuple[float, ...]] = None
    conv_dims: Optional[tuple[int, ...]] = None
    conv_alphas: Optional[tuple[float, ...]] = None
    lr_weights: Optional[tuple[float, ...]] = None

    def lr_weight(self, index: int) -> float:
        if self.lr_weights is None or index < 0:
            return 1.0
        return self.lr_weights[index]

    def dim_and_alpha(self, index: int, *, conv: bool, dim: int, alpha: float) -> tuple[int, float]:
        """A UNet module's (dim, alpha) in block ``index``, from the network's ``dim``/``alpha``.

        A conv module (3x3, LoCon) reads conv_dims/conv_alphas, the others dims/alphas;
        a block whose learning-rate weight is 0 gets dim 0 (left out), as kohya.
        """
        if index < 0:
            return dim, alpha
        if self.lr_weights is not None and self.lr_weights[index] == 0:
            return 0, alpha
        dims, alphas = (self.conv_dims, self.conv_alphas) if conv else (self.dims, self.alphas)
        if dims is not None:
            dim = dims[index]
        if alphas is not None:
            alpha = alphas[index]
        return dim, alpha


def block_settings(*, down_lr_weight: Optional[str] = None, mid_lr_weight: Optional[str] = None,
                   up_lr_weight: Optional[str] = None, block_lr_zero_threshold: float = 0.0,
                   block_dims: Optional[str] = None, block_alphas: Optional[str] = None,
                   conv_block_dims: Optional[str] = None, conv_block_alphas: Optional[str] = None,
                   ) -> Optional[BlockSettings]:
    """BlockSettings from kohya's --network_args strings; None when none is given."""
    settings = BlockSettings(
        dims=per_block(block_dims, int) if block_dims else None,
        alphas=per_block(block_alphas) if block_alphas else None,
        conv_dims=per_block(conv_block_dims, int) if conv_block_dims else None,
        conv_alphas=per_block(conv_block_alphas) if conv_block_alphas else None,
        lr_weights=lr_weights(down_lr_weight, mid_lr_weight, up_lr_weight, block_lr_zero_threshold),
    )
    return None if settings == BlockSettings() else settings


def group_by_block(names: Sequence[str]) -> dict[int, list[str]]:
    """UNet module names by block index (in first-seen order), for one optimizer group per block."""
    groups: dict[int, list[str]] = {}
    for name in names:
        groups.setdefault(block_index(name), []).append(name)
    return groups

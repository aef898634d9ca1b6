"""Block-wise learning rates and dims, as kohya's networks/lora.py sets them.

The block numbering depends on the denoiser: each family declares its
BlockLayout (families/<family>/blocks.py; the catalog entry names it, and
``catalog.BLOCK_LAYOUTS`` lists them), e.g. 25 blocks on SD1/SD2, 23 on SDXL.

Settings are kohya's --network_args strings:

- down_lr_weight / up_lr_weight: one number per down (up) block, 12 on SD, 9 on
  SDXL ("1,1,0.5,..."; fewer are padded with 1, more are cut), or a preset
  ``cosine``, ``sine``, ``linear``, ``reverse_linear``, ``zeros``, optionally
  ``+base`` ("cosine+0.5"); mid_lr_weight: 1 number on SD, 3 on SDXL (padded and
  cut the same way). Weights at or below block_lr_zero_threshold become 0; a
  block of weight 0 gets no modules at all (they are left out of the file). On
  SDXL the embedding and output blocks keep weight 1, as kohya.
- block_dims / block_alphas / conv_block_dims / conv_block_alphas: one number per
  block (25 on SD, 23 on SDXL); a dim of 0 leaves the block's modules out.
Stdlib only: the answers validation uses the parsers.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

PRESETS = ("cosine", "sine", "linear", "reverse_linear", "zeros")
PER_BLOCK_KEYS = ("block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas")


@dataclass(frozen=True)
class BlockLayout:
    """How kohya numbers one UNet's blocks: [edge] down*side, middle*mid, up*side [edge]."""

    name: str                        # the catalog's block_layout value
    label: str                       # how messages name it
    side: int                        # down (input) blocks, and up (output) blocks
    mid: int                         # middle blocks
    edge: int                        # blocks before the down side and after the up side (weight 1 always)
    parts: str                       # what the numbers of a per-block list are, for messages
    index: Callable[[str], int]      # a UNet module's kohya name -> its block; -1 outside the blocks

    @property
    def total(self) -> int:
        return 2 * (self.edge + self.side) + self.mid

    def per_block_text(self) -> str:
        return f"{self.total} values on {self.label} ({self.parts})"


def block_index(kohya_name: str, layout: BlockLayout) -> int:
    """The block of a UNet module's kohya name in ``layout``; -1 for names outside the blocks."""
    return layout.index(kohya_name)


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


def _fit(values: list[float], count: int) -> list[float]:
    """Padded with 1 or cut to ``count``, as kohya."""
    return (values + [1.0] * count)[:count]


def side_weights(text: str, layout: BlockLayout) -> list[float]:
    """The weights of the down or up side (12 on SD, 9 on SDXL) from a list or a preset ("cosine+0.5")."""
    count = layout.side
    name, _, base_text = str(text).strip().partition("+")
    if name in PRESETS:
        base = float(base_text) if base_text else 0.0
        steps = [i / (count - 1) for i in range(count)]
        curves = {
            "cosine": [math.sin(math.pi * s / 2) for s in reversed(steps)],
            "sine": [math.sin(math.pi * s / 2) for s in steps],
            "linear": steps,
            "reverse_linear": list(reversed(steps)),
            "zeros": [0.0] * count,
        }
        return [w + base for w in curves[name]]
    return _fit(parse_numbers(text), count)


def lr_weights(down: Optional[str], mid: Optional[str], up: Optional[str], layout: BlockLayout,
               zero_threshold: float = 0.0) -> Optional[tuple[float, ...]]:
    """The learning-rate multiplier of every block of ``layout``, or None when no side is given."""
    if down is None and mid is None and up is None:
        return None

    def cut(values: list[float]) -> list[float]:
        return [w if w > zero_threshold else 0.0 for w in values]

    down_w = cut(side_weights(down, layout)) if down is not None else [1.0] * layout.side
    mid_w = cut(_fit(parse_numbers(mid), layout.mid)) if mid is not None else [1.0] * layout.mid
    up_w = cut(side_weights(up, layout)) if up is not None else [1.0] * layout.side
    edge = [1.0] * layout.edge
    return tuple(edge + down_w + mid_w + up_w + edge)


def per_block(text: str, layout: BlockLayout, kind=float) -> tuple:
    """One value per block of ``layout``; ValueError when the count is wrong."""
    return per_block_in_any(text, (layout,), kind)


def per_block_in_any(text: str, layouts: Sequence[BlockLayout], kind=float) -> tuple:
    """Values for one of ``layouts`` (the architecture is not known yet); ValueError naming each allowed count."""
    values = parse_numbers(text, kind)
    if not any(len(values) == layout.total for layout in layouts):
        raise ValueError(f"needs {' or '.join(layout.per_block_text() for layout in layouts)}, got {len(values)}")
    return tuple(values)


def cut_lists(args: dict, layout: BlockLayout) -> list[str]:
    """Warnings for learning-rate lists longer than ``layout`` has blocks (kohya ignores the rest)."""
    counts = {"down_lr_weight": (layout.side, "down"), "mid_lr_weight": (layout.mid, "middle"),
              "up_lr_weight": (layout.side, "up")}
    warnings = []
    for key, (count, side) in counts.items():
        text = args.get(key)
        if text is None or str(text).strip().partition("+")[0] in PRESETS:
            continue
        given = len(str(text).split(","))
        if given > count:
            warnings.append(f"{key}: {layout.label} has {count} {side} block{'s' if count > 1 else ''}; "
                            f"the last {given - count} of the {given} weights are ignored, as kohya does")
    return warnings


@dataclass(frozen=True)
class BlockSettings:
    """Per-block dims, alphas and learning-rate weights (one per block of ``layout``, or None for "as the network")."""
    layout: BlockLayout
    dims: Optional[tuple[int, ...]] = None
    alphas: Optional[tuple[float, ...]] = None
    conv_dims: Optional[tuple[int, ...]] = None
    conv_alphas: Optional[tuple[float, ...]] = None
    lr_weights: Optional[tuple[float, ...]] = None

    def index_of(self, kohya_name: str) -> int:
        return self.layout.index(kohya_name)

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


def block_settings(layout: BlockLayout, *, down_lr_weight: Optional[str] = None, mid_lr_weight: Optional[str] = None,
                   up_lr_weight: Optional[str] = None, block_lr_zero_threshold: float = 0.0,
                   block_dims: Optional[str] = None, block_alphas: Optional[str] = None,
                   conv_block_dims: Optional[str] = None, conv_block_alphas: Optional[str] = None,
                   ) -> Optional[BlockSettings]:
    """BlockSettings in ``layout`` from kohya's --network_args strings; None when none is given."""
    settings = BlockSettings(
        layout,
        dims=per_block(block_dims, layout, int) if block_dims else None,
        alphas=per_block(block_alphas, layout) if block_alphas else None,
        conv_dims=per_block(conv_block_dims, layout, int) if conv_block_dims else None,
        conv_alphas=per_block(conv_block_alphas, layout) if conv_block_alphas else None,
        lr_weights=lr_weights(down_lr_weight, mid_lr_weight, up_lr_weight, layout, block_lr_zero_threshold),
    )
    return None if settings == BlockSettings(layout) else settings


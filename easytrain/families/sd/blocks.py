"""kohya's block numbering of the SD1/SD2 UNet: 25 blocks, 0-11 down (IN00-IN11), 12 the middle block,
13-24 up (OUT00-OUT11), from the diffusers-style kohya name
(``lora_unet_down_blocks_1_attentions_0_...`` -> 1 + 3*1 + 0 = 4). Standard library only."""

from __future__ import annotations

import re

from easytrain.network.blocks import BlockLayout

_UPDOWN = re.compile(r"(up|down)_blocks_(\d+)_(resnets|upsamplers|downsamplers|attentions)_(\d+)_")


def _sd_index(kohya_name: str) -> int:
    match = _UPDOWN.search(kohya_name)
    if match:
        side, outer, kind, inner = match.groups()
        index = 3 * int(outer) + (2 if kind in ("upsamplers", "downsamplers") else int(inner))
        return 1 + index if side == "down" else SD.side + 1 + index
    if "mid_block_" in kohya_name:
        return SD.side
    return -1


SD = BlockLayout("sd", "SD1/SD2", side=12, mid=1, edge=0, parts="12 down, 1 middle, 12 up", index=_sd_index)

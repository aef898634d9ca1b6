"""kohya's block numbering of the SDXL UNet: 23 blocks, 0 the time/label embedding, 1-9 input_blocks 0-8,
10-12 middle_block 0-2, 13-21 output_blocks 0-8, 22 the output layers, from the Stability-style name
(``lora_unet_input_blocks_4_1_...`` -> 5). Standard library only."""

from __future__ import annotations

import re

from easytrain.network.blocks import BlockLayout

_SDXL = re.compile(r"lora_unet_(input_blocks|middle_block|output_blocks)_(\d+)_")


def _sdxl_index(kohya_name: str) -> int:
    match = _SDXL.match(kohya_name)
    if match:
        part, number = match.group(1), int(match.group(2))
        first = {"input_blocks": SDXL.edge, "middle_block": SDXL.edge + SDXL.side,
                 "output_blocks": SDXL.edge + SDXL.side + SDXL.mid}[part]
        return first + number
    if kohya_name.startswith(("lora_unet_time_embed_", "lora_unet_label_emb_")):
        return 0
    if kohya_name.startswith("lora_unet_out_"):
        return SDXL.total - 1
    return -1


SDXL = BlockLayout("sdxl", "SDXL", side=9, mid=3, edge=1,
                   parts="1 time embedding, 9 input, 3 middle, 9 output, 1 out", index=_sdxl_index)

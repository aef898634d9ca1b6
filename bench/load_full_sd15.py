"""Load a full-size SD1.5-shaped checkpoint (random weights) and report time and peak memory.

The checkpoint is made here, never downloaded: models are built on the meta
device from easytrain's shipped SD1 configs, and the .safetensors file is
written by hand (header first, then one tensor at a time), so making it never
holds more than one tensor in memory. It uses the original (A1111) key layout,
with EMA copies left out. Then ``load_base_model`` reads it and the parameter
counts are checked against SD1.5's published sizes.

    python bench/load_full_sd15.py [--dtype fp16|fp32] [--keep PATH]
"""

from __future__ import annotations

import argparse
import json
import resource
import struct
import sys
import tempfile
import time
from pathlib import Path

import torch

SD15_COUNTS = {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}
_DTYPE_NAMES = {torch.float16: "F16", torch.float32: "F32", torch.bfloat16: "BF16"}


def sd15_original_shapes() -> dict[str, tuple[int, ...]]:
    """Every key of an SD1.5 single file in the original layout, with its shape (from meta models)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from easytrain.families.sd.convert import clip_key_map, unet_key_map, vae_key_map
    from easytrain.families.registry import config_folder

    folder = config_folder("sd1")
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
    shapes = {}
    for model, key_map in (
        (unet, unet_key_map(unet.config, unet.state_dict().keys())),
        (vae, vae_key_map(vae.config, vae.state_dict().keys())),
        (text_encoder, clip_key_map(text_encoder.state_dict().keys())),
    ):
        for name, tensor in model.state_dict().items():
            shape = tuple(tensor.shape)
            if ".mid.attn_1." in key_map[name] and len(shape) == 2:
                shape = shape + (1, 1)  # the original VAE attention is 1x1 convs
            shapes[key_map[name]] = shape
    return shapes


def pattern_value(index: int) -> float:
    """The constant that fills tensor number ``index`` in pattern mode (distinct and exact in fp16 for index < 4096)."""
    return index / 2048 if index < 2048 else -(index - 2047) / 2048


def write_random_safetensors(
    path: Path, shapes: dict[str, tuple[int, ...]], dtype=torch.float16, seed=0, pattern: bool = False,
    header_only: bool = False,
) -> int:
    """Stream random tensors into a .safetensors file; returns the file size.

    With ``pattern`` each tensor is instead filled with ``pattern_value(its index)``:
    much faster, and a loaded parameter then tells which key it was read from.
    With ``header_only`` the data is a hole of the right size (a sparse file): what detection and
    `check` read, no disk space, never loadable.
    """
    itemsize = torch.empty((), dtype=dtype).element_size()
    header, offset = {}, 0
    for key, shape in shapes.items():
        size = itemsize
        for s in shape:
            size *= s
        header[key] = {"dtype": _DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # keep the data 8-byte aligned
    generator = torch.Generator().manual_seed(seed)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        if header_only:
            fh.truncate(8 + len(raw) + offset)
            return path.stat().st_size
        for index, shape in enumerate(shapes.values()):
            if pattern:
                tensor = torch.full(shape, pattern_value(index), dtype=dtype)
            else:
                tensor = (torch.randn(shape, generator=generator) * 0.02).to(dtype)
            fh.write((tensor if dtype != torch.bfloat16 else tensor.view(torch.int16)).numpy().data)
    return path.stat().st_size


def peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 1024 / 1024


def bench_arguments(description: str) -> tuple[torch.dtype, Path | None]:
    """(dtype, --keep path) of a full-size load bench."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dtype", choices=("fp16", "fp32"), default="fp16", help="dtype of the file and the load")
    parser.add_argument("--keep", type=Path, help="write the checkpoint here and keep it")
    args = parser.parse_args()
    return (torch.float16 if args.dtype == "fp16" else torch.float32), args.keep


def write_and_report(path: Path, shapes: dict[str, tuple[int, ...]], dtype) -> None:
    start = time.perf_counter()
    size = write_random_safetensors(path, shapes, dtype)
    made = time.perf_counter() - start
    print(f"wrote {len(shapes)} tensors, {size / 2**30:.2f} GiB in {made:.1f} s (peak RSS {peak_rss_mib():.0f} MiB)")


def report_counts(counts: dict[str, int], expected: dict[str, int], what: str, reference: str) -> bool:
    """Print one line per part; True when every count is the expected one."""
    for part, want in expected.items():
        status = "ok" if counts[part] == want else f"MISMATCH ({reference}: {want:,})"
        print(f"  {part:15s} {counts[part]:>13,} {what}  {status}")
    return counts == expected


def main() -> int:
    dtype, keep = bench_arguments(__doc__.splitlines()[0])

    from easytrain.families.load import load_base_model

    with tempfile.TemporaryDirectory() as tmp:
        path = keep or Path(tmp) / "sd15-random.safetensors"
        write_and_report(path, sd15_original_shapes(), dtype)

        start = time.perf_counter()
        model = load_base_model(str(path), dtype=dtype)
        loaded = time.perf_counter() - start
        counts = {part: sum(p.numel() for p in getattr(model, part).parameters()) for part in SD15_COUNTS}
        print(f"loaded as {model.arch}/{model.prediction_type} in {loaded:.1f} s, peak RSS {peak_rss_mib():.0f} MiB")
        ok = report_counts(counts, SD15_COUNTS, "parameters", "expected")
        ids = model.tokenizer("a photo of a cat").input_ids
        print(f"  tokenizer     {len(model.tokenizer)} tokens, 'a photo of a cat' -> {ids}")
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

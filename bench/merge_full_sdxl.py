"""Peak memory of `easytrain lora merge` baking a LoRA into a full-size SDXL checkpoint (random weights).

The checkpoint is made here, never downloaded: SDXL 1.0's keys and shapes in
Stability's layout (bench/load_full_sdxl.py) are written tensor by tensor with
random fp16 values (6.5 GiB), never held whole. The LoRA is a LoCon on every
module kohya's SDXL LoRA can have (788 UNet, 72 TE1, 192 TE2) at --rank (32 by
default; convs 16), random fp16. The merge runs in a fresh process that reports
its resident memory after the imports and at its peak (VmHWM), and the output
is checked: same keys, dtypes and shapes, and two changed tensors equal base +
delta. The goal (issue 27): a peak below 2x the largest single tensor plus the
LoRA, far below the checkpoint's size.

    python bench/merge_full_sdxl.py [--rank 32] [--pattern] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from load_full_sd15 import peak_rss_mib, write_random_safetensors  # noqa: E402
from load_full_sdxl import sdxl_original_shapes  # noqa: E402

CHILD = r"""
import json, sys, time
def status_mib(field):
    # VmRSS now, VmHWM the peak of this process's own memory (ru_maxrss would carry the parent's peak over exec)
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":")) / 1024
from easytrain.lora_tools.merge import merge_into_checkpoint
import torch, safetensors  # what the merge uses, loaded before the baseline is taken
baseline = status_mib("VmRSS")
start = time.perf_counter()
merge_into_checkpoint(sys.argv[1], [(sys.argv[2], 1.0)], sys.argv[3])
elapsed = time.perf_counter() - start
peak = status_mib("VmHWM")
print(json.dumps({"baseline_mib": baseline, "peak_mib": peak, "seconds": elapsed}))
"""


def write_lora(path: Path, checkpoint: Path, rank: int, conv_rank: int) -> int:
    """A random fp16 LoCon over every slot of the checkpoint's layout; returns its size in bytes."""
    from easytrain.lora_tools.files import write_lora as write
    from easytrain.lora_tools.layout import checkpoint_layout

    layout = checkpoint_layout(checkpoint)
    gen = torch.Generator().manual_seed(0)
    tensors = {}
    for slot in layout.slots.values():
        conv = len(slot.shape) == 4 and tuple(slot.shape[2:]) != (1, 1)
        r = conv_rank if conv else rank
        tail = list(slot.shape[1:])
        tensors[f"{slot.name}.lora_down.weight"] = (torch.randn([r] + tail, generator=gen) * 0.01).half()
        up_tail = [1, 1] if len(slot.shape) == 4 else []
        tensors[f"{slot.name}.lora_up.weight"] = (torch.randn([slot.shape[0], r] + up_tail, generator=gen) * 0.01).half()
        tensors[f"{slot.name}.alpha"] = torch.tensor(float(r) / 2).half()
    write(path, tensors, {"ss_base_model_version": "sdxl_base_v1-0", "ss_network_module": "networks.lora"})
    return path.stat().st_size


def check_output(base: Path, lora: Path, merged: Path) -> None:
    from easytrain.lora_tools.files import read_lora
    from easytrain.lora_tools.layout import checkpoint_layout
    from easytrain.lora_tools.stream import Reader
    from easytrain.lora_tools import deltas

    with Reader(base) as before, Reader(merged) as after:
        assert [(k, before.dtype_name(k), before.shape(k)) for k in sorted(before.keys())] == \
            [(k, after.dtype_name(k), after.shape(k)) for k in sorted(after.keys())], "keys, dtypes or shapes differ"
        layout, modules = checkpoint_layout(base), read_lora(lora).modules
        for name in ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",
                     "lora_unet_output_blocks_2_2_conv"):
            slot = layout.slots[name]
            want = deltas.apply(before.read(slot.key), modules[name]).half()
            torch.testing.assert_close(after.read(slot.key), want, rtol=1e-3, atol=1e-4)  # fp16 rounding
    print("  output checked: same keys, dtypes and shapes; changed tensors equal base + delta")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--conv-rank", type=int, default=16)
    parser.add_argument("--pattern", action="store_true", help="constant-filled tensors instead of random (faster)")
    parser.add_argument("--keep", type=Path, help="write the files into this folder and keep them (a checkpoint "
                        "already there is used again)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        base, lora, merged = folder / "sdxl-random.safetensors", folder / "lora.safetensors", folder / "merged.safetensors"
        shapes = sdxl_original_shapes()
        start = time.perf_counter()
        if args.keep and base.is_file():  # a kept checkpoint from an earlier run
            size = base.stat().st_size
        else:
            size = write_random_safetensors(base, shapes, torch.float16, pattern=args.pattern)
        print(f"checkpoint: {len(shapes)} tensors, {size / 2**30:.2f} GiB (fp16), written in "
              f"{time.perf_counter() - start:.0f} s")
        largest_key = max(shapes, key=lambda k: torch.Size(shapes[k]).numel())
        largest = torch.Size(shapes[largest_key]).numel()
        print(f"  largest tensor: {largest_key} {list(shapes[largest_key])}: {largest * 2 / 2**20:.0f} MiB fp16, "
              f"{largest * 4 / 2**20:.0f} MiB fp32")
        lora_size = write_lora(lora, base, args.rank, args.conv_rank)
        print(f"LoRA: rank {args.rank} (convs {args.conv_rank}), {lora_size / 2**20:.0f} MiB fp16")
        print(f"  (this process, building both: peak RSS {peak_rss_mib():.0f} MiB)")

        out = subprocess.run([sys.executable, "-c", CHILD, str(base), str(lora), str(merged)], capture_output=True,
                             text=True, cwd=HERE.parent)
        if out.returncode != 0:
            print(out.stderr)
            return 1
        result = json.loads(out.stdout.strip().splitlines()[-1])
        work = result["peak_mib"] - result["baseline_mib"]
        goal = 2 * largest * 2 / 2**20 + lora_size / 2**20
        print(f"merge: {result['seconds']:.0f} s; RSS after imports {result['baseline_mib']:.0f} MiB, peak "
              f"{result['peak_mib']:.0f} MiB: the merge itself used {work:.0f} MiB")
        print(f"  goal: below 2 x largest tensor + LoRA = {goal:.0f} MiB; checkpoint {size / 2**20:.0f} MiB: "
              f"{'met' if work < goal else 'NOT met'}")
        check_output(base, lora, merged)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

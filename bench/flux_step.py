"""Benchmark: Flux LoRA steps on a GPU for each memory lever, beside families/flux/memory.py's estimate.

    .venv/bin/python bench/flux_step.py [--levers all|bf16|fp8|swap16|swap28|...] [--resolution 512 1024]
                                        [--steps 3] [--dim 16] [--chroma]
    .venv/bin/python bench/flux_step.py --tiny        # the same code on the CPU, the tiny transformer
                                                      # (its estimate column is still full-size Flux's)

Full-size FLUX.1-dev (or Chroma) is built from its config with random weights (nothing is downloaded):
on the GPU directly in bf16 when no block is swapped, else on the CPU, then placed with block_swap's
``move_except_swapped``. The step is the trainer's Flux step: kohya's 304-module LoRA (dim 16, alpha 16,
through easytrain's network code), fp8 base weights when asked (fp8.store_in_fp8 after the network),
block swap (kohya's split of N), gradient checkpointing, bf16 autocast, the flow objective with kohya's
recommended settings, cached text (random 512-token T5 states and a pooled CLIP-L vector), AdamW or
AdamW8bit from train.optimizers. Printed per lever and size: s/step, the peak allocated memory
(torch.cuda.max_memory_allocated over the steps, weights included) and the estimate's tensors (the
same quantity, without the margin for context and allocator) and total.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from easytrain.families.flux import memory as flux_memory  # noqa: E402

LEVERS = {  # name: (fp8 base, blocks_to_swap, optimizer)
    "bf16": (False, 0, "AdamW"),
    "fp8": (True, 0, "AdamW"),
    "fp8-8bit": (True, 0, "AdamW8bit"),
    "swap16": (True, 16, "AdamW8bit"),
    "swap28": (True, 28, "AdamW8bit"),
}


def build(kind: str, tiny: bool, device: torch.device, swap: int):
    from easytrain.families.flux.model import FluxConfig, FluxTransformer
    from easytrain.families.flux.tiny import tiny_config

    if tiny:
        config = dataclasses.replace(tiny_config(kind), depth=4, depth_single_blocks=6)
    else:
        chroma = kind == "chroma"
        config = FluxConfig(kind=kind, vec_in_dim=0 if chroma else 768, guidance_embed=kind == "flux-dev")
    where = torch.device("cpu") if swap or tiny else device
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)   # never an fp32 copy of 12B parameters (48 GB)
    try:
        with torch.device(where):
            model = FluxTransformer(config)
    finally:
        torch.set_default_dtype(default)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.02)
    return model.requires_grad_(False)


def run_case(args, lever: str, side: int, device: torch.device) -> dict:
    from easytrain.families.flux.block_swap import enable_block_swap, move_except_swapped
    from easytrain.families.flux.fp8 import store_in_fp8
    from easytrain.families.flux.objective import FlowObjective
    from easytrain.families.flux.options import defaults_for
    from easytrain.families.flux.targets import flux_targets
    from easytrain.network.build import build_network
    from easytrain.network.spec import NetworkSpec
    from easytrain.train.optimizers import build_optimizer

    fp8, swap, optimizer_name = LEVERS[lever]
    kind = "chroma" if args.chroma else "flux-dev"
    variant = "chroma" if args.chroma else "dev"
    if args.tiny:
        swap = min(swap, 3)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model = build(kind, args.tiny, device, swap)
    network = build_network({"unet": model}, flux_targets({"unet": model}, variant),
                            NetworkSpec("LoRA", args.dim, float(args.dim), train_text_encoder=False), seed=0)
    if fp8:
        store_in_fp8(model, compute_dtype=torch.bfloat16)
    if swap:
        enable_block_swap(model, swap, device, "cpu")
        move_except_swapped(model, device)
    else:
        model.to(device)
    for p in network.trainable_parameters():
        p.data = p.data.to(device)
    model.enable_gradient_checkpointing()
    model.train()
    optimizer = build_optimizer(optimizer_name, [{"params": network.trainable_parameters(), "lr": 1e-4,
                                                  "name": "unet"}], device=device).optimizer
    objective = FlowObjective(defaults_for(variant), variant)
    config = model.config
    generator = torch.Generator(device).manual_seed(0)
    text = SimpleNamespace(t5=torch.randn(1, 512, config.context_in_dim, device=device, dtype=torch.bfloat16),
                           pooled=(torch.randn(1, config.vec_in_dim, device=device, dtype=torch.bfloat16)
                                   if config.vec_in_dim else None),
                           t5_mask=torch.ones(1, 512, device=device))
    latents = torch.randn(1, 16, side // 8, side // 8, device=device)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        batch = objective.prepare(latents, generator=generator)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            prediction = model(**objective.model_inputs(batch, text))
        loss = objective.loss(prediction, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    memory = flux_memory.memory_for(variant)
    estimate = flux_memory.estimate(flux_memory.FluxSetup(side, side, dim=args.dim, fp8_base=fp8, blocks_to_swap=swap,
                                                          optimizer=optimizer_name, label=memory.label), memory)
    del model, network, optimizer
    return dict(lever=lever, side=side, step_s=min(times), peak_gib=peak / flux_memory.GIB,
                tensors_gib=estimate.tensors / flux_memory.GIB, total_gib=estimate.total_gib, loss=loss.item())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levers", nargs="+", default=["all"], choices=["all", *LEVERS])
    parser.add_argument("--resolution", nargs="+", type=int, default=[512, 1024])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--chroma", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="the tiny transformer on the CPU: a smoke test")
    args = parser.parse_args(argv)
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    if args.tiny:
        args.resolution = [64]
    levers = list(LEVERS) if "all" in args.levers else args.levers
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"# Flux LoRA step on {name}: dim {args.dim}, batch 1, checkpointing, bf16 autocast", flush=True)
    for side in args.resolution:
        for lever in levers:
            r = run_case(args, lever, side, device)
            print(f"{r['lever']:<9} {r['side']:>5}px  {r['step_s']:7.3f} s/step  peak {r['peak_gib']:6.2f} GiB  "
                  f"estimate {r['tensors_gib']:6.2f} GiB tensors, {r['total_gib']:6.2f} GiB total  "
                  f"loss {r['loss']:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: Flux.1 [dev] LoRA training steps on a GPU, per memory lever (fp8 base, block swap, 8-bit AdamW).

    .venv/bin/python bench/flux_step.py [--resolution 512 1024] [--batch 1] [--dim 16] [--steps 5] [--warmup 2]
                                        [--levers all | "bf16" "fp8 base" ...] [--plan-only] [--estimates]

The full-size FLUX.1-dev transformer (19 double + 38 single blocks, hidden 3072; 11.9B parameters) is built
on the meta device and materialised ON THE GPU in bf16 with random weights (normal, std 0.02): nothing is
downloaded and it never exists on the CPU (a swapped block's frozen weights go to pinned CPU memory, as
training puts them). Per lever, as families/flux/memory.py's LEVERS lists them: kohya's Flux LoRA module set
(304 modules, dim 16 by default, families/flux/targets.py) attached, then the block weights stored in fp8
(``fp8_base``, families/flux/fp8.py) and the last blocks swapped (``blocks_to_swap``,
families/flux/block_swap.py) as Flux.to_device does; gradient checkpointing on; the flow-matching loss of
families/flux/objective.py with kohya's documented settings; cached inputs as training uses them: random
16-channel latents (res/8) and random T5 (512 tokens x 4096) and CLIP-L pooled (768) outputs, so neither the
AE nor the text encoders are on the GPU. bf16 autocast, AdamW or bitsandbytes' AdamW8bit on the LoRA.

Printed per lever and resolution, each with the GPU's name: s/step, images/s, the peak allocated memory over
the timed steps (torch.cuda.max_memory_allocated, weights included) and families/flux/memory.py's estimate
for the same settings beside it (its tensors, the same quantity, and its total with the margin for the CUDA
context and allocator). ``--chroma``: Chroma instead (228 modules, no CLIP-L). Each lever's model is freed
before the next is built.

``--plan-only`` prints what it would run (and the estimates) without torch touching a GPU: the test suite runs
it on the CPU. ``--estimates`` prints the estimate table per lever at 512 and 1024 px (docs/PERFORMANCE.md).
``--tiny --device cpu`` runs the same code on a tiny Flux-shaped transformer on the CPU (a smoke test of the
code; it measures nothing worth recording; its 2 + 2 blocks leave none to swap, so the swap levers run
without swapping there).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

T5_TOKENS = 512


def levers(chosen: list[str]):
    from easytrain.families.flux.memory import LEVERS

    if chosen == ["all"]:
        return list(LEVERS)
    known = {lever[0]: lever for lever in LEVERS}
    missing = [name for name in chosen if name not in known]
    if missing:
        raise SystemExit(f"unknown lever {missing[0]!r}; the levers: {', '.join(known)}")
    return [known[name] for name in chosen]


def estimate_of(resolution: int, batch: int, dim: int, fp8: bool, swap: int, optimizer: str, variant: str = "dev"):
    """families/flux/memory.py's estimate (a MemoryEstimate: ``tensors`` without the margin, ``total_gib``)."""
    from easytrain.families.flux.memory import FluxSetup, estimate, memory_for

    memory = memory_for(variant)
    return estimate(FluxSetup(resolution, resolution, batch=batch, dim=dim, fp8_base=fp8, blocks_to_swap=swap,
                              optimizer=optimizer, label=memory.label), memory)


def estimate_gib(resolution: int, batch: int, dim: int, fp8: bool, swap: int, optimizer: str,
                 variant: str = "dev") -> float:
    return estimate_of(resolution, batch, dim, fp8, swap, optimizer, variant).total_gib


def print_estimates(batch: int, dim: int) -> None:
    from easytrain.families.flux.memory import lever_lines

    for resolution in (512, 1024):
        print("\n".join(lever_lines(resolution, resolution, batch=batch, dim=dim)))


def plan_lines(args) -> list[str]:
    lines = [f"{'Chroma' if args.chroma else 'FLUX.1-dev'} transformer, {'tiny' if args.tiny else 'full size'}, "
             "random bf16 weights built on "
             f"{args.device}; LoRA dim {args.dim}, batch {args.batch}, {args.warmup} warm-up + {args.steps} timed "
             "steps, gradient checkpointing, bf16 autocast, cached latents and text outputs"]
    for resolution in args.resolution:
        for name, fp8, swap, optimizer in levers(args.levers):
            gib = estimate_gib(resolution, args.batch, args.dim, fp8, swap, optimizer, variant_of(args))
            lines.append(f"  {resolution} px  {name:<44} fp8_base={fp8} blocks_to_swap={swap} {optimizer}; "
                         f"estimate {gib:.1f} GiB")
    return lines


def variant_of(args) -> str:
    return "chroma" if args.chroma else "dev"


def build_transformer(device, tiny: bool, chroma: bool = False):
    """The transformer with random bf16 weights, materialised on ``device`` from the meta device."""
    import torch

    from easytrain.families.flux.model import FluxConfig, FluxTransformer

    kind = "chroma" if chroma else "flux-dev"
    if tiny:
        from easytrain.families.flux.tiny import tiny_config

        config = tiny_config(kind)
    else:
        config = FluxConfig(kind=kind, vec_in_dim=0 if chroma else 768, guidance_embed=not chroma)
    with torch.device("meta"):
        model = FluxTransformer(config)
    model = model.to(dtype=torch.bfloat16).to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".scale"):
                param.fill_(1.0)
            else:
                param.normal_(0.0, 0.02, generator=generator)
        for name, buffer in model.named_buffers():
            buffer.zero_()
    model.requires_grad_(False)
    return model


def one_case(args, resolution: int, lever) -> dict:
    import torch

    from easytrain.families.flux.block_swap import enable_block_swap, move_except_swapped
    from easytrain.families.flux.family import Flux
    from easytrain.families.flux.objective import FlowObjective
    from easytrain.families.flux.options import defaults_for
    from easytrain.families.flux.targets import flux_targets
    from easytrain.network.build import build_network
    from easytrain.network.spec import NetworkSpec
    from easytrain.train.optimizers import build_optimizer

    name, fp8, swap, optimizer_name = lever
    device = torch.device(args.device)
    variant = variant_of(args)
    model = build_transformer(device, args.tiny, args.chroma)
    targets = flux_targets({"unet": model, "clip_l": None, "t5": None}, variant, train_clip=False, train_t5=False)
    network = build_network({"unet": model}, targets, NetworkSpec("LoRA", args.dim, float(args.dim)), seed=0)
    for param in network.trainable_parameters():
        param.data = param.data.to(device)
    if fp8:  # what the trainer does after attaching the network (Flux.store_base)
        Flux().store_base(SimpleNamespace(unet=model, options={"fp8_base": True}), torch.bfloat16)
    if swap and not args.tiny:
        enable_block_swap(model, swap, device)
        move_except_swapped(model, device)
    model.enable_gradient_checkpointing()
    model.train()
    params = list(network.trainable_parameters())
    optimizer = build_optimizer(optimizer_name, [{"params": params, "lr": 1e-4, "name": "unet"}],
                                device=device).optimizer  # the trainer's (bitsandbytes' AdamW8bit)

    objective = FlowObjective(defaults_for(variant), variant)
    config = model.config
    generator = torch.Generator(device=device).manual_seed(1)
    side = resolution // 8
    latents = torch.randn(args.batch, 16, side, side, generator=generator, device=device)
    tokens = 8 if args.tiny else T5_TOKENS
    text = SimpleNamespace(
        t5=torch.randn(args.batch, tokens, config.context_in_dim, generator=generator, device=device,
                       dtype=torch.bfloat16),
        pooled=(torch.randn(args.batch, config.vec_in_dim, generator=generator, device=device, dtype=torch.bfloat16)
                if config.vec_in_dim else None),
        t5_mask=None)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)

    def step():
        batch = objective.prepare(latents, generator=generator, dtype=torch.bfloat16)
        with autocast:
            loss = objective.loss(model(**objective.model_inputs(batch, text)), batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    cuda = device.type == "cuda"
    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / max(1, args.steps)
    peak = torch.cuda.max_memory_allocated() / 1024 ** 3 if cuda else float("nan")
    found = estimate_of(resolution, args.batch, args.dim, fp8, swap, optimizer_name, variant)
    result = dict(name=name, resolution=resolution, seconds=seconds, images=args.batch / seconds, peak=peak,
                  tensors=found.tensors / 1024 ** 3, estimate=found.total_gib, loss=loss.item())
    del model, network, optimizer, params, latents, text
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resolution", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--levers", nargs="+", default=["all"], help='"all" or lever names as the plan lists them')
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--chroma", action="store_true", help="Chroma (8.9B, T5 only) instead of FLUX.1-dev")
    parser.add_argument("--tiny", action="store_true", help="a tiny Flux-shaped transformer (smoke test)")
    parser.add_argument("--plan-only", action="store_true", help="print what would run; touch no GPU")
    parser.add_argument("--estimates", action="store_true", help="print the estimate per lever at 512 and 1024")
    args = parser.parse_args(argv)
    if args.estimates:
        print_estimates(args.batch, args.dim)
        return 0
    print("\n".join(plan_lines(args)), flush=True)
    if args.plan_only:
        return 0
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("flux_step: no CUDA GPU here; --plan-only prints the plan, --tiny --device cpu runs a smoke test")
        return 1
    if not args.tiny and not args.device.startswith("cuda"):
        print("flux_step: the full-size transformer is built on a GPU only (it is 24 GB in bf16); use --tiny")
        return 1
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    for resolution in args.resolution:
        for lever in levers(args.levers):
            try:
                r = one_case(args, resolution, lever)
            except torch.cuda.OutOfMemoryError:
                print(f"[{gpu}] {resolution} px  {lever[0]:<44} out of GPU memory", flush=True)
                gc.collect()
                torch.cuda.empty_cache()
                continue
            print(f"[{gpu}] {resolution} px  {r['name']:<44} {r['seconds']:.3f} s/step  {r['images']:.2f} images/s  "
                  f"peak {r['peak']:.1f} GiB  (estimate: tensors {r['tensors']:.1f} GiB, "
                  f"{r['estimate']:.1f} GiB with the margin)  loss {r['loss']:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: LoRA training steps on the full-size SD1.5 or SDXL architecture on a GPU.

    .venv/bin/python bench/gpu_step.py [--arch sd1|sdxl|tiny] [--steps 20] [--warmup 5] [--no-checkpointing]
                                       [--compile] [--channels-last] [--only all|speed|6gb|12gb]
                                       [--batch 1 4] [--precision fp16 bf16] [--resolution 512|1024]

The models are built from easytrain's shipped configs on the meta device and
materialised on the GPU with PyTorch's default random initialisation: nothing
is downloaded. Latents are random 4x(res/8)x(res/8) tensors, as if cached, so
the VAE is not on the GPU. The step is the trainer's: easytrain's LoRA network
(dim 16, alpha 8), AdamW8bit (``--optimizer`` to change) from train.optimizers, noise, timesteps and the
min-SNR loss from train.diffusion, all under an accelerate Accelerator with
the mixed precision (fp16 with its gradient scaler), gradient clipping 1.0.

- sd1 (default, 512 px): SD1.5's UNet and CLIP text encoder, the network on
  both (network.apply_network), captions through arch.clip_text in every step
  (225 tokens, clip skip 2).
- sdxl (1024 px): SDXL's UNet and both text encoders, the network through the
  SDXL adapter with kohya's default module set (UNet only, as SDXL trains by
  default); the text encoders' outputs are cached as the trainer caches them:
  one 225-token caption is encoded once (arch.sdxl_text), then both encoders
  leave the GPU; the time ids are arch.sdxl_text.time_ids for an uncropped
  picture of the bucket's size. The weights are materialised in the mixed
  precision directly, so that a 12 GB card never holds an fp32 UNet.

Printed per case, each with the GPU's name: images/s, s/step, peak GPU memory
(torch.cuda.max_memory_allocated over the timed steps, weights included),
and model FLOPs utilisation: the FLOPs of one step counted with
torch.utils.flop_counter.FlopCounterMode (forward and backward, without the
recomputation gradient checkpointing adds), per second, over the GPU's peak
dense fp16/bf16 tensor FLOP/s from the table below. Then the memory case
(SD1.5: 6 GB; SDXL: 12 GB): batch 1, fp16, AdamW8bit, cached latents (and
text-encoder outputs for SDXL), gradient checkpointing on, its peak allocated
memory, PASS/FAIL against 6 or 12 GiB, and easytrain/memory_estimate.py's
estimate of the same tensors beside it.

`--arch tiny` runs the same code on easytrain's embedded tiny model (the
tests use it on the CPU; it measures nothing worth recording).

`--device cpu` runs the same code on the CPU as a smoke test (tiny sizes
only: try --resolution 64 --steps 1 --warmup 0 --precision bf16 --batch 1
--only speed; SDXL's weights then take about 7 GB of RAM in bf16, and the
memory case, fp32 on the CPU, about 14 GB).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import torch  # noqa: E402

GIB = 1024 ** 3
# Peak dense fp16/bf16 tensor-core FLOP/s with fp32 accumulation (vendor data sheets).
# Checked in this order: the first name fragment found in the GPU's name wins.
PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("H800", 989.0),
    ("GH200", 989.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("L4", 121.0),
    ("RTX 4090", 165.0),
    ("RTX 4080", 97.0),
    ("RTX 3090", 71.0),
    ("RTX 3080", 59.0),
    ("A6000", 155.0),
    ("V100", 125.0),
    ("T4", 65.0),
)
CAPTION = ("a photo of a woman with long red hair standing in a sunlit garden, wearing a blue dress, "
           "detailed face, soft light, shallow depth of field, high quality")
ESTIMATED = ("sd1", "sdxl")   # the architectures easytrain/memory_estimate.py has figures for
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "no": torch.float32}


def peak_flops(name: str) -> float | None:
    for fragment, tflops in PEAK_TFLOPS:
        if fragment.lower() in name.lower():
            return tflops * 1e12
    return None


# ---- the model --------------------------------------------------------------------------------------


def materialise(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """A meta-device model onto ``device`` with each layer's default random initialisation."""
    owners = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
    missing = sorted({type(m).__name__ for m in owners if not hasattr(m, "reset_parameters")})
    if missing:
        raise RuntimeError(f"cannot initialise {', '.join(missing)}: no reset_parameters")
    buffers = {name: buf.clone() for name, buf in model.named_buffers() if buf.device.type != "meta"}
    model.to_empty(device=device)
    with torch.no_grad():
        for module in owners:
            module.reset_parameters()
        for name, buf in buffers.items():
            model.get_buffer(name).copy_(buf)
    return model


def build_sd15(device: torch.device):
    """SD1.5's UNet and text encoder (random weights, fp32, frozen), and the real CLIP tokenizer."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from easytrain.families.ddpm.schedule import make_noise_scheduler
    from easytrain.families.registry import config_folder
    from easytrain.model.load import load_clip_tokenizer
    from easytrain.model.quiet import quiet_model_libraries

    quiet_model_libraries()
    folder = config_folder("sd1")
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(str(folder / "text_encoder")))
    torch.manual_seed(0)
    for model in (unet, text_encoder):
        materialise(model, device)
        model.requires_grad_(False)
    return unet, text_encoder, load_clip_tokenizer(), make_noise_scheduler("epsilon")


@dataclass
class ArchParts:
    """What differs between the architectures: the models, the network on them, the UNet's conditioning."""

    unet: torch.nn.Module
    network: object                       # easytrain.network.build.Network
    trained: list                         # the modules accelerate prepares (those with adapters)
    noise_scheduler: object
    latent_scale: float                   # the VAE's scaling factor
    condition: Callable[[], dict]         # the UNet's keyword arguments besides latents and timesteps
    set_checkpointing: Callable[[bool], None]
    attention: str


def build_tiny(device: torch.device):
    """easytrain's embedded tiny SD1-shaped model (fp32, frozen): the CPU smoke test of the same code."""
    from easytrain.families.ddpm.schedule import make_noise_scheduler
    from easytrain.families.sd.tiny import build_tiny_components

    parts = build_tiny_components(0)
    for model in (parts["unet"], parts["text_encoder"]):
        model.to(device).requires_grad_(False)
    return parts["unet"], parts["text_encoder"], parts["tokenizer"], make_noise_scheduler("epsilon")


def sd15_parts(device: torch.device, weight_dtype: torch.dtype, *, batch: int, resolution: int, dim: int,
               alpha: float, builder: Callable = build_sd15) -> ArchParts:
    """SD1.5 with the network on the UNet and the text encoder, captions encoded in every step."""
    from easytrain.families.clip_text import encode_tokens, tokenize_captions
    from easytrain.families.sd.targets import apply_network
    from easytrain.network.spec import NetworkSpec

    unet, text_encoder, tokenizer, noise_scheduler = builder(device)
    network = apply_network(unet, text_encoder, NetworkSpec("LoRA", dim, alpha), seed=0)
    network.cast_base(weight_dtype)
    captions = [CAPTION] * batch

    def condition() -> dict:
        input_ids = tokenize_captions(tokenizer, captions, 225).to(device)
        return {"encoder_hidden_states": encode_tokens(text_encoder, input_ids, 2)}

    def set_checkpointing(on: bool) -> None:
        unet.enable_gradient_checkpointing() if on else unet.disable_gradient_checkpointing()
        text_encoder_checkpointing(text_encoder, on)

    return ArchParts(unet, network, [unet, text_encoder], noise_scheduler, 0.18215, condition, set_checkpointing,
                     attention=f"{unet_attention(unet)}; text encoder {text_encoder.config._attn_implementation}")


def tiny_parts(device: torch.device, weight_dtype: torch.dtype, **kwargs) -> ArchParts:
    return sd15_parts(device, weight_dtype, builder=build_tiny, **kwargs)


def sdxl_parts(device: torch.device, weight_dtype: torch.dtype, *, batch: int, resolution: int, dim: int,
               alpha: float) -> ArchParts:
    """SDXL with kohya's default network (UNet only) and the text encoders' outputs cached, as SDXL trains."""
    from load_full_sdxl import sdxl_meta_models

    from easytrain.families.registry import family_for
    from easytrain.families.sdxl.text import encode_sdxl_tokens, time_ids, tokenize_sdxl
    from easytrain.model.load import CLIP_PAD, load_clip_tokenizer
    from easytrain.families.ddpm.schedule import make_noise_scheduler
    from easytrain.families.sdxl.load import BIGG_PAD
    from easytrain.model.quiet import quiet_model_libraries
    from easytrain.network.build import build_network
    from easytrain.network.spec import NetworkSpec

    quiet_model_libraries()
    models = sdxl_meta_models()
    torch.manual_seed(0)
    unet, *encoders = (materialise(models[part].to(weight_dtype), device).requires_grad_(False)
                       for part in ("unet", "text_encoder", "text_encoder_2"))
    adapter = family_for("sdxl")
    parts = adapter.network_models(SimpleNamespace(unet=unet, text_encoders=tuple(encoders)))
    spec = NetworkSpec("LoRA", dim, alpha, train_text_encoder=False)
    network = build_network(parts, adapter.network_targets(parts, spec), spec, seed=0)

    tokenizers = (load_clip_tokenizer(CLIP_PAD), load_clip_tokenizer(BIGG_PAD))
    with torch.no_grad():
        ids_1, ids_2 = tokenize_sdxl(tokenizers, [CAPTION], 225)
        context, pooled = encode_sdxl_tokens(encoders, ids_1.to(device), ids_2.to(device))
    for encoder in encoders:  # cached outputs: the encoders are not needed on the GPU any more
        encoder.to("cpu")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    context, pooled = context.expand(batch, -1, -1), pooled.expand(batch, -1)
    size = (resolution, resolution)
    added = {"text_embeds": pooled, "time_ids": time_ids([size] * batch, [(0, 0)] * batch, size).to(device, pooled.dtype)}

    def condition() -> dict:
        return {"encoder_hidden_states": context, "added_cond_kwargs": added}

    def set_checkpointing(on: bool) -> None:
        unet.enable_gradient_checkpointing() if on else unet.disable_gradient_checkpointing()

    return ArchParts(unet, network, [unet], make_noise_scheduler("epsilon"),
                     float(sdxl_latent_scale()), condition, set_checkpointing, attention=unet_attention(unet))


def sdxl_latent_scale() -> float:
    import json

    from easytrain.families.sdxl.load import SDXL_CONFIG_DIR

    return json.loads((SDXL_CONFIG_DIR / "vae" / "config.json").read_text())["scaling_factor"]


def unet_attention(unet) -> str:
    return ", ".join(sorted({type(p).__name__ for p in unet.attn_processors.values()}))


@dataclass(frozen=True)
class ArchBench:
    """One architecture's builder, its usual size and the GPU memory its smallest setup must fit in."""

    label: str
    build: Callable[..., ArchParts]
    resolution: int
    budget_gib: int
    network_parts: str
    trains_text_encoder: bool


ARCHS = {
    "sd1": ArchBench("SD1.5 UNet + text encoder", sd15_parts, 512, 6, "UNet and text encoder, 225-token captions "
                     "encoded every step", trains_text_encoder=True),
    "sdxl": ArchBench("SDXL UNet (text encoders cached, then off the GPU)", sdxl_parts, 1024, 12,
                      "UNet only (kohya's SDXL default), one 225-token caption encoded once",
                      trains_text_encoder=False),
    # not a benchmark: the same code on a model that runs anywhere in seconds (tests, --device cpu)
    "tiny": ArchBench("easytrain's tiny SD1-shaped model (smoke test)", tiny_parts, 64, 1,
                      "UNet and text encoder", trains_text_encoder=True),
}


@dataclass(frozen=True)
class Case:
    precision: str
    batch: int
    checkpointing: bool
    compile: bool = False
    channels_last: bool = False


@dataclass
class Result:
    case: Case
    seconds_per_step: float
    images_per_second: float
    peak_bytes: int
    reserved_bytes: int
    flops_per_step: float | None
    first_step_seconds: float
    attention: str
    optimizer: str


class Trainer:
    """One case's models, network, optimizer and step, built as the training loop builds them."""

    def __init__(self, case: Case, device: torch.device, args):
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState

        from easytrain.families.ddpm.diffusion import all_snr
        from easytrain.train.optimizers import build_optimizer

        self.case, self.device = case, device
        on_cpu = device.type == "cpu"
        # fp16 autocast needs a GPU; the CPU smoke test then runs in fp32, as the loop does
        precision = "no" if on_cpu and case.precision == "fp16" else case.precision
        self.precision = precision
        parts = ARCHS[args.arch].build(device, DTYPES[precision], batch=case.batch, resolution=args.resolution,
                                       dim=args.dim, alpha=args.alpha)
        self.parts, self.network, self.noise_scheduler = parts, parts.network, parts.noise_scheduler
        if case.checkpointing:
            parts.set_checkpointing(True)
        if case.channels_last:
            parts.unet.to(memory_format=torch.channels_last)
        for module in parts.trained:
            module.train()
        self.attention = parts.attention
        built = build_optimizer(getattr(args, "optimizer", "AdamW8bit"), self.network.parameter_groups(1e-4, 5e-5),
                                device=device)
        self.optimizer_name = built.name
        AcceleratorState._reset_state(reset_partial_state=False)
        self.accelerator = Accelerator(mixed_precision=precision, cpu=on_cpu)
        *_, self.optimizer = self.accelerator.prepare(*parts.trained, built.optimizer)
        self.unet = parts.unet
        self.forward_unet = torch.compile(self.unet) if case.compile else self.unet
        self.snr = all_snr(self.noise_scheduler).to(device)
        self.rng = torch.Generator(device=device).manual_seed(2)
        side = args.resolution // 8
        self.latents = torch.randn((case.batch, 4, side, side), generator=self.rng, device=device)
        self.loss_weights = torch.ones(case.batch)
        self.trainable = self.network.trainable_parameters()

    def step(self) -> torch.Tensor:
        """The loop's training_step on a cached-latent batch (conditioning as the architecture's trainer does)."""
        from easytrain.families.ddpm.diffusion import diffusion_loss, sample_noise, sample_timesteps, training_target

        device, scheduler = self.device, self.noise_scheduler
        latents = self.latents * self.parts.latent_scale
        if self.case.channels_last:
            latents = latents.contiguous(memory_format=torch.channels_last)
        noise = sample_noise(latents, 0.0, self.rng)
        timesteps = sample_timesteps(latents.shape[0], scheduler.config.num_train_timesteps, device, self.rng)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        with self.accelerator.autocast():
            pred = self.forward_unet(noisy, timesteps, **self.parts.condition()).sample
        target = training_target(scheduler, latents, noise, timesteps, "epsilon")
        loss = diffusion_loss(pred, target, timesteps, loss_weights=self.loss_weights.to(device), snr=self.snr,
                              min_snr_gamma=5.0, prediction_type="epsilon")
        self.accelerator.backward(loss)
        self.accelerator.clip_grad_norm_(self.trainable, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def count_flops(self) -> float:
        """Model FLOPs of one step: eager, gradient checkpointing off (no recomputation counted)."""
        from torch.utils.flop_counter import FlopCounterMode

        compiled, self.forward_unet = self.forward_unet, self.unet
        if self.case.checkpointing:
            self.parts.set_checkpointing(False)
        try:
            with FlopCounterMode(display=False) as counter:
                self.step()
            return float(counter.get_total_flops())
        finally:
            self.forward_unet = compiled
            if self.case.checkpointing:
                self.parts.set_checkpointing(True)


def text_encoder_checkpointing(text_encoder, on: bool) -> None:
    """As the loop does it: non-reentrant, through the transformers 5 API where it exists."""
    kwargs = {"use_reentrant": False}
    if hasattr(text_encoder, "activation_checkpointing_enable"):
        if on:
            text_encoder.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            text_encoder.activation_checkpointing_disable()
    elif on:
        text_encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        text_encoder.gradient_checkpointing_disable()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_case(case: Case, device: torch.device, args, *, count_flops: bool = True) -> Result:
    trainer = Trainer(case, device, args)
    flops = trainer.count_flops() if count_flops else None
    synchronize(device)
    start = time.perf_counter()
    trainer.step()
    synchronize(device)
    first = time.perf_counter() - start
    for _ in range(args.warmup):
        trainer.step()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses = []
    start = time.perf_counter()
    for _ in range(args.steps):
        losses.append(trainer.step())
    synchronize(device)
    seconds = (time.perf_counter() - start) / max(1, args.steps)
    if not all(torch.isfinite(torch.stack(losses)).tolist()):
        print(f"  note: non-finite loss in {case}; fp16 steps may have been skipped by the scaler")
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    reserved = torch.cuda.max_memory_reserved(device) if device.type == "cuda" else 0
    result = Result(case, seconds, case.batch / seconds, peak, reserved, flops, first, trainer.attention,
                    trainer.optimizer_name)
    del trainer
    release(device)
    return result


def release(device: torch.device) -> None:
    """Free a finished case's models before the next case builds its own.

    accelerate wraps each prepared model's forward in a method bound to the model (a reference cycle), so
    ``del trainer`` alone frees nothing until the cyclic collector runs: collect now, then hand the cached
    blocks back, or the next case's peak would count the last one's weights.
    """
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def describe(case: Case) -> str:
    parts = [case.precision, f"batch {case.batch}", "checkpointing" if case.checkpointing else "no checkpointing"]
    if case.compile:
        parts.append("torch.compile")
    if case.channels_last:
        parts.append("channels_last")
    return ", ".join(parts)


def report(result: Result, gpu: str, peak: float | None) -> str:
    line = (f"[{gpu}] {describe(result.case)}: {result.images_per_second:.2f} images/s, "
            f"{result.seconds_per_step:.3f} s/step, peak {result.peak_bytes / GIB:.2f} GiB")
    if result.flops_per_step is not None:
        achieved = result.flops_per_step / result.seconds_per_step
        line += f", {result.flops_per_step / 1e12:.2f} TFLOP/step, {achieved / 1e12:.1f} TFLOP/s"
        line += f", MFU {achieved / peak:.1%}" if peak else ", MFU n/a (GPU not in the table)"
    line += f" (first step {result.first_step_seconds:.1f} s)"
    return line


def memory_estimate(args, bench: ArchBench, precision: str):
    """easytrain/memory_estimate.py's figure for the memory case, to set beside the measured peak."""
    from easytrain.memory_estimate import TrainingSetup, estimate

    return estimate(TrainingSetup(
        arch=args.arch, width=args.resolution, height=args.resolution, batch=1, mixed_precision=precision,
        optimizer=getattr(args, "optimizer", "AdamW8bit"), network_type="LoRA", dim=args.dim, conv_dim=None,
        train_unet=True,
        train_text_encoder=bench.trains_text_encoder, checkpointing=True, latents_cached=True,
        text_outputs_cached=not bench.trains_text_encoder))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps after the first")
    parser.add_argument("--arch", choices=sorted(ARCHS), default="sd1")
    parser.add_argument("--resolution", type=int, help="default: 512 for sd1, 1024 for sdxl")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--precision", nargs="+", default=["fp16", "bf16"], choices=["fp16", "bf16"])
    parser.add_argument("--optimizer", default="AdamW8bit",
                        help="as easytrain names it: AdamW8bit (default), AdamW (fused on a GPU), Lion8bit, ...")
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=8.0)
    parser.add_argument("--no-checkpointing", action="store_true", help="gradient checkpointing off")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    parser.add_argument("--channels-last", action="store_true", help="UNet and latents in channels_last")
    parser.add_argument("--only", choices=["all", "speed", "6gb", "12gb"], default="all",
                        help="6gb and 12gb both mean the memory case: 6 GB for sd1, 12 GB for sdxl")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu for a smoke test")
    args = parser.parse_args(argv)
    bench = ARCHS[args.arch]
    args.resolution = args.resolution or bench.resolution

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench/gpu_step.py needs a CUDA GPU and none is visible to torch "
              f"(torch {torch.__version__}, cuda {torch.version.cuda}); nothing was measured.")
        return 2
    device = torch.device(args.device)
    if device.type == "cuda":
        gpu = torch.cuda.get_device_name(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        gpu = f"CPU smoke test, {os.cpu_count()} cores"
    peak = peak_flops(gpu) if device.type == "cuda" else None
    print(f"device: {gpu}; torch {torch.__version__}, cuda {torch.version.cuda}; "
          f"peak dense fp16/bf16: {peak / 1e12:.0f} TFLOP/s" if peak else
          f"device: {gpu}; torch {torch.__version__}; peak FLOP/s unknown")
    print(f"{bench.label}, random weights, {args.resolution} px (latents 4x{args.resolution // 8}"
          f"x{args.resolution // 8}, cached), LoRA dim {args.dim} alpha {args.alpha} on {bench.network_parts}, "
          f"{args.optimizer}, {args.warmup} warm-up + {args.steps} timed steps")

    if args.only in ("all", "speed"):
        for precision in args.precision:
            if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
                print(f"[{gpu}] bf16: not supported on this GPU; skipped")
                continue
            for batch in args.batch:
                case = Case(precision, batch, not args.no_checkpointing, args.compile, args.channels_last)
                try:
                    result = run_case(case, device, args)
                except torch.cuda.OutOfMemoryError:
                    print(f"[{gpu}] {describe(case)}: out of GPU memory")
                    torch.cuda.empty_cache()
                    continue
                if case == Case(args.precision[0], args.batch[0], not args.no_checkpointing,
                                args.compile, args.channels_last):
                    print(f"[{gpu}] attention: {result.attention}; optimizer: {result.optimizer}")
                print(report(result, gpu, peak), flush=True)

    if args.only in ("all", "6gb", "12gb"):
        case = Case("fp16", 1, True, args.compile, args.channels_last)
        result = run_case(case, device, args, count_flops=False)
        budget = bench.budget_gib
        verdict = "PASS" if result.peak_bytes <= budget * GIB else "FAIL"
        if device.type != "cuda":
            verdict = "not measured on the CPU"
        cached = "cached latents and text-encoder outputs" if not bench.trains_text_encoder else "cached latents"
        print(f"[{gpu}] {budget} GB case (fp16, batch 1, AdamW8bit, {cached}, gradient checkpointing): "
              f"peak allocated {result.peak_bytes / GIB:.2f} GiB of {budget} GiB: {verdict} "
              f"(peak reserved {result.reserved_bytes / GIB:.2f} GiB); {result.seconds_per_step:.3f} s/step")
        if args.arch not in ESTIMATED:
            return 0
        found = memory_estimate(args, bench, "fp16" if device.type == "cuda" else "no")
        print(f"  easytrain's estimate of the same tensors: {found.tensors / GIB:.2f} GiB "
              f"({found.total_gib:.2f} GiB with its allowance for the CUDA context, workspaces and the allocator)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

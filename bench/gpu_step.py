"""Benchmark: LoRA training steps on the full-size SD1.5 architecture on a GPU.

    .venv/bin/python bench/gpu_step.py [--steps 20] [--warmup 5] [--no-checkpointing] [--compile]
                                       [--channels-last] [--only all|speed|6gb] [--batch 1 4]
                                       [--precision fp16 bf16] [--resolution 512]

The UNet and CLIP text encoder are built from easytrain's shipped SD1 configs
on the meta device and materialised on the GPU with PyTorch's default random
initialisation: nothing is downloaded. Latents are random 4x(res/8)x(res/8)
tensors, as if cached, so the VAE is not on the GPU. The step is the
trainer's: easytrain's LoRA network (dim 16, alpha 8, UNet and text encoder)
through network.apply_network, AdamW8bit from train.optimizers, captions
through arch.clip_text (225 tokens, clip skip 2), noise, timesteps and the
min-SNR loss from train.diffusion, all under an accelerate Accelerator with
the mixed precision (fp16 with its gradient scaler), gradient clipping 1.0.

Printed per case, each with the GPU's name: images/s, s/step, peak GPU memory
(torch.cuda.max_memory_allocated over the timed steps, weights included),
and model FLOPs utilisation: the FLOPs of one step counted with
torch.utils.flop_counter.FlopCounterMode (forward and backward, without the
recomputation gradient checkpointing adds), per second, over the GPU's peak
dense fp16/bf16 tensor FLOP/s from the table below. Then the 6 GB case:
batch 1, fp16, AdamW8bit, cached latents, gradient checkpointing on, its
peak allocated memory and PASS/FAIL against 6 GiB.

`--device cpu` runs the same code on the CPU as a smoke test (tiny sizes
only: try --resolution 64 --steps 1 --warmup 0 --precision bf16 --batch 1).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

GIB = 1024 ** 3
SIX_GIB = 6 * GIB
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

    from easytrain.model.load import CONFIG_ROOT, load_clip_tokenizer, make_noise_scheduler
    from easytrain.model.quiet import quiet_model_libraries

    quiet_model_libraries()
    folder = CONFIG_ROOT / "sd1"
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(str(folder / "text_encoder")))
    torch.manual_seed(0)
    for model in (unet, text_encoder):
        materialise(model, device)
        model.requires_grad_(False)
    return unet, text_encoder, load_clip_tokenizer(), make_noise_scheduler("epsilon")


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

    def __init__(self, case: Case, device: torch.device, resolution: int, dim: int, alpha: float):
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState

        from easytrain.network.build import apply_network
        from easytrain.network.spec import NetworkSpec
        from easytrain.train.diffusion import all_snr
        from easytrain.train.optimizers import build_optimizer

        self.case, self.device = case, device
        on_cpu = device.type == "cpu"
        # fp16 autocast needs a GPU; the CPU smoke test then runs in fp32, as the loop does
        precision = "no" if on_cpu and case.precision == "fp16" else case.precision
        weight_dtype = DTYPES[precision]
        unet, text_encoder, self.tokenizer, self.noise_scheduler = build_sd15(device)
        self.network = apply_network(unet, text_encoder, NetworkSpec("LoRA", dim, alpha), seed=0)
        self.network.cast_base(weight_dtype)
        if case.checkpointing:
            unet.enable_gradient_checkpointing()
            text_encoder_checkpointing(text_encoder, True)
        if case.channels_last:
            unet.to(memory_format=torch.channels_last)
        unet.train()
        text_encoder.train()
        self.attention = ", ".join(sorted({type(p).__name__ for p in unet.attn_processors.values()})) + \
            f"; text encoder {text_encoder.config._attn_implementation}"
        built = build_optimizer("AdamW8bit", self.network.parameter_groups(1e-4, 5e-5), device=device)
        self.optimizer_name = built.name
        AcceleratorState._reset_state(reset_partial_state=False)
        self.accelerator = Accelerator(mixed_precision=precision, cpu=on_cpu)
        self.unet, self.text_encoder, self.optimizer = self.accelerator.prepare(unet, text_encoder, built.optimizer)
        self.forward_unet = torch.compile(self.unet) if case.compile else self.unet
        self.snr = all_snr(self.noise_scheduler).to(device)
        self.rng = torch.Generator(device=device).manual_seed(2)
        side = resolution // 8
        self.latents = torch.randn((case.batch, 4, side, side), generator=self.rng, device=device)
        self.captions = [CAPTION] * case.batch
        self.loss_weights = torch.ones(case.batch)
        self.trainable = self.network.trainable_parameters()

    def step(self) -> torch.Tensor:
        """The loop's training_step on a cached-latent batch (tokenizing as the loop does)."""
        from easytrain.train.diffusion import diffusion_loss, sample_noise, sample_timesteps, training_target
        from easytrain.arch.clip_text import encode_tokens, tokenize_captions

        device, scheduler = self.device, self.noise_scheduler
        latents = self.latents * 0.18215
        if self.case.channels_last:
            latents = latents.contiguous(memory_format=torch.channels_last)
        noise = sample_noise(latents, 0.0, self.rng)
        timesteps = sample_timesteps(latents.shape[0], scheduler.config.num_train_timesteps, device, self.rng)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        input_ids = tokenize_captions(self.tokenizer, self.captions, 225).to(device)
        with self.accelerator.autocast():
            states = encode_tokens(self.text_encoder, input_ids, 2)
            pred = self.forward_unet(noisy, timesteps, states).sample
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

        unet = self.accelerator.unwrap_model(self.unet)
        text_encoder = self.accelerator.unwrap_model(self.text_encoder)
        compiled, self.forward_unet = self.forward_unet, self.unet
        if self.case.checkpointing:
            unet.disable_gradient_checkpointing()
            text_encoder_checkpointing(text_encoder, False)
        try:
            with FlopCounterMode(display=False) as counter:
                self.step()
            return float(counter.get_total_flops())
        finally:
            self.forward_unet = compiled
            if self.case.checkpointing:
                unet.enable_gradient_checkpointing()
                text_encoder_checkpointing(text_encoder, True)


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
    trainer = Trainer(case, device, args.resolution, args.dim, args.alpha)
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
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps after the first")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--precision", nargs="+", default=["fp16", "bf16"], choices=["fp16", "bf16"])
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=8.0)
    parser.add_argument("--no-checkpointing", action="store_true", help="gradient checkpointing off")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    parser.add_argument("--channels-last", action="store_true", help="UNet and latents in channels_last")
    parser.add_argument("--only", choices=["all", "speed", "6gb"], default="all")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu for a smoke test")
    args = parser.parse_args(argv)

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
    print(f"SD1.5 UNet + text encoder, random weights, {args.resolution} px (latents 4x{args.resolution // 8}"
          f"x{args.resolution // 8}, cached), LoRA dim {args.dim} alpha {args.alpha} on UNet and text encoder, "
          f"AdamW8bit, 225-token captions, {args.warmup} warm-up + {args.steps} timed steps")

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

    if args.only in ("all", "6gb"):
        case = Case("fp16", 1, True, args.compile, args.channels_last)
        result = run_case(case, device, args, count_flops=False)
        verdict = "PASS" if result.peak_bytes <= SIX_GIB else "FAIL"
        if device.type != "cuda":
            verdict = "not measured on the CPU"
        print(f"[{gpu}] 6 GB case (fp16, batch 1, AdamW8bit, cached latents, gradient checkpointing): "
              f"peak allocated {result.peak_bytes / GIB:.2f} GiB of 6 GiB: {verdict} "
              f"(peak reserved {result.reserved_bytes / GIB:.2f} GiB); {result.seconds_per_step:.3f} s/step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Device and precision set-up of a run: the accelerator, dtypes, checkpointing, torch.compile, processes."""

from __future__ import annotations

import logging
import math

import torch

from easytrain.train import device_checks
from easytrain.train import events as ev

log = logging.getLogger(__name__)

OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
SAVE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "float": torch.float32}


def make_accelerator(mixed_precision: str, emit, unused_parameters: bool = False):
    """An Accelerator for this run; fp16 falls back to fp32 where there is no GPU."""
    from accelerate import Accelerator, PartialState
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs, parse_flag_from_env

    # Without a GPU, a distributed launch (torchrun, accelerate launch) runs on CPU processes over gloo.
    asked_for_cpu = parse_flag_from_env("ACCELERATE_USE_CPU")
    cpu = asked_for_cpu or not torch.cuda.is_available()
    if cpu and not asked_for_cpu:
        # nvidia-smi sees a GPU that this torch cannot use (a CPU wheel, a wheel newer than the driver): say so
        mismatch = device_checks.cuda_mismatch()
        if mismatch:
            emit(ev.Message(mismatch, "warning"))
    device = PartialState(cpu=cpu).device
    if device_checks.enable_tf32(device):
        log.info("TF32 matmuls enabled on %s", device)
    if mixed_precision == "fp16" and device.type == "cpu":
        emit(ev.Message("fp16 mixed precision needs a GPU; training in fp32 on the CPU "
                        "(bf16 also works on the CPU)", "warning"))
        mixed_precision = "no"
    # Several runs in one process (a queue, the tests) may each pick a precision;
    # the process group (PartialState) stays as it is.
    AcceleratorState._reset_state(reset_partial_state=False)
    ddp = DistributedDataParallelKwargs(find_unused_parameters=unused_parameters)
    return (Accelerator(mixed_precision=mixed_precision, gradient_accumulation_steps=1, cpu=cpu,
                        kwargs_handlers=[ddp]), mixed_precision)


VAE_PIXELS_PER_BATCH = 1024 * 1024  # latent caching encodes in fp32: at most one SDXL-size picture at a time


def vae_batch_size(resolution: tuple[int, int], batch_size: int) -> int:
    """Pictures per VAE call while caching latents: the batch, fewer for big pictures (kohya's vae_batch_size)."""
    width, height = resolution
    return max(1, min(int(batch_size), VAE_PIXELS_PER_BATCH // max(1, width * height)))


def checkpoint_text_encoder(text_encoder) -> None:
    # Non-reentrant: the frozen embeddings feed no grad into the checkpointed layers,
    # and the reentrant variant would then drop the adapters' gradients.
    kwargs = {"use_reentrant": False}
    if hasattr(text_encoder, "activation_checkpointing_enable"):      # transformers >= 5.x
        text_encoder.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        text_encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def process_share(batches: list, rank: int, world: int) -> list:
    """This process's batches: every world-th one, padded by wrapping so all processes step equally."""
    if world == 1:
        return batches
    per_process = math.ceil(len(batches) / world)
    padded = batches + batches[: per_process * world - len(batches)]
    return padded[rank::world]


def device_text(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def empty_device_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def gather_objects(obj) -> list:
    from accelerate.utils import gather_object

    return gather_object([obj])


def agree(stop: bool, save: bool, world: int, device: torch.device) -> tuple[bool, bool]:
    """Every process must stop or save at the same step (or the next collective hangs): OR the flags."""
    if world == 1:
        return stop, save
    import torch.distributed as dist

    flags = torch.tensor([int(stop), int(save)], device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    stop_all, save_all = (bool(v) for v in flags.tolist())
    return stop_all, save_all


def compiled(unet, emit):
    """torch.compile(unet), or unet itself with a message when compiling is not possible here."""
    try:
        emit(ev.Message("torch_compile: compiling the UNet (the first step takes longer)"))
        return torch.compile(unet)
    except Exception as exc:  # compile is an optional speed-up: say why and train uncompiled
        emit(ev.Message(f"torch_compile failed ({type(exc).__name__}: {str(exc)[:200]}); training uncompiled",
                        "warning"))
        return unet


def compiled_step(training_step, batch, compiled_unet, unet, emit, optimizer, generators):
    """A step with the compiled UNet; on a compiler failure, redo it uncompiled and train uncompiled from then on.

    Compilation happens at the first step, and again at any later step that brings a shape the compiled graph
    has not seen (another bucket, a last smaller batch): every compiled step is guarded, not only the first.
    A compiler error is raised before the graph runs, so the failed attempt left no gradients behind.
    """
    saved = [g.get_state() for g in generators]
    try:
        return training_step(batch, compiled_unet), compiled_unet
    except OUT_OF_MEMORY:
        raise
    except Exception as exc:  # a compiler error; the eager module computes the same thing
        log.warning("torch.compile failed", exc_info=True)
        emit(ev.Message(f"torch_compile failed ({type(exc).__name__}: {str(exc).strip()[:200]}); "
                        "training uncompiled", "warning"))
    for generator, state in zip(generators, saved):
        generator.set_state(state)
    # no zero_grad: with gradient accumulation it would drop the window's earlier batches
    return training_step(batch, unet), unet

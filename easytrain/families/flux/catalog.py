"""Flux.1 dev / schnell and Chroma as the catalog lists them, their block layout and memory (light)."""

from __future__ import annotations

from easytrain.families.flux.metadata import IMPL_CHROMA, IMPL_FLUX
from easytrain.families.spec import Architecture
from easytrain.network.blocks import BlockLayout

# kohya's lora_flux numbers no blocks for block-wise learning rates or dims: none are offered.
FLUX_BLOCKS = BlockLayout("flux", "Flux.1 / Chroma", side=0, mid=0, edge=0,
                          parts="no block-wise settings on Flux", index=lambda kohya_name: -1)

_FLUX = dict(memory_factor=6.0, always_checkpoint=True, bucket_range=(256, 2048), trains_text_encoder=False,
             unet_lr=1e-4, block_layout="flux", uses_clip_skip=False, denoiser="transformer",
             webui=("Forge", "stable-diffusion-webui-forge/models/Lora"),   # AUTOMATIC1111 runs no Flux
             # min-SNR weighs by a DDPM schedule's SNR and Huber's snr schedule reads its alphas: off on Flux
             question_defaults=(("min_snr_gamma", 0.0), ("huber_schedule", "constant")))
ARCHITECTURES = (
    Architecture("flux-dev", "Flux.1 [dev]", "flux", "flow", 1024, "flux1", "flux-1-dev", False, IMPL_FLUX,
                 legacy_flags=frozenset({"flux1_checkbox"}), **_FLUX),
    Architecture("flux-schnell", "Flux.1 [schnell]", "flux", "flow", 1024, "flux1", "flux-1-schnell", False,
                 IMPL_FLUX, **_FLUX),
    Architecture("chroma", "Chroma", "flux", "flow", 1024, "chroma", "chroma", False, IMPL_CHROMA, **_FLUX),
)

BLOCK_LAYOUTS = (FLUX_BLOCKS,)

# Flux's memory is estimated per lever (fp8 base, block swap) by its own table (memory.py): see estimate_plan.
MEMORY: dict = {}


def estimate_plan(plan, arch: str):
    """check's memory estimate for a Flux plan, with the levers it sets (memory.py; imported when asked)."""
    from easytrain.families.flux.memory import FluxSetup, estimate, memory_for
    from easytrain.families.flux.options import variant_of

    options = plan.model.options
    width, height = plan.resolution
    return estimate(FluxSetup(
        width=width, height=height, batch=plan.data.batch_size, dim=plan.network.dim,
        network_type=plan.network.network_type, optimizer=plan.optimizer.name,
        fp8_base=bool(options.get("fp8_base")), blocks_to_swap=int(options.get("blocks_to_swap") or 0),
        checkpointing=plan.precision.gradient_checkpointing,
        train_clip=plan.network.train_text_encoder and arch != "chroma",
        train_t5=plan.network.train_text_encoder and (bool(options.get("train_t5")) or arch == "chroma"),
        text_outputs_cached=plan.text_outputs_cached,
        latents_cached=plan.data.cache_latents != "off" and not plan.pixels_vary,
        label=next(a.label for a in ARCHITECTURES if a.id == arch)), memory_for(variant_of(arch)))


def denoiser_parameters(arch: str) -> int:
    """The full-size transformer's parameter count (memory.py's trace), for run_estimate's full-size test."""
    from easytrain.families.flux.memory import memory_for
    from easytrain.families.flux.options import variant_of

    return memory_for(variant_of(arch)).parameters["transformer"]


def estimate_lines(plan, arch: str, gpu_gib) -> list[str]:
    """The levers' estimates at the plan's size, so `check` shows what each would need."""
    from easytrain.families.flux.memory import lever_lines, memory_for
    from easytrain.families.flux.options import variant_of

    width, height = plan.resolution
    return lever_lines(width, height, batch=plan.data.batch_size, dim=plan.network.dim, gpu_gib=gpu_gib,
                       memory=memory_for(variant_of(arch)))


def refused(plan, arch: str) -> list[str]:
    """The plan's settings the Flux trainer refuses, one line each (checks.py; the plan raises them at once)."""
    from easytrain.families.flux.checks import refused as flux_refused

    return flux_refused(plan, arch)


def plan_warnings(plan, arch: str) -> list[str]:
    """The plan's settings a Flux run would silently not use (checks.py)."""
    from easytrain.families.flux.checks import plan_warnings as flux_warnings

    return flux_warnings(plan, arch)


def clip_skip_reason(arch: str) -> str:
    from easytrain.families.flux.checks import clip_skip_reason as reason

    return reason(arch)


def model_lines(plan, arch: str) -> list[str]:
    """check's lines about the files the model loads with (its companions, the T5 tokenizer)."""
    from easytrain.families.flux.checks import model_lines as lines

    return lines(plan, arch)


# kohya's network module for Flux LoRAs (networks/lora_flux.py): a known one when a kohya file names it.
LEGACY_NETWORK_MODULES = ("networks.lora_flux",)


def import_legacy(data, convert, from_toml: bool, arch=None):
    """kohya's Flux arguments of a kohya TOML / kohya_ss GUI file as our answers (legacy.py; families/flux/legacy.py)."""
    from easytrain.families.flux.legacy import import_legacy as flux_import

    return flux_import(data, convert, from_toml, arch)

"""The GPU memory a training run needs, estimated from the plan: no GPU and no torch.

Derived, not guessed: bench/memory_trace.py traces one LoRA step of each
full-size architecture on PyTorch's meta device (shapes and dtypes, no data)
and prints the MEMORY table below; tests/test_memory_estimate.py re-runs the
trace and fails when the table is stale. No GPU has confirmed these figures
yet: bench/gpu_step.py measures them (docs/PERFORMANCE.md).

The estimate adds up
- the frozen weights in the weight dtype (2 bytes with fp16/bf16 mixed precision,
  4 without): the UNet; the text encoders unless their outputs are cached (they
  are trained, or captions vary between epochs); the VAE only when latents are
  not cached (counted in fp32, as SDXL's encodes);
- the network's parameters and their gradients in fp32, the optimizer's state
  (OPTIMIZER_STATE_BYTES) and an EMA copy when asked for;
- the activations: the traced bytes per pixel times pixels x batch, the trained
  text encoders' per caption, or the VAE's encode peak when latents are not
  cached and it is the larger (it comes before the UNet's step);
- a margin for what a trace cannot see: the CUDA context, cuBLAS/cuDNN
  workspaces and the caching allocator's fragmentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from easytrain.catalog import ARCHITECTURES, architecture_label
from easytrain.families.registry import family_memory
from easytrain.families.spec import ArchitectureMemory

GIB = 1024 ** 3
MARGIN_GIB = 0.75        # CUDA context (~0.3-0.5 GiB) and cuBLAS/cuDNN workspaces, outside PyTorch's own count
MARGIN_FRACTION = 0.10   # the caching allocator reserves more than it hands out (fragmentation)

# Bytes of optimizer state per trained parameter (fp32 unless 8-bit).
OPTIMIZER_STATE_BYTES: dict[str, float] = {
    "AdamW8bit": 2.0,     # two 8-bit moments (bitsandbytes; block scales are negligible)
    "AdamW": 8.0,         # two fp32 moments
    "Lion": 4.0,          # one fp32 moment
    "Lion8bit": 1.0,
    "Prodigy": 16.0,      # two moments, the initial weights p0 and s
    "DAdaptAdam": 12.0,   # two moments and s
    "SGDNesterov": 4.0,   # the momentum buffer
    "Adafactor": 0.5,     # factored second moment (rows + columns), no first moment
}
# Parameters per unit of dim, relative to LoRA's down + up pair: LoHa holds two pairs; LoKr at most one.
NETWORK_SIZE_FACTOR: dict[str, float] = {"LoRA": 1.0, "LoCon": 1.0, "LoHa": 2.0, "LoKr": 1.0}


# Each family's traced entries (families/<family>/catalog.py); an architecture built from another's configs shares its entry.
MEMORY: dict[str, ArchitectureMemory] = family_memory()
MEMORY.update({a.id: MEMORY[a.same_models_as] for a in ARCHITECTURES.values() if a.same_models_as})


@dataclass(frozen=True)
class TrainingSetup:
    """The settings that decide a step's memory."""

    arch: str
    width: int
    height: int
    batch: int
    mixed_precision: str            # "fp16" | "bf16" | "no"
    optimizer: str
    network_type: str
    dim: int
    conv_dim: Optional[int]
    train_unet: bool
    train_text_encoder: bool
    checkpointing: bool
    latents_cached: bool
    text_outputs_cached: bool       # encoded once before the first step; the encoders then leave the GPU
    ema: bool = False

    def describe(self) -> str:
        parts = [f"{architecture_label(self.arch)} at {self.width}x{self.height}", f"batch {self.batch}",
                 self.mixed_precision if self.mixed_precision != "no" else "fp32", self.optimizer,
                 "checkpointing" if self.checkpointing else "no checkpointing"]
        if not self.latents_cached:
            parts.append("latents not cached")
        if self.text_outputs_cached:
            parts.append("text-encoder outputs cached")
        return ", ".join(parts)


@dataclass(frozen=True)
class MemoryEstimate:
    setup: TrainingSetup
    parts: tuple[tuple[str, float], ...]   # (what, bytes), in the order shown
    margin: float

    @property
    def tensors(self) -> float:
        """What PyTorch itself allocates at the peak (torch.cuda.max_memory_allocated)."""
        return sum(size for _, size in self.parts)

    @property
    def total(self) -> float:
        return self.tensors + self.margin

    @property
    def total_gib(self) -> float:
        return self.total / GIB

    def lines(self) -> list[str]:
        """What `check` prints: the total, what it is made of, and what it is not."""
        parts = " + ".join(f"{what} {size / GIB:.2f}" for what, size in self.parts if size)
        return [f"GPU memory: about {self.total_gib:.1f} GiB estimated for {self.setup.describe()}",
                f"  {parts} GiB",
                f"  + {self.margin / GIB:.2f} GiB for the CUDA context, workspaces and allocator; an estimate no GPU "
                "has confirmed yet (docs/PERFORMANCE.md)"]


def weight_bytes(mixed_precision: str) -> int:
    return 4 if mixed_precision == "no" else 2


def trace_precision(mixed_precision: str) -> str:
    return "no" if mixed_precision == "no" else "fp16"


def network_parameters(memory: ArchitectureMemory, setup: TrainingSetup) -> float:
    per_dim = memory.lora_per_dim
    count = 0.0
    if setup.train_unet:
        count += per_dim["unet"] * setup.dim
        if setup.network_type != "LoRA" and setup.conv_dim:
            count += per_dim["unet_convs"] * setup.conv_dim
    if setup.train_text_encoder:
        count += sum(per_dim[part] for part in memory.text_encoders) * setup.dim
    return count * NETWORK_SIZE_FACTOR.get(setup.network_type, 1.0)


def estimate(setup: TrainingSetup) -> MemoryEstimate:
    memory = MEMORY[setup.arch]
    size = weight_bytes(setup.mixed_precision)
    precision = trace_precision(setup.mixed_precision)
    params = memory.parameters
    encoders_on_gpu = not setup.text_outputs_cached or setup.train_text_encoder
    encoders = memory.text_encoders
    weights = [("UNet", params["unet"] * size),
               ("text encoders" if len(encoders) > 1 else "text encoder",
                sum(params[p] for p in encoders) * size if encoders_on_gpu else 0),
               ("VAE", 0 if setup.latents_cached else params["vae"] * 4)]
    trained = network_parameters(memory, setup)
    state = 4 + 4 + OPTIMIZER_STATE_BYTES.get(setup.optimizer, 8.0) + (4 if setup.ema else 0)
    pixels = setup.width * setup.height * setup.batch
    activations = memory.activation_bytes_per_pixel[(precision, setup.checkpointing)] * pixels
    if setup.train_text_encoder:
        activations += memory.text_activation_bytes[(precision, setup.checkpointing)] * setup.batch
    if not setup.latents_cached:
        activations = max(activations, memory.vae_encode_bytes_per_pixel * pixels)
    parts = (*weights, (f"{setup.network_type}, gradients and {setup.optimizer} state", trained * state),
             ("activations", activations))
    return MemoryEstimate(setup, parts, MARGIN_GIB * GIB + MARGIN_FRACTION * sum(s for _, s in parts))


def setup_for_plan(plan, arch: str) -> TrainingSetup:
    """The memory-relevant settings of a TrainPlan (duck-typed: plan.py imports nothing from here)."""
    width, height = plan.resolution
    return TrainingSetup(
        arch=arch, width=width, height=height, batch=plan.data.batch_size, mixed_precision=plan.precision.mixed_precision,
        optimizer=plan.optimizer.name, network_type=plan.network.network_type, dim=plan.network.dim,
        conv_dim=plan.network.conv_dim, train_unet=plan.network.train_unet, train_text_encoder=plan.network.train_text_encoder,
        checkpointing=plan.precision.gradient_checkpointing,
        latents_cached=plan.data.cache_latents != "off" and not plan.pixels_vary,
        text_outputs_cached=plan.text_outputs_cached,
        ema=plan.saving.ema_decay > 0)


def over_memory_warning(found: MemoryEstimate, gpu_name: str, gpu_gib: float) -> Optional[str]:
    """A warning when the estimate exceeds the GPU's memory, with what would lower it; None when it fits."""
    if found.total_gib <= gpu_gib:
        return None
    setup = found.setup
    ways = []
    if not setup.checkpointing:
        ways.append("gradient_checkpointing: true")
    if setup.batch > 1:
        ways.append("a smaller batch_size")
    if OPTIMIZER_STATE_BYTES.get(setup.optimizer, 8.0) > OPTIMIZER_STATE_BYTES["AdamW8bit"]:
        ways.append("optimizer AdamW8bit")
    if setup.train_text_encoder:
        ways.append("train_parts: unet_only")
    ways.append("a lower resolution")
    return (f"GPU memory: about {found.total_gib:.1f} GiB estimated, more than the {gpu_gib:.0f} GiB of "
            f"{gpu_name}; try {', '.join(ways)} (an estimate: see docs/PERFORMANCE.md)")

"""The GPU memory a Flux LoRA step needs, for each memory lever: no torch at import.

The figures in FLUX_MEMORY were traced on the meta device by families/flux/memory_trace.py (one LoRA
step of full-size FLUX.1-dev, bf16 autocast, flash attention, 512 T5 tokens); tests/test_flux_memory.py
re-runs a trace and fails when the table is stale. No GPU has confirmed them yet.

The estimate adds up, as easytrain/memory_estimate.py does for the UNet families:
- the transformer's weights as stored: 2 bytes a parameter in bf16; with ``fp8_base`` the double and
  single blocks' Linear weights take 1 byte; with ``blocks_to_swap`` the swapped blocks' frozen
  weights live on the CPU (kohya's split: N // 2 double and 2 * (N - N // 2) single blocks) and one
  swapped block at a time is on the GPU;
- CLIP-L and T5-XXL only when they are trained or their outputs are not cached (kohya's default way
  caches them: T5 is encoded once before the first step and leaves the GPU); the AE only when
  latents are not cached;
- the LoRA's parameters and gradients in fp32 and the optimizer's state;
- the activations: the traced bytes at 512 and 1024 px, linear in the pixel count between and beyond
  them (the 512 text tokens are a constant part), times the batch;
- memory_estimate's margin for the CUDA context, workspaces and the allocator.
Encoding the captions needs T5 alone on the GPU first: ``text_encode_bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

from easytrain.memory_estimate import (
    GIB,
    MARGIN_FRACTION,
    MARGIN_GIB,
    NETWORK_SIZE_FACTOR,
    OPTIMIZER_STATE_BYTES,
    MemoryEstimate,
)


@dataclass(frozen=True)
class FluxMemory:
    """What memory_trace.py measured (batch 1, 512 T5 tokens)."""

    traced_sides: tuple
    parameters: Mapping[str, int]             # transformer, clip_l, t5, ae
    block_parameters: Mapping[str, int]       # one double / one single block
    block_linear_weights: Mapping[str, int]   # of those, the Linear weights (what fp8 storage halves)
    blocks: Mapping[str, int]                 # how many double / single blocks
    lora_per_dim: Mapping[str, int]           # kohya's module set at dim 1: unet (304 modules), clip_l, t5
    activation_bytes: Mapping[tuple, int]     # (side, "bf16" | "fp8", checkpointing) -> peak bytes
    label: str = "Flux.1"

    def activations(self, pixels: float, base: str, checkpointing: bool) -> float:
        """Activation bytes for ``pixels`` (per image), linear through the two traced sizes."""
        small, large = self.traced_sides
        a = self.activation_bytes[(small, base, checkpointing)]
        b = self.activation_bytes[(large, base, checkpointing)]
        slope = (b - a) / (large * large - small * small)
        return max(0.0, a + slope * (pixels - small * small))


# Printed by `python -m easytrain.families.flux.memory_trace` (Flux.1 dev; schnell has the same sizes but guidance_in).
FLUX_MEMORY = FluxMemory(  # traced by easytrain/families/flux/memory_trace.py, batch 1, 512 T5 tokens
    traced_sides=(512, 1024),
    parameters={'ae': 83819683, 'clip_l': 123060480, 't5': 4762310656, 'transformer': 11901408320},
    block_parameters={'double': 339831296, 'single': 141591808},
    block_linear_weights={'double': 339738624, 'single': 141557760},
    blocks={'double': 19, 'single': 38},
    lora_per_dim={'clip_l': 165888, 't5': 1818624, 'unet': 4786176},
    activation_bytes={(512, 'bf16', False): 14365920752,
                      (512, 'bf16', True): 945623074,
                      (512, 'fp8', False): 14365920752,
                      (512, 'fp8', True): 945623074,
                      (1024, 'bf16', False): 43111312880,
                      (1024, 'bf16', True): 2874875938,
                      (1024, 'fp8', False): 43111312880,
                      (1024, 'fp8', True): 2874875938},
)


CHROMA_MEMORY = FluxMemory(  # traced by easytrain/families/flux/memory_trace.py, batch 1, 512 T5 tokens
    traced_sides=(512, 1024),
    parameters={'ae': 83819683, 't5': 4762310656, 'transformer': 8899983424},
    block_parameters={'double': 226548224, 'single': 113271040},
    block_linear_weights={'double': 226492416, 'single': 113246208},
    blocks={'double': 19, 'single': 38},
    lora_per_dim={'t5': 1818624, 'unet': 3502080},
    activation_bytes={(512, 'bf16', False): 12227642712,
                      (512, 'bf16', True): 935350304,
                      (512, 'fp8', False): 12227642712,
                      (512, 'fp8', True): 935350304,
                      (1024, 'bf16', False): 36688553304,
                      (1024, 'bf16', True): 2826854432,
                      (1024, 'fp8', False): 36688553304,
                      (1024, 'fp8', True): 2826854432},
    label="Chroma",
)


def memory_for(variant: str) -> FluxMemory:
    """The traced table of a variant: Chroma's (8.9B, no modulation layers, no CLIP-L) or Flux.1's."""
    return CHROMA_MEMORY if variant == "chroma" else FLUX_MEMORY


def swap_counts(blocks_to_swap: int, double: int = 19, single: int = 38) -> tuple[int, int]:
    """kohya's split of blocks_to_swap into (double, single) blocks (block_swap.flux_swap_counts, without torch)."""
    n_double = blocks_to_swap // 2
    n_single = (blocks_to_swap - n_double) * 2
    if blocks_to_swap < 0 or n_double > double - 2 or n_single > single - 2:
        raise ValueError(f"blocks_to_swap {blocks_to_swap}: kohya's split allows 0 to 35 on Flux.1")
    return n_double, n_single


@dataclass(frozen=True)
class FluxSetup:
    """The settings that decide a Flux step's memory."""

    width: int
    height: int
    batch: int = 1
    dim: int = 16
    network_type: str = "LoRA"
    optimizer: str = "AdamW"
    fp8_base: bool = False
    blocks_to_swap: int = 0
    checkpointing: bool = True
    train_clip: bool = False
    train_t5: bool = False
    text_outputs_cached: bool = True
    latents_cached: bool = True
    label: str = "Flux.1"

    def describe(self) -> str:
        parts = [f"{self.label} at {self.width}x{self.height}", f"batch {self.batch}",
                 "fp8 base" if self.fp8_base else "bf16 base", self.optimizer]
        if self.blocks_to_swap:
            parts.append(f"{self.blocks_to_swap} blocks swapped")
        parts.append("checkpointing" if self.checkpointing else "no checkpointing")
        if self.text_outputs_cached and not (self.train_clip or self.train_t5):
            parts.append("text-encoder outputs cached")
        if not self.latents_cached:
            parts.append("latents not cached")
        return ", ".join(parts)


def _block_bytes(memory: FluxMemory, kind: str, fp8: bool) -> int:
    linear = memory.block_linear_weights[kind]
    return linear * (1 if fp8 else 2) + (memory.block_parameters[kind] - linear) * 2


def transformer_bytes(setup: FluxSetup, memory: FluxMemory = FLUX_MEMORY) -> int:
    """The transformer's weights on the GPU at the peak."""
    blocks = {kind: _block_bytes(memory, kind, setup.fp8_base) for kind in ("double", "single")}
    total = memory.parameters["transformer"] * 2
    total -= sum((_block_bytes(memory, kind, False) - blocks[kind]) * memory.blocks[kind] for kind in blocks)
    n_double, n_single = swap_counts(setup.blocks_to_swap, memory.blocks["double"], memory.blocks["single"])
    if n_double or n_single:
        total -= n_double * blocks["double"] + n_single * blocks["single"]
        total += blocks["double"] if n_double else blocks["single"]   # the one block moved in for its turn
    return total


def estimate(setup: FluxSetup, memory: FluxMemory = FLUX_MEMORY) -> MemoryEstimate:
    encoders = [(label, part, trained) for label, part, trained in
                (("CLIP-L", "clip_l", setup.train_clip), ("T5-XXL", "t5", setup.train_t5))
                if part in memory.parameters]   # Chroma has no CLIP-L
    weights = [("transformer", transformer_bytes(setup, memory))]
    for label, part, trained in encoders:
        on_gpu = trained or not setup.text_outputs_cached
        weights.append((label, memory.parameters[part] * 2 if on_gpu else 0))
    weights.append(("AE", 0 if setup.latents_cached else memory.parameters["ae"] * 4))
    trained = memory.lora_per_dim["unet"] * setup.dim
    trained += sum(memory.lora_per_dim[part] * setup.dim for _, part, on in encoders if on)
    trained *= NETWORK_SIZE_FACTOR.get(setup.network_type, 1.0)
    state = 4 + 4 + OPTIMIZER_STATE_BYTES.get(setup.optimizer, 8.0)
    base = "fp8" if setup.fp8_base else "bf16"
    activations = memory.activations(setup.width * setup.height, base, setup.checkpointing) * setup.batch
    parts = (*weights, (f"{setup.network_type}, gradients and {setup.optimizer} state", trained * state),
             ("activations", activations))
    return MemoryEstimate(setup, parts, MARGIN_GIB * GIB + MARGIN_FRACTION * sum(size for _, size in parts))


def text_encode_bytes(memory: FluxMemory = FLUX_MEMORY, *, t5_fp8: bool = False) -> int:
    """The weights on the GPU while the captions are encoded (T5-XXL and CLIP-L, before the first step)."""
    return memory.parameters["t5"] * (1 if t5_fp8 else 2) + memory.parameters.get("clip_l", 0) * 2


# The levers, cheapest in speed first: (name, fp8_base, blocks_to_swap, optimizer).
LEVERS = (
    ("bf16", False, 0, "AdamW"),
    ("fp8 base", True, 0, "AdamW"),
    ("fp8 base, 8-bit AdamW", True, 0, "AdamW8bit"),
    ("fp8 base, 16 blocks swapped, 8-bit AdamW", True, 16, "AdamW8bit"),
    ("fp8 base, 28 blocks swapped, 8-bit AdamW", True, 28, "AdamW8bit"),
    ("fp8 base, 35 blocks swapped, 8-bit AdamW", True, 35, "AdamW8bit"),
)


def lever_estimates(width: int, height: int, *, batch: int = 1, dim: int = 16,
                    memory: FluxMemory = FLUX_MEMORY) -> list[tuple[str, MemoryEstimate]]:
    """Each lever's estimate at this size: what ``check`` lists for Flux."""
    return [(name, estimate(FluxSetup(width, height, batch=batch, dim=dim, fp8_base=fp8, blocks_to_swap=swap,
                                      optimizer=optimizer, label=memory.label), memory))
            for name, fp8, swap, optimizer in LEVERS]


def propose_levers(gpu_gib: float, width: int, height: int, *, batch: int = 1, dim: int = 16,
                   memory: FluxMemory = FLUX_MEMORY) -> Optional[tuple[str, MemoryEstimate]]:
    """The first (fastest) lever whose estimate fits in ``gpu_gib``; None when none does."""
    for name, found in lever_estimates(width, height, batch=batch, dim=dim, memory=memory):
        if found.total_gib <= gpu_gib:
            return name, found
    return None


def lever_lines(width: int, height: int, *, batch: int = 1, dim: int = 16, gpu_gib: Optional[float] = None,
                memory: FluxMemory = FLUX_MEMORY) -> list[str]:
    """What ``check`` prints for Flux: each lever's estimate at this size, the fitting ones marked."""
    lines = [f"GPU memory for {memory.label} at {width}x{height}, batch {batch}, LoRA dim {dim} (estimates):"]
    for name, found in lever_estimates(width, height, batch=batch, dim=dim, memory=memory):
        fits = "" if gpu_gib is None else ("  fits" if found.total_gib <= gpu_gib else "  too much")
        lines.append(f"  {name:<44} {found.total_gib:5.1f} GiB{fits}")
    return lines

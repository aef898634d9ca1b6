"""The names easytrain knows, listed once, importable without torch.

The wizard, `easytrain questions`, the answers schema and the CLI read these
tables; the heavy side registers one implementation per name (optimizers in
train/optimizers.py, schedulers in train/schedulers.py, network types in
network/, architectures in arch/registry.py) and tests/test_catalog.py fails
when the two disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

OPTIMIZERS = ("AdamW8bit", "AdamW", "Lion", "Lion8bit", "Prodigy", "DAdaptAdam", "SGDNesterov", "Adafactor")
# Optimizers that estimate their own step size (learning rates of 1.0, one lr for every group).
ADAPTIVE_OPTIMIZERS = ("Prodigy", "DAdaptAdam")
ADAMW_FAMILY = ("AdamW8bit", "AdamW")

NETWORK_TYPES = ("LoRA", "LoCon", "LoHa", "LoKr")
LYCORIS_TYPES = ("LoHa", "LoKr")

SCHEDULERS = ("cosine_with_restarts", "cosine", "constant", "constant_with_warmup", "linear", "polynomial")


@dataclass(frozen=True)
class Architecture:
    """One architecture answer: how it is shown, which adapter family serves it, its file ids."""

    id: str                   # the answers value ("sd2-v")
    label: str                # what the wizard and `check` show
    family: str               # the adapter that loads and trains it (arch/registry.py)
    prediction_type: str      # what it predicts unless the file says otherwise
    resolution: int           # its native training size
    base_model_version: str   # kohya's ss_base_model_version
    modelspec: str            # modelspec.architecture without "/lora"
    v2: bool                  # kohya's ss_v2
    lora_layout: str          # modelspec.implementation: the layout of the LoRA's UNet names
    memory_factor: float = 1.0          # training memory per native-size picture, in SD1-at-512 units
    always_checkpoint: bool = False     # gradient checkpointing stays on whatever the GPU's memory
    bucket_range: tuple[int, int] = (256, 1024)   # default smallest and largest bucket side
    trains_text_encoder: bool = True               # by default (SDXL: UNet only, kohya's advice)
    unet_lr: float = 5e-4                          # the default UNet learning rate (non-adaptive optimizers)
    block_layout: str = "sd"  # kohya's block numbering for block-wise settings (network/blocks.py LAYOUTS)
    uses_clip_skip: bool = True  # SDXL always conditions on both encoders' penultimate layer
    same_models_as: str | None = None  # built from that architecture's shipped configs (only the target differs)


DIFFUSERS_LAYOUT = "diffusers"
STABILITY_LAYOUT = "https://github.com/Stability-AI/generative-models"

ARCHITECTURES: dict[str, Architecture] = {a.id: a for a in (
    Architecture("sd1", "SD1.x", "sd1", "epsilon", 512, "sd_v1", "stable-diffusion-v1", False, DIFFUSERS_LAYOUT),
    Architecture("sd2", "SD2.x 512 (epsilon)", "sd2", "epsilon", 512, "sd_v2", "stable-diffusion-v2-512", True,
                 DIFFUSERS_LAYOUT),
    Architecture("sd2-v", "SD2.x 768 (v-prediction)", "sd2", "v_prediction", 768, "sd_v2_768_v",
                 "stable-diffusion-v2-768-v", True, DIFFUSERS_LAYOUT),
    Architecture("sdxl", "SDXL", "sdxl", "epsilon", 1024, "sdxl_base_v1-0", "stable-diffusion-xl-v1-base", False,
                 STABILITY_LAYOUT, memory_factor=2.5, always_checkpoint=True, bucket_range=(512, 2048),
                 trains_text_encoder=False, block_layout="sdxl", unet_lr=2e-4,
                 uses_clip_skip=False),
    # NoobAI-style v-prediction SDXL; kohya marks it by modelspec.prediction_type "v", same base version
    Architecture("sdxl-v", "SDXL v-prediction (NoobAI v-pred)", "sdxl", "v_prediction", 1024, "sdxl_base_v1-0",
                 "stable-diffusion-xl-v1-base", False, STABILITY_LAYOUT, memory_factor=2.5, always_checkpoint=True,
                 bucket_range=(512, 2048), trains_text_encoder=False, block_layout="sdxl", unet_lr=2e-4,
                 uses_clip_skip=False, same_models_as="sdxl"),
)}
ARCHITECTURE_IDS = tuple(ARCHITECTURES)
AUTO = "auto"
TINY_MODEL_ARCH = "sd1"   # the embedded demo model is SD1-shaped
DEFAULT_RESOLUTION = 512


def architecture(arch_id: str) -> Architecture:
    """The catalog entry of an architecture answer; ValueError names the allowed ones."""
    try:
        return ARCHITECTURES[arch_id]
    except KeyError:
        raise ValueError(f"arch must be one of {', '.join(ARCHITECTURE_IDS)}, got {arch_id!r}") from None


def _entry(arch_id) -> "Architecture | None":
    """The catalog entry, or None for an unknown id or a value that is not one (a typo'd answers file)."""
    return ARCHITECTURES.get(arch_id) if isinstance(arch_id, str) else None


def architecture_label(arch_id: str | None) -> str:
    entry = _entry(arch_id)
    return entry.label if entry else "unknown"


def same_family(a: str, b: str) -> bool:
    return architecture(a).family == architecture(b).family


def family_members(arch_id: str) -> tuple[str, ...]:
    """The answers that share ``arch_id``'s adapter (e.g. sd2 and sd2-v)."""
    family = architecture(arch_id).family
    return tuple(a.id for a in ARCHITECTURES.values() if a.family == family)


def memory_factor(arch_id: str | None) -> float:
    entry = _entry(arch_id)
    return entry.memory_factor if entry else 1.0


def always_checkpoint(arch_id: str | None) -> bool:
    entry = _entry(arch_id)
    return entry.always_checkpoint if entry else False


def native_resolution(arch_id: str | None) -> int:
    entry = _entry(arch_id)
    return entry.resolution if entry else DEFAULT_RESOLUTION


def default_bucket_range(arch_id: str | None) -> tuple[int, int]:
    entry = _entry(arch_id)
    return entry.bucket_range if entry else Architecture.bucket_range


def default_unet_lr(arch_id: str | None) -> float:
    entry = _entry(arch_id)
    return entry.unet_lr if entry else Architecture.unet_lr


def trains_text_encoder_by_default(arch_id: str | None) -> bool:
    entry = _entry(arch_id)
    return entry.trains_text_encoder if entry else True


def block_layout(arch_id: str | None) -> str | None:
    """The block numbering of block-wise settings on this architecture; None for auto or an unknown one."""
    entry = _entry(arch_id)
    return entry.block_layout if entry else None


def uses_clip_skip(arch_id: str | None) -> bool:
    entry = _entry(arch_id)
    return entry.uses_clip_skip if entry else True

"""The names easytrain knows, listed once, importable without torch.

The wizard, `easytrain questions`, the answers schema and the CLI read these
tables; the heavy side registers one implementation per name (optimizers in
train/optimizers.py, schedulers in train/schedulers.py, network types in
network/, architectures in their family package under families/) and tests/test_catalog.py fails
when the two disagree.
"""

from __future__ import annotations

from easytrain.families.registry import family_architectures, family_block_layouts
from easytrain.families.spec import DIFFUSERS_LAYOUT, STABILITY_LAYOUT, Architecture  # noqa: F401  (re-exported)

OPTIMIZERS = ("AdamW8bit", "AdamW", "Lion", "Lion8bit", "Prodigy", "DAdaptAdam", "SGDNesterov", "Adafactor")
# Optimizers that estimate their own step size (learning rates of 1.0, one lr for every group).
ADAPTIVE_OPTIMIZERS = ("Prodigy", "DAdaptAdam")
ADAMW_FAMILY = ("AdamW8bit", "AdamW")

NETWORK_TYPES = ("LoRA", "LoCon", "LoHa", "LoKr")
LYCORIS_TYPES = ("LoHa", "LoKr")

SCHEDULERS = ("cosine_with_restarts", "cosine", "constant", "constant_with_warmup", "linear", "polynomial")


ARCHITECTURES: dict[str, Architecture] = {a.id: a for a in family_architectures()}
# The block numberings of block-wise settings, by the name an Architecture's block_layout gives.
BLOCK_LAYOUTS = {layout.name: layout for layout in family_block_layouts()}
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
    """The answers that share ``arch_id``'s family (e.g. sd2 and sd2-v)."""
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


def predicts_velocity(arch_id: str | None) -> bool:
    """Whether the architecture's denoiser predicts the velocity v (SD2 768-v, NoobAI v-pred)."""
    entry = _entry(arch_id)
    return entry is not None and entry.prediction_type == "v_prediction"


# modelspec.prediction_type as kohya writes it, by the prediction type a family's objective trains.
MODELSPEC_PREDICTION_TYPES = {"epsilon": "epsilon", "v_prediction": "v", "v": "v"}


LEGACY_FLAGS = tuple(sorted({flag for entry in ARCHITECTURES.values() for flag in entry.legacy_flags}))


def architecture_for_flags(flags: set[str]) -> str | None:
    """The architecture kohya's boolean flags name ("v2", "sdxl", "v_parameterization"; popup-era and kohya_ss
    files): the entry with the most of its ``legacy_flags`` among ``flags``, first in family order; None when
    only entries without flags fit (the flags name no architecture: the file says nothing about it)."""
    best = None
    for entry in ARCHITECTURES.values():
        if entry.legacy_flags <= flags and (best is None or len(entry.legacy_flags) > len(best.legacy_flags)):
            best = entry
    return best.id if best is not None and best.legacy_flags else None

"""What every family's network targets share: the Target record, kohya's naming rule, the collector.

kohya walks a model, picks container modules by class name, and adapts every
Linear and Conv2d inside them; which containers is each family's rule
(families/<family>/targets.py). Linear layers and 1x1 convs take the network
dim/alpha; larger convs take the conv dim/alpha, and are skipped when convs are
not targeted. The kohya name is the module path with "." turned into "_",
prefixed with ``lora_unet_`` (the denoiser, whatever its kind) or ``lora_te_``.
CLIP text encoders (inside their attention and MLP modules: q/k/v/out_proj,
fc1/fc2) have paths starting with ``text_model.``, as in the transformers 4
layout kohya was written against.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

UNET_PREFIX = "lora_unet"
TEXT_ENCODER_PREFIX = "lora_te"

TEXT_ENCODER_BLOCKS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "CLIPMLP")

LINEAR = "linear"
CONV_1X1 = "conv1x1"
CONV = "conv"  # any conv larger than 1x1: takes the conv dim


@dataclass(frozen=True)
class Target:
    part: str  # "unet" or "text_encoder"
    path: str  # module path inside that model, as named_modules() gives it
    kind: str  # LINEAR, CONV_1X1 or CONV
    kohya_name: str

    @property
    def uses_conv_dim(self) -> bool:
        return self.kind == CONV


def kohya_name(prefix: str, path: str) -> str:
    return f"{prefix}_{path}".replace(".", "_")


def kind_of(module: nn.Module) -> str | None:
    if isinstance(module, nn.Linear):
        return LINEAR
    if isinstance(module, nn.Conv2d):
        return CONV_1X1 if tuple(module.kernel_size) == (1, 1) else CONV
    return None


def collect(model: nn.Module, block_names: tuple[str, ...], *, with_convs: bool) -> list[tuple[str, str]]:
    found: dict[str, str] = {}
    for block_path, block in model.named_modules():
        if type(block).__name__ not in block_names:
            continue
        for child_path, child in block.named_modules():
            kind = kind_of(child)
            if kind is None or (kind == CONV and not with_convs):
                continue
            path = f"{block_path}.{child_path}" if child_path else block_path
            found.setdefault(path, kind)
    return list(found.items())


def text_encoder_kohya_path(path: str) -> str:
    """transformers 5 dropped the ``text_model`` level; kohya's names keep it."""
    return path if path.startswith("text_model.") else f"text_model.{path}"



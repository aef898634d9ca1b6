"""Which layers get an adapter: kohya's default rules, and kohya's names for them.

kohya walks the model, picks container modules by class name, and adapts every
Linear and Conv2d inside them:
- UNet, always: inside ``Transformer2DModel`` (attention q/k/v/out, feed-forward,
  proj_in/proj_out).
- UNet, with conv layers (LoCon): also inside ``ResnetBlock2D``, ``Downsample2D``
  and ``Upsample2D`` (conv1, conv2, time_emb_proj, conv_shortcut, sampler convs).
- Text encoder: inside the CLIP attention and MLP modules (q/k/v/out_proj, fc1/fc2).
Linear layers and 1x1 convs take the network dim/alpha; larger convs take the
conv dim/alpha, and are skipped when convs are not targeted.

The kohya name is the module path with "." turned into "_", prefixed with
``lora_unet_`` or ``lora_te_``. Text encoder paths always start with
``text_model.`` as in the transformers 4 layout kohya was written against.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

UNET_PREFIX = "lora_unet"
TEXT_ENCODER_PREFIX = "lora_te"

UNET_BLOCKS = ("Transformer2DModel",)
UNET_CONV_BLOCKS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
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


def _kind(module: nn.Module) -> str | None:
    if isinstance(module, nn.Linear):
        return LINEAR
    if isinstance(module, nn.Conv2d):
        return CONV_1X1 if tuple(module.kernel_size) == (1, 1) else CONV
    return None


def _collect(model: nn.Module, block_names: tuple[str, ...], *, with_convs: bool) -> list[tuple[str, str]]:
    found: dict[str, str] = {}
    for block_path, block in model.named_modules():
        if type(block).__name__ not in block_names:
            continue
        for child_path, child in block.named_modules():
            kind = _kind(child)
            if kind is None or (kind == CONV and not with_convs):
                continue
            path = f"{block_path}.{child_path}" if child_path else block_path
            found.setdefault(path, kind)
    return list(found.items())


def unet_targets(unet: nn.Module, *, with_convs: bool) -> list[Target]:
    blocks = UNET_BLOCKS + (UNET_CONV_BLOCKS if with_convs else ())
    return [
        Target("unet", path, kind, kohya_name(UNET_PREFIX, path))
        for path, kind in _collect(unet, blocks, with_convs=with_convs)
    ]


def text_encoder_kohya_path(path: str) -> str:
    """transformers 5 dropped the ``text_model`` level; kohya's names keep it."""
    return path if path.startswith("text_model.") else f"text_model.{path}"


def text_encoder_targets(text_encoder: nn.Module) -> list[Target]:
    return [
        Target("text_encoder", path, kind, kohya_name(TEXT_ENCODER_PREFIX, text_encoder_kohya_path(path)))
        for path, kind in _collect(text_encoder, TEXT_ENCODER_BLOCKS, with_convs=False)
    ]


def find_targets(unet: nn.Module | None, text_encoder: nn.Module | None, spec) -> list[Target]:
    """All targets for ``spec``; a part that is not trained (or not given) has none."""
    targets: list[Target] = []
    if spec.train_unet and unet is not None:
        targets += unet_targets(unet, with_convs=spec.targets_convs)
    if spec.train_text_encoder and text_encoder is not None:
        targets += text_encoder_targets(text_encoder)
    return targets

"""SD1/SD2's adapted layers: kohya's default rules for its UNet in the diffusers layout.

- UNet, always: inside ``Transformer2DModel`` (attention q/k/v/out, feed-forward,
  proj_in/proj_out).
- UNet, with conv layers (LoCon): also inside ``ResnetBlock2D``, ``Downsample2D``
  and ``Upsample2D`` (conv1, conv2, time_emb_proj, conv_shortcut, sampler convs).
- Text encoder: inside the CLIP attention and MLP modules, as ``lora_te_``.
kohya's default SD1.5 LoRA: 192 UNet + 72 text-encoder modules; 278 UNet with conv layers.
"""

from __future__ import annotations

from torch import nn

from easytrain.network.targets import (
    TEXT_ENCODER_BLOCKS, TEXT_ENCODER_PREFIX, UNET_PREFIX, Target, collect, kohya_name, text_encoder_kohya_path,
)

UNET_BLOCKS = ("Transformer2DModel",)
UNET_CONV_BLOCKS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")


def unet_targets(unet: nn.Module, *, with_convs: bool) -> list[Target]:
    blocks = UNET_BLOCKS + (UNET_CONV_BLOCKS if with_convs else ())
    return [
        Target("unet", path, kind, kohya_name(UNET_PREFIX, path))
        for path, kind in collect(unet, blocks, with_convs=with_convs)
    ]


def text_encoder_targets(text_encoder: nn.Module) -> list[Target]:
    return [
        Target("text_encoder", path, kind, kohya_name(TEXT_ENCODER_PREFIX, text_encoder_kohya_path(path)))
        for path, kind in collect(text_encoder, TEXT_ENCODER_BLOCKS, with_convs=False)
    ]


def find_targets(unet: nn.Module | None, text_encoder: nn.Module | None, spec) -> list[Target]:
    """All targets for ``spec``; a part that is not trained (or not given) has none."""
    targets: list[Target] = []
    if spec.train_unet and unet is not None:
        targets += unet_targets(unet, with_convs=spec.targets_convs)
    if spec.train_text_encoder and text_encoder is not None:
        targets += text_encoder_targets(text_encoder)
    return targets


def apply_network(unet: nn.Module | None, text_encoder: nn.Module | None, spec, seed: int | None = None):
    """An SD1/SD2-layout network (one text encoder, kohya's default targets) on these modules."""
    from easytrain.network.build import build_network

    return build_network({"unet": unet, "text_encoder": text_encoder}, find_targets(unet, text_encoder, spec),
                         spec, seed=seed)
